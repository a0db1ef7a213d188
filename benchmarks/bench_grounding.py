"""Benchmark: whether every 7-point criterion is learnable from DermSynth pixels.

Generates DermSynth data into a temporary folder (once per prior setting),
trains the tiny multi-task CNN of :func:`dermretr.data.synth.grounding.grounding_report`
on the train+val split and reports, per criterion, test accuracy next to the
majority-class rate, balanced accuracy next to chance, and the confusion
matrices of the weakest criteria.  The last line printed is one JSON object
with every number, for scripts.

Usage::

    PYTHONPATH=. python benchmarks/bench_grounding.py                       # both priors, 1500 cases, 96 px
    PYTHONPATH=. python benchmarks/bench_grounding.py --priors uniform --n-cases 900 --epochs 20
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from dermretr._errors import DermretrError
from dermretr.data import load
from dermretr.data.synth import generate
from dermretr.data.synth.grounding import confusion_table, grounding_report

_DEFAULTS = {k: v.default for k, v in inspect.signature(grounding_report).parameters.items()}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-cases", type=int, default=1500, help="cases generated per prior setting (default 1500)")
    p.add_argument("--image-size", type=int, default=96, help="generated and trained image side in px (default 96)")
    p.add_argument("--priors", choices=("both", "clinical", "uniform"), default="both",
                   help="criteria priors of the generated data (default: both, one run each)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the training (default 0)")
    p.add_argument("--epochs", type=int, default=_DEFAULTS["epochs"],
                   help=f"training epochs (default {_DEFAULTS['epochs']})")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS["batch_size"],
                   help=f"batch size (default {_DEFAULTS['batch_size']})")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: CPU count, at most 8)")
    p.add_argument("--confusion", type=int, default=3, metavar="K",
                   help="print the confusion matrices of the K criteria least above chance (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _run_one(priors: str, args: argparse.Namespace, tmp: Path) -> dict:
    t0 = time.perf_counter()
    root = generate(tmp / f"dermsynth-{priors}", n_cases=args.n_cases, seed=args.seed, image_size=args.image_size,
                    priors=priors, workers=args.workers, progress=not args.quiet)
    t_gen = time.perf_counter() - t0
    cases = load("synthetic", root)
    t0 = time.perf_counter()
    report = grounding_report(cases, image_size=args.image_size, seed=args.seed, device=args.device,
                              progress=not args.quiet, epochs=args.epochs, batch_size=args.batch_size)
    t_report = time.perf_counter() - t0

    print(f"\n=== priors={priors}: {args.n_cases} cases at {args.image_size} px, "
          f"train {int(cases['split'].isin(['train', 'val']).sum())} / test {int((cases['split'] == 'test').sum())}")
    shown = report.assign(bal_lift=report["balanced_accuracy"] - report["chance"])
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(shown.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        worst = shown.sort_values("bal_lift")["criterion"].head(max(0, args.confusion))
        for crit in worst:
            print(f"\nconfusion of {crit} (rows true, columns predicted; test split):")
            print(confusion_table(report, crit).to_string())
    timings = {"generate_s": t_gen, **report.attrs["timings"], "report_s": t_report}
    print("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return {
        "criteria": {
            r.criterion: {
                "accuracy": round(float(r.accuracy), 4),
                "majority_rate": round(float(r.majority_rate), 4),
                "balanced_accuracy": round(float(r.balanced_accuracy), 4),
                "chance": round(float(r.chance), 4),
                "n_test": int(r.n_test),
                "confusion": report.attrs["confusion"][r.criterion],
            }
            for r in report.itertuples(index=False)
        },
        "timings_s": {k: round(float(v), 2) for k, v in timings.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    priors = ("uniform", "clinical") if args.priors == "both" else (args.priors,)
    results = {}
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-grounding-") as tmp:
            for p in priors:
                results[p] = _run_one(p, args, Path(tmp))
    except DermretrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    print(json.dumps({
        "benchmark": "grounding",
        "n_cases": args.n_cases,
        "image_size": args.image_size,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "results": results,
        "total_s": round(time.perf_counter() - t0, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
