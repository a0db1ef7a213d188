"""Filters on case-table columns: the one implementation of which cases a search may return."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .._checks import show
from .._errors import DermretrError

__all__ = ["filter_mask"]

_TRUTH = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def filter_mask(cases: pd.DataFrame, filters: Mapping[str, Any] | None) -> np.ndarray | None:
    """Boolean mask of the rows of ``cases`` passing ``filters`` (None: no filter, every row passes).

    ``filters`` maps a column to its allowed values (one value or a list); a row passes when every
    column holds one of its allowed values.  Text is compared stripped and case-insensitively
    (``"mel"`` matches ``"MEL"``); a numeric column compares numbers (``"5"`` matches ``5``); a
    boolean column takes ``true/false``, ``yes/no`` or ``1/0``; ``None`` (or NaN) allows missing
    values.  An unknown column, an empty list of values or a value that cannot be compared is a
    :class:`~dermretr.DermretrError` naming the column (and the known columns).

    Examples
    --------
    >>> cases = pd.DataFrame({"diagnosis_group": ["MEL", "NEV", "mel "], "fitzpatrick": [5, 2, 6]})
    >>> filter_mask(cases, {"diagnosis_group": "mel", "fitzpatrick": ["5", 6]}).tolist()
    [True, False, True]
    >>> filter_mask(cases, {}) is None
    True
    >>> filter_mask(cases, {"skin": [5]})
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: cannot filter on unknown column 'skin'; columns: diagnosis_group, fitzpatrick
    """
    if filters is None or (isinstance(filters, Mapping) and not filters):
        return None
    if not isinstance(filters, Mapping):
        raise DermretrError(f"filters must be a dict column -> allowed values, e.g. {{'fitzpatrick': [5, 6]}}, "
                            f"got {show(filters)}")
    mask = np.ones(len(cases), dtype=bool)
    for column, values in filters.items():
        if not isinstance(column, str) or column not in cases.columns:
            raise DermretrError(f"cannot filter on unknown column {column!r}; columns: "
                                f"{', '.join(map(str, cases.columns))}")
        if isinstance(values, Mapping):
            raise DermretrError(f"filter {column!r}: the allowed values must be a list, got {show(values)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            values = [values]
        values = list(values)
        if not values:
            raise DermretrError(f"filter {column!r} has no allowed values")
        for v in values:
            if not (v is None or isinstance(v, (str, numbers.Number, np.bool_, np.number))):
                raise DermretrError(f"filter {column!r}: each allowed value must be a str, number or bool, "
                                    f"got {show(v)}")
        mask &= _match(cases[column], values, column)
    return mask


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _match(series: pd.Series, values: list, column: str) -> np.ndarray:
    """Rows of ``series`` holding one of ``values`` (compared as the column's type asks)."""
    want_na = any(_is_missing(v) for v in values)
    values = [v for v in values if not _is_missing(v)]
    hit = series.isna().to_numpy() if want_na else np.zeros(len(series), dtype=bool)
    if not values:
        return hit
    if pd.api.types.is_bool_dtype(series.dtype):
        wanted: set[bool] = set()
        for v in values:
            key = str(v).strip().lower()
            if key not in _TRUTH:
                raise DermretrError(f"filter {column!r}: {v!r} is not a boolean (use true/false)")
            wanted.add(_TRUTH[key])
        return hit | series.isin(list(wanted)).fillna(False).to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(series.dtype):
        nums = pd.to_numeric(pd.Series(values, dtype=object).astype(str).str.strip(), errors="coerce")
        if nums.isna().any():
            bad = [v for v, x in zip(values, nums) if pd.isna(x)]
            raise DermretrError(f"filter {column!r}: {bad[0]!r} is not a number (the column is numeric)")
        return hit | series.isin(nums.tolist()).fillna(False).to_numpy(dtype=bool)
    text = series.astype("string").str.strip().str.casefold()
    wanted_text = [str(v).strip().casefold() for v in values]
    return hit | text.isin(wanted_text).fillna(False).to_numpy(dtype=bool)
