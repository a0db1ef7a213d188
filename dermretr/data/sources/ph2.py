"""Loader for PH2 (200 dermoscopic images with dermoscopic criteria and lesion masks, Mendonça et al. 2013).

PH2 was acquired at the Dermatology Service of Hospital Pedro Hispano
(Matosinhos, Portugal): 80 common nevi, 80 atypical nevi and 40 melanomas, one
dermoscopic image per lesion, each with a binary lesion segmentation and the
dermoscopic criteria graded by dermatologists.

Licence: free for research use (cite Mendonça et al., EMBC 2013); terms, restrictions and citation:
docs/datasets.md.  Cite T. Mendonça, P. M. Ferreira, J. S. Marques, A. R. S. Marcal and
J. Rozeira, "PH² - A dermoscopic image database for research and
benchmarking", 35th Annual International Conference of the IEEE Engineering
in Medicine and Biology Society (EMBC), 2013.

Layout (the publisher's, unchanged; ROOT may be the folder holding
``PH2Dataset/`` or ``PH2Dataset/`` itself)::

    PH2Dataset/PH2_dataset.xlsx         the table (read by default)
    PH2Dataset/PH2_dataset.txt          the same table as '||'-separated text
    PH2Dataset/PH2 Dataset images/IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp
    PH2Dataset/PH2 Dataset images/IMDnnn/IMDnnn_lesion/IMDnnn_lesion.bmp

The per-colour region masks (``IMDnnn_roi/``) are not read.

The table
---------
``table="auto"`` (default) reads ``PH2_dataset.xlsx`` when it exists, else
``PH2_dataset.txt``; ``"xlsx"`` or ``"txt"`` choose one.

* ``PH2_dataset.xlsx`` (needs ``openpyxl``): a legend above the table, then two
  header rows -- "Clinical Diagnosis" spanning Common Nevus / Atypical Nevus /
  Melanoma and "Colors" spanning White, Red, Light-Brown, Dark-Brown,
  Blue-Gray and Black, each marked with an ``X``.  The header row is found by
  its content (the row holding "Image Name", "Common Nevus", "Atypical Nevus"
  and "Melanoma"; row 13 in the publisher's file), in any sheet.  Errors name
  a row by its number in the spreadsheet ("row 14").
* ``PH2_dataset.txt``: the publisher's text table, one line per image::

    || Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment Network | ...
    || IMD003 ||                     ||          0         ||     0     |        T        | ...

  with the clinical diagnosis as a code (0 common nevus, 1 atypical nevus,
  2 melanoma) and the colours as numbers (1 white, 2 red, 3 light-brown,
  4 dark-brown, 5 blue-gray, 6 black; ``3 4``).  Lines that do not start
  with ``|`` (the legend after the table) are ignored.  A tab-separated
  table is read too; it ends at its first blank line.  Text is read as UTF-8,
  else as Windows-1252 (the publisher's own text files use it).  Errors name
  rows by their line number in the file.

A table without some of the criteria or colour columns (for instance a trimmed
copy with only Name, Clinical Diagnosis and Asymmetry) loads with one
DataWarning naming them: those findings are unknown (NA) for every case.

Case table
----------
* ``case_id`` and ``patient_id``: the image name (``IMD003``).  PH2 has one
  image per lesion and per patient, so each case is its own patient.
* ``diagnosis``: ``common nevus``, ``atypical nevus`` or ``melanoma``;
  ``diagnosis_group``: NEV, NEV, MEL; ``malignant``: False, False, True.
* The 7-point criteria, where PH2 grades the same thing:

  =================  =====  =====================  ==========================================
  PH2 column         grade  7-point column         value
  =================  =====  =====================  ==========================================
  Pigment Network    T      pigment_network        typical
                     AT                            atypical
                     A                             absent (not in PH2, accepted)
  Dots/Globules      A      dots_and_globules      absent
                     T                             regular
                     AT                            irregular
  Streaks            A      streaks                absent
                     P                             NA: PH2 does not say regular or irregular
  Regression Areas   A      regression_structures  absent
                     P                             NA: PH2 does not say blue, white or both
  Blue-Whitish Veil  A      blue_whitish_veil      absent
                     P                             present
  =================  =====  =====================  ==========================================

  ``pigmentation`` and ``vascular_structures`` are not graded in PH2 (NA).
  Grades may also be spelt out (``typical``, ``absent``...); an empty cell is
  unknown (NA).  Because present streaks and regression areas cannot be
  placed on the 7-point scale, the 7-point text view and score leave them out
  (the score can be up to 2 points lower than a dermatologist's); the columns
  below keep them.
* ``fitzpatrick``, ``monk``: NA (not recorded).
* ``split``: :func:`~dermretr.data.splits.group_split`, stratified by the
  three diagnoses (``seed``); PH2 has no official split.

Extra columns: ``histological_diagnosis`` (NA when empty), ``asymmetry``
(0 fully symmetric, 1 symmetric in one axis, 2 asymmetric), ``ph2_streaks``
and ``ph2_regression_areas`` (``absent`` / ``present``, as graded),
``color_white``, ``color_red``, ``color_light_brown``, ``color_dark_brown``,
``color_blue_gray`` and ``color_black`` (booleans), ``lesion_mask`` (absolute
path of the publisher's binary lesion segmentation, 255 = lesion; it is not a
DermSynth ``mask``, whose bits encode criteria).

Text views
----------
``descriptors`` and ``findings`` both hold the dermoscopic findings as
``"; "``-joined phrases (the canonical 7-point phrases, then ``streaks
(regularity not graded)``, ``regression structures (type not graded)``, the
asymmetry and ``colours: ...``): neither names the diagnosis, nor the
histological diagnosis.  Queries and training render the 7-point criteria
(:func:`~dermretr.data.vocab.case_text`); the columns are used only for a case
whose criteria are all unknown.

Examples
--------
>>> import pathlib, tempfile
>>> from PIL import Image
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "PH2Dataset"
>>> for name in ("IMD003", "IMD058"):
...     for sub in (f"{name}_Dermoscopic_Image/{name}.bmp", f"{name}_lesion/{name}_lesion.bmp"):
...         file = folder / "PH2 Dataset images" / name / sub
...         file.parent.mkdir(parents=True)
...         Image.new("RGB", (8, 6)).save(file)
>>> _ = (folder / "PH2_dataset.txt").write_text(
...     "||   Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment Network |"
...     " Dots/Globules | Streaks | Regression Areas | Blue-Whitish Veil ||   Colors ||\\n"
...     "|| IMD003 ||                        ||        0 ||   0 |  T |  A | A | A | A ||      4 ||\\n"
...     "|| IMD058 ||               Melanoma ||        2 ||   2 | AT | AT | P | A | P ||  3 4 5 ||\\n")
>>> cases = load_ph2(folder.parent)
>>> cases["diagnosis"].tolist(), cases["diagnosis_group"].tolist()
(['common nevus', 'melanoma'], ['NEV', 'MEL'])
>>> cases["pigment_network"].tolist(), cases["streaks"].tolist(), cases["ph2_streaks"].tolist()
(['typical', 'atypical'], ['absent', nan], ['absent', 'present'])
>>> cases.loc[1, "findings"]
'atypical pigment network; streaks (regularity not graded); irregular dots and globules; blue-whitish veil; \
asymmetric; colours: light-brown, dark-brown, blue-gray'
>>> pathlib.Path(cases.loc[0, "lesion_mask"]).name
'IMD003_lesion.bmp'
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..._errors import DataWarning, DermretrError
from ..splits import derived_split_source, group_split
from ..vocab import CRITERION_NAMES, MALIGNANT_GROUPS, PHRASES
from ._common import (
    add_text_views,
    bad_values,
    check_missing,
    check_seed,
    check_unique,
    clean_text,
    dataset_root,
    describe_lines,
    finish,
    insert_case_columns,
    locate_all,
    parse_choice,
    parse_number,
    required_text,
    warn_case_mismatches,
)

__all__ = ["load_ph2", "LAYOUT", "TABLES", "DIAGNOSES", "GROUPS", "GRADES", "COLORS"]

SOURCE = "ph2"
FOLDER = "PH2Dataset"
IMAGES = "PH2 Dataset images"
XLSX = "PH2_dataset.xlsx"
TXT = "PH2_dataset.txt"
#: Values of the ``table`` option.
TABLES = ("auto", "xlsx", "txt")
LAYOUT = (
    f"ROOT/{FOLDER}/ (or ROOT itself) holding {XLSX} (or the publisher's '||'-separated {TXT}) and "
    f"'{IMAGES}/IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp' with the lesion masks "
    f"'{IMAGES}/IMDnnn/IMDnnn_lesion/IMDnnn_lesion.bmp'"
)
#: The three PH2 diagnoses, in the publisher's order (the txt's codes 0, 1, 2).
DIAGNOSES: tuple[str, ...] = ("common nevus", "atypical nevus", "melanoma")
#: diagnosis -> diagnosis_group
GROUPS: dict[str, str] = {"common nevus": "NEV", "atypical nevus": "NEV", "melanoma": "MEL"}
#: PH2 criterion column -> (its 7-point column, {grade letter -> 7-point value; None: no 7-point value}).
GRADES: dict[str, tuple[str, dict[str, str | None]]] = {
    "Pigment Network": ("pigment_network", {"A": "absent", "T": "typical", "AT": "atypical"}),
    "Dots/Globules": ("dots_and_globules", {"A": "absent", "T": "regular", "AT": "irregular"}),
    "Streaks": ("streaks", {"A": "absent", "P": None}),
    "Regression Areas": ("regression_structures", {"A": "absent", "P": None}),
    "Blue-Whitish Veil": ("blue_whitish_veil", {"A": "absent", "P": "present"}),
}
#: The grade letters and the words they stand for (also accepted in the table).
_GRADE_WORDS = {"A": "absent", "T": "typical", "AT": "atypical", "P": "present"}
#: PH2's colours, in order (the txt's numbers 1..6), and their columns in the case table.
COLORS: tuple[str, ...] = ("White", "Red", "Light-Brown", "Dark-Brown", "Blue-Gray", "Black")
_COLOR_COLUMNS = {c: "color_" + c.lower().replace("-", "_") for c in COLORS}
_ASYMMETRY = {0: "symmetric", 1: "symmetric in one axis", 2: "asymmetric"}
#: Raw PH2 grades kept because the 7-point vocabulary cannot hold "present" without its kind.
_UNMAPPED = {"Streaks": ("ph2_streaks", "streaks (regularity not graded)"),
             "Regression Areas": ("ph2_regression_areas", "regression structures (type not graded)")}
_PHRASE_ORDER = {c: i for i, c in enumerate(CRITERION_NAMES)}
_SEP = re.compile(r"[\s_\-/]+")


def _key(text: object) -> str:
    """A header cell as a lookup key: its first line, without ``(...)``, lower case, separators as spaces."""
    first = str(text).split("\n")[0].split("(")[0]
    return _SEP.sub(" ", first.lower()).strip()


_NAME_COLUMNS = ("Image Name", "Name")
_KEYS = {_key(c): c for c in (*_NAME_COLUMNS, *GRADES, *COLORS, "Histological Diagnosis", "Clinical Diagnosis",
                              "Asymmetry", "Colors", *(d.title() for d in DIAGNOSES))}
_KEYS.update({"blue grey": "Blue-Gray", "colours": "Colors", "dots and globules": "Dots/Globules",
              "regression structures": "Regression Areas"})


def load_ph2(
    root: str | os.PathLike,
    table: str = "auto",
    missing: str = "warn",
    seed: int = 0,
) -> pd.DataFrame:
    """Load a PH2 folder into a validated case table.

    Parameters
    ----------
    root : path
        The folder holding ``PH2Dataset/``, or ``PH2Dataset/`` itself.
    table : {"auto", "xlsx", "txt"}
        Which table to read: ``PH2_dataset.xlsx`` when it exists, else
        ``PH2_dataset.txt`` (default), or the one named.
    missing : {"warn", "raise", "keep"}
        Images (and lesion masks) listed but not found: drop those rows with
        one DataWarning (a missing mask only sets ``lesion_mask`` to NA, with
        one DataWarning), raise DermretrError, or keep the rows and paths
        (``image_path`` and ``lesion_mask`` are then where the files were
        expected).
    seed : int
        Seed of the split, stratified by diagnosis.

    Returns
    -------
    DataFrame
        A validated case table with the extra columns described in the
        module docstring.

    Raises
    ------
    DermretrError
        The folder or the table is missing, unreadable or not the publisher's
        layout (no header row, no rows, no ``Name`` column, rows of the wrong
        length); an empty name, an unknown diagnosis mark or code, a row with
        no diagnosis or several; an unknown grade, asymmetry or colour; image
        names that are not bare names; missing images or masks with
        ``missing="raise"``.  A repeated image name is a
        :class:`~dermretr._errors.CaseTableError`.  Every message names the
        file, the column, the lines of the txt (or the rows of the
        spreadsheet) and the values.
    """
    missing, seed = check_missing(missing), check_seed(seed)
    if not isinstance(table, str) or table.strip().lower() not in TABLES:
        raise DermretrError(f"table must be one of {', '.join(repr(t) for t in TABLES)} (the publisher's "
                            f"{XLSX} when present, else {TXT}), got {table!r}")
    root = dataset_root(root, SOURCE, LAYOUT)
    base = root / FOLDER if (root / FOLDER).is_dir() else root
    path, meta, where = _read(base, table.strip().lower())

    name_column = next(c for c in _NAME_COLUMNS if c in meta.columns)
    names = required_text(meta, name_column, where, "every image needs its name (IMDnnn)")
    check_unique(names, name_column, where, "each image must be listed once")
    folders = names.str.contains(r"[/\\]", regex=True) | names.isin([".", ".."])
    if folders.any():  # names become folder and file names below IMAGES
        raise bad_values(where, name_column, meta[name_column][folders], "image names are bare names such as "
                         "IMD003, without folders", problem="names that are not bare names")
    diagnosis = _diagnoses(meta, where)
    present = set(meta.columns)
    absent = [c for c in ("Histological Diagnosis", "Asymmetry", *GRADES) if c not in present]
    if "Colors" not in present:
        colors_absent = [c for c in COLORS if c not in present]
        absent += ["Colors"] if len(colors_absent) == len(COLORS) else colors_absent
    if absent:
        warnings.warn(f"{SOURCE}: {path} has no column(s) {', '.join(repr(c) for c in absent)}: they are unknown "
                      f"(NA) for every case; the publisher's {XLSX} has them all", DataWarning, stacklevel=2)

    criteria: dict[str, pd.Series] = {}
    raw: dict[str, pd.Series] = {}
    for column, (criterion, mapping) in GRADES.items():
        grades = _grades(meta, column, tuple(mapping), where)
        criteria[criterion] = grades.map(mapping, na_action="ignore")
        if column in _UNMAPPED:
            raw[_UNMAPPED[column][0]] = grades.map(_GRADE_WORDS, na_action="ignore")
    asymmetry = (parse_number(meta, "Asymmetry", where, 0, 2, integer=True,
                              what="an asymmetry grade (0 fully symmetric, 1 symmetric in one axis, 2 asymmetric)")
                 if "Asymmetry" in present else pd.Series(np.nan, index=meta.index))
    colors = _colors(meta, where)
    histology = (clean_text(meta["Histological Diagnosis"]) if "Histological Diagnosis" in present
                 else pd.Series(None, index=meta.index, dtype=object))

    images = base / IMAGES
    image_paths, found, repaired = locate_all(images, names + "/" + names + "_Dermoscopic_Image/" + names + ".bmp",
                                              where)
    mask_paths, mask_found, mask_repaired = locate_all(images, names + "/" + names + "_lesion/" + names + "_lesion.bmp",
                                                       where)
    warn_case_mismatches(repaired + mask_repaired, SOURCE, path)

    groups = diagnosis.map(GROUPS)
    cases = pd.DataFrame(index=range(len(meta)))
    insert_case_columns(cases, case_id=names, patient_id=names, image_path=image_paths, diagnosis=diagnosis,
                        diagnosis_group=groups, malignant=groups.isin(MALIGNANT_GROUPS))
    for criterion, values in criteria.items():
        cases[criterion] = values.to_numpy()
    cases["histological_diagnosis"] = histology.to_numpy()
    cases["asymmetry"] = pd.array(asymmetry.to_numpy(), dtype="Int64")
    for column, values in raw.items():
        cases[column] = values.to_numpy()
    for color, values in colors.items():
        cases[_COLOR_COLUMNS[color]] = pd.array(values.to_numpy(), dtype="boolean")
    keep = missing == "keep"
    cases["lesion_mask"] = [p if ok or keep else None for p, ok in zip(mask_paths, mask_found)]
    add_text_views(cases, [_findings(cases)])
    split = group_split(cases, stratify="diagnosis", seed=seed)
    how = derived_split_source(stratify="diagnosis", seed=seed)
    hint = "the images are expected in IMDnnn/IMDnnn_Dermoscopic_Image/; "
    cases = finish(cases, found, missing, source=SOURCE, seed=seed, path=where, root=images, hint=hint, split=split,
                   split_source=how)
    no_mask = cases["case_id"][cases["lesion_mask"].isna()].tolist()
    if no_mask:  # the masks of the images kept: an error, or the mask is unknown
        examples = ", ".join(f"{n}/{n}_lesion/{n}_lesion.bmp" for n in no_mask[:5]) + (", ..." * (len(no_mask) > 5))
        message = (f"{SOURCE}: {len(no_mask)} of {len(cases)} lesion mask(s) of the images listed in {path} were "
                   f"not found under {images} (e.g. {examples})")
        if missing == "raise":
            raise DermretrError(f"{message}; add them, or pass missing='warn' (their lesion_mask is then NA)")
        warnings.warn(f"{message}; their lesion_mask is NA (missing='keep' keeps the expected paths)", DataWarning,
                      stacklevel=2)
    return cases


# -- reading the table -------------------------------------------------------------------------


def _read(base: Path, table: str) -> tuple[Path, pd.DataFrame, str]:
    """The table file, its cells as text (index: the sheet's row or the txt's line numbers) and how errors name it."""
    xlsx, txt = base / XLSX, base / TXT
    if table == "auto":
        if not xlsx.exists() and not txt.exists():
            raise DermretrError(f"{SOURCE}: no PH2 table found: looked for {xlsx} and {txt}. Expected layout: "
                                f"{LAYOUT}")
        table = "xlsx" if xlsx.exists() else "txt"
    path = xlsx if table == "xlsx" else txt
    if path.is_dir():
        raise DermretrError(f"{SOURCE}: {path} is a folder, not a metadata file. Expected layout: {LAYOUT}")
    if not path.is_file():
        raise DermretrError(f"{SOURCE}: metadata file not found: looked for {path}. Expected layout: {LAYOUT}")
    if table == "xlsx":
        meta, sheet = _read_xlsx(path)
        return path, meta, f"{path}, sheet {sheet!r}"
    return path, _read_txt(path), str(path)


def _cell(value: object) -> str | None:
    """A spreadsheet cell as stripped text (``2.0`` -> ``"2"``); empty -> None."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _table(header: Sequence[object], rows: Sequence[tuple[int, Sequence[object]]], path: Path,
           where: str) -> pd.DataFrame:
    """Cells under the header's named columns, as text; index: the sheet's ``row`` or the txt's ``line`` numbers."""
    names: dict[int, str] = {}
    for j, cell in enumerate(header):
        text = _cell(cell)
        if text is None:
            continue
        key = _key(text)
        name = _KEYS.get(key) or " ".join(text.split("\n")[0].split())
        if name in names.values():
            raise DermretrError(f"{where}: the header names column {name!r} twice; it must name each column once. "
                                f"Expected layout: {LAYOUT}")
        names[j] = name
    if not set(_NAME_COLUMNS) & set(names.values()):
        raise DermretrError(f"{where}: the header has no 'Name' column (found {list(names.values())}). "
                            f"Expected layout: {LAYOUT}")
    if not rows:
        raise DermretrError(f"{SOURCE}: {path} has a header but no rows: there is nothing to load. Expected "
                            f"layout: {LAYOUT}")
    data = {name: [_cell(r[j]) if j < len(r) else None for _, r in rows] for j, name in names.items()}
    unit = "line" if path.suffix.lower() == ".txt" else "row"
    return pd.DataFrame(data, index=pd.Index([n for n, _ in rows], name=unit), dtype=object)


