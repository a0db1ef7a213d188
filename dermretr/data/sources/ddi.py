"""Loader for DDI, the Diverse Dermatology Images dataset (Daneshjou et al. 2022, Stanford AIMI).

Licence: not found in the sources available here; check https://ddi-dataset.github.io before use; terms,
restrictions and citation: docs/datasets.md.

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

Text views (``descriptors``, ``findings``)
------------------------------------------
``"; "``-joined phrases.

* ``descriptors`` (the caption; it names the diagnosis): the disease with
  hyphens as spaces, ``"malignant"`` or ``"benign"``, and
  ``"Fitzpatrick type I-II skin"`` (``III-IV``, ``V-VI``) when the skin tone is
  given, e.g. ``"melanoma in situ; malignant; Fitzpatrick type V-VI skin"``.
* ``findings`` (what queries use): **only the skin tone**
  (``"Fitzpatrick type V-VI skin"``), empty when it is not given.  DDI
  publishes nothing else that is known before a diagnosis (no site, history,
  symptoms or morphology), so a composed query on this source is in effect
  image-only plus the skin tone.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "ddi_metadata.csv").write_text(
...     ",DDI_ID,DDI_file,skin_tone,malignant,disease\\n0,1,000001.png,56,True,melanoma-in-situ\\n")
>>> _ = (root / "000001.png").write_bytes(b"")
>>> load(f"ddi:{root}").loc[0, ["case_id", "skin_tone_group", "descriptors", "findings"]].tolist()
['ddi-1', 'V-VI', 'melanoma in situ; malignant; Fitzpatrick type V-VI skin', 'Fitzpatrick type V-VI skin']
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import pandas as pd

from ..._errors import DermretrError
from ._common import (
    add_text_views,
    bad_values,
    check_missing,
    check_seed,
    dataset_root,
    finish,
    insert_case_columns,
    locate,
    read_table,
    rename_collisions,
    require_columns,
    required_text,
    safe_join,
    unique_ids,
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
        raise bad_values(path, column, bad, f"allowed values: {allowed} (every image needs one)")
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
        raise bad_values(path, "skin_tone", bad,
                         "allowed values: 12 (Fitzpatrick I-II), 34 (III-IV), 56 (V-VI), or empty when unknown")
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
        A validated case table with ``skin_tone_group``, ``descriptors`` and
        ``findings`` (see the module docstring); every CSV column is kept.

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
    missing, seed = check_missing(missing), check_seed(seed)
    root = dataset_root(root, SOURCE, LAYOUT).resolve()
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
    meta["DDI_ID"] = ids = unique_ids(meta, "DDI_ID", path, "every image needs its id", "DDI ids must be unique")
    meta["DDI_file"] = required_text(meta, "DDI_file", path, "every image needs its file name")
    meta["disease"] = disease = required_text(meta, "disease", path, "every image needs its disease")
    malignant = _parse_malignant(meta, mal_col, path)
    tone = _parse_skin_tone(meta, path)

    images = root / "images"
    image_paths: list[str] = []
    found: list[bool] = []
    for line, rel in meta["DDI_file"].items():
        in_root, hit = locate(root, [rel, f"images/{rel}"], path, line)
        expected = safe_join(images, rel, path, line) if images.is_dir() else in_root
        found.append(hit is not None)
        image_paths.append(str(hit if hit is not None else expected))

    group = malignant.map({True: "malignant", False: "benign"})
    cases = insert_case_columns(rename_collisions(meta, SOURCE), case_id="ddi-" + ids, patient_id=ids,
                                image_path=image_paths, diagnosis=disease, diagnosis_group=group,
                                malignant=malignant)
    cases["skin_tone_group"] = tone.to_numpy()
    words = disease.map(lambda d: " ".join(d.replace("-", " ").replace("_", " ").split()))
    skin = tone.map(lambda t: f"Fitzpatrick type {t} skin" if isinstance(t, str) else "")
    add_text_views(cases, [skin], before=[words, group])
    return finish(cases, found, missing, source=SOURCE, seed=seed, path=path, root=root)
