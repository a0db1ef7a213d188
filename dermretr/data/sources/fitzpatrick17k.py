"""Loader for Fitzpatrick17k (Groh et al. 2021): clinical photographs with Fitzpatrick skin types.

Layout
------
``ROOT/fitzpatrick17k.csv`` as published in the ``mattgroh/fitzpatrick17k``
repository (columns ``md5hash``, ``fitzpatrick_scale``,
``fitzpatrick_centaur``, ``label``, ``nine_partition_label``,
``three_partition_label``, ``qc``, ``url``, ``url_alphanum``), and the images
anywhere under ``ROOT`` (found by name in one walk of the folder).  The
images are not distributed with the CSV: users download them from the
``url`` column, usually saving each as ``<md5hash>.jpg``.  The file name is
the ``pattern`` option (default ``"{md5hash}.jpg"``); any column may appear in
braces, e.g. ``"{url_alphanum}"``.  A pattern with a ``/`` is a path relative
to ``ROOT`` instead of a name looked up anywhere.  Partial downloads are the
norm (many URLs are dead), so rows whose image is missing are dropped with
one :class:`~dermretr._errors.DataWarning` by default.

Mapping
-------
* ``diagnosis`` = ``label`` (114 conditions);
* ``diagnosis_group`` = ``nine_partition_label`` (inflammatory,
  genodermatoses, benign dermal, benign epidermal, benign melanocyte,
  malignant cutaneous lymphoma, malignant dermal, malignant epidermal,
  malignant melanoma);
* ``malignant`` = ``three_partition_label == "malignant"`` (benign and
  non-neoplastic are False);
* ``fitzpatrick`` = ``fitzpatrick_scale`` (-1 = unknown -> NA);
  ``fitzpatrick_centaur`` and every other column of the CSV are kept as
  extra columns (text);
* ``case_id`` = ``patient_id`` = ``md5hash``: Fitzpatrick17k has no patient
  ids, so each image is its own patient.  The dataset is scraped from two
  atlases and contains near-duplicate images of the same lesion (see the
  publisher's ``image_deduplication.ipynb``), so splits are not guaranteed to
  be free of near-duplicates.  Repeated ``md5hash`` values (identical images)
  get ``-2``, ``-3``... appended to the case id and share a patient, hence a
  split;
* ``split``: :func:`~dermretr.data.splits.group_split` by ``patient_id``
  stratified by ``diagnosis_group``, computed from the CSV before missing
  images are dropped, so the split of an image does not depend on which
  images a user managed to download.

Text view (``descriptors``)
---------------------------
``"; "``-joined phrases: the condition label, the nine-partition label and
``"Fitzpatrick type IV skin"`` (Roman numerals) when the type is known, e.g.
``"psoriasis; inflammatory; Fitzpatrick type IV skin"``.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "fitzpatrick17k.csv").write_text(
...     "md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,"
...     "three_partition_label,qc,url,url_alphanum\\n"
...     "abc,6,5,kaposi sarcoma,malignant dermal,malignant,,http://x/a.jpg,httpxajpg.jpg\\n")
>>> _ = (root / "abc.jpg").write_bytes(b"")
>>> load(f"fitzpatrick17k:{root}").loc[0, "descriptors"]
'kaposi sarcoma; malignant dermal; Fitzpatrick type VI skin'
"""

from __future__ import annotations

import os
import string
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..._errors import DataWarning, DermretrError
from ..cases import CASE_COLUMNS, validate_cases
from ..splits import group_split
from ._common import FileIndex, describe_rows, read_table, require_columns, resolve_case_insensitive, safe_join

__all__ = ["load_fitzpatrick17k", "REQUIRED", "LAYOUT", "NINE_PARTITION", "THREE_PARTITION"]

SOURCE = "fitzpatrick17k"
CSV_NAME = "fitzpatrick17k.csv"
REQUIRED = ("md5hash", "fitzpatrick_scale", "label", "nine_partition_label", "three_partition_label")
LAYOUT = (
    "ROOT/fitzpatrick17k.csv (columns md5hash, fitzpatrick_scale, fitzpatrick_centaur, label, "
    "nine_partition_label, three_partition_label, qc, url, url_alphanum) and the downloaded images "
    "anywhere under ROOT, named by the pattern (default '{md5hash}.jpg')"
)
#: The nine-partition labels (the diagnosis groups).
NINE_PARTITION: tuple[str, ...] = (
    "inflammatory",
    "genodermatoses",
    "benign dermal",
    "benign epidermal",
    "benign melanocyte",
    "malignant cutaneous lymphoma",
    "malignant dermal",
    "malignant epidermal",
    "malignant melanoma",
)
#: The three-partition labels.
THREE_PARTITION: tuple[str, ...] = ("non-neoplastic", "benign", "malignant")
#: Image suffixes looked for when the pattern has none.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
#: Fitzpatrick types as Roman numerals, as used in the text views.
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
MISSING_OPTIONS = ("warn", "raise", "keep")
_MAX_EXAMPLES = 5


# -- helpers shared by the fitzpatrick17k, ddi and scin loaders -------------------------------


