"""PH2 loader: the publisher's xlsx and '||' txt (written by the tests), the criteria mapping, errors, masks.

The tests at the end read the real PH2 folder (``../shared/data/ph2``, beside the repository) and are skipped
when it is absent, as in a fresh clone.  No PH2 image or value is copied here: fixtures are synthetic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from fixtures import assert_case_table, assert_mentions, error_message, load_quietly, load_with_one_warning, write_image
from PIL import Image

from dermretr._errors import CaseTableError, DermretrError
from dermretr.cli import main
from dermretr.data import load
from dermretr.data.sources.ph2 import COLORS, GRADES, load_ph2
from dermretr.data.vocab import CRITERIA, criteria_of, parse_text

PH2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ph2"
PH2_CRITERIA = [criterion for criterion, _ in GRADES.values()]
TXT_COLUMNS = ["Name", "Histological Diagnosis", "Clinical Diagnosis", "Asymmetry", *GRADES, "Colors"]
#: the publisher's row-13 header, with the hints it puts under some names
XLSX_HEADER = {"Image Name": "Image Name", "Histological Diagnosis": "Histological Diagnosis",
               "Common Nevus": "Common Nevus", "Atypical Nevus": "Atypical Nevus", "Melanoma": "Melanoma",
               "Asymmetry": "Asymmetry\n(0/1/2)", "Pigment Network": "Pigment Network\n(AT/T)",
               "Dots/Globules": "Dots/Globules\n(A/AT/T)", "Streaks": "Streaks\n(A/P)",
               "Regression Areas": "Regression Areas\n(A/P)", "Blue-Whitish Veil": "Blue-Whitish Veil\n(A/P)",
               **{c: c for c in COLORS}}
XLSX_FIRST = 14  # the spreadsheet row of the first case (header on row 13)
TXT_FIRST = 2  # the line of the first case (header on line 1)
DX = ["Common Nevus", "Atypical Nevus", "Melanoma"]


def _row(name, dx, asym, pn, dg, st, ra, bwv, colors, histo=""):
    """One case as the publisher's txt writes it (diagnosis code 0/1/2, colours as numbers 1..6)."""
    return dict(zip(TXT_COLUMNS, (name, histo, dx, asym, pn, dg, st, ra, bwv, colors)))


ROWS = [
    _row("IMD003", "0", "0", "T", "A", "A", "A", "A", "4"),
    _row("IMD009", "0", "0", "T", "A", "A", "A", "A", "3"),
    _row("IMD016", "0", "0", "T", "T", "A", "A", "A", "3 4"),
    _row("IMD022", "0", "1", "T", "A", "A", "A", "A", "3"),
    _row("IMD024", "0", "0", "T", "T", "A", "A", "A", "3 4"),
    _row("IMD017", "1", "1", "AT", "AT", "A", "A", "A", "3 4", histo="Dysplastic Nevus"),
    _row("IMD018", "1", "2", "AT", "T", "A", "P", "A", "2 3 4"),
    _row("IMD019", "1", "0", "T", "AT", "A", "A", "A", "3 4"),
    _row("IMD020", "1", "1", "AT", "A", "P", "A", "A", "4"),
    _row("IMD058", "2", "2", "AT", "AT", "P", "A", "P", "3 4 5", histo="Melanoma"),
    _row("IMD061", "2", "2", "AT", "A", "A", "P", "P", "1 4 5 6", histo="Lentigo Maligna"),
    _row("IMD063", "2", "1", "AT", "AT", "P", "P", "A", "4 6"),
]


def _xlsx_row(row: dict) -> dict:
    """The same case in the xlsx's columns: the diagnosis and the colours marked with an X."""
    out = {"Image Name": row["Name"], "Histological Diagnosis": row["Histological Diagnosis"] or None}
    out.update({d: "X" if str(i) == row["Clinical Diagnosis"] else None for i, d in enumerate(DX)})
    out["Asymmetry"] = int(row["Asymmetry"]) if row["Asymmetry"].isdigit() else row["Asymmetry"]
    out.update({c: row[c] for c in GRADES})
    numbers = row["Colors"].split()
    out.update({c: "X" if str(i) in numbers else None for i, c in enumerate(COLORS, start=1)})
    return out


