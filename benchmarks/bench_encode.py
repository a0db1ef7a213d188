"""Benchmark: encoding throughput of dermretr against open_clip's plain ``encode_image`` loop.

Target: dermretr's overhead (token access, masks, numpy output) at most 10% at the same batch size.
Prints a table and, last, one JSON line.

    python benchmarks/bench_encode.py [--n 256] [--batch-size 64] [--models dermretr-tiny ViT-B-16]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dermretr.models.backbones import create
from dermretr.models.retriever import Retriever


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=["dermretr-tiny", "ViT-B-16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    rows = []
    for name in args.models:
        torch.manual_seed(0)
        bb = create(name, device=args.device)
        n = args.n if name.startswith("dermretr") else max(args.batch_size, args.n // 4)
        images = torch.randn(n, 3, bb.image_size, bb.image_size, device=bb.device)

        def plain():
            with torch.inference_mode():
                for i in range(0, n, args.batch_size):
                    bb.model.encode_image(images[i:i + args.batch_size]).cpu().numpy()

        plain()  # warm-up
        t_plain = _best_of(plain, args.repeats)
        for kind in ("image", "full"):
            r = Retriever(bb, kind=kind, n_masks=4).to(bb.device)
            r.encode_targets(images[: args.batch_size], batch_size=args.batch_size)  # warm-up
            t_ours = _best_of(lambda: r.encode_targets(images, batch_size=args.batch_size), args.repeats)
            rows.append({"model": name, "kind": kind, "n_images": n, "batch_size": args.batch_size,
                         "device": str(bb.device), "open_clip_img_per_s": round(n / t_plain, 1),
                         "dermretr_img_per_s": round(n / t_ours, 1),
                         "overhead_pct": round(100 * (t_ours / t_plain - 1), 1)})

    print(f"{'model':<14} {'kind':<6} {'n':>5} {'batch':>5} {'open_clip img/s':>16} {'dermretr img/s':>15} "
          f"{'overhead':>9}")
    for r in rows:
        print(f"{r['model']:<14} {r['kind']:<6} {r['n_images']:>5} {r['batch_size']:>5} "
              f"{r['open_clip_img_per_s']:>16} {r['dermretr_img_per_s']:>15} {r['overhead_pct']:>8}%")
    ok = all(r["overhead_pct"] <= 10 for r in rows if r["kind"] == "image")
    print(f"global-path overhead <= 10%: {'OK' if ok else 'NOT MET'}")
    print(json.dumps({"benchmark": "encoding_throughput", "runs": rows, "target_overhead_pct": 10, "ok": ok}))


if __name__ == "__main__":
    main()
