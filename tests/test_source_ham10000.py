"""HAM10000 loader: the publisher's layout, text view, errors, missing images and lesion-grouped splits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fixtures import (
    assert_case_table,
    assert_mentions,
    bad_value_error,
    error_message,
    load_quietly,
    load_with_one_warning,
    write_csv,
    write_dataset,
    write_image,
)

from dermretr._errors import DermretrError
from dermretr.data import load
from dermretr.data.sources.ham10000 import load_ham10000

HEADER = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]


def _row(lesion: int, image: int, dx: str, **values) -> dict:
    row = {"lesion_id": f"HAM_{lesion:07d}", "image_id": f"ISIC_{image:07d}", "dx": dx, "dx_type": "histo",
           "age": "50.0", "sex": "female", "localization": "back", "dataset": "vidir_modern"}
    row.update(values)
    return row


ROWS = [
    _row(118, 27419, "bkl", age="80.0", sex="male", localization="scalp"),
    _row(118, 25030, "bkl", age="80.0", sex="male", localization="scalp"),
    _row(2730, 26769, "akiec", dx_type="consensus", localization="face"),
    _row(1, 24306, "nv", dx_type="follow_up", age="45.0", sex="male", localization="trunk"),
    _row(1, 24307, "nv", dx_type="follow_up", age="45.0", sex="male", localization="trunk"),
    _row(2, 24308, "mel", age="", sex="unknown", localization="unknown"),
    _row(3, 24309, "bcc", localization="lower extremity", dx_type="confocal"),
    _row(4, 24310, "df", localization="acral"),
    _row(5, 24311, "vasc", localization="abdomen", dataset="rosendahl"),
]


def _dataset(root: Path, rows=ROWS, nested: bool = False, image_rows=None, **csv) -> Path:
    """Write HAM10000_metadata.csv and the images (over HAM10000_images_part_1/_2)."""
    def image(i, row):
        part = f"HAM10000_images_part_{i % 2 + 1}"
        return (root / part / part if nested else root / part) / f"{row['image_id']}.jpg"

    write_dataset(root / "HAM10000_metadata.csv", rows, HEADER, image, image_rows, **csv)
    return root


def test_loads_a_valid_case_table(tmp_path):
    cases = load_quietly(load_ham10000, _dataset(tmp_path / "ham"))
    assert_case_table(cases, "ham10000", len(ROWS))
    by_id = cases.set_index("case_id")
    assert by_id.index[0] == "ISIC_0027419"
    assert by_id["diagnosis"].tolist() == ["bkl", "bkl", "akiec", "nv", "nv", "mel", "bcc", "df", "vasc"]
    assert by_id["diagnosis_group"].tolist() == ["SK", "SK", "AK", "NEV", "NEV", "MEL", "BCC", "MISC", "MISC"]
    assert by_id["malignant"].tolist() == [False, False, True, False, False, True, True, False, False]
    # no patient id in HAM10000: the lesion stands in for it
    assert (cases["patient_id"] == cases["lesion_id"]).all()
    assert cases["fitzpatrick"].isna().all() and cases["monk"].isna().all()
    d = by_id["descriptors"]
    assert d["ISIC_0027419"] == "benign keratosis; on the scalp; age 80; male; histopathology-confirmed"
    assert d["ISIC_0026769"] == "actinic keratosis or Bowen's disease; on the face; age 50; female; expert consensus"
    assert d["ISIC_0024306"] == "melanocytic nevus; on the trunk; age 45; male; confirmed by follow-up"
    assert d["ISIC_0024308"] == "melanoma; histopathology-confirmed"
    assert d["ISIC_0024309"] == (
        "basal cell carcinoma; on the lower extremity; age 50; female; confirmed by confocal microscopy"
    )
    assert d["ISIC_0024310"].startswith("dermatofibroma; on acral skin; ")
    assert d["ISIC_0024311"].startswith("vascular lesion; on the abdomen; ")
    f = by_id["findings"]  # site, age and sex: not the diagnosis, not how it was confirmed
    assert f["ISIC_0027419"] == "on the scalp; age 80; male"
    assert f["ISIC_0024306"] == "on the trunk; age 45; male"
    assert f["ISIC_0024308"] == ""
    for column in HEADER:
        assert column in cases.columns
    assert by_id.loc["ISIC_0024311", "dataset"] == "rosendahl"
    assert by_id.loc["ISIC_0024306", "age"] == 45 and pd.isna(by_id.loc["ISIC_0024308", "age"])


def test_nested_and_case_mismatched_images_are_found(tmp_path):
    root = _dataset(tmp_path / "ham", nested=True)
    img = next(root.rglob("ISIC_0024306.jpg"))
    img.rename(img.with_name("ISIC_0024306.JPG"))
    cases, _ = load_with_one_warning(load_ham10000, root, match=r"1 image\(s\).*letter case")
    assert len(cases) == len(ROWS)
    path = cases.set_index("case_id").loc["ISIC_0024306", "image_path"]
    assert path.endswith("HAM10000_images_part_2/HAM10000_images_part_2/ISIC_0024306.JPG")


def test_bom_crlf_and_trailing_blank_lines(tmp_path):
    cases = load_quietly(load_ham10000, _dataset(tmp_path / "ham", bom=True, crlf=True, trailing_blank_lines=2))
    assert len(cases) == len(ROWS)
    assert cases["case_id"].iloc[0] == "ISIC_0027419" and cases["dataset"].iloc[0] == "vidir_modern"


def test_missing_required_column_lists_missing_and_found(tmp_path):
    root = tmp_path / "ham"
    write_csv(root / "HAM10000_metadata.csv", pd.DataFrame(ROWS).drop(columns=["lesion_id", "dx"]))
    msg = error_message(load_ham10000, root)
    assert_mentions(msg, "['lesion_id', 'dx']", "image_id", "found columns", "HAM10000_metadata.csv")


def test_unknown_diagnosis_names_rows_and_allowed_values(tmp_path):
    msg = bad_value_error(load_ham10000, lambda rows: _dataset(tmp_path / "ham", rows=rows), ROWS, "dx", "scc", [5])
    assert_mentions(msg, "akiec, bcc, bkl, df, mel, nv, vasc")


def test_malformed_age_names_row_and_value(tmp_path):
    bad_value_error(load_ham10000, lambda rows: _dataset(tmp_path / "ham", rows=rows), ROWS, "age", "fifty", [6])


def test_missing_metadata_file_names_the_file(tmp_path):
    root = tmp_path / "ham"
    write_image(root / "HAM10000_images_part_1" / "ISIC_0000001.jpg", size=8)
    assert_mentions(error_message(load_ham10000, root), str(root / "HAM10000_metadata.csv"))


@pytest.mark.parametrize("name", ["../../secret", "/etc/passwd", "sub/ISIC_0000009"])
def test_image_ids_must_not_leave_the_folder(tmp_path, name):
    rows = [dict(r) for r in ROWS]
    rows[3]["image_id"] = name
    msg = error_message(load_ham10000, _dataset(tmp_path / "ham", rows=rows, image_rows={0, 1, 2, 4, 5, 6, 7, 8}))
    assert_mentions(msg, "HAM10000_metadata.csv: column 'image_id' has image names at line 5 (", name)


def test_missing_images_warn_raise_keep(tmp_path):
    root = _dataset(tmp_path / "ham", image_rows={0, 1, 2, 3, 4, 6, 7})  # rows 5 and 8 lack images
    cases, msg = load_with_one_warning(load_ham10000, root)
    assert_mentions(msg, "2 of 9", "ISIC_0024308.jpg", "ISIC_0024311.jpg")
    assert len(cases) == 7 and "ISIC_0024308" not in set(cases["case_id"])

    with pytest.raises(DermretrError, match=r"2 of 9.*ISIC_0024308\.jpg"):
        load_ham10000(root, missing="raise")

    kept = load_quietly(load_ham10000, root, missing="keep")
    assert len(kept) == 9
    assert kept.set_index("case_id").loc["ISIC_0024311", "image_path"] == str(root.absolute() / "ISIC_0024311.jpg")

    with pytest.raises(DermretrError, match="missing must be one of"):
        load_ham10000(root, missing=None)


def test_split_keeps_lesions_together(tmp_path):
    dxs = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    rows = [_row(lesion, lesion * 10 + k, dxs[lesion % 7]) for lesion in range(70) for k in range(1 + lesion % 4)]
    root = tmp_path / "ham"
    write_csv(root / "HAM10000_metadata.csv", pd.DataFrame(rows, columns=HEADER))
    cases = load_ham10000(root, missing="keep", seed=5)
    assert (cases.groupby("lesion_id")["split"].nunique() == 1).all()
    assert set(cases["split"]) == {"train", "val", "test"}
    assert cases["split"].equals(load_ham10000(root, missing="keep", seed=5)["split"])


def test_load_by_spec(tmp_path):
    root = _dataset(tmp_path / "ham")
    cases = load(f"ham10000:{root}")
    assert len(cases) == len(ROWS) and (cases["source"] == "ham10000").all()
