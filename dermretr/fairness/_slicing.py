"""Retrieval quality per skin-tone group: metrics with CIs and gaps, their printable view, and two runs compared.

:func:`slice_metrics` gives each group's mean metric (fairlearn's
``MetricFrame``) with a bootstrap CI, the overall value, and the difference
and ratio across groups with simultaneous intervals and a permutation
p-value; :func:`format_slices` prints it; :func:`compare_runs` compares two
models on the same queries, per group and by the change of the gap.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._checks import check_boot, check_int
from .._errors import DataWarning, DermretrError
from ..stats import (
    basic_interval,
    bootstrap_ci,
    check_metrics,
    check_per_query,
    gap_intervals,
    group_bootstrap_means,
    group_gap,
    holm_adjust,
    means_by_group,
    pair_tables,
    paired_gap_change_p,
    permutation_gap_p,
    sign_flip_p,
)
from ._casemix import MIX_THRESHOLD, STRATUM, case_mix_note, mix_distances, query_strata
from ._groups import (
    GROUPING_TITLES,
    GROUPINGS,
    HINTS,
    UNKNOWN,
    check_by,
    estimate_note,
    gap_groups,
    is_estimated,
    query_groups,
    select_groups,
)

__all__ = ["slice_metrics", "format_slices", "compare_runs"]

_DIFF, _RATIO, _OVERALL = "difference (max - min)", "ratio (min / max)", "overall"


# ----------------------------------------------------------------------------- slicing


def _metric_frame(values: np.ndarray, groups: np.ndarray, metrics: Sequence[str]) -> Any:
    """Fairlearn's MetricFrame of per-query means: y_true holds the per-query metric values."""
    from fairlearn.metrics import MetricFrame

    def column_mean(j: int) -> Any:
        def mean(y_true: Any, y_pred: Any) -> float:
            y = np.asarray(y_true, dtype=float)
            return float(np.mean(y.reshape(len(y), -1)[:, j]))  # one metric: fairlearn passes a 1-D y_true

        return mean

    return MetricFrame(metrics={m: column_mean(j) for j, m in enumerate(metrics)}, y_true=values, y_pred=values,
                       sensitive_features=pd.Series(groups, name="group"))


