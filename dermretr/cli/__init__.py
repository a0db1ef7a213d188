"""The ``dermretr`` command line.

Errors caused by input (bad values, unusable paths) are printed as one line
``dermretr: error: ...`` without a traceback, and the exit code is 2.

Commands
--------
demo
    The main job, end to end: generate DermSynth, train the composed model
    and its baselines, evaluate (case and modify protocols, with CIs), build
    an index, run an example query and write report.html (``--fast``: a
    small version); it prints the time measured at its sizes first.
synth
    Generate a DermSynth dataset folder (Derm7pt layout).
info
    Summarise a dataset given as SOURCE:PATH (cases, images found and
    missing, per diagnosis, per skin type, splits and where they came from).

Every command that loads data (info, train, evaluate, index, search --data,
fairness) takes the loader's options as ``-o KEY=VALUE`` (repeatable, e.g.
``-o image=clinic``, ``-o split_files=TRAIN,VAL,TEST``); a run records them
in its config.json, and evaluate, index and fairness on that run reuse them.
Warnings are one line each, ``dermretr: warning: ...``.
train
    Train a composed retriever (or a baseline) into a run folder.
evaluate
    Evaluate run folders on a dataset (protocol case, modify or tone): one
    table with bootstrap CIs across the runs, and metrics.json.
index
    Encode a dataset with a trained run and write a search index folder.
search
    Search an index with a reference image and descriptor text.
serve
    Keep an index and its model loaded: every ``search --index`` of it
    then answers in well under a second (the one-off search spends its
    seconds importing torch and loading the model).
fairness
    Slice a run's retrieval quality by skin tone (Fitzpatrick, pairs, Monk,
    labelled or estimated ITA): per-group metrics with CIs, the gap and its
    p-value, exposure of skin tones in the top-k, optionally against a
    baseline run; CSV tables and figures.
"""


from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ._data import cmd_demo, cmd_info, cmd_synth
from ._evaluate import add_evaluate_command, cmd_evaluate
from ._fairness import GROUPINGS, add_fairness_command, cmd_fairness
from ._parsing import Parser, add_data_option, one_line_warnings, parse_seed, run_reporting
from ._search import add_index_commands, cmd_index, cmd_search
from ._serve import add_serve_command, cmd_serve
from ._train import TRAIN_FIELDS_NOT_OPTIONS, add_train_options, cmd_train

__all__ = ["main", "build_parser", "TRAIN_FIELDS_NOT_OPTIONS", "GROUPINGS"]



def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dermretr`` command."""
    parser = Parser(prog="dermretr", description="Composed vision-language retrieval of skin-lesion cases.")
    parser.add_argument("--version", action="version", version=f"dermretr {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an internal error (also DERMRETR_DEBUG=1; any position)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    demo = sub.add_parser("demo", help="run the main job end to end on DermSynth data",
                          description="Generate DermSynth, train the composed model and its baselines, evaluate "
                                      "both protocols, build an index, and write report.html; --released trains "
                                      "nothing and evaluates the released model instead.")
    demo.add_argument("--out", default="dermretr-demo", help="output folder (default: ./dermretr-demo)")
    demo.add_argument("--fast", action="store_true",
                      help="a small, quicker version (160 cases, 64 px, 3 epochs; 3 to 10 minutes on 2 cores)")
    demo.add_argument("--released", action="store_true",
                      help="no training: the same report for the released model dermretr/dermsynth-tiny on 1,000 "
                           "DermSynth cases it never saw (data seed 1001; 35 s to 4 minutes on 2 cores)")
    demo.add_argument("--n-cases", type=int, default=None,
                      help="DermSynth cases (default: 500, fast: 160, released: 1000)")
    demo.add_argument("--image-size", type=int, default=None, help="image side in px (default: 96, fast: 64)")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs per model (default: 12, fast: 3)")
    demo.add_argument("--seed", type=parse_seed, default=None, help="data, training and resampling seed "
                                                                     "(default: 0; released: 1001)")
    demo.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    synth = sub.add_parser("synth", help="generate a DermSynth dataset (Derm7pt folder layout)",
                           description="Generate procedural dermoscopy cases with 7-point criteria, "
                                       "ground-truth masks, patient splits and modification triplets.")
    synth.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    synth.add_argument("--n-cases", type=int, default=1000, help="number of cases (default: 1000)")
    synth.add_argument("--seed", type=parse_seed, default=0, help="master seed: same seed, same bytes (default: 0)")
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
    info.add_argument("--check-images", action="store_true",
                      help="decode every image and list the unreadable ones (without it, only missing and empty "
                           "files are found)")
    info.add_argument("--no-progress", action="store_true", help="hide the progress bar of --check-images")
    add_data_option(info)
    train = sub.add_parser("train", help="train a composed retriever or a baseline",
                           description="Train on SOURCE:PATH; RUN_DIR gets config.json, metrics.jsonl, "
                                       "checkpoints/{last,best}.pt and training_curve.png.  Data-parallel on "
                                       "several GPUs or CPU processes: torchrun --nproc_per_node N -m dermretr "
                                       "train ... (--batch-size is the global batch; see docs/scale.md).")
    add_train_options(train)
    add_data_option(train)

    add_evaluate_command(sub)
    add_index_commands(sub)
    add_serve_command(sub)
    add_fairness_command(sub)
    return parser


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("DERMRETR_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dermretr`` command; returns the exit code.

    Errors caused by input or the environment (:class:`DermretrError`, and file
    system faults such as a full disk) print one line and return 2.  Any other
    exception is a bug: one line ``dermretr: internal error: ...`` and code 1,
    unless ``--debug`` or ``DERMRETR_DEBUG=1`` asks for the traceback (the
    exception is then raised as it is, which is also how the test suite runs).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"demo": cmd_demo, "synth": cmd_synth, "info": cmd_info, "train": cmd_train,
                "evaluate": cmd_evaluate}
    commands.update(index=cmd_index, search=cmd_search, serve=cmd_serve)
    commands.update(fairness=cmd_fairness)
    with one_line_warnings():
        try:
            return run_reporting(commands[args.command], args, debug)
        except BrokenPipeError:  # output piped into `head` and closed early
            sys.stderr.close()
            return 0
        except KeyboardInterrupt:
            print("dermretr: interrupted", file=sys.stderr)
            return 130
