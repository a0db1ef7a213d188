"""ISIC 2020 loader: the publisher's layout, text view, errors, missing images, splits and speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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

from dermretr._errors import DataWarning, DermretrError
from dermretr.data import load
from dermretr.data.sources.isic2020 import load_isic2020

CSV = "ISIC_2020_Training_GroundTruth.csv"
HEADER = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis",
          "benign_malignant", "target"]


def _row(image: int, patient: int, diagnosis: str, **values) -> dict:
    malignant = diagnosis == "melanoma"
    row = {"image_name": f"ISIC_{image:07d}", "patient_id": f"IP_{patient:07d}", "sex": "female",
           "age_approx": "45.0", "anatom_site_general_challenge": "torso", "diagnosis": diagnosis,
           "benign_malignant": "malignant" if malignant else "benign", "target": "1" if malignant else "0"}
    row.update(values)
    return row


ROWS = [
    _row(2637011, 7279968, "unknown", sex="male", anatom_site_general_challenge="head/neck"),
    _row(15719, 7279968, "nevus", anatom_site_general_challenge="upper extremity"),
    _row(52212, 1, "melanoma", sex="male", age_approx="70.0", anatom_site_general_challenge="lower extremity"),
    _row(68279, 2, "seborrheic keratosis", sex="", age_approx="", anatom_site_general_challenge=""),
    _row(74268, 3, "lentigo NOS", anatom_site_general_challenge="palms/soles"),
    _row(74311, 4, "lichenoid keratosis", anatom_site_general_challenge="oral/genital"),
    _row(74542, 5, "solar lentigo"),
    _row(75663, 6, "cafe-au-lait macule"),
    _row(75914, 7, "atypical melanocytic proliferation"),
]


def _dataset(root: Path, rows=ROWS, folder: str = "train", image_rows=None, **csv) -> Path:
    """Write the ground-truth CSV and the images under ``folder``."""
    write_dataset(root / CSV, rows, HEADER, lambda i, row: root / folder / f"{row['image_name']}.jpg", image_rows,
                  **csv)
    return root


def test_loads_a_valid_case_table(tmp_path):
    cases = load_quietly(load_isic2020, _dataset(tmp_path / "isic"))
    assert_case_table(cases, "isic2020", len(ROWS))
    by_id = cases.set_index("case_id")
    assert by_id.index[:2].tolist() == ["ISIC_2637011", "ISIC_0015719"]
    assert by_id["diagnosis"].tolist() == [r["diagnosis"] for r in ROWS]
    assert by_id["diagnosis_group"].tolist() == ["UNK", "NEV", "MEL", "SK", "MISC", "SK", "SK", "MISC", "NEV"]
    assert by_id["malignant"].tolist() == [False, False, True, False, False, False, False, False, False]
    assert cases["patient_id"].iloc[0] == "IP_7279968"
    assert cases["fitzpatrick"].isna().all() and cases["monk"].isna().all()
    d = by_id["descriptors"]
    assert d["ISIC_2637011"] == "on the head or neck; age 45; male"
    assert d["ISIC_0015719"] == "nevus; on the upper extremity; age 45; female"
    assert d["ISIC_0052212"] == "melanoma; on the lower extremity; age 70; male"
    assert d["ISIC_0068279"] == "seborrheic keratosis"
    assert d["ISIC_0074268"] == "lentigo; on the palms or soles; age 45; female"
    assert d["ISIC_0074311"].startswith("lichenoid keratosis; on the mouth or genitals; ")
    f = by_id["findings"]  # site, age and sex only
    assert f["ISIC_2637011"] == d["ISIC_2637011"]
    assert f["ISIC_0052212"] == "on the lower extremity; age 70; male"
    assert f["ISIC_0068279"] == ""
    for column in HEADER:
        assert column in cases.columns
    assert by_id.loc["ISIC_0052212", "age_approx"] == 70 and by_id.loc["ISIC_0052212", "target"] == 1
    assert by_id.loc["ISIC_0052212", "benign_malignant"] == "malignant"


def test_malignant_from_benign_malignant_without_target(tmp_path):
    root = tmp_path / "isic"
    write_csv(root / CSV, pd.DataFrame(ROWS).drop(columns=["target"]))
    cases = load_isic2020(root, missing="keep")
    assert cases["malignant"].tolist() == [False, False, True] + [False] * 6


def test_nested_and_case_mismatched_images_are_found(tmp_path):
    root = _dataset(tmp_path / "isic", folder="jpeg/train")
    img = root / "jpeg" / "train" / "ISIC_0052212.jpg"
    img.rename(img.with_name("isic_0052212.JPG"))
    cases, _ = load_with_one_warning(load_isic2020, root, match=r"1 image\(s\).*letter case")
    assert len(cases) == len(ROWS)
    assert cases.set_index("case_id").loc["ISIC_0052212", "image_path"].endswith("jpeg/train/isic_0052212.JPG")


def test_bom_crlf_and_trailing_blank_lines(tmp_path):
    cases = load_quietly(load_isic2020, _dataset(tmp_path / "isic", bom=True, crlf=True, trailing_blank_lines=4))
    assert len(cases) == len(ROWS) and cases["case_id"].iloc[0] == "ISIC_2637011"
    assert cases["target"].tolist()[2] == 1


def test_kaggle_train_csv_is_found(tmp_path):
    root = tmp_path / "kaggle"
    write_csv(root / "train.csv", pd.DataFrame(ROWS, columns=HEADER))
    for row in ROWS:
        write_image(root / "jpeg" / "train" / f"{row['image_name']}.jpg", size=8)
    assert len(load_isic2020(root)) == len(ROWS)


def test_missing_required_column_lists_missing_and_found(tmp_path):
    root = tmp_path / "isic"
    write_csv(root / CSV, pd.DataFrame(ROWS).drop(columns=["patient_id"]))
    assert_mentions(error_message(load_isic2020, root), "['patient_id']", "image_name", "found columns", CSV)

    write_csv(root / CSV, pd.DataFrame(ROWS).drop(columns=["target", "benign_malignant"]))
    with pytest.raises(DermretrError, match=r"\['target', 'benign_malignant'\]"):
        load_isic2020(root)


def test_unknown_diagnosis_names_rows_and_allowed_values(tmp_path):
    msg = bad_value_error(load_isic2020, lambda rows: _dataset(tmp_path / "isic", rows=rows), ROWS, "diagnosis",
                          "basal cell carcinoma", [7])
    assert_mentions(msg, "nevus, melanoma", "unknown")


@pytest.mark.parametrize("column, value", [("age_approx", "forty"), ("age_approx", "-5"), ("target", "2")])
def test_malformed_values_name_row_and_value(tmp_path, column, value):
    bad_value_error(load_isic2020, lambda rows: _dataset(tmp_path / "isic", rows=rows), ROWS, column, value, [4])


def test_missing_metadata_file_names_the_file(tmp_path):
    root = tmp_path / "isic"
    (root / "train").mkdir(parents=True)
    assert_mentions(error_message(load_isic2020, root), str(root / CSV))


@pytest.mark.parametrize("name", ["../../secret", "/etc/passwd", "train/ISIC_0000001"])
def test_image_names_must_not_leave_the_folder(tmp_path, name):
    rows = [dict(r) for r in ROWS]
    rows[2]["image_name"] = name
    msg = error_message(load_isic2020, _dataset(tmp_path / "isic", rows=rows, image_rows={0, 1, 3, 4, 5, 6, 7, 8}))
    assert_mentions(msg, f"{CSV}: column 'image_name' has image names at line 4 (", name)


def test_missing_images_warn_raise_keep(tmp_path):
    root = _dataset(tmp_path / "isic", image_rows={1, 2, 3, 4, 5, 6, 7, 8})  # row 0 lacks its image
    cases, msg = load_with_one_warning(load_isic2020, root)
    assert_mentions(msg, "1 of 9", "ISIC_2637011.jpg")
    assert len(cases) == 8 and "ISIC_2637011" not in set(cases["case_id"])

    with pytest.raises(DermretrError, match=r"1 of 9.*ISIC_2637011\.jpg"):
        load_isic2020(root, missing="raise")

    kept = load_isic2020(root, missing="keep")
    assert len(kept) == 9
    assert kept["image_path"].iloc[0] == str(root.absolute() / "ISIC_2637011.jpg")

    with pytest.raises(DermretrError, match="missing must be one of"):
        load_isic2020(root, missing="drop")


def test_split_is_leak_free(tmp_path):
    diagnoses = ["nevus", "melanoma", "unknown", "unknown", "seborrheic keratosis"]
    rows = [_row(p * 100 + k, p, diagnoses[p % 5]) for p in range(80) for k in range(1 + p % 4)]
    root = tmp_path / "isic"
    write_csv(root / CSV, pd.DataFrame(rows, columns=HEADER))
    cases = load_isic2020(root, missing="keep", seed=2)
    assert (cases.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(cases["split"]) == {"train", "val", "test"}


def test_empty_patient_id_makes_its_own_group_with_a_warning(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[3]["patient_id"] = ""
    rows[5]["patient_id"] = " "
    root = _dataset(tmp_path / "isic", rows=rows)
    with pytest.warns(DataWarning, match=r"2 empty 'patient_id' cell\(s\) \(lines 5, 7\)"):
        cases = load_isic2020(root)
    assert cases["patient_id"].iloc[3] == "img:ISIC_0068279" and cases["patient_id"].iloc[5] == "img:ISIC_0074311"


def test_load_by_spec(tmp_path):
    root = _dataset(tmp_path / "isic")
    cases = load(f"isic2020:{root}")
    assert len(cases) == len(ROWS) and (cases["source"] == "isic2020").all()


def test_many_rows_load_fast(tmp_path):
    """Vectorised: 3,000 rows in well under the 35,000-rows-in-5-s budget (generous bound for slow machines)."""
    n = 3000
    rng = np.random.default_rng(0)
    diagnoses = np.array(["unknown"] * 8 + ["nevus", "melanoma"])
    names = [f"ISIC_{i:07d}" for i in range(n)]
    df = pd.DataFrame({"image_name": names, "patient_id": [f"IP_{i % 200}" for i in range(n)],
                       "sex": "male", "age_approx": "50.0", "anatom_site_general_challenge": "torso",
                       "diagnosis": diagnoses[rng.integers(0, 10, n)], "benign_malignant": "benign", "target": "0"})
    root = tmp_path / "isic"
    write_csv(root / CSV, df)
    for i, name in enumerate(names):
        folder = root / "train" / f"part_{i % 4}"
        if i < 4:
            folder.mkdir(parents=True)
        (folder / f"{name}.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    cases = load_isic2020(root)  # its speed is measured in benchmarks/, not asserted here
    assert len(cases) == n and cases["image_path"].map(lambda p: Path(p).name).tolist() == [f"{x}.jpg" for x in names]
