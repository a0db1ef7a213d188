"""The case-table schema: validation, coercion and clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from dermretr._errors import CaseTableError
from dermretr.data.cases import CASE_COLUMNS, empty_cases, summarize_cases, validate_cases
from dermretr.data.vocab import CRITERION_NAMES


def _table(n=4, **overrides):
    data = {
        "case_id": [f"c{i}" for i in range(n)],
        "patient_id": [f"p{i // 2}" for i in range(n)],
        "image_path": [f"img/{i}.jpg" for i in range(n)],
        "diagnosis": ["melanoma", "clark nevus", "lentigo", "basal cell carcinoma"][:n],
        "diagnosis_group": ["MEL", "NEV", "MISC", "BCC"][:n],
        "split": ["train", "train", "val", "test"][:n],
        "source": ["unit"] * n,
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_minimal_table_gets_all_schema_columns_in_order():
    out = validate_cases(_table(extra_col=[1, 2, 3, 4]))
    assert list(out.columns) == [*CASE_COLUMNS, "extra_col"]
    assert out["malignant"].dtype == "boolean"
    assert out["fitzpatrick"].dtype == "Int64" and out["monk"].dtype == "Int64"
    for c in CRITERION_NAMES:
        assert isinstance(out[c].dtype, pd.CategoricalDtype)
        assert out[c].isna().all()
    assert list(out["split"].cat.categories) == ["train", "val", "test"]


def test_values_are_coerced_to_canonical_forms():
    out = validate_cases(_table(
        pigmentation=["diffuse_irregular", "Localized Regular", None, "absent"],
        fitzpatrick=[1.0, "6", None, 3],
        monk=[10, None, 1, "5"],
        malignant=["true", 0, None, "benign"],
        split=["Train", "train", "VAL", "test"],
    ))
    assert out["pigmentation"].astype(object).tolist()[:2] == ["diffuse irregular", "localized regular"]
    assert out["fitzpatrick"].tolist()[:2] == [1, 6] and pd.isna(out["fitzpatrick"][2])
    assert out["malignant"].tolist()[:2] == [True, False]
    assert pd.isna(out["malignant"][2]) and not out["malignant"][3]
    assert out["split"].astype(str).tolist() == ["train", "train", "val", "test"]


@pytest.mark.parametrize(
    "override, column, fragment",
    [
        ({"case_id": ["a", "b", "a", "c"]}, "case_id", "'a' (rows 0, 2)"),
        ({"patient_id": ["p", None, "q", "r"]}, "patient_id", "row 1"),
        ({"split": ["train", "training", "val", "test"]}, "split", "row 1 ('training')"),
        ({"fitzpatrick": [1, 7, 2, 0]}, "fitzpatrick", "rows 1 (7), 3 (0)"),
        ({"monk": [1, 2.5, None, 3]}, "monk", "row 1 (2.5)"),
        ({"malignant": [True, "maybe", False, True]}, "malignant", "row 1 ('maybe')"),
        ({"streaks": ["absent", "regular", "wavy", None]}, "streaks", "row 2 ('wavy')"),
        ({"image_path": ["a", "", "b", "c"]}, "image_path", "row 1"),
    ],
)
def test_errors_name_column_rows_and_values(override, column, fragment):
    with pytest.raises(CaseTableError) as err:
        validate_cases(_table(**override))
    msg = str(err.value)
    assert f"column {column!r}" in msg and fragment in msg


def test_bad_criterion_error_lists_allowed_values():
    with pytest.raises(CaseTableError, match="allowed values: absent, regular, irregular"):
        validate_cases(_table(streaks=["absent", "regular", "wavy", None]))


def test_missing_required_columns_listed_with_found_columns():
    with pytest.raises(CaseTableError) as err:
        validate_cases(_table().drop(columns=["patient_id", "split"]))
    assert "['patient_id', 'split']" in str(err.value) and "found columns" in str(err.value)


def test_not_a_dataframe():
    with pytest.raises(CaseTableError, match="pandas DataFrame"):
        validate_cases([{"case_id": "a"}])


def test_input_not_modified_and_index_reset():
    df = _table(pigmentation=["diffuse_irregular"] * 4)
    df.index = [10, 11, 12, 13]
    out = validate_cases(df)
    assert df["pigmentation"].tolist() == ["diffuse_irregular"] * 4
    assert out.index.tolist() == [0, 1, 2, 3]


def test_empty_cases_is_valid_and_empty():
    empty = empty_cases(["extra"])
    assert len(empty) == 0 and "extra" in empty.columns
    validate_cases(empty)


def test_summary_counts_add_up():
    out = validate_cases(_table(fitzpatrick=[1, 1, None, 6], streaks=["absent", "regular", None, "irregular"]))
    summary = summarize_cases(out)
    assert summary["fitzpatrick"].loc["I", "total"] == 2
    assert summary["fitzpatrick"].loc["unknown", "total"] == 1
    assert summary["fitzpatrick"].loc["VI", "test"] == 1
    assert summary["criteria"].loc[("streaks", "unknown"), "val"] == 1
    assert summary["diagnosis"]["total"].sum() == 4
    assert summary["splits"].loc["train"].tolist() == [2, 1]
