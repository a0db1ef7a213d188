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
with the same report, in minutes (:data:`MEASURED_SECONDS`).

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
from ._io import atomic_path, claim_dir, clean_stale, owner_kind, save_figure
from .demo_report import (
    adjusted_gap_sentences,
    mitigation_findings,
    overall_finding,
    paired_findings,
    paired_table,
    search_command,
    write_report,
)
from .models._released import RELEASED, RELEASED_DATA_SEED, RELEASED_FRESH_SEED
from .models.retriever import KINDS

__all__ = ["DemoSettings", "DemoResult", "demo_settings", "run_demo", "results_figure", "curves_figure",
           "paired_table", "MEASURED_SECONDS", "BALANCED_RUN", "demo_mode", "trained_models", "time_range",
           "demo_plan"]

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
    #: The findings in words: the composed model against each method and floor, then the skin-type mitigation.
    findings: list[str] = field(default_factory=list)
    #: A ready-made ``dermretr search`` command: the example query on the demo's index.
    search_command: str = ""


def demo_settings(fast: bool = False, released: bool = False, **overrides) -> DemoSettings:
    """The demo's sizes: default, ``fast=True`` or ``released=True`` (times: :data:`MEASURED_SECONDS`).

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


#: Wall-clock seconds of whole demo runs from nothing (DermSynth generated, every model trained, the
#: skin-type-balanced retrain included) on 2 CPU cores, per mode: the fewest and the most, and where each comes
#: from.  ``python benchmarks/bench_demo.py [--fast | --released]`` measures a run (wall clock and CPU time) and
#: says whether it falls inside; record new measurements here with their source.  A busy machine is several times
#: slower than an idle one.
MEASURED_SECONDS: dict[str, dict] = {
    "default": {"range_s": (715.0, 5520.0), "sources": (
        "715 s measured on an idle 2-core machine, commit 90a5486",
        "5520 s = 92 min measured on a busy 2-core machine, the skin-type-balanced retrain alone 839 s, issue 22")},
    "fast": {"range_s": (185.0, 584.0), "sources": (
        "584 s measured on a busy 2-core machine, load average 4 to 7, by benchmarks/bench_demo.py --fast",
        "that run's 370 CPU-seconds of work would take about 185 s on 2 idle cores, estimated, not timed")},
    "released": {"range_s": (35.0, 223.0), "sources": (
        "35 s measured, commit dc0a3e4",
        "223 s measured on a busy 2-core machine, load average 6, by benchmarks/bench_demo.py --released")},
}

#: The run folder of the skin-type-balanced retrain of the composed model (the skin-tone section).
BALANCED_RUN = "full-balanced"


def demo_mode(s: DemoSettings) -> str:
    """``"default"``, ``"fast"`` or ``"released"`` when ``s`` has that mode's sizes, else ``"custom"``.

    >>> demo_mode(demo_settings(fast=True)), demo_mode(demo_settings(epochs=3)), demo_mode(demo_settings())
    ('fast', 'custom', 'default')
    """
    size = ("n_cases", "image_size", "epochs", "batch_size", "kinds", "n_boot", "seed", "extra")
    for mode in ("released", "fast", "default"):
        base = demo_settings(fast=mode == "fast", released=mode == "released")
        if all(getattr(s, k) == getattr(base, k) for k in size):
            return mode
    return "custom"


def trained_models(s: DemoSettings) -> list[str]:
    """The run folders the demo trains, in order: each method, then the skin-type-balanced composed model.

    >>> trained_models(demo_settings(fast=True))
    ['full', 'global', 'clip4cir', 'late_fusion', 'image', 'text', 'full-balanced']
    >>> trained_models(demo_settings(released=True))
    []
    """
    return [] if s.released else [*s.kinds, BALANCED_RUN]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def time_range(mode: str) -> str:
    """The measured time of a ``mode`` run in words, from :data:`MEASURED_SECONDS` (empty for ``"custom"``).

    >>> time_range("default")
    '12 min to 92 min on 2 CPU cores: 715 s measured on an idle 2-core machine, commit 90a5486; ...'
    """
    if mode not in MEASURED_SECONDS:
        return ""
    low, high = MEASURED_SECONDS[mode]["range_s"]
    sources = MEASURED_SECONDS[mode]["sources"]
    span = _minutes(low) if _minutes(low) == _minutes(high) else f"{_minutes(low)} to {_minutes(high)}"
    return f"{span} on 2 CPU cores: {'; '.join(sources)}"


def demo_plan(s: DemoSettings) -> str:
    """What the demo is about to do and how long it took before: every model it trains, with the count.

    >>> print(demo_plan(demo_settings(fast=True)).splitlines()[0])
    Training 7 models, 3 epochs each (21 epochs): full, global, clip4cir, late_fusion, image, text, and full-balanced
    (the composed model retrained with sampling balanced over diagnosis group and skin type, for the skin-tone ...).
    """
    mode = demo_mode(s)
    if s.released:
        lines = [f"Training nothing: the released model {RELEASED} is evaluated as it ships."]
    else:
        models = trained_models(s)
        lines = [f"Training {len(models)} models, {_plural(s.epochs, 'epoch')} each ({len(models) * s.epochs} epochs): "
                 f"{', '.join(models[:-1])}, and {models[-1]} (the composed model retrained with sampling balanced "
                 "over diagnosis group and skin type, for the skin-tone section)."]
    if mode == "custom":
        ref = "released" if s.released else "default"
        lines.append("Time: not measured at these sizes; it grows about in proportion to "
                     f"{'cases' if s.released else 'models x epochs x cases'}. The {ref} demo took {time_range(ref)}.")
    else:
        lines.append(f"Time: {time_range(mode)}. More cores or a GPU are faster; a busy machine is slower "
                     f"(benchmarks/bench_demo.py{'' if mode == 'default' else ' --' + mode} measures yours).")
    return "\n".join(lines)


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
    # the demo writes its dataset first: a folder of runs and pictures without it is a user's folder
    return bool(names) and all(n in _DEMO_ENTRIES or n.endswith(".png") for n in names) and (
        path / "dermsynth" / "meta" / "dermsynth.json").is_file()


_RUN_ENTRIES = {"config.json", "metrics.jsonl", "checkpoints", "training_curve.png", ".dermretr.json"}
_CHECKPOINTS = {"last.pt", "best.pt"}


def _replaceable_run(run: Path) -> bool:
    """A run folder that dermretr wrote and that holds nothing else (so removing it loses nothing of the user's).

    Temporaries that an interrupted run left (its process is gone) are removed first, with a warning; the
    ``checkpoints`` folder is looked into too: a file of the user's there keeps the whole run.
    """
    from .train import is_run_folder

    if not (owner_kind(run) == "run" or is_run_folder(run)):
        return False
    clean_stale(run)
    checkpoints = run / "checkpoints"
    if checkpoints.is_dir() and not checkpoints.is_symlink():
        clean_stale(checkpoints)
        if not {p.name for p in checkpoints.iterdir()} <= _CHECKPOINTS:
            return False
    elif checkpoints.exists() or checkpoints.is_symlink():
        return False
    return {p.name for p in run.iterdir()} <= _RUN_ENTRIES


def _train(kind: str, data: Path, run: Path, s: DemoSettings, progress: bool) -> list[dict]:
    from .train import TrainConfig, fit

    config = TrainConfig(data=f"synthetic:{data}", out=str(run), model=kind, epochs=s.epochs,
                         batch_size=s.batch_size, image_size=s.image_size, seed=s.seed, progress=progress,
                         n_masks=4, **s.extra)
    saved = run / "config.json"
    metrics = run / "metrics.jsonl"
    if saved.is_file() and metrics.is_file() and (run / "checkpoints" / "best.pt").is_file():
        wanted = {k: v for k, v in asdict(config).items() if k not in ("progress", "device")}
        recorded = json.loads(saved.read_text())  # also holds what the run found (data_split...): not settings
        same = {k: recorded.get(k, wanted[k] if k == "data_options" else None) for k in wanted} == wanted
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
    """The gap by Fitzpatrick pairs before and (when ``after`` is given) after skin-type-balanced training.

    Each model's gap comes with the gap standardised to a common diagnosis mix beside it
    (:func:`dermretr.fairness.adjusted_gap`): ``adjusted`` (and ``adjusted_after``).
    """
    from .fairness import adjusted_gap, compare_runs, format_slices, plot_comparison, plot_slices, slice_metrics

    metrics = ("recall@1", "map@10")
    min_group = 20 if not s.fast else 5
    by = "fitzpatrick_pairs"

    def adjusted(per_query: pd.DataFrame) -> pd.DataFrame:
        return adjusted_gap(per_query, cases, by=by, metrics=metrics, n_boot=s.n_boot, min_group=min_group,
                            seed=s.seed)

    slices = slice_metrics(before, cases, by=by, metrics=metrics, n_boot=s.n_boot, min_group=min_group, seed=s.seed)
    figures["slices"] = "skin_tone_slices.png"
    save_figure(plot_slices(slices, title="Composed model by skin type (test queries)"), out / figures["slices"])
    tables = {"slices": format_slices(slices), "adjusted": adjusted(before)}
    if after is None:
        return tables
    comparison = compare_runs(before, after, cases, by=by, metrics=metrics, n_boot=s.n_boot, min_group=min_group,
                              seed=s.seed)
    figures["mitigation"] = "skin_tone_mitigation.png"
    save_figure(plot_comparison(comparison), out / figures["mitigation"])
    return {**tables, "comparison": comparison, "adjusted_after": adjusted(after)}


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
    log(demo_plan(s))
    n_models = len(trained_models(s))
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
        for i, kind in enumerate(s.kinds, 1):
            log(f"Training {kind} ({i}/{n_models}, {_plural(s.epochs, 'epoch')}) ...")
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
    for protocol in ("case", "modify"):  # no model: what to beat
        floor_pq, floor_records = evaluate_floors(cases, n_boot=s.n_boot, seed=s.seed, protocol=protocol,
                                                  triplets=data if protocol == "modify" else None)
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
        log(f"Training {BALANCED_RUN} ({n_models}/{n_models}, {_plural(s.epochs, 'epoch')}): the composed model "
            "with sampling balanced over diagnosis group and skin type, to compare by Fitzpatrick pairs ...")
        balanced = replace(s, extra={**s.extra, "balance_by": "diagnosis_group,fitzpatrick"})
        _train("full", data, out / "runs" / BALANCED_RUN, balanced, progress)
        after, _ = evaluate_run(out / "runs" / BALANCED_RUN, cases, "case", n_boot=s.n_boot, seed=s.seed,
                                device="cpu", name=BALANCED_RUN)
    fair = _fairness(before, after, cases, s, out, figures)
    seconds["skin tone"] = time.perf_counter() - t0

    summary = summarize_cases(cases)
    command = search_command(out / "index", row["image_path"], text)
    findings = (paired_findings(paired) + [overall_finding(paired)]
                + mitigation_findings(fair.get("comparison", pd.DataFrame())) + adjusted_gap_sentences(fair["adjusted"])
                + (adjusted_gap_sentences(fair["adjusted_after"], "With skin-type-balanced training")
                   if "adjusted_after" in fair else []))
    report = write_report(out / "report.html", s, records, table, {k: out / v for k, v in figures.items()}, text,
                          str(row["case_id"]), seconds, summary, fair, paired, command)
    return DemoResult(out=out, report=report, metrics=metrics, table=table, records=records, example=example,
                      seconds=seconds, fairness=fair, paired=paired, findings=[f for f in findings if f],
                      search_command=command)
