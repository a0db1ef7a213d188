"""Model-randomisation sanity check (Adebayo et al., 2018): attributions must depend on the learned weights.

:func:`randomisation_check` compares a pair's attribution with those of
copies whose vision tower (and retrieval heads) are re-drawn at random,
stage by stage; :func:`compare_attributions` is the Spearman rank
correlation of two heatmaps.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..._checks import check_choice
from ..._errors import DermretrError
from .._image import Attribution, explain_pair

__all__ = ["RandomisationCheck", "compare_attributions", "randomisation_check"]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise DermretrError(f"cannot compare attributions of different sizes: {a.size} and {b.size} values")
    const_a, const_b = np.ptp(a) == 0, np.ptp(b) == 0
    if const_a or const_b:  # no ranking: identical when both are flat, unrelated otherwise
        return 1.0 if const_a and const_b else 0.0
    return float(spearmanr(a, b).statistic)


def compare_attributions(a: Attribution | np.ndarray, b: Attribution | np.ndarray, absolute: bool = True) -> float:
    """Spearman rank correlation of two heatmaps (1 = same ranking of pixels).

    ``absolute`` compares magnitudes (signs of IG maps flip easily).  A flat
    map has no ranking: two flat maps give 1, one flat map gives 0.

    >>> import numpy as np
    >>> x = np.arange(16.0).reshape(4, 4)
    >>> compare_attributions(x, 2 * x + 1), compare_attributions(x, -x, absolute=False)
    (1.0, -1.0)
    """
    ha = a.heatmap if isinstance(a, Attribution) else np.asarray(a)
    hb = b.heatmap if isinstance(b, Attribution) else np.asarray(b)
    if absolute:
        ha, hb = np.abs(ha), np.abs(hb)
    return _spearman(ha, hb)


@dataclass
class RandomisationCheck:
    """Model-randomisation sanity check (Adebayo et al., 2018).

    Attributes
    ----------
    mode : str
        ``"cascading"`` (stages re-drawn from the top down, cumulatively) or
        ``"independent"`` (one stage at a time).
    stages : list of str
        The vision-tower stages randomised (``head``, ``block 3``, ...).
    spearman : ndarray
        Rank correlation of each randomised model's heatmap with the trained
        model's (low = the attribution depends on the learned weights).
    trained : Attribution
        The trained model's attribution.
    randomised : list of Attribution
        One per stage.
    """

    mode: str
    stages: list[str]
    spearman: np.ndarray
    trained: Attribution
    randomised: list[Attribution]

    def plot(self) -> Figure:
        """The heatmaps (trained, then each stage) and the correlation per stage."""
        from ...viz import overlay

        k = len(self.stages)
        fig = Figure(figsize=(1.7 * (k + 1), 4.2), layout="constrained")
        grid = fig.add_gridspec(2, k + 1, height_ratios=[1.1, 1])
        for i, att in enumerate([self.trained, *self.randomised]):
            ax = fig.add_subplot(grid[0, i])
            title = "trained" if i == 0 else f"{self.stages[i - 1]}\nrho={self.spearman[i - 1]:.2f}"
            overlay(att.image, np.abs(att.heatmap), ax=ax, title=title, colorbar=False)
        ax = fig.add_subplot(grid[1, :])
        ax.plot(range(1, k + 1), self.spearman, "o-", color="#c0392b")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(range(1, k + 1), self.stages, fontsize=7)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel("Spearman vs trained")
        ax.set_title(f"{self.mode} randomisation ({self.trained.method}, {self.trained.which})", fontsize=9)
        return fig


def _vision_stages(visual: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """Stages of the image tower from the top (output) down."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None:
        return [("vision tower", list(visual.parameters()))]
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    rest = [(n, p) for n, p in visual.named_parameters() if id(p) not in in_blocks]
    head = [p for n, p in rest if n.split(".")[0] in ("ln_post", "proj", "attn_pool", "head", "text_proj")]
    head_ids = {id(p) for p in head}
    embed = [p for _, p in rest if id(p) not in head_ids]
    stages = [("vision head", head)]
    stages += [(f"block {i}", list(blocks[i].parameters())) for i in reversed(range(len(blocks)))]
    stages.append(("embedding", embed))
    return [(name, ps) for name, ps in stages if ps]


