"""The ``dermretr`` command line.

Errors caused by input (bad values, unusable paths) are printed as one line
``dermretr: error: ...`` without a traceback, and the exit code is 2.

Commands
--------
demo
    The main job, end to end: generate DermSynth, train the composed model
    and its baselines, evaluate (case and modify protocols, with CIs), build
    an index, run an example query and write report.html (``--fast``: under
    2 minutes).
synth
    Generate a DermSynth dataset folder (Derm7pt layout).
info
    Summarise a dataset given as SOURCE:PATH (cases, images found and
    missing, per diagnosis, per skin type, splits).
train
    Train a composed retriever (or a baseline) into a run folder.
evaluate
    Evaluate run folders on a dataset (protocol case, modify or tone): one
    table with bootstrap CIs across the runs, and metrics.json.
index
    Encode a dataset with a trained run and write a search index folder.
search
    Search an index with a reference image and descriptor text.
fairness
    Slice a run's retrieval quality by skin tone (Fitzpatrick, pairs, Monk,
    labelled or estimated ITA): per-group metrics with CIs, the gap and its
    p-value, exposure of skin tones in the top-k, optionally against a
    baseline run; CSV tables and figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from ._errors import DermretrError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit with code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seed(text: str) -> int:
    """A seed: a non-negative integer (what numpy's generators take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: give a whole number such as 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid seed {value}: seeds are whole numbers >= 0")
    return value


def _artifacts(text: str):
    from .data.synth import Artifacts

    text = text.strip().lower()
    if text == "all":
        return Artifacts()
    if text == "none":
        return Artifacts.none()
    return Artifacts.from_names(text.split(","))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dermretr`` command."""
    parser = _Parser(prog="dermretr", description="Composed vision-language retrieval of skin-lesion cases.")
    parser.add_argument("--version", action="version", version=f"dermretr {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an internal error (also DERMRETR_DEBUG=1; any position)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="run the main job end to end on DermSynth data",
                          description="Generate DermSynth, train the composed model and its baselines, evaluate "
                                      "both protocols, build an index, and write report.html.")
    demo.add_argument("--out", default="dermretr-demo", help="output folder (default: ./dermretr-demo)")
    demo.add_argument("--fast", action="store_true",
                      help="a small, quick version (160 cases, 64 px, 3 epochs; under 2 minutes)")
    demo.add_argument("--n-cases", type=int, default=None, help="DermSynth cases (default: 500, fast: 160)")
    demo.add_argument("--image-size", type=int, default=None, help="image side in px (default: 96, fast: 64)")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs per model (default: 12, fast: 3)")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    synth = sub.add_parser("synth", help="generate a DermSynth dataset (Derm7pt folder layout)",
                           description="Generate procedural dermoscopy cases with 7-point criteria, "
                                       "ground-truth masks, patient splits and modification triplets.")
    synth.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    synth.add_argument("--n-cases", type=int, default=1000, help="number of cases (default: 1000)")
    synth.add_argument("--seed", type=_seed, default=0, help="master seed: same seed, same bytes (default: 0)")
    synth.add_argument("--image-size", type=int, default=224, help="image side in px, >= 64 (default: 224)")
    synth.add_argument("--priors", choices=("clinical", "uniform"), default="clinical",
                       help="criteria driven by the diagnosis (clinical) or drawn uniformly (default: clinical)")
    synth.add_argument("--artifacts", default="all",
                       help="comma-separated subset of hair,ruler,bubbles,vignette,illumination,jpeg; "
                            "or 'all' / 'none' (default: all)")
    synth.add_argument("--modification-rate", type=float, default=0.25,
                       help="fraction of lesions with modification variants (default: 0.25)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    synth.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    info = sub.add_parser("info", help="summarise a dataset (SOURCE:PATH)",
                          description="Load a dataset from its publisher's folder layout and summarise it: cases, "
                                      "images found and missing, per diagnosis, per skin type, splits.")
    info.add_argument("spec", help="SOURCE:PATH, e.g. derm7pt:~/data/release_v0 or synthetic:./dermsynth")
    info.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                      help="a loader option, e.g. -o image=clinic or -o pattern={md5hash}.jpg (repeatable)")
    train = sub.add_parser("train", help="train a composed retriever or a baseline",
                           description="Train on SOURCE:PATH; RUN_DIR gets config.json, metrics.jsonl, "
                                       "checkpoints/{last,best}.pt and training_curve.png.")
    train.add_argument("--data", required=True, help="SOURCE:PATH, e.g. synthetic:./dermsynth")
    train.add_argument("--out", required=True, help="run folder (RUN_DIR)")
    train.add_argument("--model", default="full",
                       help="full (global+local, default), global, clip4cir, late_fusion, image or text")
    train.add_argument("--backbone", default="dermretr-tiny",
                       help="open_clip architecture, hf-hub:ORG/REPO or local-dir:PATH (default: dermretr-tiny)")
    train.add_argument("--pretrained", default=None, help="open_clip pretrained tag or a local weights file")
    train.add_argument("--epochs", type=int, default=15)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--image-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--n-masks", type=int, default=4)
    train.add_argument("--alpha", type=float, default=0.6, help="initial weight of local evidence (default 0.6)")
    train.add_argument("--fixed-alpha", action="store_true", help="keep alpha fixed instead of learning it")
    train.add_argument("--freeze-backbone", action="store_true", help="train only the heads")
    train.add_argument("--no-text-skip", action="store_true",
                       help="ablation: composers without the text skip (they start as image-only retrieval, "
                            "not as late fusion; the composer of runs before checkpoint format 4)")
    train.add_argument("--patient-weight", type=float, default=0.0, help="SLIMP-style patient-level term")
    train.add_argument("--word-region-weight", type=float, default=0.0, help="AFLoc-style word-region term")
    train.add_argument("--tone-triplets", action="store_true",
                       help="also train on tone triplets (\"this case, on darker skin\", derived from skin-type "
                            "labels): needed for the tone protocol, at a cost to case and modification search")
    train.add_argument("--no-modifications", action="store_true", help="no triplets: neither DermSynth's modification triplets nor the tone triplets "
                            "derived from skin-type labels")
    train.add_argument("--balance-by", default="diagnosis_group",
                       help="columns whose combinations are sampled equally often, e.g. diagnosis_group,fitzpatrick "
                            "(default: diagnosis_group)")
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--no-progress", action="store_true")

    evaluate = sub.add_parser(
        "evaluate", help="evaluate run folders (baselines and the composed model) with bootstrap CIs",
        description="Evaluate each RUN_DIR's checkpoints/best.pt on SOURCE:PATH, print one table across the runs "
                    "(Recall/Precision/mAP/nDCG@K and MRR with 95%% bootstrap CIs) and write metrics.json.")
    evaluate.add_argument("--run", nargs="+", required=True, metavar="RUN_DIR", help="run folder(s) to evaluate")
    evaluate.add_argument("--data", required=True, help="SOURCE:PATH, e.g. synthetic:./dermsynth")
    evaluate.add_argument("--protocol", choices=("case", "modify", "tone"), default="case",
                          help="case: test image + its findings text; modify: reference image + modification "
                               "text; tone: test image + its findings + another skin-tone range ('this condition, "
                               "on darker skin'; needs skin-tone labels) (default: case)")
    evaluate.add_argument("--tone-scale", choices=("fitzpatrick", "monk", "ita"), default="fitzpatrick",
                          help="tone protocol: skin-tone ranges of Fitzpatrick types (I-II, III-IV, V-VI), Monk tones "
                               "(1-3, 4-7, 8-10) or ITA categories estimated from the pixels (default: fitzpatrick)")
    evaluate.add_argument("--tone-style", choices=("scale", "plain"), default="scale",
                          help="tone protocol: the phrase names the range ('on Fitzpatrick type V-VI skin') or a "
                               "plain word ('on darker skin') (default: scale)")
    evaluate.add_argument("--out", required=True, help="metrics file to write (JSON list of records)")
    evaluate.add_argument("--relevant", choices=("diagnosis_group", "diagnosis"), default="diagnosis_group",
                          help="case and tone protocols: relevant = same diagnosis group or same fine diagnosis")
    evaluate.add_argument("--split", choices=("test", "val"), default="test", help="query split (default: test)")
    evaluate.add_argument("--k", type=int, nargs="+", default=[1, 5, 10], help="cut-offs (default: 1 5 10)")
    evaluate.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples, 0 for none (default: 1000)")
    evaluate.add_argument("--seed", type=_seed, default=0, help="bootstrap and derived-triplet seed (default: 0)")
    evaluate.add_argument("--per-query", default=None, metavar="CSV", help="also write per-query metrics here")
    evaluate.add_argument("--floors", nargs="*",
                          choices=("random", "majority", "criteria_match", "filter_only", "none"),
                          default=None, metavar="FLOOR",
                          help="non-learned rankings shown beside the runs: random (expected value), and for the "
                               "case protocol majority (most common group first), criteria_match (annotated 7-point "
                               "findings), for the tone protocol filter_only (target skin-tone range first, "
                               "diagnosis ignored); default: every floor the data and protocol allow; 'none' for none")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    evaluate.add_argument("--no-progress", action="store_true")
    _add_index_commands(sub)
    _add_fairness_command(sub)
    return parser


def _cmd_train(args) -> int:
    from .train import TrainConfig, fit

    config = TrainConfig(
        data=args.data, out=args.out, model=args.model, backbone=args.backbone, pretrained=args.pretrained,
        epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size, lr=args.lr,
        n_masks=args.n_masks, alpha=args.alpha, learn_alpha=not args.fixed_alpha,
        freeze_backbone=args.freeze_backbone, text_skip=not args.no_text_skip, patient_weight=args.patient_weight,
        word_region_weight=args.word_region_weight, modifications=not args.no_modifications,
        tone_triplets=args.tone_triplets,
        balance_by=args.balance_by, seed=args.seed, device=args.device, resume=args.resume,
        progress=not args.no_progress,
    )
    try:
        result = fit(config)
    except KeyboardInterrupt:
        print("dermretr: training interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130
    best = result.best
    print(f"best epoch {best.get('epoch')}: {best.get('metric')} = {best.get('value', float('nan')):.4f}; "
          f"run in {result.run_dir}")
    return 0


def _options(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DermretrError(f"loader option {pair!r} must look like KEY=VALUE")
        out[key.strip()] = value.strip()
    if "missing" in out:
        raise DermretrError("option 'missing' is set by `dermretr info` itself (it counts missing images)")
    return out


def _cmd_info(args) -> int:
    import os

    from .data import load, parse_spec

    source, path = parse_spec(args.spec)
    try:
        cases = load(source, os.path.expanduser(path), missing="keep", **_options(args.option))
    except TypeError as exc:  # an option the loader does not take
        raise DermretrError(f"{source}: {exc}") from None
    found = cases["image_path"].map(os.path.isfile)
    print(f"{args.spec}: {len(cases)} cases from {cases['patient_id'].nunique()} patients")
    print(f"images found: {int(found.sum())}, missing: {int((~found).sum())}")
    if (~found).any():
        print("missing, e.g.: " + ", ".join(cases.loc[~found, "image_path"].head(5)))
    _print_summary(cases)
    return 0


def _print_summary(cases, out=None) -> None:
    import pandas as pd

    from .data import summarize_cases

    out = out or sys.stdout
    tables = summarize_cases(cases)
    with pd.option_context("display.max_rows", 200, "display.width", 120):
        for title, key in (("Cases per diagnosis", "diagnosis"), ("Cases per criterion value", "criteria"),
                           ("Cases per Fitzpatrick skin type", "fitzpatrick"), ("Splits", "splits")):
            print(f"\n{title}\n{'-' * len(title)}\n{tables[key].to_string()}", file=out)


def _cmd_synth(args) -> int:
    from .data.synth import generate

    root = generate(args.out, n_cases=args.n_cases, seed=args.seed, image_size=args.image_size,
                    artifacts=_artifacts(args.artifacts), priors=args.priors,
                    modification_rate=args.modification_rate, workers=args.workers,
                    overwrite=args.overwrite, progress=not args.no_progress)
    print(f"DermSynth: {args.n_cases} cases written to {root}")
    return 0


def _cmd_demo(args) -> int:
    import pandas as pd

    from .data import load
    from .demo import demo_settings, run_demo

    settings = demo_settings(fast=args.fast, n_cases=args.n_cases, image_size=args.image_size,
                             epochs=args.epochs, seed=args.seed, workers=args.workers)
    mode = "fast" if args.fast else "full"
    print(f"dermretr demo ({mode}): {settings.n_cases} DermSynth cases, {settings.image_size} px, "
          f"{settings.epochs} epochs for each of {', '.join(settings.kinds)}")
    result = run_demo(args.out, settings, progress=not args.no_progress)
    cases = load("synthetic", result.out / "dermsynth")
    print(f"\n{len(cases)} cases from {cases['patient_id'].nunique()} patients")
    _print_summary(cases)
    shown = [c for c in ("recall@1", "recall@1 (macro)", "map@10", "map@10 (macro)", "mrr", "queries")
             if c in result.table.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print("\nResults on the test split (95% bootstrap CIs; floor: no model; (macro): mean over diagnosis groups)\n"
              + result.table[shown].to_string())
        if result.fairness:
            print("\nComposed model by skin type (Fitzpatrick pairs)\n" + result.fairness["slices"].to_string())
    print("\nExample composed query, top results:")
    cols = [c for c in ("rank", "case_id", "diagnosis", "fitzpatrick", "score", "s_global", "s_local")
            if c in result.example.columns]
    print(result.example[cols].to_string(index=False))
    total = sum(result.seconds.values())
    print(f"\nContact sheet written to {result.out / 'contact_sheet.png'}")
    print(f"Metrics written to {result.metrics}")
    print("Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()))
    print(f"Report written to {result.report} ({total:.0f} s)")
    return 0


def _cmd_evaluate(args) -> int:
    import os

    import pandas as pd

    from ._io import atomic_path, claim_file
    from .data import load, parse_spec
    from .evaluate import (evaluate_run, is_metrics_file, is_per_query_file, load_triplets, results_table,
                           run_checkpoint, tone_queries, with_tone_estimate, write_metrics)
    from .floors import available_floors, evaluate_floors

    notes = {"random": "random = expected value under a uniformly random ranking",
             "majority": f"majority = the gallery's most common {args.relevant} first",
             "criteria_match": "criteria_match = ranked by agreement of annotated 7-point findings",
             "filter_only": "filter_only = gallery cases in the target skin-tone range first, in random order "
                            f"(expected value), {args.relevant} ignored"}

    source, path = parse_spec(args.data)
    root = Path(os.path.expanduser(path))
    out = claim_file(args.out, option="--out", recognise=is_metrics_file)  # before the long part
    per_query_out = (claim_file(args.per_query, option="--per-query", recognise=is_per_query_file)
                     if args.per_query else None)
    if per_query_out is not None and per_query_out == out:
        raise DermretrError("--out and --per-query name the same file; give two names")
    for run in args.run:
        run_checkpoint(run)  # every run folder is checked before the long part
    names = [Path(r).expanduser().name or str(r) for r in args.run]
    if len(set(names)) < len(names):
        names = [str(r) for r in args.run]
    if len(set(names)) < len(names):
        raise DermretrError(f"the same run folder is given twice: {' '.join(args.run)}")
    cases = load(source, root)
    triplets = load_triplets(root) if args.protocol == "modify" else None
    tone = None
    if args.protocol == "tone":  # bad data (no skin-tone labels...) fails before the long part
        scale, style = getattr(args, "tone_scale", "fitzpatrick"), getattr(args, "tone_style", "scale")
        labelled = cases
        cases = with_tone_estimate(cases, scale, progress=not args.no_progress)
        scale_name = {"fitzpatrick": "Fitzpatrick", "monk": "Monk", "ita": "ITA"}[scale] + (
            " (estimated from the pixels now)" if cases is not labelled else
            " (estimated)" if scale == "ita" else "")
        tone = tone_queries(cases, args.split, scale=scale, relevant=args.relevant, style=style, texts=False)
    # non-learned floors (case and tone protocols): --floors NAME... / none; absent = every floor the data allows
    wanted = getattr(args, "floors", None)
    floors = (available_floors(cases, args.split, protocol=args.protocol) if wanted is None
              else tuple(f for f in wanted if f != "none"))
    floor_pq, floor_recs = None, []
    if floors and args.protocol in ("case", "tone"):  # cheap, and bad data fails before the long part
        clash = sorted({f"floor:{f}" for f in floors} & set(names))
        if clash:
            raise DermretrError(f"run folder {clash[0]!r} is named like a floor's rows; rename it")
        floor_pq, floor_recs = evaluate_floors(cases, floors, split=args.split, relevant=args.relevant, ks=args.k,
                                               n_boot=args.n_boot, seed=args.seed, protocol=args.protocol,
                                               tone_scale=getattr(args, "tone_scale", "fitzpatrick"))
    records, per_query = [], []
    extra = {"tone_scale": scale, "tone_style": style} if tone is not None else {}
    for run, name in zip(args.run, names):
        pq, recs = evaluate_run(run, cases, args.protocol, triplets=triplets, split=args.split,
                                relevant=args.relevant, ks=args.k, n_boot=args.n_boot, seed=args.seed,
                                batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
                                name=name, **extra)
        records += recs
        per_query.append(pq)
    records += floor_recs
    if floor_pq is not None:
        per_query.append(floor_pq)
    if args.protocol == "tone":
        what = (f"{args.split} image + a phrase naming another {scale_name} skin-tone range + its findings; relevant = "
                f"same {args.relevant} with a skin tone in the target range, own patient excluded; "
                f"{len(tone.info)} queries, skipped: {tone.skipped['no_relevant']} (case, range) pairs without a "
                f"relevant gallery case and {tone.skipped['unknown_tone']} cases without a known skin tone")
    elif args.protocol == "case":
        what = f"{args.split} image + its findings text (never the diagnosis); relevant = same {args.relevant}"
    else:
        what = "reference image + modification text; " + (
            "relevant = the exact target (DermSynth triplets)" if triplets is not None else
            "relevant = requested criterion value and same diagnosis group (derived)")
    ci = f"95% bootstrap CI over queries, {args.n_boot} resamples" if args.n_boot else "no CI"
    print(f"Protocol {args.protocol} on {args.data} ({what}; {ci})")
    if args.protocol == "tone":
        print("(macro) = mean over target skin-tone ranges of the per-range means, CI resampled within ranges")
    else:
        print("(macro) = mean over diagnosis groups of the per-group means, CI resampled within groups")
    if floor_recs:
        print("Floors (no model): " + "; ".join(notes[f] for f in floors))
    elif floors or args.protocol == "modify":
        print("Floors are computed for the case and tone protocols only: this modify table has none")
    with pd.option_context("display.width", 1000, "display.max_columns", None, "display.max_colwidth", None):
        table = results_table(records)  # one row per run; printed with one column per run to fit a terminal
        table.index = [f"{method} (floor)" if str(run).startswith("floor:") else f"{run} ({method})"
                       for run, method, *_ in table.index]
        print(table.T.to_string())
    out = write_metrics(records, out)
    print(f"\nmetrics written to {out}")
    if per_query_out is not None:
        with atomic_path(per_query_out) as tmp:
            pd.concat(per_query, ignore_index=True).to_csv(tmp, index=False)
        print(f"per-query metrics written to {per_query_out}")
    return 0


_INDEX_KINDS = ("flat", "hnsw", "ivf", "ivfpq")  # dermretr.index.INDEX_KINDS (not imported: faiss loads slowly)


def _add_index_commands(sub) -> None:
    index = sub.add_parser("index", help="index a dataset for case search with a trained retriever",
                           description="Encode every case of SOURCE:PATH with RUN_DIR's checkpoint and write a "
                                       "search index folder (FAISS over global vectors, local vectors for exact "
                                       "re-ranking, the case table and manifest.json).")
    index.add_argument("--run", required=True, help="run folder of `dermretr train` (RUN_DIR)")
    index.add_argument("--data", required=True, help="SOURCE:PATH of the cases to index")
    index.add_argument("--out", required=True, help="index folder to write (INDEX_DIR)")
    index.add_argument("--kind", choices=_INDEX_KINDS, default="flat",
                       help="flat (exact), hnsw (graph), ivf (inverted lists) or ivfpq (compressed) (default: flat)")
    index.add_argument("--checkpoint", choices=("best", "last"), default="best",
                       help="RUN_DIR/checkpoints/{best,last}.pt (default: best)")
    index.add_argument("--batch-size", type=int, default=64)
    index.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    index.add_argument("--overwrite", action="store_true", help="replace an existing index in --out")
    index.add_argument("--no-progress", action="store_true")
    search = sub.add_parser("search", help="search an index with a reference image and descriptor text",
                            description="Composed case search: the reference image plus text against INDEX_DIR; "
                                        "the retriever is rebuilt from the checkpoint recorded in the index.")
    search.add_argument("--index", required=True, help="index folder written by `dermretr index`")
    search.add_argument("--image", required=True, help="reference lesion image")
    search.add_argument("--text", default="", help="descriptor or modification text (default: none)")
    search.add_argument("-k", type=int, default=10, help="results (default: 10)")
    search.add_argument("--alpha", type=float, default=None, help="override the weight of local evidence")
    search.add_argument("--filter", action="append", default=[], metavar="COLUMN=V1,V2",
                        help="keep cases whose COLUMN is one of the values, e.g. fitzpatrick=5,6 (repeatable)")
    search.add_argument("--rerank", type=int, default=None, help="candidates re-scored exactly (default: 100)")
    search.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    search.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def _filters(pairs: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        column, sep, values = pair.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not column.strip() or not items:
            raise DermretrError(f"filter {pair!r} must look like COLUMN=V1,V2 (e.g. fitzpatrick=5,6)")
        out.setdefault(column.strip(), []).extend(items)
    return out


def _cmd_index(args) -> int:
    import time
    from .data import load
    from .index import CaseIndex
    from .models.retriever import Retriever

    run = Path(args.run).expanduser()
    ckpt = run / "checkpoints" / f"{args.checkpoint}.pt"
    if not ckpt.is_file():
        raise DermretrError(f"{ckpt} not found: is {run} a run folder of `dermretr train`?")
    out = CaseIndex.check_output(args.out, overwrite=args.overwrite)  # before the long part
    retriever = Retriever.load(ckpt, device=args.device)
    cases = load(args.data)
    start = time.perf_counter()
    index = CaseIndex.build(retriever, cases, kind=args.kind, checkpoint=ckpt, batch_size=args.batch_size,
                            progress=not args.no_progress)
    index.save(out, overwrite=args.overwrite)
    m = index.manifest
    local = f"{m['n_masks']} local vectors each, alpha {m['alpha']:.2f}" if m["n_masks"] else "global vectors only"
    print(f"indexed {len(index)} cases ({m['kind']}, dim {m['dim']}, {local}) from {ckpt} in "
          f"{time.perf_counter() - start:.1f} s -> {out}")
    return 0


def _cmd_search(args) -> int:
    import pandas as pd

    from .index import CaseIndex

    filters = _filters(args.filter)
    index = CaseIndex.open(args.index, device=args.device)
    if args.rerank is not None:
        if args.rerank < 1:
            raise DermretrError(f"--rerank must be at least 1, got {args.rerank}")
        index.rerank = args.rerank
    hits = index.search(args.image, args.text, k=args.k, alpha=args.alpha, filters=filters)
    if args.text.strip() and hits.attrs.get("descriptors") == {}:
        print("dermretr: note: no 7-point checklist descriptor recognised in the text; it is used as free text",
              file=sys.stderr)
    if args.json:
        print(json.dumps(json.loads(hits.to_json(orient="records")), indent=2))
    elif len(hits) == 0:
        print("no results")
    else:
        with pd.option_context("display.width", 200, "display.max_colwidth", 40):
            print(hits[["rank", "case_id", "diagnosis", "score", "s_global", "s_local"]]
                  .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


_GROUPINGS = ("fitzpatrick", "fitzpatrick_pairs", "monk", "ita_category", "ita_category_estimated",
              "fitzpatrick_estimated")  # dermretr.fairness.GROUPINGS (not imported: fairlearn loads slowly)


def _add_fairness_command(sub) -> None:
    fair = sub.add_parser(
        "fairness", help="slice a run's retrieval quality by skin tone, with CIs, gaps and exposure",
        description="Evaluate RUN_DIR on SOURCE:PATH and report each skin-tone group's metrics with bootstrap CIs, "
                    "the overall value, the gap (max - min, with CI and permutation p-value) and ratio, and the "
                    "skin tones of the retrieved top-k against the gallery's. Writes CSV tables and PNG figures.")
    fair.add_argument("--run", required=True, metavar="RUN_DIR", help="run folder of `dermretr train`")
    fair.add_argument("--data", required=True, help="SOURCE:PATH, e.g. synthetic:./dermsynth")
    fair.add_argument("--by", choices=_GROUPINGS, default="fitzpatrick",
                      help="skin-tone grouping; *_estimated ones come from the pixels (default: fitzpatrick)")
    fair.add_argument("--protocol", choices=("case", "modify"), default="case", help="(default: case)")
    fair.add_argument("--metrics", nargs="+", default=["recall@1", "map@10"],
                      help="metrics to slice (default: recall@1 map@10)")
    fair.add_argument("--out", default=None, help="folder for tables and figures (default: RUN_DIR/fairness)")
    fair.add_argument("--baseline", default=None, metavar="RUN_DIR",
                      help="a run to compare against (e.g. before a mitigation): paired per-group differences")
    fair.add_argument("--estimate-ita", action="store_true",
                      help="also estimate skin tone from the pixels (ITA) and, with labels, report its confusion")
    fair.add_argument("--min-group", type=int, default=20, help="flag groups with fewer queries (default: 20)")
    fair.add_argument("--exposure-k", type=int, default=10, help="top-k of the exposure, 0 for none (default: 10)")
    fair.add_argument("--split", choices=("test", "val"), default="test", help="query split (default: test)")
    fair.add_argument("--n-boot", type=int, default=1000,
                      help="bootstrap resamples and permutations, 0 for none (default: 1000)")
    fair.add_argument("--seed", type=_seed, default=0)
    fair.add_argument("--batch-size", type=int, default=64)
    fair.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    fair.add_argument("--no-progress", action="store_true")


def _cmd_fairness(args) -> int:
    import pandas as pd

    from .fairness import GROUPING_TITLES, format_slices, is_fairness_folder, run_fairness

    from ._io import claim_dir

    out = Path(args.out).expanduser() if args.out else Path(args.run).expanduser() / "fairness"
    out = claim_dir(out, "fairness", recognise=is_fairness_folder, create=False)  # checked before the long part
    if args.min_group < 1:
        raise DermretrError(f"--min-group must be at least 1, got {args.min_group}")
    report = run_fairness(args.run, args.data, by=args.by, protocol=args.protocol, metrics=args.metrics,
                          split=args.split, n_boot=args.n_boot, min_group=args.min_group,
                          estimate=args.estimate_ita, exposure_k=args.exposure_k, baseline=args.baseline,
                          seed=args.seed, batch_size=args.batch_size, device=args.device,
                          progress=not args.no_progress)
    files = report.save(out)  # before printing: output piped into `head` still leaves the files
    title = GROUPING_TITLES[args.by]
    ci = f"95% bootstrap CI, {args.n_boot} resamples" if args.n_boot else "no CI"
    print(f"{report.run} ({report.method}), protocol {args.protocol} on {args.data}: {title}"
          f"{' (estimated from pixels)' if args.by.endswith('_estimated') else ''}; {ci}; "
          f"* = fewer than {args.min_group} queries")
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 80):
        print(format_slices(report.slices).to_string())
        if report.exposure is not None:
            e = report.exposure
            print(f"\nExposure: skin tones of the top-{e.attrs['k']} retrieved cases vs the gallery "
                  "(drift = mean retrieved tone - gallery's, on the scale's positions; < 0: towards lighter skin)")
            shown = e.set_index("group")
            print(shown.drop(columns=["drift_low", "drift_high"]).to_string(float_format=lambda v: f"{v:.2f}"))
        if report.confusion is not None:
            a = report.confusion.attrs
            print(f"\nEstimated vs labelled skin type (n={a['n']}): exact {a['exact']:.1%}, "
                  f"within one type {a['within_one']:.1%}\n{report.confusion.to_string()}")
        if report.comparison is not None:
            c = report.comparison
            print(f"\n{report.names[1]} vs {report.names[0]} (after - before, paired over the same queries):")
            print(c.drop(columns=["kind", "small"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{len(files)} files written to {out}: {', '.join(f.name for f in files)}")
    return 0


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("DERMRETR_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``dermretr: warning: ...`` line on stderr, never a source line."""
    text = " ".join(str(message).split())
    print(f"dermretr: warning: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dermretr`` command; returns the exit code.

    Errors caused by input or the environment (:class:`DermretrError`, and file
    system faults such as a full disk) print one line and return 2.  Any other
    exception is a bug: one line ``dermretr: internal error: ...`` and code 1,
    unless ``--debug`` or ``DERMRETR_DEBUG=1`` asks for the traceback (the
    exception is then raised as it is, which is also how the test suite runs).
    """
    import warnings

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"demo": _cmd_demo, "synth": _cmd_synth, "info": _cmd_info, "train": _cmd_train,
                "evaluate": _cmd_evaluate}
    commands.update(index=_cmd_index, search=_cmd_search)
    commands.update(fairness=_cmd_fairness)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        from ._errors import DataWarning
        from ._io import StaleTemporaryWarning

        for category in (DataWarning, StaleTemporaryWarning):
            warnings.simplefilter("always", category)
        try:
            return commands[args.command](args)
        except DermretrError as exc:
            print(f"dermretr: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # output piped into `head` and closed early
            sys.stderr.close()
            return 0
        except KeyboardInterrupt:
            print("dermretr: interrupted", file=sys.stderr)
            return 130
        except OSError as exc:  # a fault of the environment (disk full, permissions, a vanished file)
            if debug:
                raise
            where = f" {exc.filename}" if exc.filename else ""
            print(f"dermretr: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except MemoryError:
            if debug:
                raise
            print("dermretr: error: out of memory; use smaller data, images or batches (--batch-size)",
                  file=sys.stderr)
            return 2
        except Exception as exc:  # a bug: one line for the user, the traceback on request
            if debug:
                raise
            print(f"dermretr: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the "
                  "traceback, and please report it)", file=sys.stderr)
            return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
