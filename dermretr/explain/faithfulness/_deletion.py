"""Deletion test: remove the most-attributed patches first and watch the score fall faster than at random.

:func:`deletion_curve` works on any score function of an image;
:func:`pair_deletion_curve` runs it on a pair's score over the image an
:class:`~dermretr.explain.Attribution` explains.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ..._errors import DermretrError
from .._image import Attribution
from .._inputs import SIDES, explaining
from .._pair_score import PairScore

__all__ = ["DeletionCurve", "deletion_curve", "pair_deletion_curve"]


@dataclass
class DeletionCurve:
    """Score while patches are removed: most-attributed first vs random orders.

    Attributes
    ----------
    fractions : ndarray
        ``[steps + 1]`` fractions of patches removed (0 .. 1).
    attributed : ndarray
        ``[steps + 1]`` scores, patches removed in order of attribution.
    random : ndarray
        ``[n_seeds, steps + 1]`` scores, patches removed in random orders.
    auc_attributed, auc_random, auc_random_std : float
        Areas under the curves (trapezoid over the fractions); random: mean
        and standard deviation over seeds.  Lower attributed AUC = more faithful.
    """

    fractions: np.ndarray
    attributed: np.ndarray
    random: np.ndarray
    auc_attributed: float
    auc_random: float
    auc_random_std: float

    @property
    def gap(self) -> float:
        """``auc_random - auc_attributed`` (positive: the attribution found what the score needs)."""
        return self.auc_random - self.auc_attributed

    def plot(self, title: str | None = None) -> Figure:
        """The two curves (random: mean and a band of one standard deviation)."""
        fig = Figure(figsize=(4.6, 3.4), layout="constrained")
        ax = fig.subplots()
        ax.plot(self.fractions, self.attributed, "o-", color="#c0392b", ms=3,
                label=f"most attributed first (AUC {self.auc_attributed:.3f})")
        mean, std = self.random.mean(0), self.random.std(0)
        ax.plot(self.fractions, mean, "s--", color="#34495e", ms=3,
                label=f"random order, {len(self.random)} seeds (AUC {self.auc_random:.3f})")
        ax.fill_between(self.fractions, mean - std, mean + std, color="#34495e", alpha=0.2)
        ax.set_xlabel("fraction of patches removed")
        ax.set_ylabel("score")
        ax.legend(fontsize=7)
        ax.set_title(title or "deletion curve", fontsize=9)
        return fig


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def deletion_curve(score_fn: Callable[[torch.Tensor], Any], image: torch.Tensor, heatmap: np.ndarray,
                   steps: int = 10, patch: int | None = None, baseline: float | torch.Tensor = 0.0,
                   seeds: Sequence[int] = (0, 1, 2), batch_size: int = 32) -> DeletionCurve:
    """Deletion test: remove patches (set to ``baseline``) in order of attribution, and at random.

    Parameters
    ----------
    score_fn : callable
        Maps a batch of images ``[B, 3, H, W]`` to scores ``[B]`` (a
        :class:`PairScore`, or any model).
    image : Tensor
        ``[3, H, W]`` (or ``[1, 3, H, W]``) input of ``score_fn``.
    heatmap : ndarray
        ``[H, W]`` attribution; a patch's importance is the sum over its pixels.
    steps : int
        Points of the curve after the start (fractions ``0, 1/steps, ..., 1``).
    patch : int, optional
        Patch side in pixels (default H / 8).
    baseline : float or Tensor
        Value of removed pixels (0 = the preprocess's mean colour for
        normalised inputs), or an image ``[3, H, W]`` to copy them from.
    seeds : sequence of int
        Seeds of the random orders.
    batch_size : int
        Images scored at once.

    Returns
    -------
    DeletionCurve

    Examples
    --------
    >>> import numpy as np, torch
    >>> f = lambda x: x[:, :, :8, :8].mean(dim=(1, 2, 3))     # the score only looks at the top-left corner
    >>> heat = np.zeros((32, 32), np.float32); heat[:8, :8] = 1
    >>> c = deletion_curve(f, torch.ones(3, 32, 32), heat, steps=4, patch=8)
    >>> c.attributed.round(2).tolist(), c.auc_attributed < c.auc_random
    ([1.0, 0.0, 0.0, 0.0, 0.0], True)
    """
    x = image.detach()
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3:
        raise DermretrError(f"image must be [3, H, W], got shape {tuple(image.shape)}")
    h, w = x.shape[1:]
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.shape != (h, w):
        raise DermretrError(f"heatmap shape {heat.shape} does not match the image ({h}, {w})")
    if not np.isfinite(heat).all():
        raise DermretrError("the heatmap holds NaN or infinite values")
    steps = int(steps)
    if steps < 1:
        raise DermretrError(f"steps must be at least 1, got {steps}")
    patch = int(patch or max(1, h // 8))
    if not 1 <= patch <= min(h, w):
        raise DermretrError(f"patch of {patch} px does not fit the {h}x{w} image; use 1..{min(h, w)}")
    seeds = list(seeds)
    if not seeds:
        raise DermretrError("give at least one seed for the random orders")
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    padded = np.zeros((gh * patch, gw * patch))
    padded[:h, :w] = heat
    importance = padded.reshape(gh, patch, gw, patch).sum(axis=(1, 3)).ravel()
    n_cells = gh * gw
    fractions = np.linspace(0, 1, steps + 1)
    counts = np.round(fractions * n_cells).astype(int)
    fill = baseline.to(x) if isinstance(baseline, torch.Tensor) else torch.full_like(x, float(baseline))
    if fill.shape != x.shape:
        fill = fill.expand_as(x)

    def curve(order: np.ndarray) -> np.ndarray:
        rank = np.empty(n_cells, dtype=int)
        rank[order] = np.arange(n_cells)
        cell_rank = torch.from_numpy(np.kron(rank.reshape(gh, gw), np.ones((patch, patch), dtype=int))[:h, :w])
        cell_rank = cell_rank.to(x.device)
        images = torch.stack([torch.where(cell_rank < k, fill, x) for k in counts])
        scores = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                s = score_fn(images[i:i + batch_size])
                scores.append(np.asarray(s.detach().float().cpu() if isinstance(s, torch.Tensor) else s,
                                         dtype=np.float64).reshape(-1))
        return np.concatenate(scores)

    attributed = curve(np.argsort(-importance, kind="stable"))
    random = np.stack([curve(np.random.default_rng(s).permutation(n_cells)) for s in seeds])
    aucs = [_auc(fractions, r) for r in random]
    return DeletionCurve(fractions=fractions, attributed=attributed, random=random,
                         auc_attributed=_auc(fractions, attributed), auc_random=float(np.mean(aucs)),
                         auc_random_std=float(np.std(aucs)))


def pair_deletion_curve(retriever, query_image: Any, text: str, target_image: Any, attribution: Attribution,
                        steps: int = 10, patch: int | None = None, seeds: Sequence[int] = (0, 1, 2),
                        alpha: float | None = None) -> DeletionCurve:
    """:func:`deletion_curve` of a pair's score over the image ``attribution`` explains.

    Removed patches take the preprocess's mean colour.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> from dermretr.explain import explain_pair
    >>> q, t = torch.zeros(3, 64, 64), torch.randn(3, 64, 64)
    >>> a = explain_pair(r, q, "streaks", t, method="gradcam")
    >>> pair_deletion_curve(r, q, "streaks", t, a, steps=4).attributed.shape
    (5,)
    """
    if attribution.side not in SIDES:
        raise DermretrError(f"cannot run a deletion test on side {attribution.side!r}")
    with explaining(retriever):
        f = PairScore(retriever, [query_image], [text], [target_image], side=attribution.side,
                      which=attribution.which, alpha=alpha)
        return deletion_curve(f, f.inputs[0], attribution.heatmap, steps=steps, patch=patch, seeds=seeds)
