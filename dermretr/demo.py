"""The whole story in one call: ``dermretr demo``.

From nothing: generate DermSynth, train the composed model and its baselines,
evaluate both protocols (case search and modification queries) with bootstrap
CIs, build a FAISS index with the composed model, run an example composed
query, and write ``OUT/report.html`` with the results table and figures
(contact sheet, training curves, results with CIs, the example query and its
retrieved gallery, and the composed model by skin type before and after
skin-type-balanced training).  ``OUT/metrics.json`` holds the same records as
``dermretr evaluate``.

A second call with the same settings reuses the dataset and the finished runs.
``released=True`` (``dermretr demo --released``) trains nothing: it evaluates the
released model ``dermretr/dermsynth-tiny`` on a DermSynth set it never saw,
with the same report, in about a minute on 2 cores.

Examples
--------
>>> s = demo_settings(fast=True)
>>> s.n_cases, s.image_size, s.epochs, len(s.kinds)
(160, 64, 3, 6)
>>> r = demo_settings(released=True)
>>> r.n_cases, r.image_size, r.seed, r.kinds, r.released
(1000, 128, 1001, ('full',), True)
"""

from __future__ import annotations

import html
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._errors import DermretrError
from ._io import atomic_path, claim_dir, owner_kind, save_figure
from .models._released import RELEASED, RELEASED_DATA_SEED, RELEASED_FRESH_SEED
from .models.retriever import KINDS

__all__ = ["DemoSettings", "DemoResult", "demo_settings", "run_demo", "results_figure", "curves_figure",
           "paired_table"]

#: Order in which methods appear in the report (the composed model first).
METHOD_ORDER = ("full", "global", "clip4cir", "late_fusion", "image", "text")


@dataclass
class DemoSettings:
    """Sizes of the demo (see :func:`demo_settings`)."""

    n_cases: int = 500
    image_size: int = 96
    epochs: int = 12
    batch_size: int = 48
    kinds: tuple[str, ...] = METHOD_ORDER
    n_boot: int = 1000
    seed: int = 0
    workers: int | None = None
    fast: bool = False
    released: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    out: Path
    report: Path
    metrics: Path
    table: pd.DataFrame
    records: list[dict]
    example: pd.DataFrame
    seconds: dict[str, float]
    fairness: dict[str, pd.DataFrame] = field(default_factory=dict)
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)


def demo_settings(fast: bool = False, released: bool = False, **overrides) -> DemoSettings:
    """Default settings: about 12 minutes on 2 CPU cores (measured: 715 s), under 2 with ``fast=True``.

    ``released=True``: the released model's demo (no training): 1,000 DermSynth cases at its
    128 px on the fresh data seed of its model card (``RELEASED_FRESH_SEED``), the composed model
    only; its training data seed (``RELEASED_DATA_SEED``) is refused.

    >>> demo_settings(n_cases=300).n_cases
    300
    """
    if fast and released:
        raise DermretrError("choose --fast or --released, not both (--released trains nothing and is quick already)")
    if released:
        base = DemoSettings(n_cases=1000, image_size=128, epochs=0, kinds=("full",), seed=RELEASED_FRESH_SEED,
                            released=True)
        fixed = sorted(k for k in ("image_size", "epochs", "kinds") if overrides.get(k) is not None)
        if fixed:
            raise DermretrError(f"--released evaluates the released model as it is: {', '.join(fixed)} cannot be "
                                "set (it was trained at 128 px)")
        if overrides.get("seed") == RELEASED_DATA_SEED:
            raise DermretrError(f"--seed {RELEASED_DATA_SEED} would regenerate the released model's own training "
                                "data; choose another seed (default: the fresh one its model card reports)")
    else:
        base = DemoSettings(n_cases=160, image_size=64, epochs=3, batch_size=32, n_boot=200, fast=True) if fast \
            else DemoSettings()
    unknown = sorted(set(overrides) - set(asdict(base)))
    if unknown:
        raise DermretrError(f"unknown demo setting(s) {unknown}")
    settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    bad = [k for k in settings.kinds if k not in KINDS]
    if bad or "full" not in settings.kinds:
        raise DermretrError(f"demo kinds must include 'full' and come from {', '.join(KINDS)}; got {settings.kinds}")
    if settings.n_cases < 60:
        raise DermretrError("the demo needs at least 60 cases to have train, val and test splits; "
                            f"got {settings.n_cases}")
    return settings


