"""The demo's report: one self-contained HTML file, its tables, and its findings in words.

The figures are embedded as PNG data URIs, so ``report.html`` can be mailed or uploaded to a course page
on its own.  The findings are sentences computed from the numbers: the composed model against each
baseline and floor (paired on the same queries; a difference counts only when its 95% CI excludes 0),
and the skin-type mitigation (whether the gap between Fitzpatrick groups narrowed, widened, or did not
change detectably).

Examples
--------
>>> verdict(0.02, 0.10), verdict(-0.10, -0.01), verdict(-0.03, 0.05)
('better', 'worse', 'no detectable difference')
>>> print(gap_direction(0.226, 0.05, 0.40, 0.031), gap_direction(-0.1, -0.2, 0.02, 0.30))
widened unchanged within noise
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ._errors import DermretrError
from ._io import atomic_path
from .models._released import RELEASED, RELEASED_DATA_SEED, RELEASED_FRESH_SEED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .demo import DemoSettings

__all__ = ["NAMES", "ALPHA", "figure_uri", "verdict", "paired_table", "paired_findings", "overall_finding",
           "gap_direction", "adjusted_gap_sentences", "mitigation_sentence", "mitigation_findings", "headline_table",
           "floors_line", "full_table", "search_command", "write_report"]

#: How runs are named in sentences.
NAMES = {"full": "the composed model", "global": "global-only", "clip4cir": "CLIP4Cir", "late_fusion": "late fusion",
         "image": "image-only", "text": "text-only", "floor:random": "the random floor",
         "floor:majority": "the majority floor", "floor:criteria_match": "the criteria-match floor"}
_METRICS = {"recall@1": "Recall@1", "map@10": "mAP@10"}
_TOLERANCE = 1e-9
#: Level of the permutation test that judges a change of the skin-type gap.
ALPHA = 0.05
#: Where the comparison that counts is made (the demo trains each method once on a small set).
BENCHMARKS = ("`python benchmarks/bench_models.py --seeds 0 1 2` (DermSynth, 1,000 cases, a run per training seed) "
              "and `python benchmarks/bench_real.py` (real dermoscopy, cross-validated), in the README's \"The model "
              "and how it does\"")


def _name(run: str) -> str:
    return NAMES.get(run, run.removeprefix("floor:") + (" floor" if run.startswith("floor:") else ""))


def _metric(metric: str) -> str:
    base = metric.removesuffix(" (macro)")
    return _METRICS.get(base, base)


# ----------------------------------------------------------------------------- figures


def figure_uri(figure: Figure | str | os.PathLike, dpi: int = 110) -> str:
    """A ``data:image/png;base64,...`` URI of a matplotlib figure or of a PNG file, for a self-contained page.

    >>> from matplotlib.figure import Figure
    >>> figure_uri(Figure(figsize=(1, 1))).startswith("data:image/png;base64,iVBORw0KGgo")
    True
    """
    if isinstance(figure, (str, os.PathLike)):
        data = Path(figure).read_bytes()
    else:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        data = buffer.getvalue()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise DermretrError(f"{figure} is not a PNG image")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(figure: Figure | str | os.PathLike, width: int, alt: str) -> str:
    return f'<p><img src="{figure_uri(figure)}" width="{width}" alt="{html.escape(alt)}"></p>'


# ----------------------------------------------------------------------------- the composed model against the rest


def verdict(ci_low: float, ci_high: float) -> str:
    """What a 95% CI of ``full - other`` allows: ``better`` above 0, ``worse`` below, else no detectable difference.

    A CI that is not a number (no resampling) allows nothing, and neither does a bound within rounding of 0
    (``1e-9``: a bootstrap bound of ``-0.000`` is an interval that touches 0).

    >>> verdict(-0.2, -1e-17)
    'no detectable difference'
    """
    if ci_low > _TOLERANCE:
        return "better"
    if ci_high < -_TOLERANCE:
        return "worse"
    return "no detectable difference"


def paired_table(per_query: list[pd.DataFrame], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The composed model minus every other method and floor on the same case queries, macro, with verdicts.

    One row per method and metric (Recall@1, mAP@10): the macro difference ``full - method`` with
    its stratified bootstrap CI and sign-flip p-value, and the verdict the CI allows ("full better"
    or "full worse" only when the CI excludes 0, else "no detectable difference"; :func:`verdict`).
    """
    from .evaluate import paired_difference

    tables = {}
    for pq in per_query:
        if len(pq) and pq["protocol"].iloc[0] == "case":
            for run, part in pq.groupby("run", sort=False):
                tables[str(run)] = part.reset_index(drop=True)
    if "full" not in tables:
        return pd.DataFrame()
    rows = []
    for run, pq in tables.items():
        if run == "full":
            continue
        d = paired_difference(tables["full"], pq, metrics=("recall@1", "map@10"), n_boot=n_boot, seed=seed,
                              average="macro")
        for metric in d.index:
            low, high = (float(v) for v in d.loc[metric, ["ci_low", "ci_high"]])
            v = verdict(low, high)
            rows.append({"full minus": run, "metric": f"{metric} (macro)", "difference": d.at[metric, "difference"],
                         "ci_low": low, "ci_high": high, "p_value": d.at[metric, "p_value"],
                         "verdict": v if v.startswith("no ") else f"full {v}"})
    return pd.DataFrame(rows)