def write_xlsx(path: Path, rows: list[dict], legend: bool = True, header_row: int = 13) -> Path:
    """PH2_dataset.xlsx in the publisher's layout: legend, two header rows (12 and 13), cases from row 14."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Folha1"
    if legend:
        sheet["F2"] = "Legends"
        for r, (code, text) in enumerate(((0, "Fully Simmetric"), (1, "Symmetric in 1 axes"),
                                          (2, "Fully Asymmetric")), start=3):
            sheet.cell(r, 7, code), sheet.cell(r, 8, text)
        sheet["F3"] = "Asymmetry"
        sheet["F6"] = "Pigment Network\nDots/Globules\nStreaks\nRegression Areas\nBlue-Whitish Veil"
        for r, (code, text) in enumerate((("AT", "Atypical"), ("T", "Typical"), ("A", "Absent"), ("P", "Present")),
                                         start=6):
            sheet.cell(r, 7, code), sheet.cell(r, 8, text)
    sheet.cell(header_row - 1, 3, "Clinical Diagnosis")
    sheet.cell(header_row - 1, 12, "Colors")
    sheet.merge_cells(start_row=header_row - 1, start_column=3, end_row=header_row - 1, end_column=5)
    sheet.merge_cells(start_row=header_row - 1, start_column=12, end_row=header_row - 1, end_column=17)
    for j, text in enumerate(XLSX_HEADER.values(), start=1):
        sheet.cell(header_row, j, text)
    for i, row in enumerate(rows, start=header_row + 1):
        for j, column in enumerate(XLSX_HEADER, start=1):
            if row.get(column) not in (None, ""):
                sheet.cell(i, j, row[column])
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def write_txt(path: Path, rows: list[dict], legend: bool = True) -> Path:
    """PH2_dataset.txt as the publisher writes it: '||' between groups, '|' between the criteria, a legend."""
    def line(cells):
        name, histo, dx, asym, pn, dg, st, ra, bwv, colors = cells
        return (f"|| {name:^8} || {histo:>22} || {dx:^18} || {asym:^9} | {pn:^15} | {dg:^13} | {st:^7} | "
                f"{ra:^16} | {bwv:^17} || {colors:^14} ||")

    lines = [line(TXT_COLUMNS)] + [line([r[c] for c in TXT_COLUMNS]) for r in rows]
    if legend:
        lines += ["", "Legends for Clinical Diagnosis:", "0 - Common Nevus;", "1 - Atypical Nevus;", "2 - Melanoma.",
                  "", "Legends for Colors:", "1 - White;", "2 - Red;", "3 - Light-Brown;"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def write_images(folder: Path, names, image_rows=None, mask_rows=None) -> None:
    """The dermoscopic image and lesion mask of each case (only rows in ``image_rows`` / ``mask_rows`` if given)."""
    for i, name in enumerate(names):
        case = folder / "PH2 Dataset images" / name
        if image_rows is None or i in image_rows:
            write_image(case / f"{name}_Dermoscopic_Image" / f"{name}.bmp", size=8, seed=i, fmt="BMP")
        if mask_rows is None or i in mask_rows:
            (case / f"{name}_lesion").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(np.arange(64).reshape(8, 8) % 3, 255, 0).astype(np.uint8)).convert("RGB").save(
                case / f"{name}_lesion" / f"{name}_lesion.bmp")


def _dataset(root: Path, rows=ROWS, table: str = "xlsx", xlsx_rows=None, image_rows=None, mask_rows=None,
             **options) -> Path:
    """A PH2 folder (``root/PH2Dataset/``) with the table(s) named by ``table`` ("xlsx", "txt" or "both")."""
    folder = root / "PH2Dataset"
    if table in ("xlsx", "both"):
        write_xlsx(folder / "PH2_dataset.xlsx", xlsx_rows or [_xlsx_row(r) for r in rows], **options)
    if table in ("txt", "both"):
        write_txt(folder / "PH2_dataset.txt", rows)
    write_images(folder, [r["Name"] for r in rows], image_rows, mask_rows)
    return root


def _changed(column: str, value: str, at, rows=ROWS, xlsx: bool = True) -> list[dict]:
    rows = [_xlsx_row(r) if xlsx else dict(r) for r in rows]
    for i in at:
        rows[i][column] = value
    return rows


def _bad_value(tmp_path: Path, column: str, value: str, at, table: str = "xlsx") -> str:
    """The loader's error for ``value`` in ``column`` at data rows ``at``: names the file, column, lines, value."""
    root = tmp_path / "ph2"
    if table == "xlsx":
        _dataset(root, xlsx_rows=_changed(column, value, at))
        first, file, unit = XLSX_FIRST, "PH2_dataset.xlsx, sheet 'Folha1'", "row"
    else:
        _dataset(root, rows=_changed(column, value, at, xlsx=False), table="txt")
        first, file, unit = TXT_FIRST, "PH2_dataset.txt:", "line"
    message = error_message(load_ph2, root)
    assert "\n" not in message
    lines = ", ".join(f"{first + i} ({value!r})" for i in at)  # the sheet's row numbers, the txt's line numbers
    assert_mentions(message, file, repr(column), f"at {unit}{'s' if len(at) > 1 else ''} {lines}")
    return message


