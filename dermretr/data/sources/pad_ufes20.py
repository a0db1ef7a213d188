"""Loader for PAD-UFES-20 (smartphone clinical images with patient data, Pacheco et al. 2020).

Layout (the Mendeley Data release, unchanged)::

    ROOT/metadata.csv                one row per image
    ROOT/imgs_part_1/PAT_..._.png    images, in imgs_part_1..3 or any sub-folder
    ROOT/imgs_part_2/...             (the archives nest them one level deeper:
    ROOT/imgs_part_3/...              imgs_part_1/imgs_part_1/...; both work)

``metadata.csv`` columns: patient_id, lesion_id, smoke, drink,
background_father, background_mother, age, pesticide, gender,
skin_cancer_history, cancer_history, has_piped_water, has_sewage_system,
fitspatrick (sic), region, diameter_1, diameter_2, diagnostic, itch, grew,
hurt, changed, bleed, elevation, img_id, biopsed.  Required: ``patient_id``,
``diagnostic`` and ``img_id``; the others are used when present.  Images are
found by file name anywhere below ROOT (one walk; letter case forgiven, with a
warning).

Case table
----------
* ``case_id``: ``img_id`` without its extension; ``patient_id``: ``patient_id``.
* ``diagnosis``: ``diagnostic`` as released (ACK, BCC, MEL, NEV, SCC, SEK;
  letter case forgiven).  ``diagnosis_group`` and ``malignant``:

  ==========  ===============  =========
  diagnostic  diagnosis_group  malignant
  ==========  ===============  =========
  ACK         AK               False
  BCC         BCC              True
  MEL         MEL              True
  NEV         NEV              False
  SCC         SCC              True
  SEK         SK               False
  ==========  ===============  =========

  (PAD-UFES-20 counts actinic keratosis as a skin disease, not a cancer;
  Bowen's disease is released merged into SCC.)
* ``fitzpatrick``: ``fitspatrick`` (1.0..6.0, empty when unknown) as 1..6.
* ``split``: :func:`~dermretr.data.splits.group_split` by patient, stratified
  by ``diagnosis_group``; computed before images found missing are dropped, so
  a patient's split does not depend on which files are present.
* Every ``metadata.csv`` column is kept; ``age`` becomes a number, the rest
  stays text.

Text view (column ``descriptors``)
----------------------------------
A ``"; "``-joined string of short phrases, in this order:

* the diagnosis name: ``actinic keratosis``, ``basal cell carcinoma``,
  ``melanoma``, ``nevus``, ``squamous cell carcinoma``, ``seborrheic keratosis``;
* the patient-reported findings that are explicitly ``True``: itch ->
  ``itching``, grew -> ``growing``, hurt -> ``painful``, changed ->
  ``changing``, bleed -> ``bleeding``, elevation -> ``elevated``.  ``False``
  is not mentioned (text encoders handle negation poorly, and a composed
  query names what to look for), except elevation ``False`` -> ``flat``;
  ``UNK`` and empty are not mentioned;
* region -> ``on the <region>`` in lower case (``on the face``);
* age -> ``age 67``; gender -> ``male`` / ``female``;
* biopsed ``True`` -> ``biopsy-proven``.

Fitzpatrick type is deliberately not part of the text (it is the attribute
fairness results are sliced by).
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..._errors import DataWarning, DermretrError
from ..cases import validate_cases
from ..splits import group_split
from ._common import FileIndex, describe_rows, read_table, require_columns

__all__ = ["load_pad_ufes20", "REQUIRED", "LAYOUT", "GROUPS", "MALIGNANT", "DIAGNOSIS_NAMES"]

SOURCE = "pad-ufes-20"
METADATA = "metadata.csv"
REQUIRED = ("patient_id", "diagnostic", "img_id")
LAYOUT = (
    "ROOT/metadata.csv (PAD-UFES-20's columns, including patient_id, diagnostic and img_id) "
    "and the .png images named in img_id anywhere below ROOT (imgs_part_1..3)"
)
#: diagnostic -> diagnosis_group
GROUPS: dict[str, str] = {"ACK": "AK", "BCC": "BCC", "MEL": "MEL", "NEV": "NEV", "SCC": "SCC", "SEK": "SK"}
#: diagnostic -> malignant
MALIGNANT: dict[str, bool] = {"ACK": False, "BCC": True, "MEL": True, "NEV": False, "SCC": True, "SEK": False}
#: diagnostic -> the name used in the text view
DIAGNOSIS_NAMES: dict[str, str] = {
    "ACK": "actinic keratosis",
    "BCC": "basal cell carcinoma",
    "MEL": "melanoma",
    "NEV": "nevus",
    "SCC": "squamous cell carcinoma",
    "SEK": "seborrheic keratosis",
}
#: clinical yes/no field -> (phrase when True, phrase when False or "")
FINDINGS: dict[str, tuple[str, str]] = {
    "itch": ("itching", ""),
    "grew": ("growing", ""),
    "hurt": ("painful", ""),
    "changed": ("changing", ""),
    "bleed": ("bleeding", ""),
    "elevation": ("elevated", "flat"),
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# ---------------------------------------------------------------------------
# Helpers shared with the ham10000 and isic2020 loaders (candidates for
# _common.py; kept here because that file is owned elsewhere).
# ---------------------------------------------------------------------------

MISSING_MODES = ("warn", "raise", "keep")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_UNKNOWN = {"unk", "unknown", "na", "n/a", "nan", "none", ""}


def _check_missing_mode(missing: str) -> None:
    if missing not in MISSING_MODES:
        raise DermretrError(f"missing must be one of {', '.join(repr(m) for m in MISSING_MODES)}, got {missing!r}")


def _metadata_path(root: Path, metadata: str | os.PathLike | None, defaults: Sequence[str]) -> Path:
    """The metadata file: ``metadata`` (relative to root) or the first default name that exists."""
    if metadata is not None:
        return root / Path(metadata).expanduser()
    for name in defaults:
        if (root / name).is_file():
            return root / name
    return root / defaults[0]


def _rows_values(index: Iterable, values: Iterable) -> str:
    return describe_rows(f"{i} ({v!r})" for i, v in zip(index, values))


def _clean(col: pd.Series) -> pd.Series:
    """Stripped text with empty cells as NA (object dtype)."""
    out = col.astype(object).where(col.notna(), None)
    out = out.map(lambda v: v.strip() if isinstance(v, str) else v)
    return out.where(out.notna() & (out != ""), None)


def _choices(meta: pd.DataFrame, column: str, allowed: Sequence[str], path: Path,
             aliases: Mapping[str, str] | None = None) -> pd.Series:
    """Map ``column`` onto ``allowed`` (letter case and spaces forgiven); unknown or empty -> error."""
    lookup = {" ".join(a.lower().split()): a for a in allowed}
    lookup.update({k.lower(): v for k, v in (aliases or {}).items()})
    raw = meta[column]
    key = raw.astype(object).map(lambda v: " ".join(v.lower().split()) if isinstance(v, str) else v)
    out = key.map(lookup)
    bad = out.isna()
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise DermretrError(
            f"{path}: unknown {column!r} value at rows {_rows_values(rows, raw.iloc[rows].tolist())} "
            f"(0-based data rows); allowed values: {', '.join(allowed)}"
        )
    return out.astype(object)


def _number(meta: pd.DataFrame, column: str, path: Path, lo: float, hi: float, integer: bool = False,
            what: str = "a number") -> pd.Series:
    """``column`` as float (NA when empty); malformed or out-of-range values -> error with rows."""
    raw = _clean(meta[column])
    num = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = raw.notna() & (num.isna() | (num < lo) | (num > hi) | (integer & (num % 1 != 0)))
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise DermretrError(
            f"{path}: column {column!r} has malformed values at rows "
            f"{_rows_values(rows, meta[column].iloc[rows].tolist())} (0-based data rows); "
            f"expected {what} in {lo:g}..{hi:g}, or an empty cell when unknown"
        )
    return num


def _flag(meta: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A True/False/UNK column as object True/False/None; other values -> error with rows."""
    key = _clean(meta[column]).map(lambda v: v.lower() if isinstance(v, str) else "")
    out = key.map(lambda v: True if v in _TRUE else False if v in _FALSE else None)
    bad = out.isna() & ~key.isin(_UNKNOWN)
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise DermretrError(
            f"{path}: column {column!r} has unknown values at rows "
            f"{_rows_values(rows, meta[column].iloc[rows].tolist())} (0-based data rows); "
            "allowed values: True, False, UNK (or empty)"
        )
    return out


