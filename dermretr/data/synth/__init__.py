"""DermSynth: procedural dermoscopy images whose 7-point criteria are visible in the pixels.

* :func:`generate` writes a dataset folder in the Derm7pt layout (images,
  per-criterion ground-truth masks, splits by patient, modification triplets).
* :func:`ensure` generates it unless the folder already holds one with the
  same settings (notebooks call it on every run).
* :func:`render_case` renders one case in memory.
* :func:`load_masks` reads a case's ground-truth masks back.
* :mod:`.priors` holds the documented diagnosis -> criteria priors.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data.synth import generate, load_masks
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=6, image_size=64,
...                 workers=1, progress=False)
>>> masks = load_masks(root / "masks" / "s000" / "ds000001.png")
>>> sorted(masks)[:3]
['blue_whitish_veil', 'dots_and_globules', 'lesion']
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .dataset import FORMAT_VERSION, MIN_IMAGE_SIZE, generate, is_dermsynth, plan_cases
from .render import MASK_BITS, Artifacts, LesionSpec, Rendered, decode_masks, encode_masks, render_case

__all__ = [
    "generate",
    "ensure",
    "plan_cases",
    "render_case",
    "LesionSpec",
    "Artifacts",
    "Rendered",
    "load_masks",
    "encode_masks",
    "decode_masks",
    "MASK_BITS",
    "FORMAT_VERSION",
    "MIN_IMAGE_SIZE",
]


def load_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a DermSynth mask PNG into boolean masks (``"lesion"`` and one per criterion).

    The ``mask`` column of DermSynth's ``meta.csv`` gives the path relative to
    the dataset root.
    """
    with Image.open(path) as img:
        return decode_masks(np.asarray(img))


def ensure(root: str | os.PathLike, n_cases: int = 1000, image_size: int = 224, seed: int = 0, *,
           priors: str = "clinical", modification_rate: float = 0.25, artifacts: Artifacts | None = None,
           workers: int | None = None, replace: bool = True, progress: bool = True) -> Path:
    """The DermSynth dataset in ``root`` with these settings: generated unless it is there already.

    A complete DermSynth dataset in ``root`` (its ``meta/dermsynth.json``,
    ``meta.csv`` and every image it lists) generated with the same settings
    (see :func:`generate`; ``workers`` and ``progress`` do not change the
    bytes) is kept as it is.  A DermSynth dataset with other settings, or an
    incomplete one, is generated again in its place (with ``replace``; without
    it, an :class:`~dermretr._errors.OutputError` says so).  Any other folder
    is never touched: :func:`generate` refuses a folder it did not write.

    Returns
    -------
    Path
        The dataset folder (absolute).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> root = ensure(tmp / "ds", n_cases=6, image_size=64, workers=1, progress=False)
    >>> stamp = (root / "meta" / "meta.csv").stat().st_mtime_ns
    >>> ensure(tmp / "ds", n_cases=6, image_size=64, progress=False) == root  # the same settings: kept
    True
    >>> (root / "meta" / "meta.csv").stat().st_mtime_ns == stamp
    True
    """
    art = artifacts if artifacts is not None else Artifacts()
    wanted = dict(format_version=FORMAT_VERSION, generator="dermretr.data.synth", n_cases=n_cases, seed=seed,
                  image_size=image_size, priors=priors, modification_rate=modification_rate, artifacts=art.enabled())
    out = Path(root).expanduser().absolute() if isinstance(root, (str, os.PathLike)) else root
    dataset = isinstance(out, Path) and is_dermsynth(out)
    if dataset and _complete(out, wanted):
        return out
    return generate(root, n_cases=n_cases, seed=seed, image_size=image_size, artifacts=artifacts, priors=priors,
                    modification_rate=modification_rate, workers=workers, overwrite=dataset and replace,
                    progress=progress)


def _complete(root: Path, wanted: dict) -> bool:
    """Whether the DermSynth dataset ``root`` was generated with the settings ``wanted`` and lacks no image."""
    try:
        params = json.loads((root / "meta" / "dermsynth.json").read_text(encoding="utf-8"))
        if any(params.get(key) != value for key, value in wanted.items()):
            return False
        import pandas as pd

        meta = pd.read_csv(root / "meta" / "meta.csv", dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return False
    if len(meta) != wanted["n_cases"] or not {"derm", "mask"} <= set(meta.columns):
        return False
    return all((root / "images" / derm).is_file() for derm in meta["derm"]) and all(
        (root / mask).is_file() for mask in meta["mask"])
