"""SCIN loader: dataset/scin_cases.csv joined with dataset/scin_labels.csv, one row per image."""

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
    write_csv,
    write_dataset,
)

from dermretr._errors import DataWarning, DermretrError
from dermretr.data import load
from dermretr.data.sources.scin import load_scin

# ids as SCIN writes them: large, often negative integers (beyond float precision)
IDS = ["-1234567890123456789", "2968650902364227344", "-821110872479093372", "-9223372036854775807",
       "5000000000000000001", "-6810148049730008082"]
NAMES_COLUMN = "dermatologist_skin_condition_on_label_name"


def _case(cid, k, n_images, **extra):
    row = {"case_id": cid, "source": "SCIN", "release": "1.0.0", "year": "2023",
           "age_group": "AGE_30_TO_39", "sex_at_birth": "FEMALE", "fitzpatrick_skin_type": f"FST{k % 6 + 1}",
           "textures_raised_or_bumpy": "YES" if k % 2 else "", "textures_flat": "", "body_parts_arm": "YES",
           "body_parts_back_of_hand": "YES" if k == 0 else "", "condition_symptoms_itching": "YES",
           "condition_symptoms_no_relevant_experience": "YES" if k == 1 else "",
           "other_symptoms_fever": "YES" if k == 0 else "", "related_category": "RASH",
           "condition_duration": "ONE_TO_FOUR_WEEKS"}
    for n in (1, 2, 3):
        row[f"image_{n}_path"] = f"dataset/images/{cid}_{n}.png" if n <= n_images else ""
        row[f"image_{n}_shot_type"] = ["CLOSE_UP", "AT_AN_ANGLE", "AT_DISTANCE"][n - 1] if n <= n_images else ""
    row.update(extra)
    return row


def _label(cid, weights="", names="", derm=("", "", ""), monk_us="", monk_india="", names_column=NAMES_COLUMN):
    return {"case_id": cid, "dermatologist_gradable_for_skin_condition_1": "DEFAULT_YES_IMAGE_QUALITY_SUFFICIENT",
            names_column: names, "dermatologist_skin_condition_confidence": "[3, 2]",
            "weighted_skin_condition_label": weights,
            **{f"dermatologist_fitzpatrick_skin_type_label_{k}": v for k, v in zip((1, 2, 3), derm)},
            "monk_skin_tone_label_india": monk_india, "monk_skin_tone_label_us": monk_us}


def _tables(names_column=NAMES_COLUMN):
    cases = [_case(cid, k, n_images=[3, 1, 2, 2, 1, 3][k]) for k, cid in enumerate(IDS)]
    cases[3]["fitzpatrick_skin_type"] = "NONE_IDENTIFIED"
    cases[4]["fitzpatrick_skin_type"] = ""
    cases[4]["age_group"] = "AGE_UNKNOWN"
    cases[4]["sex_at_birth"] = "OTHER_OR_UNSPECIFIED"
    cases[4]["condition_duration"] = "SINCE_CHILDHOOD"
    kw = {"names_column": names_column}
    labels = [
        _label(IDS[0], "{'Eczema': 0.69, 'Psoriasis': 0.31}", "['Nummular eczema', 'Psoriasis vulgaris']",
               ("FST3", "FST4", "FST5"), "4", "3.0", **kw),
        _label(IDS[1], "{'Tinea': 0.5, 'Acute dermatitis, NOS': 0.5}", "['Tinea']", ("FST2", "FST5", ""), "2", **kw),
        _label(IDS[2], "", "['Insect Bite', 'Urticaria']", ("NONE_IDENTIFIED", "", ""), **kw),
        _label(IDS[3], "{}", "[]", **kw),
        # IDS[4] has no row in the labels file; IDS[5] has one with every label empty
        _label(IDS[5], monk_us="10", **kw),
    ]
    return cases, labels


def _dataset(root: Path, cases=None, labels=None, images=True, **csv_options) -> Path:
    default_cases, default_labels = _tables()
    cases = default_cases if cases is None else cases
    labels = default_labels if labels is None else labels
    def image(i, row):  # up to three per case
        return [root / row[f"image_{n}_path"] for n in (1, 2, 3) if row.get(f"image_{n}_path")]

    write_dataset(root / "dataset" / "scin_cases.csv", cases, image=image if images else None, **csv_options)
    write_csv(root / "dataset" / "scin_labels.csv", labels, **csv_options)
    return root


