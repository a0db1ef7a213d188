"""Derm7pt loader on fixtures in the official release layout (written by the tests)."""

from __future__ import annotations

import re
import warnings

import pandas as pd
import pytest
from fixtures import write_csv, write_dataset

from dermretr._errors import DataWarning, DermretrError
from dermretr.cli import main
from dermretr.data import load
from dermretr.data.vocab import CRITERION_NAMES, case_text

DIAGNOSES = ["clark nevus", "melanoma (in situ)", "basal cell carcinoma", "seborrheic keratosis",
             "dermatofibroma", "reed or spitz nevus", "melanoma (more than 1.5 mm)", "blue nevus"]


def _rows(n=16, underscores=False, full=False):
    rows = []
    for i in range(n):
        sp = "_" if underscores else " "
        row = {
            "diagnosis": DIAGNOSES[i % len(DIAGNOSES)],
            "pigment_network": ["absent", "typical", "atypical"][i % 3],
            "streaks": ["absent", "regular", "irregular"][i % 3],
            "pigmentation": ["absent", f"diffuse{sp}irregular", f"localized{sp}regular"][i % 3],
            "regression_structures": ["absent", f"blue{sp}areas", "combinations"][i % 3],
            "dots_and_globules": ["absent", "regular", "irregular"][i % 3],
            "blue_whitish_veil": ["absent", "present"][i % 2],
            "vascular_structures": ["absent", f"within{sp}regression", "dotted", "arborizing"][i % 4],
            "derm": f"Fol{i % 3}/Case{i:03d}.jpg",
        }
        if full:
            row = {"case_num": i + 1, **row, "seven_point_score": 0, "clinic": f"Fol{i % 3}/Clin{i:03d}.jpg",
                   "level_of_diagnostic_difficulty": "low", "elevation": "flat", "location": "back",
                   "sex": "female", "management": "excision", "case_id": f"c{i}", "notes": ""}
        rows.append(row)
    return rows


