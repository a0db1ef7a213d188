"""The loaders' options, their dataset folder and metadata CSV, and the wording of errors about bad rows.

Errors name the file, the column, the (0-based data) rows and their values, so that a user can fix the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, cast

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
    "describe_rows",
    "describe_values",
    "bad_values",
    "empty_values",
]

#: The file an error message names: its path, or a description of it (PH2: ``"meta.txt (rows are line numbers)"``).
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
    """Read a metadata CSV (BOM, Windows line endings and blank lines tolerated).

    Every cell is read as text (``dtype=str``) so that nothing is guessed or
    evaluated; callers convert the columns they need.  The ``required``
    columns are checked with :func:`require_columns`.  A file that is missing,
    a folder, unreadable, not UTF-8, not CSV, empty (no header) or, unless
    ``allow_empty``, without any data row raises a DermretrError naming it.
    """
    if path.is_dir():
        raise DermretrError(f"{what}: {path} is a folder, not a metadata file. Expected layout: {layout}")
    if not path.is_file():
        raise DermretrError(f"{what}: metadata file not found: looked for {path}. Expected layout: {layout}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig",
                         skip_blank_lines=True)
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
    df = df.dropna(how="all").reset_index(drop=True)
    if len(df) == 0 and not allow_empty:
        raise DermretrError(f"{what}: {path} has a header but no rows: there is nothing to load. Expected layout: "
                            f"{layout}")
    return df


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


def describe_rows(rows: Iterable, limit: int = 8) -> str:
    """``"1, 4, 9"``; past ``limit`` items ``"... and N more"``."""
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def describe_values(values: pd.Series, limit: int = 8) -> str:
    """``"2 ('BOD'), 4 (nan)"``: the rows (index labels, i.e. 0-based data rows) and their values."""
    return describe_rows((f"{i} ({v!r})" for i, v in values.items()), limit)


def bad_values(path: Where, column: str, bad: pd.Series, expected: str,
               problem: str = "unknown values") -> DermretrError:
    """The error for the cells ``bad`` of ``column``; ``expected`` says what is allowed."""
    return DermretrError(f"{path}: column {column!r} has {problem} at rows {describe_values(bad)}; {expected}")


def empty_values(path: Where, column: str, empty: pd.Series, why: str) -> DermretrError:
    """The error for the empty cells ``empty`` of ``column``; ``why`` says why a value is needed."""
    return DermretrError(f"{path}: column {column!r} is empty at rows {describe_rows(empty.index)}; {why}")
