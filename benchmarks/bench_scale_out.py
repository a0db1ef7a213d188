"""Benchmark: the cost of scaling out: Ray archive encoding and data-parallel (torchrun) training against one process.

On one machine neither engine can beat the plain path by much (2 cores here: the plain path already uses
both); what this measures is their overhead, so that a cluster run is not paid for twice.

* Encoding (``dermretr index``): images/s of the plain path (``CaseIndex.build``, one process, all cores)
  against the Ray engine (``encode_archive``, ``--engine ray``) with ``--workers`` actors (the cores shared
  out, or one GPU each when GPUs are present: then also images/s per GPU), both from the images on disk to a
  saved index folder, with the released model at 128 px.  The rate per extra image (from runs on half and
  all of the cases) leaves out what a run pays once, but is noisy when the fixed costs vary by more than the
  extra images take; the end-to-end rate includes them.  Target: Ray's end-to-end rate (its cluster's own
  start excluded) at least 0.8 times the plain one; both rates are reported.
* Training (``dermretr train``): optimiser steps/s of one process against ``torchrun --nproc_per_node P``
  (gloo on CPU with one thread per process; NCCL with one GPU per process when GPUs are present, then also
  images/s per GPU), from the epochs' ``train_seconds`` (validation and start-up excluded).  Reported, no
  target: on 2 cores two processes share the cores one process already used.

The median of ``--repeats`` runs.  Prints a table and, last, one JSON line.

    python benchmarks/bench_scale_out.py [--n-cases 800] [--image-size 128] [--batch-size 64] [--workers 2]
                                         [--shard-size 100] [--processes 2] [--epochs 1] [--repeats 3]
                                         [--skip-ray] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _run(cmd: list[str], env: dict | None = None) -> float:
    """Run a command; its wall time (a failure stops the benchmark with its error output)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench_scale_out: {' '.join(cmd[:6])} ... failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def _dermretr(*args: str) -> list[str]:
    """The ``dermretr`` command in this interpreter."""
    return [sys.executable, "-m", "dermretr", *args]


