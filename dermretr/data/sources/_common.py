"""Helpers shared by the dataset loaders.

Every loader imports what it shares with the others from here (and only from
here): option checks, reading the metadata, checking and parsing columns with
errors that name the file, column, rows and values, the text-view phrases
several datasets have in common, finding the images, and the last step of
every loader (split, missing-image policy, validation).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..._errors import CaseTableError, DataWarning, DermretrError
from ..cases import CASE_COLUMNS, TEXT_COLUMNS, validate_cases
from ..splits import group_split

__all__ = [
    "MISSING",
    "UNKNOWN_TEXT",
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
    "join_phrases",
    "add_text_views",
    "age_phrases",
    "sex_phrases",
    "site_phrases",
    "site_age_sex_phrases",
    "safe_join",
    "FileIndex",
    "resolve_case_insensitive",
    "locate",
    "locate_all",
    "check_image_names",
    "split_suffix",
    "find_by_name",
    "warn_case_mismatches",
    "insert_case_columns",
    "apply_missing",
    "finish",
]

#: Policies for cases whose image file is missing.
MISSING = ("warn", "raise", "keep")
#: Cells meaning "not recorded" (compared in lower case, after stripping).
UNKNOWN_TEXT = frozenset({"unk", "unknown", "na", "n/a", "nan", "none", ""})
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})
_MAX_EXAMPLES = 5


# -- options -----------------------------------------------------------------------------------


def check_missing(missing: object) -> str:
    """The ``missing`` option, checked against :data:`MISSING`."""
    if not isinstance(missing, str) or missing not in MISSING:
        raise DermretrError(
            f"missing must be one of {', '.join(repr(m) for m in MISSING)} "
            f"(drop rows with a warning, stop with an error, keep the rows), got {missing!r}"
        )
    return missing


def check_seed(seed: object) -> int:
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


def require_columns(df: pd.DataFrame, required: Iterable[str], path: Path, layout: str) -> None:
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


def bad_values(path: Path, column: str, bad: pd.Series, expected: str,
               problem: str = "unknown values") -> DermretrError:
    """The error for the cells ``bad`` of ``column``; ``expected`` says what is allowed."""
    return DermretrError(f"{path}: column {column!r} has {problem} at rows {describe_values(bad)}; {expected}")


def empty_values(path: Path, column: str, empty: pd.Series, why: str) -> DermretrError:
    """The error for the empty cells ``empty`` of ``column``; ``why`` says why a value is needed."""
    return DermretrError(f"{path}: column {column!r} is empty at rows {describe_rows(empty.index)}; {why}")


# -- checking and parsing columns --------------------------------------------------------------


def clean_text(col: pd.Series) -> pd.Series:
    """Stripped text with empty cells as None (object dtype)."""
    out = col.astype(object).where(col.notna(), None)
    out = out.map(lambda v: v.strip() if isinstance(v, str) else v)
    return out.where(out.notna() & (out != ""), None)


def required_text(meta: pd.DataFrame, column: str, path: Path, why: str) -> pd.Series:
    """``column`` stripped; empty cells are an error naming their rows (``why``: what the value is for)."""
    text = clean_text(meta[column])
    empty = text.isna()
    if empty.any():
        raise empty_values(path, column, meta[column][empty], why)
    return text


def unique_ids(meta: pd.DataFrame, column: str, path: Path, why_empty: str, why_unique: str) -> pd.Series:
    """A non-empty, unique identifier column (stripped); errors name the rows and values."""
    ids = required_text(meta, column, path, why_empty)
    check_unique(ids, column, path, why_unique)
    return ids


def check_unique(ids: pd.Series, column: str, path: Path, why: str) -> None:
    """Repeated values of ``ids`` (read from ``column`` of ``path``) -> a CaseTableError.

    The message names up to five repeated values with their (0-based data) rows.

    >>> check_unique(pd.Series(["a", "b", "a"]), "image_id", Path("meta.csv"), "each image must be listed once")
    Traceback (most recent call last):
    ...
    dermretr._errors.CaseTableError: meta.csv: column 'image_id' repeats 1 value: 'a' (rows 0, 2); each image ...
    """
    dup = ids[ids.duplicated(keep=False)]
    if not len(dup):
        return
    rows = dup.groupby(dup.astype(str), sort=False).groups
    shown = "; ".join(f"{key!r} (rows {describe_rows(list(index), 4)})" for key, index in list(rows.items())[:5])
    more = f"; and {len(rows) - 5} more" if len(rows) > 5 else ""
    raise CaseTableError(f"{path}: column {column!r} repeats {len(rows)} value{'s' if len(rows) > 1 else ''}: "
                         f"{shown}{more}; {why}")


def group_ids(meta: pd.DataFrame, column: str, fallback: pd.Series, path: Path, what: str,
              stacklevel: int = 2) -> pd.Series:
    """A grouping id (patient, lesion); empty cells fall back to ``fallback`` with one DataWarning.

    ``stacklevel`` counts from the caller, as if it called :func:`warnings.warn`.
    """
    ids = clean_text(meta[column])
    empty = ids.isna()
    if empty.any():
        rows = np.flatnonzero(empty.to_numpy())
        warnings.warn(
            f"{what}: {path} has an empty {column!r} at {len(rows)} row(s) ({describe_rows(rows, 5)}); "
            "each of those images is treated as its own group for the split",
            DataWarning, stacklevel=stacklevel + 1,
        )
        ids = ids.where(~empty, fallback.astype(object))
    return ids


def parse_choice(meta: pd.DataFrame, column: str, allowed: Sequence[str], path: Path,
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


def parse_number(meta: pd.DataFrame, column: str, path: Path, lo: float, hi: float, integer: bool = False,
                 what: str = "a number") -> pd.Series:
    """``column`` as float (NA when empty); malformed or out-of-range values -> error with rows."""
    raw = clean_text(meta[column])
    num = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = raw.notna() & (num.isna() | ~np.isfinite(num) | (num < lo) | (num > hi) | (integer & (num % 1 != 0)))
    if bad.any():
        where = f" in {lo:g}..{hi:g}" if np.isfinite(lo) and np.isfinite(hi) else ""
        raise bad_values(path, column, meta[column][bad],
                         f"expected {what}{where}, or an empty cell when unknown",
                         problem="malformed values")
    return num


def parse_flag(meta: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A True/False/UNK column as object True/False/None; other values -> error with rows."""
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