def test_loads_publisher_layout_one_row_per_image(tmp_path):
    root = _dataset(tmp_path / "scin")
    cases = load_scin(root)
    assert_case_table(cases, "scin", 12)
    assert cases["scin_source"].eq("SCIN").all()
    assert cases["case_id"].tolist()[:4] == [f"{IDS[0]}-1", f"{IDS[0]}-2", f"{IDS[0]}-3", f"{IDS[1]}-1"]
    assert cases["patient_id"].tolist()[:4] == [IDS[0]] * 3 + [IDS[1]]
    assert cases["scin_case_id"].tolist() == cases["patient_id"].tolist()
    assert cases["image_number"].tolist()[:4] == [1, 2, 3, 1]
    assert cases["shot_type"].tolist()[:3] == ["CLOSE_UP", "AT_AN_ANGLE", "AT_DISTANCE"]
    by_case = cases.drop_duplicates("patient_id").set_index("patient_id")
    # highest weight (first on ties), else first listed, else "unlabeled"
    assert by_case["diagnosis"].to_dict() == {IDS[0]: "Eczema", IDS[1]: "Tinea", IDS[2]: "Insect Bite",
                                              IDS[3]: "unlabeled", IDS[4]: "unlabeled", IDS[5]: "unlabeled"}
    assert cases["diagnosis_group"].equals(cases["diagnosis"])
    assert cases["malignant"].isna().all()
    # self-reported; NONE_IDENTIFIED and empty are unknown
    assert by_case["fitzpatrick"].astype("Float64").fillna(-1).tolist() == [1, 2, 3, -1, -1, 6]
    assert by_case["dermatologist_fitzpatrick_consensus"].astype("Float64").fillna(-1).tolist() == \
        [4, 2, -1, -1, -1, -1]
    assert by_case["dermatologist_fitzpatrick_skin_type_label_1"].tolist()[0] == "FST3"
    assert by_case["monk"].astype("Float64").fillna(-1).tolist() == [4, 2, -1, -1, -1, 10]
    assert by_case.loc[IDS[0], "monk_skin_tone_label_india"] == 3
    assert by_case.loc[IDS[0], "weighted_skin_condition_label"] == "{'Eczema': 0.69, 'Psoriasis': 0.31}"
    assert by_case.loc[IDS[0], "descriptors"] == (
        "Eczema; itching; fever; on the arm; on the back of the hand; present for one to four weeks; "
        "age 30 to 39; female")
    assert by_case.loc[IDS[1], "descriptors"] == (
        "Tinea; itching; raised or bumpy; on the arm; present for one to four weeks; age 30 to 39; female")
    # unknown age, unspecified sex and "no relevant experience" are left out
    assert by_case.loc[IDS[4], "descriptors"] == "itching; on the arm; present since childhood"
    assert by_case.loc[IDS[1], "descriptors"].count("itching") == 1
    # findings: the same answers without the condition
    assert by_case.loc[IDS[0], "findings"] == (
        "itching; fever; on the arm; on the back of the hand; present for one to four weeks; age 30 to 39; female")
    assert by_case.loc[IDS[4], "findings"] == by_case.loc[IDS[4], "descriptors"]  # unlabeled: nothing to drop
    assert all(d.endswith(f) for d, f in zip(cases["descriptors"], cases["findings"]))
    assert (cases.groupby("patient_id")["split"].nunique() == 1).all()


def test_case_ids_survive_as_exact_strings(tmp_path):
    cases = load_scin(_dataset(tmp_path))
    assert set(cases["patient_id"]) == set(IDS)
    assert cases["patient_id"].map(type).eq(str).all()
    assert f"{IDS[3]}-1" in set(cases["case_id"])  # -9223372036854775807 is not rounded


def test_bom_crlf_and_trailing_blank_lines(tmp_path):
    plain = load_scin(_dataset(tmp_path / "plain"))
    messy = load_scin(_dataset(tmp_path / "messy", bom=True, crlf=True, trailing_blank_lines=3))
    cols = ["case_id", "patient_id", "diagnosis", "fitzpatrick", "monk", "descriptors", "split"]
    pd.testing.assert_frame_equal(plain[cols], messy[cols])


def test_alternative_condition_column_spelling(tmp_path):
    cases, labels = _tables(names_column="dermatologist_skin_condition_label_name")
    got = load_scin(_dataset(tmp_path, cases, labels))
    assert got.set_index("patient_id").loc[IDS[2], "diagnosis"].iloc[0] == "Insect Bite"


def test_root_may_be_the_dataset_folder(tmp_path):
    root = _dataset(tmp_path / "scin")
    assert load_scin(root / "dataset")["image_path"].tolist() == load_scin(root)["image_path"].tolist()


def test_missing_required_columns_list_missing_and_found(tmp_path):
    cases, labels = _tables()
    for row in cases:
        del row["image_1_path"]
    msg = error_message(load_scin, _dataset(tmp_path / "a", cases, labels, images=False))
    assert_mentions(msg, "scin_cases.csv", "['image_1_path']", "found columns", "image_2_path")
    cases, labels = _tables()
    labels = [{k: v for k, v in row.items() if k not in (NAMES_COLUMN, "weighted_skin_condition_label")}
              for row in labels]
    _dataset(tmp_path / "b", cases, labels, images=False)
    with pytest.raises(DermretrError, match="scin_labels.csv.*weighted_skin_condition_label.*found columns"):
        load_scin(tmp_path / "b")