def _stages(retriever, heads: bool) -> list[tuple[str, list[nn.Parameter]]]:
    """Randomisation stages from the top: the retrieval heads (optional), then the vision tower."""
    stages = []
    if heads:
        params = [p for name in ("masks", "combiner") if getattr(retriever, name, None) is not None
                  for p in getattr(retriever, name).parameters()]
        if params:
            stages.append(("retrieval heads", params))
    return stages + _vision_stages(retriever.backbone.model.visual)


def _redraw(params: Sequence[nn.Parameter], generator: torch.Generator) -> None:
    """Re-draw each weight from a Gaussian with its own mean and standard deviation."""
    with torch.no_grad():
        for p in params:
            if p.numel() < 2:
                continue
            std = float(p.float().std())
            std = std if math.isfinite(std) and std > 0 else 0.02
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            p.copy_((noise * std + float(p.float().mean())).to(p))


def _copy_retriever(retriever):
    bb = retriever.backbone
    memo = {id(bb.tokenizer): bb.tokenizer, id(bb.preprocess): bb.preprocess,
            id(bb.train_preprocess): bb.train_preprocess}
    return copy.deepcopy(retriever, memo)


def randomisation_check(retriever, query_image: Any, text: str, target_image: Any, method: str = "gradcam",
                        which: str = "score", side: str = "target", mode: str = "cascading", seed: int = 0,
                        absolute: bool = True, heads: bool = True, **options: Any) -> RandomisationCheck:
    """Compare a pair's attribution with those of copies whose vision tower is re-drawn at random.

    The retriever itself is not changed (copies are randomised).  Stages,
    from the top: the retrieval heads (spatial masks and composer; with
    ``heads``), the vision tower's head (final norm and projection), its
    transformer blocks from the last to the first, and its patch embedding.
    Each weight of a randomised stage is re-drawn from a Gaussian with that
    weight tensor's own mean and standard deviation, so activations keep
    their scale.

    Parameters
    ----------
    retriever : Retriever
        The trained model.
    query_image, text, target_image
        The pair.
    method, which, side, **options
        As in :func:`explain_pairs`.
    mode : {"cascading", "independent"}
        Randomise stages cumulatively from the top, or one at a time.
    seed : int
        Seed of the re-drawn weights.
    absolute : bool
        Compare attribution magnitudes.
    heads : bool
        Randomise the retrieval heads first (cascading) or as a stage of their own.

    Returns
    -------
    RandomisationCheck

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> chk = randomisation_check(r, torch.zeros(3, 64, 64), "streaks", torch.randn(3, 64, 64))
    >>> chk.stages
    ['retrieval heads', 'vision head', 'block 3', 'block 2', 'block 1', 'block 0', 'embedding']
    >>> bool(chk.spearman[-1] < 0.9)      # the map of a random network ranks pixels differently
    True
    """
    check_choice("mode", mode, ("cascading", "independent"))
    trained = explain_pair(retriever, query_image, text, target_image, method=method, which=which, side=side,
                           **options)
    names = [name for name, _ in _stages(retriever, heads)]
    randomised: list[Attribution] = []
    gen = torch.Generator().manual_seed(int(seed))
    cascade = _copy_retriever(retriever) if mode == "cascading" else None
    for i, name in enumerate(names):
        model = cascade if cascade is not None else _copy_retriever(retriever)
        params = dict(_stages(model, heads))[name]
        _redraw(params, gen)
        randomised.append(explain_pair(model, query_image, text, target_image, method=method, which=which,
                                       side=side, **options))
    rho = np.asarray([compare_attributions(trained, a, absolute=absolute) for a in randomised])
    return RandomisationCheck(mode=mode, stages=names, spearman=rho, trained=trained, randomised=randomised)
