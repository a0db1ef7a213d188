"""Loader for HAM10000 (dermoscopic images of pigmented lesions, Tschandl et al. 2018).

Licence: not found in the sources available here; check https://doi.org/10.7910/DVN/DBW86T before use; terms,
restrictions and citation: docs/datasets.md.

Layout (the Harvard Dataverse / ISIC release, unchanged)::

    ROOT/HAM10000_metadata.csv                 one row per image
    ROOT/HAM10000_images_part_1/ISIC_*.jpg     images, in part_1/part_2 or any
    ROOT/HAM10000_images_part_2/ISIC_*.jpg     sub-folder (nested copies work)

``HAM10000_metadata.csv`` columns: lesion_id, image_id, dx, dx_type, age,
sex, localization and, in later releases, dataset.  Required: ``lesion_id``,
``image_id`` and ``dx``; the others are used when present.  Image
``<image_id>.jpg`` is found by file name anywhere below ROOT (one walk; letter
case forgiven, with a warning).

Case table
----------
* ``case_id``: ``image_id``.  ``patient_id``: ``lesion_id`` -- HAM10000 has no
  patient identifier, so the lesion (which may have several images) is the
  unit that splits keep together; two lesions of one patient can still land
  in different splits.
* ``diagnosis``: ``dx`` as released (letter case forgiven).
  ``diagnosis_group`` and ``malignant``:

  =====  =============================================  ===============  =========
  dx     meaning                                        diagnosis_group  malignant
  =====  =============================================  ===============  =========
  akiec  actinic keratoses and intraepithelial           AK               True
         carcinoma / Bowen's disease
  bcc    basal cell carcinoma                           BCC              True
  bkl    benign keratosis-like lesions                  SK               False
  df     dermatofibroma                                 MISC             False
  mel    melanoma                                       MEL              True
  nv     melanocytic nevi                               NEV              False
  vasc   vascular lesions                               MISC             False
  =====  =============================================  ===============  =========

* ``fitzpatrick``, ``monk``: NA (not recorded).
* ``split``: :func:`~dermretr.data.splits.group_split` by lesion, stratified by
  ``diagnosis_group``; computed before images found missing are dropped.
* Every metadata column is kept; ``age`` becomes a number (NA when empty).

Text views (columns ``descriptors`` and ``findings``)
----------------------------------------------------
Two ``"; "``-joined strings of short phrases.  The caption ``descriptors``
holds, in this order:

* dx -> ``actinic keratosis or Bowen's disease``, ``basal cell carcinoma``,
  ``benign keratosis``, ``dermatofibroma``, ``melanoma``,
  ``melanocytic nevus``, ``vascular lesion``;
* localization -> ``on the <localization>`` (``on the back``, ``on the
  lower extremity``; ``acral`` -> ``on acral skin``, ``genital`` -> ``on the
  genitals``; ``unknown`` is not mentioned);
* age -> ``age 45``; sex -> ``male`` / ``female`` (``unknown`` not mentioned);
* dx_type -> ``histopathology-confirmed`` (histo), ``confirmed by follow-up``
  (follow_up), ``expert consensus`` (consensus), ``confirmed by confocal
  microscopy`` (confocal); other values are not mentioned.

``findings`` (what queries use) holds the site, age and sex phrases only: not
the diagnosis, and not how it was confirmed (``dx_type`` follows from the
diagnosis: HAM10000 confirms every melanoma by histopathology, most nevi by
follow-up).
"""

from __future__ import annotations

import os

import pandas as pd

from ._common import (
    add_text_views,
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
    site_age_sex_phrases,
    split_suffix,
    unique_ids,
)

__all__ = ["load_ham10000", "REQUIRED", "LAYOUT", "GROUPS", "MALIGNANT", "DIAGNOSIS_NAMES"]

SOURCE = "ham10000"
METADATA = "HAM10000_metadata.csv"
REQUIRED = ("lesion_id", "image_id", "dx")
LAYOUT = (
    "ROOT/HAM10000_metadata.csv (columns lesion_id, image_id, dx, dx_type, age, sex, localization) "
    "and the images <image_id>.jpg anywhere below ROOT (HAM10000_images_part_1, _part_2)"
)
#: dx -> diagnosis_group
GROUPS: dict[str, str] = {"akiec": "AK", "bcc": "BCC", "bkl": "SK", "df": "MISC", "mel": "MEL", "nv": "NEV",
                          "vasc": "MISC"}
