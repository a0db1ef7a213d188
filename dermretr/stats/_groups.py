"""Resampling statistics of group means: gap intervals, permutation tests, Holm, direct standardisation.

Stratified bootstrap, simultaneous gap intervals, permutation tests, Holm's
adjustment, and group means directly standardised to a common mix of strata.
Self-contained (numpy only), for the difference (max - min) and ratio (min /
max) of per-group means of per-query metrics ``[n_queries, n_metrics]``; the
group statistics of :mod:`dermretr.stats` (the fairness slices use them).

Examples
--------
>>> means = np.array([[0.8, 0.4], [0.4, 0.4]])
>>> diff, ratio = group_gap(means, axis=0)
>>> diff.round(3).tolist(), ratio.round(3).tolist()
([0.4, 0.0], [0.5, 1.0])
>>> holm_adjust(np.array([0.01, 0.04, np.nan])).round(3).tolist()
[0.02, 0.04, nan]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "means_by_group",
    "group_gap",
    "group_bootstrap_means",
    "basic_interval",
    "permutation_gap_p",
    "paired_gap_change_p",
    "simultaneous_halfwidths",
    "gap_intervals",
    "holm_adjust",
    "standardised_means",
    "standardised_bootstrap_means",
    "stratified_permutation_gap_p",
]


def means_by_group(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """``[G, m]`` means of the rows of ``values`` ``[n, m]`` per group code ``0..G-1`` (NaN for empty groups).

    >>> means_by_group(np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 2]), 3).ravel().tolist()
    [2.0, nan, 5.0]
    """
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    sums = np.stack([np.bincount(codes, weights=values[:, j], minlength=n_groups)
                     for j in range(values.shape[1])], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def group_gap(means: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Difference (max - min) and ratio (min / max; NaN when max <= 0) of group means along ``axis``."""
    hi, lo = means.max(axis=axis), means.min(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), np.nan)
    return hi - lo, ratio


