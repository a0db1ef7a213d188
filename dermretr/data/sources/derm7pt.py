"""Loader for the Derm7pt layout (``meta/meta.csv`` + ``images/``), also used by DermSynth.

Licence: not found in the sources available here; check https://derm.cs.sfu.ca before use; terms, restrictions
and citation: docs/datasets.md.

Text views: the seven 7-point criteria, rendered by :mod:`dermretr.data.vocab`
(:func:`~dermretr.data.vocab.case_text` renders them for queries and training
alike).  ``descriptors`` and ``findings`` both hold the canonical phrases of
the present criteria, ``"; "``-joined (empty when all are absent or unknown):
the criteria are findings, and neither column names the diagnosis.  Other
columns of ``meta.csv`` (``management``, ``notes``...) are not part of any text.
The 20 diagnoses map to the five groups BCC, NEV, MEL, MISC and SK as the
official derm7pt code does; Derm7pt has no patient ids, so each case is its
own patient.  Paths in ``derm``/``clinic`` are relative to ``images/``; the
official release mixes letter case (".JPG"/".jpg", "NEL"/"Nel"), so a path
that is missing exactly is resolved case-insensitively, with one warning.

Case ids: the table's own ``case_id`` column when every row has one (DermSynth
and user tables; repeated ids are an error, never renumbered: modification
triplets refer to them), else ``<source>-<case_num>`` (the official release's
``case_id`` column is mostly empty), else ``<source>-<row>``.
Optional columns ``fitzpatrick`` (1-6 or I-VI, see
:data:`~dermretr.data.sources._common.FITZPATRICK_SPELLINGS`), ``monk``,
``age``, ``ita`` and ``seven_point_score`` are parsed; a malformed value is an
error naming its line in ``meta.csv``, an empty cell means unknown.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data.synth import generate
>>> from dermretr.data.sources.derm7pt import load_derm7pt
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=6, image_size=64,
...                 workers=1, progress=False)
>>> cases = load_derm7pt(root)
>>> bool(cases["diagnosis_group"].isin(["BCC", "NEV", "MEL", "MISC", "SK"]).all())
True
>>> bool((cases["findings"] == cases["descriptors"]).all())
True
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..._errors import DataWarning, DermretrError
from ..splits import derived_split_source, describe_split_source, group_split
from ..vocab import CRITERIA, CRITERION_NAMES, DIAGNOSES, GROUP_OF_DIAGNOSIS, MALIGNANT_GROUPS, PHRASES
from ._common import (
    add_text_views,
    bad_values,
    check_missing,
    check_path,
    check_seed,
    check_text,
    check_unique,
    dataset_root,
    empty_values,
    finish,
    group_ids,
    insert_case_columns,
    locate_all,
    parse_fitzpatrick,
    parse_number,
    read_table,
    required_text,
    unique_ids,
    warn_case_mismatches,
)

__all__ = ["load_derm7pt", "REQUIRED", "LAYOUT"]

REQUIRED = ("diagnosis", *CRITERION_NAMES, "derm")
LAYOUT = "ROOT/meta/meta.csv with Derm7pt's columns and ROOT/images/<derm path>"
_SPLIT_LAYOUT = "one column 'indexes' of zero-based row positions"
_SPLIT_FILES = (("train", "train_indexes.csv"), ("val", "valid_indexes.csv"), ("test", "test_indexes.csv"))


def _norm(value: str) -> str:
    return " ".join(str(value).replace("_", " ").strip().lower().split())


def _vocabulary(meta: pd.DataFrame, column: str, allowed: Sequence[str], path: Path, required: bool) -> pd.Series:
    """``column`` normalised (letter case, ``_`` and spaces forgiven); unknown (or, if required, empty) -> error."""
    values = meta[column].map(lambda v: _norm(v) if isinstance(v, str) else v)
    bad = ~values.isin(allowed) & (values.notna() | required)
    if bad.any():
        raise bad_values(path, column, meta[column][bad], f"allowed values: {', '.join(allowed)}")
    return values


def _read_split_files(files: Sequence[tuple[str, Path]], n: int) -> pd.Series:
    """The split of each row of meta.csv (by position), from index files listing positions (errors name lines)."""
    split = pd.Series([None] * n, dtype=object)
    positions = (f"position of a row of meta.csv, 0..{n - 1} (0: its first row under the header; blank lines and "
                 "rows whose cells are all empty do not count)")
    seen: dict[str, Path] = {}
    for name, path in files:
        df = read_table(path, "split file", _SPLIT_LAYOUT, required=["indexes"], allow_empty=True)
        idx = pd.to_numeric(df["indexes"], errors="coerce")
        bad = idx.isna() | (idx < 0) | (idx >= n) | (idx % 1 != 0)
        if bad.any():
            raise bad_values(path, "indexes", df["indexes"][bad], f"each value is the {positions}",
                             problem="values that are not row positions of meta.csv")
        idx = idx.astype(int)
        clash = idx.map(lambda i: split[i] is not None and split[i] != name)
        if clash.any():
            other = seen[split[int(idx[clash].iloc[0])]]
            raise bad_values(path, "indexes", df["indexes"][clash], "each row of meta.csv may be in one split only",
                             problem=f"positions of rows of meta.csv that {other.name} already lists")
        split[idx.to_numpy()] = name
        seen[name] = path
    return split


def _case_ids(meta: pd.DataFrame, path: Path, source: str) -> pd.Series:
    """The case ids: the table's ``case_id`` when every row has one, else ``<source>-<case_num>``, else rows.

    A complete ``case_id`` column (DermSynth, user tables) is used as it is and
    must be unique: modification triplets and results refer to those ids, so
    they are never renumbered.  The official Derm7pt release has a ``case_id``
    column that is mostly empty; it is then ignored for ``case_num``.  A
    DermSynth folder (``source="synthetic"``) always has a complete one.
    """
    why = "case ids must be unique: modification triplets and results refer to them"
    if "case_id" in meta.columns:
        given = meta["case_id"].map(lambda v: v.strip() if isinstance(v, str) else v)
        given = given.where(given.notna() & (given != ""), None)
        if given.notna().all() or source == "synthetic":
            return unique_ids(meta, "case_id", path, "every case needs its id", why)
    if "case_num" in meta.columns:
        num = required_text(meta, "case_num", path, "every case needs its number")
        check_unique(num, "case_num", path, why)
        return source + "-" + num
    return pd.Series([f"{source}-{i}" for i in range(len(meta))], index=meta.index, dtype=object)


def _split_file_paths(split_files: object) -> list[tuple[str, Path]] | None:
    """The three split files (a sequence of paths, or one string of three comma-separated paths)."""
    if split_files is None:
        return None
    if isinstance(split_files, str):
        split_files = [p.strip() for p in split_files.split(",")]
    if isinstance(split_files, os.PathLike) or not isinstance(split_files, Sequence) or len(split_files) != 3:
        raise DermretrError("split_files needs three paths: train, validation and test index files, relative to "
                            "the dataset folder unless absolute (a list, or one string 'TRAIN,VAL,TEST', e.g. "
                            f"-o split_files=meta/train.csv,meta/valid.csv,meta/test.csv), got {split_files!r}")
    return [(name, check_path(p, f"split_files[{i}]")) for i, (name, p) in
            enumerate(zip(("train", "val", "test"), split_files))]


def _shown(path: Path, root: Path) -> str:
    """A split file as recorded: relative to the dataset folder when inside it, else absolute (``/`` separated)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _split(cases: pd.DataFrame, n: int, files: list[tuple[str, Path]] | None, root: Path, source: str,
           seed: int) -> tuple[pd.Series, dict]:
    """The split of every row of meta.csv and where it came from (see :func:`dermretr.data.splits.split_source`).

    ``files`` given (the ``split_files`` option) must exist; the publisher's are
    used when all three are there, else the split is derived, with a warning:
    Derm7pt (and DermSynth) ship theirs, so a derived split is not the published one.
    """
    given = files is not None
    if files is None:
        files = [(s, root / "meta" / f) for s, f in _SPLIT_FILES]
    else:
        files = [(s, p if p.is_absolute() else root / p) for s, p in files]
        for i, (_, p) in enumerate(files):
            if not p.is_file():
                what = "is not a file" if p.exists() else "not found"
                raise DermretrError(f"{source}: split file {p} {what} (split_files[{i}]; split_files are the train, "
                                    f"validation and test index files, relative to the dataset folder {root} unless "
                                    "absolute)")
    derived = derived_split_source(seed=seed)
    if not all(p.is_file() for _, p in files):
        absent = ", ".join(p.name for _, p in files if not p.is_file())
        how = describe_split_source(derived)
        warnings.warn(f"{source}: no split files in {root / 'meta'} ({absent} not found), so the split is {how}, "
                      "not the published one; pass split_files (-o split_files=TRAIN,VAL,TEST) to use split files",
                      DataWarning, stacklevel=3)
        return group_split(cases, seed=seed), derived
    split = _read_split_files(files, n)
    record: dict = {"kind": "split_files" if given else "publisher", "files": [_shown(p, root) for _, p in files]}
    unassigned = split.isna()
    if unassigned.any():
        split[unassigned] = group_split(cases[unassigned.to_numpy()], seed=seed).to_numpy()
        record["rest"] = {"rows": int(unassigned.sum()), **derived}
        warnings.warn(f"{source}: {int(unassigned.sum())} of {n} rows of meta.csv are in none of the split files "
                      f"({', '.join(record['files'])}): their split is {describe_split_source(derived)}",
                      DataWarning, stacklevel=3)
    return split, record


