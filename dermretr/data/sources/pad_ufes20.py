"""Loader for PAD-UFES-20 (smartphone clinical images with patient data, Pacheco et al. 2020).

Licence: not found in the sources available here; check https://data.mendeley.com/datasets/zr7vgbcyr2 before
use; terms, restrictions and citation: docs/datasets.md.

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

Text views (columns ``descriptors`` and ``findings``)
----------------------------------------------------
Two ``"; "``-joined strings of short phrases.  The caption ``descriptors``
holds, in this order:

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

``findings`` (what queries use) holds the symptoms, elevation, region, age and
gender phrases only: not the diagnosis, and not ``biopsy-proven`` (a biopsy is
part of reaching the diagnosis, and PAD-UFES-20 biopsies every cancer).

Fitzpatrick type is deliberately not part of either text (it is the attribute
fairness results are sliced by).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ._common import (
    add_text_views,
    check_missing,
    check_seed,
    check_unique,
    find_by_name,
    finish,
    group_ids,
    insert_case_columns,
    parse_choice,
    parse_flag,
    parse_number,
    read_metadata,
    site_age_sex_phrases,
    unique_ids,
)

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
        A validated case table with every ``metadata.csv`` column kept and
        ``descriptors`` and ``findings`` columns (see the module docstring).

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
    >>> cases.loc[0, "findings"]
    'itching; growing; elevated; on the face; age 67'
    """
    missing, seed = check_missing(missing), check_seed(seed)
    root, path, meta = read_metadata(root, metadata, (METADATA,), SOURCE, LAYOUT, required=REQUIRED)

    diagnosis = parse_choice(meta, "diagnostic", list(GROUPS), path)
    names = unique_ids(meta, "img_id", path, "every image needs its file name", "each image must be listed once")
    case_id = names.str.replace(r"\.[A-Za-z0-9]+$", "", regex=True)
    check_unique(case_id, "img_id", path, "case ids are the file names without their extension, so two images "
                 "may not differ only by it")
    patient = group_ids(meta, "patient_id", "img:" + case_id, path, SOURCE)
    fitz = (parse_number(meta, "fitspatrick", path, 1, 6, integer=True, what="a Fitzpatrick type")
            if "fitspatrick" in meta.columns else pd.Series(np.nan, index=meta.index))
    age = (parse_number(meta, "age", path, 0, 130, what="an age in years")
           if "age" in meta.columns else None)
    findings = []
    for column, (yes, no) in FINDINGS.items():
        if column in meta.columns:
            flag = parse_flag(meta, column, path)
            findings.append(flag.map(lambda v, yes=yes, no=no: yes if v is True else no if v is False else ""))
    findings += site_age_sex_phrases(meta, "region", age, "gender")
    biopsy = ([parse_flag(meta, "biopsed", path).map(lambda v: "biopsy-proven" if v is True else "")]
              if "biopsed" in meta.columns else [])

    image_paths, found = find_by_name(root, names, path, SOURCE, _IMAGE_SUFFIXES, "img_id")

    cases = meta.drop(columns=["patient_id"])
    if age is not None:
        cases["age"] = age.to_numpy()
    insert_case_columns(cases, case_id=case_id, patient_id=patient, image_path=image_paths, diagnosis=diagnosis,
                        diagnosis_group=diagnosis.map(GROUPS), malignant=diagnosis.map(MALIGNANT).astype(bool),
                        fitzpatrick=fitz)
    add_text_views(cases, findings, before=[diagnosis.map(DIAGNOSIS_NAMES)], after=biopsy)
    return finish(cases, found, missing, source=SOURCE, seed=seed, path=path, root=root)
