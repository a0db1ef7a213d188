"""Retrieval metrics and evaluation protocols.

Metrics per query (binary relevance), at cut-off K:

* ``recall@K`` - hit rate: 1 if a relevant case is in the top K;
* ``precision@K`` - fraction of the top K that is relevant;
* ``map@K`` - average precision at K, normalised by ``min(K, #relevant)``;
* ``ndcg@K`` - normalised discounted cumulative gain at K;
* ``mrr`` - reciprocal rank of the first relevant case (whole ranking).

Protocol "case" (:func:`case_search`): the query is a test case's image plus
its descriptor text; the gallery is the train and val cases; relevant cases
share the query's diagnosis group (or fine diagnosis); the query's own case
and cases of the same patient are excluded from the ranking.

Examples
--------
>>> import numpy as np
>>> scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.9, 0.5]])
>>> relevant = np.array([[False, True, False], [True, False, False]])
>>> per_query = rank_metrics(scores, relevant, ks=(1, 2))
>>> per_query[["recall@1", "recall@2", "mrr"]].to_numpy().tolist()
[[0.0, 1.0, 0.5], [0.0, 0.0, 0.3333333333333333]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._errors import DermretrError
from .data.vocab import case_text

__all__ = ["rank_metrics", "summarize_metrics", "case_search", "METRICS"]

METRICS = ("recall", "precision", "map", "ndcg")


def rank_metrics(scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray | None = None,
                 ks: Sequence[int] = (1, 5, 10)) -> pd.DataFrame:
    """Per-query metrics from a score matrix ``[Q, T]`` and a relevance matrix.

    Parameters
    ----------
    scores : ndarray [Q, T]
        Higher is better.
    relevant : bool ndarray [Q, T]
    exclude : bool ndarray [Q, T], optional
        Pairs removed from the ranking (the query's own case, same patient).
    ks : ints
        Cut-offs.

    Returns
    -------
    DataFrame
        One row per query: ``n_relevant``, ``recall@K``, ``precision@K``,
        ``map@K``, ``ndcg@K`` for each K, and ``mrr``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape:
        raise DermretrError(f"scores {scores.shape} and relevance {relevant.shape} must have the same shape")
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
        relevant = relevant & ~exclude
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(relevant, order, axis=1)
    valid = np.isfinite(np.take_along_axis(scores, order, axis=1))
    ranked &= valid
    n_rel = relevant.sum(axis=1)
    out = {"n_relevant": n_rel}
    positions = np.arange(1, scores.shape[1] + 1)
    hits_cum = np.cumsum(ranked, axis=1)
    discounts = 1.0 / np.log2(positions + 1)
    for k in ks:
        k_eff = min(k, scores.shape[1])
        top = ranked[:, :k_eff]
        out[f"recall@{k}"] = top.any(axis=1).astype(float)
        out[f"precision@{k}"] = top.sum(axis=1) / k
        prec_at_i = hits_cum[:, :k_eff] / positions[:k_eff]
        denom = np.minimum(k, n_rel)
        out[f"map@{k}"] = np.where(denom > 0, (prec_at_i * top).sum(axis=1) / np.maximum(denom, 1), 0.0)
        dcg = (top * discounts[:k_eff]).sum(axis=1)
        ideal = np.array([discounts[: min(int(r), k_eff)].sum() for r in n_rel])
        out[f"ndcg@{k}"] = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1), 0.0)
    first = np.where(ranked.any(axis=1), ranked.argmax(axis=1) + 1, 0)
    out["mrr"] = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return pd.DataFrame(out)


def summarize_metrics(per_query: pd.DataFrame) -> dict[str, float]:
    """Mean of each metric over queries that have at least one relevant case.

    >>> summarize_metrics(pd.DataFrame({"n_relevant": [1, 0], "recall@1": [1.0, 0.0]}))
    {'recall@1': 1.0, 'n_queries': 1}
    """
    usable = per_query[per_query["n_relevant"] > 0]
    out = {c: float(usable[c].mean()) for c in per_query.columns if c != "n_relevant" and len(usable)}
    out["n_queries"] = int(len(usable))
    return out


def case_search(retriever, cases: pd.DataFrame, query_split: str = "test",
                gallery_splits: Sequence[str] = ("train", "val"), relevant: str = "diagnosis_group",
                ks: Sequence[int] = (1, 5, 10), alpha: float | None = None, text_style: str = "terse",
                batch_size: int = 64, progress: bool = False, gallery: dict | None = None
                ) -> tuple[pd.DataFrame, dict[str, float]]:
    """The "case" protocol: test image + its descriptor text against the train+val gallery.

    Parameters
    ----------
    retriever : Retriever
    cases : DataFrame
        A validated case table.
    query_split, gallery_splits : str
        Where queries and gallery come from.
    relevant : {"diagnosis_group", "diagnosis"}
        Relevant = same value of this column.
    alpha : float, optional
        Override the weight of local evidence.
    gallery : dict, optional
        Pre-computed ``encode_targets`` of the gallery rows (in table order).

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (with ``case_id`` and the query's columns) and their means.
    """
    from .models.retriever import convex_score

    if relevant not in ("diagnosis_group", "diagnosis"):
        raise DermretrError(f"relevant must be 'diagnosis_group' or 'diagnosis', got {relevant!r}")
    split = cases["split"].astype(str)
    q = cases[split == query_split].reset_index(drop=True)
    g = cases[split.isin(list(gallery_splits))].reset_index(drop=True)
    if len(q) == 0 or len(g) == 0:
        raise DermretrError(
            f"case search needs queries in split {query_split!r} ({len(q)}) and a gallery in {list(gallery_splits)} "
            f"({len(g)})"
        )
    texts = [case_text(row, style=text_style, seed=None) for _, row in q.iterrows()]
    qe = retriever.encode_queries(q["image_path"].tolist(), texts, batch_size=batch_size, progress=progress)
    ge = gallery if gallery is not None else retriever.encode_targets(g["image_path"].tolist(),
                                                                       batch_size=batch_size, progress=progress)
    s, _, _ = convex_score(qe, ge, alpha=alpha)
    rel = q[relevant].astype(str).to_numpy()[:, None] == g[relevant].astype(str).to_numpy()[None, :]
    exclude = (q["case_id"].to_numpy()[:, None] == g["case_id"].to_numpy()[None, :]) | (
        q["patient_id"].to_numpy()[:, None] == g["patient_id"].to_numpy()[None, :]
    )
    per_query = rank_metrics(s, rel, exclude, ks=ks)
    per_query.insert(0, "case_id", q["case_id"].to_numpy())
    for col in ("diagnosis_group", "diagnosis", "fitzpatrick", "monk"):
        per_query[col] = q[col].to_numpy()
    return per_query, summarize_metrics(per_query.drop(columns=["case_id", "diagnosis_group", "diagnosis",
                                                                  "fitzpatrick", "monk"]))
