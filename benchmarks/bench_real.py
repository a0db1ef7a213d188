"""Benchmark: composed retrieval on real dermoscopy, against every baseline and every floor, by cross-validation.

A real set is small (PH2: 200 cases), so one test split says little: every case is a query once,
by patient-level stratified K-fold cross-validation (``--folds``, default 5).  In each fold the
other folds are the database (the gallery) and the training data; a stratified 15% of them
(by patient) is held out for choosing the best epoch (early stopping), and stays in the gallery.
Every retriever kind is trained per fold and per training seed with the same settings; the
per-query metrics of the seeds are averaged, then:

* every method and every floor gets Recall@1 and mAP@10 (and more) with 95% bootstrap CIs, as
  MICRO means (over queries) and MACRO means (over diagnosis groups of the per-group means; the
  headline on imbalanced sets, where "most common group first" wins the micro mean);
* the composed model (``full``) gets paired differences (bootstrap CI, sign-flip p) against each
  other method and floor, micro and macro;
* floors need no model: ``random`` (analytic expectation), ``majority`` (the gallery's most common
  group first) and, when the cases carry annotated 7-point findings, ``criteria_match``;
* with findings, ``KIND+findings`` adds ``w`` times the findings agreement of the
  criteria_match floor to each trained model's score (``dermretr.evaluate.hybrid_scores``), ``w``
  chosen per fold and seed on the validation cases (``choose_findings_weight``: 0 to 8, the lowest
  on a tie); ``full+findings`` is held to the same paired comparisons as ``full``, and
  ``full+findings@w`` is the ablation over fixed weights (``--hybrid-weights``).  All are reported
  as their own methods, never mixed into ``full``;
* the same trained ``full`` model is also scored with the local weight set at test time
  (``--alpha-grid``, no retraining): ``full@alpha=0`` (its global score only: does the local score
  help at test time?) and ``full@alpha=val`` (alpha chosen per fold and seed on the validation
  cases as queries against the training cases, by macro mAP@10, the lowest alpha on a tie).

Query: the case's image plus its findings text (7-point criteria; never the diagnosis).
Relevant: same ``--relevant`` (diagnosis_group by default); the query's own patient is excluded.

With findings, the same trained models also answer modification queries (``--modify-per-case``, default
3): a test case's image plus "with <a finding it does not have>" (``derive_triplets``, seeded per
fold), relevant = gallery cases with that finding and the reference's diagnosis group; with the
modify protocol's floors (its criteria_match ranks by the reference's findings after the change).
The models are trained on the case protocol only; this asks whether their image side sees the
findings a text names.

    python benchmarks/bench_real.py --data ph2:../shared/data/ph2 [--folds 5] [--seeds 0 1]
        [--kinds full global clip4cir late_fusion image text] [--epochs 15] [--image-size 128]
        [--backbone dermretr-tiny | hf-hub:ORG/NAME | local-dir:PATH] [--pretrained FILE]
        [--alpha-grid 0 0.25 0.5 0.75 1] [--hair-augment 0.6] [--modify-per-case 3] [--finding-triplets]

Prints the tables and one JSON line.  With ``--out DIR`` the per-query table and the records are
kept there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from dermretr import DermretrError
from dermretr._io import atomic_path, claim_file
from dermretr.data import load
from dermretr.evaluate import (
    case_scores,
    choose_findings_weight,
    derive_triplets,
    hybrid_scores,
    is_metrics_file,
    is_per_query_file,
    metric_records,
    modify_search,
    paired_difference,
    results_table,
    scores_search,
)
from dermretr.floors import MODIFY_FLOORS, available_floors, floor_search, modify_floor_search
from dermretr.models.embeddings import EncodingCache
from dermretr.models.retriever import KINDS, Retriever
from dermretr.train import TrainConfig, fit

KS = (1, 5, 10)
SHOWN = ("recall@1", "map@10")


def fold_tables(cases: pd.DataFrame, folds: int, relevant: str, seed: int) -> list[pd.DataFrame]:
    """One case table per fold: ``test`` = the fold, ``val`` = 15% of the rest (by patient), ``train`` the others."""
    labels = cases[relevant].astype(str).to_numpy()
    groups = cases["patient_id"].astype(str).to_numpy()
    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    tables = []
    for k, (rest, test) in enumerate(outer.split(cases, labels, groups)):
        split = np.full(len(cases), "train", dtype=object)
        split[test] = "test"
        inner = StratifiedGroupKFold(n_splits=max(2, round(1 / 0.15)), shuffle=True, random_state=seed + 1 + k)
        _, val = next(inner.split(rest, labels[rest], groups[rest]))
        split[rest[val]] = "val"
        table = cases.copy()
        table["split"] = pd.Categorical(split, categories=["train", "val", "test"])
        tables.append(table)
    return tables


def _macro_map10(pq: pd.DataFrame, relevant: str) -> float:
    return float(pq.groupby(relevant, observed=True)["map@10"].mean().mean())


def _check_no_leak(cases: pd.DataFrame, relevant: str) -> None:
    """The query text must not name what counts as relevant (the diagnosis or its group)."""
    from dermretr.evaluate import check_query_text

    try:
        check_query_text(cases, relevant=relevant)  # every case's findings text, as case_scores builds it
    except DermretrError as exc:
        raise SystemExit(f"{exc}: the benchmark would leak the answer into the question") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="SOURCE:PATH, e.g. ph2:../shared/data/ph2")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment")
    parser.add_argument("--kinds", nargs="+", default=["full", "global", "clip4cir", "late_fusion", "image", "text"])
    parser.add_argument("--relevant", choices=("diagnosis_group", "diagnosis"), default="diagnosis_group")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="dermretr-tiny")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--no-text-skip", action="store_true",
                        help="ablation: composers without the text skip (start as image-only, not late fusion)")
    parser.add_argument("--hair-augment", type=float, default=0.0, metavar="P",
                        help="probability of drawn hairs on a training view (dermretr train --hair-augment; 0: off)")
    parser.add_argument("--tone-triplets", action="store_true",
                        help="train with tone triplets too (only matters for sets with skin-type labels)")
    parser.add_argument("--finding-triplets", action="store_true",
                        help="train with finding triplets too ('this case, with irregular streaks'; needs findings)")
    parser.add_argument("--hybrid-weights", type=float, nargs="*", default=[0.25, 0.5, 1.0])
    parser.add_argument("--alpha-grid", type=float, nargs="*", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="test-time local weights for full@alpha=val (none: skip full@alpha=0 and =val)")
    parser.add_argument("--modify-per-case", type=int, default=3, metavar="N",
                        help="with findings: also ask up to N derived modification queries per test case "
                             "('with irregular streaks'; dermretr.evaluate.derive_triplets) of every trained model "
                             "and floor (0: skip)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="keep runs, per-query table and records here")
    args = parser.parse_args()
    bad = set(args.kinds) - set(KINDS)
    if bad:
        parser.error(f"unknown kinds {sorted(bad)}")
    if args.modify_per_case < 0:
        parser.error(f"--modify-per-case must be 0 (skip) or more, got {args.modify_per_case}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load(args.data)
    _check_no_leak(cases, args.relevant)
    floors = available_floors(cases)
    with_findings = "criteria_match" in floors
    tmp = Path(args.out or tempfile.mkdtemp(prefix="dermretr-bench-real-"))
    outputs = {}
    if args.out:  # before any training: a file of the user's under these names is refused, never replaced
        outputs = {"per_query": claim_file(tmp / "per_query.csv", recognise=is_per_query_file),
                   "records": claim_file(tmp / "records.json", recognise=is_metrics_file)}
    tables = fold_tables(cases, args.folds, args.relevant, args.fold_seed)
    per_query: dict[str, list[pd.DataFrame]] = {}  # method -> per-seed tables over all folds
    seconds: dict[str, float] = {}
    best_epochs: dict[str, list[int]] = {}
    alphas: dict[str, list[float]] = {"learned": [], "chosen on val": []}
    weights: dict[str, list[float]] = {}  # findings weights chosen on val, per kind
    t_all = time.perf_counter()
    modify_pq: dict[str, list[pd.DataFrame]] = {}  # the same for derived modification queries
    triplets = {}
    for fold, table in enumerate(tables):
        for floor in floors:
            pq, _ = floor_search(table, floor, query_split="test", relevant=args.relevant, ks=KS,
                                 gallery_splits=("train", "val"))
            per_query.setdefault(f"floor:{floor}", []).append(pq.assign(fold=fold, seed=-1))
        if with_findings and args.modify_per_case > 0:  # the same queries for every seed and kind
            triplets[fold] = derive_triplets(table, split="test", seed=args.fold_seed + fold,
                                             max_per_case=args.modify_per_case)
            for floor in MODIFY_FLOORS:
                pq, _ = modify_floor_search(table, floor, triplets[fold], split="test", ks=KS)
                modify_pq.setdefault(f"floor:{floor}", []).append(pq.assign(fold=fold, seed=-1))
    for seed in args.seeds:
        for fold, table in enumerate(tables):
            for kind in args.kinds:
                run = tmp / f"seed{seed}" / f"fold{fold}" / kind
                cfg = TrainConfig(data=args.data, out=str(run), model=kind, epochs=args.epochs,
                                  batch_size=args.batch_size, image_size=args.image_size, backbone=args.backbone,
                                  pretrained=args.pretrained, seed=seed, device=args.device, progress=False,
                                  text_skip=not args.no_text_skip, tone_triplets=args.tone_triplets,
                                  finding_triplets=args.finding_triplets,
                                  hair_augment=args.hair_augment,
                                  resume=(run / "checkpoints" / "last.pt").is_file())  # a rerun continues
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = fit(cfg, cases=table)
                seconds[kind] = seconds.get(kind, 0.0) + time.perf_counter() - start
                best_epochs.setdefault(kind, []).append(int(result.best.get("epoch", 0)))
                model = Retriever.load(run / "checkpoints" / "best.pt", device=args.device)
                cached = EncodingCache(model)
                q, g, s, exclude = case_scores(cached, table, "test", ("train", "val"))
                pq = scores_search(q, g, s, exclude, relevant=args.relevant, ks=KS)
                per_query.setdefault(kind, []).append(pq.assign(fold=fold, seed=seed))
                if with_findings:  # the findings match added, its weight chosen on the val cases
                    weight, _ = choose_findings_weight(cached, table, "val", ("train",), relevant=args.relevant)
                    weights.setdefault(kind, []).append(weight)
                    pq = scores_search(q, g, hybrid_scores(q, g, s, weight), exclude, relevant=args.relevant, ks=KS)
                    per_query.setdefault(f"{kind}+findings", []).append(pq.assign(fold=fold, seed=seed))
                if fold in triplets:
                    pq, _ = modify_search(cached, table, triplets[fold], split="test", ks=KS)
                    modify_pq.setdefault(kind, []).append(pq.assign(fold=fold, seed=seed))
                if kind == "full" and with_findings:  # the ablation over fixed weights
                    for w in args.hybrid_weights:
                        pq = scores_search(q, g, hybrid_scores(q, g, s, w), exclude, relevant=args.relevant, ks=KS)
                        per_query.setdefault(f"full+findings@{w:g}", []).append(pq.assign(fold=fold, seed=seed))
                if kind == "full" and args.alpha_grid:

                    def scored(split: str, gallery: tuple, alpha: float) -> pd.DataFrame:
                        return scores_search(*case_scores(cached, table, split, gallery, alpha=alpha),
                                             relevant=args.relevant, ks=KS)

                    on_val = {a: _macro_map10(scored("val", ("train",), a), args.relevant) for a in args.alpha_grid}
                    chosen = max(args.alpha_grid, key=lambda a: (on_val[a], -a))
                    alphas["learned"].append(round(model.alpha, 3))
                    alphas["chosen on val"].append(chosen)
                    for name, a in (("full@alpha=0", 0.0), ("full@alpha=val", chosen)):
                        pq = scored("test", ("train", "val"), a)
                        per_query.setdefault(name, []).append(pq.assign(fold=fold, seed=seed))
                print(f"seed {seed} fold {fold} {kind}: best epoch {result.best.get('epoch')} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)

    # every query is asked once per seed: average each query's metrics over the seeds
    averaged = seed_average(per_query, ["case_id"])
    records, diff_table = summarise(averaged, "case", args.n_boot)
    counts = cases[args.relevant].value_counts().to_dict()
    print(f"\n{args.data}: {len(cases)} cases, {args.folds}-fold CV by patient (every case a query once), "
          f"relevant = same {args.relevant} {counts}; seeds {args.seeds}; {args.epochs} epochs, "
          f"{args.image_size} px, backbone {args.backbone}")
    show(records, diff_table)
    mod_averaged, mod_records, mod_diffs = {}, [], pd.DataFrame()
    if modify_pq:
        mod_averaged = seed_average(modify_pq, ["case_id", "modification_text"])
        mod_records, mod_diffs = summarise(mod_averaged, "modify", args.n_boot)
        n_mod = len(next(iter(mod_averaged.values())))
        print(f"\nModification queries (derived: a test reference image + 'with <finding>', up to "
              f"{args.modify_per_case} per reference, {n_mod} in all; relevant = gallery cases with that finding "
              "and the reference's diagnosis group):")
        show(mod_records, mod_diffs)
    if outputs:  # written atomically: a crash or a full disk leaves the previous file or none, never half of one
        with atomic_path(outputs["per_query"]) as part:
            # dermretr's per-query layout (run, method, protocol first), so is_per_query_file knows it again
            pd.concat([pq.assign(run=m, method=m.removeprefix("floor:"), protocol=protocol)
                       [["run", "method", "protocol", *pq.columns.drop(["run", "method", "protocol"], errors="ignore")]]
                       for protocol, tables in (("case", averaged), ("modify", mod_averaged))
                       for m, pq in tables.items()]).to_csv(part, index=False)
        with atomic_path(outputs["records"]) as part:
            part.write_text(json.dumps(records + mod_records, indent=1, default=str))
    summary = {"benchmark": "real", "data": args.data, "cases": len(cases), "folds": args.folds,
               "seeds": args.seeds, "epochs": args.epochs, "image_size": args.image_size,
               "backbone": args.backbone, "relevant": args.relevant,
               "train_seconds": {k: round(v, 1) for k, v in seconds.items()},
               "best_epochs": best_epochs, "alphas": alphas,
               "findings_weights": weights, "wall_s": round(time.perf_counter() - t_all, 1),
               "results": _results(records),
               "paired": _rounded(diff_table), "modify_results": _results(mod_records),
               "modify_paired": _rounded(mod_diffs)}
    print(json.dumps(summary))


def seed_average(per_query: dict[str, list[pd.DataFrame]], keys: list[str]) -> dict[str, pd.DataFrame]:
    """Each method's per-query metrics averaged over the training seeds (a query = one value of ``keys``)."""
    averaged = {}
    for method, parts in per_query.items():
        frame = pd.concat(parts, ignore_index=True)
        metric_cols = [c for c in frame.columns if "@" in c or c == "mrr"]
        info = [c for c in frame.columns if c not in metric_cols and c not in ("fold", "seed", *keys)]
        averaged[method] = frame.groupby(keys, sort=True, observed=True).agg(
            {**{c: "first" for c in info}, **{c: "mean" for c in metric_cols}}).reset_index()
    return averaged


