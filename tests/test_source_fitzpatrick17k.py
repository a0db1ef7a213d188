"""Fitzpatrick17k loader: the publisher's CSV plus a partial download of its images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fixtures import (
    assert_case_table,
    assert_mentions,
    bad_value_error,
    error_message,
    load_with_one_warning,
    write_dataset,
    write_image,
)

from dermretr._errors import DermretrError
from dermretr.data import load
from dermretr.data.sources.fitzpatrick17k import load_fitzpatrick17k

COLUMNS = ["md5hash", "fitzpatrick_scale", "fitzpatrick_centaur", "label", "nine_partition_label",
           "three_partition_label", "qc", "url", "url_alphanum"]
LABELS = [
    ("psoriasis", "inflammatory", "non-neoplastic"),
    ("melanoma", "malignant melanoma", "malignant"),
    ("dermatofibroma", "benign dermal", "benign"),
    ("kaposi sarcoma", "malignant dermal", "malignant"),
    ("neurofibromatosis", "genodermatoses", "non-neoplastic"),
    ("basal cell carcinoma", "malignant epidermal", "malignant"),
]


def _rows(n=12):
    rows = []
    for i in range(n):
        label, nine, three = LABELS[i % len(LABELS)]
        scale = [-1, 1, 2, 3, 4, 5, 6][i % 7]
        rows.append({
            "md5hash": f"{i:032x}", "fitzpatrick_scale": str(scale), "fitzpatrick_centaur": str((i % 6) + 1),
            "label": label, "nine_partition_label": nine, "three_partition_label": three,
            "qc": "1 Diagnostic" if i == 3 else "",
            "url": f"https://example.org/{label.replace(' ', '-')}{i}.jpg",
            "url_alphanum": f"httpsexampleorg{label.replace(' ', '')}{i}jpg.jpg",
        })
    return rows


def _dataset(root: Path, rows=None, images=True, **csv_options) -> Path:
    rows = _rows() if rows is None else rows

    def image(i, row):  # downloads end up in varying sub-folders, sometimes with upper-case suffixes
        return root / ("part_1" if i % 2 else "part_2/nested") / (row["md5hash"] + (".JPG" if i == 5 else ".jpg"))

    write_dataset(root / "fitzpatrick17k.csv", rows, [c for c in COLUMNS if c in rows[0]],
                  image if images else None, **csv_options)
    return root


def test_loads_publisher_layout_into_valid_case_table(tmp_path):
    root = _dataset(tmp_path / "f17k")
    cases = load_fitzpatrick17k(root)
    assert_case_table(cases, "fitzpatrick17k", 12)
    assert cases["case_id"].tolist() == [f"{i:032x}" for i in range(12)]
    assert cases["patient_id"].equals(cases["case_id"])
    assert Path(cases.loc[5, "image_path"]).name == f"{5:032x}.JPG"
    row = cases.loc[1]
    assert (row["diagnosis"], row["diagnosis_group"], bool(row["malignant"])) == \
        ("melanoma", "malignant melanoma", True)
    assert cases.loc[2, "malignant"] == False  # noqa: E712  (benign)
    assert cases.loc[0, "malignant"] == False  # noqa: E712  (non-neoplastic)
    # -1 means unknown; the original columns are kept as text
    assert pd.isna(cases.loc[0, "fitzpatrick"]) and cases.loc[0, "fitzpatrick_scale"] == "-1"
    assert cases["fitzpatrick"].tolist()[1:7] == [1, 2, 3, 4, 5, 6]
    assert cases.loc[3, "fitzpatrick_centaur"] == "4" and cases.loc[3, "qc"] == "1 Diagnostic"
    assert {"url", "url_alphanum", "label", "nine_partition_label"} <= set(cases.columns)
    assert cases.loc[0, "descriptors"] == "psoriasis; inflammatory"
    assert cases.loc[1, "descriptors"] == "melanoma; malignant melanoma; Fitzpatrick type I skin"
    assert cases.loc[6, "descriptors"] == "psoriasis; inflammatory; Fitzpatrick type VI skin"
    # findings: the skin type only (Fitzpatrick17k publishes nothing else known before the diagnosis)
    assert cases.loc[0, "findings"] == "" and cases.loc[1, "findings"] == "Fitzpatrick type I skin"
    assert cases.loc[6, "findings"] == "Fitzpatrick type VI skin"
    assert cases["monk"].isna().all() and cases["pigment_network"].isna().all()
    assert set(cases["split"].astype(str)) <= {"train", "val", "test"}
    assert (cases.groupby("patient_id")["split"].nunique() == 1).all()


def test_bom_crlf_and_trailing_blank_lines(tmp_path):
    plain = load_fitzpatrick17k(_dataset(tmp_path / "plain"))
    messy = load_fitzpatrick17k(_dataset(tmp_path / "messy", bom=True, crlf=True, trailing_blank_lines=3))
    assert len(messy) == 12 and "md5hash" in messy.columns
    cols = ["case_id", "diagnosis", "diagnosis_group", "malignant", "fitzpatrick", "descriptors", "split"]
    pd.testing.assert_frame_equal(plain[cols], messy[cols])


def test_missing_required_column_lists_missing_and_found(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "nine_partition_label"} for r in _rows()]
    msg = error_message(load_fitzpatrick17k, _dataset(tmp_path, rows=rows, images=False))
    assert_mentions(msg, "nine_partition_label", "found columns", "md5hash", "Expected layout")


@pytest.mark.parametrize("column, value, allowed", [
    ("fitzpatrick_scale", "9", "-1 (unknown)"),
    ("fitzpatrick_scale", "light", "1, 2, 3, 4, 5, 6"),
    ("three_partition_label", "premalignant", "non-neoplastic, benign, malignant"),
    ("nine_partition_label", "tumour", "benign melanocyte"),
])
def test_unknown_values_name_rows_and_allowed_values(tmp_path, column, value, allowed):
    msg = bad_value_error(load_fitzpatrick17k, lambda rows: _dataset(tmp_path, rows=rows, images=False), _rows(),
                          column, value, [4, 7])
    assert_mentions(msg, allowed)


def test_root_without_metadata_names_the_file(tmp_path):
    with pytest.raises(DermretrError, match="fitzpatrick17k.csv") as err:
        load_fitzpatrick17k(tmp_path)
    assert str(tmp_path) in str(err.value)


def _remove_two(root: Path) -> list[str]:
    gone = []
    for i in (3, 8):
        for p in root.rglob(f"{i:032x}.*"):
            p.unlink()
            gone.append(f"{i:032x}")
    return gone


def test_missing_images_warn_drops_with_one_warning(tmp_path):
    root = _dataset(tmp_path)
    gone = _remove_two(root)
    cases, msg = load_with_one_warning(load_fitzpatrick17k, root)
    assert_mentions(msg, "2 of 12", *gone)
    assert len(cases) == 10 and not set(gone) & set(cases["case_id"])


def test_missing_images_raise_and_keep(tmp_path):
    root = _dataset(tmp_path)
    gone = _remove_two(root)
    with pytest.raises(DermretrError, match="2 of 12") as err:
        load_fitzpatrick17k(root, missing="raise")
    assert gone[0] in str(err.value)
    kept = load_fitzpatrick17k(root, missing="keep")
    assert len(kept) == 12
    row = kept.set_index("case_id").loc[gone[0]]
    assert row["image_path"] == str(root.resolve() / f"{gone[0]}.jpg")
    assert not Path(row["image_path"]).exists()
    # the split of an image does not depend on which images were downloaded
    full = load_fitzpatrick17k(_dataset(tmp_path / "full"))
    assert kept["split"].tolist() == full["split"].tolist()
    with pytest.raises(DermretrError, match="missing must be one of"):
        load_fitzpatrick17k(root, missing="ignore")


def test_pattern_option(tmp_path):
    rows = _rows()
    root = _dataset(tmp_path, rows=rows, images=False)
    for i, row in enumerate(rows):
        write_image(root / "images" / row["url_alphanum"], size=8, seed=i)
    cases = load_fitzpatrick17k(root, pattern="{url_alphanum}")
    assert len(cases) == 12 and Path(cases.loc[0, "image_path"]).name == rows[0]["url_alphanum"]
    # a pattern with a folder is a path relative to the root
    cases = load_fitzpatrick17k(root, pattern="images/{url_alphanum}")
    assert len(cases) == 12
    with pytest.raises(DermretrError, match="unknown column") as err:
        load_fitzpatrick17k(root, pattern="{md5}.jpg")
    assert "'md5'" in str(err.value) and "md5hash" in str(err.value)
    with pytest.raises(DermretrError, match="names no column"):
        load_fitzpatrick17k(root, pattern="image.jpg")
    with pytest.raises(DermretrError, match="fitzpatrick17k.csv, line 2: image path .* escapes"):
        load_fitzpatrick17k(root, pattern="../../{md5hash}.jpg")
    rows[3]["url_alphanum"] = ""  # row 3: line 5
    rows[6]["md5hash"] = ".."  # row 6: line 8
    _dataset(root, rows=rows, images=False)
    with pytest.raises(DermretrError, match=r"fitzpatrick17k.csv: column\(s\) \['url_alphanum'\] needed by the "
                                            r"image-name pattern '\{url_alphanum\}' have no value at line 5$"):
        load_fitzpatrick17k(root, pattern="{url_alphanum}")
    with pytest.raises(DermretrError, match=r"fitzpatrick17k.csv, line 8: image name '..' from pattern "
                                            r"'\{md5hash\}' is not a file name"):
        load_fitzpatrick17k(root, pattern="{md5hash}")


def test_repeated_md5hash_gets_unique_case_ids_and_one_split(tmp_path):
    rows = _rows()
    rows[9] = dict(rows[2])
    cases = load_fitzpatrick17k(_dataset(tmp_path, rows=rows))
    dup = cases[cases["patient_id"] == rows[2]["md5hash"]]
    assert sorted(dup["case_id"]) == [rows[2]["md5hash"], rows[2]["md5hash"] + "-2"]
    assert dup["split"].nunique() == 1 and cases["case_id"].is_unique


def test_load_spec_and_seed(tmp_path):
    root = _dataset(tmp_path, rows=_rows(40))
    cases = load(f"fitzpatrick17k:{root}")
    assert len(cases) == 40 and cases["source"].eq("fitzpatrick17k").all()
    assert set(cases["split"].astype(str)) == {"train", "val", "test"}
    assert load("fitzpatrick17k", root, seed=0)["split"].equals(cases["split"])
    assert not load("fitzpatrick17k", root, seed=5)["split"].equals(cases["split"])
    # the CLI passes loader options as text
    assert load("fitzpatrick17k", root, seed="5")["split"].equals(load("fitzpatrick17k", root, seed=5)["split"])
    with pytest.raises(DermretrError, match="seed must be an integer"):
        load("fitzpatrick17k", root, seed="x")


def test_cli_info_counts_missing_images(tmp_path, capsys):
    from dermretr.cli import main

    root = _dataset(tmp_path)
    _remove_two(root)
    assert main(["info", f"fitzpatrick17k:{root}", "-o", "pattern={md5hash}.jpg"]) == 0
    out = capsys.readouterr().out
    assert "12 cases" in out and "images found: 10, missing: 2" in out
