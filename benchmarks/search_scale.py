"""Benchmark: two-stage case search (FAISS top-N + exact convex re-ranking) from 10k to 1M cases.

Clustered synthetic target vectors stand in for an encoded database (unit global vectors of dimension D,
M local vectors per case stored as float16; queries are noisy copies of database cases), so no model
or images are needed and image encoding is excluded from every time.  For each size, dimension and
index kind (flat = exact IndexFlatIP, hnsw = IndexHNSWFlat M=32 efConstruction=200, ivf = IVF-Flat,
ivfpq = IVF-PQ with 8-bit codes) it reports:

* build time; memory: FAISS index bytes (what must live in RAM), global and float16 local vectors
  (``global.npy``/``local.npy``, memory-mapped from disk after ``CaseIndex.load``; a query reads only
  its N candidate rows), and the process RSS growth during the build;
* p50/p95 latency of one query through ``CaseIndex.search_vectors`` (both stages and the result
  DataFrame), and the p50 of each stage alone;
* recall@10 against exact search: brute-force numpy of the full convex score over every case;
  ``ann_recall`` is the first stage alone (FAISS top-N against the exact global top-N);
* a brute-force numpy baseline measured in the same run: one query's full convex score over all
  cases (global matrix product + float16 locals converted in chunks) and the global product alone;
* "recall lost as N shrinks": recall@10 for several re-rank pool sizes N.

Targets: at 100k cases HNSW p50 < 20 ms with recall@10 >= 0.95; at 1M cases the in-RAM index
< 4 GB.  The choice documented here: local vectors are float16 and memory-mapped, never resident
(1M x 4 x 512 x 2 B = 4 GB on disk), so RAM holds only the FAISS index over the global vectors
(flat 2 GB, HNSW ~2.3 GB at D=512); IVF-PQ shrinks that to ~0.1 GB when RAM is tighter, and the exact
re-ranking of its N candidates (read from ``global.npy``) recovers most of the recall its
compressed codes lose - the ``ivfpq`` rows report how much.

Prints tables and, last, one JSON line.  Generating 1M x 512 takes ~6 GB (in 100k chunks); the
1M HNSW build takes minutes on 16 cores.

    python benchmarks/search_scale.py [--sizes 10000 100000 1000000] [--dims 256 512] [--queries 200]
                                      [--kinds flat hnsw ivf ivfpq] [--masks 4] [--threads T]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
import warnings

import faiss
import numpy as np
import pandas as pd

from dermretr.index import CaseIndex, IndexWarning
from dermretr.index._faiss import search_params
from dermretr.index._search import candidates, rerank

CHUNK = 100_000
SWEEP = (10, 20, 50, 100, 200, 500)


def _rss() -> int:
    """Resident set size of this process in bytes (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 0


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def make_data(n: int, d: int, m: int, n_queries: int, seed: int = 0, local_noise: float = 0.5,
              query_noise: float = 0.5) -> tuple[dict, dict, pd.DataFrame]:
    """Clustered database vectors (float32 global, float16 local), queries near database cases, a case table.

    Noise vectors have about unit norm whatever ``d``: a case is ``unit(center + 0.9 e)`` (about 500 cases per
    cluster), its local vectors ``unit(global + local_noise e_m)``; a query copies a random case with
    ``query_noise`` on its global and on each local vector.  ``local_noise`` sets how much the local score
    says beyond the global one (0: nothing; larger: the two-stage search needs a larger N).
    """
    rng = np.random.default_rng(seed)
    scale = 1 / np.sqrt(d)
    n_clusters = max(16, n // 500)
    centers = _unit(rng.standard_normal((n_clusters, d), dtype=np.float32))
    g = np.empty((n, d), np.float32)
    local = np.empty((n, m, d), np.float16)
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        r = np.random.default_rng((seed, a))
        labels = r.integers(0, n_clusters, b - a)
        g[a:b] = _unit(centers[labels] + 0.9 * scale * r.standard_normal((b - a, d), dtype=np.float32))
        local[a:b] = _unit(g[a:b, None, :] + local_noise * scale * r.standard_normal((b - a, m, d), dtype=np.float32))
    rows = rng.integers(0, n, n_queries)
    queries = {
        "global": _unit(g[rows] + query_noise * scale * rng.standard_normal((n_queries, d), dtype=np.float32)),
        "local": _unit(local[rows].astype(np.float32)
                       + query_noise * scale * rng.standard_normal((n_queries, m, d), dtype=np.float32)),
    }
    i = np.arange(n)
    cases = pd.DataFrame({"case_id": pd.Series(i).map("c{:07d}".format),
                          "patient_id": pd.Series(i // 2).map("p{:07d}".format),
                          "image_path": "none.jpg", "diagnosis": "lesion",
                          "diagnosis_group": np.array(["MEL", "NEV", "BCC", "SK", "MISC"])[i % 5],
                          "fitzpatrick": i % 6 + 1, "split": "train", "source": "bench"})
    return {"global": g, "local": local, "alpha": 0.6}, queries, cases


def score_correlation(targets: dict, queries: dict, top: int = 1000) -> float:
    """Pearson correlation of s_global and s_local over each query's exact global top-``top`` (first chunk)."""
    g = targets["global"][:CHUNK]
    loc = targets["local"][:CHUNK]
    top = min(top, len(g))
    sg = queries["global"] @ g.T
    rows = np.argpartition(-sg, top - 1, axis=1)[:, :top]
    m = loc.shape[1]
    sl = np.einsum("qmd,qtmd->qt", queries["local"], loc[rows].astype(np.float32)) / m
    return float(np.corrcoef(np.take_along_axis(sg, rows, 1).ravel(), sl.ravel())[0, 1])


def exact_topk(targets: dict, queries: dict, k: int, alpha: float) -> np.ndarray:
    """Brute-force full convex score of every case (chunked): the exact top-k ids of each query."""
    g, local = targets["global"], targets["local"]
    qg, ql = queries["global"], queries["local"]
    q, m = len(qg), ql.shape[1]
    qlf = ql.reshape(q, -1)
    best_s = np.full((q, 0), -np.inf, np.float32)
    best_i = np.zeros((q, 0), np.int64)
    for a in range(0, len(g), CHUNK):
        b = min(len(g), a + CHUNK)
        s = (1 - alpha) * (qg @ g[a:b].T) + alpha * (qlf @ local[a:b].reshape(b - a, -1).astype(np.float32).T) / m
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, np.broadcast_to(np.arange(a, b), s.shape)], axis=1)
        top = np.argpartition(-s_all, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
    return best_i


def exact_global_topn(g: np.ndarray, qg: np.ndarray, n_top: int) -> np.ndarray:
    s = qg @ g.T if len(g) <= CHUNK else None
    if s is None:
        best_s = np.full((len(qg), 0), -np.inf, np.float32)
        best_i = np.zeros((len(qg), 0), np.int64)
        for a in range(0, len(g), CHUNK):
            b = min(len(g), a + CHUNK)
            s_all = np.concatenate([best_s, qg @ g[a:b].T], axis=1)
            i_all = np.concatenate([best_i, np.broadcast_to(np.arange(a, b), (len(qg), b - a))], axis=1)
            top = np.argpartition(-s_all, n_top - 1, axis=1)[:, :n_top]
            best_s, best_i = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
        return best_i
    return np.argpartition(-s, n_top - 1, axis=1)[:, :n_top]


def brute_force_one(targets: dict, qg: np.ndarray, ql: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """What a plain numpy user would do for one query: score everything, keep the top k."""
    g, local = targets["global"], targets["local"]
    m = ql.shape[1]
    s = (1 - alpha) * (g @ qg[0])
    qlf = ql.reshape(-1)
    for a in range(0, len(g), CHUNK):
        b = min(len(g), a + CHUNK)
        s[a:b] += alpha * (local[a:b].reshape(b - a, -1).astype(np.float32) @ qlf) / m
    return np.argpartition(-s, k - 1)[:k]


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want)]))