def paired_findings(paired: pd.DataFrame) -> list[str]:
    """One sentence per baseline and floor, the verdict of each metric following its CI (:func:`verdict`).

    ``paired``: :func:`paired_table` (columns ``full minus, metric, difference, ci_low, ci_high``).

    >>> t = pd.DataFrame({"full minus": ["image", "image"], "metric": ["recall@1 (macro)", "map@10 (macro)"],
    ...                   "difference": [0.08, 0.01], "ci_low": [0.02, -0.03], "ci_high": [0.14, 0.05]})
    >>> print(paired_findings(t)[0])
    Against image-only, the composed model is better on Recall@1 (+0.080, 95% CI [0.020, 0.140]) and shows no
    detectable difference on mAP@10 (+0.010, 95% CI [-0.030, 0.050]).
    """
    if not len(paired):
        return []
    verbs = {"better": "is better", "worse": "is worse", "no detectable difference": "shows no detectable difference"}
    out = []
    for run, rows in paired.groupby("full minus", sort=False):
        parts, last = [], None
        for metric, diff, low, high in zip(rows["metric"], rows["difference"], rows["ci_low"], rows["ci_high"]):
            v = verdict(float(low), float(high))
            numbers = f"{diff:+.3f}, 95% CI [{low:.3f}, {high:.3f}]"
            parts.append(f"{'' if v == last else verbs[v] + ' '}on {_metric(str(metric))} ({numbers})")
            last = v
        out.append(f"Against {_name(str(run))}, the composed model {' and '.join(parts)}.")
    return out


def overall_finding(paired: pd.DataFrame) -> str:
    """Whether the composed model beat every baseline and floor on every metric, in plain sentences.

    >>> t = pd.DataFrame({"full minus": ["floor:criteria_match"], "metric": ["map@10 (macro)"], "difference": [-0.05],
    ...                   "ci_low": [-0.09], "ci_high": [-0.01]})
    >>> overall_finding(t).split(":")[0]
    'The composed model does not beat every baseline and floor in this run'
    """
    if not len(paired):
        return ""
    kinds: dict[str, dict[str, list[str]]] = {v: {} for v in ("worse", "no detectable difference")}
    for run, metric, low, high in zip(paired["full minus"], paired["metric"], paired["ci_low"], paired["ci_high"]):
        v = verdict(float(low), float(high))
        if v in kinds:
            kinds[v].setdefault(_name(str(run)), []).append(_metric(str(metric)))
    if not any(kinds.values()):
        return ("The composed model is better than every baseline and floor on both metrics in this run. It is still "
                f"one training run per method on a small set: the comparison that counts is {BENCHMARKS}.")
    def listed(runs: dict[str, list[str]]) -> str:
        return ", ".join(f"{run} ({' and '.join(metrics)})" for run, metrics in runs.items())

    parts = []
    if kinds["worse"]:
        parts.append("it is worse than " + listed(kinds["worse"]))
    if kinds["no detectable difference"]:
        parts.append("it is not detectably different from " + listed(kinds["no detectable difference"]))
    return ("The composed model does not beat every baseline and floor in this run: " + "; ".join(parts)
            + f". Do not present it as the better method on this evidence; the comparison that counts is {BENCHMARKS}.")


