"""Loader for the Derm7pt layout (``meta/meta.csv`` + ``images/``), also used by DermSynth.

Text view: the seven 7-point criteria, rendered by :mod:`dermretr.data.vocab`
(``descriptors`` holds the canonical phrases of the present findings).
The 20 diagnoses map to the five groups BCC, NEV, MEL, MISC and SK as the
official derm7pt code does; Derm7pt has no patient ids, so each case is its
own patient.  Paths in ``derm``/``clinic`` are relative to ``images/``; the
official release mixes letter case (".JPG"/".jpg", "NEL"/"Nel"), so a path
that is missing exactly is resolved case-insensitively, with one warning.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data.synth import generate
>>> from dermretr.data.sources.derm7pt import load_derm7pt
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=6, image_size=64,
...                 workers=1, progress=False)
>>> bool(load_derm7pt(root)["diagnosis_group"].isin(["BCC", "NEV", "MEL", "MISC", "SK"]).all())
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
from ..cases import validate_cases
from ..splits import group_split
from ..vocab import CRITERIA, CRITERION_NAMES, DIAGNOSES, GROUP_OF_DIAGNOSIS, MALIGNANT_GROUPS, PHRASES
from ._common import (
    describe_rows,
    drop_missing_images,
    read_table,
    require_columns,
    resolve_case_insensitive,
    safe_join,
)

__all__ = ["load_derm7pt", "REQUIRED", "LAYOUT"]

REQUIRED = ("diagnosis", *CRITERION_NAMES, "derm")
LAYOUT = "ROOT/meta/meta.csv with Derm7pt's columns and ROOT/images/<derm path>"
_SPLIT_FILES = (("train", "train_indexes.csv"), ("val", "valid_indexes.csv"), ("test", "test_indexes.csv"))


def _norm(value: str) -> str:
    return " ".join(str(value).replace("_", " ").strip().lower().split())


def _read_split_files(files: Sequence[tuple[str, Path]], n: int) -> pd.Series:
    split = pd.Series([None] * n, dtype=object)
    for name, path in files:
        df = read_table(path, "split file", "one column 'indexes' of zero-based row positions")
        require_columns(df, ["indexes"], path, "one column 'indexes' of zero-based row positions")
        idx = pd.to_numeric(df["indexes"], errors="coerce")
        bad = idx.isna() | (idx < 0) | (idx >= n) | (idx % 1 != 0)
        if bad.any():
            raise DermretrError(
                f"{path}: rows {describe_rows(np.flatnonzero(bad))} are not row positions of meta.csv (0..{n - 1})"
            )
        idx = idx.astype(int)
        clash = [i for i in idx if split[i] is not None and split[i] != name]
        if clash:
            raise DermretrError(f"{path}: rows {describe_rows(clash)} of meta.csv are already in another split")
        split[idx.to_numpy()] = name
    return split


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
        Train, validation and test index files (default: the official
        ``meta/*_indexes.csv``; when absent, a stratified split is made).
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
    """
    root = Path(root).expanduser()
    if image not in ("derm", "clinic"):
        raise DermretrError(f"image must be 'derm' or 'clinic', got {image!r}")
    path = root / "meta" / "meta.csv"
    meta = read_table(path, "derm7pt", LAYOUT)
    require_columns(meta, [c for c in REQUIRED if c != "derm"] + [image], path, LAYOUT)
    n = len(meta)
    diag = meta["diagnosis"].map(lambda v: _norm(v) if isinstance(v, str) else v)
    bad = diag[~diag.isin(DIAGNOSES)]
    if len(bad):
        shown = describe_rows(f"{i} ({v!r})" for i, v in meta.loc[bad.index, "diagnosis"].items())
        raise DermretrError(
            f"{path}: unknown diagnosis at rows {shown}; "
            f"allowed values: {', '.join(DIAGNOSES)}"
        )
    for c in CRITERION_NAMES:
        vals = meta[c].map(lambda v: _norm(v) if isinstance(v, str) else v)
        wrong = vals[vals.notna() & ~vals.isin(CRITERIA[c])]
        if len(wrong):
            shown = describe_rows(f"{i} ({v!r})" for i, v in meta.loc[wrong.index, c].items())
            raise DermretrError(
                f"{path}: column {c!r} has unknown values at rows {shown}; allowed values: {', '.join(CRITERIA[c])}"
            )
        meta[c] = vals
    missing_img = meta[image].isna()
    if missing_img.any():
        raise DermretrError(f"{path}: column {image!r} is empty at rows {describe_rows(np.flatnonzero(missing_img))}")
    image_paths = _resolve_images(root / "images", meta[image].tolist(), path)
    if "case_id" in meta.columns and meta["case_id"].notna().all() and meta["case_id"].is_unique:
        case_id = meta["case_id"].astype(str)
    elif "case_num" in meta.columns and meta["case_num"].notna().all() and meta["case_num"].is_unique:
        case_id = source + "-" + meta["case_num"].astype(str)
    else:
        case_id = pd.Series([f"{source}-{i}" for i in range(n)])
    patient = meta["patient_id"].astype(str) if "patient_id" in meta.columns else case_id
    cases = meta.drop(columns=[c for c in ("case_id", "patient_id", "diagnosis", "split") if c in meta.columns])
    cases.insert(0, "case_id", case_id.to_numpy())
    cases.insert(1, "patient_id", patient.to_numpy())
    cases.insert(2, "image_path", image_paths)
    cases.insert(3, "diagnosis", diag.to_numpy())
    groups = diag.map(GROUP_OF_DIAGNOSIS)
    cases.insert(4, "diagnosis_group", groups.to_numpy())
    cases.insert(5, "malignant", groups.isin(MALIGNANT_GROUPS).to_numpy())
    for col in ("fitzpatrick", "monk"):
        if col in cases.columns:
            cases[col] = pd.to_numeric(cases[col], errors="coerce")
    for col in ("ita", "age", "seven_point_score", "case_num"):
        if col in cases.columns:
            cases[col] = pd.to_numeric(cases[col], errors="coerce")
    if split_files is not None:
        if len(split_files) != 3:
            raise DermretrError("split_files needs three paths: train, validation and test index files")
        files = list(zip(("train", "val", "test"), (Path(p) for p in split_files)))
    else:
        files = [(s, root / "meta" / f) for s, f in _SPLIT_FILES]
    if all(p.is_file() for _, p in files):
        split = _read_split_files(files, n)
        unassigned = split.isna()
        if unassigned.any():
            split[unassigned] = group_split(cases[unassigned.to_numpy()], seed=seed).to_numpy()
    elif split_files is not None:
        missing = [str(p) for _, p in files if not p.is_file()]
        raise DermretrError(f"split file(s) not found: {missing}")
    else:
        split = group_split(cases, seed=seed)
    cases["split"] = split.to_numpy()
    cases["source"] = source
    cases["descriptors"] = [
        "; ".join(PHRASES[c][v][0] for c, v in row.items() if isinstance(v, str) and v != "absent")
        for row in meta[list(CRITERION_NAMES)].to_dict("records")
    ]
    cases = drop_missing_images(cases, missing, path)
    return validate_cases(cases, copy=False)


def _resolve_images(images: Path, rels: list[str], path: Path) -> list[str]:
    """Absolute image paths; names differing only in letter case are resolved with one warning."""
    out = []
    repaired = 0
    for i, rel in enumerate(rels):
        full = safe_join(images, rel, path, i)
        if not full.is_file():
            found = resolve_case_insensitive(images, str(rel).strip().replace("\\", "/"))
            if found is not None:
                full = found
                repaired += 1
        out.append(str(full))
    if repaired:
        warnings.warn(
            f"{path}: {repaired} image path(s) matched files only when ignoring letter case "
            "(e.g. '.JPG' vs '.jpg'); resolved them",
            DataWarning,
            stacklevel=3,
        )
    return out
