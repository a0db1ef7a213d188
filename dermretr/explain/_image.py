"""Image attributions: Captum's IG, Occlusion and GradCAM of a pair's score over one of its images.

:func:`explain_pairs` attributes a batch of (query image, text, target
image) pairs to the target or the reference image, as :class:`Attribution`
heatmaps at the model's input resolution; :func:`explain_results` looks the
retrieved cases up in a :class:`~dermretr.index.CaseIndex`.  GradCAM taps
the patch tokens entering a transformer block of the ViT image tower.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from .._checks import check_choice
from .._errors import DermretrError
from ._inputs import (
    METHODS,
    SIDES,
    WHICH,
    check_batch_size,
    check_options,
    explaining,
    make_baseline,
    to_display,
)
from ._pair_score import PairScore

__all__ = ["Attribution", "explain_pairs", "explain_pair", "explain_results", "explain_result"]


# ---------------------------------------------------------------------------- the GradCAM tap


class _GridTap(nn.Module):
    """Identity on patch tokens laid out as ``[B, W, gh, gw]``: the layer LayerGradCam hooks."""

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid


def _vit_blocks(retriever) -> nn.ModuleList:
    visual = retriever.backbone.model.visual
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or len(blocks) == 0:
        raise DermretrError(f"method='gradcam' needs a ViT image tower with transformer blocks; "
                            f"{retriever.backbone.name!r} has none: use method='ig' or 'occlusion'")
    return blocks


@contextlib.contextmanager
def _patch_grid_tap(retriever, block: int) -> Iterator[_GridTap]:
    """Route the patch tokens entering ``blocks[block]`` through a :class:`_GridTap` (class token dropped)."""
    blocks = _vit_blocks(retriever)
    if not -len(blocks) <= block < len(blocks):
        raise DermretrError(f"block {block} does not exist: the image tower has {len(blocks)} transformer blocks "
                            f"(use -1 for the last, 0..{len(blocks) - 1})")
    gh, gw = retriever.backbone.grid
    batch_first = getattr(retriever.backbone.model.visual.transformer, "batch_first", True)
    tap = _GridTap()

    def pre_hook(module, args):
        x = args[0]
        if not batch_first:
            x = x.transpose(0, 1)
        b, length, width = x.shape
        prefix = length - gh * gw
        if prefix < 0:
            raise DermretrError(f"the image tower gave {length} tokens for a {gh}x{gw} patch grid")
        grid = x[:, prefix:].transpose(1, 2).reshape(b, width, gh, gw)
        grid = tap(grid)
        x = torch.cat([x[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)
        if not batch_first:
            x = x.transpose(0, 1)
        return (x, *args[1:])

    handle = blocks[block].register_forward_pre_hook(pre_hook)
    try:
        yield tap
    finally:
        handle.remove()


# ---------------------------------------------------------------------------- image attributions


@dataclass
class Attribution:
    """An attribution map of one pair's score over one of its images.

    Attributes
    ----------
    heatmap : ndarray
        ``[H, W]`` float32 at the model's input resolution.  IG: signed sum
        over colour channels (sums to the score difference to the baseline);
        Occlusion: mean score drop of the windows covering the pixel; GradCAM:
        the ReLU'd patch-grid map, bilinearly upsampled.
    image : ndarray
        ``[H, W, 3]`` uint8: the image as the model saw it.
    method, which, side : str
        How, which score, and which image.
    score : float
        The explained score (``which``) of the pair.
    scores : dict
        ``{"score", "global", "local"}`` of the pair.
    text : str
        The query text.
    label : str
        What the image is (a case id when known).
    delta : float or None
        IG's convergence delta (completeness error).
    grid : ndarray or None
        GradCAM's map on the patch grid before upsampling.
    """

    heatmap: np.ndarray
    image: np.ndarray
    method: str
    which: str
    side: str
    score: float
    scores: dict = field(default_factory=dict)
    text: str = ""
    label: str = ""
    delta: float | None = None
    grid: np.ndarray | None = None

    def positive(self) -> np.ndarray:
        """The heatmap's positive part (evidence *for* the match)."""
        return np.clip(self.heatmap, 0, None)

    def title(self) -> str:
        """``"<method> on <image>: <score>"``; the label names the target case, also when the reference is explained.

        >>> a = Attribution(np.zeros((2, 2)), np.zeros((2, 2, 3), np.uint8), "gradcam", "score", "reference", 0.5,
        ...                 label="c7")
        >>> a.title()
        'gradcam on the reference image (against case c7): s=0.500'
        >>> Attribution(a.heatmap, a.image, "ig", "local", "target", 0.25, label="c7").title()
        'ig on case c7: s_local=0.250'
        """
        names = {"score": "s", "global": "s_global", "local": "s_local"}
        if self.side == "reference":
            what = "the reference image" + (f" (against case {self.label})" if self.label else "")
        else:
            what = f"case {self.label}" if self.label else "the target image"
        return f"{self.method} on {what}: {names[self.which]}={self.score:.3f}"

    def overlay(self, title: str | None = None, alpha: float = 0.55, cmap: str | None = None) -> Figure:
        """The heatmap over the image (with a colour bar) as a matplotlib Figure."""
        from ..viz import overlay

        return overlay(self.image, self.heatmap, title=self.title() if title is None else title, alpha=alpha,
                       cmap=cmap)


