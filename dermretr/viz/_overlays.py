"""Attribution figures: a heatmap over its image, and per-word attributions as bars."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .._errors import DermretrError

__all__ = ["overlay", "text_bars"]


def _heat_style(heatmap: np.ndarray, cmap: str | None) -> tuple[str, float, float]:
    """Colour map and limits: diverging and centred on 0 for signed maps, sequential otherwise."""
    finite = heatmap[np.isfinite(heatmap)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo < 0 < hi:
        top = float(np.percentile(np.abs(finite), 99.5)) or max(abs(lo), abs(hi)) or 1.0
        return cmap or "RdBu_r", -top, top
    if hi <= 0 < -lo:
        return cmap or "Blues_r", lo, 0.0
    top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    return cmap or "inferno", min(lo, 0.0) if lo >= 0 else lo, top if top > lo else lo + 1.0


def overlay(image: np.ndarray, heatmap: np.ndarray, title: str | None = None, ax=None, alpha: float = 0.55,
            cmap: str | None = None, colorbar: bool = True) -> Figure:
    """An attribution heatmap drawn over its image.

    Signed maps use a diverging colour map centred on zero (red: raises the
    score, blue: lowers it); non-negative maps a sequential one.

    Parameters
    ----------
    image : ndarray
        ``[H, W, 3]`` uint8 (or floats in [0, 1]).
    heatmap : ndarray
        ``[h, w]``; stretched over the image when the sizes differ.
    title : str, optional
        Axes title.
    ax : matplotlib Axes, optional
        Draw into this axes (its figure is returned); default a new Figure.
    alpha : float
        Opacity of the heatmap.
    cmap : str, optional
        Colour map name.
    colorbar : bool
        Add a colour bar.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> fig = overlay(np.full((32, 32, 3), 128, np.uint8), np.random.default_rng(0).normal(size=(32, 32)))
    >>> [im.get_array().shape for im in fig.axes[0].images]
    [(32, 32, 3), (32, 32)]
    """
    img = np.asarray(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DermretrError(f"the image must be [H, W, 3], got shape {img.shape}")
    if heat.ndim != 2:
        raise DermretrError(f"the heatmap must be 2-D [H, W], got shape {heat.shape}")
    if ax is None:
        fig = Figure(figsize=(3.6, 3.2), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    h, w = img.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    ax.imshow(img, extent=extent)
    name, vmin, vmax = _heat_style(heat, cmap)
    mappable = ax.imshow(heat, cmap=name, vmin=vmin, vmax=vmax, alpha=alpha, extent=extent,
                         interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    if colorbar:
        fig.colorbar(mappable, ax=ax, shrink=0.8)
    return fig


def text_bars(words: Sequence[str], scores: Sequence[float], title: str | None = None) -> Figure:
    """Per-word attributions as horizontal bars, in reading order (red: for the match, blue: against).

    >>> fig = text_bars(["blue", "veil"], [0.2, -0.05])
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['blue', 'veil']
    """
    words = [str(w) for w in words]
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(words) != len(values):
        raise DermretrError(f"{len(words)} words but {len(values)} scores")
    if not words:
        raise DermretrError("no words to show")
    fig = Figure(figsize=(4.8, 0.9 + 0.28 * len(words)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(words))
    ax.barh(y, values, color=np.where(values >= 0, "#c0392b", "#2e6da4"))
    ax.set_yticks(y, words, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlabel("attribution", fontsize=8)
    if title:
        ax.set_title(title, fontsize=8)
    return fig