def parse_fitzpatrick(meta: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A Fitzpatrick skin type column as Int64 1..6 (NA when unknown); other values -> error.

    Spellings: see :data:`FITZPATRICK_SPELLINGS`.

    >>> parse_fitzpatrick(pd.DataFrame({"f": ["2", "IV", "type vi", "", "unknown"]}), "f", Path("m.csv")).tolist()
    [2, 4, 6, <NA>, <NA>]
    >>> parse_fitzpatrick(pd.DataFrame({"f": ["2", "seven"]}), "f", Path("m.csv"))
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: m.csv: column 'f' has unknown Fitzpatrick skin types at rows 1 ('seven'); ...
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


# -- text view ---------------------------------------------------------------------------------


def join_phrases(parts: Sequence[Sequence[str]]) -> list[str]:
    """Join per-row phrases (one sequence per phrase kind) with ``"; "``, skipping empty ones."""
    columns = [p.tolist() if isinstance(p, pd.Series) else list(p) for p in parts]
    return ["; ".join(p for p in row if p) for row in zip(*columns)]


def add_text_views(cases: pd.DataFrame, findings: Sequence[Sequence[str]], before: Sequence[Sequence[str]] = (),
                   after: Sequence[Sequence[str]] = ()) -> pd.DataFrame:
    """Write a loader's two text views: ``descriptors`` (the caption) and ``findings``.

    ``findings``, ``before`` and ``after`` are per-row phrase sequences as for
    :func:`join_phrases`; the caption is ``before + findings + after`` (the
    diagnosis and what only a diagnosis tells, such as how it was confirmed,
    go in ``before``/``after``), the findings column ``findings`` alone.  Rows
    without any phrase get ``""``.

    >>> cases = pd.DataFrame({"case_id": ["a", "b"]})
    >>> cases = add_text_views(cases, [["itching", ""], ["on the arm", ""]], before=[["eczema", "acne"]])
    >>> cases[["descriptors", "findings"]].values.tolist()
    [['eczema; itching; on the arm', 'itching; on the arm'], ['acne', '']]
    """
    blank = [[""] * len(cases)]  # so that no part at all still gives one (empty) text per row
    cases["descriptors"] = join_phrases([*before, *findings, *after, *blank])
    cases["findings"] = join_phrases([*findings, *blank])
    return cases


def age_phrases(age: pd.Series) -> pd.Series:
    """``"age 67"`` per row of a numeric age column (``""`` when unknown)."""
    return age.map(lambda a: f"age {a:g}" if a == a else "")


def sex_phrases(sex: pd.Series) -> pd.Series:
    """``"male"`` / ``"female"`` (also from ``m`` / ``f``, any letter case); anything else ``""``."""
    mapping = {"male": "male", "m": "male", "female": "female", "f": "female"}
    return clean_text(sex).map(lambda v: mapping.get(v.lower(), "") if isinstance(v, str) else "")


def site_phrases(site: pd.Series, special: Mapping[str, str] | None = None) -> pd.Series:
    """``"on the <site>"`` in lower case (``_`` as a space, ``a/b`` as ``a or b``); unknown -> ``""``.

    ``special`` maps lower-case sites to their own phrase (``{"acral": "on acral skin"}``).
    """
    special = special or {}

    def phrase(v):
        if not isinstance(v, str) or v.lower() in UNKNOWN_TEXT:
            return ""
        v = v.lower()
        return special[v] if v in special else "on the " + v.replace("/", " or ").replace("_", " ")

    return clean_text(site).map(phrase)


def site_age_sex_phrases(meta: pd.DataFrame, site: str, age: pd.Series | None, sex: str,
                         special_sites: Mapping[str, str] | None = None) -> list[pd.Series]:
    """The where / age / sex phrases of the text view, for those of the columns present.

    ``site`` and ``sex`` are column names, ``age`` the parsed ages (None when
    not recorded); see :func:`site_phrases`, :func:`age_phrases` and
    :func:`sex_phrases`.
    """
    parts = []
    if site in meta.columns:
        parts.append(site_phrases(meta[site], special_sites))
    if age is not None:
        parts.append(age_phrases(age))
    if sex in meta.columns:
        parts.append(sex_phrases(meta[sex]))
    return parts


# -- finding images ----------------------------------------------------------------------------


def safe_join(root: Path, rel: str, path: Path, row: int) -> Path:
    """Join ``rel`` under ``root``, refusing paths that escape it."""
    rel = str(rel).strip().replace("\\", "/")
    candidate = Path(rel)
    if candidate.is_absolute() or os.path.isabs(rel) or ".." in candidate.parts:
        raise DermretrError(
            f"{path}, row {row}: image path {rel!r} escapes the dataset folder {root}; "
            "image paths must be relative and stay inside it"
        )
    return root / candidate


class FileIndex:
    """All files under a folder, found in one walk, looked up by name.

    Public datasets put images in varying sub-folders (``imgs_part_1/``,
    ``HAM10000_images_part_2/``, nested copies...), so loaders look files up
    by name.  Lookups are exact first, then case-insensitive (the official
    releases mix ``.JPG`` and ``.jpg``).  Paths are kept as strings (one
    ``os.path.join`` per file), which keeps indexing tens of thousands of
    files fast.

    >>> import os, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "part_1").mkdir(); _ = (root / "part_1" / "ISIC_1.JPG").write_bytes(b"x")
    >>> idx = FileIndex(root, suffixes=(".jpg",))
    >>> os.path.basename(idx.find("ISIC_1.jpg")), idx.case_mismatches
    ('ISIC_1.JPG', 1)
    """

    def __init__(self, root: Path, suffixes: Iterable[str] | None = None):
        self.root = Path(root)
        suffixes = tuple(s.lower() for s in suffixes) if suffixes else None
        self.exact: dict[str, str] = {}
        self.folded: dict[str, str] = {}
        self.duplicates: dict[str, list[str]] = {}
        self.case_mismatches = 0
        join = os.path.join
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if suffixes and not name.lower().endswith(suffixes):
                    continue
                path = join(dirpath, name)
                if name in self.exact:
                    self.duplicates.setdefault(name, [self.exact[name]]).append(path)
                    continue
                self.exact[name] = path
                self.folded.setdefault(name.lower(), path)

    def __len__(self) -> int:
        return len(self.exact)

    def find(self, name: str) -> str | None:
        """The path of the file called ``name`` (exact, else case-insensitive), or None."""
        path = self.exact.get(name)
        if path is None:
            path = self.folded.get(name.lower())
            if path is not None:
                self.case_mismatches += 1
        return path


def resolve_case_insensitive(root: Path, rel: str) -> Path | None:
    """Find ``root/rel`` when the file exists with other letter case in any part."""
    current = root
    for part in Path(rel).parts:
        try:
            entries = {p.name.lower(): p for p in current.iterdir()}
        except OSError:
            return None
        match = entries.get(part.lower())
        if match is None:
            return None
        current = match
    return current if current.is_file() else None


def locate(root: Path, rels: Sequence[str], path: Path, row: int) -> tuple[Path, Path | None]:
    """Find an image given by paths relative to ``root`` (row ``row`` of ``path``).

    Returns where the first of ``rels`` is expected and the file found: the
    first of ``rels`` that exists exactly, else the first that exists when
    letter case is ignored, else None.  Paths escaping ``root`` are refused.
    """
    candidates = [safe_join(root, rel, path, row) for rel in rels]
    for candidate in candidates:
        if candidate.is_file():
            return candidates[0], candidate
    for rel in rels:
        hit = resolve_case_insensitive(root, str(rel).strip().replace("\\", "/"))
        if hit is not None:
            return candidates[0], hit
    return candidates[0], None


def locate_all(root: Path, rels: Sequence[str], path: Path) -> tuple[list[str], list[bool], int]:
    """Find the file of every row, given by a path relative to ``root`` (row ``i`` of ``path``).

    Returns the paths (the file found, else where it was expected), which were
    found, and how many were found only when ignoring letter case (pass that
    count to :func:`warn_case_mismatches`).  Paths escaping ``root`` are
    refused (see :func:`locate`).
    """
    out: list[str] = []
    found: list[bool] = []
    repaired = 0
    for i, rel in enumerate(rels):
        expected, hit = locate(root, [rel], path, i)
        repaired += hit is not None and hit != expected
        found.append(hit is not None)
        out.append(str(hit if hit is not None else expected))
    return out, found, repaired


def check_image_names(names: pd.Series, root: Path, path: Path) -> None:
    """Refuse image names that are not bare file names (path separators, '..', absolute paths)."""
    text = names.astype(str)
    escapes = (
        text.str.startswith(("/", "\\"))
        | text.str.match(r"^[A-Za-z]:")
        | text.str.contains(r"(?:^|[/\\])\.\.(?:[/\\]|$)", regex=True)
    )
    nested = text.str.contains(r"[/\\]", regex=True) & ~escapes
    for mask, problem in ((escapes, f"escape the dataset folder {root}"),
                          (nested, "contain a path separator")):
        if mask.any():
            rows = text[mask]
            raise DermretrError(
                f"{path}: image names at row{'s' if len(rows) > 1 else ''} "
                f"{describe_values(rows)} (0-based data rows) {problem}; "
                "image names must be bare file names, found anywhere inside the dataset folder"
            )


def split_suffix(ids: pd.Series, suffixes: Sequence[str], default: str) -> tuple[pd.Series, pd.Series]:
    """Ids that may carry an image suffix -> (ids without it, file names with it; ``default`` when absent)."""
    has_ext = ids.str.lower().str.endswith(tuple(suffixes))
    if not has_ext.any():
        return ids, ids + default
    names = ids.where(has_ext, ids + default)
    return ids.where(~has_ext, ids.str.replace(r"\.[A-Za-z]+$", "", regex=True)), names


def warn_case_mismatches(count: int, what: str, path: Path, stacklevel: int = 2) -> None:
    """One DataWarning: ``count`` images named in ``path`` were found only ignoring letter case.

    ``stacklevel`` counts from the caller, as if it called :func:`warnings.warn`.
    """
    if count:
        warnings.warn(
            f"{what}: {count} image(s) named in {path} matched files only when ignoring letter case "
            "(e.g. '.JPG' vs '.jpg'); they are used",
            DataWarning, stacklevel=stacklevel + 1,
        )


def find_by_name(root: Path, names: pd.Series, path: Path, what: str,
                 suffixes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Find every image by file name with one walk of ``root``.

    Returns the absolute image paths (for images not found: ``root/<name>``)
    and a boolean array of which were found; warns once (DataWarning) about
    names matched only ignoring letter case.
    """
    check_image_names(names, root, path)
    index = FileIndex(root, suffixes=suffixes)
    exact = index.exact
    name_list = names.tolist()
    hits = [exact.get(n) or index.find(n) for n in name_list]
    found = np.fromiter((h is not None for h in hits), dtype=bool, count=len(hits))
    image_paths = [h if h is not None else str(root / n) for h, n in zip(hits, name_list)]
    warn_case_mismatches(index.case_mismatches, what, path, stacklevel=3)  # the loader's caller
    return image_paths, found


# -- the last step -----------------------------------------------------------------------------


def insert_case_columns(cases: pd.DataFrame, **columns) -> pd.DataFrame:
    """Insert the given schema columns first, in order (Series are taken by position, not index)."""
    for i, (name, values) in enumerate(columns.items()):
        cases.insert(i, name, values.to_numpy() if isinstance(values, pd.Series) else values)
    return cases


def apply_missing(cases: pd.DataFrame, found: Sequence[bool], missing: str, what: str, path: Path,
                  root: Path, hint: str = "", stacklevel: int = 2) -> pd.DataFrame:
    """Apply the ``missing`` policy to the rows whose image was not found.

    "warn" drops them with one DataWarning (count and examples; ``stacklevel``
    counts from the caller, as if it called :func:`warnings.warn`), "raise"
    raises, "keep" keeps them; ``hint`` is put before the advice of the error.
    """
    found = np.asarray(found, dtype=bool)
    n_missing = int((~found).sum())
    if n_missing == 0 or missing == "keep":
        return cases
    prefix = str(root) + os.sep
    gone = [p[len(prefix):] if p.startswith(prefix) else p  # relative to root: shorter, and what the CSV says
            for p in cases["image_path"][~found].astype(str).tolist()[:_MAX_EXAMPLES]]
    examples = ", ".join(gone) + (", ..." if n_missing > _MAX_EXAMPLES else "")
    message = (f"{what}: {n_missing} of {len(cases)} image file(s) listed in {path} were not found "
               f"under {root} (e.g. {examples})")
    if missing == "raise":
        raise DermretrError(f"{message}; {hint}add the images, or pass missing='warn' to drop those rows")
    warnings.warn(f"{message}; dropped those rows (missing='keep' keeps them)", DataWarning,
                  stacklevel=stacklevel + 1)
    return cases[found]


def finish(cases: pd.DataFrame, found: Sequence[bool], missing: str, *, source: str, seed: int,
           path: Path, root: Path, hint: str = "", split: pd.Series | None = None) -> pd.DataFrame:
    """Split, drop missing images, validate: the last step of every loader.

    The patient-grouped split stratified by ``diagnosis_group`` (or the given
    ``split``) is made on every row, so the split of a case does not depend on
    which images exist; then ``source`` is set, :func:`apply_missing` applied
    and the table validated.
    """
    cases["split"] = (group_split(cases, seed=seed) if split is None else split).to_numpy()
    cases["source"] = source
    cases = apply_missing(cases, found, missing, source, path, root, hint, stacklevel=3)  # the loader's caller
    return validate_cases(cases, copy=False)
