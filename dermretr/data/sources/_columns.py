"""Checking and parsing the columns of a metadata table: text, identifiers, choices, numbers, flags, skin types.

Malformed cells raise a DermretrError naming the file, the column, the rows and the values (:mod:`._reading`); the
tables are indexed by line number (:func:`._reading.read_table`), and the rows are named by those lines.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..._errors import CaseTableError, DataWarning
from ..cases import CASE_COLUMNS, TEXT_COLUMNS
from ._reading import Where, bad_values, describe_lines, empty_values

__all__ = [
    "UNKNOWN_TEXT",
    "clean_text",
    "required_text",
    "unique_ids",
    "check_unique",
    "group_ids",
    "parse_choice",
    "parse_number",
    "parse_flag",
    "parse_fitzpatrick",
    "FITZPATRICK_SPELLINGS",
    "rename_collisions",
]

#: Cells meaning "not recorded" (compared in lower case, after stripping).
UNKNOWN_TEXT = frozenset({"unk", "unknown", "na", "n/a", "nan", "none", ""})
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})


# -- checking and parsing columns --------------------------------------------------------------


def clean_text(col: pd.Series) -> pd.Series:
    """Stripped text with empty cells as None (object dtype)."""
    out = col.astype(object).where(col.notna(), None)
    out = out.map(lambda v: v.strip() if isinstance(v, str) else v)
    return out.where(out.notna() & (out != ""), None)


def required_text(meta: pd.DataFrame, column: str, path: Where, why: str) -> pd.Series:
    """``column`` stripped; empty cells are an error naming their lines (``why``: what the value is for)."""
    text = clean_text(meta[column])
    empty = text.isna()
    if empty.any():
        raise empty_values(path, column, meta[column][empty], why)
    return text


def unique_ids(meta: pd.DataFrame, column: str, path: Where, why_empty: str, why_unique: str) -> pd.Series:
    """A non-empty, unique identifier column (stripped); errors name the lines and values."""
    ids = required_text(meta, column, path, why_empty)
    check_unique(ids, column, path, why_unique)
    return ids


def check_unique(ids: pd.Series, column: str, path: Where, why: str) -> None:
    """Repeated values of ``ids`` (read from ``column`` of ``path``) -> a CaseTableError.

    The message names up to five repeated values with their lines (the index labels of ``ids``).

    >>> ids = pd.Series(["a", "b", "a"], index=[2, 3, 5])  # as read_table indexes them: by line
    >>> check_unique(ids, "image_id", "meta.csv", "each image must be listed once")
    Traceback (most recent call last):
    ...
    dermretr._errors.CaseTableError: meta.csv: column 'image_id' repeats 1 value: 'a' (lines 2, 5); each image ...
    """
    dup = ids[ids.duplicated(keep=False)]
    if not len(dup):
        return
    rows = dup.groupby(dup.astype(str), sort=False).groups
    shown = "; ".join(f"{key!r} ({describe_lines(index, 4)})" for key, index in list(rows.items())[:5])
    more = f"; and {len(rows) - 5} more" if len(rows) > 5 else ""
    raise CaseTableError(f"{path}: column {column!r} repeats {len(rows)} value{'s' if len(rows) > 1 else ''}: "
                         f"{shown}{more}; {why}")


def group_ids(meta: pd.DataFrame, column: str, fallback: pd.Series, path: Where, what: str,
              stacklevel: int = 2) -> pd.Series:
    """A grouping id (patient, lesion); empty cells fall back to ``fallback`` with one DataWarning.

    ``stacklevel`` counts from the caller, as if it called :func:`warnings.warn`.
    """
    ids = clean_text(meta[column])
    empty = ids.isna()
    if empty.any():
        lines = empty.index[empty.to_numpy()]
        warnings.warn(
            f"{what}: {path} has {len(lines)} empty {column!r} cell(s) ({describe_lines(lines, 5)}); "
            "each of those images is treated as its own group for the split",
            DataWarning, stacklevel=stacklevel + 1,
        )
        ids = ids.where(~empty, fallback.astype(object))
    return ids


def parse_choice(meta: pd.DataFrame, column: str, allowed: Sequence[str], path: Where,
                 aliases: Mapping[str, str] | None = None) -> pd.Series:
    """Map ``column`` onto ``allowed`` (letter case and spaces forgiven); unknown or empty -> error."""
    lookup = {" ".join(a.lower().split()): a for a in allowed}
    lookup.update({k.lower(): v for k, v in (aliases or {}).items()})
    raw = meta[column]
    key = raw.astype(object).map(lambda v: " ".join(v.lower().split()) if isinstance(v, str) else v)
    out = key.map(lookup)
    bad = out.isna()
    if bad.any():
        raise bad_values(path, column, raw[bad], f"allowed values: {', '.join(allowed)}")
    return out.astype(object)


def parse_number(meta: pd.DataFrame, column: str, path: Where, lo: float, hi: float, integer: bool = False,
                 what: str = "a number") -> pd.Series:
    """``column`` as float (NA when empty); malformed or out-of-range values -> error naming their lines."""
    raw = clean_text(meta[column])
    num = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = raw.notna() & (num.isna() | ~np.isfinite(num) | (num < lo) | (num > hi) | (integer & (num % 1 != 0)))
    if bad.any():
        where = f" in {lo:g}..{hi:g}" if np.isfinite(lo) and np.isfinite(hi) else ""
        raise bad_values(path, column, meta[column][bad],
                         f"expected {what}{where}, or an empty cell when unknown",
                         problem="malformed values")
    return num


def parse_flag(meta: pd.DataFrame, column: str, path: Where) -> pd.Series:
    """A True/False/UNK column as object True/False/None; other values -> error naming their lines."""
    key = clean_text(meta[column]).map(lambda v: v.lower() if isinstance(v, str) else "")
    out = key.map(lambda v: True if v in _TRUE else False if v in _FALSE else None)
    bad = out.isna() & ~key.isin(UNKNOWN_TEXT)
    if bad.any():
        raise bad_values(path, column, meta[column][bad], "allowed values: True, False, UNK (or empty)")
    return out


#: The spellings of a Fitzpatrick skin type that :func:`parse_fitzpatrick` reads (letter case and
#: spaces forgiven): an integer 1..6 (also ``2.0``), a Roman numeral I..VI, either after ``type`` or
#: ``FST`` (``type II``, ``FST2``); empty, ``unknown``, ``NA`` (and the other :data:`UNKNOWN_TEXT`) mean unknown.
FITZPATRICK_SPELLINGS = "1-6 or I-VI (also written 'type II' or 'FST2'), or empty / 'unknown' when not recorded"
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}


def _fitzpatrick_value(value: object) -> object:
    """1..6, None (unknown) or the string ``"bad"``."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and value == value:
        value = str(value)
    if not isinstance(value, str):
        return None
    key = " ".join(value.strip().lower().split())
    if key in UNKNOWN_TEXT:
        return None
    for prefix in ("fitzpatrick type ", "fitzpatrick ", "type ", "fst ", "fst"):
        if key.startswith(prefix):
            key = key[len(prefix):].strip()
            break
    if key in _ROMAN:
        return _ROMAN[key]
    try:
        number = float(key)
    except ValueError:
        return "bad"
    return int(number) if number.is_integer() and 1 <= number <= 6 else "bad"