def _attribute(f: PairScore, method: str, options: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None,
                                                                               np.ndarray | None]:
    """Run Captum on ``f``: heatmaps ``[n, H, W]``, the GradCAM grid ``[n, gh, gw]``, IG deltas ``[n]``."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion

    r = f.retriever
    x = f.inputs
    n, _, h, w = x.shape
    index = torch.arange(n, device=x.device)
    if method == "ig":
        steps = int(options.get("n_steps", 32))
        if steps < 2:
            raise DermretrError(f"n_steps must be at least 2, got {steps}")
        base = make_baseline(r, x, options.get("baseline", "mean"))
        ibs = max(int(options.get("internal_batch_size") or min(n * steps, 64)), 2 * n)  # >= 2 steps per chunk
        attr, delta = IntegratedGradients(f).attribute(x, baselines=base, additional_forward_args=(index,),
                                                       n_steps=steps, internal_batch_size=int(ibs),
                                                       return_convergence_delta=True)
        return attr.sum(1).detach().float().cpu().numpy(), None, delta.detach().float().cpu().numpy()
    if method == "occlusion":
        window = options.get("window") or max(1, h // 8)
        window = int(window)
        if window < 1:
            raise DermretrError(f"occlusion window must be at least 1 pixel, got {window}")
        if window > min(h, w):
            raise DermretrError(f"occlusion window of {window} px is larger than the {h}x{w} px model input; "
                                f"use window <= {min(h, w)} (e.g. {max(1, h // 8)})")
        stride = int(options.get("stride") or max(1, window // 2))
        if not 1 <= stride <= window:
            raise DermretrError(f"occlusion stride must be between 1 and the window ({window} px), got {stride}")
        base = make_baseline(r, x, options.get("baseline", "mean"))
        per_eval = int(options.get("perturbations_per_eval", 16))
        attr = Occlusion(f).attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                      baselines=base, additional_forward_args=(index,),
                                      perturbations_per_eval=max(1, per_eval))
        return attr.mean(1).detach().float().cpu().numpy(), None, None
    block = int(options.get("block", -1))
    with _patch_grid_tap(r, block) as tap:
        cam = LayerGradCam(f, tap).attribute(x, additional_forward_args=(index,),
                                             relu_attributions=bool(options.get("relu", True)))
    grid = cam.detach().float()
    up = LayerAttribution.interpolate(grid, (h, w), interpolate_mode="bilinear")
    return up[:, 0].cpu().numpy(), grid[:, 0].cpu().numpy(), None


def explain_pairs(retriever, pairs: Sequence[tuple[Any, str, Any]], method: str = "ig", which: str = "score",
                  side: str = "target", labels: Sequence[str] | None = None, batch_size: int = 8,
                  alpha: float | None = None, **options: Any) -> list[Attribution]:
    """Attribute the scores of several (query image, text, target image) pairs to one of their images.

    Parameters
    ----------
    retriever : Retriever
        The model (switched to eval mode, weights frozen, for the duration).
    pairs : sequence of (query_image, text, target_image)
        Images as paths, PIL images, RGB arrays or normalised tensors.
    method : {"ig", "occlusion", "gradcam"}
        Captum method.
    which : {"score", "global", "local"}
        The final score, ``s_global`` or ``s_local``.
    side : {"target", "reference"}
        Attribute to the retrieved image or to the query's reference image.
    labels : sequence of str, optional
        Names of the attributed images (case ids), for titles.
    batch_size : int
        Pairs attributed at once.
    alpha : float, optional
        Override the weight of local evidence.
    **options
        ``ig``: ``n_steps`` (32), ``baseline`` ("mean", "black", "blur" or a
        number), ``internal_batch_size``; ``occlusion``: ``window`` (side/8
        px), ``stride`` (window/2), ``baseline``, ``perturbations_per_eval``;
        ``gradcam``: ``block`` (-1, the last transformer block), ``relu`` (True).

    Returns
    -------
    list of Attribution
        One per pair, in order.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> pairs = [(torch.zeros(3, 64, 64), "streaks", torch.randn(3, 64, 64)) for _ in range(3)]
    >>> out = explain_pairs(r, pairs, method="occlusion", window=16)
    >>> len(out), out[0].heatmap.shape
    (3, (64, 64))
    """
    check_choice("method", method, METHODS)
    check_choice("which", which, WHICH)
    check_choice("side", side, SIDES)
    check_options(method, options)
    pairs = list(pairs)
    if not pairs:
        raise DermretrError("no pairs to explain: give at least one (query image, text, target image)")
    if labels is not None and len(labels) != len(pairs):
        raise DermretrError(f"{len(labels)} labels for {len(pairs)} pairs: give one label per pair or none")
    batch_size = check_batch_size(batch_size)
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 3:
            raise DermretrError(f"pair {i} must be (query_image, text, target_image), got {type(p).__name__}")
    out: list[Attribution] = []
    with explaining(retriever):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            f = PairScore(retriever, [p[0] for p in chunk], [p[1] for p in chunk], [p[2] for p in chunk],
                          side=side, which=which, alpha=alpha)
            heat, grid, delta = _attribute(f, method, options)
            for j in range(len(chunk)):
                k = start + j
                out.append(Attribution(
                    heatmap=np.ascontiguousarray(heat[j], dtype=np.float32),
                    image=to_display(retriever, f.inputs[j]), method=method, which=which, side=side,
                    score=float(f.scores[which][j]), scores={key: float(v[j]) for key, v in f.scores.items()},
                    text=f.texts[j], label="" if labels is None else str(labels[k]),
                    delta=None if delta is None else float(delta[j]),
                    grid=None if grid is None else grid[j].astype(np.float32)))
    return out


def explain_pair(retriever, query_image: Any, text: str, target_image: Any, method: str = "ig",
                 which: str = "score", side: str = "target", label: str = "", alpha: float | None = None,
                 **options: Any) -> Attribution:
    """Attribute one pair's score to its target (or reference) image; see :func:`explain_pairs`.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> a = explain_pair(r, torch.zeros(3, 64, 64), "streaks", torch.randn(3, 64, 64), method="ig", n_steps=16)
    >>> bool(abs(a.heatmap.sum() - (a.score - PairScore(r.eval(), [torch.zeros(3, 64, 64)], ["streaks"],
    ...     [torch.zeros(3, 64, 64)]).scores["score"][0])) < 0.05)   # completeness: sum = s(x) - s(baseline)
    True
    """
    return explain_pairs(retriever, [(query_image, text, target_image)], method=method, which=which, side=side,
                         labels=[label], alpha=alpha, **options)[0]


def _case_row(index, case_id: Any) -> pd.Series:
    cases = index.cases
    ids = cases["case_id"].astype(str)
    hits = np.flatnonzero(ids.to_numpy() == str(case_id))
    if len(hits) == 0:
        close = difflib.get_close_matches(str(case_id), ids.tolist(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DermretrError(f"case id {case_id!r} is not in this index ({len(ids)} cases, e.g. "
                            f"{', '.join(ids.iloc[:3])}){hint}; explain a case_id from the search results")
    return cases.iloc[int(hits[0])]


def explain_results(index, retriever, query_image: Any, text: str, case_ids: Iterable[Any] | pd.DataFrame,
                    method: str = "gradcam", which: str = "score", side: str = "target", **options: Any
                    ) -> list[Attribution]:
    """Explain why each of several indexed cases matched a query (e.g. the rows of a search result).

    ``case_ids`` may be a search result DataFrame (its ``case_id`` column).
    ``retriever`` may be None to use ``index.retriever``.  Options as in
    :func:`explain_pairs`; each attribution's label is its case id.

    Examples
    --------
    >>> import numpy as np, pandas as pd, tempfile, pathlib
    >>> from dermretr.data import load
    >>> from dermretr.data.synth import generate
    >>> from dermretr.index import CaseIndex
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=6, image_size=64,
    ...                 workers=1, progress=False)
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> index = CaseIndex.build(r, load("synthetic", root))
    >>> hits = index.search(index.cases["image_path"].iloc[0], "streaks", k=2)
    >>> [a.label for a in explain_results(index, None, index.cases["image_path"].iloc[0], "streaks", hits)] \\
    ...     == hits["case_id"].tolist()
    True
    """
    if isinstance(case_ids, pd.DataFrame):
        if "case_id" not in case_ids.columns:
            raise DermretrError(f"the results table has no case_id column (columns: {list(case_ids.columns)})")
        case_ids = case_ids["case_id"].tolist()
    ids = [str(c) for c in case_ids]
    if retriever is None:
        retriever = getattr(index, "retriever", None)
        if retriever is None:
            raise DermretrError("no retriever: pass the model the index was built with (or load the index with "
                                "CaseIndex.load(dir, retriever) / CaseIndex.open(dir))")
    rows = [_case_row(index, c) for c in ids]
    pairs = [(query_image, text, row["image_path"]) for row in rows]
    return explain_pairs(retriever, pairs, method=method, which=which, side=side, labels=ids, **options)


def explain_result(index, retriever, query_image: Any, text: str, case_id: Any, method: str = "gradcam",
                   which: str = "score", side: str = "target", **options: Any) -> Attribution:
    """Explain why the indexed case ``case_id`` matched the query (image + text).

    The case is looked up in ``index.cases`` (an unknown id raises
    :class:`~dermretr.DermretrError` naming it); ``retriever`` may be None to
    use ``index.retriever``.  Options as in :func:`explain_pairs`.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from dermretr.index import CaseIndex
    >>> cases = pd.DataFrame({"case_id": ["a", "b"], "patient_id": "p", "image_path": "x.jpg",
    ...     "diagnosis": "nevus", "diagnosis_group": "NEV", "split": "test", "source": "demo"})
    >>> index = CaseIndex.from_embeddings({"global": np.eye(2, dtype=np.float32), "local": None}, cases)
    >>> explain_result(index, None, "q.jpg", "streaks", "c")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: case id 'c' is not in this index (2 cases, e.g. a, b); explain a case_id ...
    """
    _case_row(index, case_id)  # unknown ids fail before anything else
    return explain_results(index, retriever, query_image, text, [case_id], method=method, which=which, side=side,
                           **options)[0]
