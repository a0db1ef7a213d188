"""Non-learned rankings ("floors") of the case protocol, to print beside every learned retriever.

On real dermoscopy a learned retriever may rank no better than a trivial
ranking, and micro averages reward putting the most common diagnosis first
on imbalanced data.  :func:`floor_search` evaluates three rankings that need
no model, on exactly the queries, gallery, exclusions and relevance of
:func:`dermretr.evaluate.case_search` (query = a held-out case; gallery =
the other splits; the query's own case and patient excluded; relevant =
same diagnosis group or diagnosis), with the same per-query table, so
bootstrap intervals, macro averages, :func:`~dermretr.evaluate.paired_difference`
and :func:`~dermretr.evaluate.results_table` work on them unchanged:

* ``random`` - the *expected* value of every metric under a uniformly
  random order of the query's gallery (analytic, no sampling: see
  :func:`expected_random_metrics`);
* ``majority`` - every gallery case of the gallery's most common class (of
  the relevance column; equal counts: the first in sorted order) first,
  then the others.  A majority query hits at rank 1, any other query
  misses at ranks 1 .. (size of the majority block);
* ``criteria_match`` - gallery cases by agreement of annotated 7-point
  findings with the query's: the number of criteria known on both sides
  with equal values minus the number known on both sides with different
  values (a criterion unknown on either side counts nothing).  It uses
  the annotated findings, never the text or the
  diagnosis, and needs the criteria columns of
  :data:`dermretr.data.vocab.CRITERIA` (derm7pt, PH2).

Equal scores (within the majority block and the rest; criteria_match's
many equal agreement counts) are ordered by ``ties``.  The default,
``"expected"``, gives the exact expected metrics over a uniformly random
order of equal scores (:func:`expected_tie_metrics`).  ``"stable"`` keeps
the gallery's (table) order, which is arbitrary and may follow the
diagnosis: PH2's table lists every nevus before the melanomas, so stable
ties rank nevi first and criteria_match's macro recall@1 drops by about
0.2.  ``"pessimistic"`` and ``"optimistic"`` (see
:func:`dermretr.evaluate.rank_metrics`) bound what the order can do.

The tone protocol (:func:`dermretr.evaluate.tone_search`: "this condition,
on darker skin") has its own floors, :func:`tone_floor_search`, on exactly
its queries (one per test case and other skin-tone range), exclusions and
relevance (same diagnosis group *and* skin tone in the target range):

* ``random`` - as above, the expected value of a uniformly random order;
* ``filter_only`` - a skin-tone filter and nothing else: every gallery case
  in the target range first, in a uniformly random order (expected value,
  as ``ties="expected"``), then the others; diagnosis-agnostic, so it is
  what the range alone earns.  A model must beat it to show that it uses
  the reference image and findings.

The random floor's per-query values are expectations, so its bootstrap
interval reflects only which queries were drawn, not the spread of one
random ranking; the same holds for ``ties="expected"``.
:func:`evaluate_floors` returns per-query tables and the records of
``metrics.json`` for a data set (``run`` ``"floor:NAME"``, ``method`` the
floor's name).

Examples
--------
>>> import pandas as pd
>>> cases = pd.DataFrame({"case_id": list("abcdef"), "patient_id": list("abcdef"),
...     "diagnosis": "x", "diagnosis_group": ["NEV", "NEV", "MEL", "NEV", "MEL", "NEV"],
...     "split": ["train", "train", "train", "val", "test", "test"]})
>>> per_query, summary = floor_search(cases, "majority", ks=(1,))
>>> per_query[["method", "case_id", "diagnosis_group", "recall@1"]].to_numpy().tolist()
[['majority', 'e', 'MEL', 0.0], ['majority', 'f', 'NEV', 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from .._checks import check_boot, check_seed
from .._errors import DermretrError
from ..data.splits import split_source
from ..data.vocab import CRITERIA
from ._case import case_pairs, case_relevance
from ._common import (
    PROTOCOLS,
    attach_metrics,
    check_relevant,
    check_split,
    is_known,
    load_data,
    query_columns,
    resolve_gallery_splits,
)
from ._metrics import TIES, check_ks, rank_metrics, summarize_metrics
from ._records import metric_records
from ._tone import tone_queries, with_tone_estimate

__all__ = ["FLOORS", "TONE_FLOORS", "FLOOR_TIES", "floor_search", "tone_floor_search", "evaluate_floors",
           "expected_random_metrics", "expected_tie_metrics", "criteria_scores", "findings_columns",
           "available_floors"]

#: The non-learned rankings of the case protocol, in the order tables show them.
FLOORS = ("random", "majority", "criteria_match")
#: The non-learned rankings of the tone protocol.
TONE_FLOORS = ("random", "filter_only")
#: Orders of equal scores of the floors: :data:`dermretr.evaluate.TIES` and their expectation.
FLOOR_TIES = (*TIES, "expected")


def expected_random_metrics(n_items, n_relevant, ks: Sequence[int] = (1, 5, 10)) -> pd.DataFrame:
    """Expected metrics of :func:`~dermretr.evaluate.rank_metrics` under a uniformly random ranking.

    For a query with ``N`` rankable gallery items (after exclusions) of which
    ``R`` are relevant, and ``m = min(K, N)``:

    * ``recall@K`` (a hit rate) ``= 1 - C(N - R, m) / C(N, m)`` (hypergeometric);
    * ``precision@K = (R / N) m / K`` (``rank_metrics`` divides by K);
    * ``map@K = (R / N) [H_m + (R - 1)/(N - 1) (m - H_m)] / min(K, R)``, with
      ``H_m = sum_{i <= m} 1/i``, from ``E[rel_i] = R/N`` and
      ``E[rel_i rel_j] = R(R - 1) / (N(N - 1))`` for ``i != j``;
    * ``ndcg@K = (R / N) D(m) / D(min(R, K))``, ``D(j) = sum_{i <= j} 1/log2(i + 1)``;
    * ``mrr = sum_r P(first = r) / r`` with
      ``P(first = r) = C(N - r, R - 1) / C(N, R)``, ``r = 1 .. N - R + 1``.

    Every metric is 0 when ``R = 0``, as in ``rank_metrics``.

    Parameters
    ----------
    n_items, n_relevant : int or array-like [n_queries]
        ``N`` and ``R`` per query (``0 <= R <= N``).
    ks : ints
        Cut-offs.

    Returns
    -------
    DataFrame
        The columns of ``rank_metrics`` (``n_relevant``, ``recall@K`` ...
        ``mrr``), one row per query.

    Examples
    --------
    One relevant case among four: a hit at rank 1 one time in four, and the
    mean reciprocal rank is (1 + 1/2 + 1/3 + 1/4) / 4:

    >>> t = expected_random_metrics([4], [1], ks=(1, 2))
    >>> t[["recall@1", "recall@2", "precision@2", "mrr"]].round(4).to_numpy().tolist()
    [[0.25, 0.5, 0.25, 0.5208]]
    """
    ks = check_ks(ks)
    n = np.atleast_1d(np.asarray(n_items))
    r = np.atleast_1d(np.asarray(n_relevant))
    if n.shape != r.shape or n.ndim != 1:
        raise DermretrError(f"n_items {n.shape} and n_relevant {r.shape} must be 1-D of one length")
    if not (np.issubdtype(n.dtype, np.integer) and np.issubdtype(r.dtype, np.integer)) and len(n):
        raise DermretrError("n_items and n_relevant must be whole numbers")
    n, r = n.astype(np.int64), r.astype(np.int64)
    if (r < 0).any() or (r > n).any():
        raise DermretrError("every query needs 0 <= n_relevant <= n_items")
    has = r > 0
    share = np.where(has, r / np.maximum(n, 1), 0.0)
    out: dict[str, np.ndarray] = {"n_relevant": r}
    for k in ks:
        m = np.minimum(k, n)
        miss = np.where(has, hypergeom.pmf(0, np.maximum(n, 1), r, m), 1.0)
        out[f"recall@{k}"] = np.where(has, 1.0 - miss, 0.0)
        out[f"precision@{k}"] = share * m / k
        harmonic = np.array([_harmonic(int(j)) for j in m])
        pair = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
        out[f"map@{k}"] = np.where(has, share * (harmonic + pair * (m - harmonic)) / np.maximum(np.minimum(k, r), 1),
                                   0.0)
        ideal = np.array([_discounts(int(j)) for j in np.minimum(r, k)])
        gain = np.array([_discounts(int(j)) for j in m])
        out[f"ndcg@{k}"] = np.where(has, share * gain / np.where(ideal > 0, ideal, 1.0), 0.0)
    mrr = np.zeros(len(n))
    for nn, rr in set(zip(n[has].tolist(), r[has].tolist())):
        mrr[(n == nn) & (r == rr)] = _expected_reciprocal_rank(nn, rr)
    out["mrr"] = mrr
    return pd.DataFrame(out)


def _harmonic(m: int) -> float:
    return float((1.0 / np.arange(1, m + 1)).sum())


def _discounts(m: int) -> float:
    return float((1.0 / np.log2(np.arange(2, m + 2))).sum())


def _first_relevant_pmf(n: int, r: int) -> np.ndarray:
    """``P(first relevant at rank j)``, ``j = 1 .. n - r + 1``, for ``r >= 1`` relevant among ``n`` shuffled items.

    ``C(n - j, r - 1) / C(n, r)``, by the ratio of consecutive terms
    ``P(j + 1) / P(j) = (n - j - r + 1) / (n - j)`` (no large binomials).
    """
    j = np.arange(1, n - r + 1)
    ratios = (n - j - r + 1) / (n - j)
    return (r / n) * np.concatenate([[1.0], np.cumprod(ratios)])


def _expected_reciprocal_rank(n: int, r: int) -> float:
    """E[1 / rank of the first relevant item] for ``r >= 1`` relevant among ``n`` randomly ordered items."""
    p = _first_relevant_pmf(n, r)
    return float((p / np.arange(1, len(p) + 1)).sum())


def expected_tie_metrics(scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray | None = None,
                         ks: Sequence[int] = (1, 5, 10)) -> pd.DataFrame:
    """Expected :func:`~dermretr.evaluate.rank_metrics` when equal scores come in a uniformly random order.

    Per query, the rankable items (not excluded) fall into blocks of equal
    score, best first; block ``b`` holds ``n_b`` items, ``r_b`` of them
    relevant, at positions ``s_b + 1 .. s_b + n_b``.  Orders within blocks
    are independent and uniform, so at position ``i`` of block ``b``
    ``E[rel_i] = r_b / n_b``, ``E[rel_i rel_j] = E[rel_i] E[rel_j]`` for ``j``
    in another block and ``r_b (r_b - 1) / (n_b (n_b - 1))`` within the
    block.  Hence (``m = min(K, N)``):

    * ``recall@K = 1 - [no relevant before the block cut at m] *
      C(n_b - r_b, t) / C(n_b, t)`` for the ``t`` items of the cut block in the top m;
    * ``precision@K``, ``ndcg@K``: sums of ``E[rel_i]`` with their weights;
    * ``map@K = sum_{i <= m} E[rel_i hits_i] / i / min(K, R)`` with
      ``E[rel_i hits_i] = E[rel_i] (1 + sum_{c < b} r_c) + (i - s_b - 1) r_b (r_b - 1) / (n_b (n_b - 1))``;
    * ``mrr``: the first block with a relevant item, ``b``, and the first
      relevant rank ``r`` within it (``P = C(n_b - r, r_b - 1) / C(n_b, r_b)``):
      ``sum_r P / (s_b + r)``.

    With all scores equal this is :func:`expected_random_metrics`.

    Examples
    --------
    Two items tie for the top, one relevant: a hit at 1 half the time.

    >>> expected_tie_metrics(np.array([[0.9, 0.9, 0.1]]), np.array([[True, False, False]]),
    ...                      ks=(1,))[["recall@1", "mrr"]].to_numpy().tolist()
    [[0.5, 0.75]]
    """
    ks = check_ks(ks)
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise DermretrError(f"scores {scores.shape} and relevance {relevant.shape} must be matrices of one shape")
    exclude = np.zeros_like(relevant) if exclude is None else np.asarray(exclude, dtype=bool)
    if exclude.shape != scores.shape:
        raise DermretrError(f"exclude {exclude.shape} must have the shape of scores {scores.shape}")
    if not np.isfinite(scores[~exclude]).all():
        raise DermretrError("scores must be finite (exclude pairs with `exclude` instead)")
    rows = []
    for s_row, r_row, x_row in zip(scores, relevant, exclude):
        rows.append(_expected_one(s_row[~x_row], r_row[~x_row], ks))
    columns = ["n_relevant"] + [f"{m}@{k}" for k in ks for m in ("recall", "precision", "map", "ndcg")] + ["mrr"]
    out = pd.DataFrame(rows, columns=columns)
    out["n_relevant"] = out["n_relevant"].astype(np.int64)
    return out


def _expected_one(scores: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...]) -> list[float]:
    """One query's expected metrics (see :func:`expected_tie_metrics`); items already without exclusions."""
    n, r_total = len(scores), int(relevant.sum())
    row: list[float] = [r_total]
    if r_total == 0:
        return row + [0.0] * (4 * len(ks) + 1)
    values, block_of = np.unique(-scores, return_inverse=True)  # blocks, best score first
    n_b = np.bincount(block_of, minlength=len(values))
    r_b = np.bincount(block_of, weights=relevant, minlength=len(values)).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(n_b)[:-1]])          # s_b
    before = np.concatenate([[0], np.cumsum(r_b)[:-1]])         # relevant items in earlier blocks
    b_at = np.repeat(np.arange(len(n_b)), n_b)                  # block of each position
    pos = np.arange(1, n + 1)
    p = r_b[b_at] / n_b[b_at]
    q = np.where(n_b > 1, r_b * (r_b - 1) / np.maximum(n_b * (n_b - 1), 1), 0.0)[b_at]
    rel_hits = p * (1.0 + before[b_at]) + (pos - start[b_at] - 1) * q
    disc = 1.0 / np.log2(pos + 1)
    for k in ks:
        m = min(k, n)
        b = b_at[m - 1]                                         # the block cut by the top m
        t = m - start[b]
        miss = float(before[b] == 0) * float(hypergeom.pmf(0, n_b[b], r_b[b], t))
        ideal = disc[:min(r_total, k)].sum()
        row += [1.0 - miss, p[:m].sum() / k, (rel_hits[:m] / pos[:m]).sum() / min(k, r_total),
                (p[:m] * disc[:m]).sum() / ideal]
    b = int(np.flatnonzero(r_b > 0)[0])
    prob = _first_relevant_pmf(int(n_b[b]), int(r_b[b]))
    row.append(float((prob / (start[b] + np.arange(1, len(prob) + 1))).sum()))
    return row


