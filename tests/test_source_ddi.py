"""DDI loader: ddi_metadata.csv (new and old malignancy column) and its PNG images."""

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
)

from dermretr._errors import CaseTableError, DermretrError
from dermretr.data import load
from dermretr.data.sources.ddi import load_ddi

DISEASES = [("melanoma-in-situ", True), ("seborrheic-keratosis-irritated", False),
            ("basal-cell-carcinoma", True), ("verruca-vulgaris", False), ("epidermal-cyst", False)]
TONES = ["12", "34", "56"]


def _rows(n=15, old=False):
    rows = []
    for i in range(n):
        disease, malignant = DISEASES[i % len(DISEASES)]
        row = {"DDI_ID": str(i + 1), "DDI_file": f"{i + 1:06d}.png", "skin_tone": TONES[i % 3]}
        if old:
            row["malignancy(malig=1)"] = "1" if malignant else "0"
        else:
            row["malignant"] = str(malignant)
        row["disease"] = disease
        rows.append(row)
    return rows


def _dataset(root: Path, rows=None, images=True, index_column=False, **csv_options) -> Path:
    rows = _rows() if rows is None else rows
    df = pd.DataFrame(rows)
    if index_column:  # as written by DataFrame.to_csv() with its index: ",DDI_ID,..."
        df.insert(0, "", [str(i) for i in range(len(df))])

    def image(i, row):  # beside the CSV or in images/
        return (root / "images" if i % 3 else root) / row["DDI_file"]

    write_dataset(root / "ddi_metadata.csv", df, image=image if images else None, **csv_options)
    return root


def test_loads_publisher_layout_into_valid_case_table(tmp_path):
    root = _dataset(tmp_path / "ddi")
    cases = load_ddi(root)
    assert_case_table(cases, "ddi", 15)
    assert cases["case_id"].tolist()[:3] == ["ddi-1", "ddi-2", "ddi-3"]
    assert cases["patient_id"].tolist()[:3] == ["1", "2", "3"]
    assert Path(cases.loc[0, "image_path"]).parent == root.resolve()
    assert Path(cases.loc[1, "image_path"]).parent == root.resolve() / "images"
    assert cases.loc[0, "diagnosis"] == "melanoma-in-situ"
    assert cases["diagnosis_group"].tolist()[:2] == ["malignant", "benign"]
    assert cases["malignant"].tolist()[:4] == [True, False, True, False]
    assert cases["skin_tone_group"].tolist()[:3] == ["I-II", "III-IV", "V-VI"]
    assert cases["fitzpatrick"].isna().all() and cases["monk"].isna().all()
    assert cases.loc[0, "skin_tone"] == "12" and cases.loc[0, "ddi_malignant"] == "True"
    assert cases.loc[0, "descriptors"] == "melanoma in situ; malignant; Fitzpatrick type I-II skin"
    assert cases.loc[1, "descriptors"] == "seborrheic keratosis irritated; benign; Fitzpatrick type III-IV skin"
    assert cases.loc[0, "findings"] == "Fitzpatrick type I-II skin"  # DDI publishes nothing else pre-diagnosis
    assert cases["findings"].str.startswith("Fitzpatrick type ").all()
    assert (cases.groupby("patient_id")["split"].nunique() == 1).all()


def test_bom_crlf_blank_lines_and_leading_index_column(tmp_path):
    plain = load_ddi(_dataset(tmp_path / "plain"))
    messy = load_ddi(_dataset(tmp_path / "messy", index_column=True, bom=True, crlf=True, trailing_blank_lines=2))
    assert len(messy) == 15 and not any(c.startswith("Unnamed") for c in messy.columns)
    cols = ["case_id", "diagnosis", "diagnosis_group", "malignant", "skin_tone_group", "descriptors", "split"]
    pd.testing.assert_frame_equal(plain[cols], messy[cols])


def test_old_malignancy_column(tmp_path):
    new = load_ddi(_dataset(tmp_path / "new"))
    old = load_ddi(_dataset(tmp_path / "old", rows=_rows(old=True), index_column=True))
    assert old["malignant"].tolist() == new["malignant"].tolist()
    assert old["diagnosis_group"].tolist() == new["diagnosis_group"].tolist()
    assert old.loc[0, "malignancy(malig=1)"] == "1"


