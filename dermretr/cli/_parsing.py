"""Argument types and the parser class of the command line (one-line usage errors, exit code 2)."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["Parser", "parse_seed", "parse_artifacts"]


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


def parse_artifacts(text: str):
    from ..data.synth import Artifacts

    text = text.strip().lower()
    if text == "all":
        return Artifacts()
    if text == "none":
        return Artifacts.none()
    return Artifacts.from_names(text.split(","))

