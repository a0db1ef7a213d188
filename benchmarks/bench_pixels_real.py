"""Benchmark: the pixel tools against real lesion masks (PH2), beside DermSynth's ground truth.

Two checks of tools that were so far only validated on DermSynth:

1. Lesion/skin separation of the skin-tone estimate (:func:`dermretr.skin_tone.skin_mask`, Otsu on L*
   without a mask, as on any data without masks), per image against the true lesion mask with
   :func:`dermretr.skin_tone.skin_mask_agreement`: IoU of the estimated lesion (the field of view minus
   the estimated skin) with the true lesion, "skin contamination" (share of the estimated skin inside the
   true lesion), share of the true skin kept, and how far the ITA moves when the true mask is used
   instead (|ITA Otsu - ITA true mask|).  Mean and median over images with percentile bootstrap CIs,
   for the real data and for a DermSynth set generated here.
2. Attribution localisation on real masks (:func:`dermretr.explain.mask_localisation`): a small ``full``
   retriever (dermretr-tiny, 128 px, 8 epochs, CPU; one per training seed) is trained on the real data's
   train split; each test query (image + its descriptor text) retrieves its top-k cases from train+val (the
   case protocol), and the target-side attribution of every (query, result) pair is scored against the
   result's lesion mask: pointing game and the share of positive attribution inside the lesion ("energy"),
   each against the uniform-map baseline (a random point's hit rate; for energy, the lesion's area
   fraction), means over pairs with 95% CIs from a bootstrap over queries, and the paired difference to the
   baseline.  For reference, the first seed's pairs explained by an untrained model, and scored with a fixed
   centred Gaussian "heatmap" (what a map that only looks at the image centre scores: lesions in dermoscopy
   are centred).  The same check on the generated DermSynth set (its lesion bit as the mask; one training
   seed, ``--synth-seeds``; the untrained reference with the first method only) shows what the synthetic
   best case gives.

Prints tables and, last, one JSON line.  With the defaults on PH2: about 9 minutes on one CPU thread of a
shared 2-core machine (part 1 alone, ``--skip-training``: about 30 s); the numbers are deterministic.

    PYTHONPATH=. python benchmarks/bench_pixels_real.py --data ph2:../shared/data/ph2
    PYTHONPATH=. python benchmarks/bench_pixels_real.py --data ph2:../shared/data/ph2 --seeds 0 --methods gradcam
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermretr._errors import DataWarning
from dermretr.color import ITA_CATEGORIES, ita_category
from dermretr.data import load
from dermretr.data.images import load_mask
from dermretr.data.synth import generate
from dermretr.data.vocab import case_text
from dermretr.evaluate import case_scores
from dermretr.explain import METHODS, align_mask, localisation_score, mask_localisation
from dermretr.models.backbones import create
from dermretr.models.retriever import Retriever
from dermretr.skin_tone import default_mask_bit, skin_mask_agreement


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="SOURCE:PATH of data with lesion masks, e.g. ph2:../shared/data/ph2")
    p.add_argument("--mask-column", default="lesion_mask", help="the case table's mask column (lesion_mask)")
    p.add_argument("--synth-cases", type=int, default=200, help="DermSynth cases generated for comparison (200)")
    p.add_argument("--synth-size", type=int, default=256, help="DermSynth image side (256, as the ITA analyses)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (8)")
    p.add_argument("--image-size", type=int, default=128, help="model input side (128)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--methods", nargs="+", default=["gradcam", "ig"], choices=METHODS,
                   help="attribution methods (gradcam ig)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (2000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (0 1 2)")
    p.add_argument("--synth-seeds", type=int, nargs="+", default=[0],
                   help="training seeds of the DermSynth comparison (0)")
    p.add_argument("--top-k", type=int, default=3, help="results of each test query explained (3)")
    p.add_argument("--seed", type=int, default=0, help="DermSynth and bootstrap seed (0)")
    p.add_argument("--skip-training", action="store_true", help="only the skin/lesion separation")
    return p.parse_args(argv)


def _ci(values, stat, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Statistic of the finite values and its percentile bootstrap 95% CI (resampling images/queries)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boot = stat(v[rng.integers(0, len(v), size=(n_boot, len(v)))], axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(stat(v)), float(lo), float(hi)


def _fmt(est: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# ----------------------------------------------------------------------------- 1. skin/lesion separation


def separation(name: str, cases: pd.DataFrame, mask_column: str, args) -> dict:
    t0 = time.perf_counter()
    table = skin_mask_agreement(cases, mask_column=mask_column)
    seconds = time.perf_counter() - t0
    shift = (table["ita"] - table["ita_true_mask"]).abs()
    out: dict = {"data": name, "images": len(table), "s_per_image": round(seconds / max(len(table), 1), 4),
                 "lesion_area_median": round(float(table["lesion_fraction"].median()), 3),
                 "no_skin_with_true_mask": int(table["ita_true_mask"].isna().sum())}
    for col, values in (("iou", table["iou"]), ("contamination", table["contamination"]),
                        ("skin_kept", table["skin_kept"]), ("ita_shift_deg", shift)):
        for stat in ("mean", "median"):
            est, lo, hi = _ci(values, getattr(np, stat), args.n_boot, args.seed)
            out[f"{col}_{stat}"] = [round(est, 4), round(lo, 4), round(hi, 4)]
    out["contamination_over_0.25"] = round(float((table["contamination"] > 0.25).mean()), 3)
    out["ita_shift_over_5deg"] = round(float((shift[shift.notna()] > 5).mean()), 3)
    both = table.dropna(subset=["ita", "ita_true_mask"])
    cat = [ita_category(v) for v in both["ita"]]
    out["ita_category_changes"] = round(float(np.mean([a != ita_category(b) for a, b in
                                                       zip(cat, both["ita_true_mask"])])), 3)
    for col, key in (("ita", "categories_otsu"), ("ita_true_mask", "categories_true_mask")):
        counts = pd.Series([ita_category(v) for v in table[col].dropna()]).value_counts()
        out[key] = {name: int(counts.get(name, 0)) for name, _, _ in ITA_CATEGORIES}
    if "diagnosis" in cases.columns:  # are the failures tied to a diagnosis?
        diag = pd.Series(cases["diagnosis"].astype(str).to_numpy(), index=cases["case_id"].astype(str))
        diag = diag.reindex(table["case_id"].astype(str)).to_numpy()
        bad = (table["contamination"] > 0.25).to_numpy()
        dark = np.isin([ita_category(v) if np.isfinite(v) else "" for v in table["ita"]], ["brown", "dark"])
        out["contamination_over_0.25_by_diagnosis"] = {d: f"{int(bad[diag == d].sum())}/{int((diag == d).sum())}"
                                                       for d in pd.unique(diag)}
        out["brown_or_dark_without_mask_by_diagnosis"] = {d: int(dark[diag == d].sum()) for d in pd.unique(diag)}
    return out


def _print_separation(rows: list[dict]) -> None:
    print("\n1. Lesion/skin separation of the ITA estimate (Otsu on L*, no mask) vs the true lesion mask "
          "(mean / median [95% bootstrap CI] over images)")
    lines = []
    for r in rows:
        for col, label in (("iou", "IoU estimated vs true lesion"), ("contamination", "skin contamination"),
                           ("skin_kept", "true skin kept"), ("ita_shift_deg", "|ITA Otsu - ITA true mask| (deg)")):
            lines.append({"data": r["data"], "n": r["images"], "measure": label,
                          "mean [CI]": _fmt(*r[f"{col}_mean"], digits=3 if col != "ita_shift_deg" else 2),
                          "median [CI]": _fmt(*r[f"{col}_median"], digits=3 if col != "ita_shift_deg" else 2)})
    with pd.option_context("display.width", 160, "display.max_colwidth", 40):
        print(pd.DataFrame(lines).to_string(index=False))
    for r in rows:
        print(f"   {r['data']}: median lesion area {r['lesion_area_median']:.0%} of the field; contamination "
              f"> 25% in {r['contamination_over_0.25']:.0%} of images; ITA moves > 5 deg in "
              f"{r['ita_shift_over_5deg']:.0%} and changes ITA category in {r['ita_category_changes']:.0%}; "
              f"{r['no_skin_with_true_mask']} images without skin outside the true mask; "
              f"{r['s_per_image'] * 1000:.0f} ms/image")
        print(f"      ITA categories without a mask {r['categories_otsu']}")
        print(f"      with the true mask            {r['categories_true_mask']}")
        if "contamination_over_0.25_by_diagnosis" in r:
            print(f"      contamination > 25% by diagnosis {r['contamination_over_0.25_by_diagnosis']}; brown or dark "
                  f"without a mask {r['brown_or_dark_without_mask_by_diagnosis']}")


# ----------------------------------------------------------------------------- 2. attribution localisation


def _centre_map(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return np.exp(-(yy ** 2 + xx ** 2) / (2 * (size / 4) ** 2))


def _pairs(model, cases: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each test query (image + descriptor text) with its top-k cases of train+val, ranked as the case protocol."""
    q, g, scores, exclude = case_scores(model, cases, query_split="test")
    scores = np.where(exclude, -np.inf, scores)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    texts = [case_text(row, style="terse", seed=None) for _, row in q.iterrows()]
    gid = g["case_id"].astype(str).to_numpy()
    same = q["diagnosis_group"].astype(str).to_numpy()[:, None] == g["diagnosis_group"].astype(str).to_numpy()[top]
    pairs = pd.DataFrame({"reference_case_id": np.repeat(q["case_id"].astype(str).to_numpy(), k),
                          "target_case_id": gid[top].ravel(), "text": np.repeat(texts, k),
                          "rank": np.tile(np.arange(1, k + 1), len(q))})
    pairs.attrs["top1_same_group"] = float(same[:, 0].mean())
    return pairs