# ----------------------------------------------------------------------------- the skin-type mitigation


def gap_direction(change: float, ci_low: float, ci_high: float, p_value: float, alpha: float = ALPHA) -> str:
    """``widened``, ``narrowed``, ``unchanged within noise`` or ``not judged`` (no p-value and no CI).

    The permutation p-value is the test of a change of the gap (as :func:`dermretr.fairness.compare_runs`
    says, its bootstrap CI is approximate); without a p-value the CI decides (it must exclude 0).

    >>> gap_direction(-0.12, -0.20, -0.03, 0.01), gap_direction(0.02, -0.05, 0.09, float("nan"))
    ('narrowed', 'unchanged within noise')
    """
    if not math.isfinite(change):
        return "not judged"
    if math.isfinite(p_value):
        shown = p_value < alpha
    elif math.isfinite(ci_low) and math.isfinite(ci_high):
        shown = ci_low > 0 or ci_high < 0
    else:
        return "not judged"
    if not shown or change == 0:
        return "unchanged within noise"
    return "widened" if change > 0 else "narrowed"


def mitigation_sentence(metric: str, before: float, after: float, change: float, ci_low: float, ci_high: float,
                        p_value: float, groups: Mapping[str, float] | None = None,
                        worst: tuple[str, float, float, float] | None = None, alpha: float = ALPHA) -> str:
    """The skin-type mitigation's effect on one metric's gap between Fitzpatrick groups, in words.

    ``before``/``after``: the gap (max - min across groups) of each model; ``change = after - before``
    with its CI and permutation p-value; ``groups``: each group's change (after - before); ``worst``:
    the group worst served before, with its change and CI (``(name, change, ci_low, ci_high)``).

    >>> s = mitigation_sentence("recall@1", 0.090, 0.316, 0.226, 0.05, 0.40, 0.031,
    ...                         {"I-II": 0.216, "III-IV": -0.115, "V-VI": -0.043})
    >>> print(s)
    Skin-type-balanced training widened the Recall@1 gap between Fitzpatrick groups from 0.090 to 0.316
    (change +0.226, 95% CI [0.050, 0.400], p = 0.031; per group I-II +0.216, III-IV -0.115, V-VI -0.043): in this
    run the mitigation made the gap worse, so it must not be presented as a fix.
    """
    m = _metric(metric)
    if not (math.isfinite(before) and math.isfinite(after)):
        return (f"The {m} gap between Fitzpatrick groups could not be computed (fewer than two groups with enough "
                "test queries), so the mitigation cannot be judged on it.")
    direction = gap_direction(change, ci_low, ci_high, p_value, alpha)
    numbers = f"change {change:+.3f}"
    if math.isfinite(ci_low) and math.isfinite(ci_high):
        numbers += f", 95% CI [{ci_low:.3f}, {ci_high:.3f}]"
    if math.isfinite(p_value):
        numbers += f", p = {p_value:.3f}"
    if groups:
        numbers += "; per group " + ", ".join(f"{g} {d:+.3f}" for g, d in groups.items())
    span = f"from {before:.3f} to {after:.3f} ({numbers})"
    if direction == "widened":
        return (f"Skin-type-balanced training widened the {m} gap between Fitzpatrick groups {span}: in this run "
                "the mitigation made the gap worse, so it must not be presented as a fix.")
    if direction == "narrowed":
        text = f"Skin-type-balanced training narrowed the {m} gap between Fitzpatrick groups {span}."
        if worst is not None and not worst[2] > 0:
            text += (f" But the group worst served before ({worst[0]}) did not improve detectably ({worst[1]:+.3f}, "
                     f"95% CI [{worst[2]:.3f}, {worst[3]:.3f}]): the gap closed because better-served groups "
                     "changed, which is not a gain for that group.")
        return text + (" One training run on a small test set: a hypothesis to test with more seeds and data, not "
                       "yet a fix.")
    if direction == "not judged":
        return (f"Skin-type-balanced training changed the {m} gap between Fitzpatrick groups {span}; without "
                "resampling (no CI, no p-value) the change cannot be judged.")
    why = f"p is not below {alpha:g}" if math.isfinite(p_value) else "its 95% CI includes 0"
    return (f"Skin-type-balanced training did not change the {m} gap between Fitzpatrick groups detectably: "
            f"the change {span} is within noise ({why}). It is not shown either way and cannot be "
            "presented as a fix.")


