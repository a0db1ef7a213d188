"""What the evaluation protocols share: splits, relevance columns, the per-query table's head, data loading."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import DermretrError

__all__ = [
    "PROTOCOLS", "QUERY_COLUMNS", "RELEVANT", "check_relevant", "query_columns", "attach_metrics",
    "resolve_gallery_splits", "check_split", "same_values", "is_known", "load_data", "data_options_for",
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


def load_data(data, options: Mapping[str, object] | None = None) -> tuple[pd.DataFrame, Path | None]:
    """A case table and its data folder from ``"SOURCE:PATH"`` and loader ``options``, or a loaded table as is.

    A table is returned as it is (folder None; ``options`` do not apply to it).
    """
    if isinstance(data, pd.DataFrame):
        return data, None
    from ..data import load, parse_spec

    source, path = parse_spec(str(data))
    root = Path(path).expanduser()
    return load(source, root, **dict(options or {})), root


def data_options_for(data, options: Mapping[str, object] | None,
                     runs: Sequence[str | os.PathLike | None] = ()) -> dict:
    """The loader options to load ``data`` with for the ``runs``: those they were trained with, unless given.

    A run records its data and loader options in ``config.json``
    (:func:`dermretr.train.run_data`).  When ``data`` is of the same source as a
    run's data, ``options=None`` reuses the run's options, and given options
    must load the same way (:func:`dermretr.data.same_options`); runs of that
    source trained with different options cannot share one load of ``data``.
    Runs of another source, of an older dermretr (no options recorded) and a
    loaded table (``data`` a DataFrame) impose nothing.

    Raises
    ------
    DermretrError
        Given options that differ from a run's, or runs that differ, naming both.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (run / "config.json").write_text('{"data": "derm7pt:/d", "data_options": {"image": "clinic"}}')
    >>> data_options_for("derm7pt:/elsewhere", None, [run])
    {'image': 'clinic'}
    >>> data_options_for("ham10000:/h", None, [run])
    {}
    >>> data_options_for("derm7pt:/d", {"image": "derm"}, [run])
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: run ... was trained on derm7pt:/d with -o image=clinic, but -o image=derm is ...
    """
    if isinstance(data, pd.DataFrame):
        return dict(options or {})
    from ..data import format_options, parse_spec, same_options
    from ..train import run_data

    source = parse_spec(str(data))[0]
    recorded = []
    for run in runs:
        found = run_data(run) if run is not None else None
        if found is None or found["data_options"] is None:
            continue
        try:
            if parse_spec(found["data"])[0] == source:
                recorded.append((run, found["data"], found["data_options"]))
        except DermretrError:  # a hand-edited config.json: nothing to reuse
            continue
    if options is None:
        for run, spec, opts in recorded[1:]:
            if not same_options(source, opts, recorded[0][2]):
                first = recorded[0]
                raise DermretrError(f"runs {first[0]} and {run} were trained on {source} with different loader "
                                    f"options ({format_options(first[2])}; {format_options(opts)}), so one load of "
                                    f"{data} cannot serve both: give them separately")
        return dict(recorded[0][2]) if recorded else {}
    for run, spec, opts in recorded:
        if not same_options(source, opts, options):
            raise DermretrError(f"run {run} was trained on {spec} with {format_options(opts)}, but "
                                f"{format_options(options)} is given for {data}: leave -o out to load the data as "
                                "the run did, or give the same options")
    return dict(options)