#: dx -> malignant (akiec includes intraepithelial carcinoma, hence malignant)
MALIGNANT: dict[str, bool] = {"akiec": True, "bcc": True, "bkl": False, "df": False, "mel": True, "nv": False,
                              "vasc": False}
#: dx -> the name used in the text view
DIAGNOSIS_NAMES: dict[str, str] = {
    "akiec": "actinic keratosis or Bowen's disease",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}
DX_TYPES: dict[str, str] = {
    "histo": "histopathology-confirmed",
    "follow_up": "confirmed by follow-up",
    "consensus": "expert consensus",
    "confocal": "confirmed by confocal microscopy",
}
_SITES = {"acral": "on acral skin", "genital": "on the genitals"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg")


def load_ham10000(
    root: str | os.PathLike,
    missing: str = "warn",
    seed: int = 0,
    metadata: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Load a HAM10000 folder into a validated case table.

    Parameters
    ----------
    root : path
        The folder holding ``HAM10000_metadata.csv`` and the image folders.
    missing : {"warn", "raise", "keep"}
        Images listed but not found: drop those rows with one DataWarning,
        raise DermretrError, or keep the rows (``image_path`` is then
        ``ROOT/<image_id>.jpg``, where the image was expected).
    seed : int
        Seed of the lesion-grouped split.
    metadata : path, optional
        Another metadata file (relative to ``root`` or absolute) with the same
        columns.

    Returns
    -------
    DataFrame
        A validated case table (``patient_id`` = ``lesion_id``) with every
        metadata column kept and ``descriptors`` and ``findings`` columns (see
        the module docstring).

    Raises
    ------
    DermretrError
        Metadata file or required columns missing, unknown ``dx``, malformed
        ``age``, image ids that are not bare file names, duplicate
        ``image_id``, missing images with ``missing="raise"``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "HAM10000_metadata.csv").write_text(
    ...     "lesion_id,image_id,dx,dx_type,age,sex,localization\\n"
    ...     "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp\\n"
    ...     "HAM_0000118,ISIC_0025030,bkl,histo,80.0,male,scalp\\n")
    >>> (root / "HAM10000_images_part_1").mkdir()
    >>> for name in ("ISIC_0027419", "ISIC_0025030"):
    ...     _ = (root / "HAM10000_images_part_1" / f"{name}.jpg").write_bytes(b"")
    >>> cases = load_ham10000(root)
    >>> cases["diagnosis_group"].tolist(), cases["split"].nunique()
    (['SK', 'SK'], 1)
    >>> cases.loc[0, "descriptors"]
    'benign keratosis; on the scalp; age 80; male; histopathology-confirmed'
    >>> cases.loc[0, "findings"]
    'on the scalp; age 80; male'
    """
    missing, seed = check_missing(missing), check_seed(seed)
    root, path, meta = read_metadata(root, metadata, (METADATA,), SOURCE, LAYOUT, required=REQUIRED)

    diagnosis = parse_choice(meta, "dx", list(GROUPS), path)
    image_id = unique_ids(meta, "image_id", path, "every image needs its id", "each image must be listed once")
    lesion = group_ids(meta, "lesion_id", "img:" + image_id, path, SOURCE)
    case_id, names = split_suffix(image_id, _IMAGE_SUFFIXES, ".jpg")
    check_unique(case_id, "image_id", path, "an image is listed twice, with and without its .jpg suffix")
    age = parse_number(meta, "age", path, 0, 130, what="an age in years") if "age" in meta.columns else None

    findings = site_age_sex_phrases(meta, "localization", age, "sex", _SITES)
    confirmed = ([clean_text(meta["dx_type"]).map(
        lambda v: DX_TYPES.get(v.lower().replace("-", "_"), "") if isinstance(v, str) else "")]
        if "dx_type" in meta.columns else [])

    image_paths, found = find_by_name(root, names, path, SOURCE, _IMAGE_SUFFIXES, "image_id")

    cases = meta.copy()
    if age is not None:
        cases["age"] = age.to_numpy()
    insert_case_columns(cases, case_id=case_id, patient_id=lesion, image_path=image_paths, diagnosis=diagnosis,
                        diagnosis_group=diagnosis.map(GROUPS), malignant=diagnosis.map(MALIGNANT).astype(bool))
    add_text_views(cases, findings, before=[diagnosis.map(DIAGNOSIS_NAMES)], after=confirmed)
    return finish(cases, found, missing, source=SOURCE, seed=seed, path=path, root=root)
