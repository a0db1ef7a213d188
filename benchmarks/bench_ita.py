"""Benchmark: skin tone estimated from pixels (ITA of the non-lesion skin) against DermSynth's known type.

Target: the approximate Fitzpatrick type within one type of the label for at least 80% of cases, with
DermSynth's lesion masks and without them (Otsu segmentation, as on real datasets).  Reports exact and
within-one accuracy, the mean absolute ITA error against the rendered skin colour, the confusion matrix
and seconds per image.  Prints a table and, last, one JSON line.

    python benchmarks/bench_ita.py [--n 600] [--image-size 128] [--seed 0] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from dermretr.data import load
from dermretr.data.synth import generate
from dermretr.fairness import ita_confusion
from dermretr.skin_tone import estimate_skin_tone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="DermSynth cases (default 600)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes generating the images")
    parser.add_argument("--data", default=None, help="an existing DermSynth folder instead of generating one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            root = Path(args.data)
        else:
            start = time.perf_counter()
            root = generate(Path(tmp) / "ds", n_cases=args.n, seed=args.seed, image_size=args.image_size,
                            workers=args.workers, progress=False)
            print(f"generated {args.n} DermSynth cases ({args.image_size} px) in {time.perf_counter() - start:.1f} s")
        cases = load("synthetic", root)
        rows, matrices = [], {}
        for use_masks in (True, False):
            estimate_skin_tone(cases.head(5), use_masks=use_masks, progress=False)  # warm-up
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                est = estimate_skin_tone(cases, use_masks=use_masks, progress=False)
            seconds = (time.perf_counter() - start) / len(cases)
            m = ita_confusion(est)
            name = "DermSynth masks" if use_masks else "Otsu on L*"
            matrices[name] = m
            rows.append({"lesion": name, "n": m.attrs["n"], "exact": round(m.attrs["exact"], 4),
                         "within_one": round(m.attrs["within_one"], 4), "ita_mae_deg": round(m.attrs["ita_mae"], 2),
                         "unknown": int(est["fitzpatrick_estimated"].isna().sum()), "warnings": len(caught),
                         "ms_per_image": round(1000 * seconds, 2),
                         "confusion": m.to_numpy().tolist()})

    print(f"\n{'lesion':<16} {'n':>5} {'exact':>7} {'within 1':>9} {'ITA MAE':>8} {'unknown':>8} {'ms/img':>7}")
    for r in rows:
        print(f"{r['lesion']:<16} {r['n']:>5} {r['exact']:>7.1%} {r['within_one']:>9.1%} {r['ita_mae_deg']:>8.2f} "
              f"{r['unknown']:>8} {r['ms_per_image']:>7.2f}")
    for name, m in matrices.items():
        with pd.option_context("display.width", 120):
            print(f"\nConfusion ({name}): rows labelled type, columns estimated type\n{m.to_string()}")
    ok = all(r["within_one"] >= 0.8 for r in rows)
    print(f"\nwithin one type >= 80% for both: {'OK' if ok else 'NOT MET'}")
    print(json.dumps({"benchmark": "ita_estimation", "n_cases": len(cases), "image_size": args.image_size,
                      "seed": args.seed, "runs": rows, "target_within_one": 0.8, "ok": ok}))


if __name__ == "__main__":
    main()
