"""Fairness slicing by skin tone: per-group metrics with CIs, gaps, exposure and skin tone from pixels.

Retrieval quality is compared across skin tones with honest uncertainty:

* :func:`skin_tone_groups` - one skin-tone group per case: Fitzpatrick I-VI,
  the pairs I-II / III-IV / V-VI (as DDI labels them), Monk 1-10, the ITA
  category of a labelled ``ita`` (DermSynth's ground truth) or of the
  *estimated* ITA.  Missing values form the group ``"unknown"``.
* :func:`slice_metrics` - for a per-query table of :mod:`dermretr.evaluate`,
  each group's mean metric with a percentile bootstrap CI, the overall value,
  the difference (max - min) and ratio (min / max) across groups with a
  stratified bootstrap CI and a permutation p-value; small groups are flagged.
  :func:`format_slices` prints it.
* :func:`compare_runs` - two models on the same queries (before / after a
  mitigation): the paired difference per group with CI and p-value, and the
  change of the gap.
* :func:`retrieve_topk` and :func:`exposure` - the skin-tone mix of the
  retrieved top-k per group of queries against the gallery's mix (does
  retrieval drift towards light skin?).
* :func:`estimate_ita`, :func:`estimate_skin_tone` - the Individual Typology
  Angle of the non-lesion skin, for datasets without skin-tone labels, mapped
  to an ITA category and an approximate Fitzpatrick type, always labelled
  *estimated*; :func:`ita_confusion` validates it against labels, and
  :func:`skin_mask_agreement` checks its lesion/skin separation against true
  lesion masks (PH2's, DermSynth's).
* :func:`plot_slices`, :func:`plot_exposure`, :func:`plot_ita_confusion`,
  :func:`plot_comparison` - figures (matplotlib Figures).
* :func:`run_fairness` - all of it for a run folder (``dermretr fairness``).

Queries without any relevant case are left out of every mean, as in
:mod:`dermretr.evaluate`.

Examples
--------
>>> import numpy as np, pandas as pd
>>> pq = pd.DataFrame({"case_id": [f"c{i}" for i in range(8)], "n_relevant": 1,
...                    "fitzpatrick": [1, 1, 2, 2, 5, 5, 6, pd.NA],
...                    "recall@1": [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]})
>>> table = slice_metrics(pq, by="fitzpatrick_pairs", metrics=("recall@1",), n_boot=0, min_group=2)
>>> table.set_index("group")["value"].round(3).to_dict()  # doctest: +NORMALIZE_WHITESPACE
{'I-II': 0.75, 'III-IV': nan, 'V-VI': 0.333, 'unknown': 1.0, 'overall': 0.625,
 'difference (max - min)': 0.417, 'ratio (min / max)': 0.444}
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._errors import DataWarning, DermretrError
from .color import ITA_CATEGORIES, ita, ita_category, lab_to_rgb, rgb_to_lab
from .data.vocab import TONE_RANGES
from .evaluate import (_check_boot, _check_metrics, _check_per_query, _pair, _sign_flip_p,
                       _text, bootstrap_ci, case_scores)

__all__ = [
    "GROUPINGS",
    "GROUPING_TITLES",
    "UNKNOWN",
    "ITA_FITZPATRICK",
    "skin_tone_groups",
    "is_fairness_folder",
    "slice_metrics",
    "format_slices",
    "compare_runs",
    "retrieve_topk",
    "exposure",
    "estimate_ita",
    "skin_mask",
    "skin_mask_agreement",
    "ita_to_fitzpatrick",
    "estimate_skin_tone",
    "ita_confusion",
    "ita_agreement",
    "plot_slices",
    "plot_exposure",
    "plot_ita_confusion",
    "plot_comparison",
    "run_fairness",
    "FairnessReport",
]

#: The group of cases whose skin tone is not known (reported, never part of a gap).
UNKNOWN = "unknown"
_FITZ = ("I", "II", "III", "IV", "V", "VI")
_ITA_NAMES = tuple(name for name, _, _ in ITA_CATEGORIES)

#: Skin-tone groupings and their groups, lightest first (``"unknown"`` comes after them).
GROUPINGS: dict[str, tuple[str, ...]] = {
    "fitzpatrick": _FITZ,
    "fitzpatrick_pairs": tuple(TONE_RANGES["fitzpatrick"]),  # the tone protocol's ranges
    "monk": tuple(str(i) for i in range(1, 11)),
    "ita_category": _ITA_NAMES,
    "ita_category_estimated": _ITA_NAMES,
    "fitzpatrick_estimated": _FITZ,
}
#: What each grouping is called in tables and figures.
GROUPING_TITLES: dict[str, str] = {
    "fitzpatrick": "Fitzpatrick skin type",
    "fitzpatrick_pairs": "Fitzpatrick skin type (pairs)",
    "monk": "Monk skin tone",
    "ita_category": "ITA category (labelled)",
    "ita_category_estimated": "ITA category (estimated from pixels)",
    "fitzpatrick_estimated": "Fitzpatrick type (estimated from ITA)",
}
#: ITA category -> approximate Fitzpatrick type: the usual correspondence (very light I, light II,
#: intermediate III, tan IV, brown V, dark VI; e.g. Del Bino & Bernerd 2013, Kinyanjui et al. 2020).
#: DermSynth draws each type's skin colour inside that category (``render.ITA_RANGES``).
ITA_FITZPATRICK: dict[str, int] = {name: i + 1 for i, name in enumerate(_ITA_NAMES)}

_PAIR_OF = {v: name for name, (lo, hi) in TONE_RANGES["fitzpatrick"].items() for v in range(lo, hi + 1)}
_ESTIMATE_HINT = ("estimate skin tone from the pixels first: dermretr.fairness.estimate_skin_tone(cases), "
                  "or `dermretr fairness --estimate-ita`")
_HINTS = {
    "fitzpatrick": "group by 'fitzpatrick_estimated' (from the pixels) instead",
    "fitzpatrick_pairs": "group by 'fitzpatrick_estimated' (from the pixels) instead",
    "monk": "few datasets have Monk labels (SCIN does); group by 'fitzpatrick' or an estimated grouping",
    "ita_category": "only DermSynth has a labelled 'ita'; group by 'ita_category_estimated' instead",
    "ita_category_estimated": _ESTIMATE_HINT,
    "fitzpatrick_estimated": _ESTIMATE_HINT,
}
_DIFF, _RATIO, _OVERALL = "difference (max - min)", "ratio (min / max)", "overall"


# ----------------------------------------------------------------------------- groupings


def _check_by(by: str) -> str:
    if by not in GROUPINGS:
        raise DermretrError(f"unknown skin-tone grouping {by!r}; choose one of {', '.join(GROUPINGS)}")
    return by


def _scale(table: pd.DataFrame, column: str, lo: int, hi: int) -> np.ndarray:
    """Values of an integer scale column as floats (NaN unknown), refusing values off the scale."""
    raw = table[column]
    num = pd.to_numeric(raw.astype(object).where(raw.notna(), np.nan), errors="coerce").astype(float)
    num = num.to_numpy()
    bad = (raw.notna().to_numpy() & np.isnan(num)) | (~np.isnan(num) & ((num % 1 != 0) | (num < lo) | (num > hi)))
    if bad.any():
        shown = ", ".join(repr(v) for v in pd.unique(raw[bad].astype(object))[:5])
        raise DermretrError(f"column {column!r} has values off the {lo}..{hi} scale ({shown}); "
                            f"use {lo}..{hi}, empty when unknown")
    return num


def _from_ita(values) -> np.ndarray:
    num = pd.to_numeric(pd.Series(values).astype(object), errors="coerce").astype(float).to_numpy()
    return np.array([ita_category(v) if np.isfinite(v) else UNKNOWN for v in num], dtype=object)


def _labels(table: pd.DataFrame, column: str, allowed: Sequence[str]) -> np.ndarray:
    raw = table[column].astype(object)
    known = raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    out = np.where(known, raw.astype(str).str.strip().to_numpy(), UNKNOWN).astype(object)
    bad = known & ~np.isin(out, list(allowed))
    if bad.any():
        shown = ", ".join(repr(v) for v in pd.unique(out[bad])[:5])
        raise DermretrError(f"column {column!r} has unknown skin-tone labels ({shown}); "
                            f"expected one of {', '.join(allowed)}")
    return out


class _MissingColumn(DermretrError):
    """The grouping's column is not in the table."""


def _missing_column(by: str, columns: Sequence[str], table: pd.DataFrame) -> DermretrError:
    return _MissingColumn(f"cannot group by {by!r}: the table has no {' or '.join(repr(c) for c in columns)} "
                         f"column ({len(table.columns)} columns: {', '.join(map(str, list(table.columns)[:12]))}"
                         f"{' ...' if len(table.columns) > 12 else ''}); {_HINTS[by]}")


