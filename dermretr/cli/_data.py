"""``dermretr info``, ``synth`` and ``demo``: datasets and the end-to-end demo."""

from __future__ import annotations

import sys

from .._errors import DermretrError
from ._parsing import data_options, parse_artifacts

__all__ = ["cmd_info", "cmd_synth", "cmd_demo", "print_summary"]


def cmd_info(args) -> int:
    import os

    from ..data import load, parse_spec
    from ..data.sources._terms import licence_line

    source, path = parse_spec(args.spec)
    try:
        cases = load(source, os.path.expanduser(path), missing="keep", **(data_options(args.option, "info") or {}))
    except TypeError as exc:  # an option the loader does not take
        raise DermretrError(f"{source}: {exc}") from None
    found = cases["image_path"].map(os.path.isfile)
    print(f"{args.spec}: {len(cases)} cases from {cases['patient_id'].nunique()} patients")
    print(licence_line(source))
    print(f"images found: {int(found.sum())}, missing: {int((~found).sum())}")
    if (~found).any():
        print("missing, e.g.: " + ", ".join(cases.loc[~found, "image_path"].head(5)))
    _print_unreadable(cases.loc[found], decode=args.check_images, progress=not args.no_progress)
    print_summary(cases)
    return 0


def _print_unreadable(cases, decode: bool, progress: bool) -> None:
    """Name the images that training would stop at: empty files, or (``decode``) any that does not decode."""
    import os
    import warnings

    from .._errors import DataWarning
    from ..data.images import ImageDataset

    if decode:  # ImageDataset's own up-front check, the one on_error="skip" runs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # its summary warning: every file is listed below
            bad = [error.split("; ")[0] for error in ImageDataset(cases, on_error="skip", progress=progress)
                   .report["error"]]
    else:
        bad = [f"image file {p} is empty (0 bytes)" for p in cases["image_path"] if os.path.getsize(p) == 0]
    if decode or bad:
        print(f"unreadable images: {len(bad)}" + ("" if decode else " (empty files; --check-images decodes every "
                                                                     "image)"))
    for line in bad[:5]:
        print(f"  {line}")
    if len(bad) > 5:
        print(f"  ... and {len(bad) - 5} more")
    if bad:
        print("  training and indexing stop at the first of these: replace each with a JPEG or PNG image, or remove "
              "its row from the metadata")


def print_summary(cases, out=None) -> None:
    import pandas as pd

    from ..data import describe_split_source, split_source, summarize_cases

    out = out or sys.stdout
    tables = summarize_cases(cases)
    with pd.option_context("display.max_rows", 200, "display.width", 120):
        for title, key in (("Cases per diagnosis", "diagnosis"), ("Cases per criterion value", "criteria"),
                           ("Cases per Fitzpatrick skin type", "fitzpatrick"), ("Splits", "splits")):
            print(f"\n{title}\n{'-' * len(title)}\n{tables[key].to_string()}", file=out)
    print(f"split from: {describe_split_source(split_source(cases))}", file=out)


def cmd_synth(args) -> int:
    from ..data.synth import generate

    root = generate(args.out, n_cases=args.n_cases, seed=args.seed, image_size=args.image_size,
                    artifacts=parse_artifacts(args.artifacts), priors=args.priors,
                    modification_rate=args.modification_rate, workers=args.workers,
                    overwrite=args.overwrite, progress=not args.no_progress)
    print(f"DermSynth: {args.n_cases} cases written to {root}")
    return 0


def cmd_demo(args) -> int:
    import pandas as pd

    from ..data import load
    from ..demo import demo_mode, demo_settings, run_demo
    from ..demo_report import full_table

    settings = demo_settings(fast=args.fast, released=args.released, n_cases=args.n_cases,
                             image_size=args.image_size, epochs=args.epochs, seed=args.seed, workers=args.workers)
    if settings.released:
        print(f"dermretr demo (released model): {settings.n_cases} DermSynth cases, {settings.image_size} px, data "
              f"seed {settings.seed}; nothing is trained")
    else:
        print(f"dermretr demo ({demo_mode(settings)} sizes): {settings.n_cases} DermSynth cases, "
              f"{settings.image_size} px")
    result = run_demo(args.out, settings, progress=not args.no_progress)
    cases = load("synthetic", result.out / "dermsynth")
    print(f"\n{len(cases)} cases from {cases['patient_id'].nunique()} patients")
    print_summary(cases)
    shown = [c for c in ("recall@1", "recall@1 (macro)", "map@10", "map@10 (macro)", "mrr", "queries")
             if c in result.table.columns]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print("\nResults on the test split (95% bootstrap CIs; floor: no model; (macro): mean over diagnosis groups)\n"
              + full_table(result.table)[shown].to_string())
        if len(result.paired):
            print("\nFull minus each method and floor, same case queries, macro (95% CI; counts only when it "
                  "excludes 0)\n" + result.paired.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if result.fairness:
            print("\nComposed model by skin type (Fitzpatrick pairs)\n" + result.fairness["slices"].to_string())
    print("\nExample composed query, top results:")
    cols = [c for c in ("rank", "case_id", "diagnosis", "fitzpatrick", "score", "s_global", "s_local")
            if c in result.example.columns]
    print(result.example[cols].to_string(index=False))
    if result.findings:
        print("\nWhat the numbers say\n" + "\n".join(f"- {f}" for f in result.findings))
    total = sum(result.seconds.values())
    print(f"\nContact sheet written to {result.out / 'contact_sheet.png'}")
    print(f"Metrics written to {result.metrics}")
    print("Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()) + f" ({total:.0f} s in all)")
    print(f"\nNext steps\n- Open the report (one file, figures embedded: it can be mailed or put on a course page):"
          f"\n    {result.report}\n- Search the demo's index yourself (this is the example query; change --text):"
          f"\n    {result.search_command}")
    return 0