# --------------------------------------------------------------------------- the table


def test_loads_the_xlsx_as_a_valid_case_table(tmp_path):
    cases = load_quietly(load_ph2, _dataset(tmp_path / "ph2"))
    assert_case_table(cases, "ph2", len(ROWS), criteria=PH2_CRITERIA)
    by_id = cases.set_index("case_id")
    assert by_id.index.tolist() == [r["Name"] for r in ROWS]
    assert cases["patient_id"].equals(cases["case_id"])  # one image per lesion and per patient
    assert cases["diagnosis"].value_counts().to_dict() == {"common nevus": 5, "atypical nevus": 4, "melanoma": 3}
    assert cases["diagnosis_group"].tolist() == ["NEV"] * 9 + ["MEL"] * 3
    assert cases["malignant"].tolist() == [False] * 9 + [True] * 3
    assert cases["fitzpatrick"].isna().all() and cases["monk"].isna().all()
    assert cases["pigmentation"].isna().all() and cases["vascular_structures"].isna().all()
    assert by_id.loc["IMD058", ["pigment_network", "dots_and_globules", "blue_whitish_veil"]].tolist() == [
        "atypical", "irregular", "present"]
    assert by_id.loc["IMD016", ["pigment_network", "dots_and_globules", "streaks", "regression_structures"]
                     ].tolist() == ["typical", "regular", "absent", "absent"]
    # present streaks and regression areas have no 7-point value: NA there, kept as graded
    assert pd.isna(by_id.loc["IMD058", "streaks"]) and by_id.loc["IMD058", "ph2_streaks"] == "present"
    assert pd.isna(by_id.loc["IMD061", "regression_structures"])
    assert by_id.loc["IMD061", "ph2_regression_areas"] == "present"
    assert by_id.loc["IMD003", "ph2_streaks"] == "absent" and by_id.loc["IMD003", "streaks"] == "absent"
    assert by_id["asymmetry"].tolist() == [int(r["Asymmetry"]) for r in ROWS]
    assert by_id.loc["IMD061", [f"color_{c}" for c in ("white", "red", "light_brown", "dark_brown", "blue_gray",
                                                       "black")]].tolist() == [True, False, False, True, True, True]
    assert by_id["histological_diagnosis"].notna().sum() == 3
    assert by_id.loc["IMD061", "histological_diagnosis"] == "Lentigo Maligna"
    assert by_id.loc["IMD058", "descriptors"] == (
        "atypical pigment network; streaks (regularity not graded); irregular dots and globules; "
        "blue-whitish veil; asymmetric; colours: light-brown, dark-brown, blue-gray")
    assert by_id.loc["IMD003", "descriptors"] == "typical pigment network; symmetric; colours: dark-brown"
    assert cases["findings"].equals(cases["descriptors"])  # PH2's text names no diagnosis: both views agree
    for _, row in cases.iterrows():  # the descriptors read back as the known criteria, nothing more
        said = {k: v for k, v in parse_text(row["descriptors"], default=None).items() if v is not None}
        assert said == {k: v for k, v in criteria_of(row).items() if v != "absent"}
        mask = Path(row["lesion_mask"])
        assert mask.is_absolute() and mask.name == f"{row['case_id']}_lesion.bmp" and mask.is_file()


def test_every_mapped_grade_is_a_7point_value():
    for criterion, mapping in GRADES.values():
        assert {v for v in mapping.values() if v is not None} <= set(CRITERIA[criterion]), criterion