def _check_missing_option(missing: object) -> str:
    if not isinstance(missing, str) or missing not in MISSING_OPTIONS:
        raise DermretrError(
            f"missing must be one of {', '.join(repr(m) for m in MISSING_OPTIONS)} "
            f"(drop rows with a warning, stop with an error, keep the rows), got {missing!r}"
        )
    return missing


def _check_seed(seed: object) -> int:
    """The split seed as an int (the CLI passes loader options as text)."""
    try:
        if isinstance(seed, bool) or float(seed) != int(float(seed)):
            raise ValueError
        return int(float(seed))
    except (TypeError, ValueError, OverflowError):
        raise DermretrError(f"seed must be an integer, got {seed!r}") from None


def _handle_missing(cases: pd.DataFrame, found: Sequence[bool], missing: str, what: str,
                    root: Path, hint: str = "") -> pd.DataFrame:
    """Apply the ``missing`` policy to rows whose image file was not found."""
    found = np.asarray(found, dtype=bool)
    n_missing = int((~found).sum())
    if n_missing == 0 or missing == "keep":
        return cases
    examples = ", ".join(cases["image_path"][~found].astype(str).tolist()[:_MAX_EXAMPLES])
    more = ", ..." if n_missing > _MAX_EXAMPLES else ""
    message = f"{what}: {n_missing} of {len(cases)} image(s) not found under {root} (e.g. {examples}{more})"
    if missing == "raise":
        raise DermretrError(f"{message}; {hint}add the images, or pass missing='warn' to drop those rows")
    warnings.warn(f"{message}; dropped those rows", DataWarning, stacklevel=3)
    return cases[found]


def _rename_collisions(meta: pd.DataFrame, prefix: str, keep: Iterable[str] = ()) -> pd.DataFrame:
    """Rename original columns that clash with schema columns to ``<prefix>_<name>``."""
    keep = set(keep)
    clash = {c: f"{prefix}_{c}" for c in meta.columns
             if c not in keep and (c in CASE_COLUMNS or c == "descriptors")}
    return meta.rename(columns=clash)


def _bad_values(path: Path, column: str, bad: pd.Series, allowed: str) -> DermretrError:
    shown = describe_rows(f"{i} ({v!r})" for i, v in bad.items())
    return DermretrError(f"{path}: column {column!r} has unknown values at rows {shown}; allowed values: {allowed}")


def _empty_values(path: Path, column: str, empty: pd.Series, why: str) -> DermretrError:
    return DermretrError(f"{path}: column {column!r} is empty at rows {describe_rows(empty.index)}; {why}")


# -- Fitzpatrick17k ---------------------------------------------------------------------------


def _pattern_fields(pattern: object, columns: Sequence[str], path: Path) -> list[str]:
    if not isinstance(pattern, str) or not pattern.strip():
        raise DermretrError(f"pattern must be a non-empty string such as '{{md5hash}}.jpg', got {pattern!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise DermretrError(f"pattern {pattern!r} is not a valid file-name pattern ({exc}); "
                            "write column names in braces, e.g. '{md5hash}.jpg'") from None
    if not fields:
        raise DermretrError(f"pattern {pattern!r} names no column; write column names in braces, "
                            "e.g. '{md5hash}.jpg'")
    unknown = [f for f in fields if f not in columns]
    if unknown:
        raise DermretrError(f"pattern {pattern!r} names unknown column(s) {unknown}; columns of {path}: "
                            f"{list(columns)}")
    return list(dict.fromkeys(fields))


def _parse_fitzpatrick(meta: pd.DataFrame, path: Path) -> pd.Series:
    raw = meta["fitzpatrick_scale"]
    num = pd.to_numeric(raw.str.strip(), errors="coerce")
    ok = raw.isna() | num.isin([-1, 1, 2, 3, 4, 5, 6])
    if not ok.all():
        raise _bad_values(path, "fitzpatrick_scale", raw[~ok], "1, 2, 3, 4, 5, 6, -1 (unknown), or empty")
    return num.where(num > 0).astype("Int64")


def _parse_partition(meta: pd.DataFrame, column: str, allowed: Sequence[str], path: Path) -> pd.Series:
    raw = meta[column]
    empty = raw[raw.isna() | (raw.str.strip() == "")]
    if len(empty):
        raise _empty_values(path, column, empty, f"every image needs one of: {', '.join(allowed)}")
    norm = raw.map(lambda v: " ".join(v.strip().lower().split()))
    bad = raw[~norm.isin(allowed)]
    if len(bad):
        raise _bad_values(path, column, bad, ", ".join(allowed))
    return norm


def _unique_ids(ids: pd.Series) -> pd.Series:
    """Append -2, -3... to repeated ids (identical images listed twice)."""
    rank = ids.groupby(ids).cumcount() + 1
    return ids.where(rank == 1, ids + "-" + rank.astype(str))