def skin_tone_groups(cases: pd.DataFrame, by: str = "fitzpatrick", *, _noun: str = "case") -> pd.Series:
    """The skin-tone group of every case (or query) as an ordered categorical.

    Parameters
    ----------
    cases : DataFrame
        A case table or a per-query table with the grouping's column:

        * ``fitzpatrick`` - ``fitzpatrick`` (1..6) as ``"I"`` .. ``"VI"``;
        * ``fitzpatrick_pairs`` - ``"I-II"``, ``"III-IV"``, ``"V-VI"`` from
          ``fitzpatrick``, or from ``skin_tone_group`` where the type is
          unknown (DDI publishes only the pairs);
        * ``monk`` - ``monk`` (1..10) as ``"1"`` .. ``"10"``;
        * ``ita_category`` - the ITA category (:data:`dermretr.color.ITA_CATEGORIES`)
          of a labelled ``ita`` column (DermSynth's ground truth), or an
          ``ita_category`` column;
        * ``ita_category_estimated``, ``fitzpatrick_estimated`` - the columns
          of :func:`estimate_skin_tone` (or derived from ``ita_estimated``).
    by : str
        One of :data:`GROUPINGS`.

    Returns
    -------
    Series
        Categorical with the groups of :data:`GROUPINGS` ``[by]`` (lightest
        first) and ``"unknown"`` last; same index as ``cases``, named ``by``.

    Raises
    ------
    DermretrError
        For an unknown grouping, a missing column, values off the scale, or
        when no case has a known skin tone.

    Examples
    --------
    >>> cases = pd.DataFrame({"fitzpatrick": [1, 4, pd.NA], "skin_tone_group": [None, None, "V-VI"]})
    >>> skin_tone_groups(cases, "fitzpatrick").tolist()
    ['I', 'IV', 'unknown']
    >>> skin_tone_groups(cases, "fitzpatrick_pairs").tolist()
    ['I-II', 'III-IV', 'V-VI']
    """
    _check_by(by)
    if not isinstance(cases, pd.DataFrame):
        raise DermretrError(f"skin-tone groups need a DataFrame, got {type(cases).__name__}")
    levels = GROUPINGS[by]
    if by in ("fitzpatrick", "monk"):
        if by not in cases.columns:
            raise _missing_column(by, [by], cases)
        num = _scale(cases, by, 1, 6 if by == "fitzpatrick" else 10)
        out = np.array([levels[int(v) - 1] if np.isfinite(v) else UNKNOWN for v in num], dtype=object)
    elif by == "fitzpatrick_pairs":
        have = [c for c in ("fitzpatrick", "skin_tone_group") if c in cases.columns]
        if not have:
            raise _missing_column(by, ["fitzpatrick", "skin_tone_group"], cases)
        out = np.full(len(cases), UNKNOWN, dtype=object)
        if "skin_tone_group" in cases.columns:
            out = _labels(cases, "skin_tone_group", levels)
        if "fitzpatrick" in cases.columns:
            num = _scale(cases, "fitzpatrick", 1, 6)
            out = np.array([_PAIR_OF[int(v)] if np.isfinite(v) else o for v, o in zip(num, out)], dtype=object)
    elif by == "fitzpatrick_estimated":
        if "fitzpatrick_estimated" in cases.columns:
            num = _scale(cases, "fitzpatrick_estimated", 1, 6)
            out = np.array([levels[int(v) - 1] if np.isfinite(v) else UNKNOWN for v in num], dtype=object)
        elif "ita_estimated" in cases.columns:
            out = np.array([_FITZ[ITA_FITZPATRICK[c] - 1] if c != UNKNOWN else UNKNOWN
                            for c in _from_ita(cases["ita_estimated"])], dtype=object)
        else:
            raise _missing_column(by, ["fitzpatrick_estimated", "ita_estimated"], cases)
    else:  # ita_category, ita_category_estimated
        column, source = (by, "ita") if by == "ita_category" else (by, "ita_estimated")
        if column in cases.columns:
            out = _labels(cases, column, levels)
        elif source in cases.columns:
            out = _from_ita(cases[source])
        else:
            raise _missing_column(by, [source, column], cases)
    if len(out) and (out == UNKNOWN).all():
        raise DermretrError(f"no {_noun} has a known {GROUPING_TITLES[by]} (all {len(out)} are unknown); "
                            f"{_HINTS[by]}")
    cat = pd.Categorical(out, categories=[*levels, UNKNOWN], ordered=True)
    return pd.Series(cat, index=cases.index, name=by)


# ----------------------------------------------------------------------------- per-query tables


def _check_same_data(per_query: pd.DataFrame, cases: pd.DataFrame) -> pd.Series:
    """Map each query to its row of ``cases``, refusing a per-query table of other data."""
    if "case_id" not in cases.columns:
        raise DermretrError("the case table has no 'case_id' column")
    ids = pd.Series(_text(cases["case_id"]))
    if ids.duplicated().any():
        raise DermretrError(f"the case table has duplicate case ids (e.g. {ids[ids.duplicated()].iloc[0]!r})")
    pos = pd.Series(np.arange(len(cases)), index=ids.to_numpy())
    qids = _text(per_query["case_id"])
    found = np.isin(qids, ids.to_numpy())
    if not found.all():
        shown = ", ".join(repr(v) for v in pd.unique(qids[~found])[:3])
        raise DermretrError(
            f"the per-query table does not come from this case table: {int((~found).sum())} of {len(qids)} query "
            f"case ids are not in it (e.g. {shown}); slice it with the dataset (and index) it was evaluated on"
        )
    rows = pos.reindex(qids).to_numpy()
    for col in ("patient_id", "diagnosis_group", "fitzpatrick", "monk"):
        if col not in per_query.columns or col not in cases.columns:
            continue
        a, b = per_query[col], cases[col].iloc[rows]
        if col in ("fitzpatrick", "monk"):
            x = pd.to_numeric(a.astype(object), errors="coerce").astype(float).to_numpy()
            y = pd.to_numeric(b.astype(object), errors="coerce").astype(float).to_numpy()
            same = (x == y) | (np.isnan(x) & np.isnan(y))
        else:
            same = _text(a) == _text(b)
        if not same.all():
            raise DermretrError(
                f"the per-query table does not match the case table: {int((~same).sum())} queries have another "
                f"{col!r} there (e.g. case {qids[~same][0]!r}); was it evaluated on another version of the data?"
            )
    return pd.Series(rows, index=per_query.index)


def _query_groups(per_query: pd.DataFrame, cases: pd.DataFrame | None, by: str) -> np.ndarray:
    if cases is None:
        try:
            return skin_tone_groups(per_query, by, _noun="query").astype(object).to_numpy()
        except _MissingColumn as exc:
            raise DermretrError(f"{exc} (or pass the case table: cases=...)") from None
    rows = _check_same_data(per_query, cases)
    tones = skin_tone_groups(cases, by).astype(object).to_numpy()
    return tones[rows.to_numpy()]


# ----------------------------------------------------------------------------- resampling


