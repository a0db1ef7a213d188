"""The "case" protocol: a held-out case's image plus its findings text against the train+val gallery."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._errors import DermretrError
from ..data.vocab import case_text, criteria_of, strip_tone
from ..models.embeddings import Embeddings, EmbeddingsLike, convex_score
from ._common import attach_metrics, check_relevant, query_columns, same_values
from ._leak import check_query_text
from ._metrics import rank_metrics, summarize_metrics

__all__ = ["case_search", "scores_search", "case_scores", "case_pairs", "case_relevance"]

def case_search(retriever, cases: pd.DataFrame, query_split: str = "test",
                gallery_splits: Sequence[str] = ("train", "val"), relevant: str = "diagnosis_group",
                ks: Sequence[int] = (1, 5, 10), alpha: float | None = None, text_style: str = "terse",
                batch_size: int = 64, progress: bool = False, gallery: EmbeddingsLike | None = None,
                queries: EmbeddingsLike | None = None, ties: str = "stable") -> tuple[pd.DataFrame, dict[str, float]]:
    """The "case" protocol: test image + its findings text against the train+val gallery.

    Parameters
    ----------
    retriever : Retriever
        Anything with ``encode_queries``/``encode_targets`` like
        :class:`~dermretr.models.retriever.Retriever`.
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
    queries : dict, optional
        Pre-computed ``encode_queries`` of the query rows (in table order,
        with their :func:`~dermretr.data.vocab.case_text`, ``view="findings"``;
        such texts are not checked by :func:`check_query_text`).
    ties : {"stable", "pessimistic", "optimistic"}
        Order of equal scores (see :func:`rank_metrics`).

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (with the query's :data:`QUERY_COLUMNS`, and ``ita``
        etc. when present) and their means over queries with a relevant case.

    Examples
    --------
    A stand-in retriever whose embeddings are one-hot diagnosis groups:

    >>> class OneHot:
    ...     def encode(self, paths, *_, **__):
    ...         return {"global": np.array([[p.startswith("M"), p.startswith("N")] for p in paths], float),
    ...                 "local": None, "alpha": 0.0}
    ...     encode_queries = encode_targets = encode
    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("pqrs"),
    ...     "image_path": ["M1", "N2", "M3", "N4"], "diagnosis": ["mel", "nev", "mel", "nev"],
    ...     "diagnosis_group": ["MEL", "NEV", "MEL", "NEV"], "split": ["train", "train", "test", "test"],
    ...     "fitzpatrick": [1, 2, 3, 4], "monk": pd.NA})
    >>> per_query, summary = case_search(OneHot(), cases, ks=(1,))
    >>> summary["recall@1"], per_query["case_id"].tolist()
    (1.0, ['c', 'd'])
    """
    check_relevant(relevant)
    q, g, s, exclude = case_scores(retriever, cases, query_split, gallery_splits, alpha=alpha, text_style=text_style,
                                   batch_size=batch_size, progress=progress, queries=queries, gallery=gallery)
    per_query = scores_search(q, g, s, exclude, relevant=relevant, ks=ks, ties=ties)
    return per_query, summarize_metrics(per_query)


def scores_search(q: pd.DataFrame, g: pd.DataFrame, scores: np.ndarray, exclude: np.ndarray,
                  relevant: str = "diagnosis_group", ks: Sequence[int] = (1, 5, 10),
                  ties: str = "stable") -> pd.DataFrame:
    """Per-query metrics of the "case" protocol for scores computed elsewhere.

    ``q, g, scores, exclude`` are :func:`case_scores`' output, the scores
    possibly changed (e.g. fused with
    :func:`dermretr.floors.criteria_scores`); relevant = same value of
    ``relevant``, as in :func:`case_search`.

    >>> q = pd.DataFrame({"case_id": ["a"], "patient_id": ["p"], "diagnosis_group": ["MEL"]})
    >>> g = pd.DataFrame({"case_id": ["b", "c"], "patient_id": ["q", "r"], "diagnosis_group": ["NEV", "MEL"]})
    >>> scores_search(q, g, np.array([[0.9, 0.1]]), np.zeros((1, 2), bool), ks=(1,))[["case_id", "recall@1", "mrr"]]
      case_id  recall@1  mrr
    0       a       0.0  0.5
    """
    scores = np.asarray(scores)
    if scores.shape != (len(q), len(g)):
        raise DermretrError(f"scores {scores.shape} do not fit {len(q)} queries and {len(g)} gallery cases")
    rel = case_relevance(q, g, relevant)
    return attach_metrics(query_columns(q), rank_metrics(scores, rel, exclude, ks=ks, ties=ties))


def case_scores(retriever, cases: pd.DataFrame, query_split: str = "test",
                gallery_splits: Sequence[str] = ("train", "val"), alpha: float | None = None,
                text_style: str = "terse", batch_size: int = 64, progress: bool = False,
                queries: EmbeddingsLike | None = None, gallery: EmbeddingsLike | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Queries, gallery, scores ``[Q, G]`` and excluded pairs of the "case" protocol.

    The one place that decides what the protocol compares: a query is a
    ``query_split`` case's image plus its findings text
    (:func:`~dermretr.data.vocab.case_text`, ``view="findings"``, checked by
    :func:`check_query_text`: a text naming a diagnosis is an error), the
    gallery is ``gallery_splits``, and a query's own case and every case of
    its patient are excluded.  :func:`case_search` and
    :func:`dermretr.fairness.retrieve_topk` build on it.

    >>> class Same:
    ...     def encode_queries(self, paths, texts, **_): return {"global": np.ones((len(paths), 2)), "local": None}
    ...     encode_targets = lambda self, paths, **_: {"global": np.ones((len(paths), 2)), "local": None}
    >>> cases = pd.DataFrame({"case_id": list("abc"), "patient_id": list("ppq"), "image_path": list("xyz"),
    ...                       "diagnosis": "x", "diagnosis_group": "X", "split": ["train", "train", "test"]})
    >>> q, g, s, exclude = case_scores(Same(), cases)
    >>> s.shape, exclude.tolist()
    ((1, 2), [[False, False]])
    """
    q, g, exclude = case_pairs(cases, query_split, gallery_splits)
    if queries is None:
        texts = [case_text(row, style=text_style, seed=None, view="findings") for _, row in q.iterrows()]
        check_query_text(q, texts)
        _warn_if_only_skin_type(q)
        queries = retriever.encode_queries(q["image_path"].tolist(), texts, batch_size=batch_size, progress=progress)
    if gallery is None:
        gallery = retriever.encode_targets(g["image_path"].tolist(), batch_size=batch_size, progress=progress)
    queries, gallery = Embeddings.from_mapping(queries), Embeddings.from_mapping(gallery)
    if len(queries) != len(q) or len(gallery) != len(g):
        raise DermretrError(
            f"pre-computed encodings do not fit: {len(queries)} queries for {len(q)} query cases, "
            f"{len(gallery)} targets for {len(g)} gallery cases"
        )
    s, _, _ = convex_score(queries, gallery, alpha=alpha)
    return q, g, np.asarray(s), exclude