def test_the_txt_gives_the_same_table(tmp_path):
    from_xlsx = load_ph2(_dataset(tmp_path / "a"))
    from_txt = load_quietly(load_ph2, _dataset(tmp_path / "b", table="txt"))  # auto: the txt when no xlsx
    assert from_txt["image_path"].str.startswith(str(tmp_path / "b")).all()
    strip = {"image_path", "lesion_mask"}
    pd.testing.assert_frame_equal(from_xlsx.drop(columns=strip), from_txt.drop(columns=strip))
    both = _dataset(tmp_path / "c", table="both")
    pd.testing.assert_frame_equal(load_ph2(both, table="txt").drop(columns=strip), from_xlsx.drop(columns=strip))
    assert load_ph2(both, table=" XLSX ").equals(load_ph2(both))  # auto: the xlsx when present


def test_root_may_be_the_PH2Dataset_folder_and_specs_work(tmp_path):
    root = _dataset(tmp_path / "ph2")
    inner = load("ph2", root / "PH2Dataset")
    assert inner.equals(load(f"ph2:{root}"))
    assert load("ph2", str(root), table="auto", seed="0")["source"].eq("ph2").all()  # options as the CLI gives


def test_the_header_row_is_found_by_its_content(tmp_path):
    root = tmp_path / "ph2"
    _dataset(root, legend=False, header_row=2)  # no legend; header on row 2
    assert len(load_quietly(load_ph2, root)) == len(ROWS)
    path = root / "PH2Dataset" / "PH2_dataset.xlsx"
    book = openpyxl.load_workbook(path)
    book.create_sheet("Notes", 0)["A1"] = "read me first"  # the table in the second sheet
    book.save(path)
    assert len(load_quietly(load_ph2, root)) == len(ROWS)


def test_a_trimmed_tab_separated_txt_loads_with_unknown_criteria(tmp_path):
    root = _dataset(tmp_path / "ph2", table="txt")
    txt = root / "PH2Dataset" / "PH2_dataset.txt"
    lines = ["Name\tClinical Diagnosis\tAsymmetry"] + [f"{r['Name']}\t{r['Clinical Diagnosis']}\t{r['Asymmetry']}"
                                                        for r in ROWS]
    txt.write_text("\r\n".join(lines + ["\t\t", "gends f\t\t", "0 - Co\t\t", "A  - A\t\t"]) + "\r\n")
    cases, msg = load_with_one_warning(load_ph2, root, match="has no column")
    assert_mentions(msg, str(txt), "'Pigment Network'", "'Blue-Whitish Veil'", "'Colors'", "unknown (NA)",
                    "PH2_dataset.xlsx")
    assert_case_table(cases, "ph2", len(ROWS))  # no criteria known
    assert cases["diagnosis"].tolist() == load_ph2(_dataset(tmp_path / "full"))["diagnosis"].tolist()
    assert cases["asymmetry"].tolist() == [int(r["Asymmetry"]) for r in ROWS]
    assert cases["color_red"].isna().all() and cases["ph2_streaks"].isna().all()
    assert cases["descriptors"].iloc[0] == "symmetric"


# --------------------------------------------------------------------------- bad tables


def test_no_table_and_bad_table_option(tmp_path):
    root = tmp_path / "ph2"
    write_images(root / "PH2Dataset", ["IMD003"])
    folder = root / "PH2Dataset"
    assert_mentions(error_message(load_ph2, root), "no PH2 table found", str(folder / "PH2_dataset.xlsx"),
                    str(folder / "PH2_dataset.txt"), "Expected layout")
    _dataset(root, table="txt")
    assert_mentions(error_message(load_ph2, root, table="xlsx"), "metadata file not found",
                    str(folder / "PH2_dataset.xlsx"))
    for bad in ("csv", 3, None):
        assert_mentions(error_message(load_ph2, root, table=bad), "table must be one of 'auto', 'xlsx', 'txt'")
    assert_mentions(error_message(load, "ph2", root, sheet=1), "unknown option 'sheet'", "table, missing, seed")


#: fault -> (bytes written over PH2_dataset.xlsx, a fragment of the error)
XLSX_FAULTS = {
    "zero bytes": (b"", "is empty"),
    "a PNG renamed .xlsx": (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cannot read"),
    "a text file renamed .xlsx": (b"Name,Clinical Diagnosis\nIMD003,0\n", "as an Excel workbook"),
    "a zip that is not a workbook": (None, "as an Excel workbook"),
}


@pytest.mark.parametrize("fault", list(XLSX_FAULTS))
def test_broken_xlsx_is_a_one_line_error_naming_it(tmp_path, fault):
    root = _dataset(tmp_path / "ph2")
    path = root / "PH2Dataset" / "PH2_dataset.xlsx"
    content, fragment = XLSX_FAULTS[fault]
    if content is None:
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "not a workbook")
    else:
        path.write_bytes(content)
    message = error_message(load_ph2, root)
    assert "\n" not in message
    assert_mentions(message, str(path), fragment)