def _means_by_group(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """[G, m] means (NaN for empty groups)."""
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    sums = np.stack([np.bincount(codes, weights=values[:, j], minlength=n_groups)
                     for j in range(values.shape[1])], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _gap(means: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Difference (max - min) and ratio (min / max) of group means along ``axis``."""
    hi, lo = means.max(axis=axis), means.min(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), np.nan)
    return hi - lo, ratio


def _strat_boot(parts: list[tuple[np.ndarray, ...]], n_boot: int, rng: np.random.Generator):
    """Resample queries within each group (the same indices for every array of a group).

    ``parts[g]`` holds arrays ``[n_g, m]``; yields, per array position, ``[n_boot, G, m]`` means.
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


def _basic_ci(samples: np.ndarray, estimate: np.ndarray, level: float, lo: float = -np.inf,
              hi: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Basic (reverse percentile) bootstrap interval ``2 * estimate - quantiles``, clipped to ``[lo, hi]``."""
    alpha = (1.0 - float(level)) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q_low, q_high = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    return np.clip(2 * estimate - q_high, lo, hi), np.clip(2 * estimate - q_low, lo, hi)


def _perm_gap_p(values: np.ndarray, codes: np.ndarray, n_groups: int, observed: np.ndarray, n_perm: int,
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
        diff, _ = _gap(means, axis=1)
        exceed += (diff >= observed - tol).sum(axis=0)
    return (1.0 + exceed) / (1.0 + n_perm)


def _band(boot: np.ndarray, estimate: np.ndarray, level: float) -> np.ndarray:
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


def _gap_ci(boot: np.ndarray, means: np.ndarray, level: float):
    """Simultaneous intervals of the difference (max - min) and ratio (min / max) of group means.

    The difference is the largest pairwise difference: with intervals ``[L, U]``
    holding jointly for every pair's difference (:func:`_band`), it lies in
    ``[max(0, max over pairs of max(L, -U)), max over pairs of max(U, -L)]``.
    The ratio uses joint intervals ``[l, u]`` of the group means: it lies in
    ``[min l / max u, min u / max l]``.  Conservative, but unlike percentile
    intervals of max - min (biased upwards: they exclude 0 for groups that do
    not differ) they cover the true gap.
    """
    n_groups = means.shape[0]
    pairs = [(i, j) for i in range(n_groups) for j in range(i + 1, n_groups)]
    est = np.stack([means[i] - means[j] for i, j in pairs])
    boot_d = np.stack([boot[:, i] - boot[:, j] for i, j in pairs], axis=1)
    hw = _band(boot_d, est, level)
    low, high = est - hw, est + hw
    d_low = np.clip(np.maximum(low, -high).max(axis=0), 0.0, 1.0)
    d_high = np.clip(np.maximum(high, -low).max(axis=0), 0.0, 1.0)
    hw = _band(boot, means, level)
    lo, up = np.clip(means - hw, 0.0, None), means + hw
    with np.errstate(invalid="ignore", divide="ignore"):
        r_low = np.where(up.max(axis=0) > 0, lo.min(axis=0) / up.max(axis=0), 0.0)
        r_high = np.where(lo.max(axis=0) > 0, up.min(axis=0) / lo.max(axis=0), 1.0)
    return d_low, d_high, np.clip(r_low, 0.0, 1.0), np.clip(r_high, 0.0, 1.0)


def _gap_groups(levels: Sequence[str], counts: Sequence[int], min_group: int) -> tuple[list[int], str]:
    """Indices of the groups a gap is taken over, and a note when it falls back to small groups."""
    known = [i for i, g in enumerate(levels) if g != UNKNOWN and counts[i] > 0]
    large = [i for i in known if counts[i] >= min_group]
    if len(large) >= 2:
        return large, ""
    if len(known) >= 2:
        return known, f"includes groups with fewer than {min_group} queries"
    return [], "fewer than two skin-tone groups with queries: no gap"


def _holm(p: np.ndarray) -> np.ndarray:
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


# ----------------------------------------------------------------------------- slicing


def _metric_frame(values: np.ndarray, groups: np.ndarray, metrics: Sequence[str]):
    """fairlearn's MetricFrame of per-query means: y_true holds the per-query metric values."""
    from fairlearn.metrics import MetricFrame

    def column_mean(j):
        def mean(y_true, y_pred):
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
        ``ci``, ``n_boot``, ``min_group`` and ``gap_groups``.

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
    per_query = _check_per_query(per_query)
    _check_by(by)
    metrics = _check_metrics(per_query, metrics)
    _check_boot(n_boot, ci)
    if isinstance(min_group, bool) or not isinstance(min_group, (int, np.integer)) or min_group < 1:
        raise DermretrError(f"min_group must be a positive integer, got {min_group!r}")
    tones = _query_groups(per_query, cases, by)
    usable = per_query["n_relevant"].to_numpy() > 0
    if not usable.any():
        raise DermretrError("no query has a relevant case: nothing to slice")
    tones = tones[usable]
    values = per_query.loc[usable, list(metrics)].to_numpy(dtype=np.float64)
    levels = [*GROUPINGS[by], UNKNOWN]
    if groups is not None:
        groups = [str(g) for g in ([groups] if isinstance(groups, str) else groups)]
        odd = [g for g in groups if g not in levels]
        if odd:
            raise DermretrError(f"no group {odd[0]!r} in {by!r}; groups: {', '.join(levels)}")
        counts = {g: int((tones == g).sum()) for g in levels}
        empty = [g for g in groups if counts[g] == 0]
        if empty:
            have = ", ".join(f"{g} {n}" for g, n in counts.items() if n)
            raise DermretrError(f"group(s) {', '.join(map(repr, empty))} of {by!r} have no queries (queries per "
                                f"group: {have})")
        keep = np.isin(tones, groups)
        tones, values = tones[keep], values[keep]
        levels = [g for g in levels if g in groups]
    elif not (tones != UNKNOWN).any():
        raise DermretrError(f"no query has a known {GROUPING_TITLES[by]} ({len(tones)} queries, all unknown); "
                            f"{_HINTS[by]}")
    codes = np.array([levels.index(t) for t in tones], dtype=np.int64)
    counts = np.bincount(codes, minlength=len(levels))
    show = [i for i, g in enumerate(levels) if g != UNKNOWN or counts[i] > 0]
    gap_idx, gap_note = _gap_groups(levels, counts, min_group)
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
            (boot,) = _strat_boot(parts, n_boot, rng)
            d_low, d_high, r_low, r_high = _gap_ci(boot, means, ci)
            sub_codes = np.searchsorted(gap_idx, codes[in_gap])
            p = _perm_gap_p(values[in_gap], sub_codes, len(gap_idx), diff, n_boot, rng)
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
                        "gap_groups": [levels[i] for i in gap_idx]})
    return table


def format_slices(table: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """A printable view of :func:`slice_metrics`: one row per group, one column per metric.

    Cells read ``"value [ci_low, ci_high]"``; the difference adds its
    p-value; groups with fewer than ``min_group`` queries are marked ``*``.

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
    out = pd.DataFrame(index=pd.Index(labels, name=GROUPING_TITLES.get(table.attrs.get("by", ""), "group")),
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
        gap.  ``attrs`` hold ``by``, ``ci``, ``n_boot`` and ``gap_groups``.

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
    per_query_a = _check_per_query(per_query_a, "first per-query table")
    per_query_b = _check_per_query(per_query_b, "second per-query table")
    _check_by(by)
    metrics = _check_metrics(per_query_a, metrics)
    _check_metrics(per_query_b, metrics)
    _check_boot(n_boot, ci)
    if isinstance(min_group, bool) or not isinstance(min_group, (int, np.integer)) or min_group < 1:
        raise DermretrError(f"min_group must be a positive integer, got {min_group!r}")
    rows_b = _pair(per_query_a, per_query_b)
    tones = _query_groups(per_query_a, cases, by)
    usable = per_query_a["n_relevant"].to_numpy() > 0
    if not usable.any():
        raise DermretrError("no query has a relevant case: nothing to compare")
    tones = tones[usable]
    if not (tones != UNKNOWN).any():
        raise DermretrError(f"no query has a known {GROUPING_TITLES[by]}; {_HINTS[by]}")
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
        return low, high, _sign_flip_p(d[idx], n_boot, rng)

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
        sel = [r for r in group_rows if r["metric"] == m]
        for r, ph in zip(sel, _holm(np.array([r["p_value"] for r in sel]))):
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
    gap_idx, gap_note = _gap_groups(levels, counts, min_group)
    gap_a = gap_b = change = c_low = c_high = p_gap = np.full(len(metrics), np.nan)
    if gap_idx:
        means_a = _means_by_group(a, codes, len(levels))[gap_idx]
        means_b = _means_by_group(b, codes, len(levels))[gap_idx]
        gap_a, _ = _gap(means_a, axis=0)
        gap_b, _ = _gap(means_b, axis=0)
        change = gap_b - gap_a
        if n_boot:
            boot_a, boot_b = _strat_boot([(a[codes == i], b[codes == i]) for i in gap_idx], n_boot, rng)
            c_low, c_high = _basic_ci(_gap(boot_b, axis=1)[0] - _gap(boot_a, axis=1)[0], change, ci)
            sel = np.isin(codes, gap_idx)
            sub = np.searchsorted(gap_idx, codes[sel])
            a_s, d_s = a[sel], d[sel]
            n_g = np.bincount(sub, minlength=len(gap_idx)).astype(float)
            sum_a = np.stack([a_s[sub == g].sum(axis=0) for g in range(len(gap_idx))])
            sum_b = sum_a + np.stack([d_s[sub == g].sum(axis=0) for g in range(len(gap_idx))])
            exceed = np.zeros(len(metrics))
            tol = 1e-12 * np.maximum(1.0, np.abs(change))
            block = max(1, 2**20 // max(len(sub), 1))
            for start in range(0, n_boot, block):
                k = min(n_boot, start + block) - start
                swap = rng.integers(0, 2, size=(k, len(sub))).astype(float)
                moved = np.stack([swap[:, sub == g] @ d_s[sub == g] for g in range(len(gap_idx))], axis=1)
                ma = (sum_a[None] + moved) / n_g[None, :, None]
                mb = (sum_b[None] - moved) / n_g[None, :, None]
                stat = _gap(mb, axis=1)[0] - _gap(ma, axis=1)[0]
                exceed += (np.abs(stat) >= np.abs(change) - tol).sum(axis=0)
            p_gap = (1.0 + exceed) / (1.0 + n_boot)
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
    table.attrs.update({"by": by, "ci": float(ci), "n_boot": int(n_boot), "min_group": int(min_group),
                        "gap_groups": [levels[i] for i in gap_idx]})
    return table


# ----------------------------------------------------------------------------- exposure


def retrieve_topk(retriever, cases: pd.DataFrame, k: int = 10, query_split: str = "test",
                  gallery_splits: Sequence[str] = ("train", "val"), alpha: float | None = None,
                  text_style: str = "terse", batch_size: int = 64, progress: bool = False,
                  queries: dict | None = None, gallery: dict | None = None) -> pd.DataFrame:
    """The top-k gallery cases of each query of the "case" protocol, as a long table.

    Queries, gallery, scores and exclusions are those of
    :func:`dermretr.evaluate.case_search`: a query is a ``query_split``
    case's image and findings text; its own case and every case of its
    patient are never retrieved.

    Parameters
    ----------
    retriever : Retriever
        Anything with ``encode_queries``/``encode_targets``.
    cases : DataFrame
        A validated case table.
    k : int
        Results per query (fewer when the gallery is smaller).
    query_split, gallery_splits, alpha, text_style, batch_size, progress
        As in :func:`~dermretr.evaluate.case_search`.
    queries, gallery : dict, optional
        Pre-computed encodings (table order), as in ``case_search``.

    Returns
    -------
    DataFrame
        ``query_case_id, rank, case_id, score``: ``k`` rows per query, best first.

    Examples
    --------
    >>> class OneHot:
    ...     def encode(self, paths, *_, **__):
    ...         return {"global": np.array([[p.startswith("M"), p.startswith("N")] for p in paths], float),
    ...                 "local": None, "alpha": 0.0}
    ...     encode_queries = encode_targets = encode
    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("pqrs"),
    ...     "image_path": ["M1", "N2", "M3", "N4"], "diagnosis": "x", "diagnosis_group": "X",
    ...     "split": ["train", "train", "test", "test"]})
    >>> retrieve_topk(OneHot(), cases, k=1)[["query_case_id", "rank", "case_id"]].to_numpy().tolist()
    [['c', 1, 'a'], ['d', 1, 'b']]
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DermretrError(f"k must be a positive integer, got {k!r}")
    q, g, s, exclude = case_scores(retriever, cases, query_split, gallery_splits, alpha=alpha, text_style=text_style,
                                   batch_size=batch_size, progress=progress, queries=queries, gallery=gallery)
    s = np.asarray(s, dtype=np.float64)
    qid, gid = _text(q["case_id"]), _text(g["case_id"])
    s = np.where(exclude, -np.inf, s)
    kk = min(int(k), s.shape[1])
    order = np.argsort(-s, axis=1, kind="stable")[:, :kk]
    top = np.take_along_axis(s, order, axis=1)
    qi, r = np.nonzero(np.isfinite(top))
    return pd.DataFrame({"query_case_id": qid[qi], "rank": (r + 1).astype(np.int64),
                         "case_id": gid[order[qi, r]], "score": top[qi, r]})


def exposure(results: pd.DataFrame, cases: pd.DataFrame, by: str = "fitzpatrick", k: int | None = None,
             gallery_splits: Sequence[str] | None = ("train", "val"), n_boot: int = 1000, ci: float = 0.95,
             seed: int = 0) -> pd.DataFrame:
    """Skin-tone mix of the retrieved top-k per group of queries, against the gallery's mix.

    Parameters
    ----------
    results : DataFrame
        Retrieved cases: ``query_case_id``, ``rank`` (1 = best) and
        ``case_id`` (from :func:`retrieve_topk`, or an index search with the
        query's case id added).
    cases : DataFrame
        The case table holding queries, results and gallery.
    by : str
        A grouping of :data:`GROUPINGS`, for queries and retrieved cases.
    k : int, optional
        Use ranks 1..k (default: every rank in ``results``).
    gallery_splits : strs or None
        The gallery the results were drawn from (default train and val, as
        the case protocol); None for every case (a whole-index search).
    n_boot, ci, seed
        Bootstrap CI of the drift, over queries.

    Returns
    -------
    DataFrame
        One row per query group with queries, then ``all queries`` and
        ``gallery``: ``group, n_queries, n_retrieved``, the share of each
        skin-tone group among the retrieved cases (one column per group,
        rows sum to 1), ``mean_tone`` (mean position on the scale, 1 =
        lightest, over known tones), ``drift`` = mean retrieved tone minus the
        gallery's (negative: towards lighter skin) with ``drift_low`` /
        ``drift_high``, and ``same_tone`` (share retrieved with the query's
        own group) against ``same_tone_expected`` (the gallery's share of that
        group).  ``attrs`` hold ``by``, ``k`` and ``levels``.

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": list("abcdef"), "fitzpatrick": [1, 1, 6, 6, 1, 6],
    ...                       "split": ["train"] * 4 + ["test"] * 2})
    >>> results = pd.DataFrame({"query_case_id": ["e", "e", "f", "f"], "rank": [1, 2, 1, 2],
    ...                         "case_id": ["a", "b", "a", "c"]})
    >>> t = exposure(results, cases, k=2, n_boot=0).set_index("group")
    >>> t.loc[["VI", "all queries", "gallery"], ["I", "VI", "drift"]].to_numpy().tolist()
    [[0.5, 0.5, 0.0], [0.75, 0.25, -1.25], [0.5, 0.5, 0.0]]
    """
    _check_by(by)
    _check_boot(n_boot, ci)
    if not isinstance(results, pd.DataFrame):
        raise DermretrError(f"results must be a DataFrame, got {type(results).__name__}")
    missing = [c for c in ("query_case_id", "rank", "case_id") if c not in results.columns]
    if missing:
        hint = (" (an index search numbers its queries: add the query's case id as 'query_case_id')"
                if "query" in results.columns else "")
        raise DermretrError(f"results lack column(s) {missing}; use retrieve_topk(){hint}")
    if len(results) == 0:
        raise DermretrError("no retrieved cases in the results")
    ranks = pd.to_numeric(results["rank"], errors="coerce").to_numpy(dtype=float)
    if np.isnan(ranks).any() or (ranks < 1).any():
        raise DermretrError("results: 'rank' must be positive integers (1 = best)")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DermretrError(f"k must be a positive integer, got {k!r}")
        if k > ranks.max():
            raise DermretrError(f"k={k} but the results hold only the top {int(ranks.max())} per query")
        results = results[ranks <= k]
    k_used = int(k) if k is not None else int(ranks.max())
    tones = skin_tone_groups(cases, by).astype(object).to_numpy()
    ids = _text(cases["case_id"])
    pos = pd.Series(np.arange(len(ids)), index=ids)
    if pos.index.duplicated().any():
        raise DermretrError("the case table has duplicate case ids")
    qids, rids = _text(results["query_case_id"]), _text(results["case_id"])
    for what, vals in (("query", qids), ("retrieved", rids)):
        bad = ~np.isin(vals, ids)
        if bad.any():
            raise DermretrError(f"the results do not come from this case table: {int(bad.sum())} {what} case ids "
                                f"are not in it (e.g. {vals[bad][0]!r}); use the dataset (and index) they were "
                                "retrieved from")
    if gallery_splits is None:
        in_gallery = np.ones(len(ids), dtype=bool)
    else:
        if "split" not in cases.columns:
            raise DermretrError("the case table has no 'split' column; pass gallery_splits=None")
        in_gallery = np.isin(_text(cases["split"]), list(gallery_splits))
        outside = ~in_gallery[pos.reindex(rids).to_numpy()]
        if outside.any():
            raise DermretrError(f"{int(outside.sum())} retrieved cases are not in the gallery {list(gallery_splits)} "
                                f"(e.g. {rids[outside][0]!r}); pass gallery_splits=None for a search over every case")
    levels = [*GROUPINGS[by], UNKNOWN]
    position = {g: float(i + 1) for i, g in enumerate(GROUPINGS[by])}
    q_tone = tones[pos.reindex(qids).to_numpy()]
    r_tone = tones[pos.reindex(rids).to_numpy()]
    g_tone = tones[in_gallery]
    g_known = np.array([position[t] for t in g_tone if t != UNKNOWN])
    g_mean = float(g_known.mean()) if len(g_known) else np.nan
    g_share = {lv: float((g_tone == lv).mean()) for lv in levels}
    r_pos = np.array([position.get(t, np.nan) for t in r_tone])
    same = np.where((q_tone == UNKNOWN) | (r_tone == UNKNOWN), np.nan, (r_tone == q_tone).astype(float))
    frame = pd.DataFrame({"q": qids, "q_tone": q_tone, "r_pos": r_pos, "same": same})
    per_query = frame.groupby("q", sort=False).agg(q_tone=("q_tone", "first"), r_pos=("r_pos", "mean"),
                                                    same=("same", "mean"))
    with_levels = [lv for lv in levels if lv != UNKNOWN or (g_tone == UNKNOWN).any() or (r_tone == UNKNOWN).any()]

    def row(name: str, mask_rows: np.ndarray, q_mask: np.ndarray, expected: float) -> dict:
        sub = r_tone[mask_rows]
        out = {"group": name, "n_queries": int(q_mask.sum()), "n_retrieved": int(mask_rows.sum())}
        out.update({lv: float((sub == lv).mean()) if len(sub) else np.nan for lv in with_levels})
        known = r_pos[mask_rows]
        known = known[np.isfinite(known)]
        out["mean_tone"] = float(known.mean()) if len(known) else np.nan
        vals = per_query.loc[q_mask, "r_pos"].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)] - g_mean
        out["drift"] = float(vals.mean()) if len(vals) else np.nan  # the mean over queries, like its CI
        out["drift_low"], out["drift_high"] = bootstrap_ci(vals, n_boot=n_boot, level=ci, seed=seed)
        out["same_tone"] = float(per_query.loc[q_mask, "same"].mean()) if q_mask.any() else np.nan
        out["same_tone_expected"] = expected
        return out

    rows = []
    pq_tone = per_query["q_tone"].to_numpy()
    for lv in levels:
        q_mask = pq_tone == lv
        if not q_mask.any():
            continue
        rows.append(row(lv, q_tone == lv, q_mask, g_share[lv]))
    expected_all = float(np.mean([g_share[t] for t in pq_tone]))
    rows.append(row("all queries", np.ones(len(r_tone), dtype=bool), np.ones(len(pq_tone), dtype=bool), expected_all))
    gal = {"group": "gallery", "n_queries": 0, "n_retrieved": int(in_gallery.sum())}
    gal.update({lv: g_share[lv] for lv in with_levels})
    gal.update({"mean_tone": g_mean, "drift": 0.0, "drift_low": np.nan, "drift_high": np.nan, "same_tone": np.nan,
                "same_tone_expected": np.nan})
    rows.append(gal)
    table = pd.DataFrame(rows, columns=["group", "n_queries", "n_retrieved", *with_levels, "mean_tone", "drift",
                                        "drift_low", "drift_high", "same_tone", "same_tone_expected"])
    table.attrs.update({"by": by, "k": k_used, "levels": list(with_levels)})
    return table


