"""DermSynth: procedural dermoscopy images whose 7-point criteria are visible in the pixels.

* :func:`generate` writes a dataset folder in the Derm7pt layout (images,
  per-criterion ground-truth masks, splits by patient, modification triplets).
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

import os

import numpy as np
from PIL import Image

from .dataset import FORMAT_VERSION, MIN_IMAGE_SIZE, generate, plan_cases
from .render import MASK_BITS, Artifacts, LesionSpec, Rendered, decode_masks, encode_masks, render_case

__all__ = [
    "generate",
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
