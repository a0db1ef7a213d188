"""The loaders' options, their dataset folder and metadata CSV, and the wording of errors about bad rows.

Errors name the file, the column, the rows and their values, so that a user can fix the file.  A row is named
by its line in the file, as a text editor numbers it (the header is line 1): :func:`read_table` indexes the
table it returns by those line numbers, and the helpers below name the index labels of the cells they are given.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import pandas as pd

from ..._errors import DermretrError

__all__ = [
    "MISSING",
    "MissingPolicy",
    "Where",
    "check_missing",
    "check_seed",
    "check_path",
    "check_text",
    "dataset_root",
    "read_metadata",
    "read_table",
    "require_columns",
    "describe_items",
    "describe_lines",
    "line_unit",
    "DATA_ROW",
    "describe_values",
    "bad_values",
    "empty_values",
]

#: The file an error message names: its path, or a description of it (PH2: ``"PH2_dataset.xlsx, sheet 'Sheet1'"``).
Where: TypeAlias = "str | os.PathLike[str]"
#: Policies for cases whose image file is missing.
MISSING = ("warn", "raise", "keep")
#: The type of a ``missing`` option (one of :data:`MISSING`).
MissingPolicy: TypeAlias = Literal["warn", "raise", "keep"]


# -- options -----------------------------------------------------------------------------------


def check_missing(missing: object) -> MissingPolicy:
    """The ``missing`` option, checked against :data:`MISSING`."""
    if not isinstance(missing, str) or missing not in MISSING:
        raise DermretrError(
            f"missing must be one of {', '.join(repr(m) for m in MISSING)} "
            f"(drop rows with a warning, stop with an error, keep the rows), got {missing!r}"
        )
    return cast(MissingPolicy, missing)  # one of MISSING, checked above


def check_seed(seed: Any) -> int:
    """The split seed as an int (the CLI passes loader options as text)."""
    try:
        if isinstance(seed, bool) or float(seed) != int(float(seed)) or float(seed) < 0:
            raise ValueError
        return int(float(seed))
    except (TypeError, ValueError, OverflowError):
        raise DermretrError(f"seed must be an integer >= 0, got {seed!r}") from None


def check_path(value: object, name: str) -> Path:
    """A path option (``str`` or ``os.PathLike``) as a Path, ``~`` expanded; anything else -> error."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        text = os.fspath(value)
        if isinstance(text, str) and text.strip():
            return Path(text).expanduser()
    raise DermretrError(f"{name} must be a path (a non-empty str or os.PathLike), got {type(value).__name__} "
                        f"{value!r}")


def check_text(value: object, name: str) -> str:
    """A non-empty text option."""
    if not isinstance(value, str) or not value.strip():
        raise DermretrError(f"{name} must be a non-empty string, got {type(value).__name__} {value!r}")
    return value.strip()


def dataset_root(root: object, what: str, layout: str) -> Path:
    """The dataset folder as an absolute Path; not a path, missing, or a file -> error naming it.

    ``what`` is the source name, ``layout`` what the folder should hold.
    """
    path = check_path(root, f"{what}: the dataset folder (root)").absolute()
    if not path.exists():
        raise DermretrError(f"{what}: dataset folder {path} does not exist; pass the folder that holds the "
                            f"dataset. Expected layout: {layout}")
    if not path.is_dir():
        raise DermretrError(f"{what}: {path} is a file, not a dataset folder; pass the folder that holds it. "
                            f"Expected layout: {layout}")
    return path


# -- reading -----------------------------------------------------------------------------------


def read_metadata(root: str | os.PathLike, metadata: str | os.PathLike | None, defaults: Sequence[str],
                  what: str, layout: str, required: Iterable[str] = ()) -> tuple[Path, Path, pd.DataFrame]:
    """The dataset folder (absolute), its metadata file and the table read from it.

    The file is ``metadata`` (relative to the folder, or absolute) or else the
    first of ``defaults`` that exists (the first when none does, so that the
    error names it); it is read with :func:`read_table`.
    """
    root = dataset_root(root, what, layout)
    if metadata is not None:
        path = root / check_path(metadata, "metadata")
    else:
        path = next((root / name for name in defaults if (root / name).is_file()), root / defaults[0])
    return root, path, read_table(path, what, layout, required)