def test_missing_required_columns_list_missing_and_found(tmp_path):
    _dataset(tmp_path / "a", rows=[{k: v for k, v in r.items() if k != "disease"} for r in _rows()], images=False)
    assert_mentions(error_message(load_ddi, tmp_path / "a"), "['disease']", "found columns", "DDI_file",
                    "Expected layout")
    _dataset(tmp_path / "b", rows=[{k: v for k, v in r.items() if k != "malignant"} for r in _rows()], images=False)
    with pytest.raises(DermretrError, match=r"malignant.*malignancy\(malig=1\).*found columns"):
        load_ddi(tmp_path / "b")


@pytest.mark.parametrize("column, value, allowed", [
    ("skin_tone", "78", "12 (Fitzpatrick I-II), 34 (III-IV), 56 (V-VI)"),
    ("malignant", "maybe", "True, False"),
])
def test_unknown_values_name_rows_and_allowed_values(tmp_path, column, value, allowed):
    msg = bad_value_error(load_ddi, lambda rows: _dataset(tmp_path, rows=rows, images=False), _rows(), column, value,
                          [2, 11])
    assert_mentions(msg, allowed)


def test_repeated_ids_are_rejected(tmp_path):
    rows = _rows()
    rows[6]["DDI_ID"] = rows[1]["DDI_ID"]
    _dataset(tmp_path, rows=rows, images=False)
    with pytest.raises(CaseTableError, match=r"ddi_metadata.csv: column 'DDI_ID' repeats 1 value: '2' \(lines 3, 8\)"):
        load_ddi(tmp_path)


def test_root_without_metadata_names_the_file(tmp_path):
    with pytest.raises(DermretrError, match="ddi_metadata.csv") as err:
        load_ddi(tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("bad_path", ["../../secret.png", "/etc/passwd", "images/../../x.png"])
def test_escaping_image_path_is_rejected_with_its_line(tmp_path, bad_path):
    rows = _rows()
    rows[4]["DDI_file"] = bad_path
    _dataset(tmp_path, rows=rows, images=False)
    assert_mentions(error_message(load_ddi, tmp_path, missing="keep"), "ddi_metadata.csv, line 6:", "escapes")


def test_missing_images_warn_raise_keep(tmp_path):
    root = _dataset(tmp_path)
    (root / "000004.png").unlink()          # beside the CSV
    (root / "images" / "000005.png").unlink()
    cases, msg = load_with_one_warning(load_ddi, root)
    assert_mentions(msg, "2 of 15", "000004.png", "000005.png")
    assert len(cases) == 13 and not {"ddi-4", "ddi-5"} & set(cases["case_id"])
    with pytest.raises(DermretrError, match="2 of 15.*000004.png"):
        load_ddi(root, missing="raise")
    kept = load_ddi(root, missing="keep")
    assert len(kept) == 15
    assert kept.set_index("case_id").loc["ddi-4", "image_path"] == str(root.resolve() / "images" / "000004.png")
    with pytest.raises(DermretrError, match="missing must be one of"):
        load_ddi(root, missing=True)


def test_case_insensitive_file_names(tmp_path):
    root = _dataset(tmp_path)
    (root / "images" / "000002.png").rename(root / "images" / "000002.PNG")
    cases = load_ddi(root, missing="raise")
    assert cases.loc[1, "image_path"].endswith("000002.PNG")


def test_load_spec_and_leak_free_split(tmp_path):
    root = _dataset(tmp_path, rows=_rows(40))
    cases = load(f"ddi:{root}")
    assert len(cases) == 40 and cases["source"].eq("ddi").all()
    assert set(cases["split"].astype(str)) == {"train", "val", "test"}
    assert (cases.groupby("patient_id")["split"].nunique() == 1).all()
    for group in ("malignant", "benign"):  # stratified by group
        assert set(cases.loc[cases["diagnosis_group"] == group, "split"].astype(str)) == {"train", "val", "test"}
