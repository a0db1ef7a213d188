"""Case mix of skin-tone groups: each group's diagnosis mix, and the gap standardised to a common mix.

A gap between skin-tone groups can be a gap between *case mixes*: when one
group's queries are mostly nevi (easy to retrieve) and another's mostly
melanomas (hard), the raw gap says more about the diagnoses than about skin
tone.  :func:`case_mix` gives each group's mix (counts and shares of the
diagnosis groups among its queries) and its distance from the pooled mix;
:func:`adjusted_gap` gives the gap after *direct standardisation*: every
group's metric is averaged within each diagnosis group, and these means are
reweighted to one standard mix, the pooled mix of the groups in the gap
(Rothman, Greenland & Lash, *Modern Epidemiology*, 3rd ed. 2008, on
standardisation; Fleiss, Levin & Paik, *Statistical Methods for Rates and
Proportions*, 3rd ed. 2003, on the direct method).  Groups then differ only
where the same diagnoses are retrieved differently.

**When do mixes differ?**  By the total variation distance (TVD) of a
group's mix ``p`` from the pooled mix ``w``, ``0.5 * sum_s |p_s - w_s|``: the
share of the group's queries that would have to change diagnosis group to
match.  It bounds what the mix can do to the group's mean: with ``m_s`` the
group's mean within diagnosis group ``s``, ``crude - standardised = sum_s
(p_s - w_s) m_s``, at most ``TVD * (max_s m_s - min_s m_s)`` in size.  Above
:data:`MIX_THRESHOLD` (0.2), with diagnosis groups whose means differ by 0.5
(nevi against melanomas is often more), one group's mean can move by 0.1 and
the gap by twice that: as large as the gaps a fairness audit reports.
:func:`dermretr.fairness.slice_metrics` warns then.  The distance is of the
mixes observed, not a test: a chance imbalance biases this sample's raw gap
as much as a systematic one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._checks import check_boot, check_int, is_real
from .._errors import DermretrError
from ..stats import (
    as_text,
    check_metrics,
    check_per_query,
    gap_intervals,
    group_gap,
    means_by_group,
    standardised_bootstrap_means,
    standardised_means,
    stratified_permutation_gap_p,
)
from ._groups import check_by, gap_groups, query_cases, query_groups, select_groups

__all__ = ["MIX_THRESHOLD", "STRATUM", "POOLED", "query_strata", "mix_distances", "case_mix_note", "case_mix",
           "format_case_mix", "adjusted_gap"]

#: A gap group whose diagnosis mix is further than this (total variation distance) from the pooled mix is warned of.
MIX_THRESHOLD = 0.2
#: The column whose mix is compared and standardised: the diagnosis group of each query.
STRATUM = "diagnosis_group"
#: The row of the pooled mix of the gap groups (the standard) in :func:`case_mix`.
POOLED = "pooled (gap groups)"
_MISSING = "(missing)"
_DIFF = "difference (max - min)"


# ----------------------------------------------------------------------------- mixes


def query_strata(per_query: pd.DataFrame, cases: pd.DataFrame | None, stratum: str = STRATUM) -> np.ndarray | None:
    """Each query's stratum (object array, ``"(missing)"`` when empty), or None when no table has the column.

    Read from the per-query table, else from the query's row of ``cases``
    (the data the queries were evaluated on, checked as in :func:`query_groups`).
    """
    if stratum in per_query.columns:
        labels = as_text(per_query[stratum])
    elif cases is not None and stratum in cases.columns:
        labels = as_text(query_cases(per_query, cases)[stratum])
    else:
        return None
    labels[labels == ""] = _MISSING
    return labels


def mix_distances(counts: np.ndarray, standard: np.ndarray) -> np.ndarray:
    """Total variation distance of each row's mix (``counts`` ``[G, S]``) from the mix of ``standard`` ``[S]``.

    >>> mix_distances(np.array([[6, 14], [90, 54]]), np.array([96, 68])).round(3).tolist()
    [0.285, 0.04]
    """
    counts = np.asarray(counts, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / rows
    w = np.asarray(standard, dtype=float) / float(np.sum(standard))
    return 0.5 * np.abs(shares - w[None, :]).sum(axis=1)


def case_mix_note(group: str, distance: float, threshold: float = MIX_THRESHOLD, stratum: str = STRATUM) -> str:
    """The warning that the gap groups' mixes differ (one line).

    >>> print(case_mix_note("V-VI", 0.31))  # doctest: +NORMALIZE_WHITESPACE
    the diagnosis_group mix differs between the skin-tone groups of the gap (V-VI is 0.31 from their pooled mix,
    total variation distance; threshold 0.2): the raw gap mixes case mix with skin tone; read the case-mix-adjusted
    gap beside it (dermretr.fairness.adjusted_gap; `dermretr fairness` prints it)
    """
    return (f"the {stratum} mix differs between the skin-tone groups of the gap ({group} is {distance:.2f} from "
            f"their pooled mix, total variation distance; threshold {threshold:g}): the raw gap mixes case mix with "
            "skin tone; read the case-mix-adjusted gap beside it (dermretr.fairness.adjusted_gap; `dermretr fairness` "
            "prints it)")


@dataclass
class _Selection:
    """The usable queries of a per-query table, their groups and strata, and the groups of the gap."""

    levels: list[str]
    codes: np.ndarray
    counts: np.ndarray
    strata: np.ndarray
    values: np.ndarray
    gap_idx: list[int]
    gap_note: str


def _select(per_query: pd.DataFrame, cases: pd.DataFrame | None, by: str, metrics: Sequence[str],
            min_group: int, groups: Sequence[str] | None, stratum: str) -> _Selection:
    """The queries as :func:`slice_metrics` takes them (usable, ``groups``, gap groups), with their strata."""
    check_by(by)
    check_int(min_group, "min_group")
    tones = query_groups(per_query, cases, by)
    strata = query_strata(per_query, cases, stratum)
    if strata is None:
        raise DermretrError(f"cannot compare case mixes: neither the per-query table nor the case table has a "
                            f"{stratum!r} column")
    usable = per_query["n_relevant"].to_numpy() > 0
    if not usable.any():
        raise DermretrError("no query has a relevant case: nothing to compare")
    tones, strata = tones[usable], strata[usable]
    values = per_query.loc[usable, list(metrics)].to_numpy(dtype=np.float64)
    keep, levels = select_groups(tones, by, groups)
    if keep is not None:
        tones, strata, values = tones[keep], strata[keep], values[keep]
    codes = np.array([levels.index(t) for t in tones], dtype=np.int64)
    counts = np.bincount(codes, minlength=len(levels))
    gap_idx, gap_note = gap_groups(levels, counts, min_group)
    return _Selection(levels, codes, counts, strata, values, gap_idx, gap_note)


def _strata_order(labels: np.ndarray) -> list[str]:
    present = sorted(set(labels) - {_MISSING})
    return [*present, _MISSING] if _MISSING in set(labels) else present


def _crosstab(codes: np.ndarray, s_codes: np.ndarray, n_groups: int, n_strata: int) -> np.ndarray:
    return np.bincount(codes * n_strata + s_codes, minlength=n_groups * n_strata).reshape(n_groups, n_strata)


def case_mix(per_query: pd.DataFrame, cases: pd.DataFrame | None = None, by: str = "fitzpatrick",
             stratum: str = STRATUM, min_group: int = 20, groups: Sequence[str] | None = None,
             threshold: float = MIX_THRESHOLD) -> pd.DataFrame:
    """Each skin-tone group's diagnosis mix: counts and shares of the diagnosis groups among its queries.

    Parameters
    ----------
    per_query, cases, by, min_group, groups
        As in :func:`slice_metrics` (the same usable queries and gap groups).
    stratum : str
        The column whose mix is compared (default ``diagnosis_group``; from the
        per-query table, else the case table).
    threshold : float
        Mixes further than this from the pooled mix are flagged (:data:`MIX_THRESHOLD`).

    Returns
    -------
    DataFrame
        One row per group with queries (``unknown`` too) and stratum, then the
        rows of the gap groups pooled (``group`` :data:`POOLED`, the standard of
        :func:`adjusted_gap`): ``group, stratum, n_queries, share,
        group_queries, in_gap, tvd`` (``tvd``: the group's total variation
        distance from the pooled mix).  ``attrs``: ``by``, ``stratum``,
        ``gap_groups``, ``threshold``, ``max_tvd`` and ``max_tvd_group`` (over
        the gap groups), ``differs`` (``max_tvd > threshold``).

    Examples
    --------
    >>> pq = pd.DataFrame({"case_id": list("abcdefgh"), "n_relevant": 1, "fitzpatrick": [1, 1, 1, 1, 6, 6, 6, 6],
    ...                    "diagnosis_group": ["NEV", "NEV", "NEV", "MEL", "NEV", "MEL", "MEL", "MEL"]})
    >>> mix = case_mix(pq, min_group=2)
    >>> mix[["group", "stratum", "n_queries", "share"]].to_numpy().tolist()  # doctest: +NORMALIZE_WHITESPACE
    [['I', 'MEL', 1, 0.25], ['I', 'NEV', 3, 0.75], ['VI', 'MEL', 3, 0.75], ['VI', 'NEV', 1, 0.25],
     ['pooled (gap groups)', 'MEL', 4, 0.5], ['pooled (gap groups)', 'NEV', 4, 0.5]]
    >>> mix.attrs["max_tvd"], mix.attrs["differs"]
    (0.25, True)
    """
    per_query = check_per_query(per_query)
    if not is_real(threshold) or not 0.0 <= float(threshold) <= 1.0:
        raise DermretrError(f"threshold must be a number in [0, 1], got {threshold!r}")
    sel = _select(per_query, cases, by, (), min_group, groups, stratum)
    names = _strata_order(sel.strata)
    s_codes = np.array([names.index(s) for s in sel.strata], dtype=np.int64)
    counts = _crosstab(sel.codes, s_codes, len(sel.levels), len(names))
    gap = sel.gap_idx
    pooled = counts[gap].sum(axis=0) if gap else counts.sum(axis=0)
    tvd = mix_distances(counts, pooled)
    rows = []
    shown = [i for i in range(len(sel.levels)) if sel.counts[i] > 0]
    for i in shown:
        n = int(sel.counts[i])
        for j, s in enumerate(names):
            rows.append({"group": sel.levels[i], "stratum": s, "n_queries": int(counts[i, j]),
                         "share": counts[i, j] / n, "group_queries": n, "in_gap": i in gap, "tvd": float(tvd[i])})
    for j, s in enumerate(names):
        rows.append({"group": POOLED, "stratum": s, "n_queries": int(pooled[j]), "share": pooled[j] / pooled.sum(),
                     "group_queries": int(pooled.sum()), "in_gap": False, "tvd": 0.0})
    table = pd.DataFrame(rows, columns=["group", "stratum", "n_queries", "share", "group_queries", "in_gap", "tvd"])
    worst = max(gap, key=lambda i: tvd[i]) if gap else None
    max_tvd = float(tvd[worst]) if worst is not None else float("nan")
    table.attrs.update({"by": by, "stratum": stratum, "gap_groups": [sel.levels[i] for i in gap],
                        "threshold": float(threshold), "max_tvd": max_tvd,
                        "max_tvd_group": sel.levels[worst] if worst is not None else None,
                        "differs": bool(max_tvd > threshold)})
    return table


def format_case_mix(table: pd.DataFrame, decimals: int = 0) -> pd.DataFrame:
    """A printable view of :func:`case_mix`: one row per group, cells ``"count (share%)"``, and the distance.

    >>> pq = pd.DataFrame({"case_id": list("abcd"), "n_relevant": 1, "fitzpatrick": [1, 1, 6, 6],
    ...                    "diagnosis_group": ["NEV", "NEV", "NEV", "MEL"]})
    >>> format_case_mix(case_mix(pq, min_group=2)).loc["VI"].tolist()
    ['2', '1 (50%)', '1 (50%)', '0.25']
    """
    need = {"group", "stratum", "n_queries", "share", "group_queries", "in_gap", "tvd"}
    if not isinstance(table, pd.DataFrame) or not need <= set(table.columns):
        raise DermretrError("format_case_mix needs the table of case_mix")
    names = list(dict.fromkeys(table["stratum"]))
    labels = list(dict.fromkeys(table["group"]))
    # the grouping is named by the slices printed above it (format_slices), not again here
    out = pd.DataFrame(index=pd.Index(labels, name="skin-tone group"), columns=["queries", *names, "TVD"],
                       dtype=object)
    for label in labels:
        rows = table[table["group"] == label].set_index("stratum")
        first = rows.iloc[0]
        out.loc[label, "queries"] = str(int(first["group_queries"]))
        for s in names:
            out.loc[label, s] = f"{int(rows.loc[s, 'n_queries'])} ({rows.loc[s, 'share']:.{decimals}%})"
        # the distance matters for the gap groups; the others' (in brackets) is shown for information
        out.loc[label, "TVD"] = ("" if label == POOLED else f"{first['tvd']:.2f}" if bool(first["in_gap"])
                                 else f"({first['tvd']:.2f})")
    return out


# ----------------------------------------------------------------------------- the adjusted gap


def adjusted_gap(per_query: pd.DataFrame, cases: pd.DataFrame | None = None, by: str = "fitzpatrick",
                 metrics: Sequence[str] = ("recall@1", "map@10"), n_boot: int = 1000, ci: float = 0.95,
                 min_group: int = 20, groups: Sequence[str] | None = None, seed: int = 0,
                 stratum: str = STRATUM) -> pd.DataFrame:
    """The gap between skin-tone groups standardised to a common diagnosis mix, beside the raw gap.

    Direct standardisation: per gap group (the groups :func:`slice_metrics`
    takes its gap over), the mean metric within each diagnosis group (the
    ``stratum``), reweighted to the standard mix - the pooled mix of the gap
    groups' queries.  A diagnosis group without queries in some gap group has
    no mean there, so the standardisation is restricted to the diagnosis groups
    present in *every* gap group (the standard is the pooled mix over those);
    the queries of the other diagnosis groups are left out of the adjusted
    values, and the table says how many.  When every group has the same mix,
    the adjusted values equal the raw ones.

    The interval of each standardised mean is a percentile bootstrap that
    resamples queries within each group x diagnosis cell (the standard stays
    fixed, as in the usual intervals of standardised rates); the interval of the
    adjusted gap is built from the same resamples as :func:`slice_metrics`
    builds the raw one (simultaneous intervals of the pairwise differences:
    conservative, but unbiased where a percentile interval of max - min is
    not).  Its p-value is a stratified permutation test: skin-tone labels
    shuffled within each diagnosis group (H0: within every diagnosis group,
    quality does not depend on skin tone).

    Parameters
    ----------
    per_query, cases, by, metrics, n_boot, ci, min_group, groups, seed
        As in :func:`slice_metrics`.
    stratum : str
        The column to standardise over (default ``diagnosis_group``).

    Returns
    -------
    DataFrame
        Per metric, one row per gap group (``kind`` group) and the difference
        (max - min; ``kind`` difference): ``group, kind, metric, n_queries,
        n_standardised, raw, adjusted, ci_low, ci_high, p_value, tvd, note``.
        ``raw`` is the crude mean over all the group's queries (the value of
        :func:`slice_metrics`), ``adjusted`` the standardised one; ``ci_low``,
        ``ci_high`` and ``p_value`` belong to ``adjusted``; ``n_standardised``
        counts the queries in the common diagnosis groups; ``tvd`` is the
        group's distance from the pooled mix (the largest, for the difference).
        ``attrs``: ``by``, ``stratum``, ``ci``, ``n_boot``, ``min_group``,
        ``gap_groups``, ``standard`` (diagnosis group -> weight),
        ``dropped_strata``, ``n_dropped``, ``n_gap``, ``max_tvd``,
        ``threshold`` (:data:`MIX_THRESHOLD`) and ``method``.

    Examples
    --------
    Quality depends on the diagnosis only (nevi 0.75, melanomas 0.25) and the
    two groups' mixes differ: a raw gap of 0.25, none after standardisation.

    >>> dx = ["NEV"] * 12 + ["MEL"] * 4 + ["NEV"] * 4 + ["MEL"] * 12
    >>> hit = [1, 1, 1, 0] * 3 + [1, 0, 0, 0] + [1, 1, 1, 0] + [1, 0, 0, 0] * 3
    >>> pq = pd.DataFrame({"case_id": [f"q{i}" for i in range(32)], "n_relevant": 1,
    ...                    "fitzpatrick": [1] * 16 + [6] * 16, "diagnosis_group": dx, "recall@1": hit})
    >>> t = adjusted_gap(pq, metrics=["recall@1"], n_boot=200, min_group=10).set_index("group")
    >>> t.loc[["I", "VI", "difference (max - min)"], ["raw", "adjusted"]].round(3).to_numpy().tolist()
    [[0.625, 0.5], [0.375, 0.5], [0.25, 0.0]]
    """
    per_query = check_per_query(per_query)
    metrics = check_metrics(per_query, metrics)
    check_boot(n_boot, ci)
    sel = _select(per_query, cases, by, metrics, min_group, groups, stratum)
    gap = sel.gap_idx
    n_m = len(metrics)
    in_gap = np.isin(sel.codes, gap)
    g_codes = np.searchsorted(gap, sel.codes[in_gap]) if gap else np.zeros(0, dtype=np.int64)
    values = sel.values[in_gap]
    names = _strata_order(sel.strata[in_gap])
    s_codes = np.array([names.index(s) for s in sel.strata[in_gap]], dtype=np.int64)
    n_groups = len(gap)
    counts = _crosstab(g_codes, s_codes, n_groups, len(names)) if gap else np.zeros((0, len(names)), dtype=int)
    common = np.asarray((counts > 0).all(axis=0) if gap else np.zeros(len(names)), dtype=bool)
    pooled = counts.sum(axis=0)
    weights = np.where(common, pooled, 0).astype(float)
    weights = weights / weights.sum() if weights.sum() > 0 else weights
    tvd = mix_distances(counts, pooled) if gap else np.zeros(0)
    raw = means_by_group(values, g_codes, n_groups) if gap else np.zeros((0, n_m))
    adjusted = standardised_means(values, g_codes, s_codes, weights, n_groups) if common.any() else \
        np.full((n_groups, n_m), np.nan)
    raw_gap = group_gap(raw, axis=0)[0] if n_groups >= 2 else np.full(n_m, np.nan)
    adj_gap = group_gap(adjusted, axis=0)[0] if n_groups >= 2 else np.full(n_m, np.nan)
    g_low = g_high = np.full((n_groups, n_m), np.nan)
    d_low = d_high = p = np.full(n_m, np.nan)
    if n_boot and n_groups >= 2 and common.any():
        rng = np.random.default_rng(seed)
        boot = standardised_bootstrap_means(values, g_codes, s_codes, weights, n_groups, n_boot, rng)
        alpha = (1.0 - ci) / 2.0
        g_low, g_high = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
        d_low, d_high, _, _ = gap_intervals(boot, adjusted, ci)
        p = stratified_permutation_gap_p(values, g_codes, s_codes, weights, n_groups, adj_gap, n_boot, rng)
    n_std = counts[:, common].sum(axis=1) if gap else np.zeros(0, dtype=int)
    dropped = [s for s, c in zip(names, common) if not c]
    n_dropped = int(pooled[~common].sum())
    notes = [sel.gap_note] if sel.gap_note else []
    if n_groups >= 2 and not common.any():
        notes.append(f"no {stratum} has queries in every gap group: nothing to standardise")
    elif dropped:
        notes.append(f"{n_dropped} of {int(pooled.sum())} queries left out ({stratum} {', '.join(dropped)}: not "
                     "in every gap group)")
    rows = []
    for j, m in enumerate(metrics):
        for k, i in enumerate(gap):
            rows.append({"group": sel.levels[i], "kind": "group", "metric": m, "n_queries": int(sel.counts[i]),
                         "n_standardised": int(n_std[k]), "raw": float(raw[k, j]), "adjusted": float(adjusted[k, j]),
                         "ci_low": float(g_low[k, j]), "ci_high": float(g_high[k, j]), "p_value": np.nan,
                         "tvd": float(tvd[k]), "note": ""})
        extremes = []
        if n_groups >= 2 and np.isfinite(adjusted[:, j]).all():
            extremes = ["equal after adjustment" if adj_gap[j] == 0 else
                        f"max {sel.levels[gap[int(np.argmax(adjusted[:, j]))]]}, "
                        f"min {sel.levels[gap[int(np.argmin(adjusted[:, j]))]]}"]
        rows.append({"group": _DIFF, "kind": "difference", "metric": m, "n_queries": int(pooled.sum()),
                     "n_standardised": int(n_std.sum()), "raw": float(raw_gap[j]), "adjusted": float(adj_gap[j]),
                     "ci_low": float(d_low[j]), "ci_high": float(d_high[j]), "p_value": float(p[j]),
                     "tvd": float(tvd.max()) if len(tvd) else np.nan, "note": "; ".join(extremes + notes)})
    table = pd.DataFrame(rows, columns=["group", "kind", "metric", "n_queries", "n_standardised", "raw", "adjusted",
                                        "ci_low", "ci_high", "p_value", "tvd", "note"])
    table.attrs.update({"by": by, "stratum": stratum, "ci": float(ci), "n_boot": int(n_boot),
                        "min_group": int(min_group), "gap_groups": [sel.levels[i] for i in gap],
                        "standard": {s: float(w) for s, w in zip(names, weights) if w > 0},
                        "dropped_strata": dropped, "n_dropped": n_dropped, "n_gap": int(pooled.sum()),
                        "max_tvd": float(tvd.max()) if len(tvd) else float("nan"), "threshold": MIX_THRESHOLD,
                        "method": "direct standardisation to the pooled mix of the gap groups"})
    return table
