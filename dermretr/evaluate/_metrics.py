"""Per-query ranking metrics (``recall@K``, ``precision@K``, ``map@K``, ``ndcg@K``, ``mrr``) and their means."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._checks import RANK_METRICS
from .._errors import DermretrError
from ..stats import check_average, column_classes, macro_by, macro_mean, metric_columns

__all__ = ["METRICS", "RECORD_METRICS", "TIES", "check_ks", "rank_metrics", "usable_queries", "summarize_metrics"]

#: Metrics with a cut-off K (``mrr`` has none).
METRICS = RANK_METRICS
#: Metric names of the records (``metrics.json``).
RECORD_METRICS = (*METRICS, "mrr")
#: How equal scores are ordered (see :func:`rank_metrics`).
TIES = ("stable", "pessimistic", "optimistic")


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """The cut-offs ``ks`` as a tuple of whole numbers >= 1, duplicates dropped.

    >>> check_ks([10, 1, 10.0])
    (10, 1)
    >>> check_ks([0])
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: cut-offs K must be positive integers, got [0]
    """
    try:
        out = tuple(int(k) for k in ks)
    except (TypeError, ValueError):
        raise DermretrError(f"cut-offs K must be positive integers, got {ks!r}") from None
    if not out or any(k < 1 for k in out) or any(float(k) != float(o) for k, o in zip(ks, out)):
        raise DermretrError(f"cut-offs K must be positive integers, got {list(ks)!r}")
    return tuple(dict.fromkeys(out))


def rank_metrics(scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray | None = None,
                 ks: Sequence[int] = (1, 5, 10), ties: str = "stable") -> pd.DataFrame:
    """Per-query metrics from a score matrix ``[Q, T]`` and a relevance matrix.

    Parameters
    ----------
    scores : ndarray [Q, T]
        Higher is better.
    relevant : bool ndarray [Q, T]
    exclude : bool ndarray [Q, T], optional
        Pairs removed from the ranking (the query's own case, same patient);
        they are neither retrieved nor counted as relevant.
    ks : ints
        Cut-offs.
    ties : {"stable", "pessimistic", "optimistic"}
        Order of equal scores: gallery order (default), relevant cases last
        (no credit for a tie) or relevant cases first.

    Returns
    -------
    DataFrame
        One row per query: ``n_relevant``, ``recall@K``, ``precision@K``,
        ``map@K``, ``ndcg@K`` for each K, and ``mrr``.

    Examples
    --------
    Two gallery cases tie with the best score; only the second is relevant:

    >>> scores = np.array([[0.5, 0.9, 0.9, 0.1]])
    >>> relevant = np.array([[False, False, True, True]])
    >>> rank_metrics(scores, relevant, ks=(1,))["recall@1"].tolist()
    [0.0]
    >>> rank_metrics(scores, relevant, ks=(1,), ties="optimistic")["recall@1"].tolist()
    [1.0]
    >>> exclude = np.array([[False, True, False, False]])
    >>> rank_metrics(scores, relevant, exclude, ks=(1,))[["recall@1", "mrr"]].to_numpy().tolist()
    [[1.0, 1.0]]
    """
    if ties not in TIES:
        raise DermretrError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    ks = check_ks(ks)
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise DermretrError(f"scores {scores.shape} and relevance {relevant.shape} must be matrices of one shape")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != scores.shape:
            raise DermretrError(f"exclude {exclude.shape} must have the shape of scores {scores.shape}")
        scores = np.where(exclude, -np.inf, scores)
        relevant = relevant & ~exclude
    if ties == "stable":
        order = np.argsort(-scores, axis=1, kind="stable")
    else:  # lexsort: the last key is the primary one
        second = relevant if ties == "pessimistic" else ~relevant
        order = np.lexsort((second, -scores), axis=1)
    ranked = np.take_along_axis(relevant, order, axis=1)
    valid = np.isfinite(np.take_along_axis(scores, order, axis=1))
    ranked &= valid
    n_rel = relevant.sum(axis=1)
    out = {"n_relevant": n_rel}
    n_t = scores.shape[1]
    positions = np.arange(1, n_t + 1)
    hits_cum = np.cumsum(ranked, axis=1)
    discounts = 1.0 / np.log2(positions + 1)
    cum_disc = np.concatenate([[0.0], np.cumsum(discounts)])
    for k in ks:
        k_eff = min(k, n_t)
        top = ranked[:, :k_eff]
        out[f"recall@{k}"] = top.any(axis=1).astype(float)
        out[f"precision@{k}"] = top.sum(axis=1) / k
        prec_at_i = hits_cum[:, :k_eff] / positions[:k_eff]
        denom = np.minimum(k, n_rel)
        out[f"map@{k}"] = np.where(denom > 0, (prec_at_i * top).sum(axis=1) / np.maximum(denom, 1), 0.0)
        dcg = (top * discounts[:k_eff]).sum(axis=1)
        ideal = cum_disc[np.minimum(n_rel, k_eff)]
        out[f"ndcg@{k}"] = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1), 0.0)
    first = np.where(ranked.any(axis=1), ranked.argmax(axis=1) + 1, 0)
    out["mrr"] = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return pd.DataFrame(out)


def usable_queries(per_query: pd.DataFrame) -> pd.DataFrame:
    """The rows of a per-query table with at least one relevant case (the others count in no mean)."""
    if "n_relevant" not in per_query.columns:
        raise DermretrError("per-query metrics need an 'n_relevant' column (from rank_metrics)")
    return per_query[per_query["n_relevant"].to_numpy() > 0]


def summarize_metrics(per_query: pd.DataFrame, average: str = "micro",
                      by: str | None = None) -> dict[str, float]:
    """Mean of each metric over queries that have at least one relevant case.

    Only metric columns (``recall@K`` ... ``mrr``) are averaged; other columns
    (the query's case columns) are ignored.  ``average="macro"`` gives the
    mean over the classes of column ``by`` (missing values are a class) of
    each class's mean, and adds ``n_classes``; ``by`` defaults to
    ``target_range`` for tone-protocol tables, else ``diagnosis_group``.

    >>> pq = pd.DataFrame({"n_relevant": [1, 1, 1, 0], "diagnosis_group": ["NEV", "NEV", "MEL", "MEL"],
    ...                    "recall@1": [1.0, 1.0, 0.0, 0.0]})
    >>> summarize_metrics(pq)
    {'recall@1': 0.6666666666666666, 'n_queries': 3}
    >>> summarize_metrics(pq, average="macro")
    {'recall@1': 0.5, 'n_queries': 3, 'n_classes': 2}
    """
    usable = usable_queries(per_query)
    if check_average(average) == "macro":
        codes = column_classes(usable, macro_by(per_query, by))
        cols = metric_columns(per_query)
        means = macro_mean(usable[cols].to_numpy(dtype=np.float64), codes) if len(usable) else np.zeros(0)
        out = {c: float(v) for c, v in zip(cols, means)}
        out.update(n_queries=int(len(usable)), n_classes=int(len(np.unique(codes))))
        return out
    out = {c: float(usable[c].mean()) for c in metric_columns(per_query) if len(usable)}
    out["n_queries"] = int(len(usable))
    return out
