"""How sure a gap by *estimated* skin tone is: the estimate's uncertainty propagated, and sensitivity scenarios.

:func:`gap_uncertainty` takes the per-query table of a run and groups whose
skin tone was estimated from the pixels (:func:`dermretr.skin_tone.estimate_skin_tone`)
and reports the gap of :func:`~dermretr.fairness.slice_metrics` three ways:
with its queries-only interval, with an interval that also carries the
estimate's uncertainty (multiple imputation of each query's true group), and
under sensitivity scenarios that move the unknown or doubtful estimates into
one group at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtr

from .._checks import check_boot, check_int
from .._errors import DermretrError
from ..color import ITA_CATEGORIES, ita_category
from ..stats import check_metrics, check_per_query, gap_intervals, group_bootstrap_means, group_gap, means_by_group
from ._groups import (
    GROUPING_TITLES,
    GROUPINGS,
    HINTS,
    UNKNOWN,
    check_by,
    gap_groups,
    is_estimated,
    query_cases,
    query_groups,
)

__all__ = ["LOW_CONFIDENCE", "gap_uncertainty"]

#: Estimates with a confidence below this are moved in the low-confidence scenarios of :func:`gap_uncertainty`.
LOW_CONFIDENCE = 0.5
#: The imputation conditions on the metrics binned jointly into at most this many cells.
_MAX_CELLS = 16
#: Interquartile range / standard deviation of a normal distribution.
_IQR_PER_SD = 1.349
_ITA_NAMES = [name for name, _, _ in ITA_CATEGORIES]
#: Category g holds the angles in (_LOWER[g], _UPPER[g]] (:func:`dermretr.color.ita_category`).
_LOWER = np.array([lo for _, lo, _ in ITA_CATEGORIES[:-1]] + [-np.inf])
_UPPER = np.r_[np.inf, _LOWER[:-1]]
_COLUMNS = ["metric", "kind", "scenario", "n_queries", "share_reassigned", "gap", "low", "high", "max_group",
            "min_group", "same_extremes", "note"]


def _numeric(rows: pd.DataFrame, column: str) -> np.ndarray | None:
    if column not in rows.columns:
        return None
    return pd.to_numeric(rows[column].astype(object), errors="coerce").astype(float).to_numpy()


def _measurement(rows: pd.DataFrame, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Each query's measurement model: ``phi`` ``[n, G]`` (where its ITA may lie) and its confidence ``[n]``.

    ``phi`` is the estimated group for certain, or, with ``ita_estimated``
    and a patch spread, the normal distribution ``N(ita, (iqr / 1.349)^2)``
    cut at the ITA categories.  The confidence is ``ita_confidence`` (1
    without the column), 0 for unknown estimates.
    """
    n = len(codes)
    known = codes < n_groups
    phi = np.zeros((n, n_groups))
    phi[np.flatnonzero(known), codes[known]] = 1.0
    conf_col = _numeric(rows, "ita_confidence")
    conf = np.ones(n) if conf_col is None else np.clip(np.nan_to_num(conf_col, nan=1.0), 0.0, 1.0)
    conf = np.where(known, conf, 0.0)
    angle, iqr = _numeric(rows, "ita_estimated"), _numeric(rows, "ita_iqr_estimated")
    spread = False
    if angle is not None and iqr is not None:
        sd = iqr / _IQR_PER_SD
        same = np.array([np.isfinite(a) and _ITA_NAMES.index(ita_category(a)) == c
                         for a, c in zip(angle, codes)], dtype=bool)
        ok = np.flatnonzero(known & same & np.isfinite(sd) & (sd > 0))
        if len(ok):
            spread = True
            z_hi = (_UPPER[None, :] - angle[ok, None]) / sd[ok, None]
            z_lo = (_LOWER[None, :] - angle[ok, None]) / sd[ok, None]
            phi[ok] = ndtr(z_hi) - ndtr(z_lo)
            phi[ok] /= phi[ok].sum(axis=1, keepdims=True)
    return phi, conf, {"has_confidence": conf_col is not None, "has_spread": spread}