def read_table(path: Path, what: str, layout: str, required: Iterable[str] = (),
               allow_empty: bool = False) -> pd.DataFrame:
    """Read a metadata CSV (BOM, Windows line endings and blank lines tolerated), indexed by line numbers.

    Every cell is read as text (``dtype=str``) so that nothing is guessed or
    evaluated; callers convert the columns they need.  Blank lines and rows
    whose cells are all empty are left out; the index (named ``line``) holds
    the line of the file where each row starts (1-based, the header being
    line 1 unless blank lines precede it), which is what error messages name
    (:func:`describe_lines`).  The ``required`` columns are checked with
    :func:`require_columns`.  A file that is missing, a folder, unreadable,
    not UTF-8, not CSV, empty (no header) or, unless ``allow_empty``, without
    any data row raises a DermretrError naming it.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "meta.csv"
    >>> _ = path.write_text('id,note\\n\\na,"two\\nlines"\\nb,\\n,\\nc,x\\n')
    >>> read_table(path, "demo", "meta.csv")
         id       note
    line
    3     a  two\\nlines
    5     b        NaN
    7     c          x
    """
    if path.is_dir():
        raise DermretrError(f"{what}: {path} is a folder, not a metadata file. Expected layout: {layout}")
    if not path.is_file():
        raise DermretrError(f"{what}: metadata file not found: looked for {path}. Expected layout: {layout}")
    try:
        data = path.read_bytes()  # read once: for pandas, and for the lines where its rows start
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig",
                         skip_blank_lines=True, index_col=False)  # a trailing comma never shifts the columns
    except pd.errors.EmptyDataError:
        raise DermretrError(f"{what}: {path} is empty (no header line and no rows); it should be a CSV file with "
                            f"a header line. Expected layout: {layout}") from None
    except UnicodeDecodeError as exc:
        raise DermretrError(f"{what}: {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position "
                            f"{exc.start}); save it as UTF-8 (in Excel: 'CSV UTF-8')") from None
    except (pd.errors.ParserError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise DermretrError(f"{what}: cannot parse {path} as CSV: {reason}") from None
    except OSError as exc:
        raise DermretrError(f"{what}: cannot read {path}: {exc.strerror or exc}; check that the file is "
                            "readable") from None
    df.columns = [str(c).strip() for c in df.columns]
    require_columns(df, required, path, layout)
    lines = _record_lines(data, len(df))
    # lines of the file; when they cannot be counted, the rows under the header (1, 2, ...) named as such
    df.index = pd.Index(np.arange(1, len(df) + 1), name=DATA_ROW) if lines is None else pd.Index(lines, name="line")
    df = df.dropna(how="all")
    if len(df) == 0 and not allow_empty:
        raise DermretrError(f"{what}: {path} has a header but no rows: there is nothing to load. Expected layout: "
                            f"{layout}")
    return df


def _record_lines(data: bytes, count: int) -> np.ndarray | None:
    """The line (1-based) where each of the ``count`` data rows of the CSV file's bytes ``data`` starts.

    The file is split into records as :func:`pandas.read_csv` splits it: at
    ``\\n``, ``\\r\\n`` or ``\\r``, a quoted cell may span lines, and blank or
    whitespace-only lines are no record; the first record is the header.
    None when the records are not the ``count`` rows pandas read (a file
    that pandas and :mod:`csv` split differently): no line is guessed then.
    """
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(2**31 - 1)  # pandas reads cells of any length; so must this pass
        lines = io.StringIO(data.decode("utf-8-sig"), newline="").readlines()
        reader = csv.reader(iter(lines))
        starts: list[int] = []
        last = 0
        for _ in reader:
            first, last = last + 1, reader.line_num
            if first < last or lines[first - 1].strip(" \t\r\n"):
                starts.append(first)
    except (UnicodeDecodeError, csv.Error):
        starts = []
    finally:
        csv.field_size_limit(limit)
    if len(starts) != count + 1:
        return None
    return np.asarray(starts[1:], dtype=np.int64)


def require_columns(df: pd.DataFrame, required: Iterable[str], path: Where, layout: str) -> None:
    """Raise naming the missing columns, the columns found and the expected layout."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = ""
        if len(df.columns) == 1:
            sep = next((s for s in (";", "\t", "|") if s in str(df.columns[0])), None)
            if sep is not None:
                hint = f" The file seems to separate its columns with {sep!r}: save it with commas."
        raise DermretrError(
            f"{path}: missing required column(s) {missing}; found columns {list(df.columns)}. "
            f"Expected layout: {layout}.{hint}"
        )


# -- describing bad rows -----------------------------------------------------------------------


def describe_items(items: Iterable, limit: int = 8) -> str:
    """``"1, 4, 9"``; past ``limit`` items ``"... and N more"``."""
    items = list(items)
    shown = ", ".join(str(r) for r in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


#: The index name of a table whose lines could not be counted: its rows are numbered 1, 2, ... under the header.
DATA_ROW = "data row"


def line_unit(index: pd.Index | None) -> str:
    """What the labels of a table's ``index`` count in messages: ``"line"``, ``"row"`` or ``"data row"``.

    >>> line_unit(pd.Index([3], name="line")), line_unit(pd.Index([14], name="row")), line_unit(None)
    ('line', 'row', 'line')
    """
    name = getattr(index, "name", None)
    return str(name) if name in ("row", DATA_ROW) else "line"


def describe_lines(lines: Iterable, limit: int = 8, unit: str | None = None) -> str:
    """Lines of a file: ``"line 4"``, ``"lines 4, 7 and 2 more"`` (each item may carry its value).

    ``unit`` (default: ``"row"`` when ``lines`` is an index named ``row``,
    a spreadsheet's rows; ``"data row"`` for an index named so, the rows
    under the header when the lines could not be counted; else ``"line"``)
    names what the numbers count.

    >>> describe_lines([4]), describe_lines(range(2, 12)), describe_lines(pd.Index([14], name="row"))
    ('line 4', 'lines 2, 3, 4, 5, 6, 7, 8, 9 and 2 more', 'row 14')
    """
    if unit is None:
        unit = line_unit(lines if isinstance(lines, pd.Index) else None)
    lines = list(lines)
    return f"{unit}{'s' * (len(lines) != 1)} " + describe_items(lines, limit)


def describe_values(values: pd.Series, limit: int = 8) -> str:
    """``"lines 3 ('BOD'), 5 (empty)"``: the lines (the index labels, see :func:`read_table`) and their values.

    An index named ``row`` (a spreadsheet's rows) is named so: ``"row 14 ('x')"``.
    """
    shown = (f"{i} ({'empty' if missing else repr(v)})" for (i, v), missing in zip(values.items(), values.isna()))
    return describe_lines(shown, limit, line_unit(values.index))


def bad_values(path: Where, column: str, bad: pd.Series, expected: str,
               problem: str = "unknown values") -> DermretrError:
    """The error for the cells ``bad`` of ``column`` (indexed by line); ``expected`` says what is allowed.

    >>> print(bad_values("meta.csv", "site", pd.Series(["BOD"], index=[4]), "allowed values: arm, leg"))
    meta.csv: column 'site' has unknown values at line 4 ('BOD'); allowed values: arm, leg
    """
    return DermretrError(f"{path}: column {column!r} has {problem} at {describe_values(bad)}; {expected}")


def empty_values(path: Where, column: str, empty: pd.Series, why: str) -> DermretrError:
    """The error for the empty cells ``empty`` of ``column`` (indexed by line); ``why`` says why a value is needed."""
    return DermretrError(f"{path}: column {column!r} is empty at {describe_lines(empty.index)}; {why}")