def test_xlsx_without_the_header_row_or_rows(tmp_path):
    root = _dataset(tmp_path / "ph2")
    path = root / "PH2Dataset" / "PH2_dataset.xlsx"
    book = openpyxl.load_workbook(path)
    book.active["C13"] = "Nevus"  # the header row no longer names the three diagnoses
    book.save(path)
    assert_mentions(error_message(load_ph2, root), str(path), "has no header row", "'Folha1'", "'Common Nevus'",
                    "row 13")
    write_xlsx(path, [])
    assert_mentions(error_message(load_ph2, root), str(path), "has a header but no rows")
    book = openpyxl.load_workbook(write_xlsx(path, [_xlsx_row(r) for r in ROWS]))
    book.active["A13"] = "Picture"
    book.save(path)
    assert_mentions(error_message(load_ph2, root), "has no header row")


def test_openpyxl_missing_says_how_to_install_it(tmp_path, monkeypatch):
    root = _dataset(tmp_path / "ph2", table="both")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # import openpyxl -> ImportError
    assert_mentions(error_message(load_ph2, root), "needs openpyxl", "pip install openpyxl", "table='txt'")
    assert len(load_ph2(root, table="txt")) == len(ROWS)


def _merge_cells(good: bytes, line: int) -> bytes:
    """The txt with two cells of one line merged (a separator lost)."""
    lines = good.split(b"\r\n")
    lines[line - 1] = lines[line - 1].replace(b" | ", b"   ", 1)
    return b"\r\n".join(lines)


#: fault -> (what to write over PH2_dataset.txt, given its valid text; a fragment of the error)
TXT_FAULTS = {
    "zero bytes": (lambda good: b"", "is empty"),
    "blank lines only": (lambda good: b"\r\n\n  \n", "is empty"),
    "header only": (lambda good: good.split(b"\r\n")[0] + b"\r\n", "has a header but no rows"),
    "UTF-16": (lambda good: good.decode().encode("utf-16"), "is not text"),
    "a PNG renamed .txt": (lambda good: b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "is not text"),
    "comma separated": (lambda good: b"Name,Clinical Diagnosis\r\nIMD003,0\r\n", "has no '||' (or tab)"),
    "a short line": (lambda good: _merge_cells(good, line=11), "txt: line 11 does not have the header's 10 cells"),
    "no Name column": (lambda good: good.replace(b"Name", b"Case", 1), "has no 'Name' column"),
    "a column twice": (lambda good: good.replace(b"Dots/Globules", b"Streaks", 1), "names column 'Streaks' twice"),
}


@pytest.mark.parametrize("fault", list(TXT_FAULTS))
def test_broken_txt_is_a_one_line_error_naming_it(tmp_path, fault):
    root = _dataset(tmp_path / "ph2", table="txt")
    path = root / "PH2Dataset" / "PH2_dataset.txt"
    write, fragment = TXT_FAULTS[fault]
    path.write_bytes(write(path.read_bytes()))
    message = error_message(load_ph2, root)
    assert "\n" not in message
    assert_mentions(message, str(path), fragment)


