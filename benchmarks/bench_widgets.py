"""Benchmark: end-to-end search time of the query builder app on a 10,000-case index with the tiny model.

``QueryBuilder.search()`` = encode the composed query (reference image + text) + two-stage FAISS search +
rebuild the result grid (thumbnails cached after their first use).  Target: under 1 s per search (p95).

The index holds the tiny model's vectors of a small DermSynth set, replicated with noise to ``--n`` cases
(thumbnails point at the real images).  Scenarios: a new text each time (the query is encoded every time),
with skin-type filters, and a control change only (k / alpha: the encoded query is reused).
Prints a table and, last, one JSON line.

    python benchmarks/bench_widgets.py [--n 10000] [--searches 20] [--kind flat] [--k 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dermretr.data import load
from dermretr.data.synth import generate
from dermretr.data.vocab import CRITERIA
from dermretr.index import CaseIndex
from dermretr.models.backbones import create
from dermretr.models.retriever import Retriever
from dermretr.widgets import QueryBuilder


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _index(retriever: Retriever, n: int, n_real: int, image_size: int, kind: str, seed: int) -> CaseIndex:
    root = generate(Path(tempfile.mkdtemp(prefix="bench-widgets-")) / "ds", n_cases=n_real, seed=seed,
                    image_size=image_size, workers=1, progress=False)
    real = load("synthetic", root)
    t = retriever.encode_targets(real["image_path"].tolist(), batch_size=32)
    rng = np.random.default_rng(seed)
    rows = np.arange(n) % len(real)
    g = _unit(t["global"][rows] + 0.08 * rng.normal(size=(n, t["global"].shape[1])))
    local = None
    if t["local"] is not None:
        local = _unit(t["local"][rows] + 0.08 * rng.normal(size=(n, *t["local"].shape[1:])))
    cases = real.iloc[rows].reset_index(drop=True)
    cases["case_id"] = [f"b{i:06d}" for i in range(n)]
    cases["patient_id"] = [f"bp{i:06d}" for i in range(n)]
    return CaseIndex.from_embeddings({"global": g, "local": local, "alpha": t["alpha"]}, cases, kind=kind)


def _stats(times: list[float]) -> dict:
    a = np.asarray(times) * 1000
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "max_ms": round(float(a.max()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="cases in the index")
    parser.add_argument("--n-real", type=int, default=64, help="DermSynth images behind them")
    parser.add_argument("--searches", type=int, default=20, help="timed searches per scenario")
    parser.add_argument("--kind", default="flat", choices=["flat", "hnsw", "ivf", "ivfpq"])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    retriever = Retriever(create("dermretr-tiny", device="cpu", image_size=args.image_size), kind="full", n_masks=4)
    t0 = time.perf_counter()
    index = _index(retriever, args.n, args.n_real, args.image_size, args.kind, args.seed)
    build_s = time.perf_counter() - t0
    app = QueryBuilder(index, retriever, k=args.k, debounce=0)
    app.live.value = False  # every search below is an explicit, timed call
    load_before = os.getloadavg()

    first = index.cases["case_id"].iloc[0]
    app.select_case(first)
    t0 = time.perf_counter()
    app.search()  # thumbnails not cached yet
    cold_ms = round((time.perf_counter() - t0) * 1000, 1)

    # texts that differ every time: the query is encoded for each search
    changes = [(c, v) for c, values in CRITERIA.items() for v in values]
    rng = np.random.default_rng(args.seed)
    scenarios: dict[str, list[float]] = {"new text": [], "new text + skin type V-VI": [], "k/alpha only": []}
    for i in range(args.searches):
        app.k.value = args.k
        app.select_case(index.cases["case_id"].iloc[int(rng.integers(len(index)))])
        c, v = changes[i % len(changes)]
        app.criteria[c].value = v
        app.text.value = f"{app.text.value} ({i})"
        t0 = time.perf_counter()
        res = app.search()
        scenarios["new text"].append(time.perf_counter() - t0)
        assert len(res) == args.k and len(app.grid.children) == args.k, app.message.value
        app.skin_filter.value = (5, 6)
        app.text.value = f"{app.text.value}."
        t0 = time.perf_counter()
        res = app.search()
        scenarios["new text + skin type V-VI"].append(time.perf_counter() - t0)
        assert set(res["fitzpatrick"]) <= {5, 6}, app.message.value
        app.skin_filter.value = ()
        app.k.value = args.k - 1 if i % 2 else args.k
        app.alpha.value = round(float(rng.uniform(0, 1)), 2)
        t0 = time.perf_counter()
        app.search()
        scenarios["k/alpha only"].append(time.perf_counter() - t0)
    load_after = os.getloadavg()

    rows = [{"scenario": name, **_stats(times)} for name, times in scenarios.items()]
    print(f"index: {args.n} cases ({args.kind}, dim {index.manifest['dim']}, {index.manifest['n_masks']} local "
          f"vectors), built in {build_s:.1f} s; tiny model at {args.image_size} px; torch threads "
          f"{torch.get_num_threads()}; load average {load_before[0]:.2f} -> {load_after[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    print(f"first search (thumbnails not cached): {cold_ms} ms")
    print(f"{'scenario':<28} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for r in rows:
        print(f"{r['scenario']:<28} {r['n']:>4} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['max_ms']:>8}")
    ok = all(r["p95_ms"] < 1000 for r in rows)
    print(f"p95 under 1 s: {'OK' if ok else 'NOT MET'}")
    print(json.dumps({"benchmark": "query_builder_search", "n_cases": args.n, "kind": args.kind, "k": args.k,
                      "image_size": args.image_size, "cold_first_search_ms": cold_ms, "scenarios": rows,
                      "torch_threads": torch.get_num_threads(), "load_average": [round(load_before[0], 2),
                                                                                round(load_after[0], 2)],
                      "cpus": os.cpu_count(), "target_ms": 1000, "ok": ok}))


if __name__ == "__main__":
    main()