def slice_metrics(per_query: pd.DataFrame, cases: pd.DataFrame | None = None, by: str = "fitzpatrick",
                  metrics: Sequence[str] = ("recall@1", "map@10"), n_boot: int = 1000, ci: float = 0.95,
                  min_group: int = 20, groups: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """Retrieval metrics per skin-tone group, with CIs, the overall value, the gap and the ratio.

    Means per group and overall come from fairlearn's
    :class:`~fairlearn.metrics.MetricFrame`, with the per-query metric values
    as ``y_true`` and their mean as the metric; difference and ratio are its
    ``difference``/``ratio`` (``between_groups``) over the groups of the gap.
    fairlearn's own bootstrap resamples the whole table and calls the metric
    per group and resample, so the intervals are computed here instead:
    per group with :func:`dermretr.evaluate.bootstrap_ci` (as in
    ``metrics.json``); for the difference and ratio from resampling queries
    within each group (stratified): intervals of every pairwise difference
    (and of every group mean) that hold jointly, whose extremes bound the
    gap and the ratio - conservative, but not biased like a percentile
    interval of max - min, which excludes 0 even for groups that do not
    differ; the p-value of the difference comes from shuffling the group
    labels (H0: quality does not depend on the group).

    The gap is taken over the known skin-tone groups with at least
    ``min_group`` queries; when fewer than two groups are that large, over
    every known group with queries (noted).  ``"unknown"`` is reported but
    never part of the gap.  The largest difference between noisy small
    groups is biased upwards: read its CI and p-value, not the value alone.

    Parameters
    ----------
    per_query : DataFrame
        Per-query metrics of one run (:func:`dermretr.evaluate.case_search`,
        ``modify_search`` or ``evaluate_run``): ``case_id``, ``n_relevant``
        and the metric columns.  Queries without a relevant case are left out.
    cases : DataFrame, optional
        The case table the queries come from; the skin tone is read from it
        (needed for estimated groupings).  Every query must be one of its
        cases, with the same patient, diagnosis group and skin type, else the
        table is refused as coming from other data.  Without it, the
        per-query table's own columns are used.
    by : str
        A grouping of :data:`GROUPINGS`.
    metrics : strs
        Metric columns, e.g. ``("recall@1", "map@10")``.
    n_boot : int
        Bootstrap resamples for the CIs and permutations for the p-value (0: none).
    ci : float
        Coverage of the intervals.
    min_group : int
        Groups with fewer queries are flagged (``small``).
    groups : strs, optional
        Report (and take the gap and the overall value over) only these
        groups, e.g. ``["I-II", "V-VI"]``; each must have queries.
    seed : int
        Seed of the resampling.

    Returns
    -------
    DataFrame
        One row per group and metric, then ``overall``, ``difference (max -
        min)`` and ``ratio (min / max)`` per metric, with the columns
        ``group, kind, metric, n_queries, value, ci_low, ci_high, p_value,
        small, note`` (``kind``: group, overall, difference or ratio;
        ``p_value`` only for the difference).  Every group of the scale is
        listed, with 0 queries when it has none.  ``attrs`` hold ``by``,
        ``ci``, ``n_boot``, ``min_group``, ``gap_groups``, ``estimated``
        (the groups come from the pixels), ``n_unknown`` and
        ``unknown_share`` (queries of unknown skin tone, before ``groups``),
        and ``case_mix_tvd``: how far the gap groups' diagnosis mixes are from
        their pooled mix (the largest total variation distance; NaN without a
        ``diagnosis_group`` column).  :func:`case_mix` shows the mixes and
        :func:`adjusted_gap` the gap standardised to a common mix.

    Warns
    -----
    DataWarning
        For an estimated grouping: the groups are estimated, with the share of
        unknowns; the intervals here resample queries only, and
        :func:`~dermretr.fairness.gap_uncertainty` adds the estimate's own
        uncertainty (``dermretr fairness`` prints it as one warning line).
        When the diagnosis mix of a gap group is further than
        :data:`~dermretr.fairness.MIX_THRESHOLD` (0.2, total variation
        distance) from the gap groups' pooled mix: the raw gap mixes case mix
        with skin tone; read :func:`adjusted_gap` beside it.

    Examples
    --------
    >>> pq = pd.DataFrame({"case_id": list("abcdef"), "n_relevant": [1, 1, 1, 1, 1, 0],
    ...                    "fitzpatrick": [1, 1, 6, 6, pd.NA, 6], "recall@1": [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]})
    >>> t = slice_metrics(pq, metrics=["recall@1"], n_boot=200, min_group=2)
    >>> t[["group", "n_queries", "value", "small"]].to_numpy().tolist()  # doctest: +NORMALIZE_WHITESPACE
    [['I', 2, 1.0, False], ['II', 0, nan, True], ['III', 0, nan, True], ['IV', 0, nan, True],
     ['V', 0, nan, True], ['VI', 2, 0.5, False], ['unknown', 1, 0.0, True], ['overall', 5, 0.6, False],
     ['difference (max - min)', 4, 0.5, False], ['ratio (min / max)', 4, 0.5, False]]
    >>> bool(t["ci_low"].iloc[-2] <= 0.5 <= t["ci_high"].iloc[-2]), t["note"].iloc[-2]
    (True, 'max I, min VI')
    """
    per_query = check_per_query(per_query)
    check_by(by)
    metrics = check_metrics(per_query, metrics)
    check_boot(n_boot, ci)
    check_int(min_group, "min_group")
    tones = query_groups(per_query, cases, by)
    strata = query_strata(per_query, cases, STRATUM)  # the diagnosis mix of each group (None without the column)
    usable = per_query["n_relevant"].to_numpy() > 0
    if not usable.any():
        raise DermretrError("no query has a relevant case: nothing to slice")
    tones = tones[usable]
    strata = strata[usable] if strata is not None else None
    values = per_query.loc[usable, list(metrics)].to_numpy(dtype=np.float64)
    n_unknown, n_usable = int((tones == UNKNOWN).sum()), len(tones)
    keep, levels = select_groups(tones, by, groups)
    if keep is not None:
        tones, values = tones[keep], values[keep]
        strata = strata[keep] if strata is not None else None
    codes = np.array([levels.index(t) for t in tones], dtype=np.int64)
    counts = np.bincount(codes, minlength=len(levels))
    show = [i for i, g in enumerate(levels) if g != UNKNOWN or counts[i] > 0]
    gap_idx, gap_note = gap_groups(levels, counts, min_group)
    rng = np.random.default_rng(seed)

    frame = _metric_frame(values, tones, metrics)
    by_group = frame.by_group
    overall = frame.overall
    rows = []
    for i in show:
        g = levels[i]
        n = int(counts[i])
        if n:
            low, high = bootstrap_ci(values[codes == i], n_boot=n_boot, level=ci, seed=seed)
        else:
            low = high = np.full(len(metrics), np.nan)
        note = ("no queries" if n == 0 else "unknown skin tone: not part of the gap" if g == UNKNOWN
                else f"fewer than {min_group} queries" if n < min_group else "")
        for j, m in enumerate(metrics):
            rows.append({"group": g, "kind": "group", "metric": m, "n_queries": n,
                         "value": float(by_group.loc[g, m]) if n else np.nan, "ci_low": float(low[j]),
                         "ci_high": float(high[j]), "p_value": np.nan, "small": n < min_group, "note": note})
    low, high = bootstrap_ci(values, n_boot=n_boot, level=ci, seed=seed)
    for j, m in enumerate(metrics):
        rows.append({"group": _OVERALL, "kind": "overall", "metric": m, "n_queries": len(values),
                     "value": float(overall[m]), "ci_low": float(low[j]), "ci_high": float(high[j]),
                     "p_value": np.nan, "small": len(values) < min_group, "note": ""})
    n_gap = int(counts[gap_idx].sum()) if gap_idx else 0
    diff = ratio = np.full(len(metrics), np.nan)
    d_low = d_high = r_low = r_high = p = np.full(len(metrics), np.nan)
    notes = [gap_note] * len(metrics)
    if gap_idx:
        in_gap = np.isin(codes, gap_idx)
        gap_frame = _metric_frame(values[in_gap], tones[in_gap], metrics)
        diff = gap_frame.difference(method="between_groups")[list(metrics)].to_numpy(dtype=float)
        ratio = gap_frame.ratio(method="between_groups")[list(metrics)].to_numpy(dtype=float)
        means = np.stack([by_group.loc[levels[i], list(metrics)].to_numpy(dtype=float) for i in gap_idx])
        notes = []
        for j in range(len(metrics)):
            hi_g, lo_g = levels[gap_idx[int(np.argmax(means[:, j]))]], levels[gap_idx[int(np.argmin(means[:, j]))]]
            notes.append("; ".join(x for x in (f"max {hi_g}, min {lo_g}", gap_note) if x))
        if n_boot:
            parts = [(values[codes == i],) for i in gap_idx]
            (boot,) = group_bootstrap_means(parts, n_boot, rng)
            d_low, d_high, r_low, r_high = gap_intervals(boot, means, ci)
            sub_codes = np.searchsorted(gap_idx, codes[in_gap])
            p = permutation_gap_p(values[in_gap], sub_codes, len(gap_idx), diff, n_boot, rng)
    for j, m in enumerate(metrics):
        small = bool(gap_idx) and min(int(counts[i]) for i in gap_idx) < min_group
        rows.append({"group": _DIFF, "kind": "difference", "metric": m, "n_queries": n_gap, "value": float(diff[j]),
                     "ci_low": float(d_low[j]), "ci_high": float(d_high[j]), "p_value": float(p[j]),
                     "small": small, "note": notes[j]})
    for j, m in enumerate(metrics):
        rows.append({"group": _RATIO, "kind": "ratio", "metric": m, "n_queries": n_gap, "value": float(ratio[j]),
                     "ci_low": float(r_low[j]), "ci_high": float(r_high[j]), "p_value": np.nan,
                     "small": rows[-len(metrics)]["small"], "note": notes[j]})
    table = pd.DataFrame(rows, columns=["group", "kind", "metric", "n_queries", "value", "ci_low", "ci_high",
                                        "p_value", "small", "note"])
    table["n_queries"] = table["n_queries"].astype("Int64")
    table.attrs.update({"by": by, "ci": float(ci), "n_boot": int(n_boot), "min_group": int(min_group),
                        "gap_groups": [levels[i] for i in gap_idx], "estimated": is_estimated(by),
                        "n_unknown": n_unknown, "unknown_share": n_unknown / n_usable})
    if is_estimated(by):
        warnings.warn(estimate_note(by, n_unknown, n_usable), DataWarning, stacklevel=2)
    tvd = np.full(len(gap_idx), np.nan)
    if strata is not None and len(gap_idx) >= 2:
        in_gap = np.isin(codes, gap_idx)
        names, s_codes = np.unique(strata[in_gap], return_inverse=True)
        g_codes = np.searchsorted(gap_idx, codes[in_gap])
        mix = np.bincount(g_codes * len(names) + s_codes, minlength=len(gap_idx) * len(names))
        mix = mix.reshape(len(gap_idx), len(names))
        tvd = mix_distances(mix, mix.sum(axis=0))
    table.attrs["case_mix_tvd"] = float(tvd.max()) if np.isfinite(tvd).any() else np.nan
    if np.isfinite(tvd).any() and tvd.max() > MIX_THRESHOLD:
        worst = levels[gap_idx[int(np.argmax(tvd))]]
        warnings.warn(case_mix_note(worst, float(tvd.max())), DataWarning, stacklevel=2)
    return table


def format_slices(table: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """A printable view of :func:`slice_metrics`: one row per group, one column per metric.

    Cells read ``"value [ci_low, ci_high]"``; the difference adds its
    p-value; groups with fewer than ``min_group`` queries are marked ``*``.
    For estimated groups the index's name says so, with the share of unknowns.

    >>> pq = pd.DataFrame({"case_id": list("abcd"), "n_relevant": 1, "fitzpatrick": [1, 1, 6, 6],
    ...                    "recall@1": [1.0, 1.0, 0.0, 1.0]})
    >>> format_slices(slice_metrics(pq, metrics=["recall@1"], n_boot=0, min_group=2)).loc["VI"].tolist()
    ['2', '0.500', '']
    """
    need = {"group", "kind", "metric", "n_queries", "value", "ci_low", "ci_high", "p_value", "small", "note"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise DermretrError("format_slices needs the table of slice_metrics")
    d2 = max(decimals - 1, 1)
    metrics = list(dict.fromkeys(table["metric"]))
    labels = list(dict.fromkeys(table["group"]))
    name = GROUPING_TITLES.get(table.attrs.get("by", ""), "group")
    if table.attrs.get("estimated"):
        name += f"; {table.attrs.get('unknown_share', float('nan')):.1%} of queries unknown"
    out = pd.DataFrame(index=pd.Index(labels, name=name),
                       columns=["queries", *metrics, "note"], dtype=object)
    for label in labels:
        rows = table[table["group"] == label]
        first = rows.iloc[0]
        n = first["n_queries"]
        star = "*" if bool(first["small"]) and first["kind"] == "group" and n else ""
        out.loc[label, "queries"] = "" if first["kind"] in ("difference", "ratio") else f"{n}{star}"
        notes = []
        for _, r in rows.iterrows():
            v, lo, hi, p = r["value"], r["ci_low"], r["ci_high"], r["p_value"]
            if not np.isfinite(v):
                cell = "n/a" if n else "-"
            elif np.isfinite(lo) and np.isfinite(hi):
                cell = f"{v:.{decimals}f} [{lo:.{d2}f}, {hi:.{d2}f}]"
            else:
                cell = f"{v:.{decimals}f}"
            if np.isfinite(p):
                cell += f" p={p:.3f}" if p >= 0.001 else " p<0.001"
            out.loc[label, r["metric"]] = cell
            if r["note"] and r["note"] not in notes:
                notes.append(r["note"] if len(metrics) == 1 or r["kind"] not in ("difference", "ratio")
                             else f"{r['metric']}: {r['note']}")
        out.loc[label, "note"] = "; ".join(notes)
    return out


# ----------------------------------------------------------------------------- before / after


def compare_runs(per_query_a: pd.DataFrame, per_query_b: pd.DataFrame, cases: pd.DataFrame | None = None,
                 by: str = "fitzpatrick", metrics: Sequence[str] = ("recall@1", "map@10"), n_boot: int = 1000,
                 ci: float = 0.95, min_group: int = 20, seed: int = 0) -> pd.DataFrame:
    """Two models on the same queries (before and after a mitigation), per skin-tone group.

    For each group and overall: both means and the paired difference
    (after - before) with a percentile bootstrap CI over queries
    (:func:`dermretr.evaluate.bootstrap_ci` of the per-query differences) and
    the two-sided p-value of a paired sign-flip permutation test (H0: the two
    models are exchangeable on every query); ``p_holm`` adjusts the group
    p-values of a metric for multiple testing (Holm).  The ``gap`` row gives
    the difference (max - min across groups, as in :func:`slice_metrics`)
    before and after, and its change with a stratified paired bootstrap CI
    (basic interval; approximate: the permutation p-value is the test) and a
    permutation p-value (the two models' results swapped per query).

    Parameters
    ----------
    per_query_a, per_query_b : DataFrame
        Per-query metrics of the "before" and "after" runs, on the same
        queries (paired by ``case_id``, and the modification for the modify
        protocol).
    cases, by, metrics, n_boot, ci, min_group, seed
        As in :func:`slice_metrics`.

    Returns
    -------
    DataFrame
        ``group, kind, metric, n_queries, before, after, difference, ci_low,
        ci_high, p_value, p_holm, small, note``; ``kind`` is group, overall or
        gap.  ``attrs`` hold ``by``, ``ci``, ``n_boot``, ``gap_groups``,
        ``estimated``, ``n_unknown`` and ``unknown_share``; estimated groups
        warn as in :func:`slice_metrics`.

    Examples
    --------
    >>> pq = pd.DataFrame({"case_id": list("abcdefgh"), "n_relevant": 1,
    ...                    "fitzpatrick": [1, 1, 1, 1, 6, 6, 6, 6], "recall@1": [1.0, 1, 1, 1, 0, 0, 0, 1]})
    >>> after = pq.assign(**{"recall@1": [1.0, 1, 1, 1, 1, 1, 0, 1]})
    >>> t = compare_runs(pq, after, metrics=["recall@1"], n_boot=500, min_group=2)
    >>> t.set_index("group").loc[["VI", "gap"], ["before", "after", "difference"]].to_numpy().tolist()
    [[0.25, 0.75, 0.5], [0.75, 0.25, -0.5]]
    >>> float(compare_runs(pq, pq, metrics=["recall@1"], n_boot=100, min_group=2)["p_value"].max())
    1.0
    """
    per_query_a = check_per_query(per_query_a, "first per-query table")
    per_query_b = check_per_query(per_query_b, "second per-query table")
    check_by(by)
    metrics = check_metrics(per_query_a, metrics)
    check_metrics(per_query_b, metrics)
    check_boot(n_boot, ci)
    check_int(min_group, "min_group")
    rows_b = pair_tables(per_query_a, per_query_b)
    tones = query_groups(per_query_a, cases, by)
    usable = per_query_a["n_relevant"].to_numpy() > 0
    if not usable.any():
        raise DermretrError("no query has a relevant case: nothing to compare")
    tones = tones[usable]
    if not (tones != UNKNOWN).any():
        raise DermretrError(f"no query has a known {GROUPING_TITLES[by]}; {HINTS[by]}")
    a = per_query_a.loc[usable, list(metrics)].to_numpy(dtype=np.float64)
    b = per_query_b.iloc[rows_b[usable]][list(metrics)].to_numpy(dtype=np.float64)
    d = b - a
    levels = [*GROUPINGS[by], UNKNOWN]
    codes = np.array([levels.index(t) for t in tones], dtype=np.int64)
    counts = np.bincount(codes, minlength=len(levels))
    rng = np.random.default_rng(seed)
    out = []

    def paired(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        low, high = bootstrap_ci(d[idx], n_boot=n_boot, level=ci, seed=seed)
        if not n_boot:
            return low, high, np.full(len(metrics), np.nan)
        return low, high, sign_flip_p(d[idx], n_boot, rng)

    group_rows = []
    for i, g in enumerate(levels):
        n = int(counts[i])
        if n == 0:
            continue
        idx = codes == i
        low, high, p = paired(idx)
        for j, m in enumerate(metrics):
            group_rows.append({"group": g, "kind": "group", "metric": m, "n_queries": n,
                               "before": float(a[idx, j].mean()), "after": float(b[idx, j].mean()),
                               "difference": float(d[idx, j].mean()), "ci_low": float(low[j]),
                               "ci_high": float(high[j]), "p_value": float(p[j]), "small": n < min_group,
                               "note": "unknown skin tone: not part of the gap" if g == UNKNOWN else
                               f"fewer than {min_group} queries" if n < min_group else ""})
    for m in metrics:
        of_m = [r for r in group_rows if r["metric"] == m]
        for r, ph in zip(of_m, holm_adjust(np.array([r["p_value"] for r in of_m]))):
            r["p_holm"] = float(ph)
    out += group_rows
    idx = np.ones(len(d), dtype=bool)
    low, high, p = paired(idx)
    for j, m in enumerate(metrics):
        out.append({"group": _OVERALL, "kind": "overall", "metric": m, "n_queries": len(d),
                    "before": float(a[:, j].mean()), "after": float(b[:, j].mean()),
                    "difference": float(d[:, j].mean()),
                    "ci_low": float(low[j]), "ci_high": float(high[j]), "p_value": float(p[j]), "p_holm": np.nan,
                    "small": len(d) < min_group, "note": ""})
    gap_idx, gap_note = gap_groups(levels, counts, min_group)
    gap_a = gap_b = change = c_low = c_high = p_gap = np.full(len(metrics), np.nan)
    if gap_idx:
        means_a = means_by_group(a, codes, len(levels))[gap_idx]
        means_b = means_by_group(b, codes, len(levels))[gap_idx]
        gap_a, _ = group_gap(means_a, axis=0)
        gap_b, _ = group_gap(means_b, axis=0)
        change = gap_b - gap_a
        if n_boot:
            boot_a, boot_b = group_bootstrap_means([(a[codes == i], b[codes == i]) for i in gap_idx], n_boot, rng)
            c_low, c_high = basic_interval(group_gap(boot_b, axis=1)[0] - group_gap(boot_a, axis=1)[0], change, ci)
            sel = np.isin(codes, gap_idx)
            sub = np.searchsorted(gap_idx, codes[sel])
            p_gap = paired_gap_change_p(a[sel], d[sel], sub, len(gap_idx), change, n_boot, rng)
    n_gap = int(counts[gap_idx].sum()) if gap_idx else 0
    for j, m in enumerate(metrics):
        out.append({"group": "gap", "kind": "gap", "metric": m, "n_queries": n_gap, "before": float(gap_a[j]),
                    "after": float(gap_b[j]), "difference": float(change[j]), "ci_low": float(c_low[j]),
                    "ci_high": float(c_high[j]), "p_value": float(p_gap[j]), "p_holm": np.nan,
                    "small": bool(gap_idx) and min(int(counts[i]) for i in gap_idx) < min_group,
                    "note": "; ".join(x for x in ("difference (max - min) across groups", gap_note) if x)})
    table = pd.DataFrame(out, columns=["group", "kind", "metric", "n_queries", "before", "after", "difference",
                                       "ci_low", "ci_high", "p_value", "p_holm", "small", "note"])
    table["n_queries"] = table["n_queries"].astype("Int64")
    n_unknown = int(counts[levels.index(UNKNOWN)])
    table.attrs.update({"by": by, "ci": float(ci), "n_boot": int(n_boot), "min_group": int(min_group),
                        "gap_groups": [levels[i] for i in gap_idx], "estimated": is_estimated(by),
                        "n_unknown": n_unknown, "unknown_share": n_unknown / len(d)})
    if is_estimated(by):
        warnings.warn(estimate_note(by, n_unknown, len(d)), DataWarning, stacklevel=2)
    return table