_NUMBERS = {  # optional numeric columns: malformed values are an error, empty cells NA
    "fitzpatrick": parse_fitzpatrick,
    "monk": lambda m, c, p: parse_number(m, c, p, 1, 10, integer=True, what="a Monk skin tone").astype("Int64"),
    "age": lambda m, c, p: parse_number(m, c, p, 0, 130, what="an age in years"),
    "ita": lambda m, c, p: parse_number(m, c, p, -180, 180, what="an ITA angle in degrees"),
    "seven_point_score": lambda m, c, p: parse_number(m, c, p, -np.inf, np.inf, integer=True,
                                                      what="an integer 7-point score"),
    "case_num": lambda m, c, p: parse_number(m, c, p, -np.inf, np.inf, integer=True, what="an integer"),
}


def load_derm7pt(
    root: str | os.PathLike,
    image: str = "derm",
    split_files: Sequence[str | os.PathLike] | None = None,
    source: str = "derm7pt",
    seed: int = 0,
    missing: str = "warn",
) -> pd.DataFrame:
    """Load a Derm7pt-layout folder into a validated case table.

    Parameters
    ----------
    root : path
        The folder holding ``meta/`` and ``images/``.
    image : {"derm", "clinic"}
        Which image of each case to use.
    split_files : three paths, optional
        Train, validation and test index files (one column ``indexes`` of
        zero-based rows of ``meta.csv``), as a list or one string
        ``"TRAIN,VAL,TEST"`` (``-o split_files=TRAIN,VAL,TEST`` on the command
        line); relative paths are relative to ``root``.  Default: the official
        ``meta/train_indexes.csv``, ``meta/valid_indexes.csv`` and
        ``meta/test_indexes.csv``; when they are absent a stratified split is
        derived (:func:`~dermretr.data.splits.group_split`) with one warning.
        ``cases.attrs["split_source"]`` records which
        (:func:`~dermretr.data.splits.split_source`).
    source : str
        Value of the ``source`` column.
    seed : int
        Seed of the stratified split made when no split files exist.
    missing : {"warn", "raise", "keep"}
        Cases whose image file is missing: dropped with one warning (default),
        an error, or kept (``dermretr info`` counts them).

    Returns
    -------
    DataFrame
        A validated case table; every column of ``meta.csv`` is kept.

    Raises
    ------
    DermretrError
        The folder or ``meta/meta.csv`` is missing, empty, not UTF-8 or lacks
        a required column; unknown diagnoses or criterion values; malformed
        ``fitzpatrick`` (1-6, I-VI), ``monk``, ``age``, ``ita`` or score
        values; a repeated ``case_id`` or ``case_num`` (a
        :class:`~dermretr._errors.CaseTableError`: ids are never renumbered);
        image paths escaping ``root``; missing images with ``missing="raise"``.
    """
    missing, seed = check_missing(missing), check_seed(seed)
    source = check_text(source, "source")
    if not isinstance(image, str) or image not in ("derm", "clinic"):
        raise DermretrError(f"image must be 'derm' or 'clinic', got {image!r}")
    files = _split_file_paths(split_files)
    root = dataset_root(root, source, LAYOUT)
    path = root / "meta" / "meta.csv"
    meta = read_table(path, source, LAYOUT, required=[c for c in REQUIRED if c != "derm"] + [image])
    n = len(meta)
    diag = _vocabulary(meta, "diagnosis", DIAGNOSES, path, required=True)
    for c in CRITERION_NAMES:
        meta[c] = _vocabulary(meta, c, CRITERIA[c], path, required=False)
    missing_img = meta[image].isna()
    if missing_img.any():
        raise empty_values(path, image, meta[image][missing_img], "every case needs its image path")
    numbers = {c: parse(meta, c, path) for c, parse in _NUMBERS.items() if c in meta.columns}
    case_id = _case_ids(meta, path, source)
    image_paths, found, repaired = locate_all(root / "images", meta[image], path)
    warn_case_mismatches(repaired, source, path)
    patient = (group_ids(meta, "patient_id", case_id, path, source, stacklevel=2)
               if "patient_id" in meta.columns else case_id)
    groups = diag.map(GROUP_OF_DIAGNOSIS)
    cases = insert_case_columns(
        meta.drop(columns=[c for c in ("case_id", "patient_id", "diagnosis", "split") if c in meta.columns]),
        case_id=case_id, patient_id=patient, image_path=image_paths, diagnosis=diag, diagnosis_group=groups,
        malignant=groups.isin(MALIGNANT_GROUPS))
    for col, values in numbers.items():
        cases[col] = values.to_numpy()
    split, record = _split(cases, n, files, root, source, seed)
    add_text_views(cases, [[
        "; ".join(PHRASES[c][v][0] for c, v in row.items() if isinstance(v, str) and v != "absent")
        for row in meta[list(CRITERION_NAMES)].to_dict("records")
    ]])
    return finish(cases, found, missing, source=source, seed=seed, path=path, root=root, split=split,
                  split_source=record)