def _warn_if_only_skin_type(q: pd.DataFrame) -> None:
    """Warn when the queries' findings say nothing but the skin type (Fitzpatrick17k, DDI).

    Their "composed" case queries are image plus skin type, and the composed question the source can answer
    is the tone one.
    """
    if "findings" not in q.columns or not len(q) or any(criteria_of(row) for _, row in q.head(50).iterrows()):
        return
    findings = q["findings"].fillna("").astype(str)
    if (findings.str.strip() != "").any() and (findings.map(strip_tone).str.strip() == "").all():
        source = f"source {q['source'].iloc[0]!r}" if "source" in q.columns else "these cases"
        warnings.warn(f"the findings of {source} name only the skin type: case queries are in effect image plus "
                      "skin type; its composed question is the tone protocol (--protocol tone)", stacklevel=3)


def case_pairs(cases: pd.DataFrame, query_split: str, gallery_splits: Sequence[str]
                ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Queries, gallery and excluded pairs (own case, same patient) of the "case" protocol."""
    split = cases["split"].astype(str)
    q = cases[split == query_split].reset_index(drop=True)
    g = cases[split.isin(list(gallery_splits))].reset_index(drop=True)
    if len(q) == 0 or len(g) == 0:
        raise DermretrError(
            f"case search needs queries in split {query_split!r} ({len(q)}) and a gallery in {list(gallery_splits)} "
            f"({len(g)})"
        )
    exclude = same_values(q["case_id"].astype(str).to_numpy(), g["case_id"].astype(str).to_numpy()) | same_values(
        q["patient_id"].astype(str).to_numpy(), g["patient_id"].astype(str).to_numpy())
    return q, g, exclude


def case_relevance(q: pd.DataFrame, g: pd.DataFrame, relevant: str) -> np.ndarray:
    """Relevance ``[Q, G]`` of the "case" protocol: same (known) value of column ``relevant``."""
    check_relevant(relevant)
    labels_q, labels_g = q[relevant].astype(object).to_numpy(), g[relevant].astype(object).to_numpy()
    return same_values(labels_q.astype(str), labels_g.astype(str)) & pd.notna(labels_q)[:, None]
