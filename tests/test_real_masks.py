"""Pixel tools against lesion masks: the ITA skin/lesion separation and attribution localisation.

Hand-made images with known lesions first; the tests at the end read the real PH2 folder
(``../shared/data/ph2``, beside the repository) and are skipped when it is absent, as in a fresh clone.
Nothing derived from PH2 images is written into the repository.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dermretr._errors import DataWarning, DermretrError
from dermretr.color import ita
from dermretr.data.images import ImageReadError, load_mask
from dermretr.data.synth import MASK_BITS, encode_masks, load_masks
from dermretr.explain import align_mask, explain_pair, localisation_score, mask_localisation
from dermretr.models.backbones import create
from dermretr.models.retriever import Retriever
from dermretr.skin_tone import estimate_ita, skin_mask, skin_mask_agreement

PH2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ph2"
SIZE = 64
SKIN, LESION = (220, 180, 160), (90, 55, 40)


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2


def _image(region: np.ndarray, seed: int = 0) -> np.ndarray:
    """Skin with a little texture and a dark lesion where ``region`` is True (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    img = np.where(region[..., None], LESION, SKIN).astype(float) + rng.normal(0, 4, (*region.shape, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _case(folder: Path, name: str, image: np.ndarray, mask: np.ndarray | None) -> dict:
    Image.fromarray(image).save(folder / f"{name}.png")
    row = {"case_id": name, "image_path": str(folder / f"{name}.png"), "lesion_mask": None}
    if mask is not None:
        Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(folder / f"{name}_lesion.bmp")
        row["lesion_mask"] = str(folder / f"{name}_lesion.bmp")
    return row


# ---------------------------------------------------------------------------- reading masks


def test_load_mask_reads_non_zero_pixels_or_one_bit(tmp_path):
    raw = np.array([[0, 1, 2, 255]], np.uint8)
    Image.fromarray(raw).save(tmp_path / "grey.png")
    assert load_mask(tmp_path / "grey.png").tolist() == [[False, True, True, True]]
    assert load_mask(tmp_path / "grey.png", bit=0).tolist() == [[False, True, False, True]]
    assert load_mask(tmp_path / "grey.png", bit=1).tolist() == [[False, False, True, True]]
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1").save(tmp_path / "one.bmp")  # PH2's format
    assert load_mask(tmp_path / "one.bmp").tolist() == [[False, True]]
    rgb = np.zeros((1, 2, 3), np.uint8)
    rgb[0, 1] = (255, 255, 255)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert load_mask(tmp_path / "rgb.png").tolist() == [[False, True]]
    with pytest.raises(ImageReadError, match="bit 0 can only be read"):
        load_mask(tmp_path / "rgb.png", bit=0)
    with pytest.raises(ImageReadError, match="mask file not found: .*nothing.bmp"):
        load_mask(tmp_path / "nothing.bmp")
    with pytest.raises(ImageReadError, match="is a folder"):
        load_mask(tmp_path)
    (tmp_path / "junk.bmp").write_text("not an image")
    with pytest.raises(ImageReadError, match="not an image file"):
        load_mask(tmp_path / "junk.bmp")
    with pytest.raises(DermretrError, match="bit must be"):
        load_mask(tmp_path / "grey.png", bit=-1)


# ---------------------------------------------------------------------------- the ITA skin/lesion separation


def test_agreement_of_a_known_lesion_is_near_perfect(tmp_path):
    lesion = _disc(96, 96, 50, 45, 20)
    img = _image(lesion)
    cases = pd.DataFrame([_case(tmp_path, "c1", img, lesion)])
    table = skin_mask_agreement(cases)
    row = table.iloc[0]
    assert row["case_id"] == "c1"
    assert row["iou"] > 0.95
    assert row["contamination"] < 0.01
    assert row["skin_kept"] > 0.8  # hair filter and the field's edge take a little
    assert row["lesion_fraction"] == pytest.approx(row["lesion_fraction_estimated"], abs=0.03)
    # the estimated skin is skin_mask's (the image is below max_side: nothing is resized)
    assert row["skin_pixels"] == int(skin_mask(img).sum())
    assert row["ita"] == pytest.approx(estimate_ita(img))
    assert row["ita_true_mask"] == pytest.approx(estimate_ita(img, lesion))
    from dermretr.color import rgb_to_lab

    lab = rgb_to_lab(np.array(SKIN, float) / 255)
    assert row["ita"] == pytest.approx(float(ita(lab[0], lab[2])), abs=1.5)
    summary = table.attrs["summary"]
    assert summary["n"] == 1 and summary["iou_mean"] == pytest.approx(row["iou"])


def test_agreement_sees_a_wrong_mask(tmp_path):
    """The numbers measure the mask: the lesion's mask moved elsewhere scores badly."""
    lesion = _disc(96, 96, 48, 48, 18)
    elsewhere = _disc(96, 96, 20, 70, 14)
    cases = pd.DataFrame([_case(tmp_path, "c1", _image(lesion), elsewhere)])
    row = skin_mask_agreement(cases).iloc[0]
    assert row["iou"] < 0.05
    assert row["contamination"] > 0.05  # the (unlesioned) "lesion" area is taken as skin


def test_agreement_of_an_all_lesion_image(tmp_path):
    """A uniform dark image that is all lesion: no skin/lesion split, so every field pixel is 'skin'."""
    full = np.ones((80, 80), bool)
    cases = pd.DataFrame([_case(tmp_path, "all", _image(full), full)])
    row = skin_mask_agreement(cases).iloc[0]
    assert row["lesion_fraction"] == 1.0
    assert row["contamination"] == pytest.approx(1.0)
    assert row["iou"] < 0.2  # nothing (or only thin dark texture) is called lesion
    assert np.isnan(row["skin_kept"])  # there is no true skin
    assert np.isnan(row["ita_true_mask"])  # with the true mask, no skin is left to measure


def test_agreement_reads_dermsynth_lesion_bit(tmp_path):
    lesion = _disc(96, 96, 48, 48, 18)
    wider = _disc(96, 96, 48, 48, 36)  # a criterion's region reaching far beyond the lesion
    Image.fromarray(_image(lesion)).save(tmp_path / "s.png")
    Image.fromarray(encode_masks({"lesion": lesion, "streaks": wider})).save(tmp_path / "s_mask.png")
    cases = pd.DataFrame({"case_id": ["s"], "image_path": [str(tmp_path / "s.png")],
                          "mask": [str(tmp_path / "s_mask.png")]})
    assert skin_mask_agreement(cases, mask_column="mask").iloc[0]["iou"] > 0.9  # bit 0: the lesion
    as_binary = skin_mask_agreement(cases, mask_column="mask", mask_bit=MASK_BITS["streaks"]).iloc[0]
    assert as_binary["iou"] < 0.5 and as_binary["contamination"] > 0.4


def test_agreement_shrinks_like_estimate_skin_tone(tmp_path):
    lesion = _disc(300, 400, 150, 200, 60)
    cases = pd.DataFrame([_case(tmp_path, "big", _image(lesion), lesion)])
    row = skin_mask_agreement(cases, max_side=128).iloc[0]
    assert row["field_pixels"] < 128 * 96 and row["iou"] > 0.9
    from dermretr.skin_tone import estimate_skin_tone

    assert row["ita"] == pytest.approx(estimate_skin_tone(cases, max_side=128, progress=False)
                                       ["ita_estimated"].iloc[0])


def test_agreement_bad_input(tmp_path):
    lesion = _disc(64, 64, 32, 32, 12)
    good = _case(tmp_path, "ok", _image(lesion), lesion)
    missing = dict(good, case_id="gone", lesion_mask=str(tmp_path / "gone_lesion.bmp"))
    with pytest.raises(DermretrError, match=r"case gone: mask file not found: .*gone_lesion\.bmp"):
        skin_mask_agreement(pd.DataFrame([good, missing]))
    with pytest.raises(DermretrError, match=r"needs the columns \['lesion_mask'\]"):
        skin_mask_agreement(pd.DataFrame([good]).drop(columns="lesion_mask"))
    with pytest.raises(DermretrError, match="DataFrame"):
        skin_mask_agreement([good])
    with pytest.raises(DermretrError, match="no case has a mask"):
        skin_mask_agreement(pd.DataFrame([dict(good, lesion_mask=None)]))
    with pytest.raises(DermretrError, match="max_side"):
        skin_mask_agreement(pd.DataFrame([good]), max_side=4)
    Image.fromarray(np.zeros((64, 32), np.uint8)).save(tmp_path / "narrow.png")
    with pytest.raises(DermretrError, match="another aspect ratio"):
        skin_mask_agreement(pd.DataFrame([dict(good, lesion_mask=str(tmp_path / "narrow.png"))]))
    with pytest.warns(DataWarning, match="1 of 2 cases have no mask"):
        table = skin_mask_agreement(pd.DataFrame([good, dict(good, case_id="none", lesion_mask=pd.NA)]))
    assert table["case_id"].tolist() == ["ok"]


# ---------------------------------------------------------------------------- attribution localisation


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Retriever(create("dermretr-tiny", device="cpu", image_size=SIZE), kind="full", n_masks=2)


@pytest.fixture()
def two_cases(tmp_path):
    """Two non-square cases with lesions on opposite sides (so whose mask is used shows)."""
    left, right = _disc(64, 96, 32, 34, 14), _disc(64, 96, 32, 62, 10)
    rows = [_case(tmp_path, "L", _image(left, 1), left), _case(tmp_path, "R", _image(right, 2), right)]
    return pd.DataFrame(rows), {"L": left, "R": right}


def test_mask_localisation_scores_the_attributed_case_mask(tiny, two_cases):
    cases, masks = two_cases
    pairs = pd.DataFrame({"reference_case_id": ["L"], "target_case_id": ["R"], "text": ["dark lesion"]})
    for side, whose in (("target", "R"), ("reference", "L")):
        table = mask_localisation(tiny, cases, pairs, side=side, method="gradcam")
        assert table.attrs["side"] == side and table.attrs["mask_column"] == "lesion_mask"
        gt = align_mask(masks[whose], SIZE)  # centre crop of the 64 x 96 mask
        att = explain_pair(tiny, cases["image_path"][0], "dark lesion", cases["image_path"][1], method="gradcam",
                           side=side)
        expected = localisation_score(att.heatmap, gt, tolerance=SIZE // 16)
        row = table.iloc[0]
        assert row["mask_fraction"] == pytest.approx(gt.mean())
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=1e-6), (side, key)
        assert row["score"] == pytest.approx(att.score, abs=1e-5)
    assert table.attrs["summary"]["pairs"] == 1


def test_mask_localisation_on_dermsynth_reads_the_lesion_bit(tiny, synth_cases):
    cases = synth_cases.iloc[:3]
    pairs = pd.DataFrame({"reference_case_id": cases["case_id"].iloc[[0, 1]].tolist(),
                          "target_case_id": cases["case_id"].iloc[[1, 2]].tolist(),
                          "modification_text": ["with streaks", "without veil"]})
    table = mask_localisation(tiny, cases, pairs, mask_column="mask", method="gradcam")
    assert table["text"].tolist() == ["with streaks", "without veil"]
    for row, mask in zip(table.itertuples(), cases["mask"].iloc[[1, 2]]):
        assert row.energy_baseline == pytest.approx(align_mask(load_masks(mask)["lesion"], SIZE).mean())


def test_mask_localisation_bad_input(tiny, two_cases, tmp_path):
    cases, _ = two_cases
    pairs = pd.DataFrame({"reference_case_id": ["L"], "target_case_id": ["R"], "text": ["dark lesion"]})
    gone = cases.assign(lesion_mask=[cases["lesion_mask"][0], str(tmp_path / "gone.bmp")])
    with pytest.raises(DermretrError, match=r"case R: mask file not found: .*gone\.bmp"):
        mask_localisation(tiny, gone, pairs)
    with pytest.raises(DermretrError, match="case R has no mask"):
        mask_localisation(tiny, cases.assign(lesion_mask=[cases["lesion_mask"][0], None]), pairs)
    with pytest.raises(DermretrError, match="not in the case table"):
        mask_localisation(tiny, cases, pairs.assign(target_case_id="X"))
    with pytest.raises(DermretrError, match="'text'"):
        mask_localisation(tiny, cases, pairs.drop(columns="text"))
    with pytest.raises(DermretrError, match=r"lacks the columns \['segmentation'\]"):
        mask_localisation(tiny, cases, pairs, mask_column="segmentation")
    with pytest.raises(DermretrError, match="method"):
        mask_localisation(tiny, cases, pairs, method="lime")
    # a lesion entirely outside the centre crop of a wide image: empty in the model's frame
    edge = np.zeros((64, 96), bool)
    edge[20:40, 2:12] = True
    Image.fromarray(edge.astype(np.uint8) * 255).save(tmp_path / "edge.png")
    outside = cases.assign(lesion_mask=[cases["lesion_mask"][0], str(tmp_path / "edge.png")])
    with pytest.warns(DataWarning, match="1 pairs left out"), pytest.raises(DermretrError, match="no pair has"):
        mask_localisation(tiny, outside, pairs)
    both = pd.concat([pairs, pairs.assign(target_case_id="L")], ignore_index=True)
    with pytest.warns(DataWarning, match="the mask of R is empty"):
        table = mask_localisation(tiny, outside, both)
    assert table["target_case_id"].tolist() == ["L"] and table.attrs["skipped"] == ["R"]


# ---------------------------------------------------------------------------- the real PH2 folder

real = pytest.mark.skipif(not PH2.exists(), reason=f"the PH2 dataset is not at {PH2} (a fresh clone has no data)")


@pytest.fixture(scope="module")
def ph2_cases():
    from dermretr.data import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the trimmed txt; the xlsx is read
        return load("ph2", PH2)


@real
def test_ph2_masks_agree_with_the_skin_separation(ph2_cases):
    cases = ph2_cases.iloc[:12]
    table = skin_mask_agreement(cases)
    assert table["case_id"].tolist() == cases["case_id"].tolist()
    assert (table["lesion_fraction"] > 0.01).all()  # every PH2 mask holds a lesion inside the field
    assert table["iou"].between(0, 1).all() and table["contamination"].between(0, 1).all()
    first = load_mask(cases["lesion_mask"].iloc[0])
    with Image.open(cases["image_path"].iloc[0]) as im:
        assert first.shape == im.size[::-1]
    assert table["iou"].median() > 0.3  # Otsu on L* finds PH2 lesions, far from perfectly (see bench_pixels_real)


@real
def test_ph2_lesion_masks_localise(tiny, ph2_cases):
    cases = ph2_cases.iloc[:3]
    pairs = pd.DataFrame({"reference_case_id": cases["case_id"].iloc[[0, 1]].tolist(),
                          "target_case_id": cases["case_id"].iloc[[1, 2]].tolist(),
                          "text": cases["descriptors"].iloc[[0, 1]].tolist()})
    table = mask_localisation(tiny, cases, pairs)
    for row, mask in zip(table.itertuples(), cases["lesion_mask"].iloc[[1, 2]]):
        assert row.energy_baseline == pytest.approx(align_mask(load_mask(mask), SIZE).mean())
        assert 0 < row.energy_baseline < 1
