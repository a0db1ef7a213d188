"""Bad input to the data layer, given as an adversarial user would: never a traceback, never a silent guess.

Every fault must raise a :class:`~dermretr._errors.DermretrError` whose message is one
line naming the file (or argument) at fault and what to do; the CLI prints it as
``dermretr: error: ...`` with exit code 2.  Faults covered: broken metadata CSVs
for every loader, bad dataset folders, bad ``load`` / ``parse_spec`` arguments,
repeated case ids, unknown Fitzpatrick types and other malformed numbers, and
images that are huge, folders, or not paths.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import test_source_ddi
import test_source_derm7pt
import test_source_fitzpatrick17k
import test_source_ham10000
import test_source_isic2020
import test_source_pad_ufes20
import test_source_ph2
import test_source_scin
from fixtures import assert_mentions, write_csv, write_image
from PIL import Image

from dermretr._errors import CaseTableError, DataWarning, DermretrError
from dermretr.cli import main
from dermretr.data import SOURCES, _loader, load, parse_spec
from dermretr.data.cases import validate_cases
from dermretr.data.images import MAX_PIXELS, MAX_SIDE, ImageDataset, ImageReadError, load_rgb
from dermretr.data.sources._common import check_unique, parse_choice, read_table


def _write_derm7pt(root: Path) -> None:
    test_source_derm7pt._make(root)


#: source -> (writer of a small valid dataset in the publisher's layout, its metadata CSV relative to the root)
PUBLISHED = {
    "derm7pt": (_write_derm7pt, "meta/meta.csv"),
    "ddi": (test_source_ddi._dataset, "ddi_metadata.csv"),
    "fitzpatrick17k": (test_source_fitzpatrick17k._dataset, "fitzpatrick17k.csv"),
    "ham10000": (test_source_ham10000._dataset, "HAM10000_metadata.csv"),
    "isic2020": (test_source_isic2020._dataset, test_source_isic2020.CSV),
    "pad-ufes-20": (test_source_pad_ufes20._dataset, "metadata.csv"),
    "scin": (test_source_scin._dataset, "dataset/scin_cases.csv"),
    "ph2": (test_source_ph2._dataset, "PH2Dataset/PH2_dataset.xlsx"),
}
#: the sources whose metadata is a CSV (PH2's xlsx and txt faults are tested in test_source_ph2.py)
CSV_SOURCES = [source for source, (_, table) in PUBLISHED.items() if table.endswith(".csv")]


def _published(tmp_path: Path, source: str) -> tuple[Path, Path]:
    """A valid dataset of ``source`` (checked to load) and its metadata CSV."""
    write, csv = PUBLISHED[source]
    root = tmp_path / source
    write(root)
    return root, root / csv


def _one_line_error(call, *args, error=DermretrError, **kwargs) -> str:
    with pytest.raises(error) as err:
        call(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def test_every_loader_is_covered():
    assert set(PUBLISHED) == set(SOURCES) - {"synthetic"}  # synthetic: the derm7pt reader, tested below too


# --------------------------------------------------------------------------- broken metadata CSVs


def _header(csv: Path) -> bytes:
    return csv.read_bytes().split(b"\n")[0] + b"\n"


#: fault -> (what to write over the metadata CSV, given its valid bytes; a fragment of the error)
CSV_FAULTS = {
    "zero bytes": (lambda good: b"", "is empty (no header line and no rows)"),
    "blank lines only": (lambda good: b"\n\r\n\n", "is empty"),
    "header only": (lambda good: _header_of(good), "has a header but no rows"),
    "header and an empty row": (lambda good: _header_of(good) + b"," * 3 + b"\n\n", "has a header but no rows"),
    "not UTF-8 (cp1252)": (lambda good: good.replace(b"\n", "\n\u00e9".encode("cp1252"), 1),
                           "is not UTF-8 text (byte 0xe9"),
    "UTF-16": (lambda good: good.decode().encode("utf-16"), "is not UTF-8 text"),
    "a PNG renamed .csv": (lambda good: _png_bytes(), "is not UTF-8 text (byte 0x89 at position 0)"),
    "ragged rows": (lambda good: good + b"x," * 40 + b"x\n", "cannot parse"),
    "semicolon separated": (lambda good: good.replace(b",", b";"), "separate its columns with ';'"),
}


def _header_of(good: bytes) -> bytes:
    return good.split(b"\n")[0] + b"\n"


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fault", list(CSV_FAULTS))
@pytest.mark.parametrize("source", CSV_SOURCES)
def test_broken_metadata_csv_is_a_one_line_error_naming_it(tmp_path, source, fault):
    root, csv = _published(tmp_path, source)
    write, fragment = CSV_FAULTS[fault]
    csv.write_bytes(write(csv.read_bytes()))
    message = _one_line_error(load, source, root)
    assert_mentions(message, str(csv), fragment)


@pytest.mark.parametrize("source", list(PUBLISHED))
def test_metadata_csv_that_is_a_folder(tmp_path, source):
    root, csv = _published(tmp_path, source)
    csv.unlink()
    csv.mkdir()
    assert_mentions(_one_line_error(load, source, root), csv.name, "is a folder, not a metadata file")


def test_scin_labels_file_faults(tmp_path):
    root, _ = _published(tmp_path, "scin")
    labels = root / "dataset" / "scin_labels.csv"
    good = labels.read_bytes()
    for content, fragment in ((b"", "is empty"), (_header_of(good), "has a header but no rows")):
        labels.write_bytes(content)
        assert_mentions(_one_line_error(load, "scin", root), "scin_labels.csv", fragment)


def test_unreadable_metadata_csv(tmp_path, monkeypatch):
    import dermretr.data.sources._reading as reading

    root, csv = _published(tmp_path, "ham10000")

    def denied(*args, **kwargs):  # what reading a file without read permission raises (root reads anything)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(reading.pd, "read_csv", denied)
    assert_mentions(_one_line_error(load, "ham10000", root), str(csv), "cannot read", "Permission denied")


def test_derm7pt_split_files(tmp_path):
    root, _ = _published(tmp_path, "derm7pt")
    # a split may legitimately be empty (a small DermSynth set can have no validation case)
    write_csv(root / "meta" / "valid_indexes.csv", pd.DataFrame({"indexes": pd.Series([], dtype=int)}))
    with pytest.warns(DataWarning, match="4 of 16 rows of meta.csv are in none of the split files"):  # rows 8-11
        assert len(load("derm7pt", root)) == 16
    # but an empty file is broken
    (root / "meta" / "valid_indexes.csv").write_bytes(b"")
    assert_mentions(_one_line_error(load, "derm7pt", root), "valid_indexes.csv", "is empty")
    # the three files may come as one CLI-friendly string
    meta = root / "meta"
    write_csv(meta / "a.csv", pd.DataFrame({"indexes": range(12)}))
    write_csv(meta / "b.csv", pd.DataFrame({"indexes": pd.Series([], dtype=int)}))
    write_csv(meta / "c.csv", pd.DataFrame({"indexes": range(12, 16)}))
    cases = load("derm7pt", root, split_files=f"{meta / 'a.csv'}, {meta / 'b.csv'}, {meta / 'c.csv'}")
    assert cases["split"].value_counts().to_dict() == {"train": 12, "test": 4, "val": 0}
    for bad, fragment in ((5, "needs three paths"), ("a.csv,b.csv", "needs three paths"),
                          ([1, 2, 3], "split_files[0] must be a path"), ([str(meta / "no.csv")] * 3, "not found")):
        assert_mentions(_one_line_error(load, "derm7pt", root, split_files=bad), fragment)


# --------------------------------------------------------------------------- rows named by their line


def _table(tmp_path: Path, data: bytes) -> pd.DataFrame:
    """``data`` as a metadata CSV, read by the loaders' shared reader."""
    path = tmp_path / "meta.csv"
    path.write_bytes(data)
    return read_table(path, "test", "meta.csv")


