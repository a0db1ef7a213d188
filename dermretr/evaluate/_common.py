"""What the evaluation protocols share: splits, relevance columns, the per-query table's head, data loading."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import DermretrError

__all__ = [
    "PROTOCOLS", "QUERY_COLUMNS", "RELEVANT", "check_relevant", "query_columns", "attach_metrics",
    "resolve_gallery_splits", "check_split", "same_values", "is_known", "load_data",
]

#: Evaluation protocols.
PROTOCOLS = ("case", "modify", "tone")
#: Columns of the query case copied into per-query tables (for fairness slicing),
#: followed by any of ``_OPTIONAL_QUERY_COLUMNS`` the table has.
QUERY_COLUMNS = ("case_id", "patient_id", "diagnosis_group", "diagnosis", "fitzpatrick", "monk")
_OPTIONAL_QUERY_COLUMNS = ("ita", "skin_tone_group", "sex", "age")
#: The columns whose equal values make a gallery case relevant.
RELEVANT = ("diagnosis_group", "diagnosis")


def check_relevant(relevant: str) -> str:
    """``relevant`` when it is one of :data:`RELEVANT`.

    >>> check_relevant("caption")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: relevant must be 'diagnosis_group' or 'diagnosis', got 'caption'
    """
    if relevant not in RELEVANT:
        raise DermretrError(f"relevant must be 'diagnosis_group' or 'diagnosis', got {relevant!r}")
    return relevant


def query_columns(q: pd.DataFrame) -> pd.DataFrame:
    """The head of a per-query table: the query cases' :data:`QUERY_COLUMNS` and optional columns they have."""
    cols = [c for c in QUERY_COLUMNS if c in q.columns] + [c for c in _OPTIONAL_QUERY_COLUMNS if c in q.columns]
    return q[cols].reset_index(drop=True)


def attach_metrics(query_info: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The per-query table: the query columns ``query_info`` beside the metrics, row by row."""
    return pd.concat([query_info.reset_index(drop=True), metrics.reset_index(drop=True)], axis=1)


def resolve_gallery_splits(split: str, gallery_splits: Sequence[str] | None) -> tuple[str, ...]:
    """The gallery of ``split`` queries: ``gallery_splits`` when given, else train+val for test, train for val.

    >>> resolve_gallery_splits("test", None), resolve_gallery_splits("val", None)
    (('train', 'val'), ('train',))
    """
    if gallery_splits is not None:
        return tuple(gallery_splits)
    if split == "test":
        return ("train", "val")
    if split == "val":
        return ("train",)
    raise DermretrError(f"queries must come from a held-out split (val or test), got {split!r}")


def check_split(cases: pd.DataFrame, split: str) -> pd.Series:
    """The cases' splits (as text), refusing a table without any case in the query split ``split``."""
    splits = cases["split"].astype(str)
    if not (splits == split).any():
        counts = ", ".join(f"{k} {v}" for k, v in splits.value_counts().sort_index().items()) or "no cases"
        raise DermretrError(
            f"the dataset has no cases in split {split!r} to query with ({counts}); evaluation needs a "
            f"held-out {split} split"
        )
    return splits


def same_values(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]``: whether ``a[i] == b[j]``.

    >>> same_values(np.array(["x", "y"]), np.array(["y", "y", "x"])).tolist()
    [[False, False, True], [True, True, False]]
    """
    return a[:, None] == b[None, :]


def is_known(value) -> bool:
    """Whether a table cell holds a value (not None, NaN, NA or the empty string).

    >>> is_known("absent"), is_known(""), is_known(float("nan")), is_known(None)
    (True, False, False, False)
    """
    return value is not None and not (not isinstance(value, str) and pd.isna(value)) and str(value) != ""


def load_data(data) -> tuple[pd.DataFrame, Path | None]:
    """A case table and its data folder from ``"SOURCE:PATH"``, or a loaded table as is (folder None)."""
    if isinstance(data, pd.DataFrame):
        return data, None
    from ..data import load, parse_spec

    source, path = parse_spec(str(data))
    root = Path(path).expanduser()
    return load(source, root), root