@pytest.mark.parametrize("where, column, value, allowed", [
    ("cases", "fitzpatrick_skin_type", "FST9", "FST1, FST2"),
    ("labels", "dermatologist_fitzpatrick_skin_type_label_2", "dark", "NONE_IDENTIFIED"),
    ("labels", "monk_skin_tone_label_us", "11", "1..10"),
])
def test_unknown_values_name_rows_and_allowed_values(tmp_path, where, column, value, allowed):
    cases, labels = _tables()
    if where == "cases":
        table, write = cases, lambda rows: _dataset(tmp_path, rows, labels, images=False)
    else:
        table, write = labels, lambda rows: _dataset(tmp_path, cases, rows, images=False)
    msg = bad_value_error(load_scin, write, table, column, value, [1, 3])
    assert_mentions(msg, f"scin_{where}.csv", allowed)


@pytest.mark.parametrize("column, value", [
    (NAMES_COLUMN, "['Eczema', 'Tinea'"),
    (NAMES_COLUMN, "Eczema"),
    (NAMES_COLUMN, "{'Eczema': 1}"),
    ("weighted_skin_condition_label", "{'Eczema': 'high'}"),
    ("weighted_skin_condition_label", "__import__('pathlib').Path('PWNED').touch()"),
])
def test_malformed_literal_names_file_line_and_column(tmp_path, monkeypatch, column, value):
    monkeypatch.chdir(tmp_path)
    cases, labels = _tables()
    labels[2][column] = value
    msg = error_message(load_scin, _dataset(tmp_path, cases, labels, images=False))
    assert_mentions(msg, "scin_labels.csv", column, f"at line 4 ({value!r}: ", "malformed")
    assert not (tmp_path / "PWNED").exists()  # literal_eval, never eval


def test_root_without_metadata_names_the_file(tmp_path):
    with pytest.raises(DermretrError, match=r"dataset/scin_cases.csv") as err:
        load_scin(tmp_path)
    assert str(tmp_path) in str(err.value)
    cases, _ = _tables()
    write_csv(tmp_path / "dataset" / "scin_cases.csv", cases)
    with pytest.raises(DermretrError, match=r"dataset/scin_labels.csv"):
        load_scin(tmp_path)


@pytest.mark.parametrize("bad_path", ["../../secret.png", "/etc/passwd", "dataset/../../x.png"])
def test_escaping_image_path_is_rejected_with_its_line(tmp_path, bad_path):
    cases, labels = _tables()
    cases[2]["image_2_path"] = bad_path
    _dataset(tmp_path, cases, labels, images=False)
    assert_mentions(error_message(load_scin, tmp_path, missing="keep"), "scin_cases.csv, line 4:", "escapes")


def test_missing_images_warn_raise_keep(tmp_path):
    root = _dataset(tmp_path)
    gone = [root / "dataset" / "images" / f"{IDS[0]}_2.png", root / "dataset" / "images" / f"{IDS[5]}_1.png"]
    for p in gone:
        p.unlink()
    cases, msg = load_with_one_warning(load_scin, root)
    assert_mentions(msg, "2 of 12", *(p.name for p in gone))
    assert len(cases) == 10 and f"{IDS[0]}-2" not in set(cases["case_id"])
    with pytest.raises(DermretrError, match="2 of 12"):
        load_scin(root, missing="raise")
    kept = load_scin(root, missing="keep")
    assert len(kept) == 12
    assert kept.set_index("case_id").loc[f"{IDS[0]}-2", "image_path"] == str(gone[0].resolve())
    assert kept["split"].tolist() == load_scin(_dataset(tmp_path / "full"))["split"].tolist()
    with pytest.raises(DermretrError, match="missing must be one of"):
        load_scin(root, missing="skip")


def test_cases_without_images_are_skipped_with_a_warning(tmp_path):
    cases, labels = _tables()
    for n in (1, 2, 3):
        cases[1][f"image_{n}_path"] = ""
    root = _dataset(tmp_path, cases, labels)
    with pytest.warns(DataWarning, match="1 case"):
        got = load_scin(root)
    assert IDS[1] not in set(got["patient_id"]) and len(got) == 11


def test_load_spec_and_leak_free_split(tmp_path):
    cases, labels = [], []
    for k in range(30):
        cid = str(-(10 ** 18) - k * 7919)
        cases.append(_case(cid, k, n_images=k % 3 + 1))
        labels.append(_label(cid, weights=f"{{'{['Eczema', 'Psoriasis'][k % 2]}': 1.0}}"))
    root = _dataset(tmp_path, cases, labels)
    got = load(f"scin:{root}")
    assert len(got) == 60 and got["source"].eq("scin").all()
    assert set(got["split"].astype(str)) == {"train", "val", "test"}
    assert (got.groupby("patient_id")["split"].nunique() == 1).all()
    assert load("scin", root, seed=0)["split"].equals(got["split"])
