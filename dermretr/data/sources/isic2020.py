"""Loader for the ISIC 2020 challenge training set (SIIM-ISIC melanoma classification).

Licence: CC BY-NC 4.0 (non-commercial; cite The ISIC 2020 Challenge Dataset, doi:10.34970/2020-ds01);
terms, restrictions and citation: docs/datasets.md.

Layout (the ISIC challenge release, unchanged; Kaggle's copy also works)::

    ROOT/ISIC_2020_Training_GroundTruth.csv   one row per image
    ROOT/train/ISIC_*.jpg                     images (ISIC_2020_Training_JPEG.zip);
                                              jpeg/train/ (Kaggle) or any sub-folder

The metadata file is the first of ``ISIC_2020_Training_GroundTruth.csv``,
``ISIC_2020_Training_GroundTruth_v2.csv`` (adds lesion_id) and Kaggle's
``train.csv`` found in ROOT.  Columns: image_name, patient_id, sex,
age_approx, anatom_site_general_challenge, diagnosis, benign_malignant,
target.  Required: ``image_name``, ``patient_id``, ``diagnosis`` and one of
``target`` / ``benign_malignant``; the others are used when present.  Image
``<image_name>.jpg`` is found by file name anywhere below ROOT (one walk;
letter case forgiven, with a warning; DICOM files are ignored).

Case table
----------
* ``case_id``: ``image_name``; ``patient_id``: ``patient_id`` (an empty one
  makes the image its own group, with a warning).
* ``diagnosis``: ``diagnosis`` as released (letter case forgiven, written
  with the release's spelling).  ``diagnosis_group``:

  ==================================  ===============
  diagnosis                           diagnosis_group
  ==================================  ===============
  nevus                               NEV
  atypical melanocytic proliferation  NEV
  melanoma                            MEL
  seborrheic keratosis                SK
  lichenoid keratosis                 SK
  solar lentigo                       SK
  lentigo NOS                         MISC
  cafe-au-lait macule                 MISC
  unknown                             UNK
  ==================================  ===============

  ``unknown`` (most of the set: benign lesions without a specific
  diagnosis) keeps its own group ``UNK`` so it does not dilute the others.
* ``malignant``: ``target`` (1/0); without ``target``, ``benign_malignant``.
* ``fitzpatrick``, ``monk``: NA (not recorded).
* ``split``: :func:`~dermretr.data.splits.group_split` by patient, stratified
  by ``diagnosis_group``; computed before images found missing are dropped.
* Every metadata column is kept; ``age_approx`` becomes a number and
  ``target`` an integer.

Text views (columns ``descriptors`` and ``findings``)
----------------------------------------------------
Two ``"; "``-joined strings of short phrases.  The caption ``descriptors``
holds, in this order:

* the diagnosis (``unknown`` is not mentioned; ``lentigo NOS`` -> ``lentigo``);
* anatom_site_general_challenge -> ``on the head or neck``, ``on the upper
  extremity``, ``on the lower extremity``, ``on the torso``, ``on the palms
  or soles``, ``on the mouth or genitals`` (empty: not mentioned);
* age_approx -> ``age 45`` (ISIC rounds ages to 5 years);
* sex -> ``male`` / ``female``.

``findings`` (what queries use) holds the site, age and sex phrases only (not
the diagnosis).

Loading is vectorised apart from one pass over the rows for the text view and
one ``os.walk`` of ROOT, so the full set (33,126 images) loads in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ._common import (
    add_text_views,
    bad_values,
    check_missing,
    check_seed,
    check_unique,
    clean_text,
    find_by_name,
    finish,
    group_ids,
    insert_case_columns,
    parse_choice,
    parse_number,
    read_metadata,
    require_columns,
    site_age_sex_phrases,
    split_suffix,
    unique_ids,
)

__all__ = ["load_isic2020", "REQUIRED", "LAYOUT", "GROUPS", "METADATA_FILES"]

SOURCE = "isic2020"
METADATA_FILES = ("ISIC_2020_Training_GroundTruth.csv", "ISIC_2020_Training_GroundTruth_v2.csv", "train.csv")
REQUIRED = ("image_name", "patient_id", "diagnosis")
LAYOUT = (
    "ROOT/ISIC_2020_Training_GroundTruth.csv (or ISIC_2020_Training_GroundTruth_v2.csv, or Kaggle's train.csv) "
    "with columns image_name, patient_id, sex, age_approx, anatom_site_general_challenge, diagnosis, "
    "benign_malignant, target, and the images <image_name>.jpg anywhere below ROOT (train/ or jpeg/train/)"
)
#: diagnosis -> diagnosis_group
GROUPS: dict[str, str] = {
    "nevus": "NEV",
    "melanoma": "MEL",
    "seborrheic keratosis": "SK",
    "lichenoid keratosis": "SK",
    "solar lentigo": "SK",
    "lentigo NOS": "MISC",
    "cafe-au-lait macule": "MISC",
    "atypical melanocytic proliferation": "NEV",
    "unknown": "UNK",
}
_ALIASES = {"café-au-lait macule": "cafe-au-lait macule", "cafe au lait macule": "cafe-au-lait macule"}
_NAMES = {"unknown": "", "lentigo NOS": "lentigo"}
_SITES = {
    "head/neck": "on the head or neck",
    "palms/soles": "on the palms or soles",
    "oral/genital": "on the mouth or genitals",
}
_IMAGE_SUFFIXES = (".jpg", ".jpeg")


def _malignant(meta: pd.DataFrame, path: Path) -> tuple[pd.Series, pd.Series | None]:
    """``malignant`` (bool/None) and the parsed ``target`` column (Int64) when present."""
    if "target" in meta.columns:
        raw = clean_text(meta["target"])
        num = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & ~num.isin([0, 1])
        if bad.any():
            raise bad_values(path, "target", meta["target"][bad], "expected 1 (malignant) or 0 (benign)",
                             problem="malformed values")
        target = num.astype("Int64")
        return target.astype("boolean"), target
    raw = clean_text(meta["benign_malignant"])
    key = raw.map(lambda v: v.lower() if isinstance(v, str) else v)
    bad = raw.notna() & ~key.isin(["benign", "malignant"])
    if bad.any():
        raise bad_values(path, "benign_malignant", meta["benign_malignant"][bad], "allowed values: benign, malignant")
    return key.map({"benign": False, "malignant": True}).astype("boolean"), None


def load_isic2020(
    root: str | os.PathLike,
    missing: str = "warn",
    seed: int = 0,
    metadata: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Load the ISIC 2020 training set into a validated case table.

    Parameters
    ----------
    root : path
        The folder holding the ground-truth CSV and the image folder.
    missing : {"warn", "raise", "keep"}
        Images listed but not found: drop those rows with one DataWarning,
        raise DermretrError, or keep the rows (``image_path`` is then
        ``ROOT/<image_name>.jpg``, where the image was expected).
    seed : int
        Seed of the patient-grouped split.
    metadata : path, optional
        The metadata file (relative to ``root`` or absolute; default: the
        first of :data:`METADATA_FILES` present).

    Returns
    -------
    DataFrame
        A validated case table with every metadata column kept and
        ``descriptors`` and ``findings`` columns (see the module docstring).

    Raises
    ------
    DermretrError
        Metadata file or required columns missing, unknown ``diagnosis``,
        malformed ``age_approx``/``target``/``benign_malignant``, image names
        that are not bare file names, duplicate ``image_name``, missing images
        with ``missing="raise"``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "ISIC_2020_Training_GroundTruth.csv").write_text(
    ...     "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target\\n"
    ...     "ISIC_2637011,IP_7279968,male,45.0,head/neck,unknown,benign,0\\n"
    ...     "ISIC_0149568,IP_0962375,female,55.0,upper extremity,melanoma,malignant,1\\n")
    >>> (root / "train").mkdir()
    >>> for name in ("ISIC_2637011", "ISIC_0149568"):
    ...     _ = (root / "train" / f"{name}.jpg").write_bytes(b"")
    >>> cases = load_isic2020(root)
    >>> cases["diagnosis_group"].tolist(), cases["malignant"].tolist()
    (['UNK', 'MEL'], [False, True])
    >>> cases["descriptors"].tolist()
    ['on the head or neck; age 45; male', 'melanoma; on the upper extremity; age 55; female']
    >>> cases["findings"].tolist()
    ['on the head or neck; age 45; male', 'on the upper extremity; age 55; female']
    """
    missing, seed = check_missing(missing), check_seed(seed)
    root, path, meta = read_metadata(root, metadata, METADATA_FILES, SOURCE, LAYOUT, required=REQUIRED)
    if "target" not in meta.columns and "benign_malignant" not in meta.columns:
        require_columns(meta, ["target", "benign_malignant"], path, LAYOUT + " (one of target, benign_malignant)")

    diagnosis = parse_choice(meta, "diagnosis", list(GROUPS), path, aliases=_ALIASES)
    image_name = unique_ids(meta, "image_name", path, "every image needs its name", "each image must be listed once")
    patient = group_ids(meta, "patient_id", "img:" + image_name, path, SOURCE)
    case_id, names = split_suffix(image_name, _IMAGE_SUFFIXES, ".jpg")
    check_unique(case_id, "image_name", path, "an image is listed twice, with and without its .jpg suffix")
    malignant, target = _malignant(meta, path)
    age = (parse_number(meta, "age_approx", path, 0, 130, what="an age in years")
           if "age_approx" in meta.columns else None)

    findings = site_age_sex_phrases(meta, "anatom_site_general_challenge", age, "sex", _SITES)

    image_paths, found = find_by_name(root, names, path, SOURCE, _IMAGE_SUFFIXES, "image_name")

    cases = meta.drop(columns=["patient_id", "diagnosis"])
    if age is not None:
        cases["age_approx"] = age.to_numpy()
    if target is not None:
        cases["target"] = target.to_numpy()
    insert_case_columns(cases, case_id=case_id, patient_id=patient, image_path=image_paths, diagnosis=diagnosis,
                        diagnosis_group=diagnosis.map(GROUPS), malignant=malignant)
    add_text_views(cases, findings, before=[diagnosis.map(lambda d: _NAMES.get(d, d))])
    return finish(cases, found, missing, source=SOURCE, seed=seed, path=path, root=root)