def _pct(times: list[float], p: float) -> float:
    return round(float(np.percentile(times, p)) * 1000, 3)


def bench_kind(kind: str, targets: dict, queries: dict, cases: pd.DataFrame, want: np.ndarray,
               want_global: np.ndarray, args) -> tuple[dict, list[dict]]:
    k, n_cand = args.k, args.rerank
    gc.collect()
    rss0 = _rss()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IndexWarning)
        options = {"ef_search": args.ef_search, "ef_construction": args.ef_construction} if kind == "hnsw" else {}
        if kind in ("ivf", "ivfpq"):
            options["nprobe"] = args.nprobe
        index = CaseIndex.from_embeddings(targets, cases, kind=kind, rerank=n_cand, **options)
    build_s = time.perf_counter() - t0
    rss_build = _rss() - rss0
    index_bytes = int(faiss.serialize_index(index.faiss_index).nbytes)
    tmp = None
    if args.from_disk:
        tmp = tempfile.mkdtemp(prefix="dermretr-bench-")
        index.save(os.path.join(tmp, "idx"))
        del index
        gc.collect()
        index = CaseIndex.load(os.path.join(tmp, "idx"))
    qg, ql = queries["global"], queries["local"]
    alpha = index.alpha
    # warm-up, then one query at a time
    index.search_vectors({"global": qg[:1], "local": ql[:1]}, k=k)
    total, stage1, stage2 = [], [], []
    got = np.empty((len(qg), k), np.int64)
    for i in range(len(qg)):
        q1 = {"global": qg[i:i + 1], "local": ql[i:i + 1]}
        t = time.perf_counter()
        hits = index.search_vectors(q1, k=k)
        total.append(time.perf_counter() - t)
        got[i] = hits["case_id"].str[1:].astype(np.int64).to_numpy()
        t = time.perf_counter()
        cand = candidates(index, qg[i:i + 1], min(max(n_cand, k), len(index)), k)
        stage1.append(time.perf_counter() - t)
        t = time.perf_counter()
        rerank(index.global_vectors, index.local_vectors, qg[i:i + 1], ql[i:i + 1], cand, alpha, k)
        stage2.append(time.perf_counter() - t)
    # first stage alone against the exact global top-N
    params = search_params(index.faiss_index, index.kind, n_cand, index.ef_search, index.nprobe)
    _, cand_all = index.faiss_index.search(qg, n_cand, params=params)
    ann = _recall(cand_all, want_global)
    n, d = targets["global"].shape
    row = {"n": n, "dim": d, "kind": kind, "build_s": round(build_s, 2),
           "index_mb": round(index_bytes / 2**20, 1),
           "global_mb": round(targets["global"].nbytes / 2**20, 1),
           "local_mb": round(targets["local"].nbytes / 2**20, 1),
           "rss_build_mb": round(rss_build / 2**20, 1),
           "p50_ms": _pct(total, 50), "p95_ms": _pct(total, 95),
           "stage1_p50_ms": _pct(stage1, 50), "rerank_p50_ms": _pct(stage2, 50),
           "recall@10": round(_recall(got, want), 4), "ann_recall": round(ann, 4),
           "rerank": n_cand, "from_disk": bool(args.from_disk)}
    # recall lost as the re-rank pool N shrinks (batched searches, recall only)
    sweep = []
    for pool in args.sweep:
        if pool > n:
            continue
        index.rerank = pool
        hits = index.search_vectors(queries, k=k)
        ids = hits["case_id"].str[1:].astype(np.int64).to_numpy().reshape(len(qg), -1)
        sweep.append({"n": n, "dim": d, "kind": kind, "N": pool, "recall@10": round(_recall(ids, want), 4)})
    del index
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    gc.collect()
    return row, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--queries", type=int, default=200, help="queries timed one at a time (default: 200)")
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf", "ivfpq"])
    parser.add_argument("--masks", type=int, default=4, help="local vectors per case M (default: 4)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rerank", type=int, default=100, help="re-ranked candidates N (default: 100)")
    parser.add_argument("--sweep", type=int, nargs="+", default=list(SWEEP), help="N values of the recall table")
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--nprobe", type=int, default=None, help="IVF lists probed (default: nlist / 8)")
    parser.add_argument("--brute-queries", type=int, default=10, help="queries timed for the brute-force baseline")
    parser.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: FAISS's)")
    parser.add_argument("--from-disk", action="store_true",
                        help="save and re-load each index (memory-mapped vectors) before timing searches")
    parser.add_argument("--local-noise", type=float, default=0.5,
                        help="how much local vectors differ from their global one (default: 0.5)")
    parser.add_argument("--query-noise", type=float, default=0.5, help="query perturbation (default: 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    rows, sweeps, baselines = [], [], []
    for d in args.dims:
        for n in args.sizes:
            t0 = time.perf_counter()
            targets, queries, cases = make_data(n, d, args.masks, args.queries, seed=args.seed,
                                                local_noise=args.local_noise, query_noise=args.query_noise)
            gen_s = time.perf_counter() - t0
            corr = score_correlation(targets, queries)
            t0 = time.perf_counter()
            want = exact_topk(targets, queries, args.k, targets["alpha"])
            want_global = exact_global_topn(targets["global"], queries["global"], min(args.rerank, n))
            truth_s = time.perf_counter() - t0
            bq = min(args.brute_queries, args.queries)
            full, glob = [], []
            for i in range(bq):
                t = time.perf_counter()
                brute_force_one(targets, queries["global"][i:i + 1], queries["local"][i:i + 1], args.k,
                                targets["alpha"])
                full.append(time.perf_counter() - t)
                t = time.perf_counter()
                s = targets["global"] @ queries["global"][i]
                np.argpartition(-s, args.k - 1)[:args.k]
                glob.append(time.perf_counter() - t)
            base = {"n": n, "dim": d, "brute_full_p50_ms": _pct(full, 50), "brute_global_p50_ms": _pct(glob, 50),
                    "generate_s": round(gen_s, 1), "ground_truth_s": round(truth_s, 1),
                    "corr_global_local_top1000": round(corr, 3)}
            baselines.append(base)
            print(f"n={n} dim={d}: data {gen_s:.1f} s, exact ground truth {truth_s:.1f} s, brute force one query "
                  f"{base['brute_full_p50_ms']} ms (global only {base['brute_global_p50_ms']} ms); "
                  f"corr(s_global, s_local) "
                  f"over each query's global top-1000 = {corr:.3f}", flush=True)
            for kind in args.kinds:
                row, sweep = bench_kind(kind, targets, queries, cases, want, want_global, args)
                row["brute_full_p50_ms"] = base["brute_full_p50_ms"]
                row["speedup_vs_brute"] = round(base["brute_full_p50_ms"] / max(row["p50_ms"], 1e-6), 1)
                row["rerank_vs_brute"] = round(row["rerank_p50_ms"] / max(base["brute_full_p50_ms"], 1e-6), 4)
                rows.append(row)
                sweeps += sweep
                print(f"  {kind:<6} build {row['build_s']:>7.2f} s  p50 {row['p50_ms']:>8.3f} ms  "
                      f"recall@10 {row['recall@10']:.4f}", flush=True)
            del targets, queries, cases
            gc.collect()

    print()
    header = (f"{'n':>9} {'dim':>4} {'kind':<6} {'build s':>8} {'index MB':>9} {'global MB':>9} {'local16 MB':>10} "
              f"{'RSS+ MB':>8} {'p50 ms':>8} {'p95 ms':>8} {'stage1':>8} {'rerank':>8} {'brute ms':>9} "
              f"{'recall@10':>9} {'ann rec':>7}")
    print(header)
    for r in rows:
        print(f"{r['n']:>9} {r['dim']:>4} {r['kind']:<6} {r['build_s']:>8} {r['index_mb']:>9} {r['global_mb']:>9} "
              f"{r['local_mb']:>10} {r['rss_build_mb']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} "
              f"{r['stage1_p50_ms']:>8} {r['rerank_p50_ms']:>8} {r['brute_full_p50_ms']:>9} "
              f"{r['recall@10']:>9} {r['ann_recall']:>7}")
    print("\nRecall@10 lost as the re-ranked pool N shrinks (exact = full convex score of every case)")
    table = pd.DataFrame(sweeps)
    if len(table):
        pivot = table.pivot_table(index=["n", "dim", "kind"], columns="N", values="recall@10", sort=False)
        print(pivot.to_string())

    checks = {}
    hnsw_100k = [r for r in rows if r["kind"] == "hnsw" and r["n"] == 100_000]
    if hnsw_100k:
        checks["hnsw_100k_p50_lt_20ms"] = all(r["p50_ms"] < 20 for r in hnsw_100k)
        checks["hnsw_100k_recall_ge_0.95"] = all(r["recall@10"] >= 0.95 for r in hnsw_100k)
    at_1m = [r for r in rows if r["n"] == 1_000_000]
    if at_1m:
        checks["1m_fits_lt_4gb"] = {f"{r['kind']}@{r['dim']}": r["index_mb"] < 4096 for r in at_1m}
        checks["1m_fits_lt_4gb_incl_locals"] = {f"{r['kind']}@{r['dim']}": r["index_mb"] + r["local_mb"] < 4096
                                                for r in at_1m}
    print("\nTargets:", json.dumps(checks) if checks else "(no 100k / 1M size in this run)")
    print(json.dumps({"benchmark": "search_scale", "k": args.k, "rerank": args.rerank, "masks": args.masks,
                      "queries": args.queries, "faiss_threads": faiss.omp_get_max_threads(), "runs": rows,
                      "baselines": baselines, "rerank_sweep": sweeps, "targets": checks}))


if __name__ == "__main__":
    main()
