"""Benchmark: training time and retrieval quality of the composed model and its baselines on DermSynth.

Generates DermSynth (default 1,000 cases at 128 px), trains every retriever kind with the same
settings, and evaluates the case-search protocol on the held-out test split (query: test image +
its descriptor text; relevant: gallery cases of the same diagnosis group; same patient excluded),
plus the modification protocol on DermSynth's triplets (exact target: the same lesion re-rendered
with the requested change).

One 199-query test split and one training seed cannot separate close methods (seed-to-seed spread
of Recall@1 is about 0.05), so ``--seeds`` trains every kind once per seed on the same data and
the summary is the mean over seeds.  Recall@1 and mAP@10 come with 95% bootstrap CIs over queries
(of the per-query metric averaged over seeds), and the full model with paired differences against
each baseline.  The full model is also scored with its own global branch alone (``a = 0``) and its
local branch alone (``a = 1``), which shows what each part contributes.

The floors (random expectation, majority first, 7-point criteria match; no model) and macro
averages over diagnosis groups are reported beside them, for both protocols (the modify protocol's
criteria match ranks by the reference's annotated findings after the requested change), with the
full model's paired macro differences against every method and floor.

The cases carry annotated findings, so every trained kind is also scored as ``KIND+findings``: its scores
plus w times the criteria-match agreement (``dermretr.evaluate.hybrid_scores``), w chosen per seed on the
val cases against the train cases (``choose_findings_weight``).  It is its own method, never ``full``;
``full+findings`` gets the same paired macro differences as ``full``.

Targets, each judged by full's paired macro difference (95% CI above 0 = better, below 0 = worse, else
not shown): the tiny composed model trains in under 5 minutes on 2 CPU cores; full is better than
image-only, text-only and every floor on macro Recall@1 and mAP@10, and not worse than global-only;
full+findings is better than every non-composed kind (image, text, late fusion, CLIP4Cir, global) and
every floor.
Prints a table and one JSON line.

    python benchmarks/bench_models.py [--n-cases 1000] [--epochs 15] [--seeds 0 1 2] [--kinds full global image text]
        [--ablate-text-skip] [--finding-triplets] [--out DIR [--reuse]]

``--reuse`` evaluates the runs already in ``--out`` instead of training them again (their training
time is then the sum of the epochs' training seconds from ``metrics.jsonl``, evaluation excluded).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from dermretr.data import load
from dermretr.data.synth import generate
from dermretr.evaluate import (
    bootstrap_ci,
    case_scores,
    case_search,
    choose_findings_weight,
    hybrid_scores,
    metric_records,
    modify_search,
    paired_difference,
    results_table,
    scores_search,
    summarize_metrics,
)
from dermretr.floors import available_floors, evaluate_floors
from dermretr.models.embeddings import EncodingCache
from dermretr.models.retriever import KINDS, Retriever
from dermretr.train import TrainConfig, fit

NON_COMPOSED = ("image", "text", "late_fusion", "clip4cir", "global")
METRICS = ("recall@1", "recall@5", "recall@10", "map@10", "ndcg@10", "mrr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cases", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's default")
    parser.add_argument("--kinds", nargs="+", default=["full", "global", "clip4cir", "late_fusion", "image", "text"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (data: --data-seed)")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="keep data and runs here (default: a temp dir)")
    parser.add_argument("--ablate-text-skip", action="store_true",
                        help="also train full and global without the composers' text skip (kinds "
                             "'full:no-text-skip', 'global:no-text-skip'), paired against full")
    parser.add_argument("--tone-triplets", action="store_true", help="train with the tone triplets too")
    parser.add_argument("--finding-triplets", action="store_true",
                        help="train with finding triplets too ('this case, with irregular streaks')")
    parser.add_argument("--no-text-skip", action="store_true", help="composers without the text skip (ablation)")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate the finished runs in --out instead of training them again")
    args = parser.parse_args()
    if args.reuse and not args.out:
        parser.error("--reuse needs --out (the folder of an earlier run of this benchmark)")
    bad = set(args.kinds) - set(KINDS)
    if bad:
        parser.error(f"unknown kinds {sorted(bad)}")

    tmp = Path(args.out or tempfile.mkdtemp(prefix="dermretr-bench-"))
    root = tmp / "dermsynth"
    if not (root / "meta" / "meta.csv").is_file():
        generate(root, n_cases=args.n_cases, seed=args.data_seed, image_size=args.image_size, progress=False)
    cases = load("synthetic", root)
    with_findings = "criteria_match" in available_floors(cases)
    rows = []
    per_query: dict[str, list[pd.DataFrame]] = {}
    modify_pq: dict[str, list[pd.DataFrame]] = {}
    runs = [(kind, kind, not args.no_text_skip) for kind in args.kinds]
    if args.ablate_text_skip:
        runs += [(f"{kind}:no-text-skip", kind, False) for kind in args.kinds if kind in ("full", "global")]
    for seed in args.seeds:
        for label, kind, text_skip in runs:
            stem = f"run-{label.replace(':', '-')}"
            out = tmp / (stem if len(args.seeds) == 1 else f"{stem}-seed{seed}")
            cfg = TrainConfig(data=f"synthetic:{root}", out=str(out), model=kind, image_size=args.image_size,
                              seed=seed, progress=False, device=args.device, text_skip=text_skip,
                              tone_triplets=args.tone_triplets, finding_triplets=args.finding_triplets)
            if args.epochs:
                cfg.epochs = args.epochs
            done = reused(out, cfg.epochs) if args.reuse else None
            if done is not None:
                seconds, best_epoch = done
            else:  # a run cut short (killed benchmark) continues from its last epoch
                cfg.resume = args.reuse and (out / "checkpoints" / "last.pt").is_file()
                start = time.perf_counter()
                best_epoch = fit(cfg).best["epoch"]
                seconds = time.perf_counter() - start
            best = EncodingCache(Retriever.load(out / "checkpoints" / "best.pt", device=args.device))  # encoded once
            variants = {label: None}
            if label == "full":  # what each branch of the full model scores on its own
                variants.update({"full:global-branch": 0.0, "full:local-branch": 1.0})
            if with_findings:  # the model's scores plus the findings match, its weight chosen on the val cases
                weight, _ = choose_findings_weight(best, cases, "val", ("train",))
                q, g, s, exclude = case_scores(best, cases, "test", ("train", "val"))
                pq = scores_search(q, g, hybrid_scores(q, g, s, weight), exclude)
                per_query.setdefault(f"{label}+findings", []).append(pq)
                row = {"kind": f"{label}+findings", "seed": seed, "findings_weight": weight,
                       **{k: round(v, 4) for k, v in summarize_metrics(pq).items() if k in (*METRICS, "n_queries")}}
                rows.append(row)
                print(json.dumps(row), flush=True)
            for name, alpha in variants.items():
                pq, summary = case_search(best, cases, query_split="test", alpha=alpha)
                per_query.setdefault(name, []).append(pq)
                row = {"kind": name, "seed": seed, "epochs": cfg.epochs, "train_s": round(seconds, 1),
                       "best_epoch": best_epoch,
                       "alpha": round(best.alpha if alpha is None else alpha, 3),
                       **{k: round(v, 4) for k, v in summary.items() if k in (*METRICS, "n_queries")}}
                if alpha is None:  # modification protocol: DermSynth triplets, exact target, gallery = all
                    mod_pq, mod = modify_search(best, cases, root, split="test", ks=(1, 5, 10))
                    modify_pq.setdefault(name, []).append(mod_pq)
                    row.update({f"mod_{k}": round(v, 4) for k, v in mod.items()
                                if k.startswith("recall") or k == "n_queries"})
                rows.append(row)
                print(json.dumps(row), flush=True)

    per_seed = pd.DataFrame(rows)
    numeric = [c for c in per_seed.columns if c not in ("kind", "seed") and pd.api.types.is_numeric_dtype(per_seed[c])]
    table = per_seed.groupby("kind", sort=False)[numeric].mean().round(4)
    table.insert(0, "n_seeds", per_seed.groupby("kind", sort=False)["seed"].nunique())
    if len(args.seeds) > 1:
        table["recall@1_sd"] = per_seed.groupby("kind", sort=False)["recall@1"].std().round(4)
        table["map@10_sd"] = per_seed.groupby("kind", sort=False)["map@10"].std().round(4)
    # per query, averaged over seeds (same queries for every seed: the data is fixed)
    mean_pq = {k: sum(f[["recall@1", "map@10"]].to_numpy() for f in v) / len(v) for k, v in per_query.items()}
    for name, values in mean_pq.items():
        (l1, lm), (h1, hm) = bootstrap_ci(values, seed=0)
        table.loc[name, "recall@1_ci"] = f"[{l1:.3f}, {h1:.3f}]"
        table.loc[name, "map@10_ci"] = f"[{lm:.3f}, {hm:.3f}]"
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(f"\nDermSynth {args.n_cases} cases, {args.image_size} px, test split (case protocol), "
              f"mean over training seeds {args.seeds}:")
        print(table.to_string())
        if len(args.seeds) > 1:
            print("\nPer seed:")
            print(per_seed.pivot(index="kind", columns="seed", values=["recall@1", "map@10"]).round(3).to_string())
    diffs = {}
    if "full" in mean_pq:
        print("\nPaired differences full - other (same test queries, per-query metric averaged over seeds), "
              "95% bootstrap CI:")
        for kind, values in mean_pq.items():
            if kind == "full":
                continue
            d = mean_pq["full"] - values
            low, high = bootstrap_ci(d, seed=0)
            diffs[kind] = {"recall@1": [round(float(d[:, 0].mean()), 4), round(float(low[0]), 4),
                                        round(float(high[0]), 4)],
                           "map@10": [round(float(d[:, 1].mean()), 4), round(float(low[1]), 4),
                                      round(float(high[1]), 4)]}
            print(f"  vs {kind:20s} recall@1 {d[:, 0].mean():+.3f} [{low[0]:+.3f}, {high[0]:+.3f}]   "
                  f"map@10 {d[:, 1].mean():+.3f} [{low[1]:+.3f}, {high[1]:+.3f}]")
    # floors (no model) and macro averages (over diagnosis groups), on the same queries, for both protocols
    averaged, records = macro_tables(per_query, evaluate_floors(cases, split="test", n_boot=0)[0],
                                     "case", "case search")
    macro_diffs = paired_macro(averaged, "full", "case search")
    # the hybrid (full + findings match) is its own method, held to the target of a composed model
    hybrid_diffs = paired_macro(averaged, "full+findings", "case search") if "full+findings" in averaged else {}
    mod_floors, _ = evaluate_floors(cases, split="test", n_boot=0, protocol="modify", triplets=root)
    mod_averaged, mod_records = macro_tables(modify_pq, mod_floors, "modify",
                                             "modify protocol (DermSynth triplets, exact target)")
    mod_diffs = paired_macro(mod_averaged, "full", "modify protocol (DermSynth triplets, exact target)")
    # the targets, judged by paired macro differences (a point estimate ahead is not a win)
    verdicts = {f"{lead} vs {name} {m} (macro)": _verdict(d[m])
                for lead, lead_diffs in (("full", macro_diffs), ("full+findings", hybrid_diffs))
                for name, d in lead_diffs.items() for m in ("recall@1", "map@10")}
    checks = {}
    for name in macro_diffs:
        if name.startswith("floor:") or name in ("image", "text"):
            for m in ("recall@1", "map@10"):
                checks[f"full better than {name} {m} (macro)"] = verdicts[f"full vs {name} {m} (macro)"] == "better"
        if name == "global":
            for m in ("recall@1", "map@10"):
                checks[f"full not worse than global {m} (macro)"] = verdicts[f"full vs global {m} (macro)"] != "worse"
    for name in hybrid_diffs:
        if name.startswith("floor:") or name in NON_COMPOSED:
            for m in ("recall@1", "map@10"):
                checks[f"full+findings better than {name} {m} (macro)"] = \
                    verdicts[f"full+findings vs {name} {m} (macro)"] == "better"
    if "full" in table.index:
        checks["full trains < 300 s"] = bool(table.at["full", "train_s"] < 300)
    print("\nTargets (paired macro differences, 95% CI: better = above 0, worse = below 0, else not shown):")
    for k, v in checks.items():
        print(f"  {k}: {'OK' if v else 'NOT MET'}")
    print(json.dumps({"benchmark": "models_dermsynth", "n_cases": args.n_cases, "seeds": args.seeds,
                      "rows": rows, "paired_differences": diffs, "macro_paired_differences": macro_diffs,
                      "hybrid_macro_paired_differences": hybrid_diffs,
                      "macro": {f"{r['run']} {r['average']} {r['metric']}@{r['k']}": round(r["value"], 4)
                                for r in records},
                      "modify": {f"{r['run']} {r['average']} {r['metric']}@{r['k']}": round(r["value"], 4)
                                 for r in mod_records},
                      "modify_macro_paired_differences": mod_diffs, "verdicts": verdicts, "checks": checks}))


def _verdict(difference: list[float]) -> str:
    """``better``, ``worse`` or ``not shown``, from [difference, ci_low, ci_high]."""
    return "better" if difference[1] > 0 else "worse" if difference[2] < 0 else "not shown"


def reused(run: Path, epochs: int) -> tuple[float, int] | None:
    """A finished run's training seconds (sum over its epochs) and best epoch, for ``--reuse``; None if unfinished."""
    metrics, best = run / "metrics.jsonl", run / "checkpoints" / "best.pt"
    if not (metrics.is_file() and best.is_file()):
        return None
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if len(history) < epochs:
        return None
    extra = torch.load(best, map_location="cpu", weights_only=True)["extra"]
    return sum(h["train_seconds"] for h in history), int(extra["epoch"])


