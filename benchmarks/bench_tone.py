"""Benchmark: skin-tone composed queries ("this condition, on darker skin") on DermSynth.

Generates DermSynth (default 1,000 cases at 128 px), trains the composed model and its image-only and
text-only baselines (optionally late_fusion and clip4cir) with the same settings and seeds (training
uses the tone triplets DermSynth's Fitzpatrick labels allow), and evaluates the tone protocol on the
held-out test split (:func:`dermretr.evaluate.tone_search`): query = test image + a phrase naming
another Fitzpatrick range + its findings ("on Fitzpatrick type V-VI skin: irregular streaks"), one
query per test case and other range with a relevant gallery case; relevant = train+val cases of the
query's diagnosis group with a skin type in the target range; the query's patient excluded.

Recall@1 and mAP@10, micro (mean over queries) and macro (mean over target ranges), come with 95%
bootstrap CIs of the per-query metric averaged over the training seeds, beside the floors (no model,
expected values over equal scores: random order; filter_only, the target range first, diagnosis ignored;
majority, the range first and its most common diagnosis group first; criteria_match, the range first and
then agreement of the annotated 7-point findings with the query case's), and the full model's paired
differences (bootstrap CI, sign-flip p) against every method and floor.  Every trained kind is also scored
with the findings match added (``KIND+findings``: its scores plus w times the criteria-match agreement of the
query's findings with each gallery case's, :func:`dermretr.evaluate.hybrid_scores`, w chosen per seed on the
val cases' tone queries against the train cases, :func:`dermretr.evaluate.choose_findings_weight`), reported as
its own method, with the same paired differences for full+findings.

Target: full beats image-only, text-only and every floor on macro mAP@10 with a paired CI above 0.
Prints a table and one JSON line.

    python benchmarks/bench_tone.py [--n-cases 1000] [--epochs 15] [--seeds 0 1 2] [--kinds full image text]
        [--scale fitzpatrick|monk|ita] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from dermretr.data import load
from dermretr.data.synth import generate
from dermretr.evaluate import (
    choose_findings_weight,
    findings_columns,
    hybrid_scores,
    metric_records,
    paired_difference,
    results_table,
    summarize_metrics,
    tone_queries,
    tone_scores,
    tone_scores_search,
    with_tone_estimate,
)
from dermretr.floors import evaluate_floors
from dermretr.models.embeddings import EncodingCache
from dermretr.models.retriever import KINDS, Retriever
from dermretr.train import TrainConfig, fit

METRICS = ("recall@1", "map@10")
BY = "target_range"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cases", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's default")
    parser.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's default")
    parser.add_argument("--kinds", nargs="+", default=["full", "image", "text"], choices=KINDS,
                        help="retriever kinds to train (add late_fusion, clip4cir for more baselines)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (data: --data-seed)")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--scale", choices=("fitzpatrick", "monk", "ita"), default="fitzpatrick",
                        help="skin-tone scale of the queries (ita: estimated from the pixels)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="keep data and runs here (default: a temp dir)")
    parser.add_argument("--no-tone-triplets", action="store_true",
                        help="ablation: train without the tone triplets (off by default in dermretr train, on here)")
    args = parser.parse_args()
    tmp = Path(args.out or tempfile.mkdtemp(prefix="dermretr-bench-tone-"))
    root = tmp / "dermsynth"
    if not (root / "meta" / "meta.csv").is_file():
        generate(root, n_cases=args.n_cases, seed=args.data_seed, image_size=args.image_size, progress=False)
    cases = with_tone_estimate(load("synthetic", root), args.scale)
    queries = tone_queries(cases, scale=args.scale)  # the test split's, the same for every kind and seed
    with_findings = bool(findings_columns(cases))
    rows = []
    per_query: dict[str, list[pd.DataFrame]] = {}
    weights: dict[str, list[float]] = {}  # findings weights chosen on val, per kind
    skipped = queries.skipped
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size)) if v}
    for seed in args.seeds:
        for kind in args.kinds:
            out = tmp / (f"run-{kind}" if len(args.seeds) == 1 else f"run-{kind}-seed{seed}")
            cfg = TrainConfig(data=f"synthetic:{root}", out=str(out), model=kind, image_size=args.image_size,
                              seed=seed, progress=False, device=args.device, **overrides,
                              tone_triplets=not args.no_tone_triplets,
                              resume=(out / "checkpoints" / "last.pt").is_file())  # a rerun (or bench_models' run
                                                                                    # in the same --out) continues
            start = time.perf_counter()
            result = fit(cfg)
            seconds = time.perf_counter() - start
            best = EncodingCache(Retriever.load(result.run_dir / "checkpoints" / "best.pt", device=args.device))
            s = tone_scores(best, queries)
            pq = tone_scores_search(queries, s, ks=(1, 5, 10))  # = tone_search
            per_query.setdefault(kind, []).append(pq)
            summary = summarize_metrics(pq)
            row = {"kind": kind, "seed": seed, "epochs": cfg.epochs, "train_s": round(seconds, 1),
                   "best_epoch": result.best["epoch"], "n_queries": summary["n_queries"],
                   **{m: round(summary[m], 4) for m in METRICS}}
            if with_findings:  # the findings match added, its weight chosen on the val cases' tone queries
                weight, _ = choose_findings_weight(best, cases, "val", ("train",), protocol="tone",
                                                   tone_scale=args.scale)
                weights.setdefault(kind, []).append(weight)
                hybrid = tone_scores_search(queries, hybrid_scores(queries.rows, queries.gallery, s, weight),
                                            ks=(1, 5, 10))
                per_query.setdefault(f"{kind}+findings", []).append(hybrid)
                fused = summarize_metrics(hybrid)
                row.update({"findings_weight": weight, **{f"{m} +findings": round(fused[m], 4) for m in METRICS}})
            rows.append(row)
            print(json.dumps(row), flush=True)

    # per query, averaged over seeds (the same queries for every seed: the data is fixed)
    averaged = {k: v[0].assign(**{m: sum(f[m].to_numpy() for f in v) / len(v) for m in METRICS})
                for k, v in per_query.items()}
    floor_pq, _ = evaluate_floors(cases, protocol="tone", tone_scale=args.scale, split="test", n_boot=0)
    averaged.update({f"floor:{f}": pq.drop(columns=["run", "method", "protocol"]).reset_index(drop=True)
                     for f, pq in floor_pq.groupby("method")})
    records = [r for name, pq in averaged.items()
               for r in metric_records(pq, run=name, method=name, protocol="tone", n_boot=args.n_boot, by=BY,
                                       average=("micro", "macro"))
               if (r["metric"], r["k"]) in (("recall", 1), ("map", 10))]
    n_queries = len(next(iter(averaged.values())))
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(f"\nDermSynth {args.n_cases} cases, {args.image_size} px, tone protocol ({args.scale}), test split: "
              f"{n_queries} queries; skipped {skipped.get('no_relevant')} (case, range) pairs without a relevant "
              f"gallery case and {skipped.get('unknown_tone')} cases without a skin tone")
        print(f"Mean over training seeds {args.seeds}; micro = mean over queries, macro = mean over target ranges "
              "(95% bootstrap CIs; floors: no model, expected values)")
        print(results_table(records).to_string())
    if weights:
        print("KIND+findings: the kind's scores plus w x the criteria-match agreement, w chosen on the val cases' "
              "tone queries (per seed): " + "; ".join(f"{k} {v}" for k, v in weights.items()))
    diffs: dict[str, dict] = {}  # lead -> other -> average -> metric -> [difference, ci_low, ci_high, p]
    for lead in ("full", "full+findings"):
        if lead not in averaged:
            continue
        print(f"\nPaired differences {lead} - other (same queries; bootstrap CI, stratified for macro; sign-flip p):")
        for name, pq in averaged.items():
            if name == lead:
                continue
            for average in ("micro", "macro"):
                d = paired_difference(averaged[lead], pq, metrics=METRICS, n_boot=args.n_boot, average=average,
                                      by=BY)
                diffs.setdefault(lead, {}).setdefault(name, {})[average] = {
                    m: [round(float(d.at[m, c]), 4) for c in ("difference", "ci_low", "ci_high", "p_value")]
                    for m in d.index}
                print(f"  vs {name:20s} {average}  " + "   ".join(
                    f"{m} {d.at[m, 'difference']:+.3f} [{d.at[m, 'ci_low']:+.3f}, {d.at[m, 'ci_high']:+.3f}]"
                    f" p={d.at[m, 'p_value']:.3f}" for m in d.index))
    checks = {f"{lead}>{name} macro map@10 (paired CI above 0)": bool(against[name]["macro"]["map@10"][1] > 0)
              for lead, against in diffs.items()
              for name in ("image", "text", "image+findings", "text+findings", "floor:filter_only", "floor:majority",
                           "floor:criteria_match")
              if name in against}
    for k, v in checks.items():
        print(f"{k}: {'OK' if v else 'NOT MET'}")
    print(json.dumps({"benchmark": "tone_dermsynth", "n_cases": args.n_cases, "scale": args.scale,
                      "seeds": args.seeds, "n_queries": n_queries, "skipped": skipped, "rows": rows,
                      "records": {f"{r['run']} {r['average']} {r['metric']}@{r['k']}":
                                  [round(r[c], 4) if r[c] is not None else None
                                   for c in ("value", "ci_low", "ci_high")] for r in records},
                      "findings_weights": weights, "paired_differences": diffs, "checks": checks}))


if __name__ == "__main__":
    main()
