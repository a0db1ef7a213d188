"""Expected metrics of random orders: a uniformly random ranking, and random orders of equal scores.

The random floor (:func:`expected_random_metrics`) and the floors' default
``ties="expected"`` (:func:`expected_tie_metrics`) are exact expectations,
computed analytically (no sampling), so they have no sampling noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from .._errors import DermretrError
from ._metrics import check_ks

__all__ = ["expected_random_metrics", "expected_tie_metrics"]


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
