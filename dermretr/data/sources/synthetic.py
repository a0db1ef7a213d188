"""Loader for DermSynth folders: the Derm7pt layout plus DermSynth's extra columns.

Text views: the seven 7-point criteria (like Derm7pt: ``descriptors`` and
``findings`` both hold the present criteria, no diagnosis).  Extra columns kept:
``lesion_id``, ``variant_of``, ``ita`` (ground-truth skin ITA), ``age``,
``sex``, ``mask`` (absolute path of the ground-truth mask PNG) and the
Derm7pt metadata columns.
"""

from __future__ import annotations

import os

import pandas as pd

from ..._errors import DermretrError
from ._common import dataset_root
from .derm7pt import load_derm7pt

LAYOUT = "a folder written by `dermretr synth --out DIR` (meta/meta.csv, meta/dermsynth.json, images/, masks/)"

__all__ = ["load_synthetic"]


def load_synthetic(root: str | os.PathLike, missing: str = "warn", seed: int = 0) -> pd.DataFrame:
    """Load a DermSynth folder written by :func:`dermretr.data.synth.generate`.

    ``missing`` and ``seed`` are as in :func:`~dermretr.data.sources.derm7pt.load_derm7pt`.

    >>> import tempfile, pathlib
    >>> from dermretr.data.synth import generate
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=6, image_size=64,
    ...                 workers=1, progress=False)
    >>> cases = load_synthetic(root)
    >>> cases["source"].unique().tolist(), int(cases["fitzpatrick"].notna().sum())
    (['synthetic'], 6)
    """
    root = dataset_root(root, "synthetic", LAYOUT)
    if not (root / "meta" / "dermsynth.json").is_file():
        raise DermretrError(
            f"{root} is not a DermSynth folder: {root / 'meta' / 'dermsynth.json'} not found "
            "(create one with `dermretr synth --out DIR`)"
        )
    cases = load_derm7pt(root, source="synthetic", missing=missing, seed=seed)
    if "mask" in cases.columns:
        cases["mask"] = [str(root / m) if isinstance(m, str) else pd.NA for m in cases["mask"]]
    for col in ("variant_of", "notes", "clinic"):
        if col in cases.columns:
            cases[col] = cases[col].fillna("")
    return cases
