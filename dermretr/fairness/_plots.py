"""Figures of the fairness tables (matplotlib Figures): slices, exposure, estimated tone, comparison.

Bars and whiskers in skin-like colours from very light to dark (through the
middles of the ITA categories); ``"unknown"`` is grey.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .._errors import DermretrError
from ..color import lab_to_rgb
from ._groups import GROUPING_TITLES, UNKNOWN

__all__ = ["plot_slices", "plot_exposure", "plot_ita_confusion", "plot_comparison", "plot_gap_uncertainty",
           "grouping_title"]


#: ITA (degrees) at the middle of each ITA category, very light to dark (the colours of the figures).
_TONE_ANGLES = (63.0, 48.0, 34.5, 19.0, -10.0, -45.0)


def _tone_colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` skin-like colours from very light to dark, through the ITA categories' middles."""
    angles = np.interp(np.linspace(0, len(_TONE_ANGLES) - 1, max(n, 1)), np.arange(len(_TONE_ANGLES)), _TONE_ANGLES)
    b = 17.0
    return [tuple(lab_to_rgb(np.array([50 + b * math.tan(math.radians(a)), 10.0, b])).tolist()) for a in angles[:n]]


def grouping_title(by: Any) -> str:
    """What the grouping ``by`` is called in figures (``"skin-tone group"`` when it is not one)."""
    return GROUPING_TITLES.get(by, "skin-tone group") if isinstance(by, str) else "skin-tone group"


def plot_slices(table: pd.DataFrame, metrics: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Bars of each group's metric with CI whiskers, the overall value as a line and the gap annotated.

    Groups with fewer than ``min_group`` queries are hatched, ``unknown`` is
    grey; each bar is labelled with its number of queries.

    >>> from dermretr.fairness import slice_metrics
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
        ax.set_xlabel(grouping_title(by))
        ax.legend(loc="best", fontsize=8, frameon=False)
    fig.suptitle(title or f"Retrieval quality by {grouping_title(by).lower()} ({100 * ci:.0f}% bootstrap CI; "
                          f"hatched: < {table.attrs.get('min_group', 20)} queries)", fontsize=10)
    return fig


def plot_exposure(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Stacked bars: skin-tone mix of the retrieved top-k per query group, and the gallery's mix.

    >>> from dermretr.fairness import exposure
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
        "mean_tone", "drift", "drift_low", "drift_high", "drift_scenario_low", "drift_scenario_high", "same_tone",
        "same_tone_expected")]
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
            if np.isfinite(r.get("drift_scenario_low", np.nan)):
                txt += f"\nscenarios {r['drift_scenario_low']:+.2f} .. {r['drift_scenario_high']:+.2f}"
        ax.text(1.02, yi, txt, va="center", fontsize=8)
    labels = [f"{g} (queries, n={n})" if g not in ("gallery", "all queries") else
              (f"gallery (n={r})" if g == "gallery" else f"all queries (n={n})")
              for g, n, r in zip(table["group"], table["n_queries"], table["n_retrieved"])]
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 1.45)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel(f"share of retrieved top-{table.attrs.get('k', 'k')} cases (gallery: share of cases)")
    ax.legend(title=grouping_title(by), bbox_to_anchor=(1.0, 1.0), loc="upper left", fontsize=8, title_fontsize=8)
    ax.set_title(title or "Exposure: skin tones retrieved vs the gallery (drift < 0: towards lighter skin)",
                 fontsize=10)
    return fig


def _confusion_map(ax: Any, confusion: pd.DataFrame) -> Any:
    """Row-normalised heat map of a confusion table with its counts written in; the image, for a colour bar."""
    counts = confusion.to_numpy(dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rows > 0, counts / np.where(rows > 0, rows, 1), 0.0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in confusion.columns])
    ax.set_yticks(range(counts.shape[0]), [str(c) for c in confusion.index])
    ax.set_xlabel(str(confusion.columns.name or "estimated"))
    ax.set_ylabel(str(confusion.index.name or "labelled"))
    return im


def plot_ita_confusion(confusion: pd.DataFrame, title: str | None = None) -> Figure:
    """Heat map of :func:`ita_confusion` (row-normalised colours, counts written), accuracy in the title.

    >>> from dermretr.fairness import ita_confusion
    >>> m = ita_confusion(pd.DataFrame({"fitzpatrick": [1, 2, 6], "fitzpatrick_estimated": [1, 3, 6]}))
    >>> len(plot_ita_confusion(m).axes)
    2
    """
    if not isinstance(confusion, pd.DataFrame) or confusion.empty:
        raise DermretrError("plot_ita_confusion needs the table of ita_confusion")
    counts = confusion.to_numpy(dtype=float)
    fig = Figure(figsize=(1.0 + 0.7 * counts.shape[1] + 1.6, 1.2 + 0.6 * counts.shape[0]), layout="constrained")
    ax = fig.subplots()
    im = _confusion_map(ax, confusion)
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

    >>> from dermretr.fairness import compare_runs
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
        sub = f"{m} by {grouping_title(by).lower()}"
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