def mitigation_findings(comparison: pd.DataFrame, alpha: float = ALPHA) -> list[str]:
    """:func:`mitigation_sentence` for each metric of a :func:`dermretr.fairness.compare_runs` table."""
    if not len(comparison):
        return []
    gap_groups = list(comparison.attrs.get("gap_groups", []))
    out = []
    for metric in dict.fromkeys(comparison["metric"]):
        rows = comparison[comparison["metric"] == metric]
        gap = rows[rows["kind"] == "gap"]
        if not len(gap):
            continue
        g = gap.iloc[0]
        members = rows[(rows["kind"] == "group") & rows["group"].isin(gap_groups)]
        groups = {str(r.group): float(r.difference) for r in members.itertuples(index=False)}
        worst = None
        if len(members):
            w = members.loc[members["before"].idxmin()]
            worst = (str(w["group"]), float(w["difference"]), float(w["ci_low"]), float(w["ci_high"]))
        out.append(mitigation_sentence(str(metric), float(g["before"]), float(g["after"]), float(g["difference"]),
                                       float(g["ci_low"]), float(g["ci_high"]), float(g["p_value"]), groups, worst,
                                       alpha))
    return out


# ----------------------------------------------------------------------------- tables


def _cell(value: float, low: float | None, high: float | None) -> str:
    """``0.342 [0.27, 0.41]``; the value alone when the interval is missing or of no width (an expectation)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or high - low < 5e-4:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def _named(records: Sequence[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(records))
    frame = frame[frame["k"].notna()].copy()
    frame["name"] = [f"{m}@{int(k)}" for m, k in zip(frame["metric"], frame["k"])]
    frame = frame[frame["name"].isin(list(_METRICS))]
    frame["average"] = frame["average"].fillna("micro") if "average" in frame else "micro"
    return frame


def headline_table(records: Sequence[dict]) -> pd.DataFrame:
    """Recall@1 and mAP@10 with 95% CIs, micro and macro, one row per trained method (floors: :func:`floors_line`).

    >>> recs = [{"run": "full", "method": "full", "protocol": "case", "average": a, "metric": "recall", "k": 1,
    ...          "value": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "n_queries": 40} for a, v in (("micro", 0.5),
    ...                                                                                         ("macro", 0.4))]
    >>> headline_table(recs).to_dict("index")
    {'full': {('case', 'Recall@1'): '0.500 [0.40, 0.60]', ('case', 'Recall@1 (macro)'): '0.400 [0.30, 0.50]'}}
    """
    frame = _named(records)
    frame = frame[~frame["run"].astype(str).str.startswith("floor:")]
    rows: dict[str, dict] = {}
    columns: list[tuple[str, str]] = []
    for r in frame.itertuples(index=False):
        col = (str(r.protocol), _METRICS[r.name] + (" (macro)" if r.average == "macro" else ""))
        if col not in columns:
            columns.append(col)
        rows.setdefault(str(r.run), {})[col] = _cell(r.value, r.ci_low, r.ci_high)
    order = [(p, f"{m}{a}") for p in dict.fromkeys(c[0] for c in columns) for m in _METRICS.values()
             for a in ("", " (macro)") if (p, f"{m}{a}") in columns]
    table = pd.DataFrame.from_dict(rows, orient="index")
    if not len(table):
        return table
    table = table[order]
    table.columns = pd.MultiIndex.from_tuples(order)
    return table.fillna("")


def floors_line(records: Sequence[dict]) -> str:
    """The floors (no model) in one line of HTML: Recall@1 and mAP@10, micro / macro with CIs, per protocol.

    >>> recs = [{"run": "floor:random", "protocol": p, "average": a, "metric": "map", "k": 10, "value": v,
    ...          "ci_low": None, "ci_high": None} for p, a, v in (("case", "micro", 0.135), ("case", "macro", 0.097),
    ...                                                           ("modify", "micro", 0.011))]
    >>> floors_line(recs)  # doctest: +NORMALIZE_WHITESPACE
    '<p><b>Floors</b> (no model; micro / macro): case search: <i>random</i> mAP@10 0.135 / 0.097; modify:
    <i>random</i> mAP@10 0.011.</p>'
    >>> recs[0].update(ci_low=0.121, ci_high=0.139)  # a bootstrap interval is shown with its value
    >>> floors_line(recs[:1])
    '<p><b>Floors</b> (no model; micro / macro): case search: <i>random</i> mAP@10 0.135 [0.12, 0.14].</p>'
    """
    frame = _named(records)
    frame = frame[frame["run"].astype(str).str.startswith("floor:")]
    if not len(frame):
        return ""
    sections = []
    for protocol, of_protocol in frame.groupby("protocol", sort=False):
        parts = []
        for run, rows in of_protocol.groupby("run", sort=False):
            cells = []
            for name in _METRICS:
                got = {a: _cell(v, lo, hi) for a, v, lo, hi, n in zip(rows["average"], rows["value"],
                                                                      rows["ci_low"], rows["ci_high"], rows["name"])
                       if n == name}
                if got:
                    cells.append(f"{_METRICS[name]} " + " / ".join(got[a] for a in ("micro", "macro") if a in got))
            parts.append(f"<i>{html.escape(str(run).removeprefix('floor:'))}</i> " + ", ".join(cells))
        name = "case search" if protocol == "case" else html.escape(str(protocol))
        sections.append(f"{name}: " + " &middot; ".join(parts))
    return "<p><b>Floors</b> (no model; micro / macro): " + "; ".join(sections) + ".</p>"


def full_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`dermretr.evaluate.results_table` without its ``method`` level.

    A method's run has the method's name; floors read ``NAME (floor)``.
    """
    if "method" not in (table.index.names or []):
        return table
    out = table.droplevel("method")
    return out.rename(index=lambda r: f"{r.removeprefix('floor:')} (floor)" if str(r).startswith("floor:") else r,
                      level="run")


