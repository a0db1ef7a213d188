"""PAD-UFES-20 loader: the publisher's layout, text view, errors, missing images and splits."""

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
)

from dermretr._errors import DermretrError
from dermretr.data import load
from dermretr.data.sources.pad_ufes20 import load_pad_ufes20

HEADER = [
    "patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age", "pesticide",
    "gender", "skin_cancer_history", "cancer_history", "has_piped_water", "has_sewage_system", "fitspatrick",
    "region", "diameter_1", "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed", "bleed", "elevation",
    "img_id", "biopsed",
]


def _row(patient: int, lesion: int, image: int, diagnostic: str, **values) -> dict:
    row = dict.fromkeys(HEADER, "")
    row.update(patient_id=f"PAT_{patient}", lesion_id=str(lesion), img_id=f"PAT_{patient}_{lesion}_{image}.png",
               diagnostic=diagnostic, smoke="False", drink="False", age="50", region="CHEST",
               diameter_1="6.0", diameter_2="5.0", itch="UNK", grew="UNK", hurt="UNK", changed="UNK",
               bleed="UNK", elevation="UNK", biopsed="False")
    row.update(values)
    return row


ROWS = [
    _row(1, 10, 100, "BCC", age="67", gender="MALE", fitspatrick="2.0", region="FACE", itch="True", grew="True",
         hurt="False", bleed="True", elevation="True", biopsed="True"),
    _row(1, 11, 101, "ACK", age="67", gender="MALE", region="ARM", elevation="False"),
    _row(2, 20, 200, "MEL", fitspatrick="1.0"),
    _row(3, 30, 300, "NEV", fitspatrick="6.0", region="BACK"),
    _row(4, 40, 400, "SCC", fitspatrick="3.0", hurt="True", changed="True"),
    _row(5, 50, 500, "SEK", age="", region="NOSE"),
]


def _dataset(root: Path, rows=ROWS, nested: bool = False, image_rows=None, **csv) -> Path:
    """Write metadata.csv and the images (spread over imgs_part_1..3) in PAD-UFES-20's layout."""
    def image(i, row):
        part = f"imgs_part_{i % 3 + 1}"
        return (root / part / part if nested else root / part) / row["img_id"]

    write_dataset(root / "metadata.csv", rows, HEADER, image, image_rows, **csv)
    return root


def test_loads_a_valid_case_table(tmp_path):
    cases = load_quietly(load_pad_ufes20, _dataset(tmp_path / "pad"))
    assert_case_table(cases, "pad-ufes-20", len(ROWS))
    by_id = cases.set_index("case_id")
    assert list(by_id.index) == ["PAT_1_10_100", "PAT_1_11_101", "PAT_2_20_200", "PAT_3_30_300", "PAT_4_40_400",
                                 "PAT_5_50_500"]
    assert by_id["diagnosis"].tolist() == ["BCC", "ACK", "MEL", "NEV", "SCC", "SEK"]
    assert by_id["diagnosis_group"].tolist() == ["BCC", "AK", "MEL", "NEV", "SCC", "SK"]
    assert by_id["malignant"].tolist() == [True, False, True, False, True, False]
    assert by_id["fitzpatrick"].iloc[[0, 2, 3, 4]].tolist() == [2, 1, 6, 3]
    assert by_id["fitzpatrick"].iloc[[1, 5]].isna().all()
    assert str(cases["fitzpatrick"].dtype) == "Int64"
    assert cases["patient_id"].tolist() == ["PAT_1", "PAT_1", "PAT_2", "PAT_3", "PAT_4", "PAT_5"]
    assert cases["monk"].isna().all()
    assert by_id.loc["PAT_1_10_100", "descriptors"] == (
        "basal cell carcinoma; itching; growing; bleeding; elevated; on the face; age 67; male; biopsy-proven"
    )
    assert by_id.loc["PAT_1_11_101", "descriptors"] == "actinic keratosis; flat; on the arm; age 67; male"
    assert by_id.loc["PAT_4_40_400", "descriptors"] == ("squamous cell carcinoma; painful; changing; on the chest; "
                                                        "age 50")
    assert by_id.loc["PAT_5_50_500", "descriptors"] == "seborrheic keratosis; on the nose"
    # findings: symptoms, elevation, site, age and sex; not the diagnosis, not the biopsy
    assert by_id.loc["PAT_1_10_100", "findings"] == "itching; growing; bleeding; elevated; on the face; age 67; male"
    assert by_id.loc["PAT_1_11_101", "findings"] == "flat; on the arm; age 67; male"
    assert by_id.loc["PAT_5_50_500", "findings"] == "on the nose"
    # every original column is kept; age is numeric
    for column in HEADER:
        assert column in cases.columns
    assert by_id.loc["PAT_1_10_100", "smoke"] == "False"
    assert by_id.loc["PAT_1_10_100", "age"] == 67
    assert pd.isna(by_id.loc["PAT_5_50_500", "age"])


