"""Benchmark: one ``dermretr search`` call on a 1,000-case index, and where its seconds go (target: under 5 s).

A researcher scripting queries, or an instructor searching from a terminal, pays the whole start-up on
every call.  The benchmark builds, in a temporary folder, a DermSynth set (``--n-cases`` cases at 128 px)
and its flat index with the released model ``dermretr/dermsynth-tiny``, then times, each in a fresh
interpreter and the median of ``--repeats`` runs:

* ``dermretr search --index ... --image ... --text ...`` end to end (the command a user types);
* importing the libraries the model needs, cumulatively: ``torch``; ``torch`` + ``torchvision`` (open_clip
  imports it, and torchvision's ops import ``torch._dynamo``); ``open_clip`` (which imports both);
* importing ``dermretr.cli`` alone (what every command pays before its own work);
* the same ``dermretr search`` while ``dermretr serve --index ...`` holds the index and its model (the
  server's own start is timed once, from its launch to its "serving" line).

What is left of the search after the open_clip import is dermretr's own work: opening the index, loading
the model, encoding the query, searching and printing.  Prints a table and, last, one JSON line.

    python benchmarks/bench_search_startup.py [--n-cases 1000] [--repeats 3] [--target-s 5]
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


def _timed(argv: list[str], cwd: Path) -> float:
    """Wall seconds of a command (a failure stops the benchmark with its error output)."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench_search_startup: {' '.join(argv[:5])} ... failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cases", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target-s", type=float, default=5.0)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="dermretr-bench-search-") as tmp:
        work = Path(tmp)
        _timed([py, "-m", "dermretr", "synth", "--out", "ds", "--n-cases", str(args.n_cases), "--image-size",
                "128", "--no-progress"], work)
        _timed([py, "-m", "dermretr", "index", "--model", "dermretr/dermsynth-tiny", "--data", "synthetic:ds",
                "--out", "idx", "--no-progress"], work)
        image = sorted((work / "ds" / "images").rglob("*.jpg"))[0]
        steps = {
            "dermretr search (end to end)": [py, "-m", "dermretr", "search", "--index", "idx", "--image", str(image),
                                             "--text", "blue-whitish veil, atypical pigment network"],
            "import torch": [py, "-c", "import torch"],
            "import torch, torchvision": [py, "-c", "import torch, torchvision"],
            "import open_clip (with both)": [py, "-c", "import open_clip"],
            "import dermretr.cli": [py, "-c", "import dermretr.cli"],
        }
        _timed(steps["dermretr search (end to end)"], work)  # warm the file cache once
        times = {name: [_timed(argv, work) for _ in range(args.repeats)] for name, argv in steps.items()}
        served, server_start = _served(py, work, steps["dermretr search (end to end)"], args.repeats)
        times["dermretr search, served"] = served
    median = {name: statistics.median(t) for name, t in times.items()}
    search, libraries = median["dermretr search (end to end)"], median["import open_clip (with both)"]
    own = search - libraries
    print(f"{'step':34s} {'median s':>9s}  runs")
    for name, t in times.items():
        print(f"{name:34s} {median[name]:9.2f}  {', '.join(f'{x:.2f}' for x in t)}")
    print(f"{'dermretr own work (search - open_clip)':34s} {own:9.2f}")
    print(f"{'dermretr serve: start to serving':34s} {server_start:9.2f}  (once)")
    ok = search < args.target_s
    ok_served = median["dermretr search, served"] < args.target_s
    print(f"one search under {args.target_s:g} s: {'met' if ok else 'NOT MET'} ({search:.2f} s; the libraries' imports "
          f"alone take {libraries:.2f} s on this machine); with `dermretr serve`: {'met' if ok_served else 'NOT MET'} "
          f"({median['dermretr search, served']:.2f} s)")
    print(json.dumps({"benchmark": "search_startup", "n_cases": args.n_cases, "cpu_count": os.cpu_count(),
                      "seconds": {k: round(v, 3) for k, v in median.items()}, "own_seconds": round(own, 3),
                      "server_start_s": round(server_start, 3), "target_s": args.target_s, "ok": ok,
                      "ok_served": ok_served}))


def _served(py: str, work: Path, search: list[str], repeats: int) -> tuple[list[float], float]:
    """Times of ``search`` answered by a ``dermretr serve`` of the index, and the server's start (seconds)."""
    env = {**os.environ, "DERMRETR_RUNTIME_DIR": str(work / "run")}
    start = time.perf_counter()
    server = subprocess.Popen([py, "-m", "dermretr", "serve", "--index", "idx"], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        started = time.perf_counter() - start
        if not line.startswith("dermretr: serving"):
            sys.exit(f"bench_search_startup: dermretr serve did not start: {line}{server.stderr.read()[-2000:]}")
        os.environ["DERMRETR_RUNTIME_DIR"] = env["DERMRETR_RUNTIME_DIR"]  # the timed searches find the server
        try:
            return [_timed(search, work) for _ in range(repeats)], started
        finally:
            del os.environ["DERMRETR_RUNTIME_DIR"]
    finally:
        server.terminate()
        server.wait(60)


if __name__ == "__main__":
    main()
