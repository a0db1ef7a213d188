"""Image reading: every mode to RGB, EXIF orientation, decode errors under on_error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import corrupt_files, write_image
from PIL import Image

from dermretr._errors import DataWarning, DermretrError
from dermretr.data.images import ImageDataset, ImageReadError, load_rgb


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "RGB"])
def test_every_mode_loads_as_rgb(tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = write_image(tmp_path / f"img_{mode.replace(';', '')}{suffix}", size=20, mode=mode)
    with Image.open(path) as raw:
        assert raw.mode.startswith(mode.split(";")[0])  # the fixture really has that mode
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (20, 20)
    assert np.asarray(img).std() > 10  # content survived (16-bit scaled, not clipped to white)


def test_sixteen_bit_values_are_scaled_not_clipped(tmp_path):
    path = tmp_path / "ramp16.png"
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I;16")
    px = np.asarray(load_rgb(path))[0, :, 0].tolist()
    assert px[0] == 0 and 126 <= px[1] <= 129 and px[2] == 255


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, :10] = 255  # white block on the left
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    out = load_rgb(path)
    assert out.size == (10, 30)  # width and height swapped
    top = np.asarray(out)[:5].mean()
    assert top > 200  # the white block is now on top


@pytest.mark.parametrize("kind, fragment", [("truncated", "cannot decode"), ("empty", r"empty \(0 bytes\)"),
                                            ("text", "not an image")])
def test_bad_files_raise_clearly(tmp_path, kind, fragment):
    files = corrupt_files(tmp_path)
    with pytest.raises(ImageReadError, match=fragment) as err:
        load_rgb(files[kind])
    assert str(files[kind]) in str(err.value)


def _cases(paths):
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(len(paths))], "image_path": [str(p) for p in paths]})


def test_dataset_raise_names_case_and_file(tmp_path):
    good = write_image(tmp_path / "good.png")
    bad = corrupt_files(tmp_path)["truncated"]
    ds = ImageDataset(_cases([good, bad]))
    img, idx = ds[0]
    assert img.mode == "RGB" and idx == 0
    with pytest.raises(ImageReadError, match=r"case 'c1' \(row 1\).*on_error='skip'"):
        ds[1]


def test_dataset_skip_reports_and_keeps_row_positions(tmp_path):
    files = corrupt_files(tmp_path)
    goods = [write_image(tmp_path / f"g{i}.png", seed=i) for i in range(3)]
    paths = [goods[0], files["truncated"], goods[1], files["empty"], files["text"], goods[2],
             tmp_path / "missing.png"]
    with pytest.warns(DataWarning, match="skipped 4 unreadable image"):
        ds = ImageDataset(_cases(paths), preprocess=lambda im: torch.tensor(np.asarray(im)), on_error="skip",
                          progress=False)
    assert len(ds) == 3
    assert [ds[i][1] for i in range(3)] == [0, 2, 5]
    assert set(ds.report["case_id"]) == {"c1", "c3", "c4", "c6"}
    assert ds.report["error"].str.len().gt(0).all()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch[0].shape == (3, 24, 24, 3) and batch[1].tolist() == [0, 2, 5]


def test_dataset_bad_arguments(tmp_path):
    with pytest.raises(DermretrError, match="on_error must be one of"):
        ImageDataset(_cases([]), on_error="ignore")
    with pytest.raises(DermretrError, match="no 'image_path' column"):
        ImageDataset(pd.DataFrame({"case_id": ["a"]}))


def test_a_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    from PIL import Image

    from dermretr.data.images import ImageReadError, load_rgb

    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px is then "more than twice" the limit
    with pytest.raises(ImageReadError, match=r"big\.png is too large to open safely.*downscale it first"):
        load_rgb(path)
