"""``dermretr train``: its options are generated from :class:`~dermretr.train.TrainConfig`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .._errors import DermretrError
from ._parsing import data_options, parse_seed

__all__ = ["TRAIN_FIELDS_NOT_OPTIONS", "add_train_options", "cmd_train"]


#: TrainConfig fields without a command-line option, and why.
TRAIN_FIELDS_NOT_OPTIONS = {"extra": "free-form JSON values, for Python callers",
                            "data_options": "-o KEY=VALUE (repeatable), as on every command that loads data"}
#: Extra spellings of TrainConfig's bool options: option -> (field, value it sets).
_TRAIN_FLAG_ALIASES = {"--fixed-alpha": ("learn_alpha", False)}
_TRAIN_TYPES: dict[str, Callable[[str], object]] = {"int": int, "float": float, "str": str, "str | None": str}


def _option(field: str) -> str:
    """The command-line option of a TrainConfig field: ``batch_size`` is ``--batch-size``."""
    return "--" + field.replace("_", "-")


def add_train_options(train: argparse.ArgumentParser) -> None:
    """One option per :class:`~dermretr.train.TrainConfig` field, from its type, default and docstring entry.

    ``batch_size`` is ``--batch-size``; a bool field is a ``--x/--no-x`` pair; a field without a
    default is required.  The help texts are :func:`~dermretr.train.field_docs`.
    """
    import dataclasses

    from ..train import TrainConfig, field_docs

    docs = field_docs()
    aliases = {f: (opt, value) for opt, (f, value) in _TRAIN_FLAG_ALIASES.items()}
    for f in dataclasses.fields(TrainConfig):
        if f.name in TRAIN_FIELDS_NOT_OPTIONS:
            continue
        option = _option(f.name)
        text = docs[f.name].replace("%", "%%").removesuffix(".")
        first = text.split(" ", 1)[0]
        if first[1:].isalpha() and first[1:].islower():  # "Training epochs" -> "training epochs"; "AdamW" stays
            text = text[0].lower() + text[1:]
        if f.type == "bool":
            shown = option if f.default else f"--no-{option[2:]}"
            train.add_argument(option, action=argparse.BooleanOptionalAction, default=f.default,
                               help=f"{text} (default: {shown})")
            if f.name in aliases:
                alias, value = aliases[f.name]
                train.add_argument(alias, dest=f.name, action="store_const", const=value, default=f.default,
                                   help=f"the same as --{'' if value else 'no-'}{option[2:]}")
        elif f.default is dataclasses.MISSING:
            train.add_argument(option, required=True, type=_TRAIN_TYPES[str(f.type)], help=text)
        else:
            kind = parse_seed if f.name == "seed" else _TRAIN_TYPES[str(f.type)]
            train.add_argument(option, type=kind, default=f.default, help=f"{text} (default: %(default)s)")


def cmd_train(args) -> int:
    import dataclasses
    import os

    from ..data import describe_split_source, format_options
    from ..train import RankStopped, TrainConfig, fit, run_data

    options = {f.name for f in dataclasses.fields(TrainConfig) if f.name not in TRAIN_FIELDS_NOT_OPTIONS}
    try:
        config = TrainConfig(**{name: getattr(args, name) for name in options},
                             data_options=data_options(args.option, "train") or {})
        config.check()  # fit checks again; here its messages can name the options
    except DermretrError as exc:  # "batch_size must be ..." names the option the user typed: --batch-size
        field = str(exc).split(" ", 1)[0]
        raise DermretrError(_option(field) + str(exc)[len(field):] if field in options else str(exc)) from None
    main_process = os.environ.get("RANK", "0").strip() in ("", "0")  # under torchrun only rank 0 speaks
    try:
        result = fit(config)
    except RankStopped:  # rank 0 failed and says why; the other processes stop quietly
        return 2
    except KeyboardInterrupt:
        if main_process:
            print("dermretr: training interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130
    if not main_process:
        return 0
    best = result.best
    print(f"best epoch {best.get('epoch')}: {best.get('metric')} = {best.get('value', float('nan')):.4f}; "
          f"run in {result.run_dir}")
    recorded = run_data(result.run_dir) or {}
    print(f"data: {config.data}, {format_options(config.data_options)}; split from: "
          f"{describe_split_source(recorded.get('data_split'))} (recorded in config.json)")
    return 0