def findings_columns(cases: pd.DataFrame) -> list[str]:
    """The 7-point criteria columns of a case table with at least one known value.

    >>> findings_columns(pd.DataFrame({"streaks": ["absent", None], "pigment_network": [None, None]}))
    ['streaks']
    """
    return [c for c in CRITERIA if c in cases.columns and any(is_known(v) for v in cases[c].astype(object))]


def available_floors(cases: pd.DataFrame, split: str = "test",
                     gallery_splits: Sequence[str] | None = None, protocol: str = "case") -> tuple[str, ...]:
    """The floors a case table allows (:data:`FLOORS`, or :data:`TONE_FLOORS` for ``protocol="tone"``).

    Random and majority always, criteria_match when both the ``split`` queries and their gallery have 7-point
    findings.

    >>> available_floors(pd.DataFrame({"case_id": ["a"], "diagnosis_group": ["NEV"], "split": ["test"]}))
    ('random', 'majority')
    """
    if protocol == "tone":
        return TONE_FLOORS
    splits = cases["split"].astype(str) if "split" in cases.columns else pd.Series("", index=cases.index)
    q = cases[(splits == split).to_numpy()]
    g = cases[splits.isin(list(resolve_gallery_splits(split, gallery_splits))).to_numpy()]
    return FLOORS if [c for c in findings_columns(q) if c in findings_columns(g)] else ("random", "majority")