def test_nested_and_case_mismatched_images_are_found(tmp_path):
    root = _dataset(tmp_path / "pad", nested=True)
    # one image with its extension in upper case, another with an upper-case name
    first = next(root.rglob("PAT_1_10_100.png"))
    first.rename(first.with_name("PAT_1_10_100.PNG"))
    second = next(root.rglob("PAT_2_20_200.png"))
    second.rename(second.with_name("pat_2_20_200.png"))
    cases, _ = load_with_one_warning(load_pad_ufes20, root, match=r"2 image\(s\).*letter case")
    assert len(cases) == len(ROWS)
    paths = cases.set_index("case_id")["image_path"]
    assert paths["PAT_1_10_100"].endswith("imgs_part_1/imgs_part_1/PAT_1_10_100.PNG")
    assert Path(paths["PAT_2_20_200"]).name == "pat_2_20_200.png"


def test_bom_crlf_and_trailing_blank_lines(tmp_path):
    cases = load_quietly(load_pad_ufes20, _dataset(tmp_path / "pad", bom=True, crlf=True, trailing_blank_lines=3))
    assert len(cases) == len(ROWS)
    assert "patient_id" in cases.columns and cases["img_id"].iloc[0] == "PAT_1_10_100.png"
    assert cases["biopsed"].iloc[0] == "True"  # no stray '\r' in the last column


def test_missing_required_column_lists_missing_and_found(tmp_path):
    root = tmp_path / "pad"
    write_csv(root / "metadata.csv", pd.DataFrame(ROWS).drop(columns=["diagnostic"]))
    assert_mentions(error_message(load_pad_ufes20, root), "['diagnostic']", "img_id", "found columns", "metadata.csv")


