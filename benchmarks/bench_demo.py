"""Benchmark: ``dermretr demo`` from nothing, timed: wall clock, CPU time, each step and each model trained.

Runs :func:`dermretr.demo.run_demo` in a new temporary folder (the DermSynth set is generated and every
model, the skin-type-balanced retrain included, is trained: nothing is reused), as ``dermretr demo``
does.  Prints a table (seconds per step, seconds and epochs per model trained) and, last, one JSON line.
The machine's load average before and after is printed too: on a busy machine the same run takes
several times longer, which is why the demo prints a measured *range*
(``dermretr.demo.MEASURED_SECONDS``; record new measurements there, with their source).

CPU time is the process's and its children's user + system time (``resource.getrusage``), so the
CPU-minutes of work are measured, not inferred from the wall clock and the core count.

    python benchmarks/bench_demo.py --fast          # 160 cases, 64 px, 3 epochs; minutes on 2 cores
    python benchmarks/bench_demo.py                 # the default demo: 500 cases, 96 px, 12 epochs
    python benchmarks/bench_demo.py --released      # the released model's demo (nothing trained)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from dermretr.demo import MEASURED_SECONDS, demo_mode, demo_settings, run_demo, trained_models


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _history(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--fast", action="store_true", help="the fast demo (dermretr demo --fast)")
    which.add_argument("--released", action="store_true", help="the released model's demo (nothing trained)")
    parser.add_argument("--workers", type=int, default=None, help="generation processes (default: the demo's)")
    args = parser.parse_args(argv)

    import torch

    settings = demo_settings(fast=args.fast, released=args.released, workers=args.workers)
    mode = demo_mode(settings)
    load_before = os.getloadavg()
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dermretr-bench-demo-") as tmp:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        result = run_demo(Path(tmp) / "demo", settings, progress=False, log=lines.append)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        models = {}
        for name in trained_models(settings):
            hist = _history(result.out / "runs" / name)
            models[name] = {"epochs": len(hist), "train_seconds": round(sum(h.get("train_seconds", 0.0)
                                                                            for h in hist), 1)}
        report_bytes = result.report.stat().st_size
    load_after = os.getloadavg()

    print(f"dermretr demo ({mode}): {settings.n_cases} cases, {settings.image_size} px, {settings.epochs} epochs; "
          f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch threads "
          f"{torch.get_num_threads()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"\n{'step':<20} {'seconds':>9}")
    for step, sec in result.seconds.items():
        print(f"{step:<20} {sec:>9.1f}")
    if models:
        print(f"\n{'model trained':<20} {'epochs':>6} {'train s':>9}")
        for name, m in models.items():
            print(f"{name:<20} {m['epochs']:>6} {m['train_seconds']:>9.1f}")
    recorded = MEASURED_SECONDS.get(mode)
    print(f"\ntotal: {wall:.0f} s wall ({wall / 60:.1f} min), {cpu:.0f} s CPU ({cpu / 60:.1f} CPU-minutes); "
          f"report {report_bytes / 1e6:.1f} MB (figures embedded)")
    if recorded:
        low, high = recorded["range_s"]
        where = "inside" if low <= wall <= high else "OUTSIDE"
        print(f"recorded range for {mode}: {low:.0f}-{high:.0f} s; this run is {where} it"
              + ("" if where == "inside" else ": add it to dermretr.demo.MEASURED_SECONDS with its source"))
    print(json.dumps({"benchmark": "demo", "mode": mode, "n_cases": settings.n_cases,
                      "image_size": settings.image_size, "epochs": settings.epochs,
                      "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                      "load_avg_before": round(load_before[0], 2), "load_avg_after": round(load_after[0], 2),
                      "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                      "steps": {k: round(v, 1) for k, v in result.seconds.items()}, "models": models,
                      "report_bytes": report_bytes}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
