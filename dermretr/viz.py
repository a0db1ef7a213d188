"""Figures: every function returns a matplotlib Figure (never only shows it).

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> from dermretr.data.synth import generate
>>> from dermretr.viz import contact_sheet
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=10, image_size=64,
...                 workers=1, progress=False)
>>> fig = contact_sheet(load("synthetic", root), by="diagnosis_group", per_group=2)
>>> len(fig.axes) > 0
True
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._errors import DermretrError
from .data.images import ImageReadError, load_rgb

__all__ = ["contact_sheet", "load_thumbnail"]


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


def contact_sheet(
    cases: pd.DataFrame,
    by: str = "diagnosis",
    per_group: int = 6,
    seed: int = 0,
    thumb: int = 128,
    max_groups: int = 25,
    title: str | None = None,
) -> Figure:
    """A grid of example cases: one row per value of ``by``, ``per_group`` images each.

    Parameters
    ----------
    cases : DataFrame
        A case table (needs ``image_path`` and the ``by`` column).
    by : str
        Column to group by (``"diagnosis"``, ``"diagnosis_group"``,
        ``"fitzpatrick"``, a criterion such as ``"blue_whitish_veil"``...).
    per_group : int
        Images per row (sampled with ``seed``).
    seed : int
        Seed of the sampling.
    thumb : int
        Thumbnail side in pixels.
    max_groups : int
        At most this many rows (the most frequent groups).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if by not in cases.columns:
        raise DermretrError(f"cannot group by {by!r}: not a column of the case table ({list(cases.columns)})")
    if len(cases) == 0:
        raise DermretrError("the case table is empty: nothing to show")
    if per_group < 1:
        raise DermretrError(f"per_group must be at least 1, got {per_group}")
    keys = cases[by].astype(object).where(cases[by].notna(), "unknown").astype(str)
    counts = keys.value_counts()
    groups = sorted(counts.index[:max_groups], key=lambda g: (g == "unknown", g))
    rng = np.random.default_rng(seed)
    ncols = per_group
    fig = Figure(figsize=(1.6 * ncols + 2.2, 1.6 * len(groups) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), ncols, squeeze=False)
    for r, group in enumerate(groups):
        idx = np.flatnonzero(keys.to_numpy() == group)
        pick = rng.choice(idx, size=min(per_group, len(idx)), replace=False)
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(pick):
                row = cases.iloc[pick[c]]
                ax.imshow(load_thumbnail(row["image_path"], thumb))
                ax.set_title(str(row["case_id"]), fontsize=6)
            if c == 0:
                ax.set_ylabel(f"{group}\n(n={counts[group]})", fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title or f"Example cases by {by}", fontsize=10)
    return fig