def _read_xlsx(path: Path) -> tuple[pd.DataFrame, str]:
    """The publisher's workbook: the header row is found by content, data rows follow it."""
    try:
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException
    except ImportError:
        raise DermretrError(f"{SOURCE}: reading {path} needs openpyxl: pip install openpyxl (or pass "
                            f"table='txt' to read {TXT})") from None
    if path.stat().st_size == 0:
        raise DermretrError(f"{SOURCE}: {path} is empty (no header line and no rows); it should be the "
                            f"publisher's Excel workbook. Expected layout: {LAYOUT}")
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, TypeError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DermretrError(f"{SOURCE}: cannot read {path} as an Excel workbook (.xlsx): {reason}; it should be "
                            f"the publisher's file, or pass table='txt' to read {TXT}") from None
    except OSError as exc:
        raise DermretrError(f"{SOURCE}: cannot read {path}: {exc.strerror or exc}; check that the file is "
                            "readable") from None
    try:
        for sheet in book.worksheets:
            grid = list(sheet.iter_rows(min_row=1, values_only=True))
            for i, row in enumerate(grid):
                keys = {_key(c) for c in row if _cell(c) is not None}
                if keys & {_key(c) for c in _NAME_COLUMNS} and {"common nevus", "atypical nevus", "melanoma"} <= keys:
                    rows = [(n, r) for n, r in enumerate(grid[i + 1:], start=i + 2)
                            if any(_cell(c) is not None for c in r)]
                    return _table(row, rows, path, f"{path}, sheet {sheet.title!r}"), sheet.title
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, EOFError) as exc:  # a damaged sheet
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DermretrError(f"{SOURCE}: cannot read {path} as an Excel workbook (.xlsx): {reason}") from None
    finally:
        book.close()
    sheets = ", ".join(repr(s.title) for s in book.worksheets)
    raise DermretrError(f"{SOURCE}: {path} has no header row: no row of sheet(s) {sheets} holds 'Image Name', "
                        "'Common Nevus', 'Atypical Nevus' and 'Melanoma' (in the publisher's file it is row 13, "
                        f"under 'Clinical Diagnosis'). Expected layout: {LAYOUT}")