def _majority_label(labels: np.ndarray) -> str | None:
    known = pd.Series(labels, dtype=object).dropna().astype(str)
    if known.empty:
        return None
    counts = known.value_counts()
    return sorted(counts.index[counts == counts.max()])[0]  # equal counts: the first label in sorted order


def _shared_findings(q: pd.DataFrame, g: pd.DataFrame) -> list[str]:
    columns = [c for c in findings_columns(q) if c in findings_columns(g)]
    if not columns:
        raise DermretrError(
            "the criteria_match floor needs annotated 7-point findings (columns "
            f"{', '.join(CRITERIA)}) on both query and gallery cases; this dataset has none (derm7pt and "
            "ph2 have them); use the random and majority floors"
        )
    return columns


def criteria_scores(q: pd.DataFrame, g: pd.DataFrame, columns: Sequence[str] | None = None) -> np.ndarray:
    """criteria_match's scores ``[Q, G]`` rescaled to [0, 1]: ``1/2 + (agreements - disagreements) / (2 C)``.

    ``C`` is the number of criteria compared (default: the 7-point criteria
    with findings among both the queries and the gallery); a criterion
    unknown on either side counts nothing, so 1/2 means no evidence either
    way.  The ranking is the floor's; use it to fuse findings with a model's
    scores (:func:`dermretr.evaluate.case_scores`, :func:`dermretr.evaluate.scores_search`).

    >>> q = pd.DataFrame({"streaks": ["irregular"], "blue_whitish_veil": ["present"]})
    >>> g = pd.DataFrame({"streaks": ["irregular", "absent", None], "blue_whitish_veil": ["present", "present", None]})
    >>> criteria_scores(q, g).tolist()
    [[1.0, 0.5, 0.5]]
    """
    if columns is None:
        columns = _shared_findings(q, g)
    columns = list(columns)
    missing = [c for c in columns if c not in CRITERIA or c not in q.columns or c not in g.columns]
    if not columns or missing:
        raise DermretrError(f"criteria_scores needs 7-point criteria columns of both tables, got {columns!r}")
    return 0.5 + _criteria_scores(q, g, columns) / (2 * len(columns))


