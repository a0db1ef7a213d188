"""Assembling a loader's case table: the text views and their shared phrases, then the last step of every loader.

The last step (:func:`finish`) makes the patient-grouped split, applies the missing-image policy and validates
the table.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..._errors import DataWarning, DermretrError
from ..cases import validate_cases
from ..splits import SPLIT_SOURCE, derived_split_source, group_split
from ._columns import UNKNOWN_TEXT, clean_text
from ._reading import Where

__all__ = [
    "join_phrases",
    "add_text_views",
    "age_phrases",
    "sex_phrases",
    "site_phrases",
    "site_age_sex_phrases",
    "insert_case_columns",
    "apply_missing",
    "finish",
]

_MAX_EXAMPLES = 5


# -- text view ---------------------------------------------------------------------------------


def join_phrases(parts: Sequence[Sequence[str] | pd.Series]) -> list[str]:
    """Join per-row phrases (one sequence per phrase kind) with ``"; "``, skipping empty ones."""
    columns = [p.tolist() if isinstance(p, pd.Series) else list(p) for p in parts]
    return ["; ".join(p for p in row if p) for row in zip(*columns)]


def add_text_views(cases: pd.DataFrame, findings: Sequence[Sequence[str] | pd.Series],
                   before: Sequence[Sequence[str] | pd.Series] = (),
                   after: Sequence[Sequence[str] | pd.Series] = ()) -> pd.DataFrame:
    """Write a loader's two text views: ``descriptors`` (the caption) and ``findings``.

    ``findings``, ``before`` and ``after`` are per-row phrase sequences as for
    :func:`join_phrases`; the caption is ``before + findings + after`` (the
    diagnosis and what only a diagnosis tells, such as how it was confirmed,
    go in ``before``/``after``), the findings column ``findings`` alone.  Rows
    without any phrase get ``""``.

    >>> cases = pd.DataFrame({"case_id": ["a", "b"]})
    >>> cases = add_text_views(cases, [["itching", ""], ["on the arm", ""]], before=[["eczema", "acne"]])
    >>> cases[["descriptors", "findings"]].values.tolist()
    [['eczema; itching; on the arm', 'itching; on the arm'], ['acne', '']]
    """
    blank = [[""] * len(cases)]  # so that no part at all still gives one (empty) text per row
    cases["descriptors"] = join_phrases([*before, *findings, *after, *blank])
    cases["findings"] = join_phrases([*findings, *blank])
    return cases


def age_phrases(age: pd.Series) -> pd.Series:
    """``"age 67"`` per row of a numeric age column (``""`` when unknown)."""
    return age.map(lambda a: f"age {a:g}" if a == a else "")


def sex_phrases(sex: pd.Series) -> pd.Series:
    """``"male"`` / ``"female"`` (also from ``m`` / ``f``, any letter case); anything else ``""``."""
    mapping = {"male": "male", "m": "male", "female": "female", "f": "female"}
    return clean_text(sex).map(lambda v: mapping.get(v.lower(), "") if isinstance(v, str) else "")


def site_phrases(site: pd.Series, special: Mapping[str, str] | None = None) -> pd.Series:
    """``"on the <site>"`` in lower case (``_`` as a space, ``a/b`` as ``a or b``); unknown -> ``""``.

    ``special`` maps lower-case sites to their own phrase (``{"acral": "on acral skin"}``).
    """
    special = special or {}

    def phrase(v):
        if not isinstance(v, str) or v.lower() in UNKNOWN_TEXT:
            return ""
        v = v.lower()
        return special[v] if v in special else "on the " + v.replace("/", " or ").replace("_", " ")

    return clean_text(site).map(phrase)


def site_age_sex_phrases(meta: pd.DataFrame, site: str, age: pd.Series | None, sex: str,
                         special_sites: Mapping[str, str] | None = None) -> list[pd.Series]:
    """The where / age / sex phrases of the text view, for those of the columns present.

    ``site`` and ``sex`` are column names, ``age`` the parsed ages (None when
    not recorded); see :func:`site_phrases`, :func:`age_phrases` and
    :func:`sex_phrases`.
    """
    parts = []
    if site in meta.columns:
        parts.append(site_phrases(meta[site], special_sites))
    if age is not None:
        parts.append(age_phrases(age))
    if sex in meta.columns:
        parts.append(sex_phrases(meta[sex]))
    return parts


# -- the last step -----------------------------------------------------------------------------


def insert_case_columns(cases: pd.DataFrame, **columns) -> pd.DataFrame:
    """Insert the given schema columns first, in order (Series are taken by position, not index)."""
    for i, (name, values) in enumerate(columns.items()):
        cases.insert(i, name, values.to_numpy() if isinstance(values, pd.Series) else values)
    return cases


def apply_missing(cases: pd.DataFrame, found: Sequence[bool] | np.ndarray, missing: str, what: str, path: Where,
                  root: Path, hint: str = "", stacklevel: int = 2) -> pd.DataFrame:
    """Apply the ``missing`` policy to the rows whose image was not found.

    "warn" drops them with one DataWarning (count and examples; ``stacklevel``
    counts from the caller, as if it called :func:`warnings.warn`), "raise"
    raises, "keep" keeps them; ``hint`` is put before the advice of the error.
    """
    present = np.asarray(found, dtype=bool)
    n_missing = int((~present).sum())
    if n_missing == 0 or missing == "keep":
        return cases
    prefix = str(root) + os.sep
    gone = [p[len(prefix):] if p.startswith(prefix) else p  # relative to root: shorter, and what the CSV says
            for p in cases["image_path"][~present].astype(str).tolist()[:_MAX_EXAMPLES]]
    examples = ", ".join(gone) + (", ..." if n_missing > _MAX_EXAMPLES else "")
    message = (f"{what}: {n_missing} of {len(cases)} image file(s) listed in {path} were not found "
               f"under {root} (e.g. {examples})")
    if missing == "raise":
        raise DermretrError(f"{message}; {hint}add the images, or pass missing='warn' to drop those rows")
    warnings.warn(f"{message}; dropped those rows (missing='keep' keeps them)", DataWarning,
                  stacklevel=stacklevel + 1)
    return cases[present]


def finish(cases: pd.DataFrame, found: Sequence[bool] | np.ndarray, missing: str, *, source: str, seed: int,
           path: Where, root: Path, hint: str = "", split: pd.Series | None = None,
           split_source: dict | None = None) -> pd.DataFrame:
    """Split, drop missing images, validate: the last step of every loader.

    The patient-grouped split stratified by ``diagnosis_group`` (or the given
    ``split``, made as ``split_source`` records) is made on every row, so the
    split of a case does not depend on which images exist; then ``source`` is
    set, :func:`apply_missing` applied, the table validated and where its split
    came from recorded in ``attrs`` (:func:`dermretr.data.splits.split_source`).
    """
    if split is None:
        split, split_source = group_split(cases, seed=seed), derived_split_source(seed=seed)
    cases["split"] = split.to_numpy()
    cases["source"] = source
    cases = apply_missing(cases, found, missing, source, path, root, hint, stacklevel=3)  # the loader's caller
    cases = validate_cases(cases, copy=False)
    cases.attrs[SPLIT_SOURCE] = split_source if split_source is not None else {"kind": "unknown"}
    return cases