def test_read_table_counts_blank_lines(tmp_path):
    # 1 header, 2 blank, 3 row, 4 spaces only, 5 row, 6 all-empty row (left out), 7 row
    meta = _table(tmp_path, b"id,x\n\n1,a\n   \n2,b\n,\n3,c\n")
    assert meta.index.tolist() == [3, 5, 7] and meta["id"].tolist() == ["1", "2", "3"]
    with pytest.raises(DermretrError, match=r"meta.csv: column 'x' has unknown values at line 5 \('b'\); allowed"):
        parse_choice(meta, "x", ["a", "c"], tmp_path / "meta.csv")
    assert _table(tmp_path, b"\n\nid,x\n1,a\n").index.tolist() == [4]  # the header is on line 3


def test_read_table_counts_the_lines_of_quoted_multi_line_cells(tmp_path):
    # row 1 on lines 2-4 (a quoted cell with a blank line in it), row 2 on 5, row 3 on 6-7 (CRLF inside), row 4 on 8
    meta = _table(tmp_path, b'id,note\n1,"two\n\nparagraphs"\n2,x\n3,"say ""hi""\r\nthen go"\n4,y\n')
    assert meta.index.tolist() == [2, 5, 6, 8]
    assert meta["note"].tolist() == ["two\n\nparagraphs", "x", 'say "hi"\r\nthen go', "y"]
    with pytest.raises(CaseTableError, match=r"column 'id' repeats 1 value: '4' \(lines 6, 8\)"):
        check_unique(meta["id"].replace("3", "4"), "id", "meta.csv", "ids are unique")