def search_command(index: str | os.PathLike, image: str | os.PathLike, text: str) -> str:
    """A ready-made ``dermretr search`` command line (quoted for a POSIX shell).

    >>> search_command("demo/index", "demo/dermsynth/images/a b.png", "blue-whitish veil")
    "dermretr search --index demo/index --image 'demo/dermsynth/images/a b.png' --text 'blue-whitish veil'"
    """
    return " ".join(["dermretr", "search", "--index", shlex.quote(str(index)), "--image", shlex.quote(str(image)),
                     "--text", shlex.quote(text)])


# ----------------------------------------------------------------------------- the page


def _benchmark_html(s: DemoSettings) -> str:
    """How far to trust the table: the demo's size, and the released model's measured numbers at the benchmark's."""
    from .models.hub import pretrained_metrics

    card = f"case (dermsynth-seed{RELEASED_FRESH_SEED})"
    try:
        records = [r for r in pretrained_metrics(RELEASED) if r.get("protocol") == card and
                   (r["metric"], r["k"]) in (("recall", 1), ("map", 10))]
    except DermretrError:
        records = []
    if s.released:
        same = (s.n_cases, s.seed, s.image_size) == (1000, RELEASED_FRESH_SEED, 128)
        head = (f"<p>This is the released model <code>{RELEASED}</code>, trained on 1,000 DermSynth cases for 15 "
                f"epochs (the benchmark's size, data seed {RELEASED_DATA_SEED}; "
                f"<code>scripts/release_dermsynth_tiny.py</code>), evaluated on {s.n_cases} DermSynth cases of data "
                f"seed {s.seed}, which holds none of its training patients"
                + (": its model card reports these same queries. " if same else
                   f" (its model card reports 1,000 cases of seed {RELEASED_FRESH_SEED}). ")
                + "Nothing was trained, so the other methods and the skin-type mitigation are not shown; "
                "<code>dermretr demo</code> trains them.</p>")
    else:
        head = (f"<p><b>How far to trust this table.</b> Each method was trained once, on {s.n_cases} cases for "
                f"{s.epochs} epochs (minutes of CPU): only the paired differences below can show one method better "
                "than another (intervals that overlap show nothing either way), and close methods change places "
                "from one training seed to the next. It is a demonstration, not a benchmark: "
                "<code>python benchmarks/bench_models.py --seeds 0 1 2</code> trains every method once per seed on "
                "1,000 cases and compares them with paired differences (README, <i>The model and how it does</i>, "
                "shows three seeds).</p>")
    if not records or s.released:  # the released demo's own table above holds these very numbers
        return head
    frame = pd.DataFrame(records)
    frame["column"] = [f"{m}@{k} ({a})" for m, k, a in zip(frame["metric"], frame["k"], frame["average"])]
    frame["cell"] = [_cell(v, lo, hi) for v, lo, hi in zip(frame["value"], frame["ci_low"], frame["ci_high"])]
    table = frame.pivot(index="run", columns="column", values="cell").rename(index={"full": "full (released model)"})
    table.index.name = table.columns.name = None
    return head + ("<p>The released composed model at the benchmark's size, from its model card (case protocol, a "
                   "fresh DermSynth test split, 95% bootstrap CIs; <i>floor</i> rows need no model).</p>"
                   + table.to_html(border=0))