def _ids(meta: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A non-empty, unique identifier column (stripped)."""
    ids = _clean(meta[column])
    if ids.isna().any():
        rows = np.flatnonzero(ids.isna().to_numpy())
        raise DermretrError(f"{path}: column {column!r} is empty at rows {describe_rows(rows)} (0-based data rows)")
    dup = ids.duplicated(keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())
        raise DermretrError(
            f"{path}: column {column!r} has duplicate values at rows "
            f"{_rows_values(rows, ids.iloc[rows].tolist())} (0-based data rows); each image must be listed once"
        )
    return ids


def _group_ids(meta: pd.DataFrame, column: str, fallback: pd.Series, path: Path, source: str) -> pd.Series:
    """A grouping id (patient, lesion); empty cells fall back to ``fallback`` with one DataWarning."""
    ids = _clean(meta[column])
    empty = ids.isna()
    if empty.any():
        rows = np.flatnonzero(empty.to_numpy())
        warnings.warn(
            f"{source}: {path.name} has an empty {column!r} at {len(rows)} row(s) ({describe_rows(rows, 5)}); "
            "each of those images is treated as its own group for the split",
            DataWarning, stacklevel=3,
        )
        ids = ids.where(~empty, fallback.astype(object))
    return ids


def _check_image_names(names: pd.Series, root: Path, path: Path) -> None:
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
            rows = np.flatnonzero(mask.to_numpy())
            raise DermretrError(
                f"{path}: image names at row{'s' if len(rows) > 1 else ''} "
                f"{_rows_values(rows, text.iloc[rows].tolist())} (0-based data rows) {problem}; "
                "image names must be bare file names, found anywhere inside the dataset folder"
            )


def _resolve_images(root: Path, names: pd.Series, path: Path, source: str, missing: str,
                    suffixes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Find every image by file name with one walk of ``root``.

    Returns the absolute image paths (for images not found: ``root/<name>``)
    and a boolean array of which were found.  Warns (DataWarning) about
    names matched only ignoring letter case; applies ``missing`` to the rest.
    """
    _check_image_names(names, root, path)
    index = FileIndex(root, suffixes=suffixes)
    exact = index.exact
    name_list = names.tolist()
    found_paths = [exact.get(n) or index.find(n) for n in name_list]
    found = np.fromiter((p is not None for p in found_paths), dtype=bool, count=len(found_paths))
    image_paths = [str(p) if p is not None else str(root / n) for p, n in zip(found_paths, name_list)]
    if index.case_mismatches:
        warnings.warn(
            f"{source}: {index.case_mismatches} image(s) named in {path.name} were found only with "
            f"different letter case under {root}; they are used",
            DataWarning, stacklevel=3,
        )
    n_missing = int((~found).sum())
    if n_missing and missing != "keep":
        examples = ", ".join(repr(n) for n in itertools.islice(
            (n for n, ok in zip(name_list, found) if not ok), 5))
        message = (
            f"{source}: {n_missing} of {len(found)} image(s) listed in {path} were not found anywhere "
            f"under {root} (e.g. {examples})"
        )
        if missing == "raise":
            raise DermretrError(message + "; pass missing='warn' to drop those rows")
        warnings.warn(message + "; those rows were dropped (missing='keep' keeps them)", DataWarning, stacklevel=3)
    return image_paths, found


def _age_phrase(age: pd.Series) -> pd.Series:
    return age.map(lambda a: f"age {a:g}" if a == a else "")


def _sex_phrase(sex: pd.Series) -> pd.Series:
    mapping = {"male": "male", "m": "male", "female": "female", "f": "female"}
    return _clean(sex).map(lambda v: mapping.get(v.lower(), "") if isinstance(v, str) else "")


def _join(parts: Sequence[pd.Series]) -> list[str]:
    """Join per-row phrases with ``"; "``, skipping empty ones."""
    columns = [p.tolist() for p in parts]
    return ["; ".join(p for p in row if p) for row in zip(*columns)]


def _finish(cases: pd.DataFrame, found: np.ndarray, missing: str, source: str, seed: int,
            by: str = "patient_id") -> pd.DataFrame:
    """Split (on all rows, so splits do not depend on which files exist), drop missing images, validate."""
    cases["split"] = group_split(cases, by=by, stratify="diagnosis_group", seed=seed).to_numpy()
    cases["source"] = source
    if missing == "warn" and not found.all():
        cases = cases.loc[found]
    return validate_cases(cases, copy=False)


# ---------------------------------------------------------------------------


def load_pad_ufes20(
    root: str | os.PathLike,
    missing: str = "warn",
    seed: int = 0,
    metadata: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Load a PAD-UFES-20 folder into a validated case table.

    Parameters
    ----------
    root : path
        The folder holding ``metadata.csv`` and the image folders.
    missing : {"warn", "raise", "keep"}
        Images listed but not found: drop those rows with one DataWarning,
        raise DermretrError, or keep the rows (``image_path`` is then
        ``ROOT/<img_id>``, where the image was expected).
    seed : int
        Seed of the patient-grouped split.
    metadata : path, optional
        Another metadata file (relative to ``root`` or absolute) with the same
        columns.

    Returns
    -------
    DataFrame
        A validated case table with every ``metadata.csv`` column kept and a
        ``descriptors`` column (see the module docstring).

    Raises
    ------
    DermretrError
        Metadata file or required columns missing, unknown ``diagnostic``,
        malformed ``age``/``fitspatrick``/yes-no values, image names that are
        not bare file names, duplicate ``img_id``, missing images with
        ``missing="raise"``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "metadata.csv").write_text(
    ...     "patient_id,age,gender,fitspatrick,region,diagnostic,itch,grew,bleed,elevation,img_id\\n"
    ...     "PAT_1,67,,2.0,FACE,BCC,True,True,False,True,PAT_1_1_10.png\\n")
    >>> (root / "imgs_part_1").mkdir()
    >>> _ = (root / "imgs_part_1" / "PAT_1_1_10.png").write_bytes(b"")
    >>> cases = load_pad_ufes20(root)
    >>> row = cases.iloc[0]
    >>> row["case_id"], row["diagnosis_group"], bool(row["malignant"]), int(row["fitzpatrick"])
    ('PAT_1_1_10', 'BCC', True, 2)
    >>> cases.loc[0, "descriptors"]
    'basal cell carcinoma; itching; growing; elevated; on the face; age 67'
    """
    _check_missing_mode(missing)
    root = Path(root).expanduser().absolute()
    path = _metadata_path(root, metadata, (METADATA,))
    meta = read_table(path, SOURCE, LAYOUT)
    require_columns(meta, REQUIRED, path, LAYOUT)

    diagnosis = _choices(meta, "diagnostic", list(GROUPS), path)
    names = _ids(meta, "img_id", path)
    case_id = names.str.replace(r"\.[A-Za-z0-9]+$", "", regex=True)
    patient = _group_ids(meta, "patient_id", "img:" + case_id, path, SOURCE)
    fitz = (_number(meta, "fitspatrick", path, 1, 6, integer=True, what="a Fitzpatrick type")
            if "fitspatrick" in meta.columns else pd.Series(np.nan, index=meta.index))
    age = (_number(meta, "age", path, 0, 130, what="an age in years")
           if "age" in meta.columns else None)
    parts = [diagnosis.map(DIAGNOSIS_NAMES)]
    for column, (yes, no) in FINDINGS.items():
        if column in meta.columns:
            flag = _flag(meta, column, path)
            parts.append(flag.map(lambda v, yes=yes, no=no: yes if v is True else no if v is False else ""))
    if "region" in meta.columns:
        region = _clean(meta["region"]).map(
            lambda v: "" if not isinstance(v, str) or v.lower() in _UNKNOWN else f"on the {v.lower().replace('_', ' ')}")
        parts.append(region)
    if age is not None:
        parts.append(_age_phrase(age))
    if "gender" in meta.columns:
        parts.append(_sex_phrase(meta["gender"]))
    if "biopsed" in meta.columns:
        parts.append(_flag(meta, "biopsed", path).map(lambda v: "biopsy-proven" if v is True else ""))

    image_paths, found = _resolve_images(root, names, path, SOURCE, missing, _IMAGE_SUFFIXES)

    cases = meta.drop(columns=["patient_id"])
    if age is not None:
        cases["age"] = age.to_numpy()
    cases.insert(0, "case_id", case_id.to_numpy())
    cases.insert(1, "patient_id", patient.to_numpy())
    cases.insert(2, "image_path", image_paths)
    cases.insert(3, "diagnosis", diagnosis.to_numpy())
    cases.insert(4, "diagnosis_group", diagnosis.map(GROUPS).to_numpy())
    cases.insert(5, "malignant", diagnosis.map(MALIGNANT).astype(bool).to_numpy())
    cases.insert(6, "fitzpatrick", fitz.to_numpy())
    cases["descriptors"] = _join(parts)
    return _finish(cases, found, missing, SOURCE, seed)
