"""Benchmark: DermSynth generation speed (target: 1,000 cases at 224 px in under 60 s on 2 cores).

Prints a table and, last, one JSON line.

    python benchmarks/bench_synth.py [--n-cases 1000] [--image-size 224] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from dermretr.data.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cases", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--target-s", type=float, default=60.0)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, args.workers or min(os.cpu_count() or 1, 8)}):
            n = args.n_cases if workers > 1 else max(100, args.n_cases // 5)  # single core: a sample
            start = time.perf_counter()
            root = generate(Path(tmp) / f"w{workers}", n_cases=n, image_size=args.image_size,
                            workers=workers, progress=False)
            elapsed = time.perf_counter() - start
            size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
            rows.append({"workers": workers, "n_cases": n, "image_size": args.image_size,
                         "seconds": round(elapsed, 2), "ms_per_case": round(1000 * elapsed / n, 2),
                         "cases_per_s": round(n / elapsed, 1), "disk_mb": round(size_mb, 1)})

    print(f"DermSynth generation on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})")
    print(f"{'workers':>7} {'cases':>6} {'px':>4} {'seconds':>8} {'ms/case':>8} {'cases/s':>8} {'disk MB':>8}")
    for r in rows:
        print(f"{r['workers']:>7} {r['n_cases']:>6} {r['image_size']:>4} {r['seconds']:>8} {r['ms_per_case']:>8} "
              f"{r['cases_per_s']:>8} {r['disk_mb']:>8}")
    full = max(rows, key=lambda r: r["workers"])
    projected = full["seconds"] * args.n_cases / full["n_cases"]
    ok = projected < args.target_s
    print(f"{args.n_cases} cases at {args.image_size} px: {projected:.1f} s (target < {args.target_s:.0f} s): "
          f"{'OK' if ok else 'TOO SLOW'}")
    print(json.dumps({"benchmark": "dermsynth_generation", "cpu_count": os.cpu_count(), "runs": rows,
                      "seconds_for_target": round(projected, 2), "target_s": args.target_s, "ok": ok}))


if __name__ == "__main__":
    main()