def adjusted_gap_sentences(adjusted: pd.DataFrame, model: str = "The composed model",
                           alpha: float = ALPHA) -> list[str]:
    """One sentence per metric: the raw gap between skin-tone groups and the gap at a common diagnosis mix.

    ``adjusted``: a :func:`dermretr.fairness.adjusted_gap` table.  A raw gap
    can come from the groups' different diagnosis mixes rather than from
    skin tone; the standardised gap (each group reweighted to the pooled mix)
    removes that part.  A gap remains when its interval excludes 0 and the
    permutation test (skin types shuffled within diagnosis groups) rejects at
    ``alpha``; when only one of them does, the sentence says they disagree.

    >>> t = pd.DataFrame({"kind": ["group", "difference"], "metric": "recall@1", "raw": [0.5, 0.25],
    ...     "adjusted": [0.5, 0.06], "ci_low": [math.nan, 0.0], "ci_high": [math.nan, 0.2],
    ...     "p_value": [math.nan, 0.4], "tvd": [0.1, 0.3], "note": ["", "max II, min I"]})
    >>> print(adjusted_gap_sentences(t)[0])  # doctest: +NORMALIZE_WHITESPACE
    The composed model, Recall@1: gap between skin-type groups 0.250 as measured, 0.060 [0.000, 0.200] at a
    common diagnosis mix (p = 0.40; max II, min I): no gap shown at a common mix (the furthest group's
    diagnosis mix is 0.30 from the pooled mix, in total variation).
    """
    out = []
    for row in adjusted[adjusted["kind"] == "difference"].itertuples():
        m = _metric(str(row.metric))
        note = str(row.note or "")
        if not math.isfinite(row.adjusted):
            out.append(f"{model}, {m}: the gap could not be standardised to a common diagnosis mix "
                       f"({note or 'too few queries'}).")
            continue
        tested = math.isfinite(row.p_value)
        ci = "" if not math.isfinite(row.ci_low) else f" [{row.ci_low:.3f}, {row.ci_high:.3f}]"
        details = "; ".join(([f"p = {row.p_value:.2f}"] if tested else []) + ([note] if note else []))
        if not ci:
            verdict = "no interval (no resampling)"
        elif row.ci_low > 0 and (not tested or row.p_value < alpha):
            verdict = "a gap remains at a common mix"
        elif row.ci_low > 0 or (tested and row.p_value < alpha):
            verdict = "the interval and the permutation test disagree: not clearly a skin-tone gap"
        else:
            verdict = "no gap shown at a common mix"
        out.append(f"{model}, {m}: gap between skin-type groups {row.raw:.3f} as measured, {row.adjusted:.3f}{ci} "
                   f"at a common diagnosis mix{f' ({details})' if details else ''}: {verdict} (the furthest "
                   f"group's diagnosis mix is {row.tvd:.2f} from the pooled mix, in total variation).")
    return out