# ----------------------------------------------------------------------------- figures


def curves_figure(histories: dict[str, list[dict]], metric: str = "map@10") -> Figure:
    """Training loss and validation ``metric`` per epoch, one line per method.

    >>> fig = curves_figure({"full": [{"epoch": 1, "loss": 2.0, "map@10": 0.2},
    ...                               {"epoch": 2, "loss": 1.5, "map@10": 0.3}]})
    >>> [ax.get_title() for ax in fig.axes]
    ['Training loss', 'Validation map@10 (case search)']
    """
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for kind, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        ax1.plot(epochs, [h["loss"] for h in hist], marker="o", ms=3, label=kind)
        if hist and metric in hist[0]:
            ax2.plot(epochs, [h[metric] for h in hist], marker="o", ms=3, label=kind)
    ax1.set(xlabel="epoch", ylabel="loss", title="Training loss")
    ax2.set(xlabel="epoch", ylabel=metric, title=f"Validation {metric} (case search)")
    ax2.legend(fontsize=8)
    return fig


def results_figure(records: list[dict], metrics: tuple[str, ...] = ("recall@1", "map@10")) -> Figure:
    """Bars with 95% CI whiskers: each method's ``metrics`` for each protocol in ``records``.

    >>> recs = [{"run": "full", "method": "full", "protocol": "case", "metric": "map", "k": 10, "value": 0.4,
    ...          "ci_low": 0.35, "ci_high": 0.45, "n_queries": 50}]
    >>> len(results_figure(recs, metrics=("map@10",)).axes)
    1
    """
    frame = pd.DataFrame(records)
    if "average" in frame.columns:  # micro bars only (records also carry macro averages)
        frame = frame[frame["average"].fillna("micro") == "micro"].copy()
    frame["name"] = [f"{m}@{int(k)}" if pd.notna(k) else m for m, k in zip(frame["metric"], frame["k"])]
    frame = frame[frame["name"].isin(metrics)]
    panels = [(p, m) for p in dict.fromkeys(frame["protocol"]) for m in metrics
              if ((frame["protocol"] == p) & (frame["name"] == m)).any()]
    if not panels:
        raise DermretrError(f"no records for metrics {metrics}")
    fig = Figure(figsize=(3.3 * len(panels), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (protocol, metric) in zip(axes, panels):
        sub = frame[(frame["protocol"] == protocol) & (frame["name"] == metric)]
        order = sorted(sub["run"], key=lambda r: (str(r).startswith("floor:"),
                                                  METHOD_ORDER.index(r) if r in METHOD_ORDER else 99, r))
        sub = sub.set_index("run").loc[order]
        x = np.arange(len(sub))
        lower = (sub["value"] - sub["ci_low"]).clip(lower=0).fillna(0)
        upper = (sub["ci_high"] - sub["value"]).clip(lower=0).fillna(0)
        floor = [str(r).startswith("floor:") for r in sub.index]
        colours = ["white" if f else "tab:red" if r == "full" else "tab:gray" for r, f in zip(sub.index, floor)]
        bars = ax.bar(x, sub["value"], yerr=[lower, upper], color=colours, edgecolor="black", linewidth=0.5,
                      capsize=3)
        for bar, f in zip(bars, floor):
            if f:  # floors (no model) are hatched
                bar.set_hatch("//")
        labels = [f"{str(r).removeprefix('floor:')} (floor)" if f else r for r, f in zip(sub.index, floor)]
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set(title=f"{protocol}: {metric}", ylim=(0, 1))
    return fig


# ----------------------------------------------------------------------------- steps


def _dataset(out: Path, s: DemoSettings, progress: bool, log: Callable[[str], None]) -> Path:
    from .data.synth import generate
    from .data.synth.dataset import is_dermsynth

    data = out / "dermsynth"
    wanted = {"n_cases": s.n_cases, "seed": s.seed, "image_size": s.image_size}
    if is_dermsynth(data):
        params = json.loads((data / "meta" / "dermsynth.json").read_text())
        if all(params.get(k) == v for k, v in wanted.items()):
            log(f"Reusing the DermSynth dataset in {data}")
            return data
    log(f"Generating {s.n_cases} DermSynth cases ({s.image_size} px) in {data} ...")
    # replaces only a DermSynth dataset; any other non-empty folder is refused with its content named
    generate(data, n_cases=s.n_cases, seed=s.seed, image_size=s.image_size, workers=s.workers, overwrite=True,
             progress=progress)
    return data


_DEMO_ENTRIES = {"dermsynth", "runs", "index", "metrics.json", "per_query.csv", "report.html"}


def _legacy_demo(path: Path) -> bool:
    """A demo folder written before folders were marked: only the demo's own entries."""
    names = [p.name for p in path.iterdir() if not p.name.startswith(".")]
    return bool(names) and all(n in _DEMO_ENTRIES or n.endswith(".png") for n in names) and (
        (path / "dermsynth" / "meta" / "dermsynth.json").is_file() or (path / "runs").is_dir())


_RUN_ENTRIES = {"config.json", "metrics.jsonl", "checkpoints", "training_curve.png", ".dermretr.json"}


def _replaceable_run(run: Path) -> bool:
    """A run folder that dermretr wrote and that holds nothing else (so removing it loses nothing of the user's)."""
    from .train import is_run_folder

    names = {p.name for p in run.iterdir()}
    return (owner_kind(run) == "run" or is_run_folder(run)) and names <= _RUN_ENTRIES


def _train(kind: str, data: Path, run: Path, s: DemoSettings, progress: bool) -> list[dict]:
    from .train import TrainConfig, fit

    config = TrainConfig(data=f"synthetic:{data}", out=str(run), model=kind, epochs=s.epochs,
                         batch_size=s.batch_size, image_size=s.image_size, seed=s.seed, progress=progress,
                         n_masks=4, **s.extra)
    saved = run / "config.json"
    metrics = run / "metrics.jsonl"
    if saved.is_file() and metrics.is_file() and (run / "checkpoints" / "best.pt").is_file():
        same = {k: v for k, v in json.loads(saved.read_text()).items() if k not in ("progress", "device")} == {
            k: v for k, v in asdict(config).items() if k not in ("progress", "device")}
        history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if same and history and history[-1]["epoch"] == s.epochs:
            return history
    if run.exists():  # an unfinished or different run: replaced only when dermretr wrote it
        if any(run.iterdir()) and not _replaceable_run(run):
            raise DermretrError(f"{run} holds files that dermretr did not write; move them away or choose "
                                "another --out (nothing was changed)")
        shutil.rmtree(run)
    return fit(config).history


def _example_query(cases: pd.DataFrame, data: Path, seed: int) -> tuple[pd.Series, str, set[str] | None]:
    """A test case, a modification text for it and its exact target (a DermSynth triplet when there is one)."""
    from .data.vocab import case_text
    from .evaluate import load_triplets

    test = cases[cases["split"].astype(str) == "test"]
    triplets = load_triplets(data)
    if triplets is not None:
        triplets = triplets[triplets["reference_case_id"].isin(set(test["case_id"]))]
    if triplets is None or len(triplets) == 0:  # no triplet: the case's own findings text (never its caption)
        row = test.iloc[0]
        return row, case_text(row, style="terse", seed=None, view="findings"), None
    pick = triplets.sample(1, random_state=seed).iloc[0]
    row = cases[cases["case_id"] == pick["reference_case_id"]].iloc[0]
    return row, str(pick["modification_text"]), {str(pick["target_case_id"])}


def _fairness(before: pd.DataFrame, after: pd.DataFrame | None, cases: pd.DataFrame, s: DemoSettings, out: Path,
              figures: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The gap by Fitzpatrick pairs before and (when ``after`` is given) after skin-type-balanced training."""
    from .fairness import compare_runs, format_slices, plot_comparison, plot_slices, slice_metrics

    metrics = ("recall@1", "map@10")
    min_group = 20 if not s.fast else 5
    slices = slice_metrics(before, cases, by="fitzpatrick_pairs", metrics=metrics, n_boot=s.n_boot,
                           min_group=min_group, seed=s.seed)
    figures["slices"] = "skin_tone_slices.png"
    save_figure(plot_slices(slices, title="Composed model by skin type (test queries)"), out / figures["slices"])
    if after is None:
        return {"slices": format_slices(slices)}
    comparison = compare_runs(before, after, cases, by="fitzpatrick_pairs", metrics=metrics, n_boot=s.n_boot,
                              min_group=min_group, seed=s.seed)
    figures["mitigation"] = "skin_tone_mitigation.png"
    save_figure(plot_comparison(comparison), out / figures["mitigation"])
    return {"slices": format_slices(slices), "comparison": comparison}


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
                f"{s.epochs} epochs (minutes of CPU): differences whose intervals overlap are noise, and close "
                "methods change places from one training seed to the next. It is a demonstration, not a benchmark: "
                "<code>python benchmarks/bench_models.py --seeds 0 1 2</code> compares the methods on 1,000 cases "
                "over three seeds with paired differences (README, <i>The model and how it does</i>).</p>")
    if not records or s.released:  # the released demo's own table above holds these very numbers
        return head
    frame = pd.DataFrame(records)
    frame["column"] = [f"{m}@{k} ({a})" for m, k, a in zip(frame["metric"], frame["k"], frame["average"])]
    frame["cell"] = [f"{v:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and pd.notna(lo) else "")
                     for v, lo, hi in zip(frame["value"], frame["ci_low"], frame["ci_high"])]
    table = frame.pivot(index="run", columns="column", values="cell").rename(index={"full": "full (released model)"})
    table.index.name = table.columns.name = None
    return head + ("<p>The released composed model at the benchmark's size, from its model card (case protocol, a "
                   "fresh DermSynth test split, 95% bootstrap CIs; <i>floor</i> rows need no model).</p>"
                   + table.to_html(border=0))


def paired_table(per_query: list[pd.DataFrame], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The composed model minus every other method and floor on the same case queries, macro, with verdicts.

    One row per method and metric (Recall@1, mAP@10): the macro difference ``full - method`` with
    its stratified bootstrap CI and sign-flip p-value, and the verdict the CI allows ("full better"
    or "full worse" only when the CI excludes 0, else "not shown").
    """
    from .evaluate import paired_difference

    case = [pq for pq in per_query if len(pq) and pq["protocol"].iloc[0] == "case"]
    tables = {}
    for pq in case:
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
            verdict = "full better" if low > 0 else "full worse" if high < 0 else "not shown"
            rows.append({"full minus": run, "metric": f"{metric} (macro)", "difference": d.at[metric, "difference"],
                         "ci_low": low, "ci_high": high, "p_value": d.at[metric, "p_value"], "verdict": verdict})
    return pd.DataFrame(rows)


def _write_report(path: Path, s: DemoSettings, table: pd.DataFrame, figures: dict[str, str], example_text: str,
                  example_case: str, seconds: dict[str, float], summary: dict[str, pd.DataFrame],
                  fairness: dict[str, pd.DataFrame], paired: pd.DataFrame) -> Path:
    settings = ", ".join(f"{k}={v}" for k, v in asdict(s).items() if k not in ("extra", "workers") and
                         not (s.released and k in ("epochs", "batch_size", "fast")))
    times = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    sections = [
        f"<h1>dermretr demo</h1><p>Composed image + text retrieval of skin-lesion cases on DermSynth "
        f"(procedural data with known ground truth).</p><p><small>Settings: {html.escape(settings)}. "
        f"Time: {html.escape(times)}.</small></p>",
        "<h2>Data</h2><h3>Cases per diagnosis</h3>" + summary["diagnosis"].to_html(border=0)
        + "<h3>Cases per Fitzpatrick skin type</h3>" + summary["fitzpatrick"].to_html(border=0)
        + f'<p><img src="{figures["contact_sheet"]}" width="900"></p>',
        "<h2>Results (test split, 95% bootstrap CIs)</h2><p><b>case</b>: a test image with its findings text "
        "(never its diagnosis); "
        "relevant = gallery cases of the same diagnosis group (own case and same patient excluded). "
        "<b>modify</b>: reference image + modification text; relevant = the exact target.</p>"
        "<p><b>Floors</b> need no model: <i>random</i> is the expected value of a random ranking, <i>majority</i> "
        "ranks the most common diagnosis group first, <i>criteria_match</i> ranks by agreement of the annotated "
        "7-point findings. A model is only useful where it beats them. <b>(macro)</b> columns average over "
        "diagnosis groups (the mean of each group's mean, CI resampled within groups), so a ranking that favours "
        "the most common group cannot look good; the plain columns average over queries.</p>"
        + table.to_html(border=0) + f'<p><img src="{figures["results"]}" width="900"></p>'
        + "<h3>The composed model against each method and floor, paired</h3><p>The same case queries, macro "
        "averages; a difference counts only when its 95% CI excludes 0 (verdict), otherwise it is not shown either "
        "way. The p-value (a sign-flip permutation test) answers a slightly different question and can disagree "
        "with the interval near the boundary; the verdict follows the interval.</p>"
        + paired.to_html(border=0, index=False, float_format=lambda v: f"{v:.3f}") + _benchmark_html(s),
        "<h2>Training</h2>" + (f'<p><img src="{figures["curves"]}" width="900"></p>' if "curves" in figures else
                               "<p>Not trained here: the released model was loaded as it ships.</p>"),
        f"<h2>An example composed query</h2><p>Reference case {html.escape(example_case)} + "
        f"&ldquo;{html.escape(example_text)}&rdquo;</p>"
        f'<p><img src="{figures["example"]}" width="1000"></p>',
        "<h2>Skin tone</h2><p>The composed model's case search by Fitzpatrick pairs (DermSynth renders lower lesion "
        "contrast on darker skin), with 95% CIs; groups with few queries are flagged. "
        + ("Then the same model trained with sampling balanced over diagnosis group and skin type, compared on the "
           "same queries (paired bootstrap CIs, permutation p-values).</p>" if "comparison" in fairness else
           "The mitigation (skin-type-balanced training) needs training: <code>dermretr demo</code> runs it.</p>")
        + fairness["slices"].to_html(border=0) + f'<p><img src="{figures["slices"]}" width="800"></p>'
        + (_comparison_html(fairness["comparison"]) + f'<p><img src="{figures["mitigation"]}" width="900"></p>'
           if "comparison" in fairness else ""),
    ]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>dermretr demo</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;"
            "font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}</style></head>"
            "<body>" + "\n".join(sections) + "</body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _comparison_html(comparison: pd.DataFrame) -> str:
    cols = [c for c in ("group", "kind", "metric", "n_queries", "before", "after", "difference", "ci_low", "ci_high",
                        "p_value", "p_holm") if c in comparison.columns]
    return comparison[cols].to_html(border=0, index=False, float_format=lambda v: f"{v:.3f}")


def run_demo(out: str | Path = "dermretr-demo", settings: DemoSettings | None = None, progress: bool = True,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run the demo into ``out`` (see the module docstring) and return its results.

    Parameters
    ----------
    out : path
        Output folder: ``dermsynth/``, ``runs/KIND/``, ``index/``, ``metrics.json``,
        ``per_query.csv``, the figures and ``report.html``.
    settings : DemoSettings, optional
        From :func:`demo_settings` (default: the full-size demo).
    progress : bool
        Show progress bars.
    log : callable
        Where the narration goes.
    """
    from .data import load
    from .data.cases import summarize_cases
    from .evaluate import evaluate_run, results_table, write_metrics
    from .floors import evaluate_floors
    from .index import CaseIndex
    from .models.retriever import Retriever
    from .viz import contact_sheet, gallery

    s = settings or demo_settings()
    out = claim_dir(out, "demo", recognise=_legacy_demo)  # a folder of the user's is refused, never emptied
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    data = _dataset(out, s, progress, log)
    cases = load("synthetic", data)
    seconds["data"] = time.perf_counter() - t0

    figures = {"contact_sheet": "contact_sheet.png", "results": "results.png", "example": "example_query.png"}
    save_figure(contact_sheet(cases, by="diagnosis_group", per_group=6, seed=s.seed,
                              title="DermSynth: example cases per diagnosis group"), out / figures["contact_sheet"])

    t0 = time.perf_counter()
    models: dict[str, Retriever] = {}
    if s.released:
        log(f"Loading the released model {RELEASED} (nothing is trained) ...")
        models["full"] = Retriever.from_pretrained(RELEASED, device="cpu")
        seconds["loading the model"] = time.perf_counter() - t0
    else:
        histories = {}
        for kind in s.kinds:
            log(f"Training {kind} ({s.epochs} epochs) ...")
            histories[kind] = _train(kind, data, out / "runs" / kind, s, progress)
        seconds["training"] = time.perf_counter() - t0
        figures["curves"] = "training_curves.png"
        save_figure(curves_figure(histories), out / figures["curves"])

    t0 = time.perf_counter()
    records: list[dict] = []
    per_query = []
    for kind in s.kinds:
        run = out / "runs" / kind
        model = models[kind] if kind in models else Retriever.load(run / "checkpoints" / "best.pt", device="cpu")
        for protocol in ("case", "modify"):
            pq, recs = evaluate_run(run, cases, protocol, triplets=data if protocol == "modify" else None,
                                    n_boot=s.n_boot, seed=s.seed, device="cpu", name=kind, retriever=model)
            records += recs
            per_query.append(pq)
    floor_pq, floor_records = evaluate_floors(cases, n_boot=s.n_boot, seed=s.seed)  # no model: what to beat
    records += floor_records
    per_query.append(floor_pq)
    order = {"case": 0, "modify": 1}
    records.sort(key=lambda r: order[r["protocol"]])  # one protocol after the other in tables
    metrics = write_metrics(records, out / "metrics.json")
    with atomic_path(out / "per_query.csv") as tmp:
        pd.concat(per_query, ignore_index=True).to_csv(tmp, index=False)
    table = results_table(records)
    paired = paired_table(per_query, n_boot=s.n_boot, seed=s.seed)
    save_figure(results_figure(records), out / figures["results"])
    seconds["evaluation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if s.released:  # the index records the released model by name: `dermretr search --index` loads it again
        index = CaseIndex.build(RELEASED, cases, kind="flat", progress=progress, device="cpu")
    else:
        ckpt = out / "runs" / "full" / "checkpoints" / "best.pt"
        index = CaseIndex.build(Retriever.load(ckpt, device="cpu"), cases, kind="flat", checkpoint=ckpt,
                                progress=progress)
    index.save(out / "index", overwrite=True)
    row, text, target = _example_query(cases, data, s.seed)
    example = index.search(row["image_path"], text, k=9)  # the reference itself is in the index: leave it out
    example = example[example["case_id"] != row["case_id"]].head(8).reset_index(drop=True)
    example["rank"] = range(1, len(example) + 1)
    title = (f"Reference {row['case_id']} + modification text; green frame: the exact target" if target else
             f"Reference {row['case_id']} + its findings; green frame: same diagnosis group")
    save_figure(gallery(row["image_path"], text, example, relevant=target,
                        query_group=None if target else str(row["diagnosis_group"]), title=title),
                out / figures["example"])
    seconds["index and search"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    before = next(pq for pq in per_query if pq["run"].iloc[0] == "full" and pq["protocol"].iloc[0] == "case")
    after = None
    if not s.released:
        log("Skin tone: slicing the composed model by Fitzpatrick pairs, then training a skin-type-balanced one ...")
        balanced = replace(s, extra={**s.extra, "balance_by": "diagnosis_group,fitzpatrick"})
        _train("full", data, out / "runs" / "full-balanced", balanced, progress)
        after, _ = evaluate_run(out / "runs" / "full-balanced", cases, "case", n_boot=s.n_boot, seed=s.seed,
                                device="cpu", name="full-balanced")
    fair = _fairness(before, after, cases, s, out, figures)
    seconds["skin tone"] = time.perf_counter() - t0

    summary = summarize_cases(cases)
    report = _write_report(out / "report.html", s, table, figures, text, str(row["case_id"]), seconds, summary,
                           fair, paired)
    return DemoResult(out=out, report=report, metrics=metrics, table=table, records=records, example=example,
                      seconds=seconds, fairness=fair, paired=paired)