def encoding(data: str, tmp: Path, args) -> list[dict]:
    """Images/s of the plain build and of the Ray engine, end to end and per extra image (start-up excluded).

    Both paths run in this process from the images on disk to a saved index folder, on the first half of the
    cases and on all of them; the rate per extra image, ``(n2 - n1) / (t2 - t1)``, leaves out what a run
    pays once (loading the model, starting the actors), which the end-to-end rate includes.  Ray's local
    cluster is started once (its start-up is reported on its own).
    """
    import ray

    from dermretr.data import load
    from dermretr.index import CaseIndex, encode_archive

    cases = load(data)
    sizes = (len(cases) // 2, len(cases))
    model = "dermretr/dermsynth-tiny"

    def plain(n: int, out: Path) -> None:
        CaseIndex.build(model, cases.iloc[:n], batch_size=args.batch_size).save(out)

    gpus = torch.cuda.device_count()
    workers = gpus or args.workers

    def with_ray(n: int, out: Path) -> None:
        encode_archive(model, cases.iloc[:n], out, workers=workers, gpus_per_worker=1 if gpus else 0,
                       shard_size=args.shard_size, batch_size=args.batch_size)

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    cluster_start = time.perf_counter() - start
    rows = []
    try:
        for engine, run in (("plain", plain), ("ray", with_ray)):
            run(sizes[0], tmp / f"{engine}-warm-up")  # caches, imports, the actors' first start: not timed
            times = {n: statistics.median(_timed(run, n, tmp / f"{engine}-{n}-{i}") for i in range(args.repeats))
                     for n in sizes}
            extra = times[sizes[1]] - times[sizes[0]]
            if extra <= 0.05 * times[sizes[1]]:
                sys.exit(f"bench_scale_out: {engine}: {sizes[1]} cases took no longer than {sizes[0]} "
                         f"({times[sizes[1]]:.1f} s against {times[sizes[0]]:.1f} s): fixed costs hide the "
                         "per-image rate; use more cases (--n-cases)")
            marginal = (sizes[1] - sizes[0]) / extra
            rows.append({"part": "encode", "engine": engine, "workers": workers if engine == "ray" else 1,
                         "items": sizes[1], "seconds": round(times[sizes[1]], 2),
                         "end_to_end_per_s": round(sizes[1] / times[sizes[1]], 1), "per_s": round(marginal, 1),
                         "device": "cuda" if gpus else "cpu"})
            if gpus and engine == "ray":
                rows[-1]["images_per_s_per_gpu"] = round(marginal / gpus, 1)
    finally:
        ray.shutdown()
    rows[1]["ratio"] = round(rows[1]["per_s"] / rows[0]["per_s"], 3)
    rows[1]["end_to_end_ratio"] = round(rows[1]["end_to_end_per_s"] / rows[0]["end_to_end_per_s"], 3)
    rows[1]["cluster_start_seconds"] = round(cluster_start, 1)
    return rows


def _timed(fn, n: int, out: Path) -> float:
    start = time.perf_counter()
    fn(n, out)
    return time.perf_counter() - start


def training(data: str, tmp: Path, args) -> list[dict]:
    """Steps/s (and images/s) of one training process and of torchrun with P processes."""
    gpus = torch.cuda.device_count()
    procs = gpus if gpus > 1 else args.processes
    steps_per_epoch = _steps_per_epoch(data, args.batch_size)
    common = ["train", "--data", data, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
              "--image-size", str(args.image_size), "--no-progress"]
    rows = []
    for processes in (1, procs):
        rates = []
        for i in range(args.repeats):
            out = tmp / f"run-{processes}-{i}"
            if processes == 1:
                _run(_dermretr(*common, "--out", str(out)))
            else:
                _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                      str(processes), "-m", "dermretr", *common, "--out", str(out)],
                     env={"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))})
            history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            steps = steps_per_epoch * len(history)
            rates.append(steps / sum(h["train_seconds"] for h in history))
        steps_per_s = statistics.median(rates)
        row = {"part": "train", "engine": "plain" if processes == 1 else "torchrun", "workers": processes,
               "items": steps_per_epoch * args.epochs, "steps_per_s": round(steps_per_s, 3),
               "per_s": round(steps_per_s * args.batch_size, 1), "device": "cuda" if gpus else "cpu"}
        if gpus:
            row["images_per_s_per_gpu"] = round(steps_per_s * args.batch_size / processes, 1)
        rows.append(row)
    rows[1]["ratio"] = round(rows[1]["steps_per_s"] / rows[0]["steps_per_s"], 3)
    return rows


def _steps_per_epoch(data: str, batch_size: int) -> int:
    from dermretr.data import load

    cases = load(data)
    return int((cases["split"].astype(str) == "train").sum()) // batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="SOURCE:PATH (default: a fresh DermSynth set)")
    parser.add_argument("--n-cases", type=int, default=800)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="Ray encoding actors")
    parser.add_argument("--shard-size", type=int, default=100, help="cases per Ray shard")
    parser.add_argument("--processes", type=int, default=2, help="training processes on CPU (GPUs: one each)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-scale-out-") as name:
        tmp = Path(name)
        data = args.data
        if data is None:
            from dermretr.data.synth import generate

            root = generate(tmp / "ds", n_cases=args.n_cases, image_size=args.image_size, seed=7, progress=False)
            data = f"synthetic:{root}"
        rows = ([] if args.skip_ray else encoding(data, tmp, args)) + ([] if args.skip_train else
                                                                        training(data, tmp, args))

    # encode: per extra image (fixed costs left out) and end to end; train: images trained per second of steps
    print(f"{'part':<7} {'engine':<9} {'procs':>5} {'items':>6} {'per second':>22} {'end to end':>11} "
          f"{'ratio to plain':>15}")
    for r in rows:
        unit = "img/s" if r["part"] == "encode" else "img/s trained"
        print(f"{r['part']:<7} {r['engine']:<9} {r['workers']:>5} {r['items']:>6} {r['per_s']:>8} {unit:<13} "
              f"{r.get('end_to_end_per_s', ''):>11} {r.get('ratio', ''):>15}")
    for r in rows:
        if "cluster_start_seconds" in r:
            print(f"Ray end to end: {r['end_to_end_ratio']} of the plain rate (its local cluster started once, in "
                  f"{r['cluster_start_seconds']} s, not counted)")
    ray_ratio = next((r["end_to_end_ratio"] for r in rows if r["part"] == "encode" and "ratio" in r), None)
    ok = None if ray_ratio is None else ray_ratio >= 0.8
    if ray_ratio is not None:
        print(f"Ray encoding end to end at least 0.8 times the plain rate: {'OK' if ok else 'NOT MET'} "
              f"({ray_ratio})")
    print(json.dumps({"benchmark": "scale_out", "cpu_count": os.cpu_count(), "gpus": torch.cuda.device_count(),
                      "runs": rows, "target_ray_ratio": 0.8, "ok": ok}))


if __name__ == "__main__":
    main()