def _fold(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>{body}</details>"


def _sentences(items: Sequence[str]) -> str:
    return "".join(f"<li>{html.escape(t)}</li>" for t in items)


def _adjusted_html(fairness: Mapping[str, pd.DataFrame]) -> str:
    """The gaps at a common diagnosis mix beside the raw ones (before, and after the mitigation when run)."""
    if "adjusted" not in fairness:
        return ""
    models = {"adjusted": "composed model", "adjusted_after": "with skin-type-balanced training"}
    items = adjusted_gap_sentences(fairness["adjusted"])
    unpaired = ""
    if "adjusted_after" in fairness:
        items += adjusted_gap_sentences(fairness["adjusted_after"], "With skin-type-balanced training")
        unpaired = ("<p>The two models' adjusted gaps are each model's own, not a comparison: whether the "
                    "mitigation changed a gap is the paired test above.</p>")
    table = pd.concat([fairness[k].assign(model=name) for k, name in models.items() if k in fairness])
    return ("<p>The gap (best minus worst group) can come from the groups' different diagnosis mixes rather than "
            "from skin tone. Standardised to one common mix (the pooled mix of the groups; 95% bootstrap CI within "
            "group and diagnosis, p from skin-type labels permuted within each diagnosis group):</p><ul>"
            + _sentences(items) + "</ul>" + unpaired
            + _fold("The case-mix-adjusted gap (table)", table.to_html(border=0, index=False, na_rep="",
                                                                        float_format=lambda v: f"{v:.3f}")))


def write_report(path: Path, s: DemoSettings, records: Sequence[dict], table: pd.DataFrame,
                 figures: Mapping[str, Path], example_text: str, example_case: str, seconds: Mapping[str, float],
                 summary: Mapping[str, pd.DataFrame], fairness: Mapping[str, pd.DataFrame], paired: pd.DataFrame,
                 command: str) -> Path:
    """Write the demo's ``report.html``: self-contained (figures embedded), headline first, details folded."""
    settings = ", ".join(f"{k}={v}" for k, v in asdict(s).items() if k not in ("extra", "workers") and
                         not (s.released and k in ("epochs", "batch_size", "fast")))
    times = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    paired_html = ""
    if len(paired):
        paired_html = (
            "<h3>What the numbers say</h3><p>The composed model against each method and floor, paired on the same "
            "case queries (macro averages): a difference counts only when its 95% CI excludes 0.</p><ul>"
            + _sentences(paired_findings(paired)) + f"</ul><p><b>{html.escape(overall_finding(paired))}</b></p>"
            + _fold("The paired differences (table)", "<p>The p-value (a sign-flip permutation test) answers a "
                    "slightly different question and can disagree with the interval near the boundary; the verdict "
                    "follows the interval.</p>" + paired.to_html(border=0, index=False,
                                                                      float_format=lambda v: f"{v:.3f}")))
    mitigation = ""
    if "comparison" in fairness:
        mitigation = ("<p>Then the same model trained with sampling balanced over diagnosis group and skin type, "
                      "compared on the same queries (paired bootstrap CIs, permutation p-values):</p><ul>"
                      + _sentences(mitigation_findings(fairness["comparison"])) + "</ul>"
                      + _img(figures["mitigation"], 900, "mitigation: before and after by skin type")
                      + _fold("Before and after, per group (table)", _comparison_html(fairness["comparison"])))
    sections = [
        f"<h1>dermretr demo</h1><p>Composed image + text retrieval of skin-lesion cases on DermSynth "
        f"(procedural data with known ground truth).</p><p><small>Settings: {html.escape(settings)}. "
        f"Time: {html.escape(times)}.</small></p>",
        "<h2>Results (test split, 95% bootstrap CIs)</h2><p><b>case</b>: a test image with its findings text "
        "(never its diagnosis); relevant = gallery cases of the same diagnosis group (own case and same patient "
        "excluded). <b>modify</b>: reference image + modification text; relevant = the exact target. "
        "<b>(macro)</b>: the mean over diagnosis groups (so a ranking that favours the most common group cannot "
        "look good); the plain columns average over queries.</p>"
        + headline_table(records).to_html(border=0) + floors_line(records)
        + "<p><small>Floors need no model: <i>random</i> is the expected value of a random ranking, <i>majority</i> "
        "ranks the most common diagnosis group first, <i>criteria_match</i> ranks by agreement of the annotated "
        "7-point findings. A model is only useful where it beats them.</small></p>"
        + paired_html + _img(figures["results"], 900, "results with 95% CIs")
        + _fold("Every metric, every method and floor (full table)", full_table(table).to_html(border=0))
        + _benchmark_html(s),
        "<h2>Skin tone</h2><p>The composed model's case search by Fitzpatrick pairs (DermSynth renders lower lesion "
        "contrast on darker skin), with 95% CIs; groups with few queries are flagged.</p>"
        + fairness["slices"].to_html(border=0) + _img(figures["slices"], 800, "composed model by skin type")
        + _adjusted_html(fairness)
        + (mitigation or "<p>The mitigation (skin-type-balanced training) needs training: <code>dermretr demo</code> "
           "runs it.</p>"),
        f"<h2>An example composed query</h2><p>Reference case {html.escape(example_case)} + "
        f"&ldquo;{html.escape(example_text)}&rdquo;</p>" + _img(figures["example"], 1000, "example query and results"),
        "<h2>Training</h2>" + (_img(figures["curves"], 900, "training curves") if "curves" in figures else
                               "<p>Not trained here: the released model was loaded as it ships.</p>"),
        "<h2>Data</h2>" + _img(figures["contact_sheet"], 900, "DermSynth contact sheet")
        + "<h3>Cases per diagnosis</h3>" + summary["diagnosis"].to_html(border=0)
        + "<h3>Cases per Fitzpatrick skin type</h3>" + summary["fitzpatrick"].to_html(border=0),
        "<h2>Next steps</h2><p>The example query again, on the demo's index (change <code>--text</code>):</p>"
        f"<pre>{html.escape(command)}</pre><p>The course notebooks (<code>jupyter lab notebooks/</code> in a clone "
        "of the repository) go through each step; the README's <i>The model and how it does</i> has the benchmark "
        "numbers.</p>",
    ]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>dermretr demo</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;"
            "font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
            "details{margin:1em 0}summary{cursor:pointer;color:#245}pre{white-space:pre-wrap;background:#f4f4f4;"
            "padding:.5em}</style></head><body>" + "\n".join(sections) + "</body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _comparison_html(comparison: pd.DataFrame) -> str:
    cols = [c for c in ("group", "kind", "metric", "n_queries", "before", "after", "difference", "ci_low", "ci_high",
                        "p_value", "p_holm") if c in comparison.columns]
    return comparison[cols].to_html(border=0, index=False, float_format=lambda v: f"{v:.3f}")