def test_unknown_diagnosis_names_rows_and_allowed_values(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[2]["diagnostic"] = "BOD"
    rows[4]["diagnostic"] = ""
    msg = error_message(load_pad_ufes20, _dataset(tmp_path / "pad", rows=rows))
    assert_mentions(msg, "'diagnostic' has unknown values at lines 4 ('BOD'), 6 (empty);",
                    "ACK, BCC, MEL, NEV, SCC, SEK")


def test_lowercase_diagnosis_is_accepted(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[0]["diagnostic"] = "bcc"
    cases = load_pad_ufes20(_dataset(tmp_path / "pad", rows=rows))
    assert cases["diagnosis"].iloc[0] == "BCC"


@pytest.mark.parametrize("column, value", [("age", "sixty"), ("fitspatrick", "7.0"), ("fitspatrick", "2.5"),
                                           ("bleed", "maybe")])
def test_malformed_values_name_row_and_value(tmp_path, column, value):
    bad_value_error(load_pad_ufes20, lambda rows: _dataset(tmp_path / "pad", rows=rows), ROWS, column, value, [3])


def test_missing_metadata_file_names_the_file(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    assert_mentions(error_message(load_pad_ufes20, root), str(root / "metadata.csv"))


@pytest.mark.parametrize("name", ["../../secret.png", "/etc/passwd.png", "imgs_part_1/PAT_9_9_9.png",
                                  "..\\..\\secret.png"])
def test_image_names_must_not_leave_the_folder(tmp_path, name):
    rows = [dict(r) for r in ROWS]
    rows[1]["img_id"] = name
    msg = error_message(load_pad_ufes20, _dataset(tmp_path / "pad", rows=rows, image_rows={0, 2, 3, 4, 5}))
    assert_mentions(msg, "metadata.csv: column 'img_id' has image names at line 3 (", repr(name))


def test_missing_images_warn_raise_keep(tmp_path):
    root = _dataset(tmp_path / "pad", image_rows={0, 1, 3, 5})  # rows 2 and 4 have no image
    cases, msg = load_with_one_warning(load_pad_ufes20, root)
    assert_mentions(msg, "2 of 6", "PAT_2_20_200.png", "PAT_4_40_400.png")
    assert sorted(cases["case_id"]) == ["PAT_1_10_100", "PAT_1_11_101", "PAT_3_30_300", "PAT_5_50_500"]

    with pytest.raises(DermretrError, match=r"2 of 6.*PAT_2_20_200\.png"):
        load_pad_ufes20(root, missing="raise")

    kept = load_quietly(load_pad_ufes20, root, missing="keep")
    assert len(kept) == 6
    paths = kept.set_index("case_id")["image_path"]
    assert paths["PAT_2_20_200"] == str(root.absolute() / "PAT_2_20_200.png")
    assert Path(paths["PAT_1_10_100"]).is_file()
    # the split of a patient does not depend on which images exist
    full = kept.set_index("case_id")["split"]
    assert (cases.set_index("case_id")["split"] == full[cases["case_id"]]).all()

    with pytest.raises(DermretrError, match="missing must be one of"):
        load_pad_ufes20(root, missing="ignore")


def test_split_is_leak_free_and_seeded(tmp_path):
    diagnoses = ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"]
    rows = [_row(p, p * 10 + lesion, p * 100 + lesion, diagnoses[p % 6])
            for p in range(60) for lesion in range(1 + p % 3)]
    root = tmp_path / "pad"
    write_csv(root / "metadata.csv", pd.DataFrame(rows, columns=HEADER))
    cases = load_pad_ufes20(root, missing="keep")
    assert (cases.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(cases["split"]) == {"train", "val", "test"}
    assert cases["split"].equals(load_pad_ufes20(root, missing="keep")["split"])
    other = [load_pad_ufes20(root, missing="keep", seed=s)["split"] for s in (1, 2, 3)]
    assert any(not cases["split"].equals(o) for o in other)


def test_other_metadata_file(tmp_path):
    root = _dataset(tmp_path / "pad")
    (root / "metadata.csv").rename(root / "pad_meta.csv")
    assert len(load_pad_ufes20(root, metadata="pad_meta.csv")) == len(ROWS)
    assert len(load_pad_ufes20(tmp_path, metadata=root / "pad_meta.csv")) == len(ROWS)


def test_load_by_spec(tmp_path):
    root = _dataset(tmp_path / "pad")
    cases = load(f"pad-ufes-20:{root}")
    assert len(cases) == len(ROWS) and (cases["source"] == "pad-ufes-20").all()
    assert cases.equals(load("pad-ufes-20", root))


def test_required_columns_only_give_empty_findings(tmp_path):
    root = tmp_path / "pad"
    write_dataset(root / "metadata.csv", [{k: r[k] for k in ("patient_id", "diagnostic", "img_id")} for r in ROWS],
                  image=lambda i, row: root / row["img_id"])
    cases = load_pad_ufes20(root)
    assert cases["findings"].eq("").all()
    assert cases["descriptors"].tolist()[:2] == ["basal cell carcinoma", "actinic keratosis"]
