"""Benchmark: training time and retrieval quality of the composed model and its baselines on DermSynth.

Generates DermSynth (default 1,000 cases at 128 px), trains every retriever kind with the same
settings, and evaluates the case-search protocol on the held-out test split (query: test image +
its descriptor text; relevant: gallery cases of the same diagnosis group; same patient excluded),
plus the modification protocol on DermSynth's triplets (exact target, Recall@K).
Recall@1 and mAP@10 come with 95% bootstrap CIs over queries, and the full model with paired
differences against each baseline.  Targets: the tiny composed model trains in under 5 minutes on
2 CPU cores; full beats image-only and text-only on mAP@10 and Recall@1; full >= global-only.
Prints a table and one JSON line.

    python benchmarks/bench_models.py [--n-cases 1000] [--epochs 10] [--kinds full global image text]
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
from dermretr.evaluate import bootstrap_ci, case_search, modify_search
from dermretr.models.retriever import KINDS
from dermretr.train import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cases", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's default")
    parser.add_argument("--kinds", nargs="+", default=["full", "global", "clip4cir", "late_fusion", "image", "text"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="keep data and runs here (default: a temp dir)")
    args = parser.parse_args()
    bad = set(args.kinds) - set(KINDS)
    if bad:
        parser.error(f"unknown kinds {sorted(bad)}")

    tmp = Path(args.out or tempfile.mkdtemp(prefix="dermretr-bench-"))
    root = tmp / "dermsynth"
    if not (root / "meta" / "meta.csv").is_file():
        generate(root, n_cases=args.n_cases, seed=args.seed, image_size=args.image_size, progress=False)
    cases = load("synthetic", root)
    rows = []
    per_query = {}
    for kind in args.kinds:
        cfg = TrainConfig(data=f"synthetic:{root}", out=str(tmp / f"run-{kind}"), model=kind,
                          image_size=args.image_size, seed=args.seed, progress=False, device="cpu")
        if args.epochs:
            cfg.epochs = args.epochs
        start = time.perf_counter()
        result = fit(cfg)
        seconds = time.perf_counter() - start
        from dermretr.models.retriever import Retriever

        best = Retriever.load(Path(cfg.out) / "checkpoints" / "best.pt", device="cpu")
        pq, summary = case_search(best, cases, query_split="test")
        per_query[kind] = pq
        row = {"kind": kind, "epochs": cfg.epochs, "train_s": round(seconds, 1), "best_epoch": result.best["epoch"],
               "alpha": round(best.alpha, 3), **{k: round(v, 4) for k, v in summary.items() if k in (
                   "recall@1", "recall@5", "recall@10", "map@10", "ndcg@10", "mrr", "n_queries")}}
        for m in ("recall@1", "map@10"):
            low, high = bootstrap_ci(pq[m].to_numpy(), seed=args.seed)
            row[f"{m}_ci"] = f"[{low:.3f}, {high:.3f}]"
        # modification protocol: DermSynth triplets with a test reference, exact target, gallery = all cases
        _, mod = modify_search(best, cases, root, split="test", ks=(1, 5, 10))
        row.update({f"mod_{k}": round(v, 4) for k, v in mod.items() if k.startswith("recall") or k == "n_queries"})
        rows.append(row)
        print(json.dumps(row), flush=True)

    table = pd.DataFrame(rows).set_index("kind")
    with pd.option_context("display.width", 160):
        print(f"\nDermSynth {args.n_cases} cases, {args.image_size} px, test split (case protocol):")
        print(table.to_string())
    if "full" in per_query:
        print("\nPaired differences full - other (same test queries), 95% bootstrap CI:")
        for kind, pq in per_query.items():
            if kind == "full":
                continue
            d = per_query["full"][["recall@1", "map@10"]].to_numpy() - pq[["recall@1", "map@10"]].to_numpy()
            low, high = bootstrap_ci(d, seed=args.seed)
            print(f"  vs {kind:12s} recall@1 {d[:, 0].mean():+.3f} [{low[0]:+.3f}, {high[0]:+.3f}]   "
                  f"map@10 {d[:, 1].mean():+.3f} [{low[1]:+.3f}, {high[1]:+.3f}]")
    checks = {}
    if {"full", "image", "text"} <= set(table.index):
        for m in ("map@10", "recall@1"):
            checks[f"full>image {m}"] = bool(table.at["full", m] > table.at["image", m])
            checks[f"full>text {m}"] = bool(table.at["full", m] > table.at["text", m])
    if {"full", "global"} <= set(table.index):
        checks["full>=global map@10"] = bool(table.at["full", "map@10"] >= table.at["global", "map@10"])
    if "full" in table.index:
        checks["full trains < 300 s"] = bool(table.at["full", "train_s"] < 300)
    for k, v in checks.items():
        print(f"{k}: {'OK' if v else 'NOT MET'}")
    print(json.dumps({"benchmark": "models_dermsynth", "n_cases": args.n_cases, "rows": rows, "checks": checks}))


if __name__ == "__main__":
    main()
