"""Loader for DDI, the Diverse Dermatology Images dataset (Daneshjou et al. 2022, Stanford AIMI).

Layout
------
``ROOT/ddi_metadata.csv`` with the columns ``DDI_ID``, ``DDI_file``,
``skin_tone``, ``malignant`` and ``disease``, as distributed; the images
(``000001.png`` ...) beside the CSV or in ``ROOT/images/``.  Older copies have
the column ``malignancy(malig=1)`` holding 1/0 instead of ``malignant``
holding True/False (both are accepted), and the CSV often starts with an
unnamed index column (``,DDI_ID,...``), which is dropped.

Mapping
-------
* ``diagnosis`` = ``disease`` (DDI's own hyphenated names such as
  ``melanoma-in-situ``);
* ``diagnosis_group`` = ``"malignant"`` or ``"benign"``: DDI publishes no
  grouping finer than its biopsy-confirmed malignancy flag;
* ``malignant`` from ``malignant`` (True/False) or ``malignancy(malig=1)`` (1/0);
* ``skin_tone_group`` (extra column): ``skin_tone`` 12, 34, 56 ->
  ``"I-II"``, ``"III-IV"``, ``"V-VI"``.  DDI only publishes these pairs, so
  ``fitzpatrick`` stays NA;
* ``case_id`` = ``"ddi-<DDI_ID>"``, ``patient_id`` = ``DDI_ID``: DDI publishes
  no patient ids, so each image is its own patient;
* ``split``: :func:`~dermretr.data.splits.group_split` by ``patient_id``
  stratified by ``diagnosis_group``, computed before missing images are dropped.

Every other column is kept (text); an original column whose name clashes with
the case-table schema (``malignant``) is kept as ``ddi_<name>``.

Text view (``descriptors``)
---------------------------
``"; "``-joined phrases: the disease with hyphens as spaces, ``"malignant"`` or
``"benign"``, and ``"Fitzpatrick type I-II skin"`` (``III-IV``, ``V-VI``) when
the skin tone is given, e.g. ``"melanoma in situ; malignant; Fitzpatrick type V-VI skin"``.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "ddi_metadata.csv").write_text(
...     ",DDI_ID,DDI_file,skin_tone,malignant,disease\\n0,1,000001.png,56,True,melanoma-in-situ\\n")
>>> _ = (root / "000001.png").write_bytes(b"")
>>> load(f"ddi:{root}").loc[0, ["case_id", "skin_tone_group", "descriptors"]].tolist()
['ddi-1', 'V-VI', 'melanoma in situ; malignant; Fitzpatrick type V-VI skin']
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import pandas as pd

from ..._errors import DermretrError
from ..cases import validate_cases
from ..splits import group_split
from ._common import describe_rows, read_table, require_columns, resolve_case_insensitive, safe_join
from .fitzpatrick17k import (  # helpers shared by the loaders
    _bad_values,
    _check_missing_option,
    _check_seed,
    _empty_values,
    _handle_missing,
    _rename_collisions,
)

__all__ = ["load_ddi", "REQUIRED", "LAYOUT", "SKIN_TONE_GROUPS"]

SOURCE = "ddi"
CSV_NAME = "ddi_metadata.csv"
REQUIRED = ("DDI_ID", "DDI_file", "skin_tone", "disease")
OLD_MALIGNANT = "malignancy(malig=1)"
LAYOUT = (
    "ROOT/ddi_metadata.csv (columns DDI_ID, DDI_file, skin_tone, malignant [or malignancy(malig=1)], "
    "disease; an unnamed leading index column is allowed) and the images beside it or in ROOT/images/"
)
#: DDI's skin_tone codes -> Fitzpatrick type ranges.
SKIN_TONE_GROUPS: dict[str, str] = {"12": "I-II", "34": "III-IV", "56": "V-VI"}
_TRUE = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}


def _parse_malignant(meta: pd.DataFrame, column: str, path: Path) -> pd.Series:
    raw = meta[column]
    norm = raw.map(lambda v: _TRUE.get(v.strip().lower()) if isinstance(v, str) else None)
    bad = raw[norm.isna()]
    if len(bad):
        allowed = "True, False" if column == "malignant" else "1, 0"
        raise _bad_values(path, column, bad, f"{allowed} (every image needs one)")
    return norm.astype(bool)


def _parse_skin_tone(meta: pd.DataFrame, path: Path) -> pd.Series:
    raw = meta["skin_tone"]

    def code(v):
        if not isinstance(v, str) or not v.strip():
            return None
        v = v.strip()
        return v[:-2] if v.endswith(".0") else v

    codes = raw.map(code)
    bad = raw[codes.notna() & ~codes.isin(list(SKIN_TONE_GROUPS))]
    if len(bad):
        raise _bad_values(path, "skin_tone", bad,
                          "12 (Fitzpatrick I-II), 34 (III-IV), 56 (V-VI), or empty when unknown")
    return codes.map(SKIN_TONE_GROUPS, na_action="ignore")


def load_ddi(
    root: str | os.PathLike,
    missing: Literal["warn", "raise", "keep"] = "warn",
    seed: int = 0,
) -> pd.DataFrame:
    """Load a DDI folder (``ddi_metadata.csv`` and its images) into a validated case table.

    Parameters
    ----------
    root : path
        The folder holding ``ddi_metadata.csv``; images beside it or in ``images/``.
    missing : {"warn", "raise", "keep"}
        Rows whose image is not found: drop them with one DataWarning giving
        the count and examples (default), raise a DermretrError, or keep them
        with ``image_path`` set to where the image was expected (in
        ``images/`` when that folder exists, else beside the CSV).
    seed : int
        Seed of the patient-grouped split stratified by malignancy.

    Returns
    -------
    DataFrame
        A validated case table with ``skin_tone_group`` and ``descriptors``;
        every CSV column is kept.

    Raises
    ------
    DermretrError
        The CSV is missing, lacks a required column, has unknown skin tones
        or malignancy values, empty or repeated ids, image paths escaping
        ``root``, or (``missing="raise"``) images are missing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "ddi_metadata.csv").write_text(
    ...     "DDI_ID,DDI_file,skin_tone,malignancy(malig=1),disease\\n7,000007.png,12,0,verruca-vulgaris\\n")
    >>> _ = (root / "images").mkdir(), (root / "images" / "000007.png").write_bytes(b"")
    >>> cases = load_ddi(root)
    >>> cases.loc[0, "diagnosis_group"], bool(cases.loc[0, "malignant"]), cases.loc[0, "descriptors"]
    ('benign', False, 'verruca vulgaris; benign; Fitzpatrick type I-II skin')
    """
    missing = _check_missing_option(missing)
    seed = _check_seed(seed)
    root = Path(root).expanduser().resolve()
    path = root / CSV_NAME
    meta = read_table(path, SOURCE, LAYOUT)
    meta = meta.drop(columns=[c for c in meta.columns if re.fullmatch(r"Unnamed: \d+", c)])
    require_columns(meta, REQUIRED, path, LAYOUT)
    if "malignant" in meta.columns:
        mal_col = "malignant"
    elif OLD_MALIGNANT in meta.columns:
        mal_col = OLD_MALIGNANT
    else:
        raise DermretrError(
            f"{path}: missing required column(s) ['malignant'] (or the older {OLD_MALIGNANT!r}); "
            f"found columns {list(meta.columns)}. Expected layout: {LAYOUT}"
        )
    for column, why in (("DDI_ID", "every image needs its id"), ("DDI_file", "every image needs its file name"),
                        ("disease", "every image needs its disease")):
        col = meta[column]
        empty = col[col.isna() | (col.str.strip() == "")]
        if len(empty):
            raise _empty_values(path, column, empty, why)
        meta[column] = col.str.strip()
    ids = meta["DDI_ID"]
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        shown = describe_rows(f"{i} ({v!r})" for i, v in dup.items())
        raise DermretrError(f"{path}: column 'DDI_ID' repeats values at rows {shown}; DDI ids must be unique")
    malignant = _parse_malignant(meta, mal_col, path)
    tone = _parse_skin_tone(meta, path)

    images = root / "images"
    image_paths: list[str] = []
    found: list[bool] = []
    for i, rel in enumerate(meta["DDI_file"]):
        hit = None
        for base in (root, images):
            candidate = safe_join(base, rel, path, i)
            if candidate.is_file():
                hit = candidate
                break
        if hit is None:
            rel_posix = str(rel).replace("\\", "/")
            hit = resolve_case_insensitive(root, rel_posix) or resolve_case_insensitive(root, f"images/{rel_posix}")
        expected = safe_join(images if images.is_dir() else root, rel, path, i)
        found.append(hit is not None)
        image_paths.append(str(hit if hit is not None else expected))

    disease = meta["disease"]
    group = malignant.map({True: "malignant", False: "benign"})
    cases = _rename_collisions(meta, SOURCE)
    cases.insert(0, "case_id", ("ddi-" + ids).to_numpy())
    cases.insert(1, "patient_id", ids.to_numpy())
    cases.insert(2, "image_path", image_paths)
    cases.insert(3, "diagnosis", disease.to_numpy())
    cases.insert(4, "diagnosis_group", group.to_numpy())
    cases.insert(5, "malignant", malignant.to_numpy())
    cases["skin_tone_group"] = tone.to_numpy()
    cases["descriptors"] = [
        "; ".join([" ".join(d.replace("-", " ").replace("_", " ").split()), g]
                  + ([f"Fitzpatrick type {t} skin"] if isinstance(t, str) else []))
        for d, g, t in zip(disease, group, tone)
    ]
    cases["split"] = group_split(cases, seed=seed).to_numpy()
    cases["source"] = SOURCE
    cases = _handle_missing(cases, found, missing, SOURCE, root)
    return validate_cases(cases, copy=False)
