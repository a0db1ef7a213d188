"""Benchmark: cost and faithfulness of dermretr's explanations.

Speed: seconds per (query, target) pair for Integrated Gradients, Occlusion,
GradCAM (target and reference side) and text attribution on the tiny model at
``--speed-size`` px (default 128), one pair at a time and in batches.
Target: under 5 s per pair on a CPU.

Faithfulness, on a trained model (``--run RUN_DIR`` with a DermSynth run, or
a tiny full model trained here on a small DermSynth set):

* deletion: area under the score-vs-fraction-removed curve, most-attributed
  patches first vs random orders (lower = more faithful);
* model randomisation: Spearman correlation between the trained model's
  attribution and those of copies whose retrieval heads and vision tower are
  re-drawn at random, cascading from the top (low = depends on the weights);
* localisation: pointing game, IoU of the top attributed area and
  attribution energy inside DermSynth's ground-truth mask of the queried
  criterion, each next to its uniform-map baseline (and next to the untrained
  model's numbers).

Prints tables and, last, one JSON line.

    PYTHONPATH=. python benchmarks/bench_explain.py                   # trains 600 cases, 96 px, 8 epochs
    PYTHONPATH=. python benchmarks/bench_explain.py --run runs/synth --pairs 40
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermretr.data import load
from dermretr.explain import (
    METHODS,
    dermsynth_localisation,
    explain_pairs,
    explain_texts,
    pair_deletion_curve,
    randomisation_check,
)
from dermretr.models.backbones import create
from dermretr.models.retriever import Retriever


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a training run folder on DermSynth (uses checkpoints/best.pt and its data)")
    p.add_argument("--data", help="DermSynth folder for the faithfulness part (default: the run's, or generated)")
    p.add_argument("--cases", type=int, default=600, help="DermSynth cases generated when training here (600)")
    p.add_argument("--image-size", type=int, default=96, help="image side when training here (96)")
    p.add_argument("--epochs", type=int, default=8, help="epochs when training here (8)")
    p.add_argument("--speed-size", type=int, default=128, help="image side of the speed test (128)")
    p.add_argument("--batch", type=int, default=4, help="pairs per batch in the speed test (4)")
    p.add_argument("--pairs", type=int, default=30, help="DermSynth triplets for deletion/localisation (30)")
    p.add_argument("--random-pairs", type=int, default=5, help="triplets for the randomisation check (5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-faithfulness", action="store_true")
    return p.parse_args(argv)


def _time(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(args) -> list[dict]:
    torch.manual_seed(args.seed)
    r = Retriever(create("dermretr-tiny", device="cpu", image_size=args.speed_size), kind="full", n_masks=4)
    g = torch.Generator().manual_seed(args.seed)
    s = args.speed_size
    pairs = [(torch.randn(3, s, s, generator=g), "same lesion but with a blue-whitish veil",
              torch.randn(3, s, s, generator=g)) for _ in range(args.batch)]
    explain_pairs(r, pairs[:1], method="gradcam")  # warm-up
    rows = []
    for method in (*METHODS, "text"):
        for side in (("target", "reference") if method != "text" else ("text",)):
            def run(n):
                if method == "text":
                    return explain_texts(r, pairs[:n], batch_size=n)
                return explain_pairs(r, pairs[:n], method=method, side=side, batch_size=n)
            one = _time(lambda: run(1))
            many = _time(lambda: run(args.batch)) / args.batch
            rows.append({"method": "ig (text tokens)" if method == "text" else method, "side": side,
                         "image_size": s, "s_per_pair_single": round(one, 3),
                         f"s_per_pair_batch{args.batch}": round(many, 3), "ok": max(one, many) < 5.0})
    return rows


def _trained(args, tmp: Path) -> tuple[Retriever, Path, dict]:
    from dermretr.data.synth import generate
    from dermretr.train import TrainConfig, fit

    if args.run:
        run = Path(args.run)
        cfg = json.loads((run / "config.json").read_text())
        model = Retriever.load(run / "checkpoints" / "best.pt", device="cpu")
        data = args.data or str(cfg["data"]).split(":", 1)[1]
        return model, Path(data), {"source": f"run {run}", "config": {k: cfg.get(k) for k in (
            "model", "epochs", "image_size", "n_masks")}}
    root = Path(args.data) if args.data else generate(
        tmp / "ds", n_cases=args.cases, seed=args.seed, image_size=args.image_size, modification_rate=0.5,
        progress=False)
    t0 = time.perf_counter()
    result = fit(TrainConfig(data=f"synthetic:{root}", out=str(tmp / "run"), epochs=args.epochs, batch_size=32,
                             image_size=args.image_size, n_masks=4, progress=False, device="cpu", seed=args.seed))
    last = result.history[-1]
    info = {"source": "trained here", "cases": args.cases, "epochs": args.epochs, "image_size": args.image_size,
            "train_s": round(time.perf_counter() - t0, 1),
            **{k: round(float(last[k]), 3) for k in ("recall@1", "map@10", "mask_entropy", "mask_overlap", "alpha")
               if k in last}}
    return result.retriever.eval(), root, info


def faithfulness(args, tmp: Path) -> dict:
    model, root, info = _trained(args, tmp)
    cases = load("synthetic", root).set_index("case_id", drop=False)
    mods = pd.read_csv(root / "meta" / "modifications.csv", dtype=str, keep_default_na=False)
    mods = mods[mods["to_value"] != "absent"]
    test = mods[cases.loc[mods["target_case_id"], "split"].astype(str).to_numpy() == "test"]
    split = "test" if len(test) >= min(20, args.pairs) else None
    pool = (test if split else mods).sample(n=min(args.pairs, len(test if split else mods)), random_state=args.seed)
    pairs = [(cases.loc[m["reference_case_id"], "image_path"], m["modification_text"],
              cases.loc[m["target_case_id"], "image_path"]) for _, m in pool.iterrows()]
    out: dict = {"model": info, "split": split or "all", "pairs": len(pairs)}

    deletion = []
    for method in METHODS:
        atts = explain_pairs(model, pairs, method=method)
        curves = [pair_deletion_curve(model, q, t, x, a, steps=10) for (q, t, x), a in zip(pairs, atts)]
        deletion.append({"method": method, "auc_attributed": float(np.mean([c.auc_attributed for c in curves])),
                         "auc_random": float(np.mean([c.auc_random for c in curves])),
                         "gap": float(np.mean([c.gap for c in curves])),
                         "share_better_than_random": float(np.mean([c.gap > 0 for c in curves]))})
    out["deletion"] = deletion

    randomisation = []
    for method in ("gradcam", "ig"):
        checks = [randomisation_check(model, q, t, x, method=method, seed=args.seed)
                  for q, t, x in pairs[: args.random_pairs]]
        rho = np.mean([c.spearman for c in checks], axis=0)
        randomisation.append({"method": method, "stages": checks[0].stages, "mean_spearman": rho.round(3).tolist(),
                              "after_heads": float(rho[0]), "fully_random": float(rho[-1])})
    out["randomisation"] = randomisation

    torch.manual_seed(args.seed)
    untrained = Retriever(create(model.backbone.name, device="cpu", image_size=model.backbone.image_size),
                          kind="full", n_masks=model.n_masks).eval()
    localisation = []
    for method in METHODS:
        for name, m in (("trained", model), ("untrained", untrained)):
            table = dermsynth_localisation(m, root, method=method, n=args.pairs, seed=args.seed, split=split)
            s = table.attrs["summary"]
            localisation.append({"method": method, "model": name, **{k: round(v, 4) if isinstance(v, float) else v
                                                                     for k, v in s.items()}})
    out["localisation"] = localisation
    return out


def _print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(pd.DataFrame(rows).to_string(index=False))


def main(argv=None) -> None:
    args = _parse(argv)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
    result: dict = {"benchmark": "explain", "machine": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "load_avg_start": os.getloadavg()[0]}
    if not args.skip_speed:
        rows = speed(args)
        _print_table(rows, f"seconds per pair, dermretr-tiny at {args.speed_size} px (target < 5 s)")
        result["speed"] = rows
        result["speed_ok"] = all(r["ok"] for r in rows)
    if not args.skip_faithfulness:
        with tempfile.TemporaryDirectory() as tmp:
            f = faithfulness(args, Path(tmp))
        print(f"\nmodel: {f['model']}; {f['pairs']} triplets ({f['split']} split)")
        _print_table(f["deletion"], "deletion (AUC of score vs fraction removed; lower = more faithful)")
        stages = ", ".join(f["randomisation"][0]["stages"])
        _print_table([{k: v for k, v in r.items() if k != "stages"} for r in f["randomisation"]],
                     f"cascading randomisation, Spearman vs trained (stages: {stages})")
        _print_table(f["localisation"], "localisation on DermSynth ground truth (vs uniform-map baseline)")
        result["faithfulness"] = f
    result["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