def _outcome_cells(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Cell of each query's metrics: every metric binned (its values when few, else quantiles), jointly."""
    per = max(2, int(round(_MAX_CELLS ** (1 / values.shape[1]))))
    code = np.zeros(len(values), dtype=np.int64)
    radix = 1
    for v in values.T:
        levels = np.unique(v)
        if len(levels) <= per:
            c, k = np.searchsorted(levels, v), len(levels)
        else:
            edges = np.unique(np.quantile(v, np.linspace(0, 1, per + 1)[1:-1]))
            c, k = np.searchsorted(edges, v, side="right"), len(edges) + 1
        code += c * radix
        radix *= k
    cells, inverse = np.unique(code, return_inverse=True)
    return inverse.astype(np.int64), len(cells)


def _draws(values: np.ndarray, codes: np.ndarray, phi: np.ndarray, conf: np.ndarray, n_draws: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group means ``[R, G, m]``, counts ``[R, G]`` and share of queries moved ``[R]`` over ``R`` draws.

    Each draw resamples the queries within their estimated group (unknown as
    a stratum), fits the imputation model on the resample (the approximate
    Bayesian bootstrap) and draws every query's group from
    ``(c * phi + (1 - c) * share) * P(outcome cell | group)``.
    """
    n_groups = phi.shape[1]
    cells, n_cells = _outcome_cells(values)
    strata = [np.flatnonzero(codes == s) for s in np.unique(codes)]
    means = np.full((n_draws, n_groups, values.shape[1]), np.nan)
    counts = np.zeros((n_draws, n_groups), dtype=np.int64)
    moved = np.zeros(n_draws)
    for r in range(n_draws):
        idx = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])
        point, c, k = codes[idx], conf[idx], cells[idx]
        known = point < n_groups
        w = np.bincount(point[known] * n_cells + k[known], weights=c[known],
                        minlength=n_groups * n_cells).reshape(n_groups, n_cells)
        if w.sum() <= 0:  # every known estimate has confidence 0: their plain shares
            w = np.bincount(point[known] * n_cells + k[known],
                            minlength=n_groups * n_cells).reshape(n_groups, n_cells).astype(float)
        share = w.sum(axis=1) / w.sum()
        like = (w + 0.5) / (w + 0.5).sum(axis=1, keepdims=True)  # P(outcome cell | group), Jeffreys-smoothed
        post = (c[:, None] * phi[idx] + (1.0 - c)[:, None] * share[None, :]) * like[:, k].T
        cum = np.cumsum(post, axis=1)
        u = rng.random(len(idx)) * cum[:, -1]
        drawn = np.minimum((cum < u[:, None]).sum(axis=1), n_groups - 1)
        moved[r] = np.mean(drawn != point)
        counts[r] = np.bincount(drawn, minlength=n_groups)
        means[r] = means_by_group(values[idx], drawn, n_groups)
    return means, counts, moved


def _gap(values: np.ndarray, codes: np.ndarray, levels: Sequence[str],
         min_group: int) -> tuple[np.ndarray, list[str], list[str], int, str]:
    """The gap as slice_metrics takes it: (difference per metric, max groups, min groups, queries, note)."""
    counts = np.bincount(codes, minlength=len(levels))
    idx, note = gap_groups(levels, counts, min_group)
    m = values.shape[1]
    if not idx:
        return np.full(m, np.nan), [""] * m, [""] * m, 0, note
    means = means_by_group(values, codes, len(levels))[idx]
    diff, _ = group_gap(means, axis=0)
    hi = [levels[idx[i]] for i in np.argmax(means, axis=0)]
    lo = [levels[idx[i]] for i in np.argmin(means, axis=0)]
    return diff, hi, lo, int(counts[idx].sum()), note


def _scenarios(values: np.ndarray, codes: np.ndarray, conf: np.ndarray, levels: Sequence[str], min_group: int,
                   low_confidence: float = LOW_CONFIDENCE) -> list[dict]:
    """Sensitivity scenarios of a gap by estimated groups: unknown, then doubtful estimates, into each group in turn.

    ``values`` ``[n, m]``, ``codes`` indices into ``levels`` (its last is
    ``"unknown"``), ``conf`` each query's confidence.  One dict per scenario:
    ``scenario, moved, gap, max_group, min_group, n_queries, note`` (``gap``,
    ``max_group`` and ``min_group`` per metric).

    >>> values = np.array([[1.0], [1.0], [0.0], [0.0], [1.0]])
    >>> [(s["scenario"], s["gap"].tolist()) for s in _scenarios(values, np.array([0, 0, 1, 1, 2]),
    ...                                                       np.ones(5), ["I", "VI", "unknown"], 2)]
    [('unknown -> I', [1.0]), ('unknown -> VI', [0.6666666666666667])]
    """
    unknown = len(levels) - 1
    known = codes != unknown
    families = [("unknown", ~known)]
    doubtful = known & (conf < low_confidence)
    if doubtful.any():
        families.append((f"confidence < {low_confidence:g}", doubtful))
    out = []
    for name, movable in families:
        for g in range(unknown):
            moved = movable & (codes != g)
            if not moved.any():
                continue
            diff, hi, lo, n_gap, note = _gap(values, np.where(movable, g, codes), levels, min_group)
            out.append({"scenario": f"{name} -> {levels[g]}", "moved": int(moved.sum()), "gap": diff,
                        "max_group": hi, "min_group": lo, "n_queries": n_gap, "note": note})
    return out


def gap_uncertainty(per_query: pd.DataFrame, cases: pd.DataFrame | None = None, by: str = "fitzpatrick_estimated",
                    metrics: Sequence[str] = ("recall@1", "map@10"), n_draws: int = 1000, ci: float = 0.95,
                    min_group: int = 20, low_confidence: float = LOW_CONFIDENCE, seed: int = 0) -> pd.DataFrame:
    """How sure a gap by estimated skin tone is: the estimate's uncertainty propagated, and scenarios.

    A gap by *estimated* skin tone (:func:`slice_metrics` with
    ``by="fitzpatrick_estimated"`` or ``"ita_category_estimated"``) has two
    sources of doubt: the queries are a sample (its interval covers that
    alone) and the groups themselves are estimates, some unknown.  This
    reports, per metric:

    ``estimated``
        The gap of :func:`slice_metrics` (max - min over the known groups
        with at least ``min_group`` queries) with its queries-only interval
        (the same numbers as ``slice_metrics`` with ``n_boot=n_draws`` and
        the same seed).
    ``propagated``
        The same gap with an interval that also carries the estimate's
        uncertainty, by multiple imputation (Rubin 1987) of each query's
        true group, one imputation per resample ("bootstrap, then impute";
        Schomaker & Heumann 2018).  In each of ``n_draws`` draws the queries
        are resampled within their estimated groups (as ``slice_metrics``
        does) and each query's group is drawn from
        ``(c * phi + (1 - c) * share) * P(outcome | group)``: with weight
        ``c`` (its ``ita_confidence``) where its ITA lies, ``phi`` (the
        normal distribution around ``ita_estimated`` with the patch spread,
        sd = ``ita_iqr_estimated`` / 1.349, cut at the ITA categories: the
        estimator's own categories), with weight ``1 - c`` the groups'
        shares, as for a missing value; unknown estimates (``c = 0``) are
        imputed the same way.  The imputation conditions on the query's
        outcome (its metrics, binned into at most 16 cells): an imputation
        that ignores the outcome would make the groups alike and shrink the
        gap towards 0 (Moons et al. 2006; the attenuation of non-differential
        misclassification).  Group shares and ``P(outcome | group)`` are fit
        on each resample's known estimates weighted by their confidence (the
        approximate Bayesian bootstrap; Rubin & Schenker 1986), so the
        model's own uncertainty is carried too; it learns how the outcome
        differs between groups from the estimates themselves, so when every
        estimate is doubtful it has nothing better to learn from (labels on
        a subset would).  The interval is built as
        ``slice_metrics`` builds its own (simultaneous intervals of the
        pairwise differences of the draws' group means, centred on the
        estimate; groups of the estimated gap); when the estimate is certain
        (every confidence 1, no spread, no unknowns) no query changes group
        and it is the queries-only interval, up to resampling noise.
        ``same_extremes`` is the share of draws whose largest and smallest
        group (among those with at least ``min_group`` queries in the draw)
        are the estimate's; ``share_reassigned`` the mean share of queries
        whose drawn group is not the estimated one (unknowns included).
    ``scenario``
        Sensitivity analysis for what the imputation assumes away (that
        unknown and doubtful estimates are missing at random given the
        outcome; e.g. estimation failing more often on dark skin): every
        unknown query, then every estimate with confidence below
        ``low_confidence``, moved into each group in turn, and the gap as
        ``slice_metrics`` would report it then.  ``scenario range`` gives the
        smallest and largest of those gaps (``low``, ``high``).  They are
        scenarios, not bounds: the queries could also split across groups.

    The confidence of :func:`~dermretr.skin_tone.estimate_ita_details` is a
    score (skin coverage, patches, patch agreement, lesion/skin separation),
    not a calibrated probability that the estimate is right, and the patch
    spread is not the estimate's error: the propagated interval is what a
    *model* of the uncertainty implies, not a measurement of it.  Where
    labels exist (DermSynth, Fitzpatrick17k, DDI) compare with the labelled
    gap (:func:`ita_confusion` shows where the estimates go wrong).

    Parameters
    ----------
    per_query : DataFrame
        Per-query metrics of one run, as for :func:`slice_metrics`.
    cases : DataFrame, optional
        The case table with the estimate (``ita_estimated``,
        ``ita_confidence``, ``ita_iqr_estimated`` and the grouping's
        column); without it, the per-query table's own columns.  Without
        ``ita_confidence`` every estimate counts as certain (only unknowns
        are imputed); without the ITA or its spread, as certain of its group.
    by : {"fitzpatrick_estimated", "ita_category_estimated"}
        An estimated grouping.
    metrics, ci, min_group, seed
        As in :func:`slice_metrics`.
    n_draws : int
        Draws of the imputation (and bootstrap resamples of the queries-only
        interval); 0 for the scenarios only.
    low_confidence : float
        Estimates below this confidence are moved in the second family of
        scenarios (default :data:`LOW_CONFIDENCE`).

    Returns
    -------
    DataFrame
        Per metric the rows ``estimated``, ``propagated``, each ``scenario``
        and ``scenario range`` (column ``kind``), with the columns ``metric,
        kind, scenario, n_queries, share_reassigned, gap, low, high,
        max_group, min_group, same_extremes, note``.  ``attrs`` hold ``by``,
        ``ci``, ``n_draws``, ``min_group``, ``low_confidence``, ``seed``,
        ``n_queries``, ``n_unknown``, ``unknown_share``, ``n_low_confidence``,
        ``gap_groups``, ``has_confidence``, ``has_spread`` and ``estimated``.

    References
    ----------
    Rubin DB. *Multiple Imputation for Nonresponse in Surveys.* Wiley, 1987.
    Rubin DB, Schenker N. Multiple imputation for interval estimation from
    simple random samples with ignorable nonresponse. *JASA* 1986;81:366-374.
    Moons KGM, Donders RART, Stijnen T, Harrell FE. Using the outcome for
    imputation of missing predictor values was preferred. *J Clin Epidemiol*
    2006;59:1092-1101.
    Schomaker M, Heumann C. Bootstrap inference when using multiple
    imputation. *Stat Med* 2018;37:2252-2266.

    Examples
    --------
    Three estimated types of 30 queries each (recall@1 0.8, 0.6, 0.4), 6
    queries unknown, every estimate 80% sure and 4 degrees of patch spread:

    >>> pq = pd.DataFrame({"case_id": [f"q{i}" for i in range(96)], "n_relevant": 1,
    ...                    "ita_estimated": np.r_[np.repeat([48.0, 20.0, -50.0], 30), np.full(6, np.nan)],
    ...                    "ita_confidence": 0.8, "ita_iqr_estimated": 4.0,
    ...                    "recall@1": np.r_[np.tile([1.0, 1, 1, 1, 0], 6), np.tile([1.0, 1, 1, 0, 0], 6),
    ...                                      np.tile([1.0, 1, 0, 0, 0], 6), [1.0, 0, 1, 0, 1, 1]]})
    >>> t = gap_uncertainty(pq, metrics=["recall@1"], n_draws=300)
    >>> t.attrs["unknown_share"], t.loc[0, "kind"], float(t.loc[0, "gap"]), t.loc[0, "max_group"], t.loc[0, "min_group"]
    (0.0625, 'estimated', 0.4, 'II', 'VI')
    >>> est, prop = t.iloc[0], t.iloc[1]
    >>> bool(prop["low"] <= est["low"] < 0.4 < est["high"] <= prop["high"])  # wider: the estimate's doubt added
    True
    >>> t[t["kind"] == "scenario range"][["low", "high"]].round(3).values.tolist()
    [[0.356, 0.4]]
    """
    per_query = check_per_query(per_query)
    check_by(by)
    if not is_estimated(by):
        raise DermretrError(f"gap_uncertainty is for groups estimated from the pixels (fitzpatrick_estimated, "
                            f"ita_category_estimated), not {by!r}: labelled groups are not estimates, and "
                            "slice_metrics' interval is their uncertainty")
    metrics = check_metrics(per_query, metrics)
    check_boot(n_draws, ci)
    check_int(min_group, "min_group")
    if not 0.0 <= float(low_confidence) <= 1.0:
        raise DermretrError(f"low_confidence must be in [0, 1], got {low_confidence!r}")
    tones = query_groups(per_query, cases, by)
    rows = query_cases(per_query, cases)
    usable = per_query["n_relevant"].to_numpy() > 0
    if not usable.any():
        raise DermretrError("no query has a relevant case: no gap")
    levels = [*GROUPINGS[by], UNKNOWN]
    unknown = len(levels) - 1
    tones, rows = tones[usable], rows.loc[usable]
    values = per_query.loc[usable, list(metrics)].to_numpy(dtype=np.float64)
    codes = np.array([levels.index(t) for t in tones], dtype=np.int64)
    if not (codes != unknown).any():
        raise DermretrError(f"no query has a known {GROUPING_TITLES[by]}; {HINTS[by]}")
    phi, conf, info = _measurement(rows, codes, unknown)
    counts = np.bincount(codes, minlength=len(levels))
    gap_idx, gap_note = gap_groups(levels, counts, min_group)
    if not gap_idx:
        raise DermretrError(f"fewer than two {GROUPING_TITLES[by]} groups with queries: no gap to be unsure of "
                            f"(queries per group: {', '.join(f'{g} {n}' for g, n in zip(levels, counts) if n)})")
    diff, hi, lo, n_gap, _ = _gap(values, codes, levels, min_group)
    means = means_by_group(values, codes, len(levels))[gap_idx]
    m = len(metrics)
    nan = np.full(m, np.nan)
    q_low, q_high, p_low, p_high, q_same, p_same, moved = nan, nan, nan, nan, nan, nan, 0.0
    if n_draws:
        (boot,) = group_bootstrap_means([(values[codes == i],) for i in gap_idx], n_draws, np.random.default_rng(seed))
        q_low, q_high, _, _ = gap_intervals(boot, means, ci)
        q_same = ((np.argmax(boot, axis=1) == np.argmax(means, axis=0))
                  & (np.argmin(boot, axis=1) == np.argmin(means, axis=0))).mean(axis=0)
        d_means, d_counts, d_moved = _draws(values, codes, phi, conf, n_draws, np.random.default_rng([seed, 1]))
        p_low, p_high, _, _ = gap_intervals(d_means[:, gap_idx], means, ci)
        moved = float(d_moved.mean())
        same = np.zeros(m)
        hi_at, lo_at = np.array([levels.index(g) for g in hi]), np.array([levels.index(g) for g in lo])
        for r in range(n_draws):
            idx, _ = gap_groups(levels[:-1], d_counts[r], min_group)
            if idx:
                sub, at = d_means[r, idx], np.array(idx)
                same += (at[np.argmax(sub, axis=0)] == hi_at) & (at[np.argmin(sub, axis=0)] == lo_at)
        p_same = same / n_draws
    scenarios = _scenarios(values, codes, conf, levels, min_group, low_confidence)
    out = []
    n = len(codes)
    for j, metric in enumerate(metrics):
        base = {"metric": metric, "n_queries": n_gap, "gap": float(diff[j]), "max_group": hi[j],
                "min_group": lo[j]}
        out.append({**base, "kind": "estimated", "scenario": "as estimated; queries resampled",
                    "share_reassigned": 0.0, "low": float(q_low[j]), "high": float(q_high[j]),
                    "same_extremes": float(q_same[j]), "note": gap_note})
        out.append({**base, "kind": "propagated", "scenario": "groups drawn from the estimate; queries resampled",
                    "share_reassigned": moved, "low": float(p_low[j]), "high": float(p_high[j]),
                    "same_extremes": float(p_same[j]),
                    "note": "a model of the estimate's uncertainty (confidence is not a probability)"})
        for s in scenarios:
            out.append({"metric": metric, "kind": "scenario", "scenario": s["scenario"], "n_queries": s["n_queries"],
                        "share_reassigned": s["moved"] / n, "gap": float(s["gap"][j]), "low": np.nan,
                        "high": np.nan, "max_group": s["max_group"][j], "min_group": s["min_group"][j],
                        "same_extremes": np.nan, "note": s["note"]})
        gaps = np.array([s["gap"][j] for s in scenarios], dtype=float)
        if np.isfinite(gaps).any():
            a, b = int(np.nanargmin(gaps)), int(np.nanargmax(gaps))
            low, high = float(gaps[a]), float(gaps[b])
            note = f"smallest: {scenarios[a]['scenario']}; largest: {scenarios[b]['scenario']}"
        else:
            low = high = np.nan
            note = "no unknown or doubtful estimates to move" if not scenarios else "no gap in any scenario"
        out.append({"metric": metric, "kind": "scenario range", "scenario": "every scenario", "n_queries": n_gap,
                    "share_reassigned": np.nan, "gap": float(diff[j]), "low": low, "high": high, "max_group": "",
                    "min_group": "", "same_extremes": np.nan, "note": note})
    table = pd.DataFrame(out, columns=_COLUMNS)
    table["n_queries"] = table["n_queries"].astype("Int64")
    n_unknown = int((codes == unknown).sum())
    table.attrs.update({"by": by, "ci": float(ci), "n_draws": int(n_draws), "min_group": int(min_group),
                        "low_confidence": float(low_confidence), "seed": seed, "n_queries": n,
                        "n_unknown": n_unknown, "unknown_share": n_unknown / n,
                        "n_low_confidence": int(((codes != unknown) & (conf < low_confidence)).sum()),
                        "gap_groups": [levels[i] for i in gap_idx], "estimated": True, **info})
    return table
