"""Data: the case table, the 7-point vocabulary, DermSynth, loaders and splits.

``load(source, root)`` and the string form ``"SOURCE:PATH"`` (used by the CLI)
return a validated case table; loader options are keyword arguments
(``-o KEY=VALUE`` on the command line, :func:`loader_options` lists them).
``cases.attrs["split_source"]`` (:func:`split_source`) records where the
table's split came from: the publisher's split files, files the user gave, or
a split derived by :func:`~dermretr.data.splits.group_split`.  Sources: ``derm7pt``, ``pad-ufes-20``,
``fitzpatrick17k``, ``ddi``, ``scin``, ``ham10000``, ``isic2020``, ``ph2``
and ``synthetic`` (a DermSynth folder).  Nothing is ever downloaded: each loader
reads the folder exactly as its publisher distributes it.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> from dermretr.data.synth import generate
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=6, image_size=64,
...                 workers=1, progress=False)
>>> len(load(f"synthetic:{root}"))
6
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping

import pandas as pd

from .._errors import DermretrError
from .cases import CASE_COLUMNS, SPLITS, empty_cases, summarize_cases, validate_cases
from .splits import describe_split_source, split_source

__all__ = [
    "load",
    "parse_spec",
    "loader_options",
    "same_options",
    "format_options",
    "split_source",
    "describe_split_source",
    "SOURCES",
    "validate_cases",
    "empty_cases",
    "summarize_cases",
    "CASE_COLUMNS",
    "SPLITS",
]

#: Registered loaders: source name -> "module:function" under dermretr.data.sources,
#: imported when first used; each is ``function(root, **options) -> case table``.
SOURCES: dict[str, str] = {
    "derm7pt": "derm7pt:load_derm7pt",
    "pad-ufes-20": "pad_ufes20:load_pad_ufes20",
    "fitzpatrick17k": "fitzpatrick17k:load_fitzpatrick17k",
    "ddi": "ddi:load_ddi",
    "scin": "scin:load_scin",
    "ham10000": "ham10000:load_ham10000",
    "isic2020": "isic2020:load_isic2020",
    "ph2": "ph2:load_ph2",
    "synthetic": "synthetic:load_synthetic",
}


def _loader(source: str):
    module, func = SOURCES[source].split(":")
    return getattr(importlib.import_module(f"{__name__}.sources.{module}"), func)


def _check_source(source: object, spec: object = None) -> str:
    where = f" in {spec!r}" if spec is not None else ""
    if not isinstance(source, str):
        raise DermretrError(f"the data source must be a string, one of {', '.join(SOURCES)}; got "
                            f"{type(source).__name__} {source!r}")
    name = source.strip().lower()
    if not name:
        raise DermretrError(f"data spec {spec!r} has no source before ':'; it must look like SOURCE:PATH, for "
                            f"instance synthetic:./dermsynth; sources: {', '.join(SOURCES)}")
    if name not in SOURCES:
        raise DermretrError(f"unknown data source {name!r}{where}; sources: {', '.join(SOURCES)}")
    return name


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"SOURCE:PATH"`` into its parts, checking the source name.

    >>> parse_spec("derm7pt:/data/release_v0")
    ('derm7pt', '/data/release_v0')
    >>> parse_spec("derm7pt")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: data spec 'derm7pt' must look like SOURCE:PATH, ...
    """
    if isinstance(spec, os.PathLike) or not isinstance(spec, str):
        raise DermretrError(f"a data spec must be a string SOURCE:PATH, for instance synthetic:./dermsynth, got "
                            f"{type(spec).__name__} {spec!r}; sources: {', '.join(SOURCES)}")
    source, sep, path = spec.partition(":")
    if not sep or not path.strip():
        raise DermretrError(
            f"data spec {spec!r} must look like SOURCE:PATH, for instance synthetic:./dermsynth"
            f"{' (the path after the colon is missing)' if sep else ''}; sources: {', '.join(SOURCES)}"
        )
    return _check_source(source, spec), path


def load(source: str, root: str | os.PathLike | None = None, /, **options) -> pd.DataFrame:
    """Load a dataset into a validated case table.

    Parameters
    ----------
    source : str
        A source name (``"derm7pt"``, ``"synthetic"``), or a full spec
        ``"SOURCE:PATH"`` when ``root`` is omitted.
    root : path, optional
        The dataset folder, exactly as its publisher distributes it.
    **options
        Passed to the source's loader (see its documentation); an option the
        loader does not take is an error listing those it does.  ``source``
        and ``root`` are positional, so a loader option may be called
        ``source`` too (``load("derm7pt", root, source="my-copy")``).

    Raises
    ------
    DermretrError
        A bad source, spec, root or option (of an unknown name or a wrong
        type), and every error of the loader (missing or malformed files...).

    Examples
    --------
    >>> load("derm7pt", "/data", colour="red")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: unknown option 'colour' for data source 'derm7pt'; its options: image, ...
    """
    if root is None:
        source, root = parse_spec(source)
    source = _check_source(source)
    if isinstance(root, bytes) or not isinstance(root, (str, os.PathLike)):
        raise DermretrError(f"the dataset folder (root) of {source!r} must be a path (str or os.PathLike), got "
                            f"{type(root).__name__} {root!r}")
    _check_option_names(source, options)
    return _loader(source)(root, **options)


def loader_options(source: str) -> dict[str, object]:
    """The options the loader of ``source`` takes, and their defaults.

    >>> loader_options("derm7pt")
    {'image': 'derm', 'split_files': None, 'source': 'derm7pt', 'seed': 0, 'missing': 'warn'}
    """
    params = inspect.signature(_loader(_check_source(source))).parameters.items()
    return {name: p.default for name, p in params
            if name != "root" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_option_names(source: str, options: Mapping[str, object]) -> None:
    known = list(loader_options(source))
    unknown = [name for name in options if name not in known]
    if unknown:
        raise DermretrError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                            f"for data source {source!r}; its options: {', '.join(known) or 'none'}")


def _as_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_as_text(v) for v in value)
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def same_options(source: str, a: Mapping[str, object] | None, b: Mapping[str, object] | None) -> bool:
    """Whether two sets of loader options of ``source`` load the same way (defaults may be spelt out or left out).

    Values are compared as text (``seed=1`` and ``seed="1"`` agree; a list of split files and
    the string ``"A,B,C"`` too); unknown option names are an error.

    >>> same_options("derm7pt", {"image": "derm"}, {}), same_options("derm7pt", {"seed": "1"}, {"seed": 1})
    (True, True)
    >>> same_options("derm7pt", {"image": "clinic"}, None)
    False
    """
    def normal(options: Mapping[str, object] | None) -> dict[str, str]:
        options = dict(options or {})
        _check_option_names(source, options)
        defaults = loader_options(source)
        return {k: _as_text(v) for k, v in options.items() if _as_text(v) != _as_text(defaults[k])}

    return normal(a) == normal(b)


def format_options(options: Mapping[str, object] | None) -> str:
    """Loader options as the command line gives them (``-o KEY=VALUE ...``), or a phrase for none.

    >>> format_options({"image": "clinic", "split_files": ["a.csv", "b.csv", "c.csv"]})
    '-o image=clinic -o split_files=a.csv,b.csv,c.csv'
    >>> format_options({})
    "no -o options (the loader's defaults)"
    """
    if not options:
        return "no -o options (the loader's defaults)"
    return " ".join(f"-o {k}={_as_text(v)}" for k, v in options.items())