def group_bootstrap_means(parts: Sequence[tuple[np.ndarray, ...]], n_boot: int,
                          rng: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap means that resample queries within each group (the same indices for every array of a group).

    ``parts[g]`` holds arrays ``[n_g, m]``; returns, per array position, ``[n_boot, G, m]`` means.
    """
    n_arr = len(parts[0])
    out = [np.empty((n_boot, len(parts), parts[0][0].shape[1])) for _ in range(n_arr)]
    for g, arrays in enumerate(parts):
        n_g = arrays[0].shape[0]
        block = max(1, 2**18 // max(n_g, 1))
        for start in range(0, n_boot, block):
            stop = min(n_boot, start + block)
            idx = rng.integers(0, n_g, size=(stop - start, n_g))
            for a, arr in enumerate(arrays):
                out[a][start:stop, g] = arr[idx].mean(axis=1)
    return out


def basic_interval(samples: np.ndarray, estimate: np.ndarray, level: float, lo: float = -np.inf,
                   hi: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Basic (reverse percentile) bootstrap interval ``2 * estimate - quantiles``, clipped to ``[lo, hi]``."""
    alpha = (1.0 - float(level)) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q_low, q_high = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    return np.clip(2 * estimate - q_high, lo, hi), np.clip(2 * estimate - q_low, lo, hi)


def permutation_gap_p(values: np.ndarray, codes: np.ndarray, n_groups: int, observed: np.ndarray, n_perm: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Permutation p-value of the difference (max - min) of group means: group labels shuffled."""
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    exceed = np.zeros(values.shape[1])
    tol = 1e-12 * np.maximum(1.0, np.abs(observed))
    block = max(1, 2**20 // max(len(codes), 1))
    for start in range(0, n_perm, block):
        b = min(n_perm, start + block) - start
        perms = rng.permuted(np.broadcast_to(codes, (b, len(codes))), axis=1)
        means = np.stack([(perms == g).astype(float) @ values for g in range(n_groups)], axis=1) / counts[None, :, None]
        diff, _ = group_gap(means, axis=1)
        exceed += (diff >= observed - tol).sum(axis=0)
    return (1.0 + exceed) / (1.0 + n_perm)


def paired_gap_change_p(a: np.ndarray, d: np.ndarray, codes: np.ndarray, n_groups: int, change: np.ndarray,
                        n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """Two-sided permutation p-value of the change of the difference (max - min) of group means between two runs.

    ``a`` ``[n, m]`` holds the first run's per-query values, ``d`` the second's
    minus the first's, ``codes`` the group ``0..G-1`` of each query and
    ``change`` the observed change (second gap - first gap); the two runs'
    results are swapped per query (H0: the runs are exchangeable).
    """
    n_g = np.bincount(codes, minlength=n_groups).astype(float)
    sum_a = np.stack([a[codes == g].sum(axis=0) for g in range(n_groups)])
    sum_b = sum_a + np.stack([d[codes == g].sum(axis=0) for g in range(n_groups)])
    exceed = np.zeros(a.shape[1])
    tol = 1e-12 * np.maximum(1.0, np.abs(change))
    block = max(1, 2**20 // max(len(codes), 1))
    for start in range(0, n_perm, block):
        k = min(n_perm, start + block) - start
        swap = rng.integers(0, 2, size=(k, len(codes))).astype(float)
        moved = np.stack([swap[:, codes == g] @ d[codes == g] for g in range(n_groups)], axis=1)
        ma = (sum_a[None] + moved) / n_g[None, :, None]
        mb = (sum_b[None] - moved) / n_g[None, :, None]
        stat = group_gap(mb, axis=1)[0] - group_gap(ma, axis=1)[0]
        exceed += (np.abs(stat) >= np.abs(change) - tol).sum(axis=0)
    return (1.0 + exceed) / (1.0 + n_perm)


def simultaneous_halfwidths(boot: np.ndarray, estimate: np.ndarray, level: float) -> np.ndarray:
    """Half-widths ``c * se`` of intervals holding jointly for every column (bootstrap max-t).

    ``boot`` is ``[n_boot, K, m]``, ``estimate`` ``[K, m]``; ``se`` is the bootstrap standard error of
    each column and ``c`` the ``level`` quantile of the largest standardised deviation over the K columns.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(boot, axis=0, ddof=1)
        t = np.where(se[None] > 0, np.abs(boot - estimate[None]) / np.where(se > 0, se, 1.0)[None], 0.0)
        c = np.nanquantile(np.nanmax(t, axis=1), level, axis=0)
    return c[None, :] * se


def gap_intervals(boot: np.ndarray, means: np.ndarray,
                  level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simultaneous intervals of the difference (max - min) and ratio (min / max) of group means.

    ``boot`` is ``[n_boot, G, m]`` (:func:`group_bootstrap_means`), ``means``
    ``[G, m]``; returns ``(diff_low, diff_high, ratio_low, ratio_high)``.
    The difference is the largest pairwise difference: with intervals ``[L, U]``
    holding jointly for every pair's difference (:func:`simultaneous_halfwidths`),
    it lies in ``[max(0, max over pairs of max(L, -U)), max over pairs of max(U, -L)]``.
    The ratio uses joint intervals ``[l, u]`` of the group means: it lies in
    ``[min l / max u, min u / max l]``.  Conservative, but unlike percentile
    intervals of max - min (biased upwards: they exclude 0 for groups that do
    not differ) they cover the true gap.
    """
    n_groups = means.shape[0]
    pairs = [(i, j) for i in range(n_groups) for j in range(i + 1, n_groups)]
    est = np.stack([means[i] - means[j] for i, j in pairs])
    boot_d = np.stack([boot[:, i] - boot[:, j] for i, j in pairs], axis=1)
    hw = simultaneous_halfwidths(boot_d, est, level)
    low, high = est - hw, est + hw
    d_low = np.clip(np.maximum(low, -high).max(axis=0), 0.0, 1.0)
    d_high = np.clip(np.maximum(high, -low).max(axis=0), 0.0, 1.0)
    hw = simultaneous_halfwidths(boot, means, level)
    lo, up = np.clip(means - hw, 0.0, None), means + hw
    with np.errstate(invalid="ignore", divide="ignore"):
        r_low = np.where(up.max(axis=0) > 0, lo.min(axis=0) / up.max(axis=0), 0.0)
        r_high = np.where(lo.max(axis=0) > 0, up.min(axis=0) / lo.max(axis=0), 1.0)
    return d_low, d_high, np.clip(r_low, 0.0, 1.0), np.clip(r_high, 0.0, 1.0)


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of p-values for multiple testing (NaN stays NaN, not counted)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


# ----------------------------------------------------------------------------- direct standardisation


def standardised_means(values: np.ndarray, codes: np.ndarray, strata: np.ndarray, weights: np.ndarray,
                       n_groups: int) -> np.ndarray:
    """``[G, m]`` directly standardised means: ``sum_s weights[s] * (mean of group g's values in stratum s)``.

    ``codes`` holds each row's group ``0..G-1``, ``strata`` its stratum
    ``0..S-1``; ``weights`` ``[S]`` is the standard mix (summing to 1; strata of
    weight 0 are left out).  A group without rows in a stratum of positive
    weight gets NaN.

    >>> v = np.array([[1.0], [1.0], [0.0], [1.0], [0.0], [0.0]])
    >>> standardised_means(v, np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 0, 1, 1]), np.array([0.5, 0.5]), 2)
    array([[0.5],
           [0.5]])
    """
    out = np.zeros((n_groups, values.shape[1]))
    for s in np.flatnonzero(np.asarray(weights) > 0):
        sel = strata == s
        out += weights[s] * means_by_group(values[sel], codes[sel], n_groups)
    return out


def standardised_bootstrap_means(values: np.ndarray, codes: np.ndarray, strata: np.ndarray, weights: np.ndarray,
                                 n_groups: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, G, m]`` standardised means of resamples drawn within each group x stratum cell.

    Every cell keeps its size and the standard ``weights`` stay fixed (as in the
    usual intervals of directly standardised rates), so only the within-cell
    means vary; every cell of positive weight must have rows.
    """
    used = np.flatnonzero(np.asarray(weights) > 0)
    parts = [(values[(codes == g) & (strata == s)],) for g in range(n_groups) for s in used]
    (boot,) = group_bootstrap_means(parts, n_boot, rng)
    boot = boot.reshape(n_boot, n_groups, len(used), values.shape[1])
    return np.einsum("bgsm,s->bgm", boot, np.asarray(weights, dtype=float)[used])


def stratified_permutation_gap_p(values: np.ndarray, codes: np.ndarray, strata: np.ndarray, weights: np.ndarray,
                                 n_groups: int, observed: np.ndarray, n_perm: int,
                                 rng: np.random.Generator) -> np.ndarray:
    """Permutation p-value of the difference (max - min) of standardised group means, labels shuffled per stratum.

    The group labels are permuted *within* each stratum, which keeps every
    group x stratum count (H0: within each stratum the values do not depend on
    the group); rows of strata of weight 0 take no part.
    """
    used = np.flatnonzero(np.asarray(weights) > 0)
    exceed = np.zeros(values.shape[1])
    tol = 1e-12 * np.maximum(1.0, np.abs(observed))
    n_used = int(np.isin(strata, used).sum())
    block = max(1, 2**20 // max(n_used, 1))
    cells = [(values[strata == s], codes[strata == s], np.bincount(codes[strata == s], minlength=n_groups),
              float(weights[s])) for s in used]
    for start in range(0, n_perm, block):
        b = min(n_perm, start + block) - start
        means = np.zeros((b, n_groups, values.shape[1]))
        for vals, cds, counts, w in cells:
            perms = rng.permuted(np.broadcast_to(cds, (b, len(cds))), axis=1)
            sums = np.stack([(perms == g).astype(float) @ vals for g in range(n_groups)], axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                means += w * sums / counts[None, :, None]
        diff, _ = group_gap(means, axis=1)
        exceed += (diff >= observed - tol).sum(axis=0)
    return (1.0 + exceed) / (1.0 + n_perm)