def _criteria_scores(q: pd.DataFrame, g: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Agreements minus disagreements of the criteria known on both sides, ``[Q, G]``."""
    score = np.zeros((len(q), len(g)))
    for c in columns:
        vq = [str(v) if is_known(v) else None for v in q[c].astype(object)]
        vg = [str(v) if is_known(v) else None for v in g[c].astype(object)]
        values = {v: i for i, v in enumerate(sorted({v for v in vq + vg if v is not None}))}
        cq = np.array([-1 if v is None else values[v] for v in vq])
        cg = np.array([-1 if v is None else values[v] for v in vg])
        both = (cq[:, None] >= 0) & (cg[None, :] >= 0)
        score += np.where(both, np.where(cq[:, None] == cg[None, :], 1.0, -1.0), 0.0)
    return score


def floor_search(cases: pd.DataFrame, method: str, query_split: str = "test", relevant: str = "diagnosis_group",
                 ks: Sequence[int] = (1, 5, 10), gallery_splits: Sequence[str] | None = None,
                 ties: str = "expected") -> tuple[pd.DataFrame, dict[str, float]]:
    """A non-learned ranking on the "case" protocol: per-query metrics like :func:`~dermretr.evaluate.case_search`.

    Parameters
    ----------
    cases : DataFrame
        A validated case table.
    method : {"random", "majority", "criteria_match"}
        The floor (see the module's description).
    query_split : str
        Queries come from this split.
    relevant : {"diagnosis_group", "diagnosis"}
        Relevant = same value of this column; ``majority`` puts the gallery's
        most common value of it first (equal counts: the first in sorted order).
    ks : ints
        Cut-offs.
    gallery_splits : strs, optional
        Default: train and val for test queries, train for val queries (as
        :func:`~dermretr.evaluate.evaluate_run`).
    ties : {"stable", "pessimistic", "optimistic", "expected"}
        Order of equal scores of ``majority`` and ``criteria_match``: the
        expected metrics over a uniformly random order of equal scores
        (default), gallery order, relevant last or relevant first;
        ``random`` is an expectation and has no ties.

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (``method`` first, then the query's columns,
        ``n_relevant`` and the metrics; ``random``'s are expected values) and
        their micro means over queries with a relevant case.

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"), "diagnosis": "x",
    ...     "diagnosis_group": ["NEV", "MEL", "NEV", "MEL"], "split": ["train", "train", "train", "test"]})
    >>> per_query, summary = floor_search(cases, "random", ks=(1, 3))
    >>> [round(summary[m], 4) for m in ("recall@1", "recall@3", "mrr")]   # 1 relevant of 3
    [0.3333, 1.0, 0.6111]
    >>> floor_search(cases, "criteria_match")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: the criteria_match floor needs annotated 7-point findings ...
    """
    if method not in FLOORS:
        raise DermretrError(f"unknown floor {method!r}; floors: {', '.join(FLOORS)}")
    check_relevant(relevant)
    if ties not in FLOOR_TIES:
        raise DermretrError(f"ties must be one of {', '.join(FLOOR_TIES)}, got {ties!r}")
    ks = check_ks(ks)
    q, g, exclude = case_pairs(cases, query_split, resolve_gallery_splits(query_split, gallery_splits))
    rel = case_relevance(q, g, relevant)
    if method == "random":
        metrics = expected_random_metrics((~exclude).sum(axis=1), (rel & ~exclude).sum(axis=1), ks=ks)
    else:
        if method == "majority":
            top = _majority_label(g[relevant].astype(object).to_numpy())
            labels = np.array([is_known(v) and str(v) == top for v in g[relevant].astype(object)], dtype=float)
            scores = np.broadcast_to(labels, (len(q), len(g)))
        else:
            scores = _criteria_scores(q, g, _shared_findings(q, g))
        metrics = (expected_tie_metrics(scores, rel, exclude, ks=ks) if ties == "expected"
                   else rank_metrics(scores, rel, exclude, ks=ks, ties=ties))
    per_query = attach_metrics(query_columns(q), metrics)
    per_query.insert(0, "method", method)
    return per_query, summarize_metrics(per_query)


def tone_floor_search(cases: pd.DataFrame, method: str, query_split: str = "test", *, scale: str = "fitzpatrick",
                      relevant: str = "diagnosis_group", ks: Sequence[int] = (1, 5, 10),
                      gallery_splits: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """A non-learned ranking on the "tone" protocol: per-query metrics like :func:`~dermretr.evaluate.tone_search`.

    Parameters
    ----------
    cases : DataFrame
        A validated case table with skin-tone labels (see
        :func:`~dermretr.evaluate.tone_queries`).
    method : {"random", "filter_only"}
        ``random``: the expected metrics of a uniformly random order of the
        query's gallery; ``filter_only``: the gallery cases in the target
        range first, in a uniformly random order (expected metrics), then
        the others.
    query_split, scale, relevant, ks, gallery_splits
        As :func:`~dermretr.evaluate.tone_search`.

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (``method`` first, then the columns of
        :func:`~dermretr.evaluate.tone_search` but ``tone_text``) and their
        micro means.

    Examples
    --------
    The test case (type I) asks for V-VI; the gallery holds two V-VI cases, one of its group:

    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"), "diagnosis": "x",
    ...     "diagnosis_group": ["MEL", "NEV", "MEL", "MEL"], "fitzpatrick": [6, 6, 1, 1],
    ...     "split": ["train", "train", "train", "test"]})
    >>> [round(tone_floor_search(cases, m, ks=(1,))[1]["recall@1"], 4) for m in TONE_FLOORS]
    [0.3333, 0.5]
    """
    if method not in TONE_FLOORS:
        raise DermretrError(f"unknown tone floor {method!r}; floors of the tone protocol: {', '.join(TONE_FLOORS)}")
    ks = check_ks(ks)
    tq = tone_queries(cases, query_split, gallery_splits, scale=scale, relevant=relevant, texts=False)
    if method == "random":
        metrics = expected_random_metrics((~tq.exclude).sum(axis=1), tq.relevant.sum(axis=1), ks=ks)
    else:
        in_range = tq.gallery_range[None, :] == tq.info["target_range"].to_numpy(dtype=object)[:, None]
        metrics = expected_tie_metrics(in_range.astype(float), tq.relevant, tq.exclude, ks=ks)
    per_query = attach_metrics(tq.info, metrics)
    per_query.insert(0, "method", method)
    return per_query, summarize_metrics(per_query)


def evaluate_floors(data, floors: Sequence[str] | None = None, *, split: str = "test",
                    relevant: str = "diagnosis_group", ks: Sequence[int] = (1, 5, 10), n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0, by: str | None = None,
                    ties: str = "expected", protocol: str = "case",
                    tone_scale: str = "fitzpatrick") -> tuple[pd.DataFrame, list[dict]]:
    """The floors of a data set on the "case" (or "tone") protocol: per-query metrics and ``metrics.json`` records.

    Parameters
    ----------
    data : str or DataFrame
        ``"SOURCE:PATH"`` or a loaded case table.
    floors : strs, optional
        Default: :func:`available_floors` (criteria_match only with findings).
    split, relevant, ks
        As :func:`~dermretr.evaluate.evaluate_run` (the gallery follows the split).
    n_boot, level, seed, by
        Bootstrap and macro classes of :func:`~dermretr.evaluate.metric_records`
        (``by`` default: ``diagnosis_group``, ``target_range`` for the tone protocol).
    ties
        See :func:`floor_search` (the tone floors' ties are always expected values).
    protocol : {"case", "tone"}
        The case protocol's floors (:data:`FLOORS`) or the tone protocol's
        (:data:`TONE_FLOORS`, :func:`tone_floor_search`).
    tone_scale : {"fitzpatrick", "monk", "ita"}
        Skin-tone scale of the tone protocol (``ita`` estimates skin tone
        from the pixels when the table has no estimate).

    Returns
    -------
    (DataFrame, list of dict)
        Per-query metrics of every floor (``run`` = ``"floor:NAME"``,
        ``method`` = NAME and ``protocol`` first) and their records,
        micro and macro (``split_source`` from the table's attrs,
        :func:`dermretr.data.split_source`).

    Examples
    --------
    Two NEV queries hit at rank 1 (NEV is the gallery's majority), the MEL one misses:

    >>> cases = pd.DataFrame({"case_id": list("abcdefg"), "patient_id": list("abcdefg"), "diagnosis": "x",
    ...     "diagnosis_group": ["NEV", "NEV", "MEL", "NEV", "MEL", "NEV", "NEV"],
    ...     "split": ["train", "train", "train", "val", "test", "test", "test"]})
    >>> per_query, records = evaluate_floors(cases, ["majority"], ks=(1,), n_boot=0)
    >>> [(r["run"], r["average"], round(r["value"], 3)) for r in records if r["metric"] == "recall"]
    [('floor:majority', 'micro', 0.667), ('floor:majority', 'macro', 0.5)]
    >>> per_query.columns[:4].tolist()
    ['run', 'method', 'protocol', 'case_id']
    """
    check_relevant(relevant)
    ks = check_ks(ks)
    check_boot(n_boot, level)
    check_seed(seed)
    if protocol not in ("case", "tone"):
        raise DermretrError(f"floors are computed for the case and tone protocols, not {protocol!r} "
                            f"(protocols: {', '.join(PROTOCOLS)})")
    cases, _ = load_data(data)
    split_from = split_source(cases)  # before the tone protocol adds columns
    check_split(cases, split)
    if floors is None:
        floors = available_floors(cases, split, protocol=protocol)
    floors = (floors,) if isinstance(floors, str) else tuple(dict.fromkeys(floors))
    allowed = TONE_FLOORS if protocol == "tone" else FLOORS
    unknown = [f for f in floors if f not in allowed]
    if unknown:
        raise DermretrError(f"unknown floor(s) {unknown} for the {protocol} protocol; its floors: {', '.join(allowed)}")
    if protocol == "tone":
        cases = with_tone_estimate(cases, tone_scale)
    tables, records = [], []
    for name in floors:
        if protocol == "tone":
            pq, _ = tone_floor_search(cases, name, query_split=split, scale=tone_scale, relevant=relevant, ks=ks)
        else:
            pq, _ = floor_search(cases, name, query_split=split, relevant=relevant, ks=ks, ties=ties)
        run = f"floor:{name}"
        records += metric_records(pq, run, name, protocol, n_boot=n_boot, level=level, seed=seed, by=by,
                                  split_source=split_from)
        pq.insert(1, "protocol", protocol)
        pq.insert(0, "run", run)
        tables.append(pq)
    return pd.concat(tables, ignore_index=True), records
