"""Benchmark: notebook 03, from its first cell to the first composed-query results (target: under 60 s).

The notebook is run as a student runs it (default parameters: the course sizes and the released model
``dermretr/dermsynth-tiny``; ``--fast`` for FAST = True), from nothing: its DermSynth folder and its
model folder are new, in a temporary folder.  Each code cell runs in a Jupyter kernel through
nbclient; the clock starts at the first cell (the kernel's start is excluded, as in JupyterLab, where
the kernel starts when the notebook opens) and stops when the cell that shows the query builder's
results (``app.search()``) has finished.  ``--train`` sets ``MODEL = None`` instead: the notebook then
trains its model first (the time before the released model existed).

Prints a table (seconds per cell up to the results) and, last, one JSON line.

    python benchmarks/bench_notebook03.py [--fast] [--train] [--target-s 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_composed_queries.ipynb"
#: The cell whose end is "the first composed-query results": the app searches and shows its grid.
RESULTS_CELL = re.compile(r"^app\.search\(\)$", re.M)


def _parameters(cell: nbformat.NotebookNode, values: dict[str, str]) -> None:
    """Set ``NAME = value`` assignments of the parameters cell (as papermill would, in place)."""
    lines = []
    for line in cell.source.splitlines():
        name = line.split("=", 1)[0].strip()
        lines.append(f"{name} = {values[name]}" if name in values and "=" in line else line)
    cell.source = "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="FAST = True (the small sizes)")
    parser.add_argument("--train", action="store_true", help="MODEL = None: train the model in the notebook")
    parser.add_argument("--target-s", type=float, default=60.0)
    args = parser.parse_args()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory(prefix="dermretr-bench-nb03-") as tmp:
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        values = {"DATA": repr(f"synthetic:{Path(tmp) / 'dermsynth-course'}"), "FAST": str(args.fast),
                  "OUT": repr(str(Path(tmp) / "dermretr-course"))}
        if args.train:
            values["MODEL"] = "None"
        _parameters(params, values)
        client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": tmp}})
        rows: list[dict] = []
        with client.setup_kernel(cwd=tmp):
            start = time.perf_counter()
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                t0 = time.perf_counter()
                client.execute_cell(cell, i)
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                rows.append({"cell": i, "seconds": round(time.perf_counter() - t0, 2), "first_line": first[:70]})
                if RESULTS_CELL.search(cell.source):
                    break
            total = time.perf_counter() - start
        shown = any("dermretr-grid" in json.dumps(o) or o.get("output_type") == "display_data"
                    for o in nb.cells[rows[-1]["cell"]].get("outputs", []))

    mode = ("fast" if args.fast else "course sizes") + (", MODEL = None (trains)" if args.train else ", released model")
    print(f"Notebook 03 to the first composed-query results ({mode}) on {os.cpu_count()} CPU cores "
          f"({platform.processor() or platform.machine()}); kernel start excluded")
    print(f"{'cell':>4} {'seconds':>8}  first line")
    for r in rows:
        print(f"{r['cell']:>4} {r['seconds']:>8.2f}  {r['first_line']}")
    ok = total < args.target_s and shown
    print(f"first cell -> results: {total:.1f} s (target < {args.target_s:.0f} s): {'OK' if ok else 'NOT MET'}")
    print(json.dumps({"benchmark": "notebook03_first_results", "fast": args.fast, "train": args.train,
                      "cpu_count": os.cpu_count(), "seconds": round(total, 2), "cells": rows,
                      "results_shown": shown, "target_s": args.target_s, "ok": ok}))


if __name__ == "__main__":
    main()
