"""Bootstrap intervals of per-query metrics and the paired comparison of two runs (sign-flip test)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._checks import check_boot
from .._errors import DermretrError
from ._macro import (
    check_average,
    class_codes,
    class_weights,
    column_classes,
    macro_by,
    macro_mean,
    stratified_means,
)
from ._tables import check_metrics, check_per_query, pair_tables

__all__ = ["bootstrap_ci", "sign_flip_p", "paired_difference"]


def bootstrap_ci(per_query, n_boot: int = 1000, level: float = 0.95, seed: int = 0, groups=None):
    """Percentile bootstrap confidence interval of the mean over queries.

    Queries are resampled with replacement ``n_boot`` times (one index matrix
    ``[n_boot, n_queries]``, drawn in blocks so memory stays small); the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    the resampled means.  The same seed gives the same interval, and the
    columns of a 2-D input share the resamples (a paired bootstrap).

    With ``groups`` (one class label per query), the statistic is the
    *macro* mean (the mean over classes of the class means) and queries are
    resampled within their class, class sizes fixed (a stratified
    bootstrap); a class with one query then adds no spread.

    Parameters
    ----------
    per_query : array-like [n_queries] or [n_queries, n_metrics]
        Per-query values (NaN-free).
    n_boot : int
        Number of resamples; 0 gives NaN bounds.
    level : float
        Coverage, in (0, 1).
    seed : int
        Seed of the resampling.
    groups : array-like [n_queries], optional
        Class of each query (e.g. its diagnosis group; missing values are a
        class): interval of the macro mean, stratified by class.

    Returns
    -------
    (low, high)
        Floats for 1-D input, arrays ``[n_metrics]`` for 2-D input; NaN
        without queries or resamples.

    Examples
    --------
    >>> low, high = bootstrap_ci(np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]), seed=1)
    >>> bool(low < 0.625 < high), (low, high) == bootstrap_ci([0, 1, 1, 0, 1, 1, 1, 0], seed=1)
    (True, True)
    >>> bootstrap_ci([0.5])
    (0.5, 0.5)

    Macro mean of two classes; class B's values are all 1, so only A varies:

    >>> low, high = bootstrap_ci([0, 1, 0, 1, 1, 1], groups=list("AAAABB"), seed=1)
    >>> bool(0.5 <= low < 0.75 < high <= 1.0)
    True
    """
    check_boot(n_boot, level)
    values = np.asarray(per_query, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise DermretrError(f"per-query values must be 1-D or 2-D, got shape {values.shape}")
    one_d = values.ndim == 1
    if one_d:
        values = values[:, None]
    n_q, n_m = values.shape
    if groups is not None:
        codes = class_codes(groups)[0]
        if len(codes) != n_q:
            raise DermretrError(f"groups has {len(codes)} labels for {n_q} queries; give one label per query")
    if n_q == 0 or n_boot == 0:
        low = high = np.full(n_m, np.nan)
    elif groups is not None:
        means = stratified_means(values, codes, n_boot, seed)
        alpha = (1.0 - float(level)) / 2.0
        low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    else:
        rng = np.random.default_rng(seed)
        block = max(1, 2**18 // n_q)  # depends on n_q only: 1-D and 2-D calls resample alike
        means = np.empty((n_boot, n_m))
        for start in range(0, n_boot, block):
            stop = min(n_boot, start + block)
            idx = rng.integers(0, n_q, size=(stop - start, n_q))
            means[start:stop] = values[idx].mean(axis=1)
        alpha = (1.0 - float(level)) / 2.0
        low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    if one_d:
        return float(low[0]), float(high[0])
    return low, high


def sign_flip_p(d: np.ndarray, n_perm: int, rng: np.random.Generator,
                weights: np.ndarray | None = None) -> np.ndarray:
    """Two-sided p-values ``[n_metrics]`` of a paired sign-flip permutation test.

    ``d`` ``[n_queries, n_metrics]`` holds per-query differences (H0: the two runs are exchangeable on every
    query).  With ``weights`` ``[n_queries]`` (summing to 1) the statistic is the weighted mean, e.g. the macro
    mean.

    >>> d = np.array([[1.0], [1.0], [1.0], [1.0]])
    >>> p = sign_flip_p(d, 999, np.random.default_rng(0))   # 2 of the 16 sign patterns are as extreme
    >>> bool(0.08 < p[0] < 0.17)
    True
    """
    if weights is not None:  # sum_i w_i s_i d_i = mean_i s_i (n w_i d_i): the same test on rescaled differences
        d = d * (len(d) * np.asarray(weights, dtype=np.float64))[:, None]
    obs = np.abs(d.mean(axis=0))
    tol = 1e-12 * np.maximum(1.0, obs)
    exceed = np.zeros(d.shape[1])
    n = len(d)
    block = max(1, 2**20 // max(n, 1))
    for start in range(0, n_perm, block):
        k = min(n_perm, start + block) - start
        signs = rng.choice(np.array([-1.0, 1.0]), size=(k, n))
        exceed += (np.abs(signs @ d / n) >= obs - tol).sum(axis=0)
    return (1.0 + exceed) / (1.0 + n_perm)


def paired_difference(per_query_a: pd.DataFrame, per_query_b: pd.DataFrame,
                      metrics: Sequence[str] = ("recall@1", "map@10"), n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0, average: str = "micro", by: str | None = None) -> pd.DataFrame:
    """Run a minus run b on the same queries, one row per metric.

    Queries are paired by case (and modification, for the modify protocol; target range, for the tone one);
    tables that cover different queries or disagree on relevance are refused.
    Queries without a relevant case are left out.  Each row gives both means,
    the mean per-query difference ``a - b`` with a percentile bootstrap CI
    (the metrics share the resamples) and the two-sided p-value of a paired
    sign-flip permutation test with ``n_boot`` permutations.

    With ``average="macro"`` the means and the difference are macro means
    over the classes of column ``by`` of the first table (the mean over
    classes of the class means), the bootstrap resamples queries within
    their class and the permutation test flips the class-weighted
    differences.

    Parameters
    ----------
    per_query_a, per_query_b : DataFrame
        Per-query metrics of two runs (:func:`~dermretr.evaluate.case_search`,
        :func:`~dermretr.evaluate.modify_search`, :func:`~dermretr.evaluate.evaluate_run`).
    metrics : sequence of str
        Metric columns, e.g. ``("recall@1", "map@10")``.
    n_boot : int
        Bootstrap resamples and permutations (0: no CI, no p-value).
    level : float
        Coverage of the CI.
    seed : int
        Seed of resampling and permutations.
    average : {"micro", "macro"}
        Mean over queries, or over the classes of ``by``.
    by : str, optional
        The class column of a macro average (default: ``target_range`` for tone-protocol tables, else
        ``diagnosis_group``).

    Returns
    -------
    DataFrame
        Indexed by metric: ``n_queries, mean_a, mean_b, difference, ci_low, ci_high, p_value``
        (``attrs`` hold ``level``, ``n_boot``, ``average`` and, for macro, ``by`` and ``n_classes``).

    Examples
    --------
    >>> a = pd.DataFrame({"case_id": list("abcdef"), "n_relevant": 1, "recall@1": [1.0, 1, 1, 1, 1, 0]})
    >>> b = a.assign(**{"recall@1": [0.0, 1, 0, 1, 0, 0]})[::-1]          # any row order
    >>> t = paired_difference(a, b, metrics=["recall@1"], n_boot=500)
    >>> t.loc["recall@1", ["mean_a", "mean_b", "difference"]].tolist()
    [0.8333333333333334, 0.3333333333333333, 0.5]
    >>> a["diagnosis_group"] = ["NEV", "NEV", "NEV", "NEV", "MEL", "MEL"]
    >>> t = paired_difference(a, b, metrics=["recall@1"], n_boot=500, average="macro")
    >>> t.loc["recall@1", ["mean_a", "mean_b", "difference"]].tolist()   # (1 + 1/2)/2, (1/2 + 0)/2
    [0.75, 0.25, 0.5]
    """
    per_query_a = check_per_query(per_query_a, "first per-query table")
    per_query_b = check_per_query(per_query_b, "second per-query table")
    metrics = check_metrics(per_query_a, metrics)
    check_metrics(per_query_b, metrics)
    check_boot(n_boot, level)
    check_average(average)
    by = macro_by(per_query_a, by)
    rows_b = pair_tables(per_query_a, per_query_b)
    usable = per_query_a["n_relevant"].to_numpy() > 0
    if not usable.any():
        raise DermretrError("no query has a relevant case: nothing to compare")
    a = per_query_a.loc[usable, list(metrics)].to_numpy(dtype=np.float64)
    b = per_query_b.iloc[rows_b[usable]][list(metrics)].to_numpy(dtype=np.float64)
    if np.isnan(a).any() or np.isnan(b).any():
        raise DermretrError("the per-query tables have missing metric values; evaluate both runs again")
    d = a - b
    attrs = {"level": level, "n_boot": n_boot, "average": average}
    if average == "macro":
        codes = column_classes(per_query_a[usable], by)
        w = class_weights(codes)
        low, high = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed, groups=codes)
        p = (sign_flip_p(d, n_boot, np.random.default_rng(seed), weights=w) if n_boot
             else np.full(len(metrics), np.nan))
        mean_a, mean_b, diff = macro_mean(a, codes), macro_mean(b, codes), macro_mean(d, codes)
        attrs.update(by=by, n_classes=int(len(np.unique(codes))))
    else:
        low, high = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
        p = sign_flip_p(d, n_boot, np.random.default_rng(seed)) if n_boot else np.full(len(metrics), np.nan)
        mean_a, mean_b, diff = a.mean(axis=0), b.mean(axis=0), d.mean(axis=0)
    out = pd.DataFrame({"n_queries": len(d), "mean_a": mean_a, "mean_b": mean_b,
                        "difference": diff, "ci_low": low, "ci_high": high, "p_value": p},
                       index=pd.Index(metrics, name="metric"))
    out.attrs.update(attrs)
    return out