def test_read_table_with_a_bom_and_windows_line_endings(tmp_path):
    meta = _table(tmp_path, b"\xef\xbb\xbfid,x\r\n1,a\r\n\r\n2,b\r\n3,c\r\n\r\n")
    assert list(meta.columns) == ["id", "x"] and meta.index.tolist() == [2, 4, 5]
    assert _table(tmp_path, b"id,x\r1,a\r\r2,b\r").index.tolist() == [2, 4]  # old Mac line endings (CR)


def test_read_table_names_data_rows_when_it_cannot_count_lines(tmp_path):
    # pandas and the csv module split this file differently (a bare CR before a ',' row): no line is guessed,
    # the rows under the header are numbered 1, 2, ... and messages call them data rows
    meta = _table(tmp_path, b"id,x\n\n\r,\n2,zz\n")
    assert meta["id"].tolist() == ["2"] and meta.index.name == "data row"
    with pytest.raises(DermretrError, match=rf"column 'x' has unknown values at data row {meta.index[0]} \('zz'\)"):
        parse_choice(meta, "x", ["a"], tmp_path / "meta.csv")


def test_read_table_counts_lines_past_a_cell_longer_than_the_csv_modules_default_limit(tmp_path):
    long = b"y" * 140_000  # the csv module's default field size limit is 131,072 characters
    meta = _table(tmp_path, b"id,x\n\n1," + long + b"\n2,zz\n")
    assert meta.index.tolist() == [3, 4] and meta.index.name == "line"
    import csv

    assert csv.field_size_limit() == 131_072  # restored after the pass


def test_an_escaping_image_path_is_named_by_its_line_or_its_spreadsheet_row(tmp_path):
    from dermretr.data.sources._common import locate_all

    with pytest.raises(DermretrError, match=r"^meta.csv, line 4: image path '../x.png' escapes the dataset folder"):
        locate_all(tmp_path, pd.Series(["a.png", "../x.png"], index=pd.Index([3, 4], name="line")), "meta.csv")
    with pytest.raises(DermretrError, match=r"^book.xlsx, row 14: image path '/x.png' escapes the dataset folder"):
        locate_all(tmp_path, pd.Series(["/x.png"], index=pd.Index([14], name="row")), "book.xlsx")


def test_read_table_a_trailing_comma_does_not_shift_the_columns(tmp_path):
    meta = _table(tmp_path, b"id,dx\na,nv,\nb,mel,\n")
    assert meta["id"].tolist() == ["a", "b"] and meta["dx"].tolist() == ["nv", "mel"]
    assert meta.index.tolist() == [2, 3]


#: source -> a column of its metadata CSV and a value the loader refuses
LINE_FAULTS = {"derm7pt": ("diagnosis", "psoriasis"), "ddi": ("skin_tone", "78"),
               "fitzpatrick17k": ("fitzpatrick_scale", "9"), "ham10000": ("dx", "scc"),
               "isic2020": ("diagnosis", "basal cell carcinoma"), "pad-ufes-20": ("diagnostic", "BOD"),
               "scin": ("fitzpatrick_skin_type", "FST9")}