def _make(root, n=16, splits=True, images=True, underscores=False, full=False, **csv_options):
    rows = _rows(n, underscores=underscores, full=full)

    def image(i, row):  # the dermoscopic image and, with the full columns, the clinical one
        return [root / "images" / row[c] for c in ("derm", "clinic") if c in row]

    write_dataset(root / "meta" / "meta.csv", rows, image=image if images else None, **csv_options)
    if splits:
        idx = list(range(n))
        write_csv(root / "meta" / "train_indexes.csv", {"indexes": idx[: n // 2]})
        write_csv(root / "meta" / "valid_indexes.csv", {"indexes": idx[n // 2 : 3 * n // 4]})
        write_csv(root / "meta" / "test_indexes.csv", {"indexes": idx[3 * n // 4 :]})
    return rows


def test_required_columns_only_with_official_splits(tmp_path):
    _make(tmp_path)
    cases = load("derm7pt", tmp_path)
    assert len(cases) == 16 and cases["source"].eq("derm7pt").all()
    assert cases["split"].astype(str).tolist() == ["train"] * 8 + ["val"] * 4 + ["test"] * 4
    assert cases["patient_id"].equals(cases["case_id"])  # each case is its own patient
    assert set(cases["diagnosis_group"]) == {"NEV", "MEL", "BCC", "SK", "MISC"}
    assert cases.loc[cases["diagnosis"] == "blue nevus", "diagnosis_group"].eq("NEV").all()
    assert cases["malignant"].eq(cases["diagnosis_group"].isin(["MEL", "BCC"])).all()
    assert cases["fitzpatrick"].isna().all()
    row = cases.iloc[5]
    assert "irregular streaks" in case_text(row, seed=None) and "irregular streaks" in row["descriptors"]
    assert cases["findings"].equals(cases["descriptors"])  # the criteria are findings, no diagnosis
    assert case_text(row, seed=None, view="caption") == case_text(row, seed=None)


def test_full_official_columns_underscores_and_clinic_images(tmp_path):
    _make(tmp_path, full=True, underscores=True)
    cases = load(f"derm7pt:{tmp_path}", image="clinic")
    assert cases["case_id"].tolist()[:2] == ["c0", "c1"]
    assert cases["image_path"].str.contains("Clin").all()
    assert "diffuse irregular" in set(cases["pigmentation"].astype(str))
    assert "within regression" in set(cases["vascular_structures"].astype(str))
    for col in ("level_of_diagnostic_difficulty", "management", "notes", "case_num"):
        assert col in cases.columns


def test_bom_crlf_and_trailing_blank_lines(tmp_path):
    _make(tmp_path, bom=True, crlf=True, trailing_blank_lines=3)
    cases = load("derm7pt", tmp_path)
    assert len(cases) == 16 and cases.columns[0] == "case_id"


def test_case_mismatched_file_names_resolved_with_one_warning(tmp_path):
    rows = _make(tmp_path)
    for r in rows[:3]:
        p = tmp_path / "images" / r["derm"]
        p.rename(p.with_suffix(".JPG"))
    (tmp_path / "images" / "Fol1").rename(tmp_path / "images" / "FOL1")
    pattern = r"^derm7pt: (\d+) image\(s\) named in .*meta\.csv matched files only when ignoring letter case"
    with pytest.warns(DataWarning, match=pattern) as rec:
        cases = load("derm7pt", tmp_path)
    assert len([w for w in rec if issubclass(w.category, DataWarning)]) == 1
    count = int(re.match(pattern, str(rec[0].message)).group(1))
    assert count == 3 + sum(1 for r in rows[3:] if r["derm"].startswith("Fol1/"))
    assert len(cases) == 16 and all(pd.Series(cases["image_path"]).map(lambda p: __import__("os").path.isfile(p)))


def test_no_split_files_makes_a_stratified_split(tmp_path):
    _make(tmp_path, n=40, splits=False)
    with pytest.warns(DataWarning, match="derm7pt: no split files in .* so the split is derived"):
        cases = load("derm7pt", tmp_path)
    assert set(cases["split"].astype(str)) == {"train", "val", "test"}
    assert (cases["split"] == "train").mean() == pytest.approx(0.6, abs=0.1)


def test_other_split_files(tmp_path):
    _make(tmp_path, n=10)
    custom = [write_csv(tmp_path / f"{s}.csv", {"indexes": ix}) for s, ix in
              (("a", [0, 1, 2, 3, 4]), ("b", [5, 6]), ("c", [7, 8, 9]))]
    cases = load("derm7pt", tmp_path, split_files=custom)
    assert cases["split"].astype(str).tolist() == ["train"] * 5 + ["val"] * 2 + ["test"] * 3
    with pytest.raises(DermretrError, match="not found"):
        load("derm7pt", tmp_path, split_files=[custom[0], custom[1], tmp_path / "nope.csv"])
    write_csv(tmp_path / "bad.csv", {"indexes": [0, 99]})  # 99 on line 3 of bad.csv (under its header)
    with pytest.raises(DermretrError, match=r"bad.csv: column 'indexes' has values that are not row positions of "
                                            r"meta.csv at line 3 \('99'\); each value is the position of a row of "
                                            r"meta.csv, 0..9 \(0: its first row under the header"):
        load("derm7pt", tmp_path, split_files=[tmp_path / "bad.csv", custom[1], custom[2]])
    write_csv(tmp_path / "twice.csv", {"indexes": [7, 8, 6, 9, 5]})  # 6 and 5 are in b.csv already: lines 4 and 6
    with pytest.raises(DermretrError, match=r"twice.csv: column 'indexes' has positions of rows of meta.csv that "
                                            r"b.csv already lists at lines 4 \('6'\), 6 \('5'\)"):
        load("derm7pt", tmp_path, split_files=[custom[0], custom[1], tmp_path / "twice.csv"])


def test_missing_required_column(tmp_path):
    rows = _rows(4)
    write_csv(tmp_path / "meta" / "meta.csv", [{k: v for k, v in r.items() if k != "streaks"} for r in rows])
    with pytest.raises(DermretrError) as err:
        load("derm7pt", tmp_path)
    msg = str(err.value)
    assert "missing required column(s) ['streaks']" in msg and "found columns" in msg and "Expected layout" in msg


def test_unknown_values_name_their_lines_and_allowed_values(tmp_path):
    rows = [{**r, "notes": ""} for r in _rows(6)]
    rows[0]["notes"] = "seen twice,\nonce in clinic"  # quoted, over lines 2 and 3
    rows[2]["streaks"] = "wavy"
    rows[5]["streaks"] = "zigzag"
    csv = write_csv(tmp_path / "meta" / "meta.csv", rows)
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join([*lines[:4], "\n", *lines[4:]]))  # a blank line 5: rows[2] is on line 6, rows[5] on 9
    assert csv.read_text().splitlines()[5].startswith("basal cell carcinoma,atypical,wavy,")
    with pytest.raises(DermretrError, match=r"meta.csv: column 'streaks' has unknown values at lines 6 \('wavy'\), "
                                            r"9 \('zigzag'\); allowed values: absent, regular, irregular"):
        load("derm7pt", tmp_path)
    rows = _rows(3)
    rows[1]["diagnosis"] = "psoriasis"
    write_csv(tmp_path / "meta" / "meta.csv", rows)
    with pytest.raises(DermretrError, match=r"'diagnosis' has unknown values at line 3 \('psoriasis'\); "
                                            r"allowed values: basal"):
        load("derm7pt", tmp_path)


def test_root_without_metadata(tmp_path):
    with pytest.raises(DermretrError, match=f"looked for {tmp_path / 'meta' / 'meta.csv'}"):
        load("derm7pt", tmp_path)


@pytest.mark.parametrize("bad", ["../../secret.jpg", "/etc/passwd.jpg", "Fol0/../../x.jpg"])
def test_image_path_escaping_the_root_is_rejected(tmp_path, bad):
    rows = _rows(3)
    rows[1]["derm"] = bad
    write_csv(tmp_path / "meta" / "meta.csv", rows)
    with pytest.raises(DermretrError, match="meta.csv, line 3: image path .* escapes the dataset folder"):
        load("derm7pt", tmp_path)


def test_missing_images_policies(tmp_path):
    rows = _make(tmp_path)
    (tmp_path / "images" / rows[3]["derm"]).unlink()
    with pytest.warns(DataWarning, match="1 of 16 image file"):
        assert len(load("derm7pt", tmp_path)) == 15
    with pytest.raises(DermretrError, match="1 of 16 image file.*Case003"):
        load("derm7pt", tmp_path, missing="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load("derm7pt", tmp_path, missing="keep")) == 16
    with pytest.raises(DermretrError, match="missing must be one of"):
        load("derm7pt", tmp_path, missing="ignore")


def test_info_command_counts_found_and_missing(tmp_path, capsys):
    rows = _make(tmp_path)
    (tmp_path / "images" / rows[0]["derm"]).unlink()
    assert main(["info", f"derm7pt:{tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "16 cases" in out and "images found: 15, missing: 1" in out
    assert "Cases per Fitzpatrick skin type" in out and "unknown" in out
    assert main(["info", f"derm7pt:{tmp_path}", "-o", "image=xray"]) == 2
    assert "image must be 'derm' or 'clinic'" in capsys.readouterr().err
    assert main(["info", f"derm7pt:{tmp_path / 'nope'}"]) == 2
    assert f"dataset folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert main(["info", "nosuch:/x"]) == 2
    assert "unknown data source" in capsys.readouterr().err
    assert main(["info", f"derm7pt:{tmp_path}", "-o", "colour"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_criteria_columns_are_categorical(tmp_path):
    _make(tmp_path)
    cases = load("derm7pt", tmp_path)
    for c in CRITERION_NAMES:
        assert isinstance(cases[c].dtype, pd.CategoricalDtype)