def load_fitzpatrick17k(
    root: str | os.PathLike,
    missing: Literal["warn", "raise", "keep"] = "warn",
    seed: int = 0,
    pattern: str = "{md5hash}.jpg",
) -> pd.DataFrame:
    """Load a Fitzpatrick17k folder (the CSV plus the images a user downloaded).

    Parameters
    ----------
    root : path
        The folder holding ``fitzpatrick17k.csv``; images anywhere under it.
    missing : {"warn", "raise", "keep"}
        Rows whose image is not found: drop them with one DataWarning giving
        the count and examples (default), raise a DermretrError, or keep them
        with ``image_path`` set to where the image was expected
        (``ROOT/<name>``).
    seed : int
        Seed of the patient-grouped split stratified by the nine-partition label.
    pattern : str
        Image file name with CSV column names in braces (default
        ``"{md5hash}.jpg"``; e.g. ``"{url_alphanum}"``).  With a ``/`` it is a
        path relative to ``root``.

    Returns
    -------
    DataFrame
        A validated case table with ``descriptors`` and every CSV column kept.

    Raises
    ------
    DermretrError
        The CSV is missing, lacks a required column, has unknown skin types or
        partition labels, the pattern names an unknown column or produces a
        path escaping ``root``, or (``missing="raise"``) images are missing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "fitzpatrick17k.csv").write_text(
    ...     "md5hash,fitzpatrick_scale,label,nine_partition_label,three_partition_label\\n"
    ...     "abc,-1,psoriasis,inflammatory,non-neoplastic\\n")
    >>> _ = (root / "img").mkdir(), (root / "img" / "abc.jpg").write_bytes(b"")
    >>> cases = load_fitzpatrick17k(root)
    >>> cases.loc[0, "diagnosis_group"], bool(cases.loc[0, "malignant"]), cases.loc[0, "descriptors"]
    ('inflammatory', False, 'psoriasis; inflammatory')
    """
    missing = _check_missing_option(missing)
    seed = _check_seed(seed)
    root = Path(root).expanduser().resolve()
    path = root / CSV_NAME
    meta = read_table(path, SOURCE, LAYOUT)
    require_columns(meta, REQUIRED, path, LAYOUT)
    fields = _pattern_fields(pattern, list(meta.columns), path)

    md5 = meta["md5hash"]
    empty = md5[md5.isna() | (md5.str.strip() == "")]
    if len(empty):
        raise _empty_values(path, "md5hash", empty, "every image needs its md5hash")
    md5 = md5.str.strip()
    label = meta["label"]
    empty = label[label.isna() | (label.str.strip() == "")]
    if len(empty):
        raise _empty_values(path, "label", empty, "every image needs its condition label")
    label = label.map(lambda v: " ".join(v.split()))
    fitzpatrick = _parse_fitzpatrick(meta, path)
    group = _parse_partition(meta, "nine_partition_label", NINE_PARTITION, path)
    three = _parse_partition(meta, "three_partition_label", THREE_PARTITION, path)

    # image names from the pattern
    blank = meta[fields].isna().any(axis=1)
    if blank.any():
        raise DermretrError(
            f"{path}: rows {describe_rows(np.flatnonzero(blank))} have no value in column(s) {fields} "
            f"needed by the image-name pattern {pattern!r}"
        )
    values = {f: meta[f].str.strip().tolist() for f in fields}
    names = [pattern.format(**{f: values[f][i] for f in fields}) for i in range(len(meta))]
    image_paths: list[str] = []
    found: list[bool] = []
    index = None
    for i, name in enumerate(names):
        if "/" in name.replace("\\", "/"):
            expected = safe_join(root, name, path, i)
            hit = expected if expected.is_file() else resolve_case_insensitive(root, name.replace("\\", "/"))
        else:
            if name in ("", ".", "..") or Path(name).name != name:
                raise DermretrError(f"{path}, row {i}: image name {name!r} from pattern {pattern!r} is not a file name")
            if index is None:
                suffixes = {Path(n).suffix.lower() for n in names if "/" not in n}
                index = FileIndex(root, suffixes=None if "" in suffixes else suffixes | set(IMAGE_SUFFIXES))
            expected = root / name
            hit = index.find(name)
        found.append(hit is not None)
        image_paths.append(str(hit if hit is not None else expected))

    case_id = _unique_ids(md5)
    cases = _rename_collisions(meta, SOURCE)
    cases.insert(0, "case_id", case_id.to_numpy())
    cases.insert(1, "patient_id", md5.to_numpy())
    cases.insert(2, "image_path", image_paths)
    cases.insert(3, "diagnosis", label.to_numpy())
    cases.insert(4, "diagnosis_group", group.to_numpy())
    cases.insert(5, "malignant", (three == "malignant").to_numpy())
    cases.insert(6, "fitzpatrick", fitzpatrick.to_numpy())
    cases["descriptors"] = [
        "; ".join([lab, grp] + ([f"Fitzpatrick type {ROMAN[int(f)]} skin"] if pd.notna(f) else []))
        for lab, grp, f in zip(label, group, fitzpatrick)
    ]
    cases["split"] = group_split(cases, seed=seed).to_numpy()
    cases["source"] = SOURCE
    cases = _handle_missing(cases, found, missing, SOURCE, root,
                            hint=f"download them from the 'url' column and save them as {pattern!r}; ")
    return validate_cases(cases, copy=False)