@pytest.mark.parametrize("source", CSV_SOURCES)
def test_errors_name_the_line_of_a_bad_value_as_an_editor_numbers_it(tmp_path, source):
    root, csv = _published(tmp_path, source)
    column, value = LINE_FAULTS[source]
    meta = pd.read_csv(csv, dtype=str, keep_default_na=False)
    meta["note"] = ["seen twice,\nonce in clinic"] + [""] * (len(meta) - 1)  # row 0: a quoted cell over lines 2-3
    meta.loc[3, column] = value
    records = meta.to_csv(index=False, lineterminator="\r\n").split("\r\n")
    text = "\r\n".join([*records[:3], "", *records[3:]])  # a blank line 5 after row 1 (line 4)
    csv.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert value in text.splitlines()[6] and text.splitlines()[4] == ""  # row 3 is on line 7
    message = _one_line_error(load, source, root)
    assert_mentions(message, f"{csv}: column {column!r}", f"at line 7 ({value!r})")


# --------------------------------------------------------------------------- bad folders, arguments and specs


@pytest.mark.parametrize("source", [*PUBLISHED, "synthetic"])
def test_bad_dataset_folder(tmp_path, source):
    missing = tmp_path / "nope"
    assert_mentions(_one_line_error(load, source, missing), f"dataset folder {missing} does not exist")
    a_file = tmp_path / "file.csv"
    a_file.write_text("a,b\n1,2\n")
    assert_mentions(_one_line_error(load, source, a_file), f"{a_file} is a file, not a dataset folder")
    assert_mentions(_one_line_error(load, f"{source}:{a_file}"), "is a file, not a dataset folder")
    for root in (123, 4.5, b"/tmp", ["/tmp"]):
        assert_mentions(_one_line_error(load, source, root), "must be a path", type(root).__name__)
    assert_mentions(_one_line_error(_loader(source), 123), "must be a path", "int")  # the loader called directly


@pytest.mark.parametrize("source", list(PUBLISHED))
def test_bad_loader_options(tmp_path, source):
    root, _ = _published(tmp_path, source)
    message = _one_line_error(load, source, root, unknown_option=1)
    assert_mentions(message, "unknown option 'unknown_option'", repr(source), "its options:", "missing", "seed")
    for options, fragment in (({"missing": 5}, "missing must be one of 'warn', 'raise', 'keep'"),
                              ({"missing": "drop"}, "missing must be one of"),
                              ({"seed": [1]}, "seed must be an integer >= 0, got [1]"),
                              ({"seed": "one"}, "seed must be an integer"),
                              ({"seed": 1.5}, "seed must be an integer"),
                              ({"seed": True}, "seed must be an integer"),
                              ({"seed": -1}, "seed must be an integer >= 0"),
                              ({"seed": float("nan")}, "seed must be an integer")):
        assert_mentions(_one_line_error(load, source, root, **options), fragment)
    if source in ("ham10000", "isic2020", "pad-ufes-20"):
        assert_mentions(_one_line_error(load, source, root, metadata=5), "metadata must be a path", "int")
        sub = root / "sub.csv"
        sub.mkdir()
        assert_mentions(_one_line_error(load, source, root, metadata="sub.csv"), "is a folder")


def test_derm7pt_and_fitzpatrick17k_option_types(tmp_path):
    root, _ = _published(tmp_path, "derm7pt")
    assert_mentions(_one_line_error(load, "derm7pt", root, image=5), "image must be 'derm' or 'clinic'")
    assert_mentions(_one_line_error(load, "derm7pt", root, source=5), "source must be a non-empty string")
    assert load("derm7pt", root, source="mine")["source"].eq("mine").all()  # an option named like load's argument
    root, _ = _published(tmp_path, "fitzpatrick17k")
    for pattern, fragment in ((5, "pattern must be a non-empty string"), ("{md5hash!r}.jpg", "format options"),
                              ("{md5hash:%}.jpg", "format options"), ("{md5hash", "not a valid file-name pattern"),
                              ("{0}.jpg", "unknown column")):
        assert_mentions(_one_line_error(load, "fitzpatrick17k", root, pattern=pattern), fragment)