def _localise(model, cases: pd.DataFrame, pairs: pd.DataFrame, method: str, mask_column: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # a lesion outside the centre crop: that pair is left out
        return mask_localisation(model, cases, pairs, mask_column=mask_column, method=method, batch_size=8)


def localisation(name: str, data: str, cases: pd.DataFrame, mask_column: str, seeds: list[int],
                 untrained_methods: list[str], args, tmp: Path) -> dict:
    from dermretr.train import TrainConfig, fit

    rows, per_query, models = [], {}, []
    first_pairs = None
    for seed in seeds:
        t0 = time.perf_counter()
        result = fit(TrainConfig(data=data, out=str(tmp / f"run-{name}-{seed}"), model="full",
                                 backbone="dermretr-tiny",
                                 epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
                                 device="cpu", progress=False, seed=seed))
        model = result.retriever.eval()
        last = result.history[-1]
        pairs = _pairs(model, cases, args.top_k)
        first_pairs = pairs if first_pairs is None else first_pairs
        models.append({"seed": seed, "train_s": round(time.perf_counter() - t0, 1),
                       **{f"val_{k}": round(float(last[k]), 3) for k in ("recall@1", "map@10") if k in last},
                       "test_top1_same_diagnosis_group": round(pairs.attrs["top1_same_group"], 3)})
        for method in args.methods:
            t1 = time.perf_counter()
            table = _localise(model, cases, pairs, method, mask_column)
            rows.append({"method": method, "model": f"trained (seed {seed})",
                         "s_per_pair": (time.perf_counter() - t1) / len(table), **_loc_stats(table, args)})
            per_query.setdefault(method, []).append(table)
    for method in args.methods:  # every training seed together: per query, the mean over seeds and ranks
        if len(seeds) > 1:
            rows.append({"method": method, "model": f"trained ({len(seeds)} seeds pooled)", "s_per_pair": np.nan,
                         **_loc_stats(pd.concat(per_query[method], ignore_index=True), args)})
    torch.manual_seed(seeds[0])
    untrained = Retriever(create("dermretr-tiny", device="cpu", image_size=args.image_size), kind="full",
                          n_masks=model.n_masks).eval()
    ref = None
    for method in untrained_methods:  # the first seed's pairs, explained by a model that learned nothing
        t1 = time.perf_counter()
        ref = _localise(untrained, cases, first_pairs, method, mask_column)
        rows.append({"method": method, "model": "untrained", "s_per_pair": (time.perf_counter() - t1) / len(ref),
                     **_loc_stats(ref, args)})
    # the same pairs, a fixed centred Gaussian map instead of an attribution
    size = args.image_size
    by_id = cases.assign(case_id=cases["case_id"].astype(str)).set_index("case_id")
    bit = default_mask_bit(mask_column)
    centre = pd.DataFrame([localisation_score(_centre_map(size),
                                              align_mask(load_mask(by_id.loc[t, mask_column], bit=bit), size),
                                              tolerance=ref.attrs["tolerance"])
                           for t in ref["target_case_id"]])
    centre["reference_case_id"] = ref["reference_case_id"].to_numpy()
    rows.append({"method": "centre Gaussian (no model)", "model": "-", "s_per_pair": 0.0, **_loc_stats(centre, args)})
    return {"data": name, "models": models, "epochs": args.epochs, "image_size": args.image_size, "top_k": args.top_k,
            "train_cases": int((cases["split"] == "train").sum()), "queries": int(first_pairs["reference_case_id"]
                                                                               .nunique()),
            "tolerance_px": int(ref.attrs["tolerance"]), "rows": rows}


def _loc_stats(table: pd.DataFrame, args) -> dict:
    """Means over pairs with CIs from a bootstrap over queries (the pairs of one query move together)."""
    t = table.assign(hit_diff=table["hit"] - table["hit_baseline"],
                     energy_diff=table["energy"] - table["energy_baseline"])
    by_query = t.groupby("reference_case_id")[["hit", "hit_baseline", "energy", "energy_baseline", "hit_diff",
                                                "energy_diff"]].mean()
    out = {"pairs": len(table), "queries": len(by_query)}
    for key, col in (("pointing", "hit"), ("pointing_baseline", "hit_baseline"), ("energy", "energy"),
                     ("energy_baseline", "energy_baseline"), ("pointing_minus_baseline", "hit_diff"),
                     ("energy_minus_baseline", "energy_diff")):
        est, lo, hi = _ci(by_query[col], np.mean, args.n_boot, args.seed)
        out[key] = [round(est, 4), round(lo, 4), round(hi, 4)]
    return out


def _print_localisation(loc: dict) -> None:
    print(f"\n2. Attribution localisation on {loc['data']} lesion masks: target side of the top-{loc['top_k']} results "
          f"of {loc['queries']} test queries (mean over pairs, 95% CI by resampling queries; pointing tolerance "
          f"{loc['tolerance_px']} px at {loc['image_size']} px)")
    for m in loc["models"]:
        print(f"   seed {m['seed']}: full, dermretr-tiny, {loc['epochs']} epochs on {loc['train_cases']} train cases "
              f"in {m['train_s']:.0f} s; val recall@1 {m.get('val_recall@1', float('nan')):.3f}, map@10 "
              f"{m.get('val_map@10', float('nan')):.3f}; test top-1 of the query's diagnosis group "
              f"{m['test_top1_same_diagnosis_group']:.3f}")
    lines = [{"method": r["method"], "model": r["model"], "pairs": r["pairs"],
              "pointing [CI]": _fmt(*r["pointing"]), "uniform": f"{r['pointing_baseline'][0]:.3f}",
              "pointing - uniform [CI]": _fmt(*r["pointing_minus_baseline"], digits=3),
              "energy in lesion [CI]": _fmt(*r["energy"]), "area": f"{r['energy_baseline'][0]:.3f}",
              "energy - area [CI]": _fmt(*r["energy_minus_baseline"]),
              "s/pair": "" if not np.isfinite(r["s_per_pair"]) else f"{r['s_per_pair']:.2f}"}
             for r in loc["rows"]]
    with pd.option_context("display.width", 220, "display.max_colwidth", 40):
        print(pd.DataFrame(lines).to_string(index=False))


def main(argv=None) -> None:
    args = _parse(argv)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
    start = time.perf_counter()
    source, _, path = args.data.partition(":")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # e.g. PH2's trimmed txt beside the complete xlsx
        cases = load(source, path)
    result: dict = {"benchmark": "pixels_real", "data": source, "cases": len(cases),
                    "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "n_boot": args.n_boot, "seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = generate(tmp / "ds", n_cases=args.synth_cases, seed=args.seed, image_size=args.synth_size,
                        workers=1, progress=False)
        sep = [separation(source, cases, args.mask_column, args),
               separation("DermSynth", load("synthetic", root), "mask", args)]
        _print_separation(sep)
        result["separation"] = sep
        if not args.skip_training:
            result["localisation"] = []
            for arm in ((source, args.data, cases, args.mask_column, args.seeds, args.methods),
                        ("DermSynth", f"synthetic:{root}", load("synthetic", root), "mask", args.synth_seeds,
                         args.methods[:1])):
                loc = localisation(*arm, args, tmp)
                _print_localisation(loc)
                result["localisation"].append(loc)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"\nwall time {result['wall_s']:.0f} s")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
