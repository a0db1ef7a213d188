"""Data: the case table, the 7-point vocabulary, DermSynth, loaders and splits.

``load(source, root)`` and the string form ``"SOURCE:PATH"`` (used by the CLI)
return a validated case table.  Sources: ``derm7pt``, ``pad-ufes-20``,
``fitzpatrick17k``, ``ddi``, ``scin``, ``ham10000``, ``isic2020`` and
``synthetic`` (a DermSynth folder).  Nothing is ever downloaded: each loader
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
import os

import pandas as pd

from .._errors import DermretrError
from .cases import CASE_COLUMNS, SPLITS, empty_cases, summarize_cases, validate_cases

__all__ = [
    "load",
    "parse_spec",
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
    "synthetic": "synthetic:load_synthetic",
}


def _loader(source: str):
    module, func = SOURCES[source].split(":")
    return getattr(importlib.import_module(f"{__name__}.sources.{module}"), func)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"SOURCE:PATH"`` into its parts, checking the source name.

    >>> parse_spec("derm7pt:/data/release_v0")
    ('derm7pt', '/data/release_v0')
    """
    source, sep, path = str(spec).partition(":")
    if not sep or not path:
        raise DermretrError(
            f"data spec {spec!r} must look like SOURCE:PATH, for instance synthetic:./dermsynth; "
            f"sources: {', '.join(SOURCES)}"
        )
    source = source.strip().lower()
    if source not in SOURCES:
        raise DermretrError(f"unknown data source {source!r} in {spec!r}; sources: {', '.join(SOURCES)}")
    return source, path


def load(source: str, root: str | os.PathLike | None = None, **options) -> pd.DataFrame:
    """Load a dataset into a validated case table.

    Parameters
    ----------
    source : str
        A source name (``"derm7pt"``, ``"synthetic"``), or a full spec
        ``"SOURCE:PATH"`` when ``root`` is omitted.
    root : path, optional
        The dataset folder, exactly as its publisher distributes it.
    **options
        Passed to the source's loader.
    """
    if root is None:
        source, root = parse_spec(source)
    source = str(source).lower()
    if source not in SOURCES:
        raise DermretrError(f"unknown data source {source!r}; sources: {', '.join(SOURCES)}")
    return _loader(source)(root, **options)