@pytest.mark.parametrize("spec, fragment", [
    ("synthetic:", "the path after the colon is missing"),
    ("synthetic:   ", "the path after the colon is missing"),
    (":path", "has no source before ':'"),
    ("nosuchsource:x", "unknown data source 'nosuchsource'"),
    ("derm7pt", "must look like SOURCE:PATH"),
    ("", "must look like SOURCE:PATH"),
    (123, "must be a string SOURCE:PATH"),
    (None, "must be a string SOURCE:PATH"),
    (["derm7pt:/x"], "must be a string SOURCE:PATH"),
    (Path("derm7pt:/x"), "must be a string SOURCE:PATH"),
])
def test_bad_specs(spec, fragment):
    for call in (parse_spec, load):
        assert_mentions(_one_line_error(call, spec), fragment, "sources: derm7pt, pad-ufes-20")


def test_bad_source_names():
    for source, fragment in ((None, "must be a string"), (7, "must be a string"), ("nope", "unknown data source")):
        assert_mentions(_one_line_error(load, source, "/tmp"), fragment, "derm7pt")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"cases": [1, 2]}, "must be a case table"),
    ({"fractions": "abc"}, "three non-negative numbers"),
    ({"fractions": (0.5, float("nan"), 0.5)}, "three non-negative numbers"),
    ({"seed": "x"}, "seed must be a non-negative integer"),
    ({"seed": -2}, "seed must be a non-negative integer"),
])
def test_group_split_bad_arguments(kwargs, fragment):
    from dermretr.data.splits import group_split

    args = {"cases": pd.DataFrame({"patient_id": list("aabbc"), "diagnosis_group": "MEL"})} | kwargs
    assert_mentions(_one_line_error(group_split, **args), fragment)


# --------------------------------------------------------------------------- repeated case ids