def summarise(averaged: dict[str, pd.DataFrame], protocol: str, n_boot: int) -> tuple[list[dict], pd.DataFrame]:
    """Micro and macro records of every method, and the paired differences of full and full+findings."""
    records = []
    for method, pq in averaged.items():
        records += metric_records(pq, run=method, method=method.removeprefix("floor:"), protocol=protocol,
                                  n_boot=n_boot, average=("micro", "macro"))
    diffs = []
    for lead in ("full", "full+findings"):  # the composed model, and its hybrid with the findings match
        for method, pq in averaged.items() if lead in averaged else ():
            if method == lead:
                continue
            for average in ("micro", "macro"):
                d = paired_difference(averaged[lead], pq, metrics=SHOWN, n_boot=n_boot, average=average)
                diffs.append(d.rename_axis("metric").reset_index().assign(lead=lead, vs=method, average=average))
    return records, pd.concat(diffs, ignore_index=True) if diffs else pd.DataFrame()


def show(records: list[dict], diff_table: pd.DataFrame) -> None:
    table = results_table(records)
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_rows", 200):
        shown = [c for c in table.columns if c.split(" ")[0] in SHOWN] + ["queries"]
        print(table[[c for c in shown if c in table.columns]].to_string())
        for lead, part in diff_table.groupby("lead", sort=False) if len(diff_table) else ():
            print(f"\n{lead} minus each method, paired over the same queries (95% bootstrap CI, sign-flip p):")
            print(part.drop(columns="lead").to_string(index=False, float_format=lambda v: f"{v:+.3f}"))


def _results(records: list[dict]) -> dict[str, list]:
    """The shown metrics of ``records`` for the JSON line: value, CI low, CI high."""
    out = {}
    for r in records:
        metric = f"{r['metric']}@{r['k']}" if r["k"] is not None else r["metric"]
        if metric in SHOWN:
            name = r["run"] + ("" if r.get("average", "micro") == "micro" else " (macro)") + " " + metric
            out[name] = [round(r["value"], 4), r["ci_low"] and round(r["ci_low"], 4),
                         r["ci_high"] and round(r["ci_high"], 4)]
    return out


def _rounded(diff_table: pd.DataFrame) -> list[dict]:
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in diff_table.to_dict("records")]


if __name__ == "__main__":
    try:
        main()
    except DermretrError as exc:  # bad input (data, --out, settings): one line, exit code 2
        print(f"bench_real: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
