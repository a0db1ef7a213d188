"""Benchmark: loading a 35,000-row ISIC 2020 metadata table and resolving every image path.

Target: under 5 s on the 2-core machine.  The benchmark writes the publisher's layout itself
(``ISIC_2020_Training_GroundTruth.csv`` plus one small JPEG per row under ``train/``), then
times ``dermretr.data.load("isic2020", root)`` (one walk of the folder, validation, split).
Prints a table and, last, one JSON line.

    python benchmarks/bench_load.py [--rows 35000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dermretr.data import load

DIAGNOSES = ["nevus", "melanoma", "seborrheic keratosis", "lentigo NOS", "lichenoid keratosis", "solar lentigo",
             "cafe-au-lait macule", "atypical melanocytic proliferation", "unknown"]
SITES = ["torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital", ""]


def write_isic(root: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    names = [f"ISIC_{i:07d}" for i in range(rows)]
    diag = rng.choice(DIAGNOSES, rows, p=[0.55, 0.05, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01, 0.32])
    table = pd.DataFrame({
        "image_name": names,
        "patient_id": [f"IP_{i:07d}" for i in rng.integers(0, rows // 16, rows)],
        "sex": rng.choice(["male", "female", ""], rows),
        "age_approx": rng.choice(["25.0", "45.0", "60.0", ""], rows),
        "anatom_site_general_challenge": rng.choice(SITES, rows),
        "diagnosis": diag,
        "benign_malignant": np.where(diag == "melanoma", "malignant", "benign"),
        "target": (diag == "melanoma").astype(int),
    })
    table.to_csv(root / "ISIC_2020_Training_GroundTruth.csv", index=False)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (180, 120, 100)).save(buf, format="JPEG")
    data = buf.getvalue()
    (root / "train").mkdir()
    for name in names:
        (root / "train" / f"{name}.jpg").write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=35000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target-s", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_isic(root, args.rows)
        setup = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            cases = load("isic2020", root)
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    ok = median < args.target_s
    print(f"ISIC 2020 layout, {args.rows} rows and image files (written in {setup:.1f} s)")
    print(f"{'run':>4} {'seconds':>8}")
    for i, t in enumerate(times, 1):
        print(f"{i:>4} {t:>8.2f}")
    verdict = "OK" if ok else "TOO SLOW"
    print(f"median {median:.2f} s for {len(cases)} cases (target < {args.target_s:.0f} s): {verdict}")
    print(json.dumps({"benchmark": "load_isic2020", "rows": args.rows, "seconds": [round(t, 3) for t in times],
                      "median_s": round(median, 3), "target_s": args.target_s, "ok": ok}))


if __name__ == "__main__":
    main()
