"""Benchmark: UMAP map of 10,000 case embeddings (d=128): fit, transform of new queries, figure.

Target: fit + transform under 60 s on this CPU.  The first fit in a process
includes numba's compilation (``cold``); a second fit with another seed shows
the steady state (``warm``).  Also checks that the same seed gives the same map.
Prints a table and, last, one JSON line.

    PYTHONPATH=. python benchmarks/bench_umap.py [--n 10000] [--dim 128] [--queries 20]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

from dermretr.viz import clear_map_cache, fit_map, umap_map


def _data(n: int, dim: int, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    groups = np.array(["MEL", "NEV", "BCC", "SK", "MISC"])
    labels = rng.integers(0, len(groups), n)
    centers = rng.normal(size=(len(groups), dim)) * 0.6
    x = centers[labels] + rng.normal(size=(n, dim)) * 0.5
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cases = pd.DataFrame({"case_id": [f"c{i:05d}" for i in range(n)], "diagnosis_group": groups[labels],
                          "fitzpatrick": rng.integers(1, 7, n), "split": rng.choice(["train", "valid", "test"], n)})
    return x, cases


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    load_start = os.getloadavg()[0]
    x, cases = _data(args.n, args.dim, args.seed)
    queries = x[: args.queries] + 0.01
    rows = []
    maps = {}
    for label, seed in (("cold (incl. numba compile)", args.seed), ("warm", args.seed + 1)):
        t0 = time.perf_counter()
        m = fit_map(x, seed=seed, cache=False)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        placed = m.transform(queries)
        transform_s = time.perf_counter() - t1
        maps[seed] = m
        rows.append({"run": label, "n": args.n, "dim": args.dim, "fit_s": round(fit_s, 2),
                     f"transform_{args.queries}_s": round(transform_s, 3),
                     "total_s": round(fit_s + transform_s, 2), "ok": fit_s + transform_s < 60})
    assert placed.shape == (args.queries, 2)
    t0 = time.perf_counter()
    again = fit_map(x, seed=args.seed, cache=False)
    deterministic = bool(np.array_equal(again.embedding, maps[args.seed].embedding))
    refit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fig = umap_map(x, cases, color_by="diagnosis_group", reducer=maps[args.seed], queries=queries[:3],
                   results=[[f"c{i:05d}" for i in range(q, q + 5)] for q in range(3)])
    fig.savefig(os.devnull, format="png", dpi=80)
    figure_s = time.perf_counter() - t0
    clear_map_cache()

    print(f"{'run':<28} {'n':>6} {'dim':>4} {'fit s':>7} {'transform s':>12} {'total s':>8}  < 60 s")
    for r in rows:
        print(f"{r['run']:<28} {r['n']:>6} {r['dim']:>4} {r['fit_s']:>7} {r[f'transform_{args.queries}_s']:>12} "
              f"{r['total_s']:>8}  {'OK' if r['ok'] else 'NOT MET'}")
    print(f"same seed, same map: {deterministic} (refit {refit_s:.1f} s); figure with queries drawn and saved in "
          f"{figure_s:.2f} s; load average {load_start:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(json.dumps({"benchmark": "umap_map", "runs": rows, "deterministic": deterministic,
                      "refit_s": round(refit_s, 2), "figure_s": round(figure_s, 2), "target_s": 60,
                      "ok": all(r["ok"] for r in rows) and deterministic, "cpus": os.cpu_count(),
                      "load_avg_start": load_start, "load_avg_end": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
