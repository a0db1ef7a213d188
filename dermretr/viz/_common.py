"""Shared pieces of the figures: image thumbnails that never fail, and numbers formatted for captions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.images import ImageReadError, load_rgb

__all__ = ["load_thumbnail", "format_value"]


def load_thumbnail(path: str, size: int = 128) -> np.ndarray:
    """Read an image (EXIF orientation applied, any mode) as an RGB thumbnail array.

    A file that cannot be read gives a grey tile with a red cross instead of
    an error, so that one bad file does not break a whole figure.
    """
    try:
        img = load_rgb(path)
        img.thumbnail((size, size))
        return np.asarray(img)
    except ImageReadError:
        tile = np.full((size, size, 3), 200, dtype=np.uint8)
        idx = np.arange(size)
        tile[idx, idx] = tile[idx, size - 1 - idx] = (200, 0, 0)
        return tile


def format_value(value: Any, spec: str = ".3f") -> str:
    """A number as a caption shows it: ``format(value, spec)``, ``"?"`` when missing, ``str`` when not a number.

    The captions of :func:`~dermretr.viz.gallery` and of the notebook widgets use it.

    >>> format_value(0.91234), format_value(3, ".0f"), format_value(None), format_value(float("nan"))
    ('0.912', '3', '?', '?')
    >>> format_value("n/a")
    'n/a'
    """
    try:
        if value is None or pd.isna(value):
            return "?"
    except (TypeError, ValueError):
        pass
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)