def parse_fitzpatrick(meta: pd.DataFrame, column: str, path: Where) -> pd.Series:
    """A Fitzpatrick skin type column as Int64 1..6 (NA when unknown); other values -> error.

    Spellings: see :data:`FITZPATRICK_SPELLINGS`.

    >>> parse_fitzpatrick(pd.DataFrame({"f": ["2", "IV", "type vi", "", "unknown"]}), "f", "m.csv").tolist()
    [2, 4, 6, <NA>, <NA>]
    >>> parse_fitzpatrick(pd.DataFrame({"f": ["2", "seven"]}, index=[2, 3]), "f", "m.csv")  # index: lines
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: m.csv: column 'f' has unknown Fitzpatrick skin types at line 3 ('seven'); ...
    """
    raw = meta[column]
    out = raw.map(_fitzpatrick_value)
    bad = out.map(lambda v: isinstance(v, str)).astype(bool)
    if bad.any():
        raise bad_values(path, column, raw[bad], f"allowed values: {FITZPATRICK_SPELLINGS}",
                         problem="unknown Fitzpatrick skin types")
    return pd.Series(pd.array(out.tolist(), dtype="Int64"), index=raw.index)


def rename_collisions(meta: pd.DataFrame, prefix: str, keep: Iterable[str] = ()) -> pd.DataFrame:
    """Rename original columns that clash with schema columns to ``<prefix>_<name>``."""
    keep = set(keep)
    clash = {c: f"{prefix}_{c}" for c in meta.columns
             if c not in keep and (c in CASE_COLUMNS or c in TEXT_COLUMNS)}
    return meta.rename(columns=clash)
