"""Loader for Fitzpatrick17k (Groh et al. 2021): clinical photographs with Fitzpatrick skin types.

Licence: CC BY-NC-SA 3.0 Unported (non-commercial, share-alike); terms, restrictions and citation:
docs/datasets.md.

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

Text views (``descriptors``, ``findings``)
------------------------------------------
``"; "``-joined phrases.

* ``descriptors`` (the caption; it names the diagnosis): the condition label,
  the nine-partition label and ``"Fitzpatrick type IV skin"`` (Roman
  numerals) when the type is known, e.g.
  ``"psoriasis; inflammatory; Fitzpatrick type IV skin"``.
* ``findings`` (what queries use): **only the skin type**
  (``"Fitzpatrick type IV skin"``), empty when it is unknown.  Fitzpatrick17k
  publishes nothing else that is known before a diagnosis (no site, history,
  symptoms or morphology), so a composed query on this source is in effect
  image-only plus the skin type.

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
>>> load(f"fitzpatrick17k:{root}").loc[0, ["descriptors", "findings"]].tolist()
['kaposi sarcoma; malignant dermal; Fitzpatrick type VI skin', 'Fitzpatrick type VI skin']
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from ..._errors import DermretrError
from ._common import (
    FileIndex,
    add_text_views,
    bad_values,
    check_missing,
    check_seed,
    dataset_root,
    describe_lines,
    finish,
    insert_case_columns,
    locate,
    read_table,
    rename_collisions,
    required_text,
)

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


def _pattern_fields(pattern: object, columns: Sequence[str], path: Path) -> list[str]:
    if not isinstance(pattern, str) or not pattern.strip():
        raise DermretrError(f"pattern must be a non-empty string such as '{{md5hash}}.jpg', got {pattern!r}")
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise DermretrError(f"pattern {pattern!r} is not a valid file-name pattern ({exc}); "
                            "write column names in braces, e.g. '{md5hash}.jpg'") from None
    fancy = [f"{{{f}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}" for f, spec, conv in parsed
             if spec or conv]
    if fancy:
        raise DermretrError(f"pattern {pattern!r} uses format options ({', '.join(fancy)}); write plain column "
                            "names in braces, e.g. '{md5hash}.jpg'")
    fields = [f for f, _, _ in parsed]
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
        raise bad_values(path, "fitzpatrick_scale", raw[~ok],
                         "allowed values: 1, 2, 3, 4, 5, 6, -1 (unknown), or empty")
    return num.where(num > 0).astype("Int64")


def _parse_partition(meta: pd.DataFrame, column: str, allowed: Sequence[str], path: Path) -> pd.Series:
    text = required_text(meta, column, path, f"every image needs one of: {', '.join(allowed)}")
    norm = text.map(lambda v: " ".join(v.lower().split()))
    bad = meta[column][~norm.isin(allowed)]
    if len(bad):
        raise bad_values(path, column, bad, f"allowed values: {', '.join(allowed)}")
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
        A validated case table with ``descriptors`` and ``findings`` (see the
        module docstring) and every CSV column kept.

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
    >>> cases.loc[0, "findings"]  # the skin type is unknown: nothing is known before the diagnosis
    ''
    """
    missing, seed = check_missing(missing), check_seed(seed)
    root = dataset_root(root, SOURCE, LAYOUT).resolve()
    path = root / CSV_NAME
    meta = read_table(path, SOURCE, LAYOUT, required=REQUIRED)
    fields = _pattern_fields(pattern, list(meta.columns), path)

    md5 = required_text(meta, "md5hash", path, "every image needs its md5hash")
    label = required_text(meta, "label", path, "every image needs its condition label")
    label = label.map(lambda v: " ".join(v.split()))
    fitzpatrick = _parse_fitzpatrick(meta, path)
    group = _parse_partition(meta, "nine_partition_label", NINE_PARTITION, path)
    three = _parse_partition(meta, "three_partition_label", THREE_PARTITION, path)

    # image names from the pattern
    blank = meta[fields].isna().any(axis=1)
    if blank.any():
        raise DermretrError(
            f"{path}: column(s) {fields} needed by the image-name pattern {pattern!r} have no value at "
            f"{describe_lines(blank.index[blank.to_numpy()])}"
        )
    values = {f: meta[f].str.strip().tolist() for f in fields}
    names = [pattern.format(**{f: values[f][i] for f in fields}) for i in range(len(meta))]
    lines = meta.index.tolist()
    image_paths: list[str] = []
    found: list[bool] = []
    index = None
    hit: Path | str | None  # a path from locate(), a string from FileIndex.find()
    for line, name in zip(lines, names):
        if "/" in name.replace("\\", "/"):
            expected, hit = locate(root, [name], path, line)
        else:
            if name in ("", ".", "..") or Path(name).name != name:
                raise DermretrError(f"{path}, line {line}: image name {name!r} from pattern {pattern!r} is not a "
                                    "file name")
            if index is None:
                suffixes = {Path(n).suffix.lower() for n in names if "/" not in n}
                index = FileIndex(root, suffixes=None if "" in suffixes else suffixes | set(IMAGE_SUFFIXES))
            expected, hit = root / name, index.find(name)
        found.append(hit is not None)
        image_paths.append(str(hit if hit is not None else expected))

    cases = insert_case_columns(
        rename_collisions(meta, SOURCE), case_id=_unique_ids(md5), patient_id=md5, image_path=image_paths,
        diagnosis=label, diagnosis_group=group, malignant=three == "malignant", fitzpatrick=fitzpatrick)
    roman = fitzpatrick.map(lambda f: f"Fitzpatrick type {ROMAN[int(f)]} skin" if pd.notna(f) else "")
    add_text_views(cases, [roman], before=[label, group])
    return finish(cases, found, missing, source=SOURCE, seed=seed, path=path, root=root,
                  hint=f"download them from the 'url' column and save them as {pattern!r}; ")