def _split_line(line: str) -> list[str]:
    """The cells of a '||' line: both '||' and '|' separate cells (the criteria are '|'-separated)."""
    return re.split(r"\|\|?", line.strip().strip("|"))


def _read_txt(path: Path) -> pd.DataFrame:
    """The publisher's '||' text table (or a tab-separated one); index: line numbers."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DermretrError(f"{SOURCE}: cannot read {path}: {exc.strerror or exc}; check that the file is "
                            "readable") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise DermretrError(f"{SOURCE}: {path} is not text (byte 0x{exc.object[exc.start]:02x} at position "
                                f"{exc.start}); it should be the publisher's {TXT}") from None
    if "\x00" in text:
        raise DermretrError(f"{SOURCE}: {path} is not text (it holds NUL bytes: UTF-16, or not a text file); "
                            f"it should be the publisher's {TXT}, saved as UTF-8")
    lines = list(enumerate(text.splitlines(), start=1))
    start = next((k for k, (_, line) in enumerate(lines) if line.strip()), None)
    if start is None:
        raise DermretrError(f"{SOURCE}: {path} is empty (no header line and no rows); it should be the "
                            f"publisher's {TXT}. Expected layout: {LAYOUT}")
    where = str(path)
    header = lines[start][1]
    if "|" in header:
        split = _split_line
        rows = [(n, split(line)) for n, line in lines[start + 1:] if line.strip().startswith("|")]
    elif "\t" in header:
        def split(line):
            return line.split("\t")
        rows = []
        for n, line in lines[start + 1:]:
            if not line.strip():
                break  # the legend follows the table after a blank line
            rows.append((n, split(line)))
    else:
        raise DermretrError(f"{SOURCE}: {path} is not the publisher's table: its first line ({header[:60]!r}) "
                            "has no '||' (or tab) between columns. Expected layout: " + LAYOUT)
    cells = split(header)
    ragged = [n for n, r in rows if len(r) != len(cells)]
    if ragged:
        raise DermretrError(f"{where}: {describe_lines(ragged)} do{'es' * (len(ragged) == 1)} not have the header's "
                            f"{len(cells)} cells; each line must hold every column (an empty cell between separators "
                            "when unknown)")
    return _table(cells, rows, path, where)


# -- parsing the columns -----------------------------------------------------------------------


def _marks(meta: pd.DataFrame, column: str, where: str) -> pd.Series:
    """An X-marked column as booleans; other non-empty cells -> error."""
    text = clean_text(meta[column])
    marked = text.map(lambda v: isinstance(v, str) and v.lower() == "x")
    bad = text.notna() & ~marked
    if bad.any():
        raise bad_values(where, column, meta[column][bad], "a cell is marked with an X, or empty",
                         problem="unknown marks")
    return marked.astype(bool)


def _diagnoses(meta: pd.DataFrame, where: str) -> pd.Series:
    """The diagnosis of each row: the xlsx's one X among three columns, or the txt's code 0/1/2."""
    columns = [d.title() for d in DIAGNOSES]
    if all(c in meta.columns for c in columns):
        marks = pd.DataFrame({c: _marks(meta, c, where) for c in columns})
        count = marks.sum(axis=1)
        if (count == 0).any():
            raise DermretrError(f"{where}: no diagnosis is marked at {describe_lines(count.index[count == 0])}; put "
                                f"one X in {', '.join(repr(c) for c in columns)}")
        if (count > 1).any():
            many = marks[count > 1]
            shown = describe_lines((f"{i} ({', '.join(c for c in columns if r[c])})" for i, r in many.iterrows()),
                                   unit=str(many.index.name or "line"))
            raise DermretrError(f"{where}: more than one diagnosis is marked at {shown}; put one X in "
                                f"{', '.join(repr(c) for c in columns)}")
        return marks.idxmax(axis=1).str.lower()
    if "Clinical Diagnosis" not in meta.columns:
        raise DermretrError(f"{where}: no diagnosis columns: the table needs 'Clinical Diagnosis' (codes 0, 1, 2) "
                            f"or the columns {', '.join(repr(c) for c in columns)} marked with an X; found "
                            f"{list(meta.columns)}. Expected layout: {LAYOUT}")
    codes = {str(i): d for i, d in enumerate(DIAGNOSES)}
    code = parse_choice(meta, "Clinical Diagnosis", list(codes), where, aliases={d: str(i) for i, d in
                                                                                  enumerate(DIAGNOSES)})
    return code.map(codes)


def _grades(meta: pd.DataFrame, column: str, allowed: tuple[str, ...], where: str) -> pd.Series:
    """A criterion column as grade letters (``A``, ``T``, ``AT``, ``P``); empty or absent column -> None."""
    if column not in meta.columns:
        return pd.Series(None, index=meta.index, dtype=object)
    known = clean_text(meta[column]).notna()
    out = pd.Series(None, index=meta.index, dtype=object)
    if known.any():
        aliases = {_GRADE_WORDS[g]: g for g in allowed}
        out[known] = parse_choice(meta[known], column, list(allowed), where, aliases=aliases)
    return out


def _colors(meta: pd.DataFrame, where: str) -> dict[str, pd.Series]:
    """One boolean Series per colour (NA when the table does not record colours)."""
    if all(c in meta.columns for c in COLORS):
        return {c: _marks(meta, c, where) for c in COLORS}
    if "Colors" not in meta.columns:
        return {c: (_marks(meta, c, where) if c in meta.columns else pd.Series(None, index=meta.index,
                                                                               dtype=object)) for c in COLORS}
    numbers = clean_text(meta["Colors"]).map(lambda v: v.replace(",", " ").split() if isinstance(v, str) else [])
    bad = numbers.map(lambda ns: any(n not in {"1", "2", "3", "4", "5", "6"} for n in ns))
    if bad.any():
        raise bad_values(where, "Colors", meta["Colors"][bad], "the colours are numbers separated by spaces: "
                         + ", ".join(f"{i} {c}" for i, c in enumerate(COLORS, start=1)))
    return {c: numbers.map(lambda ns, k=str(i): k in ns) for i, c in enumerate(COLORS, start=1)}


def _findings(cases: pd.DataFrame) -> list[str]:
    """The findings of each case as '; '-joined phrases (see the module docstring)."""
    out = []
    for row in cases.to_dict("records"):
        found: list[tuple[int, str]] = []
        for c in CRITERION_NAMES:
            v = row.get(c)
            if isinstance(v, str) and v != "absent":
                found.append((_PHRASE_ORDER[c], PHRASES[c][v][0]))
        for column, (extra, phrase) in _UNMAPPED.items():
            if row.get(extra) == "present":
                found.append((_PHRASE_ORDER[GRADES[column][0]], phrase))
        parts = [p for _, p in sorted(found, key=lambda t: t[0])]
        asym = row.get("asymmetry")
        if asym is not None and asym is not pd.NA and asym == asym:
            parts.append(_ASYMMETRY[int(asym)])
        colors = [c.lower() for c in COLORS if row.get(_COLOR_COLUMNS[c]) is True]
        if colors:
            parts.append("colours: " + ", ".join(colors))
        out.append("; ".join(parts))
    return out