# ----------------------------------------------------------------------------- skin tone from pixels

#: Pixels farther than this from the centre (the image spans [-1, 1]) are dark corners / vignette.
_RADIUS = 0.95
#: Pixels darker than this L* are shadow or background, never skin.
_BLACK_L = 3.0
#: A thin dark structure (hair, ruler mark) is at least this much darker (L*) than its closing.
_HAIR_DEPTH = 5.0
#: Otsu's two classes must differ by at least this (L*) to be lesion and skin rather than texture.
_MIN_CONTRAST = 4.0
#: Pixels farther than this from the centre decide which Otsu class is skin (lesions are centred).
_RING = 0.6


def _as_rgb(image) -> np.ndarray:
    from PIL import Image

    from .data.images import load_rgb

    if isinstance(image, (str, os.PathLike)):
        image = load_rgb(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or min(arr.shape[:2]) < 8:
        raise DermretrError(f"an RGB image (height x width x 3, at least 8 px) is needed, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
            raise DermretrError("a float image must hold values in [0, 1]")
        return np.clip(arr.astype(np.float64), 0.0, 1.0)
    raise DermretrError(f"unsupported image dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of 1-D values (maximal between-class variance)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    return float(edges[int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2)) + 1])


def _field(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the centre (the image spans [-1, 1]) and the field of view: no dark corner, no black."""
    h, w = L.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    radius = np.hypot(yy, xx)
    return radius, (radius <= _RADIUS) & (L > _BLACK_L)


def _skin(rgb: np.ndarray, lesion_mask) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    lab = rgb_to_lab(rgb)
    L = lab[..., 0]
    h, w = L.shape
    radius, valid = _field(L)
    size = max(3, (min(h, w) // 24) | 1)  # wider than a hair, narrower than a lesion
    valid &= ndimage.grey_closing(L, size=(size, size)) - L <= _HAIR_DEPTH
    if lesion_mask is not None:
        mask = np.asarray(lesion_mask, dtype=bool)
        if mask.shape != (h, w):
            raise DermretrError(f"the lesion mask is {mask.shape[:2]} but the image is {(h, w)}")
        valid &= ~ndimage.binary_dilation(mask, iterations=max(1, min(h, w) // 40))
        return lab, valid
    outer = radius > _RING
    for _ in range(2):  # a second pass when bright structures (scars, reflections) were split off first
        vals = L[valid]
        if vals.size < 16:
            break
        t = _otsu(vals)
        dark = L < t
        lo, hi = vals[vals < t], vals[vals >= t]
        if lo.size == 0 or hi.size == 0 or hi.mean() - lo.mean() < _MIN_CONTRAST:
            break
        ring = valid & outer
        keep_dark = dark[ring].mean() > 0.5 if ring.any() else lo.size > hi.size
        valid &= dark if keep_dark else ~dark
        if not keep_dark:
            break
    return lab, valid


def skin_mask(image, lesion_mask: np.ndarray | None = None) -> np.ndarray:
    """The pixels :func:`estimate_ita` treats as healthy skin (boolean ``[H, W]``).

    Left out: dark corners (outside 95% of the half-side from the centre) and
    near-black pixels, hair and ruler marks (a morphological black-hat on L*:
    thin structures more than 5 L* darker than their surroundings), and the
    lesion: ``lesion_mask`` dilated by 2.5% of the side, or without a mask,
    Otsu's threshold on L* (the class that fills most of the periphery is
    skin; a second pass when the first split bright structures off; no split
    when the two classes differ by less than 4 L*).

    >>> img = np.full((64, 64, 3), 0.8)
    >>> img[24:40, 24:40] = 0.3
    >>> m = skin_mask(img)
    >>> bool(m[5, 32]), bool(m[32, 32]), bool(m[0, 0])
    (True, False, False)
    """
    return _skin(_as_rgb(image), lesion_mask)[1]


def estimate_ita(image, lesion_mask: np.ndarray | None = None, min_fraction: float = 0.01) -> float:
    """Individual Typology Angle (degrees) of the healthy skin of a lesion image.

    The image is converted to CIELAB (:func:`dermretr.color.rgb_to_lab`),
    the skin pixels are chosen by :func:`skin_mask`, and the angle is
    ``arctan((L* - 50) / b*) * 180 / pi`` of their median L* and median b*.

    Parameters
    ----------
    image : array [H, W, 3], PIL image or path
        uint8 / uint16, or float in [0, 1].
    lesion_mask : bool array [H, W], optional
        The lesion (e.g. DermSynth's ``load_masks(...)["lesion"]``); without
        one the lesion is segmented by Otsu's threshold on L*.
    min_fraction : float
        NaN is returned when fewer pixels than this fraction are skin.

    Returns
    -------
    float
        ITA in degrees (NaN when too little skin is visible).

    Examples
    --------
    >>> from dermretr.color import lab_to_rgb
    >>> skin = np.broadcast_to(lab_to_rgb(np.array([65.0, 10.0, 15.0])), (64, 64, 3)).copy()
    >>> round(estimate_ita(skin), 2), round(float(ita(65.0, 15.0)), 2)
    (45.0, 45.0)
    """
    lab, valid = _skin(_as_rgb(image), lesion_mask)
    if valid.sum() < max(16, min_fraction * valid.size):
        return float("nan")
    return float(ita(np.median(lab[..., 0][valid]), np.median(lab[..., 2][valid])))


def ita_to_fitzpatrick(angle: float) -> int | None:
    """Approximate Fitzpatrick type (1..6) of an ITA angle, through its ITA category.

    The mapping is :data:`ITA_FITZPATRICK` (very light > 55: I, light 41-55: II,
    intermediate 28-41: III, tan 10-28: IV, brown -30-10: V, dark < -30: VI);
    an approximation, to be labelled *estimated*.  None for NaN.

    >>> ita_to_fitzpatrick(60.0), ita_to_fitzpatrick(20.0), ita_to_fitzpatrick(-45.0), ita_to_fitzpatrick(float("nan"))
    (1, 4, 6, None)
    """
    angle = float(angle)
    return None if not np.isfinite(angle) else ITA_FITZPATRICK[ita_category(angle)]


def _shrunk(img, mask: np.ndarray | None, max_side: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A PIL image (and its lesion mask, resized to it) as :func:`estimate_skin_tone` analyses them.

    The mask is brought to the image's size (nearest), then both are shrunk to
    ``max_side`` on the long side (box filter / nearest) when larger.
    """
    from PIL import Image

    m = None
    if mask is not None:
        m = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
        if m.size != img.size:
            m = m.resize(img.size, Image.Resampling.NEAREST)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(8, round(img.size[0] * scale)), max(8, round(img.size[1] * scale)))
        img = img.resize(size, Image.Resampling.BOX)
        m = m.resize(size, Image.Resampling.NEAREST) if m is not None else None
    return np.asarray(img), None if m is None else np.asarray(m) > 127


def estimate_skin_tone(cases: pd.DataFrame, use_masks: bool = True, max_side: int = 256,
                       progress: bool = True) -> pd.DataFrame:
    """Estimate every case's skin tone from its image: ``ita_estimated`` and its category and type.

    Parameters
    ----------
    cases : DataFrame
        A case table (``image_path``; DermSynth's ``mask`` column is used for
        the lesion when present and ``use_masks``).
    use_masks : bool
        Use ground-truth lesion masks when the table has them.
    max_side : int
        Larger images are shrunk to this side first (speed).
    progress : bool
        Show a progress bar.

    Returns
    -------
    DataFrame
        A copy of ``cases`` with ``ita_estimated`` (float, NaN when unknown),
        ``ita_category_estimated`` (string) and ``fitzpatrick_estimated``
        (Int64, via :func:`ita_to_fitzpatrick`).  Images that cannot be read
        or show too little skin stay unknown (one :class:`DataWarning`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.data import load
    >>> from dermretr.data.synth import generate
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=6, image_size=64,
    ...                 workers=1, progress=False)
    >>> est = estimate_skin_tone(load("synthetic", root), progress=False)
    >>> bool(((est["fitzpatrick_estimated"] - est["fitzpatrick"]).abs() <= 1).all())
    True
    """
    from tqdm.auto import tqdm

    from .data.images import load_rgb
    from .data.synth import load_masks

    if not isinstance(cases, pd.DataFrame) or "image_path" not in cases.columns:
        raise DermretrError("estimate_skin_tone needs a case table with an 'image_path' column")
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 16:
        raise DermretrError(f"max_side must be an integer of at least 16, got {max_side!r}")
    masks = _text(cases["mask"]) if use_masks and "mask" in cases.columns else None
    values = np.full(len(cases), np.nan)
    failed: list[str] = []
    paths = _text(cases["image_path"])
    for i, path in enumerate(tqdm(paths, desc="Skin tone (ITA)", unit="img", disable=not progress)):
        try:
            img = load_rgb(path)
            mask = None
            if masks is not None and masks[i] and os.path.isfile(masks[i]):
                mask = load_masks(masks[i])["lesion"]
            values[i] = estimate_ita(*_shrunk(img, mask, max_side))
        except (DermretrError, OSError, ValueError):  # unreadable image or mask
            failed.append(path)
    unknown = int(np.isnan(values).sum())
    if unknown:
        parts = [f"{len(failed)} unreadable, e.g. {failed[0]}"] if failed else []
        if unknown > len(failed):
            parts.append(f"{unknown - len(failed)} with too little skin visible")
        what = "; ".join(parts)
        warnings.warn(f"skin tone could not be estimated for {unknown} of {len(cases)} cases ({what}); "
                      "they are 'unknown'", DataWarning, stacklevel=2)
    out = cases.copy()
    out["ita_estimated"] = values
    out["ita_category_estimated"] = pd.array([ita_category(v) if np.isfinite(v) else pd.NA for v in values],
                                             dtype="string")
    out["fitzpatrick_estimated"] = pd.array([ita_to_fitzpatrick(v) for v in values], dtype="Int64")
    return out


_AGREEMENT_COLUMNS = ("iou", "contamination", "skin_kept", "lesion_fraction", "lesion_fraction_estimated",
                      "field_pixels", "skin_pixels", "ita", "ita_true_mask")


def skin_mask_agreement(cases: pd.DataFrame, mask_column: str = "lesion_mask", mask_bit: int | None = None,
                        max_side: int = 256, progress: bool = False) -> pd.DataFrame:
    """How well :func:`skin_mask`'s lesion/skin separation (no mask given) agrees with ground-truth lesion masks.

    Each image is analysed as :func:`estimate_skin_tone` analyses an image
    without a mask (shrunk to ``max_side``; the mask with it, nearest), and
    compared inside the *field of view* F that :func:`skin_mask` considers at
    all (not in the dark corners outside 95% of the half-side, not near-black).
    With S the estimated skin, the estimated lesion is E = F and not S (so hair
    and other thin dark structures the method leaves out count as lesion), and
    T is the true lesion inside F.

    Parameters
    ----------
    cases : DataFrame
        A case table with ``image_path`` and ``mask_column``.
    mask_column : str
        Column of mask file paths: PH2's ``lesion_mask`` (non-zero = lesion),
        or DermSynth's ``mask`` (criterion bits: its lesion bit 0 is used).
        Rows where it is empty (NA) are left out with one :class:`DataWarning`.
    mask_bit : int, optional
        Read this bit of the mask's raw values as the region (default: bit 0
        for a column named ``mask``, else every non-zero pixel); see
        :func:`dermretr.data.images.load_mask`.
    max_side : int
        Images are shrunk to this long side first, as in :func:`estimate_skin_tone`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    DataFrame
        One row per image with a mask: ``case_id`` (when the table has one),
        ``iou`` (|E and T| / |E or T|; NaN when both are empty),
        ``contamination`` (the share of S inside the true lesion: lesion pixels
        that would enter the ITA; NaN when S is empty), ``skin_kept`` (the
        share of the true skin in F that S keeps), ``lesion_fraction`` and
        ``lesion_fraction_estimated`` (|T| / |F|, |E| / |F|), ``field_pixels``,
        ``skin_pixels``, ``ita`` (:func:`estimate_ita` without a mask, as on
        data without masks) and ``ita_true_mask`` (with the true mask).
        ``attrs["summary"]`` holds the number of images and the mean and
        median of ``iou``, ``contamination`` and ``skin_kept``.

    Raises
    ------
    DermretrError
        Without the columns, when a mask file is missing or unreadable (naming
        the case), when a mask's shape does not match its image's, or when no
        row has a mask.

    Examples
    --------
    A light skin with a dark disc, and the disc as its mask:

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> yy, xx = np.mgrid[:96, :96]
    >>> disc = (yy - 48) ** 2 + (xx - 48) ** 2 < 20 ** 2
    >>> img = np.where(disc[..., None], [90, 55, 40], [220, 180, 160]).astype(np.uint8)
    >>> Image.fromarray(img).save(d / "case.png")
    >>> Image.fromarray(disc.astype(np.uint8) * 255).save(d / "case_lesion.bmp")
    >>> cases = pd.DataFrame({"case_id": ["c1"], "image_path": [str(d / "case.png")],
    ...                       "lesion_mask": [str(d / "case_lesion.bmp")]})
    >>> table = skin_mask_agreement(cases)
    >>> round(float(table.loc[0, "iou"]), 3), float(table.loc[0, "contamination"])
    (1.0, 0.0)
    """
    from tqdm.auto import tqdm

    from .data.images import load_mask, load_rgb

    if not isinstance(cases, pd.DataFrame):
        raise DermretrError(f"skin_mask_agreement needs a case table (DataFrame), got {type(cases).__name__}")
    missing = [c for c in ("image_path", mask_column) if c not in cases.columns]
    if missing:
        raise DermretrError(f"skin_mask_agreement needs the columns {missing} in the case table (it has "
                            f"{', '.join(map(str, list(cases.columns)[:12]))}); masks are read from "
                            f"mask_column={mask_column!r}")
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 16:
        raise DermretrError(f"max_side must be an integer of at least 16, got {max_side!r}")
    bit = (0 if mask_column == "mask" else None) if mask_bit is None else mask_bit
    raw = cases[mask_column]
    has = (raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy()
    if not has.any():
        raise DermretrError(f"no case has a mask in column {mask_column!r} ({len(cases)} cases)")
    if not has.all():
        warnings.warn(f"{int((~has).sum())} of {len(cases)} cases have no mask in {mask_column!r}; they are left "
                      "out of the agreement", DataWarning, stacklevel=2)
    rows = cases[has]
    ids = _text(rows["case_id"]) if "case_id" in rows.columns else np.arange(len(cases))[has].astype(str)
    out = []
    for cid, path, mpath in tqdm(list(zip(ids, _text(rows["image_path"]), _text(rows[mask_column]))),
                                 desc="Skin mask vs lesion mask", unit="img", disable=not progress):
        try:
            img = load_rgb(path)
            truth = load_mask(mpath, bit=bit)
        except DermretrError as exc:
            raise DermretrError(f"case {cid}: {exc}") from None
        (mh, mw), (w, h) = truth.shape, img.size
        if abs(mh / mw - h / w) > 0.02 * (h / w):
            raise DermretrError(f"case {cid}: the mask {mpath} is {mw}x{mh} but its image is {w}x{h} (another "
                                "aspect ratio): is it the mask of another image?")
        rgb, truth = _shrunk(img, truth, max_side)
        lab, skin = _skin(_as_rgb(rgb), None)
        _, field = _field(lab[..., 0])
        t = truth & field
        e = field & ~skin
        union, n_skin, n_true_skin = int((e | t).sum()), int(skin.sum()), int((field & ~truth).sum())
        out.append({"case_id": cid,
                    "iou": (e & t).sum() / union if union else np.nan,
                    "contamination": (skin & truth).sum() / n_skin if n_skin else np.nan,
                    "skin_kept": (skin & ~truth).sum() / n_true_skin if n_true_skin else np.nan,
                    "lesion_fraction": t.sum() / max(int(field.sum()), 1),
                    "lesion_fraction_estimated": e.sum() / max(int(field.sum()), 1),
                    "field_pixels": int(field.sum()), "skin_pixels": n_skin,
                    "ita": estimate_ita(rgb), "ita_true_mask": estimate_ita(rgb, truth)})
    table = pd.DataFrame(out, columns=["case_id", *_AGREEMENT_COLUMNS])
    for c in _AGREEMENT_COLUMNS:
        table[c] = table[c].astype(int if c.endswith("_pixels") else float)
    if "case_id" not in cases.columns:
        table = table.drop(columns="case_id")
    summary: dict = {"n": len(table), "mask_column": mask_column}
    for c in ("iou", "contamination", "skin_kept"):
        summary[f"{c}_mean"] = float(table[c].mean())
        summary[f"{c}_median"] = float(table[c].median())
    table.attrs["summary"] = summary
    return table


def ita_agreement(cases: pd.DataFrame, truth: str = "fitzpatrick", estimate: str = "fitzpatrick_estimated") -> dict:
    """Agreement of an estimated skin-tone grouping with a labelled one.

    Returns ``{"n", "exact", "within_one", "ita_mae"}``: cases with a known
    label, the share estimated in the same group, within one group, and the
    mean absolute error of ``ita_estimated`` against a labelled ``ita``
    (DermSynth; NaN otherwise).  Cases whose estimate is unknown count as wrong.

    >>> cases = pd.DataFrame({"fitzpatrick": [1, 2, 3, 6], "fitzpatrick_estimated": [1, 3, 5, pd.NA]})
    >>> ita_agreement(cases)
    {'n': 4, 'exact': 0.25, 'within_one': 0.5, 'ita_mae': nan}
    """
    table = ita_confusion(cases, truth, estimate)
    return {k: table.attrs[k] for k in ("n", "exact", "within_one", "ita_mae")}


def ita_confusion(cases: pd.DataFrame, truth: str = "fitzpatrick",
                  estimate: str = "fitzpatrick_estimated") -> pd.DataFrame:
    """Confusion matrix of an estimated skin-tone grouping against a labelled one.

    Parameters
    ----------
    cases : DataFrame
        With both groupings' columns (see :func:`skin_tone_groups`), e.g.
        from :func:`estimate_skin_tone` on DermSynth.
    truth, estimate : str
        Groupings of :data:`GROUPINGS` with scales of the same length.

    Returns
    -------
    DataFrame
        Counts: rows = labelled groups, columns = estimated groups (plus
        ``unknown`` when some estimates are missing); cases without a label
        are left out.  ``attrs``: ``n``, ``exact``, ``within_one``,
        ``ita_mae`` (see :func:`ita_agreement`), ``truth``, ``estimate``.

    Examples
    --------
    >>> cases = pd.DataFrame({"fitzpatrick": [1, 1, 2, 6], "fitzpatrick_estimated": [1, 2, 2, 5]})
    >>> m = ita_confusion(cases)
    >>> int(m.loc["I", "II"]), m.attrs["exact"], m.attrs["within_one"]
    (1, 0.5, 1.0)
    """
    t = skin_tone_groups(cases, truth).astype(object).to_numpy()
    e = skin_tone_groups(cases, estimate).astype(object).to_numpy()
    lt, le = GROUPINGS[truth], GROUPINGS[estimate]
    if len(lt) != len(le):
        raise DermretrError(f"{truth!r} ({len(lt)} groups) and {estimate!r} ({len(le)} groups) are not on one scale")
    known = t != UNKNOWN
    t, e = t[known], e[known]
    cols = [*le, UNKNOWN] if (e == UNKNOWN).any() else list(le)
    table = pd.crosstab(pd.Categorical(t, categories=lt), pd.Categorical(e, categories=cols), dropna=False)
    table.index.name, table.columns.name = GROUPING_TITLES[truth], GROUPING_TITLES[estimate]
    pos_t = np.array([lt.index(x) for x in t])
    pos_e = np.array([le.index(x) if x != UNKNOWN else -100 for x in e])
    mae = np.nan
    if "ita" in cases.columns and "ita_estimated" in cases.columns:
        err = (pd.to_numeric(cases["ita_estimated"], errors="coerce") - pd.to_numeric(cases["ita"], errors="coerce"))
        err = err.to_numpy(dtype=float)
        mae = float(np.nanmean(np.abs(err))) if np.isfinite(err).any() else np.nan
    table.attrs.update({"n": len(t), "exact": float(np.mean(pos_t == pos_e)),
                        "within_one": float(np.mean(np.abs(pos_t - pos_e) <= 1)), "ita_mae": mae,
                        "truth": truth, "estimate": estimate})
    return table


# ----------------------------------------------------------------------------- figures


#: ITA (degrees) at the middle of each ITA category, very light to dark (the colours of the figures).
_TONE_ANGLES = (63.0, 48.0, 34.5, 19.0, -10.0, -45.0)


def _tone_colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` skin-like colours from very light to dark, through the ITA categories' middles."""
    angles = np.interp(np.linspace(0, len(_TONE_ANGLES) - 1, max(n, 1)), np.arange(len(_TONE_ANGLES)), _TONE_ANGLES)
    b = 17.0
    return [tuple(lab_to_rgb(np.array([50 + b * math.tan(math.radians(a)), 10.0, b])).tolist()) for a in angles[:n]]


def _title(by) -> str:
    return GROUPING_TITLES.get(by, "skin-tone group") if isinstance(by, str) else "skin-tone group"


def plot_slices(table: pd.DataFrame, metrics: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Bars of each group's metric with CI whiskers, the overall value as a line and the gap annotated.

    Groups with fewer than ``min_group`` queries are hatched, ``unknown`` is
    grey; each bar is labelled with its number of queries.

    >>> pq = pd.DataFrame({"case_id": list("abcd"), "n_relevant": 1, "fitzpatrick": [1, 1, 6, 6],
    ...                    "recall@1": [1.0, 1.0, 0.0, 1.0]})
    >>> fig = plot_slices(slice_metrics(pq, metrics=["recall@1"], n_boot=50, min_group=2))
    >>> len(fig.axes)
    1
    """
    if not isinstance(table, pd.DataFrame) or not {"group", "kind", "metric", "value"} <= set(table.columns):
        raise DermretrError("plot_slices needs the table of slice_metrics")
    metrics = list(dict.fromkeys(table["metric"])) if metrics is None else list(metrics)
    by = table.attrs.get("by")
    ci = table.attrs.get("ci", 0.95)
    n_groups = int((table["kind"] == "group").sum() // max(1, table["metric"].nunique()))
    fig = Figure(figsize=((0.6 * n_groups + 2.6) * len(metrics), 4.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        t = table[table["metric"] == m]
        if len(t) == 0:
            raise DermretrError(f"no metric {m!r} in the table; it has {', '.join(dict.fromkeys(table['metric']))}")
        grp = t[t["kind"] == "group"].reset_index(drop=True)
        colors = _tone_colors(max(1, (grp["group"] != UNKNOWN).sum()))
        x = np.arange(len(grp))
        for i, r in grp.iterrows():
            color = (0.7, 0.7, 0.7) if r["group"] == UNKNOWN else colors[i]
            v = r["value"] if np.isfinite(r["value"]) else 0.0
            ax.bar(i, v, color=color, edgecolor="0.25", hatch="//" if r["small"] and r["n_queries"] else None)
            if np.isfinite(r["ci_low"]):
                ax.errorbar(i, v, yerr=[[v - r["ci_low"]], [r["ci_high"] - v]], color="black", capsize=4, lw=1.2)
            ax.text(i, (r["ci_high"] if np.isfinite(r["ci_high"]) else v) + 0.02, f"n={r['n_queries']}",
                    ha="center", va="bottom", fontsize=8)
        overall = t[t["kind"] == "overall"]
        if len(overall):
            o = overall.iloc[0]
            ax.axhline(o["value"], color="tab:blue", ls="--", lw=1.2, label=f"overall {o['value']:.3f}")
        diff = t[t["kind"] == "difference"]
        ratio = t[t["kind"] == "ratio"]
        if len(diff) and np.isfinite(diff.iloc[0]["value"]):
            dr = diff.iloc[0]
            gap_groups = [g for g in grp["group"] if g in table.attrs.get("gap_groups", list(grp["group"]))]
            vals = grp.set_index("group").loc[gap_groups, "value"]
            hi, lo = float(vals.max()), float(vals.min())
            xr = len(grp) - 0.45
            ax.annotate("", xy=(xr, hi), xytext=(xr, lo), arrowprops={"arrowstyle": "<->", "color": "tab:red"})
            ax.hlines([hi, lo], -0.4, xr, colors="tab:red", linestyles=":", lw=0.8)
            text = f"gap {dr['value']:.3f}"
            if np.isfinite(dr["ci_low"]):
                text += f"\n[{dr['ci_low']:.2f}, {dr['ci_high']:.2f}]"
            if np.isfinite(dr["p_value"]):
                text += f"\np={dr['p_value']:.3f}"
            if len(ratio) and np.isfinite(ratio.iloc[0]["value"]):
                text += f"\nratio {ratio.iloc[0]['value']:.2f}"
            ax.text(xr + 0.08, (hi + lo) / 2, text, color="tab:red", fontsize=8, va="center", ha="left")
            ax.set_xlim(-0.6, len(grp) + 0.9)
        ax.set_xticks(x, grp["group"].tolist(), rotation=30 if grp["group"].str.len().max() > 4 else 0)
        ax.set_ylim(0, 1.12)
        ax.set_ylabel(m)
        ax.set_xlabel(_title(by))
        ax.legend(loc="best", fontsize=8, frameon=False)
    fig.suptitle(title or f"Retrieval quality by {_title(by).lower()} ({100 * ci:.0f}% bootstrap CI; "
                          f"hatched: < {table.attrs.get('min_group', 20)} queries)", fontsize=10)
    return fig


def plot_exposure(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Stacked bars: skin-tone mix of the retrieved top-k per query group, and the gallery's mix.

    >>> cases = pd.DataFrame({"case_id": list("abcdef"), "fitzpatrick": [1, 1, 6, 6, 1, 6],
    ...                       "split": ["train"] * 4 + ["test"] * 2})
    >>> res = pd.DataFrame({"query_case_id": ["e", "f"], "rank": [1, 1], "case_id": ["a", "c"]})
    >>> len(plot_exposure(exposure(res, cases, n_boot=0)).axes)
    1
    """
    if not isinstance(table, pd.DataFrame) or not {"group", "mean_tone", "drift"} <= set(table.columns):
        raise DermretrError("plot_exposure needs the table of exposure")
    by = table.attrs.get("by")
    levels = table.attrs.get("levels") or [c for c in table.columns[3:] if c not in (
        "mean_tone", "drift", "drift_low", "drift_high", "same_tone", "same_tone_expected")]
    colors = _tone_colors(len([lv for lv in levels if lv != UNKNOWN]))
    fig = Figure(figsize=(8.0, 0.45 * len(table) + 1.8), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(table))[::-1]
    left = np.zeros(len(table))
    for j, lv in enumerate(levels):
        share = table[lv].fillna(0.0).to_numpy(dtype=float)
        ax.barh(y, share, left=left, color=(0.7, 0.7, 0.7) if lv == UNKNOWN else colors[j], edgecolor="white",
                label=lv)
        left += share
    for yi, (_, r) in zip(y, table.iterrows()):
        if r["group"] == "gallery":
            txt = f"mean tone {r['mean_tone']:.2f}"
        else:
            txt = f"drift {r['drift']:+.2f}"
            if np.isfinite(r["drift_low"]):
                txt += f" [{r['drift_low']:+.2f}, {r['drift_high']:+.2f}]"
        ax.text(1.02, yi, txt, va="center", fontsize=8)
    labels = [f"{g} (queries, n={n})" if g not in ("gallery", "all queries") else
              (f"gallery (n={r})" if g == "gallery" else f"all queries (n={n})")
              for g, n, r in zip(table["group"], table["n_queries"], table["n_retrieved"])]
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 1.45)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel(f"share of retrieved top-{table.attrs.get('k', 'k')} cases (gallery: share of cases)")
    ax.legend(title=_title(by), bbox_to_anchor=(1.0, 1.0), loc="upper left", fontsize=8, title_fontsize=8)
    ax.set_title(title or f"Exposure: skin tones retrieved vs the gallery (drift < 0: towards lighter skin)",
                 fontsize=10)
    return fig


def plot_ita_confusion(confusion: pd.DataFrame, title: str | None = None) -> Figure:
    """Heat map of :func:`ita_confusion` (row-normalised colours, counts written), accuracy in the title.

    >>> m = ita_confusion(pd.DataFrame({"fitzpatrick": [1, 2, 6], "fitzpatrick_estimated": [1, 3, 6]}))
    >>> len(plot_ita_confusion(m).axes)
    2
    """
    if not isinstance(confusion, pd.DataFrame) or confusion.empty:
        raise DermretrError("plot_ita_confusion needs the table of ita_confusion")
    counts = confusion.to_numpy(dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rows > 0, counts / np.where(rows > 0, rows, 1), 0.0)
    fig = Figure(figsize=(1.0 + 0.7 * counts.shape[1] + 1.6, 1.2 + 0.6 * counts.shape[0]), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in confusion.columns])
    ax.set_yticks(range(counts.shape[0]), [str(c) for c in confusion.index])
    ax.set_xlabel(str(confusion.columns.name or "estimated"))
    ax.set_ylabel(str(confusion.index.name or "labelled"))
    fig.colorbar(im, ax=ax, label="share of the row")
    a = confusion.attrs
    if title is None and "exact" in a:
        title = (f"Skin tone estimated from pixels vs labels (n={a['n']})\nexact {a['exact']:.1%}, "
                 f"within one {a['within_one']:.1%}" + (f", ITA MAE {a['ita_mae']:.1f} deg"
                                                        if np.isfinite(a.get("ita_mae", np.nan)) else ""))
    ax.set_title(title or "Skin tone: estimated vs labelled", fontsize=9)
    return fig


def plot_comparison(comparison: pd.DataFrame, metrics: Sequence[str] | None = None,
                    names: tuple[str, str] = ("before", "after"), title: str | None = None) -> Figure:
    """Before/after bars per group with the paired difference, its CI and p-value, and the gap change.

    >>> pq = pd.DataFrame({"case_id": list("abcd"), "n_relevant": 1, "fitzpatrick": [1, 1, 6, 6],
    ...                    "recall@1": [1.0, 1.0, 0.0, 1.0]})
    >>> fig = plot_comparison(compare_runs(pq, pq.assign(**{"recall@1": 1.0}), metrics=["recall@1"], n_boot=50))
    >>> len(fig.axes)
    1
    """
    if not isinstance(comparison, pd.DataFrame) or not {"group", "kind", "before", "after"} <= set(comparison.columns):
        raise DermretrError("plot_comparison needs the table of compare_runs")
    metrics = list(dict.fromkeys(comparison["metric"])) if metrics is None else list(metrics)
    by = comparison.attrs.get("by")
    fig = Figure(figsize=(max(5.0, 1.1 * comparison["group"].nunique() + 2.0), 3.9 * len(metrics)),
                 layout="constrained")
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    for ax, m in zip(axes, metrics):
        t = comparison[(comparison["metric"] == m) & comparison["kind"].isin(["group", "overall"])]
        t = t.reset_index(drop=True)
        if len(t) == 0:
            raise DermretrError(f"no metric {m!r} in the comparison")
        x = np.arange(len(t))
        ax.bar(x - 0.2, t["before"], width=0.4, color="0.65", label=names[0])
        ax.bar(x + 0.2, t["after"], width=0.4, color="tab:green", label=names[1])
        for i, r in t.iterrows():
            top = max(r["before"], r["after"])
            txt = f"{r['difference']:+.3f}"
            if np.isfinite(r["ci_low"]):
                txt += f"\n[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
            if np.isfinite(r["p_value"]):
                txt += f"\np={r['p_value']:.3f}"
            ax.text(i, top + 0.03, txt, ha="center", va="bottom", fontsize=7,
                    color="tab:red" if np.isfinite(r["p_value"]) and r["p_value"] < 0.05 else "black")
        ax.set_xticks(x, [f"{g}\nn={n}" for g, n in zip(t["group"], t["n_queries"])], fontsize=8)
        ax.set_ylim(0, 1.35)
        ax.set_ylabel(m)
        gap = comparison[(comparison["metric"] == m) & (comparison["kind"] == "gap")]
        sub = f"{m} by {_title(by).lower()}"
        if len(gap) and np.isfinite(gap.iloc[0]["before"]):
            g = gap.iloc[0]
            sub += f"; gap {g['before']:.3f} -> {g['after']:.3f} (change {g['difference']:+.3f}"
            if np.isfinite(g["ci_low"]):
                sub += f" [{g['ci_low']:+.2f}, {g['ci_high']:+.2f}], p={g['p_value']:.3f}"
            sub += ")"
        ax.set_title(sub, fontsize=9)
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(title or f"{names[1]} - {names[0]}: paired difference, bootstrap CI, sign-flip permutation p",
                 fontsize=10)
    return fig


# ----------------------------------------------------------------------------- one run, end to end

_METRIC_NAME = re.compile(r"^(recall|precision|map|ndcg)@([1-9]\d*)$|^mrr$")


def _cutoffs(metrics: Sequence[str]) -> tuple[int, ...]:
    ks = []
    for m in metrics:
        match = _METRIC_NAME.match(str(m))
        if not match:
            raise DermretrError(f"unknown metric {m!r}; use recall@K, precision@K, map@K, ndcg@K or mrr")
        if match.group(2):
            ks.append(int(match.group(2)))
    return tuple(sorted(set(ks))) or (1,)


class _CachingRetriever:
    """A retriever whose encodings are kept, so that metrics and exposure encode each image once."""

    def __init__(self, retriever):
        self.retriever = retriever
        self.kind = getattr(retriever, "kind", "unknown")
        self._cache: dict = {}

    def encode_queries(self, paths, texts, **kwargs):
        key = ("q", tuple(map(str, paths)), tuple(map(str, texts)))
        if key not in self._cache:
            self._cache[key] = self.retriever.encode_queries(paths, texts, **kwargs)
        return self._cache[key]

    def encode_targets(self, paths, **kwargs):
        key = ("t", tuple(map(str, paths)))
        if key not in self._cache:
            self._cache[key] = self.retriever.encode_targets(paths, **kwargs)
        return self._cache[key]


@dataclass
class FairnessReport:
    """What :func:`run_fairness` returns; :meth:`save` writes its tables and figures."""

    by: str
    run: str
    method: str
    protocol: str
    cases: pd.DataFrame
    per_query: pd.DataFrame
    slices: pd.DataFrame
    exposure: pd.DataFrame | None = None
    results: pd.DataFrame | None = None
    confusion: pd.DataFrame | None = None
    baseline_per_query: pd.DataFrame | None = None
    comparison: pd.DataFrame | None = None
    names: tuple[str, str] = ("baseline", "run")

    def save(self, out: str | os.PathLike) -> list[Path]:
        """Write CSV tables and PNG figures into the folder ``out`` (atomically, file by file).

        ``fairness_<by>.csv/.png``, ``per_query.csv``, ``exposure_<by>.csv/.png``
        (case protocol), ``skin_tone_estimated.csv`` and ``ita_confusion.csv/.png``
        (estimated skin tone), ``comparison_<by>.csv/.png`` (with a baseline).
        """
        from ._io import atomic_path, claim_dir, save_figure

        out = claim_dir(out, "fairness", recognise=is_fairness_folder)  # never writes into a folder of the user's
        written: list[Path] = []

        def csv(frame: pd.DataFrame, name: str, index: bool = False) -> None:
            with atomic_path(out / name) as tmp:
                frame.to_csv(tmp, index=index)
            written.append(out / name)

        def png(fig: Figure, name: str) -> None:
            written.append(save_figure(fig, out / name))

        csv(self.slices, f"fairness_{self.by}.csv")
        png(plot_slices(self.slices, title=f"{self.run} ({self.method}), protocol {self.protocol}: retrieval quality "
                                           f"by {_title(self.by).lower()}"), f"fairness_{self.by}.png")
        csv(self.per_query, "per_query.csv")
        if self.exposure is not None:
            csv(self.exposure, f"exposure_{self.by}.csv")
            png(plot_exposure(self.exposure), f"exposure_{self.by}.png")
        if "ita_estimated" in self.cases.columns:
            cols = [c for c in ("case_id", "split", "fitzpatrick", "monk", "ita", "ita_estimated",
                                "ita_category_estimated", "fitzpatrick_estimated") if c in self.cases.columns]
            csv(self.cases[cols], "skin_tone_estimated.csv")
        if self.confusion is not None:
            csv(self.confusion, "ita_confusion.csv", index=True)
            png(plot_ita_confusion(self.confusion), "ita_confusion.png")
        if self.comparison is not None:
            csv(self.comparison, f"comparison_{self.by}.csv")
            png(plot_comparison(self.comparison, names=self.names), f"comparison_{self.by}.png")
        return written


_OUTPUT_FILES = re.compile(r"^(fairness_\w+|exposure_\w+|comparison_\w+|ita_confusion)\.(csv|png)$"
                           r"|^(per_query|skin_tone_estimated)\.csv$")


def is_fairness_folder(path: str | os.PathLike) -> bool:
    """Whether the folder holds only what :meth:`FairnessReport.save` writes (a folder of an older version).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "fairness_fitzpatrick.csv").write_text("group")
    >>> is_fairness_folder(d)
    True
    >>> _ = (d / "notes.txt").write_text("mine")
    >>> is_fairness_folder(d)
    False
    """
    names = [p.name for p in Path(path).iterdir() if not p.name.startswith(".")]
    return bool(names) and all(_OUTPUT_FILES.match(n) for n in names)


def run_fairness(run_dir: str | os.PathLike, data, by: str = "fitzpatrick", protocol: str = "case",
                 metrics: Sequence[str] = ("recall@1", "map@10"), split: str = "test", n_boot: int = 1000,
                 ci: float = 0.95, min_group: int = 20, estimate: bool = False, exposure_k: int = 10,
                 baseline: str | os.PathLike | None = None, seed: int = 0, batch_size: int = 64,
                 device: str = "auto", progress: bool = False, retriever=None,
                 baseline_retriever=None) -> FairnessReport:
    """Evaluate a run and slice it by skin tone: metrics per group, exposure, estimated tone, comparison.

    Parameters
    ----------
    run_dir : path
        A ``dermretr train`` run (``RUN_DIR/checkpoints/best.pt``).
    data : str or DataFrame
        ``"SOURCE:PATH"`` (DermSynth triplets are read from the folder for
        the modify protocol) or a case table.
    by : str
        A grouping of :data:`GROUPINGS`; estimated groupings estimate the
        skin tone from the pixels (:func:`estimate_skin_tone`).
    protocol : {"case", "modify"}
        See :func:`dermretr.evaluate.evaluate_run`; exposure needs "case".
    metrics, n_boot, ci, min_group, seed
        As in :func:`slice_metrics`.
    split : {"test", "val"}
        Query split (the gallery is train+val, or train for val queries).
    estimate : bool
        Also estimate the skin tone from the pixels (and, where the data has
        Fitzpatrick labels, report :func:`ita_confusion`).
    exposure_k : int
        Top-k of the exposure (0: no exposure).
    baseline : path, optional
        A second run (e.g. before a mitigation), compared with
        :func:`compare_runs` (``run_dir`` is the "after").
    batch_size, device, progress
        Encoding options.
    retriever, baseline_retriever : Retriever, optional
        Use these models instead of loading the checkpoints.

    Returns
    -------
    FairnessReport

    Examples
    --------
    >>> run_fairness("no/such/run", "synthetic:/nowhere")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: run folder no/such/run not found (train one with `dermretr train --out no/such/run`)
    """
    from .evaluate import PROTOCOLS, _load_data, evaluate_run, load_triplets, run_checkpoint

    _check_by(by)
    if protocol == "tone":  # its queries are (case, target range) pairs, not one per case: not sliced here
        raise DermretrError("fairness slices the case and modify protocols; the tone protocol is already by skin "
                            "tone: use `dermretr evaluate --protocol tone`")
    if protocol not in PROTOCOLS:
        raise DermretrError(f"unknown protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    ks = _cutoffs(metrics)
    _check_boot(n_boot, ci)
    if isinstance(exposure_k, bool) or not isinstance(exposure_k, (int, np.integer)) or exposure_k < 0:
        raise DermretrError(f"exposure_k must be a non-negative integer, got {exposure_k!r}")
    if split not in ("test", "val"):
        raise DermretrError(f"split must be 'test' or 'val', got {split!r}")
    ckpt = run_checkpoint(run_dir) if retriever is None else None
    base_ckpt = run_checkpoint(baseline) if baseline is not None and baseline_retriever is None else None
    cases, root = _load_data(data)
    if estimate or by.endswith("_estimated"):
        cases = estimate_skin_tone(cases, progress=progress)
    skin_tone_groups(cases, by)  # a missing or unknown grouping fails before any model is loaded
    triplets = load_triplets(root) if protocol == "modify" and root is not None else None
    if retriever is None or (baseline is not None and baseline_retriever is None):
        from .models.retriever import Retriever
    model = _CachingRetriever(retriever if retriever is not None else Retriever.load(ckpt, device=device))
    name = Path(run_dir).expanduser().name or str(run_dir)
    options = {"split": split, "ks": ks, "n_boot": 0, "seed": seed, "batch_size": batch_size, "device": device,
               "progress": progress, "triplets": triplets}
    per_query, _ = evaluate_run(run_dir, cases, protocol, retriever=model, name=name, **options)
    slices = slice_metrics(per_query, cases, by=by, metrics=metrics, n_boot=n_boot, ci=ci, min_group=min_group,
                           seed=seed)
    report = FairnessReport(by=by, run=name, method=model.kind, protocol=protocol, cases=cases, per_query=per_query,
                            slices=slices)
    if protocol == "case" and exposure_k:
        gallery_splits = ("train", "val") if split == "test" else ("train",)
        report.results = retrieve_topk(model, cases, k=exposure_k, query_split=split, gallery_splits=gallery_splits,
                                       batch_size=batch_size, progress=progress)
        report.exposure = exposure(report.results, cases, by=by, gallery_splits=gallery_splits, n_boot=n_boot,
                                   ci=ci, seed=seed)
    if "ita_estimated" in cases.columns and "fitzpatrick" in cases.columns and cases["fitzpatrick"].notna().any():
        report.confusion = ita_confusion(cases)
    if baseline is not None:
        base = baseline_retriever if baseline_retriever is not None else Retriever.load(base_ckpt, device=device)
        base_name = Path(baseline).expanduser().name or str(baseline)
        report.baseline_per_query, _ = evaluate_run(baseline, cases, protocol, retriever=base, name=base_name,
                                                    **options)
        report.comparison = compare_runs(report.baseline_per_query, per_query, cases, by=by, metrics=metrics,
                                         n_boot=n_boot, ci=ci, min_group=min_group, seed=seed)
        report.names = (base_name, name) if base_name != name else ("baseline", "run")
    return report
