"""Argument types and the parser class of the command line (one-line usage errors, exit code 2)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from .._errors import DermretrError

__all__ = ["Parser", "parse_seed", "parse_artifacts", "add_data_option", "data_options", "show_warning", "one_line",
           "one_line_warnings", "run_reporting"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit with code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_seed(text: str) -> int:
    """A seed: a non-negative integer (what numpy's generators take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: give a whole number such as 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid seed {value}: seeds are whole numbers >= 0")
    return value


def parse_findings_weight(text: str) -> float | str:
    """``--findings-weight``: a number >= 0 or ``val``."""
    if text.strip().lower() == "val":
        return "val"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid findings weight {text!r}: give a number >= 0 such as 1, "
                                         "or val") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"invalid findings weight {text!r}: give a number >= 0 such as 1, or val")
    return value


def parse_artifacts(text: str):
    from ..data.synth import Artifacts

    text = text.strip().lower()
    if text == "all":
        return Artifacts()
    if text == "none":
        return Artifacts.none()
    return Artifacts.from_names(text.split(","))



def add_data_option(parser: argparse.ArgumentParser, from_run: bool = False) -> None:
    """``--option/-o KEY=VALUE`` (repeatable): the loader options of the data, alike on every command that loads it.

    ``from_run``: the command evaluates a run, whose options are the default (see
    :func:`dermretr.evaluate.data_options_for`).
    """
    default = ("; default: those RUN_DIR was trained with, when the data is of the same source" if from_run
               else "")
    parser.add_argument("--option", "-o", action="append", default=None, metavar="KEY=VALUE",
                        help="a loader option of the data (repeatable), e.g. -o image=clinic, or -o "
                             "split_files=TRAIN,VAL,TEST (index files, relative to the dataset folder unless "
                             f"absolute){default}; `dermretr info --help` and docs/datasets.md list them")


def data_options(pairs: Sequence[str] | None, command: str) -> dict[str, str] | None:
    """The ``-o KEY=VALUE`` pairs as a dict; None when none is given.

    ``missing`` is set by ``dermretr info`` itself, and ``missing=keep`` would keep cases whose
    image no other command can read.

    >>> data_options(["image=clinic", "split_files = a.csv,b.csv,c.csv"], "train")
    {'image': 'clinic', 'split_files': 'a.csv,b.csv,c.csv'}
    >>> data_options(None, "train") is None
    True
    """
    if pairs is None:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DermretrError(f"loader option {pair!r} must look like KEY=VALUE (e.g. -o image=clinic)")
        if key.strip() in out and out[key.strip()] != value.strip():
            raise DermretrError(f"loader option {key.strip()!r} is given twice ({out[key.strip()]!r} and "
                                f"{value.strip()!r}); give it once")
        out[key.strip()] = value.strip()
    if "missing" in out and command == "info":
        raise DermretrError("option 'missing' is set by `dermretr info` itself (it counts missing images)")
    if out.get("missing") == "keep":
        raise DermretrError(f"-o missing=keep keeps cases whose image file is missing, which `dermretr {command}` "
                            "cannot read: use missing=warn (drop them, the default) or missing=raise")
    return out


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``dermretr: warning: ...`` line on stderr, never a source line."""
    text = " ".join(str(message).split())
    print(f"dermretr: warning: {text}", file=sys.stderr)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within: warnings print as :func:`show_warning` lines, data and stale-file warnings every time."""
    import warnings

    from .._errors import DataWarning
    from .._io import StaleTemporaryWarning

    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        for category in (DataWarning, StaleTemporaryWarning):
            warnings.simplefilter("always", category)
        yield


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def run_reporting(command: Callable[[Any], int], args: Any, debug: bool = False) -> int:
    """``command(args)``, with failures as one line on stderr and an exit code instead of a traceback.

    Errors caused by input or the environment (:class:`DermretrError`, file system faults such as a
    full disk, running out of memory) print one line and return 2.  Any other exception is a bug:
    one line ``dermretr: internal error: ...`` and 1, unless ``debug`` (the exception is raised).
    """
    try:
        return command(args)
    except DermretrError as exc:
        print(f"dermretr: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except OSError as exc:  # a fault of the environment (disk full, permissions, a vanished file)
        if debug:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"dermretr: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            raise
        print("dermretr: error: out of memory; use smaller data, images or batches (--batch-size)", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if debug:
            raise
        print(f"dermretr: internal error: {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1