def plot_gap_uncertainty(uncertainty: pd.DataFrame, labelled: pd.DataFrame | None = None,
                         confusion: pd.DataFrame | None = None, metrics: Sequence[str] | None = None,
                         title: str | None = None) -> Figure:
    """How sure a gap by estimated skin tone is: its intervals side by side, beside the confusion with labels.

    Per metric, the gap (max - min) of :func:`gap_uncertainty` as intervals:
    the labelled gap with its interval (``labelled``: :func:`slice_metrics`
    by a labelled grouping, where labels exist), the estimated gap with its
    queries-only interval, the same with the estimate's uncertainty
    propagated, and the sensitivity scenarios (each a tick; the bar spans
    them).  With ``confusion`` (:func:`ita_confusion`) a heat map on the left
    shows where estimated and labelled tone disagree.

    >>> from dermretr.fairness import gap_uncertainty
    >>> pq = pd.DataFrame({"case_id": list("abcdefgh"), "n_relevant": 1,
    ...                    "ita_estimated": [60.0, 60, 60, 60, -40, -40, -40, np.nan],
    ...                    "recall@1": [1.0, 1, 1, 0, 0, 0, 1, 1]})
    >>> len(plot_gap_uncertainty(gap_uncertainty(pq, metrics=["recall@1"], n_draws=50, min_group=2)).axes)
    1
    """
    need = {"metric", "kind", "scenario", "gap", "low", "high"}
    if not isinstance(uncertainty, pd.DataFrame) or not need <= set(uncertainty.columns):
        raise DermretrError("plot_gap_uncertainty needs the table of gap_uncertainty")
    metrics = list(dict.fromkeys(uncertainty["metric"])) if metrics is None else list(metrics)
    a = uncertainty.attrs
    with_confusion = confusion is not None and not confusion.empty
    fig = Figure(figsize=(4.6 * with_confusion + 5.2 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics) + with_confusion, squeeze=False)[0]
    if with_confusion:
        assert confusion is not None
        _confusion_map(axes[0], confusion)
        c = confusion.attrs
        axes[0].set_title(f"Estimated vs labelled (n={c.get('n', '?')}): exact {c.get('exact', np.nan):.0%}, "
                          f"within one {c.get('within_one', np.nan):.0%}", fontsize=9)
    ci = 100 * a.get("ci", 0.95)
    for ax, m in zip(axes[int(with_confusion):], metrics):
        t = uncertainty[uncertainty["metric"] == m]
        if len(t) == 0:
            have = ", ".join(dict.fromkeys(uncertainty["metric"]))
            raise DermretrError(f"no metric {m!r} in the table; it has {have}")
        rows: list[tuple[str, float, float, float, str]] = []
        if labelled is not None:
            d = labelled[(labelled["kind"] == "difference") & (labelled["metric"] == m)]
            if len(d):
                rows.append((f"labelled\n({grouping_title(labelled.attrs.get('by'))})", d["value"].iloc[0],
                             d["ci_low"].iloc[0], d["ci_high"].iloc[0], "black"))
        for kind, label, color in (("estimated", "estimated,\nqueries resampled", "tab:blue"),
                                   ("propagated", "estimated, + the\nestimate's uncertainty", "tab:orange")):
            r = t[t["kind"] == kind]
            if len(r):
                rows.append((label, r["gap"].iloc[0], r["low"].iloc[0], r["high"].iloc[0], color))
        span = t[t["kind"] == "scenario range"]
        if len(span) and np.isfinite(span["low"].iloc[0]):
            rows.append((f"scenarios: unknown or\nconf. < {a.get('low_confidence', 0.5):g} in one group",
                         np.nan, span["low"].iloc[0], span["high"].iloc[0], "0.5"))
        y = np.arange(len(rows))[::-1]
        top = 0.0
        for yi, (label, v, lo, hi, color) in zip(y, rows):
            if np.isfinite(lo):
                ax.hlines(yi, lo, hi, color=color, lw=3 if np.isnan(v) else 1.8, alpha=0.5 if np.isnan(v) else 1.0)
                top = max(top, hi)
            if np.isfinite(v):
                ax.plot([v], [yi], "o", color=color)
                top = max(top, v)
                txt = f"{v:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else "")
            else:
                gaps = t.loc[t["kind"] == "scenario", "gap"].to_numpy(dtype=float)
                ax.plot(gaps, np.full(len(gaps), yi), "|", color="0.2", ms=12)
                txt = f"{lo:.3f} .. {hi:.3f}"
            ax.text(hi if np.isfinite(hi) else v, yi + 0.18, txt, fontsize=8, ha="right", va="bottom", color=color)
        ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
        ax.set_ylim(-0.6, len(rows) - 0.3)
        ax.set_xlim(0, min(1.0, top * 1.1 + 0.05))
        ax.set_xlabel(f"gap of {m} (max - min over groups; {ci:.0f}% intervals)")
        ax.axvline(0, color="0.6", lw=0.8)
        over = f"estimated gap over {', '.join(a.get('gap_groups', [])) or '-'}"
        if labelled is not None and labelled.attrs.get("gap_groups"):
            over = f"labelled gap over {', '.join(labelled.attrs['gap_groups'])}; {over}"
        ax.set_title(over, fontsize=9)
    fig.suptitle(title or f"How sure is the gap by {grouping_title(a.get('by'))}? "
                          f"{a.get('unknown_share', np.nan):.1%} of queries unknown", fontsize=10)
    return fig