def _derm7pt_table(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    root, csv = _published(tmp_path, "derm7pt")
    return root, csv, pd.read_csv(csv, dtype=str)


def test_repeated_case_ids_in_a_derm7pt_table_are_an_error_not_renumbered(tmp_path):
    root, csv, meta = _derm7pt_table(tmp_path)
    meta["case_id"] = [f"c{i}" for i in range(len(meta))]
    meta.to_csv(csv, index=False)
    assert load("derm7pt", root)["case_id"].tolist() == meta["case_id"].tolist()  # the table's own ids, unchanged
    meta.loc[[3, 9], "case_id"] = "c1"
    meta.loc[12, "case_id"] = "c0"
    meta.to_csv(csv, index=False)
    message = _one_line_error(load, "derm7pt", root, error=CaseTableError)
    assert_mentions(message, str(csv), "column 'case_id' repeats 2 values", "'c1' (lines 3, 5, 11)",
                    "'c0' (lines 2, 14)")  # rows 1, 3, 9 and 0, 12 under the header line
    # the official release's case_id column is mostly empty: case_num (or the row) gives the ids then
    meta["case_id"] = [None] * (len(meta) - 2) + ["x", "x"]
    meta.insert(0, "case_num", [str(i + 1) for i in range(len(meta))])
    meta.to_csv(csv, index=False)
    assert load("derm7pt", root)["case_id"].tolist()[:2] == ["derm7pt-1", "derm7pt-2"]


def test_a_dermsynth_folder_needs_every_case_id(tmp_path):
    from dermretr.data.synth import generate

    root = generate(tmp_path / "ds", n_cases=6, image_size=64, workers=1, progress=False)
    meta = pd.read_csv(root / "meta" / "meta.csv", dtype=str)
    meta.loc[4, "case_id"] = None
    meta.to_csv(root / "meta" / "meta.csv", index=False)
    assert_mentions(_one_line_error(load, "synthetic", root), "'case_id' is empty at line 6")


def test_repeated_case_num_is_an_error(tmp_path):
    root, csv, meta = _derm7pt_table(tmp_path)
    meta.insert(0, "case_num", [str(i + 1) for i in range(len(meta))])
    meta.to_csv(csv, index=False)
    assert load("derm7pt", root)["case_id"].tolist()[:2] == ["derm7pt-1", "derm7pt-2"]
    meta.loc[4, "case_num"] = "1"
    meta.to_csv(csv, index=False)
    assert_mentions(_one_line_error(load, "derm7pt", root, error=CaseTableError), "'case_num' repeats 1 value",
                    "'1' (lines 2, 6)")


def test_repeated_case_ids_in_a_dermsynth_folder(tmp_path):
    from dermretr.data.synth import generate

    root = generate(tmp_path / "ds", n_cases=8, image_size=64, workers=1, progress=False, modification_rate=1.0)
    meta = pd.read_csv(root / "meta" / "meta.csv", dtype=str)
    meta.loc[7, "case_id"] = meta.loc[2, "case_id"]  # modification triplets would point at the wrong image
    meta.to_csv(root / "meta" / "meta.csv", index=False)
    message = _one_line_error(load, "synthetic", root, error=CaseTableError)
    assert_mentions(message, str(root / "meta" / "meta.csv"), "'case_id'", f"{meta.loc[2, 'case_id']!r} (lines 4, 9)")


@pytest.mark.parametrize("source, column, first, second", [
    ("ham10000", "image_id", "ISIC_0000001", "ISIC_0000001.jpg"),
    ("isic2020", "image_name", "ISIC_0000001", "ISIC_0000001.jpg"),
    ("pad-ufes-20", "img_id", "PAT_1_1_1.png", "PAT_1_1_1.jpg"),
])
def test_ids_that_collide_without_their_suffix(tmp_path, source, column, first, second):
    root, csv = _published(tmp_path, source)
    meta = pd.read_csv(csv, dtype=str)
    meta.loc[0, column], meta.loc[1, column] = first, second
    meta.to_csv(csv, index=False)
    message = _one_line_error(load, source, root, error=CaseTableError)
    assert_mentions(message, str(csv), repr(column), "(lines 2, 3)")


def test_validate_cases_names_the_repeated_ids():
    n = 20
    df = pd.DataFrame({"case_id": [f"c{i % 7}" for i in range(n)], "patient_id": "p", "image_path": "x.jpg",
                       "diagnosis": "d", "diagnosis_group": "D", "split": "train", "source": "mine"})
    message = _one_line_error(validate_cases, df, error=CaseTableError)
    assert_mentions(message, "column 'case_id' repeats 7 ids", "'c0' (rows 0, 7, 14)", "'c4'", "and 2 more")
    assert "'c5'" not in message  # a few, not all


# --------------------------------------------------------------------------- Fitzpatrick types and other numbers


@pytest.mark.parametrize("value", ["seven", "7", "0", "VII", "-1", "2.5", "IIV", "type 9", "true"])
def test_unknown_fitzpatrick_type_is_an_error(tmp_path, value):
    root, csv, meta = _derm7pt_table(tmp_path)
    meta["fitzpatrick"] = "2"
    meta.loc[3, "fitzpatrick"] = value
    meta.to_csv(csv, index=False)
    message = _one_line_error(load, "derm7pt", root)
    assert_mentions(message, str(csv), "column 'fitzpatrick'", f"at line 5 ({value!r})", "1-6 or I-VI")


def test_fitzpatrick_spellings_and_unknown(tmp_path):
    root, csv, meta = _derm7pt_table(tmp_path)
    spellings = ["1", "2.0", "III", "iv", "Type V", "FST6", "", "unknown", "NA", " 3 ", "fitzpatrick type II", "vi"]
    expected = [1, 2, 3, 4, 5, 6, None, None, None, 3, 2, 6]
    meta["fitzpatrick"] = (spellings * 2)[: len(meta)]
    meta.to_csv(csv, index=False)
    got = load("derm7pt", root)["fitzpatrick"]
    assert [None if pd.isna(v) else int(v) for v in got] == (expected * 2)[: len(meta)]


@pytest.mark.parametrize("value, expected", [("seven", None), (7, None), ("VII", None), (0, None), (True, None),
                                             ("IV", 4), ("vi", 6), (4, 4), (4.0, 4), (None, pd.NA)])
def test_validate_cases_fitzpatrick(value, expected):
    df = pd.DataFrame({"case_id": ["a", "b"], "patient_id": "p", "image_path": "x.jpg", "diagnosis": "d",
                       "diagnosis_group": "D", "split": "train", "source": "mine", "fitzpatrick": [2, value]})
    if expected is not None:
        got = validate_cases(df)["fitzpatrick"].tolist()
        assert got[0] == 2 and (pd.isna(got[1]) if expected is pd.NA else got[1] == expected)
        return
    message = _one_line_error(validate_cases, df, error=CaseTableError)
    assert_mentions(message, "'fitzpatrick'", f"row 1 ({value!r})", "1..6 (or I..VI)")


@pytest.mark.parametrize("column, value, fragment", [
    ("age", "old", "an age in years"), ("age", "-3", "an age in years"), ("monk", "11", "Monk skin tone"),
    ("monk", "light", "Monk skin tone"), ("ita", "pale", "ITA angle"), ("seven_point_score", "high", "integer"),
])
def test_malformed_numbers_in_a_derm7pt_table(tmp_path, column, value, fragment):
    root, csv, meta = _derm7pt_table(tmp_path)
    meta[column] = ""
    meta.loc[2, column] = value
    meta.to_csv(csv, index=False)
    assert_mentions(_one_line_error(load, "derm7pt", root), str(csv), repr(column), f"at line 4 ({value!r})", fragment)


def test_empty_patient_id_warns_with_file_and_count(tmp_path):
    root, csv, meta = _derm7pt_table(tmp_path)
    meta["patient_id"] = [f"p{i // 2}" for i in range(len(meta))]
    meta.loc[[1, 4], "patient_id"] = None
    meta.to_csv(csv, index=False)
    with pytest.warns(DataWarning) as caught:
        cases = load("derm7pt", root)
    assert_mentions(str(caught[0].message), str(csv), "2 empty 'patient_id' cell(s) (lines 3, 6)")
    assert cases["patient_id"].notna().all() and "nan" not in set(cases["patient_id"])


# --------------------------------------------------------------------------- images


def _zero_png(path: Path, width: int, height: int) -> Path:
    """A black 8-bit grey PNG of any size, written row by row: tiny on disk, never held in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + width)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """An 11000 x 11000 PNG of 117 KB (121 megapixels, 363 MB once decoded as RGB)."""
    return _zero_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 11000, 11000)


def test_a_huge_compressible_image_is_refused_from_its_header(bomb):
    path = bomb
    assert path.stat().st_size < 200_000
    message = _one_line_error(load_rgb, path, error=ImageReadError)
    assert_mentions(message, str(path), "11000x11000 pixels", "121.0 megapixels", f"{MAX_PIXELS / 1e6:g} megapixels",
                    "downscale it")
    with pytest.raises(ImageReadError, match="11000x11000"):  # through the Dataset too
        ImageDataset(pd.DataFrame({"case_id": ["a"], "image_path": [str(path)]}))[0]


def test_huge_and_large_images_do_not_raise_memory(tmp_path, bomb):
    """Measured in a fresh process: the refused 121-megapixel PNG must not be decoded at all, and a
    40-megapixel one is reduced while decoding (was +0.6-0.9 GB and +230 MB)."""
    huge = bomb
    large = _zero_png(tmp_path / "large.png", 8000, 5000)  # exactly MAX_PIXELS: accepted
    code = textwrap.dedent("""
        import resource, sys
        from dermretr.data.images import ImageReadError, load_rgb
        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        start = peak()
        try:
            load_rgb(sys.argv[1])
            print("no error")
        except ImageReadError:
            pass
        after_huge = peak()
        img = load_rgb(sys.argv[2])
        print(after_huge - start, peak() - after_huge, img.size[0], img.size[1])
    """)
    out = subprocess.run([sys.executable, "-c", code, str(huge), str(large)], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    huge_mb, large_mb, width, height = map(int, out)
    assert huge_mb < 50, f"refusing the huge image raised memory by {huge_mb} MB"
    assert large_mb < 150, f"loading a {MAX_PIXELS / 1e6:g}-megapixel image raised memory by {large_mb} MB"
    assert (width, height) == (2667, 1667)  # reduced by 3: long side still >= MAX_SIDE


def test_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (MAX_SIDE * 2 + 100, 64), (200, 30, 30)).save(path, quality=90)
    img = load_rgb(path)
    assert img.size == (MAX_SIDE + 50, 32) and img.mode == "RGB"  # JPEG draft: decoded at 1/2 scale
    assert abs(int(np.asarray(img)[10, 10, 0]) - 200) < 10
    assert load_rgb(path, max_side=None).size == (MAX_SIDE * 2 + 100, 64)
    small = write_image(tmp_path / "small.jpg", size=40)
    assert load_rgb(small).size == (40, 40)  # below twice MAX_SIDE: untouched
    with pytest.raises(DermretrError, match="max_side must be a positive integer"):
        load_rgb(small, max_side=0)


@pytest.mark.parametrize("mode", ["RGB", "P", "I;16", "L"])
def test_large_images_of_other_formats_are_reduced(tmp_path, mode):
    path = tmp_path / f"tall_{mode.replace(';', '')}.png"
    img = Image.new("RGB", (20, MAX_SIDE * 3 + 10), (10, 200, 10))
    img = img.convert("P") if mode == "P" else img.convert("I;16") if mode == "I;16" else img.convert(mode)
    img.save(path)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (7, MAX_SIDE + 4)


def test_image_paths_that_are_folders_or_not_paths(tmp_path):
    folder = tmp_path / "case.jpg"
    folder.mkdir()
    assert_mentions(_one_line_error(load_rgb, folder, error=ImageReadError), str(folder), "is a folder")
    for bad in (None, float("nan"), 3, ["a.jpg"]):
        assert_mentions(_one_line_error(load_rgb, bad, error=ImageReadError), "must be a file path")
    locked = write_image(tmp_path / "locked.png")
    if os.geteuid() == 0:  # root reads anything: make opening fail as it would for a user
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Image, "open", denied)
            message = _one_line_error(load_rgb, locked, error=ImageReadError)
    else:
        locked.chmod(0)
        message = _one_line_error(load_rgb, locked, error=ImageReadError)
    assert_mentions(message, str(locked), "permission denied")


def test_dataset_bad_arguments_and_skip_report(tmp_path, bomb):
    good = write_image(tmp_path / "good.png")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    huge = bomb
    cases = pd.DataFrame({"case_id": ["a", "b", "c"], "image_path": [str(good), str(folder), str(huge)]})
    with pytest.warns(DataWarning) as caught:
        ds = ImageDataset(cases, on_error="skip", progress=False)
    assert len(ds) == 1 and ds.report["case_id"].tolist() == ["b", "c"]
    assert_mentions(str(caught[0].message), "skipped 2 unreadable image(s)", "case 'b'", str(folder), "case 'c'")
    for kwargs, fragment in (({"cases": [str(good)]}, "must be a case table"),
                             ({"cases": cases, "preprocess": "resize"}, "preprocess must be a function"),
                             ({"cases": cases, "on_error": ["skip"]}, "on_error must be one of")):
        assert_mentions(_one_line_error(ImageDataset, **kwargs), fragment)


# --------------------------------------------------------------------------- through the command line


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dermretr: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_cli_info_on_broken_data(tmp_path, capsys):
    root, csv = _published(tmp_path, "ham10000")
    good = csv.read_bytes()
    csv.write_bytes(b"")
    assert "is empty" in _cli_error(capsys, ["info", f"ham10000:{root}"])
    csv.write_bytes(_header_of(good))
    assert "has a header but no rows" in _cli_error(capsys, ["info", f"ham10000:{root}"])
    csv.write_bytes(good)
    assert "unknown option 'colour'" in _cli_error(capsys, ["info", f"ham10000:{root}", "-o", "colour=red"])
    assert "the path after the colon is missing" in _cli_error(capsys, ["info", "ham10000:"])
    assert "has no source" in _cli_error(capsys, ["info", f":{root}"])


def test_cli_synth_refuses_the_current_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    err = _cli_error(capsys, ["synth", "--out", ".", "--n-cases", "3", "--image-size", "64", "--no-progress",
                              "--overwrite", "--workers", "1"])
    assert "current folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