def test_a_windows_1252_txt_is_read(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[5]["Histological Diagnosis"] = "Nevo displásico"
    root = _dataset(tmp_path / "ph2", rows=rows, table="txt")
    path = root / "PH2Dataset" / "PH2_dataset.txt"
    path.write_bytes(path.read_text().encode("cp1252"))
    assert load_ph2(root)["histological_diagnosis"].iloc[5] == "Nevo displásico"


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("column", DX)
def test_unknown_diagnosis_mark(tmp_path, column):
    message = _bad_value(tmp_path, column, "Y", [2, 7])
    assert_mentions(message, "unknown marks", "marked with an X, or empty")


def test_rows_with_no_diagnosis_or_two(tmp_path):
    rows = _changed("Common Nevus", None, [1, 3])
    _dataset(tmp_path / "a", xlsx_rows=rows)
    assert_mentions(error_message(load_ph2, tmp_path / "a"), "PH2_dataset.xlsx, sheet 'Folha1'",
                    f"no diagnosis is marked at rows {XLSX_FIRST + 1}, {XLSX_FIRST + 3};", "'Common Nevus'",
                    "'Melanoma'")
    rows = _changed("Melanoma", "x", [0])  # a lower-case x is a mark too
    _dataset(tmp_path / "b", xlsx_rows=rows)
    assert_mentions(error_message(load_ph2, tmp_path / "b"),
                    f"more than one diagnosis is marked at row {XLSX_FIRST} (Common Nevus, Melanoma);")


def test_unknown_diagnosis_code_in_the_txt(tmp_path):
    message = _bad_value(tmp_path, "Clinical Diagnosis", "3", [4], table="txt")
    assert_mentions(message, "allowed values: 0, 1, 2")
    path = tmp_path / "ph2" / "PH2Dataset" / "PH2_dataset.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:3], "", "  (cases 3 and on checked again)", *lines[3:]]) + "\n")
    assert " IMD024 " in path.read_text().splitlines()[7]  # the bad row, two lines further down
    assert_mentions(error_message(load_ph2, tmp_path / "ph2"), "PH2_dataset.txt: column 'Clinical Diagnosis'",
                    "at line 8 ('3')")


@pytest.mark.parametrize("table", ["xlsx", "txt"])
@pytest.mark.parametrize("column, value, allowed", [
    ("Pigment Network", "Q", "A, T, AT"),
    ("Pigment Network", "P", "A, T, AT"),  # present, but typical or atypical?
    ("Dots/Globules", "R", "A, T, AT"),
    ("Streaks", "T", "A, P"),  # PH2 does not grade streaks
    ("Regression Areas", "yes", "A, P"),
    ("Blue-Whitish Veil", "AT", "A, P"),
])
def test_unknown_grades(tmp_path, table, column, value, allowed):
    assert_mentions(_bad_value(tmp_path, column, value, [1, 6], table=table), f"allowed values: {allowed}")


def test_grades_spelt_out_and_empty(tmp_path):
    rows = _changed("Pigment Network", "Atypical", [0])
    rows[1]["Blue-Whitish Veil"] = "present"
    rows[2]["Streaks"] = None
    cases = load_quietly(load_ph2, _dataset(tmp_path / "ph2", xlsx_rows=rows))
    assert cases["pigment_network"].iloc[0] == "atypical" and cases["blue_whitish_veil"].iloc[1] == "present"
    assert pd.isna(cases["streaks"].iloc[2]) and pd.isna(cases["ph2_streaks"].iloc[2])


@pytest.mark.parametrize("table", ["xlsx", "txt"])
def test_bad_asymmetry(tmp_path, table):
    assert_mentions(_bad_value(tmp_path, "Asymmetry", "3", [5], table=table), "asymmetry grade", "0..2")


def test_bad_colours(tmp_path):
    assert_mentions(_bad_value(tmp_path, "Dark-Brown", "?", [3]), "unknown marks")
    assert_mentions(_bad_value(tmp_path / "t", "Colors", "3 7", [8], table="txt"), "1 White", "6 Black")


@pytest.mark.parametrize("table", ["xlsx", "txt"])
def test_duplicated_names(tmp_path, table):
    rows = [dict(r) for r in ROWS]
    rows[7]["Name"] = rows[2]["Name"]
    root = _dataset(tmp_path / "ph2", rows=rows, table=table)
    with pytest.raises(CaseTableError) as err:
        load_ph2(root)
    first, unit = (XLSX_FIRST, "rows") if table == "xlsx" else (TXT_FIRST, "lines")  # as the sheet, the txt number them
    assert_mentions(str(err.value), f"PH2_dataset.{table}", "repeats 1 value",
                    f"'IMD016' ({unit} {first + 2}, {first + 7})", "each image must be listed once")


def test_empty_and_escaping_names(tmp_path):
    rows = _changed("Image Name", None, [4])
    _dataset(tmp_path / "a", xlsx_rows=rows)
    assert_mentions(error_message(load_ph2, tmp_path / "a"), "'Image Name' is empty at row 18;",
                    "every image needs its name")
    rows = _changed("Image Name", "../IMD999", [4])
    _dataset(tmp_path / "b", xlsx_rows=rows)
    assert_mentions(error_message(load_ph2, tmp_path / "b"), "PH2_dataset.xlsx", "'Image Name'",
                    "at row 18 ('../IMD999')", "bare names")


# --------------------------------------------------------------------------- images, masks, splits


def test_missing_images_warn_raise_keep(tmp_path):
    root = _dataset(tmp_path / "ph2", image_rows=set(range(len(ROWS))) - {2, 9})
    cases, msg = load_with_one_warning(load_ph2, root)
    assert_mentions(msg, "2 of 12", "IMD016/IMD016_Dermoscopic_Image/IMD016.bmp", "PH2 Dataset images")
    assert len(cases) == 10 and "IMD058" not in set(cases["case_id"])
    with pytest.raises(DermretrError, match=r"2 of 12 .*IMD016\.bmp.*IMDnnn_Dermoscopic_Image"):
        load_ph2(root, missing="raise")
    kept = load_quietly(load_ph2, root, missing="keep")
    assert len(kept) == 12
    expected = root.absolute() / "PH2Dataset" / "PH2 Dataset images" / "IMD016" / "IMD016_Dermoscopic_Image"
    assert kept.set_index("case_id").loc["IMD016", "image_path"] == str(expected / "IMD016.bmp")


def test_missing_masks_blank_the_mask_only(tmp_path):
    root = _dataset(tmp_path / "ph2", mask_rows=set(range(len(ROWS))) - {4})
    cases, msg = load_with_one_warning(load_ph2, root, match="lesion mask")
    assert_mentions(msg, "1 of 12 lesion mask(s)", "IMD024/IMD024_lesion/IMD024_lesion.bmp", "NA")
    assert len(cases) == 12 and cases["lesion_mask"].isna().sum() == 1 and pd.isna(cases["lesion_mask"].iloc[4])
    with pytest.raises(DermretrError, match=r"1 of 12 lesion mask.*IMD024_lesion\.bmp"):
        load_ph2(root, missing="raise")
    kept = load_quietly(load_ph2, root, missing="keep")
    assert kept["lesion_mask"].iloc[4].endswith("IMD024/IMD024_lesion/IMD024_lesion.bmp")


def test_case_mismatched_files_are_found_with_one_warning(tmp_path):
    root = _dataset(tmp_path / "ph2")
    images = root / "PH2Dataset" / "PH2 Dataset images"
    (images / "IMD003" / "IMD003_Dermoscopic_Image" / "IMD003.bmp").rename(
        images / "IMD003" / "IMD003_Dermoscopic_Image" / "IMD003.BMP")
    (images / "IMD009" / "IMD009_lesion").rename(images / "IMD009" / "IMD009_Lesion")
    cases, _ = load_with_one_warning(load_ph2, root, match=r"2 image\(s\).*letter case")
    assert cases["image_path"].iloc[0].endswith("IMD003.BMP") and "IMD009_Lesion" in cases["lesion_mask"].iloc[1]


def test_split_is_stratified_by_diagnosis_and_seeded(tmp_path):
    rows = [dict(ROWS[i % len(ROWS)], Name=f"IMD{i:03d}") for i in range(60)]
    root = tmp_path / "ph2"
    write_xlsx(root / "PH2Dataset" / "PH2_dataset.xlsx", [_xlsx_row(r) for r in rows])
    cases = load_ph2(root, missing="keep", seed=3)
    assert cases["split"].value_counts().to_dict() == {"train": 36, "val": 12, "test": 12}
    counts = pd.crosstab(cases["diagnosis"], cases["split"])
    assert (counts["train"] == 0.6 * counts.sum(axis=1)).all()
    assert cases["split"].equals(load_ph2(root, missing="keep", seed=3)["split"])
    assert not cases["split"].equals(load_ph2(root, missing="keep", seed=4)["split"])


def test_info_command(tmp_path, capsys):
    root = _dataset(tmp_path / "ph2", image_rows=set(range(len(ROWS))) - {0})
    assert main(["info", f"ph2:{root}", "-o", "table=xlsx"]) == 0
    out = capsys.readouterr().out
    assert_mentions(out, "12 cases from 12 patients", "images found: 11, missing: 1", "NEV / atypical nevus",
                    "pigment_network")
    assert main(["info", f"ph2:{root}", "-o", "table=csv"]) == 2
    assert "table must be one of" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real PH2 folder

real = pytest.mark.skipif(not PH2.exists(), reason=f"the PH2 dataset is not at {PH2} (a fresh clone has no data)")


@pytest.fixture(scope="module")
def ph2_cases():
    return load_quietly(load_ph2, PH2)


def _xlsx_counts() -> dict[str, dict[str, int]]:
    """Per column of the publisher's header row (row 13), how often each value occurs, read cell by cell."""
    sheet = openpyxl.load_workbook(PH2 / "PH2Dataset" / "PH2_dataset.xlsx", read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(min_row=13, values_only=True))
    header = [str(h).split("\n")[0] if h is not None else f"col{j}" for j, h in enumerate(rows[0])]
    counts: dict[str, dict[str, int]] = {h: {} for h in header}
    for row in rows[1:]:
        if row[0] is None:
            continue
        for h, value in zip(header, row):
            counts[h][str(value)] = counts[h].get(str(value), 0) + 1
    return counts


@real
def test_real_ph2_cases_and_diagnoses(ph2_cases):
    cases = ph2_cases
    assert_case_table(cases, "ph2", 200, criteria=PH2_CRITERIA)
    assert cases["diagnosis"].value_counts().to_dict() == {"common nevus": 80, "atypical nevus": 80, "melanoma": 40}
    assert cases["malignant"].sum() == 40 and cases["patient_id"].nunique() == 200
    assert cases["split"].value_counts().to_dict() == {"train": 120, "val": 40, "test": 40}
    assert cases["case_id"].str.fullmatch(r"IMD\d{3}").all()


@real
def test_real_ph2_criteria_match_the_xlsx_cells(ph2_cases):
    cases, counts = ph2_cases, _xlsx_counts()
    assert (cases["pigment_network"] == "atypical").sum() == counts["Pigment Network"]["AT"]
    assert (cases["pigment_network"] == "typical").sum() == counts["Pigment Network"]["T"]
    for value, grade in (("absent", "A"), ("regular", "T"), ("irregular", "AT")):
        assert (cases["dots_and_globules"] == value).sum() == counts["Dots/Globules"][grade]
    assert (cases["blue_whitish_veil"] == "present").sum() == counts["Blue-Whitish Veil"]["P"]
    assert (cases["ph2_streaks"] == "present").sum() == counts["Streaks"]["P"] == cases["streaks"].isna().sum()
    assert ((cases["ph2_regression_areas"] == "present").sum() == counts["Regression Areas"]["P"]
            == cases["regression_structures"].isna().sum())
    assert {str(k): v for k, v in cases["asymmetry"].value_counts().items()} == counts["Asymmetry"]
    for color in COLORS:
        assert cases[f"color_{color.lower().replace('-', '_')}"].sum() == counts[color].get("X", 0), color
    assert cases["histological_diagnosis"].notna().sum() == 200 - counts["Histological Diagnosis"]["None"]
    # plausible for PH2: atypical networks and veils concentrate in melanomas
    mel = cases["diagnosis"] == "melanoma"
    assert (cases.loc[mel, "pigment_network"] == "atypical").mean() > 0.8
    assert (cases.loc[mel, "blue_whitish_veil"] == "present").mean() > (
        cases.loc[~mel, "blue_whitish_veil"] == "present").mean()


@real
def test_real_ph2_images_and_masks_open(ph2_cases):
    for image, mask in zip(ph2_cases["image_path"], ph2_cases["lesion_mask"]):
        with Image.open(image) as img, Image.open(mask) as m:
            img.load()
            values = np.unique(np.asarray(m.convert("L")))
            assert img.size == m.size, image
            assert set(values.tolist()) <= {0, 255} and values.size == 2, mask


@real
def test_real_ph2_trimmed_txt_agrees_with_the_xlsx(ph2_cases):
    cases, msg = load_with_one_warning(load_ph2, PH2, table="txt", match="has no column")
    assert len(cases) == 200
    both = cases.merge(ph2_cases, on="case_id", suffixes=("", "_xlsx"), validate="one_to_one")
    assert (both["diagnosis"] == both["diagnosis_xlsx"]).all()
    assert (both["asymmetry"] == both["asymmetry_xlsx"]).all()


@real
def test_real_ph2_info_command(capsys):
    assert main(["info", f"ph2:{PH2}"]) == 0
    out = capsys.readouterr().out
    assert_mentions(out, "200 cases from 200 patients", "images found: 200, missing: 0", "MEL / melanoma",
                    "blue_whitish_veil")