def macro_tables(per_query: dict[str, list[pd.DataFrame]], floor_pq: pd.DataFrame, protocol: str, title: str):
    """Per-query metrics averaged over seeds, floors added; micro and macro records (printed as a table)."""
    averaged = {k: v[0].assign(**{m: sum(f[m].to_numpy() for f in v) / len(v) for m in ("recall@1", "map@10")})
                for k, v in per_query.items()}
    averaged.update({f"floor:{f}": pq.drop(columns="protocol").reset_index(drop=True)
                     for f, pq in floor_pq.groupby("method")})
    records = [r for name, pq in averaged.items()
               for r in metric_records(pq[[c for c in pq.columns if c not in ("run", "method")]], run=name,
                                       method=name, protocol=protocol, average=("micro", "macro"))
               if (r["metric"], r["k"]) in (("recall", 1), ("map", 10))]
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(f"\n{title}: micro and macro (mean over diagnosis groups) averages with 95% bootstrap CIs, "
              "floors included:")
        print(results_table(records).to_string())
    return averaged, records


def paired_macro(averaged: dict[str, pd.DataFrame], lead: str, title: str) -> dict[str, dict[str, list[float]]]:
    """``lead``'s paired macro differences against every other method and floor: [difference, ci_low, ci_high]."""
    diffs = {}
    if lead in averaged:
        print(f"\n{title}: paired differences {lead} - other, macro average (stratified bootstrap CI):")
        for name, pq in averaged.items():
            if name == lead:
                continue
            d = paired_difference(averaged[lead], pq, metrics=("recall@1", "map@10"), average="macro")
            diffs[name] = {m: [round(float(d.at[m, c]), 4) for c in ("difference", "ci_low", "ci_high")]
                           for m in d.index}
            print(f"  vs {name:22s} " + "   ".join(
                f"{m} {d.at[m, 'difference']:+.3f} [{d.at[m, 'ci_low']:+.3f}, {d.at[m, 'ci_high']:+.3f}]"
                for m in d.index))
    return diffs


if __name__ == "__main__":
    main()
