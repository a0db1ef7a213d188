"""Why did it match?  Attributions of retrieval scores, the model's own masks, and faithfulness checks.

A composed query (reference image + descriptor text) matches a database
image with ``s = a * s_local + (1 - a) * s_global``.  This module attributes
that score - or separately ``s_global`` and ``s_local`` (``which``) - to

* the retrieved **target** image (``side="target"``),
* the **reference** image of the query (``side="reference"``),
* the query's **text tokens** (:func:`explain_text`),

with Captum: :class:`~captum.attr.IntegratedGradients` (``method="ig"``),
:class:`~captum.attr.Occlusion` (``"occlusion"``) and
:class:`~captum.attr.LayerGradCam` (``"gradcam"``) on the patch tokens
entering the last transformer block of the ViT image tower, reshaped to
their grid (the class token is dropped; the tokens *entering* the block are
used because the tokens it *outputs* carry no gradient of the pooled global
embedding).  Text uses :class:`~captum.attr.LayerIntegratedGradients` on the
token-embedding layer of the open_clip text tower with a baseline that keeps
the start/end tokens and pads every word.

Every image attribution is an :class:`Attribution` holding a heatmap at the
model's input resolution and the image as the model saw it;
:meth:`Attribution.overlay` draws it.  :func:`mask_maps` shows which regions
each of the M spatial masks pooled, query and target side by side.

Faithfulness is measured, not assumed:

* :func:`deletion_curve` - removing the most-attributed patches first should
  lower the score faster than removing random ones (lower area under the curve);
* :func:`randomisation_check` - attributions of a copy whose vision tower is
  re-drawn at random (cascading from the top or one stage at a time) should
  rank pixels differently from the trained model (low Spearman correlation);
* :func:`localisation_score` / :func:`dermsynth_localisation` - on DermSynth,
  attribution should fall on the rendered structure of the queried criterion
  (pointing game, IoU of the top attributed area, attribution energy inside
  the ground-truth mask), each against a uniform-map baseline;
  :func:`mask_localisation` scores the same against any binary mask column
  of a case table (e.g. PH2's ``lesion_mask``).

Images may be file paths, PIL images, uint8 arrays ``[H, W, 3]`` or tensors
already normalised by the backbone's preprocess (``[3, H, W]``).  Files and
PIL images go through the backbone's preprocess (a very large image is first
shrunk to four times the model's input side); tensors of another size are
resized.

Examples
--------
>>> import numpy as np
>>> from PIL import Image
>>> from dermretr.models.backbones import create
>>> from dermretr.models.retriever import Retriever
>>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
>>> ref = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
>>> tgt = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
>>> a = explain_pair(r, ref, "blue-whitish veil", tgt, method="gradcam", which="local")
>>> a.heatmap.shape, a.method, a.which, a.side
((64, 64), 'gradcam', 'local', 'target')
>>> t = explain_text(r, ref, "blue-whitish veil", tgt)
>>> t.words
['blue', '-', 'whitish', 'veil']
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from ._errors import DermretrError

__all__ = [
    "METHODS",
    "WHICH",
    "SIDES",
    "Attribution",
    "TextAttribution",
    "PairScore",
    "DeletionCurve",
    "RandomisationCheck",
    "explain_pair",
    "explain_pairs",
    "explain_text",
    "explain_texts",
    "explain_result",
    "explain_results",
    "mask_arrays",
    "mask_maps",
    "deletion_curve",
    "pair_deletion_curve",
    "randomisation_check",
    "compare_attributions",
    "localisation_score",
    "align_mask",
    "dermsynth_localisation",
    "mask_localisation",
    "localisation_summary",
]

#: Attribution methods for images.
METHODS: tuple[str, ...] = ("ig", "occlusion", "gradcam")
#: Which score is explained: the final convex score, or one of its two parts.
WHICH: tuple[str, ...] = ("score", "global", "local")
#: Which image of the pair is attributed.
SIDES: tuple[str, ...] = ("target", "reference")
#: Baselines ("absence of signal") for IG and Occlusion.
BASELINES: tuple[str, ...] = ("mean", "black", "blur")

_METHOD_OPTIONS = {
    "ig": ("n_steps", "baseline", "internal_batch_size"),
    "occlusion": ("window", "stride", "baseline", "perturbations_per_eval"),
    "gradcam": ("block", "relu"),
}
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_MAX_SIDE_FACTOR = 4  # larger images are shrunk to this many times the input side before the preprocess


# ---------------------------------------------------------------------------- small helpers


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise DermretrError(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, choices))}")
    return value


@contextlib.contextmanager
def _explaining(*retrievers: nn.Module) -> Iterator[None]:
    """Eval mode and frozen weights (attributions need input gradients only); restored afterwards."""
    states = []
    for r in retrievers:
        flags = [(p, p.requires_grad) for p in r.parameters()]
        modes = [(m, m.training) for m in r.modules()]
        states.append((modes, flags))
        r.eval()
        for p, _ in flags:
            p.requires_grad_(False)
    try:
        yield
    finally:
        for modes, flags in states:
            for m, training in modes:
                m.training = training
            for p, flag in flags:
                p.requires_grad_(flag)


def _norm_stats(backbone) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the backbone preprocess's Normalize (CLIP's when there is none)."""
    mean, std = _CLIP_MEAN, _CLIP_STD
    for t in getattr(backbone.preprocess, "transforms", []):
        if hasattr(t, "mean") and hasattr(t, "std"):
            mean, std = tuple(map(float, t.mean)), tuple(map(float, t.std))
    return torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)


def _describe(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, Image.Image):
        return f"PIL image {image.size[0]}x{image.size[1]}"
    shape = getattr(image, "shape", None)
    return f"{type(image).__name__} of shape {tuple(shape)}" if shape is not None else type(image).__name__


def _pixels(retriever, image: Any, what: str = "image") -> torch.Tensor:
    """One image as the model's normalised input ``[3, S, S]`` on the retriever's device."""
    from .data.images import load_rgb

    bb = retriever.backbone
    size = int(bb.image_size)
    if isinstance(image, torch.Tensor):
        x = image.detach().float()
        if x.dim() == 4 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 3 or x.shape[0] != 3:
            raise DermretrError(f"{what}: a tensor image must be [3, H, W] (normalised by the backbone's "
                                f"preprocess), got shape {tuple(image.shape)}")
        if tuple(x.shape[1:]) != (size, size):
            h, w = x.shape[1:]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            x = F.interpolate(x[None, :, top:top + side, left:left + side], size=(size, size), mode="bilinear",
                              antialias=True, align_corners=False)[0]
        if not torch.isfinite(x).all():
            raise DermretrError(f"{what}: the tensor holds NaN or infinite values")
        return x.to(retriever.device)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise DermretrError(f"{what}: an array image must be [H, W, 3] (uint8 RGB), got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    elif isinstance(image, (str, os.PathLike)):
        image = load_rgb(image)
    elif not isinstance(image, Image.Image):
        raise DermretrError(f"{what}: expected a file path, a PIL image, an RGB array or a tensor, got "
                            f"{type(image).__name__}")
    img = image.convert("RGB")
    if min(img.size) < 1:
        raise DermretrError(f"{what}: the image is empty ({img.size[0]}x{img.size[1]} pixels)")
    if max(img.size) > _MAX_SIDE_FACTOR * size:  # very large images: shrink cheaply first, then preprocess
        img = img.copy()
        img.thumbnail((_MAX_SIDE_FACTOR * size, _MAX_SIDE_FACTOR * size), Image.Resampling.BILINEAR,
                      reducing_gap=2.0)
    x = bb.preprocess(img)
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != (3, size, size):
        raise DermretrError(f"{what}: the backbone preprocess gave {getattr(x, 'shape', type(x))}, "
                            f"expected [3, {size}, {size}]")
    return x.to(retriever.device)


def _display(retriever, pixels: torch.Tensor) -> np.ndarray:
    """A normalised input ``[3, S, S]`` back to uint8 RGB ``[S, S, 3]``."""
    mean, std = _norm_stats(retriever.backbone)
    img = pixels.detach().float().cpu() * std + mean
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _baseline(retriever, pixels: torch.Tensor, kind: str | float) -> torch.Tensor:
    """The "no signal" input for IG/Occlusion: the preprocess mean colour, black, or a blurred copy."""
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(pixels, float(kind))
    _choice("baseline", kind, BASELINES)
    if kind == "mean":
        return torch.zeros_like(pixels)
    if kind == "black":
        mean, std = _norm_stats(retriever.backbone)
        return ((0 - mean) / std).to(pixels).expand_as(pixels).clone()
    from torchvision.transforms.functional import gaussian_blur

    size = pixels.shape[-1]
    sigma = max(1.0, size / 16)
    kernel = int(2 * round(3 * sigma) + 1)
    kernel = min(kernel, 2 * ((size - 1) // 2) + 1)
    return gaussian_blur(pixels, [kernel, kernel], [sigma, sigma])


def _texts(texts: Iterable[Any]) -> list[str]:
    return ["" if t is None else str(t) for t in texts]


# ---------------------------------------------------------------------------- score functions for Captum


class PairScore(nn.Module):
    """The score of query-target pairs as a differentiable function of one input (what Captum calls).

    The other inputs of each pair are fixed (their features are computed
    once); :meth:`forward` maps a batch of the varying input to one score per
    row.  ``pair_index`` (a long tensor, one entry per row) says which pair
    each row belongs to, so Captum's expanded batches (``n_steps`` copies,
    several occlusions at once) keep the right partner.

    Parameters
    ----------
    retriever : Retriever
        The model; put it in eval mode (``retriever.eval()``) before calling.
    query_images, texts, target_images : sequences
        One entry per pair (images as paths, PIL images, arrays or tensors).
    side : {"target", "reference", "text"}
        What varies: the target image, the reference image, or the text tokens.
    which : {"score", "global", "local"}
        The final score or one of its parts.
    alpha : float, optional
        Override the model's weight of local evidence.

    Attributes
    ----------
    inputs : Tensor
        The varying inputs of the pairs: pixels ``[n, 3, S, S]`` or token ids ``[n, L]``.
    scores : dict
        ``{"score", "global", "local"}`` -> numpy ``[n]`` of the unperturbed pairs.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2).eval()
    >>> f = PairScore(r, [torch.zeros(3, 64, 64)], ["streaks"], [torch.ones(3, 64, 64)], side="target")
    >>> with torch.no_grad():
    ...     s = f(f.inputs)
    >>> s.shape, bool(abs(float(s[0]) - f.scores["score"][0]) < 1e-5)
    (torch.Size([1]), True)
    """

    def __init__(self, retriever, query_images: Sequence, texts: Sequence[str], target_images: Sequence,
                 side: str = "target", which: str = "score", alpha: float | None = None):
        super().__init__()
        _choice("side", side, (*SIDES, "text"))
        _choice("which", which, WHICH)
        n = len(texts)
        if n == 0:
            raise DermretrError("no pairs to explain: give at least one (query image, text, target image)")
        if len(query_images) != n or len(target_images) != n:
            raise DermretrError(f"{len(query_images)} query images, {n} texts and {len(target_images)} target "
                                "images: give one of each per pair")
        if which == "local" and not retriever.uses_local:
            raise DermretrError(f"a {retriever.kind!r} retriever has no local score (s_local); explain "
                                "which='score' or 'global', or use a kind='full' retriever")
        if side == "reference" and retriever.kind == "text":
            raise DermretrError("a text-only retriever does not look at the reference image; explain the "
                                "target image or the text")
        if side == "text" and retriever.kind == "image":
            raise DermretrError("an image-only retriever ignores the text; explain an image instead")
        self.retriever = retriever
        self.side, self.which, self.alpha = side, which, alpha
        self.texts = _texts(texts)
        refs = torch.stack([_pixels(retriever, im, f"query image {i}") for i, im in enumerate(query_images)])
        tgts = torch.stack([_pixels(retriever, im, f"target image {i}") for i, im in enumerate(target_images)])
        self.query_pixels, self.target_pixels = refs, tgts
        with torch.no_grad():
            q = retriever.query_features(refs, self.texts)
            t = retriever.target_features(tgts)
            s, sg, sl = (x.float().cpu().numpy() for x in retriever.score(q, t, alpha, paired=True))
        self.scores = {"score": s, "global": sg, "local": sl}
        keep = ("global", "local")
        self._fixed = {k: (None if v is None else v.detach()) for k, v in (t if side != "target" else q).items()
                       if k in keep}
        if side == "target":
            self.inputs = tgts
        elif side == "reference":
            self.inputs = refs
        else:
            tokens = retriever.backbone.tokenize(self.texts)
            self.inputs = tokens

    def _index(self, rows: int, pair_index: torch.Tensor | None) -> torch.Tensor:
        n = len(self.texts)
        if pair_index is None:
            if n == 1:
                return torch.zeros(rows, dtype=torch.long, device=self.query_pixels.device)
            if rows != n:
                raise DermretrError(f"{rows} inputs for {n} pairs: pass pair_index (one pair number per row)")
            return torch.arange(n, device=self.query_pixels.device)
        return pair_index.long().to(self.query_pixels.device)

    def forward(self, inputs: torch.Tensor, pair_index: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B]`` of the pairs ``pair_index`` with ``inputs`` in place of their varying input."""
        r = self.retriever
        if r.training:
            raise DermretrError("the retriever is in training mode (dropout makes scores random): call "
                                "retriever.eval() first")
        idx = self._index(inputs.shape[0], pair_index)
        fixed = {k: (None if v is None else v[idx]) for k, v in self._fixed.items()}
        if self.side == "target":
            q, t = fixed, r.target_features(inputs)
        elif self.side == "reference":
            q, t = r.query_features(inputs, [self.texts[i] for i in idx.tolist()]), fixed
        else:
            q = r.query_features(self.query_pixels[idx], [self.texts[i] for i in idx.tolist()], text_tokens=inputs)
            t = fixed
        s, sg, sl = r.score(q, t, self.alpha, paired=True)
        return {"score": s, "global": sg, "local": sl}[self.which]


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
        names = {"score": "s", "global": "s_global", "local": "s_local"}
        what = f"{self.side}{' ' + self.label if self.label else ''}"
        return f"{self.method} on {what}: {names[self.which]}={self.score:.3f}"

    def overlay(self, title: str | None = None, alpha: float = 0.55, cmap: str | None = None) -> Figure:
        """The heatmap over the image (with a colour bar) as a matplotlib Figure."""
        from .viz import overlay

        return overlay(self.image, self.heatmap, title=self.title() if title is None else title, alpha=alpha,
                       cmap=cmap)


def _check_options(method: str, options: Mapping[str, Any]) -> None:
    allowed = _METHOD_OPTIONS[method]
    bad = [k for k in options if k not in allowed]
    if bad:
        raise DermretrError(f"unknown option{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} for "
                            f"method={method!r}; its options: {', '.join(allowed)}")


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
        base = _baseline(r, x, options.get("baseline", "mean"))
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
        base = _baseline(r, x, options.get("baseline", "mean"))
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
    _choice("method", method, METHODS)
    _choice("which", which, WHICH)
    _choice("side", side, SIDES)
    _check_options(method, options)
    pairs = list(pairs)
    if not pairs:
        raise DermretrError("no pairs to explain: give at least one (query image, text, target image)")
    if labels is not None and len(labels) != len(pairs):
        raise DermretrError(f"{len(labels)} labels for {len(pairs)} pairs: give one label per pair or none")
    if batch_size < 1:
        raise DermretrError(f"batch_size must be at least 1, got {batch_size}")
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 3:
            raise DermretrError(f"pair {i} must be (query_image, text, target_image), got {type(p).__name__}")
    out: list[Attribution] = []
    with _explaining(retriever):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            f = PairScore(retriever, [p[0] for p in chunk], [p[1] for p in chunk], [p[2] for p in chunk],
                          side=side, which=which, alpha=alpha)
            heat, grid, delta = _attribute(f, method, options)
            for j in range(len(chunk)):
                k = start + j
                out.append(Attribution(
                    heatmap=np.ascontiguousarray(heat[j], dtype=np.float32),
                    image=_display(retriever, f.inputs[j]), method=method, which=which, side=side,
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


# ---------------------------------------------------------------------------- text attributions


@dataclass
class TextAttribution:
    """Attribution of one pair's score to the query's text tokens (Layer Integrated Gradients).

    Attributes
    ----------
    text : str
        The query text.
    tokens : list of str
        The text's tokens (start/end/padding left out), as the tokenizer spells them.
    token_scores : ndarray
        Attribution per token (sums, with the other tokens', to the score
        difference to the all-padding baseline).
    words, word_scores : list of str, ndarray
        Tokens merged into words (sub-word pieces summed).
    which : str
        The explained score.
    score : float
        Its value for the pair.
    scores : dict
        ``{"score", "global", "local"}`` of the pair.
    delta : float
        Captum's convergence delta (completeness error).
    """

    text: str
    tokens: list[str]
    token_scores: np.ndarray
    words: list[str]
    word_scores: np.ndarray
    which: str
    score: float
    scores: dict = field(default_factory=dict)
    delta: float | None = None
    method: str = "ig"

    def plot(self, title: str | None = None) -> Figure:
        """A bar chart of the per-word attributions (red: for the match, blue: against)."""
        from .viz import text_bars

        names = {"score": "s", "global": "s_global", "local": "s_local"}
        return text_bars(self.words, self.word_scores,
                         title=title or f"text attribution of {names[self.which]}={self.score:.3f}\n{self.text!r}")


def _token_pieces(backbone, ids: Sequence[int]) -> list[str]:
    tok = backbone.tokenizer
    inner = getattr(tok, "tokenizer", None)
    if hasattr(tok, "decode"):
        try:
            return [tok.decode([int(i)]) for i in ids]
        except Exception:  # noqa: BLE001 - tokenizers differ; fall back to ids
            pass
    if inner is not None and hasattr(inner, "convert_ids_to_tokens"):
        return [str(t) for t in inner.convert_ids_to_tokens([int(i) for i in ids])]
    return [str(int(i)) for i in ids]


def _merge_words(pieces: list[str], scores: np.ndarray) -> tuple[list[str], np.ndarray]:
    words, word_scores, cur, acc = [], [], "", 0.0
    for piece, s in zip(pieces, scores):
        start_new = piece.startswith(("Ġ", "▁")) and cur  # HF byte-level / sentencepiece word starts
        if start_new:
            words.append(cur.strip("Ġ▁ ")), word_scores.append(acc)
            cur, acc = "", 0.0
        cur += piece
        acc += float(s)
        if piece.endswith(" "):  # open_clip's SimpleTokenizer marks word ends with a space
            words.append(cur.strip("Ġ▁ ")), word_scores.append(acc)
            cur, acc = "", 0.0
    if cur.strip("Ġ▁ "):
        words.append(cur.strip("Ġ▁ ")), word_scores.append(acc)
    return words, np.asarray(word_scores, dtype=np.float32)


def _token_layer(retriever) -> nn.Module:
    model = retriever.backbone.model
    for owner in (model, getattr(model, "text", None)):
        layer = getattr(owner, "token_embedding", None) if owner is not None else None
        if isinstance(layer, nn.Module):
            return layer
    raise DermretrError(f"cannot find the token-embedding layer of {retriever.backbone.name!r}'s text tower, so "
                        "its text cannot be attributed")


def explain_texts(retriever, pairs: Sequence[tuple[Any, str, Any]], which: str = "score", n_steps: int = 32,
                  batch_size: int = 8, alpha: float | None = None) -> list[TextAttribution]:
    """Attribute the scores of several pairs to their query text tokens (Layer Integrated Gradients).

    The baseline keeps the start and end tokens and replaces every word
    token by padding, so the attributions of the words sum to the score
    difference between the text and an empty one.

    Parameters
    ----------
    retriever : Retriever
        The model.
    pairs : sequence of (query_image, text, target_image)
        A text with no tokens (empty or blank) raises :class:`~dermretr.DermretrError`.
    which : {"score", "global", "local"}
        The explained score.
    n_steps : int
        Integration steps.
    batch_size : int
        Pairs at once.
    alpha : float, optional
        Override the weight of local evidence.

    Returns
    -------
    list of TextAttribution

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> a, b = explain_texts(r, [(torch.zeros(3, 64, 64), "irregular streaks", torch.ones(3, 64, 64)),
    ...                          (torch.zeros(3, 64, 64), "blue veil", torch.ones(3, 64, 64))])
    >>> a.words, len(b.token_scores)
    (['irregular', 'streaks'], 2)
    """
    from captum.attr import LayerIntegratedGradients

    _choice("which", which, WHICH)
    if int(n_steps) < 2:
        raise DermretrError(f"n_steps must be at least 2, got {n_steps}")
    if batch_size < 1:
        raise DermretrError(f"batch_size must be at least 1, got {batch_size}")
    pairs = list(pairs)
    if not pairs:
        raise DermretrError("no pairs to explain: give at least one (query image, text, target image)")
    bb = retriever.backbone
    special = {int(t) for t in bb.tokenize([""])[0].tolist() if int(t) != 0}
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 3:
            raise DermretrError(f"pair {i} must be (query_image, text, target_image), got {type(p).__name__}")
        text = "" if p[1] is None else str(p[1])
        ids = bb.tokenize([text])[0].tolist()
        if not any(int(t) != 0 and int(t) not in special for t in ids):
            raise DermretrError(f"text {text!r} of pair {i} has no tokens to attribute (empty or blank); give a "
                                "descriptor text such as 'blue-whitish veil', or explain the images instead")
    layer = _token_layer(retriever)
    out: list[TextAttribution] = []
    with _explaining(retriever):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            f = PairScore(retriever, [p[0] for p in chunk], [p[1] for p in chunk], [p[2] for p in chunk],
                          side="text", which=which, alpha=alpha)
            tokens = f.inputs
            words_mask = (tokens != 0) & ~torch.isin(tokens, torch.tensor(sorted(special), device=tokens.device))
            baseline = torch.where(words_mask, torch.zeros_like(tokens), tokens)
            index = torch.arange(len(chunk), device=tokens.device)
            attr, delta = LayerIntegratedGradients(f, layer).attribute(
                tokens, baselines=baseline, additional_forward_args=(index,), n_steps=int(n_steps),
                internal_batch_size=max(2 * len(chunk), min(len(chunk) * int(n_steps), 64)),
                return_convergence_delta=True)
            per_token = attr.sum(-1).detach().float().cpu().numpy()
            for j in range(len(chunk)):
                pos = words_mask[j].cpu().numpy()
                ids = tokens[j].cpu().numpy()[pos]
                pieces = _token_pieces(bb, ids)
                scores = per_token[j][pos].astype(np.float32)
                words, word_scores = _merge_words(pieces, scores)
                out.append(TextAttribution(
                    text=f.texts[j], tokens=[p.strip() for p in pieces], token_scores=scores, words=words,
                    word_scores=word_scores, which=which, score=float(f.scores[which][j]),
                    scores={k: float(v[j]) for k, v in f.scores.items()}, delta=float(delta[j])))
    return out


def explain_text(retriever, query_image: Any, text: str, target_image: Any, which: str = "score",
                 n_steps: int = 32, alpha: float | None = None) -> TextAttribution:
    """Attribute one pair's score to its query text tokens; see :func:`explain_texts`.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> explain_text(r, torch.zeros(3, 64, 64), "   ", torch.ones(3, 64, 64))
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: text '   ' of pair 0 has no tokens to attribute (empty or blank); ...
    """
    return explain_texts(retriever, [(query_image, text, target_image)], which=which, n_steps=n_steps,
                         alpha=alpha)[0]


# ---------------------------------------------------------------------------- the model's own masks


def _grid_to_image(maps: torch.Tensor, grid: tuple[int, int], size: int) -> np.ndarray:
    """``[M, N]`` patch weights -> ``[M, size, size]`` (bilinear)."""
    m = maps.detach().float().reshape(maps.shape[0], 1, grid[0], grid[1])
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)[:, 0].cpu().numpy()


def mask_arrays(retriever, query_image: Any, text: str, target_image: Any) -> dict[str, np.ndarray]:
    """The M spatial attention masks of the query side and of the target side, at image resolution.

    Returns
    -------
    dict
        ``"query"`` and ``"target"``: ``[M, H, W]`` float32 (the patch weights
        upsampled; on the patch grid each mask sums to 1); ``"query_grid"``,
        ``"target_grid"``: ``[M, gh, gw]``; ``"query_image"``,
        ``"target_image"``: ``[H, W, 3]`` uint8.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=3)
    >>> m = mask_arrays(r, torch.zeros(3, 64, 64), "streaks", torch.randn(3, 64, 64))
    >>> m["query"].shape, m["target_grid"].shape, bool(abs(m["target_grid"][0].sum() - 1) < 1e-5)
    ((3, 64, 64), (3, 4, 4), True)
    """
    if not retriever.uses_local:
        raise DermretrError(f"a {retriever.kind!r} retriever has no spatial masks; mask maps need kind='full'")
    bb = retriever.backbone
    q_px = _pixels(retriever, query_image, "query image")[None]
    t_px = _pixels(retriever, target_image, "target image")[None]
    with _explaining(retriever), torch.no_grad():
        q = retriever.query_features(q_px, _texts([text]))
        t = retriever.target_features(t_px)
    size = int(bb.image_size)
    gh, gw = bb.grid
    return {
        "query": _grid_to_image(q["attn"][0], bb.grid, size).astype(np.float32),
        "target": _grid_to_image(t["attn"][0], bb.grid, size).astype(np.float32),
        "query_grid": q["attn"][0].float().reshape(-1, gh, gw).cpu().numpy(),
        "target_grid": t["attn"][0].float().reshape(-1, gh, gw).cpu().numpy(),
        "query_image": _display(retriever, q_px[0]),
        "target_image": _display(retriever, t_px[0]),
    }


def mask_maps(retriever, query_image: Any, text: str, target_image: Any, alpha: float = 0.55) -> Figure:
    """Figure: which regions each of the M masks pooled, query (top row) and target (bottom row).

    Columns: the image, one overlay per mask (normalised to its own peak), and
    the dominant mask of every pixel.  See :func:`mask_arrays` for the numbers.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> fig = mask_maps(r, torch.zeros(3, 64, 64), "streaks", torch.randn(3, 64, 64))
    >>> len(fig.axes)
    8
    """
    from matplotlib import colormaps

    maps = mask_arrays(retriever, query_image, text, target_image)
    m = maps["query"].shape[0]
    fig = Figure(figsize=(1.9 * (m + 2), 4.3), layout="constrained")
    axes = fig.subplots(2, m + 2, squeeze=False)
    colors = colormaps["tab10"]
    for row, side in enumerate(("query", "target")):
        img, masks = maps[f"{side}_image"], maps[side]
        axes[row, 0].imshow(img)
        axes[row, 0].set_title("query (reference)" if side == "query" else "target", fontsize=8)
        for j in range(m):
            ax = axes[row, j + 1]
            ax.imshow(img)
            peak = float(masks[j].max()) or 1.0
            ax.imshow(masks[j] / peak, cmap="magma", alpha=alpha, vmin=0, vmax=1)
            ax.set_title(f"mask {j + 1} (peak {maps[f'{side}_grid'][j].max():.2f})", fontsize=7)
        dominant = masks.argmax(0)
        seg = colors(dominant % 10)[..., :3]
        ax = axes[row, m + 1]
        ax.imshow((1 - alpha) * img / 255.0 + alpha * seg)
        ax.set_title("dominant mask", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"spatial masks - text: {text!r}" if text else "spatial masks (no text)", fontsize=9)
    return fig


# ---------------------------------------------------------------------------- faithfulness: deletion


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
    >>> q, t = torch.zeros(3, 64, 64), torch.randn(3, 64, 64)
    >>> a = explain_pair(r, q, "streaks", t, method="gradcam")
    >>> pair_deletion_curve(r, q, "streaks", t, a, steps=4).attributed.shape
    (5,)
    """
    if attribution.side not in SIDES:
        raise DermretrError(f"cannot run a deletion test on side {attribution.side!r}")
    with _explaining(retriever):
        f = PairScore(retriever, [query_image], [text], [target_image], side=attribution.side,
                      which=attribution.which, alpha=alpha)
        return deletion_curve(f, f.inputs[0], attribution.heatmap, steps=steps, patch=patch, seeds=seeds)


# ---------------------------------------------------------------------------- faithfulness: randomisation


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
        from .viz import overlay

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
    _choice("mode", mode, ("cascading", "independent"))
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


# ---------------------------------------------------------------------------- faithfulness: localisation


def align_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask the way the preprocess resizes images (shorter side, centre crop; nearest).

    >>> import numpy as np
    >>> m = np.zeros((64, 96), bool); m[:, 40:56] = True
    >>> align_mask(m, 32).shape, int(align_mask(m, 32).sum())
    ((32, 32), 256)
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DermretrError(f"a mask must be 2-D [H, W], got shape {m.shape}")
    out_h, out_w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    h, w = m.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = m[top:top + side, left:left + side].astype(np.uint8) * 255
    img = Image.fromarray(crop).resize((int(out_w), int(out_h)), Image.Resampling.NEAREST)
    return np.asarray(img) > 127


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask
    from scipy.ndimage import binary_dilation

    yy, xx = np.mgrid[-px:px + 1, -px:px + 1]
    return binary_dilation(mask, structure=(yy ** 2 + xx ** 2) <= px ** 2)


def localisation_score(heatmap: np.ndarray, mask: np.ndarray, tolerance: int = 0,
                       top_fraction: float | None = None) -> dict[str, float]:
    """How well a heatmap falls on a ground-truth region, each number with its uniform-map baseline.

    Parameters
    ----------
    heatmap : ndarray
        ``[H, W]`` attribution (higher = more important).
    mask : ndarray
        ``[H, W]`` boolean ground truth (see :func:`align_mask` for other sizes).
    tolerance : int
        Pointing-game tolerance in pixels: a peak this close to the mask is a hit.
    top_fraction : float, optional
        Share of the image taken as "attributed" for the IoU (default: the
        mask's own area fraction).

    Returns
    -------
    dict
        ``hit`` (1.0 when the heatmap's peak lies in the mask dilated by
        ``tolerance``; a flat heatmap has no peak and scores its expected
        value, the baseline) and ``hit_baseline`` (the dilated mask's area
        fraction: the hit rate of a uniformly random point); ``iou`` of the
        top ``top_fraction`` pixels with the mask and ``iou_baseline`` (the
        expected IoU of as many random pixels); ``energy``, the share of the
        positive attribution inside the mask, and ``energy_baseline`` (the
        mask's area fraction); ``mask_fraction``.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((20, 20), bool); mask[5:10, 5:10] = True
    >>> heat = np.zeros((20, 20)); heat[7, 7] = 1.0
    >>> s = localisation_score(heat, mask)
    >>> s["hit"], s["hit_baseline"], s["energy"]
    (1.0, 0.0625, 1.0)
    """
    heat = np.asarray(heatmap, dtype=np.float64)
    m = np.asarray(mask).astype(bool)
    if heat.ndim != 2:
        raise DermretrError(f"a heatmap must be 2-D [H, W], got shape {heat.shape}")
    if heat.shape != m.shape:
        raise DermretrError(f"heatmap {heat.shape} and mask {m.shape} differ in size; resize the mask with "
                            "align_mask(mask, heatmap.shape)")
    if not np.isfinite(heat).all():
        raise DermretrError("the heatmap holds NaN or infinite values")
    area = float(m.mean())
    if area == 0:
        raise DermretrError("the ground-truth mask is empty: nothing to localise")
    tolerance = int(tolerance)
    if tolerance < 0:
        raise DermretrError(f"tolerance must be >= 0 pixels, got {tolerance}")
    q = area if top_fraction is None else float(top_fraction)
    if not 0 < q <= 1:
        raise DermretrError(f"top_fraction must be in (0, 1], got {top_fraction}")
    near = _dilate(m, tolerance)
    hit_baseline = float(near.mean())
    flat = np.ptp(heat) == 0
    if flat:
        hit = hit_baseline
    else:
        peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hit = 1.0 if near[peak] else 0.0
    n_top = max(1, int(round(q * heat.size)))
    if flat:
        iou = q * area / (q + area - q * area)
    else:
        top = np.zeros(heat.size, dtype=bool)
        top[np.argsort(-heat.ravel(), kind="stable")[:n_top]] = True
        top = top.reshape(heat.shape)
        iou = float((top & m).sum() / (top | m).sum())
    q_eff = n_top / heat.size
    iou_baseline = q_eff * area / (q_eff + area - q_eff * area)
    pos = np.clip(heat, 0, None)
    energy = float(pos[m].sum() / pos.sum()) if pos.sum() > 0 else area
    return {"hit": float(hit), "hit_baseline": hit_baseline, "iou": float(iou), "iou_baseline": float(iou_baseline),
            "energy": energy, "energy_baseline": area, "mask_fraction": area}


def localisation_summary(table: pd.DataFrame) -> dict[str, float]:
    """Means of :func:`dermsynth_localisation`'s per-pair table (and the number of pairs).

    >>> import pandas as pd
    >>> localisation_summary(pd.DataFrame({"hit": [1.0, 0.0], "hit_baseline": [0.2, 0.2], "iou": [0.5, 0.1],
    ...     "iou_baseline": [0.1, 0.1], "energy": [0.6, 0.2], "energy_baseline": [0.2, 0.2]}))["pointing"]
    0.5
    """
    if len(table) == 0:
        raise DermretrError("no pairs to summarise")
    mean = lambda c: float(table[c].mean())  # noqa: E731
    return {"pairs": int(len(table)), "pointing": mean("hit"), "pointing_baseline": mean("hit_baseline"),
            "iou": mean("iou"), "iou_baseline": mean("iou_baseline"), "energy": mean("energy"),
            "energy_baseline": mean("energy_baseline")}


def dermsynth_localisation(retriever, root: str | os.PathLike, method: str = "gradcam", which: str = "score",
                           n: int | None = 50, seed: int = 0, tolerance: int | None = None,
                           top_fraction: float | None = None, split: str | None = None, batch_size: int = 8,
                           **options: Any) -> pd.DataFrame:
    """Annotation-free localisation on DermSynth, scored against its ground-truth masks.

    For modification triplets whose change *adds* a criterion value (``to_value``
    not ``"absent"``), the query is (reference image, modification text), the
    target is the triplet's target, and the ground truth is the target's mask
    of that criterion.  The target-side attribution is scored with
    :func:`localisation_score`.

    Parameters
    ----------
    retriever : Retriever
        The model.
    root : path
        A DermSynth folder (:func:`dermretr.data.synth.generate`).
    method, which, **options
        As in :func:`explain_pairs`.
    n : int or None
        Triplets sampled (``seed``); None for all.
    tolerance : int, optional
        Pointing-game tolerance in pixels (default: input side / 16).
    top_fraction : float, optional
        See :func:`localisation_score`.
    split : str, optional
        Only triplets whose target is in this split (``"test"``...).
    batch_size : int
        Pairs attributed at once.

    Returns
    -------
    DataFrame
        One row per triplet: ``reference_case_id, target_case_id, criterion,
        to_value, modification_text, score`` and the :func:`localisation_score`
        columns; ``attrs["summary"]`` holds :func:`localisation_summary`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.data.synth import generate
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=30, image_size=64,
    ...                 modification_rate=0.6, workers=1, progress=False)
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> table = dermsynth_localisation(r, root, n=3)
    >>> len(table) <= 3, set(table.attrs["summary"]) >= {"pointing", "pointing_baseline"}
    (True, True)
    """
    from .data import load
    from .data.synth import load_masks

    root = Path(root).expanduser()
    mods_file = root / "meta" / "modifications.csv"
    if not mods_file.is_file():
        raise DermretrError(f"{root} has no meta/modifications.csv: not a DermSynth folder with modification "
                            "triplets (generate one with `dermretr synth --out DIR`)")
    mods = pd.read_csv(mods_file, dtype=str, keep_default_na=False)
    need = {"reference_case_id", "target_case_id", "modification_text", "criterion", "to_value"}
    if not need <= set(mods.columns):
        raise DermretrError(f"{mods_file} lacks columns {sorted(need - set(mods.columns))}")
    cases = load("synthetic", root).set_index("case_id", drop=False)
    mods = mods[(mods["to_value"] != "absent") & mods["target_case_id"].isin(cases.index)
                & mods["reference_case_id"].isin(cases.index)]
    if split is not None:
        mods = mods[cases.loc[mods["target_case_id"], "split"].astype(str).to_numpy() == split]
    if n is not None:
        if int(n) < 1:
            raise DermretrError(f"n must be at least 1 (or None for all triplets), got {n}")
        mods = mods.sample(n=min(int(n), len(mods)), random_state=int(seed)) if len(mods) else mods
    size = int(retriever.backbone.image_size)
    tolerance = max(1, size // 16) if tolerance is None else int(tolerance)
    rows, pairs, masks = [], [], []
    for _, mod in mods.iterrows():
        target = cases.loc[mod["target_case_id"]]
        if "mask" not in target or not isinstance(target["mask"], str):
            continue
        gt = load_masks(target["mask"]).get(mod["criterion"])
        if gt is None:
            continue
        gt = align_mask(gt, size)
        if not gt.any():
            continue  # rendered too small to survive the resize
        pairs.append((cases.loc[mod["reference_case_id"], "image_path"], mod["modification_text"],
                      target["image_path"]))
        masks.append(gt)
        rows.append({k: mod[k] for k in ("reference_case_id", "target_case_id", "criterion", "to_value",
                                         "modification_text")})
    if not pairs:
        raise DermretrError(f"no usable modification triplets in {root} (none adds a criterion with a "
                            "non-empty ground-truth mask); generate more cases or a higher modification_rate")
    return _localise(retriever, pairs, masks, rows, ["reference_case_id", "target_case_id", "criterion", "to_value",
                                                     "modification_text"],
                     side="target", labels=[r["target_case_id"] for r in rows], method=method, which=which,
                     tolerance=tolerance, top_fraction=top_fraction, batch_size=batch_size, **options)


_LOCALISATION_COLUMNS = ["score", "hit", "hit_baseline", "iou", "iou_baseline", "energy", "energy_baseline",
                         "mask_fraction"]


def _localise(retriever, pairs: list, masks: list, rows: list[dict], id_columns: list[str], side: str,
              labels: list, method: str, which: str, tolerance: int, top_fraction: float | None,
              batch_size: int, **options: Any) -> pd.DataFrame:
    """Attribute ``pairs`` to ``side`` and score each heatmap against its aligned mask (one row per pair)."""
    attrs = explain_pairs(retriever, pairs, method=method, which=which, side=side, labels=labels,
                          batch_size=batch_size, **options)
    for row, att, gt in zip(rows, attrs, masks):
        row["score"] = att.score
        row.update(localisation_score(att.heatmap, gt, tolerance=tolerance, top_fraction=top_fraction))
    table = pd.DataFrame(rows, columns=[*id_columns, *_LOCALISATION_COLUMNS])
    table.attrs["summary"] = localisation_summary(table)
    table.attrs["method"], table.attrs["which"], table.attrs["tolerance"] = method, which, tolerance
    return table


def mask_localisation(retriever, cases: pd.DataFrame, pairs: pd.DataFrame, mask_column: str = "lesion_mask",
                      method: str = "gradcam", which: str = "score", side: str = "target",
                      mask_bit: int | None = None, tolerance: int | None = None, top_fraction: float | None = None,
                      batch_size: int = 8, **options: Any) -> pd.DataFrame:
    """Localisation against a binary mask column of a case table (e.g. PH2's ``lesion_mask``).

    The same check as :func:`dermsynth_localisation` for any data with
    region masks: each (reference case, text, target case) pair is attributed
    to ``side`` with :func:`explain_pairs`, the attributed case's mask is
    brought into the model's frame with :func:`align_mask`, and the heatmap is
    scored with :func:`localisation_score` (pointing game, IoU of the top
    attributed area, attribution energy inside the mask, each with its
    uniform-map baseline: for the energy, the mask's area fraction).

    Parameters
    ----------
    retriever : Retriever
        The model.
    cases : DataFrame
        Case table with ``case_id``, ``image_path`` and ``mask_column``.
    pairs : DataFrame
        One row per pair: ``reference_case_id``, ``target_case_id`` and the
        query text as ``text`` (or ``modification_text``, as in DermSynth's
        triplets).  For case retrieval the reference is the query case and
        the target a retrieved case.
    mask_column : str
        Column of mask file paths, read with
        :func:`dermretr.data.images.load_mask`: non-zero pixels are the region
        (PH2's ``lesion_mask``); for DermSynth's ``mask`` column the lesion bit
        (0) is read unless ``mask_bit`` says otherwise.
    method, which, **options
        As in :func:`explain_pairs`.
    side : {"target", "reference"}
        The attributed image, and so whose mask is used.
    mask_bit : int, optional
        Read this bit of the mask's raw values as the region.
    tolerance : int, optional
        Pointing-game tolerance in pixels (default: input side / 16).
    top_fraction : float, optional
        See :func:`localisation_score`.
    batch_size : int
        Pairs attributed at once.

    Returns
    -------
    DataFrame
        One row per pair: ``reference_case_id, target_case_id, text, score``
        and the :func:`localisation_score` columns; ``attrs["summary"]``
        (:func:`localisation_summary`), ``attrs["method"]``, ``"which"``,
        ``"side"``, ``"tolerance"``, ``"mask_column"`` and ``attrs["skipped"]``
        (pairs whose mask is empty in the model's frame, left out with a
        :class:`~dermretr._errors.DataWarning`).

    Raises
    ------
    DermretrError
        For missing columns, unknown case ids, a case without a mask, a mask
        file that is missing or unreadable, a mask whose aspect ratio is not
        its image's, or when no pair is left.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> img = np.full((64, 64, 3), 200, np.uint8); img[16:48, 16:48] = 60
    >>> Image.fromarray(img).save(d / "a.png")
    >>> mask = np.zeros((64, 64), np.uint8); mask[16:48, 16:48] = 255
    >>> Image.fromarray(mask).save(d / "a_lesion.png")
    >>> cases = pd.DataFrame({"case_id": ["a"], "image_path": [str(d / "a.png")],
    ...                       "lesion_mask": [str(d / "a_lesion.png")]})
    >>> pairs = pd.DataFrame({"reference_case_id": ["a"], "target_case_id": ["a"], "text": ["dark lesion"]})
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> table = mask_localisation(r, cases, pairs)
    >>> len(table), float(table.loc[0, "energy_baseline"])
    (1, 0.25)
    """
    import warnings

    from ._errors import DataWarning
    from .data.images import load_mask

    _choice("method", method, METHODS)
    _choice("which", which, WHICH)
    _choice("side", side, SIDES)
    _check_options(method, options)
    for name, frame, need in (("cases", cases, ("case_id", "image_path", mask_column)),
                              ("pairs", pairs, ("reference_case_id", "target_case_id"))):
        if not isinstance(frame, pd.DataFrame):
            raise DermretrError(f"{name} must be a DataFrame, got {type(frame).__name__}")
        lacking = [c for c in need if c not in frame.columns]
        if lacking:
            raise DermretrError(f"{name} lacks the columns {lacking} (it has "
                                f"{', '.join(map(str, list(frame.columns)[:12]))})")
    text_column = "text" if "text" in pairs.columns else "modification_text"
    if text_column not in pairs.columns:
        raise DermretrError("pairs needs the query text as a 'text' (or 'modification_text') column")
    if len(pairs) == 0:
        raise DermretrError("no pairs to localise")
    table = cases.assign(case_id=cases["case_id"].astype(str)).drop_duplicates("case_id").set_index("case_id",
                                                                                                    drop=False)
    for col in ("reference_case_id", "target_case_id"):
        unknown = ~pairs[col].astype(str).isin(table.index)
        if unknown.any():
            raise DermretrError(f"{int(unknown.sum())} pairs have a {col} that is not in the case table (e.g. "
                                f"{pairs[col][unknown].iloc[0]!r})")
    bit = (0 if mask_column == "mask" else None) if mask_bit is None else mask_bit
    size = int(retriever.backbone.image_size)
    tolerance = max(1, size // 16) if tolerance is None else int(tolerance)
    id_columns = ["reference_case_id", "target_case_id", "text"]
    rows, items, masks, labels, skipped = [], [], [], [], []
    for _, pair in pairs.iterrows():
        ref, tgt = table.loc[str(pair["reference_case_id"])], table.loc[str(pair["target_case_id"])]
        case = tgt if side == "target" else ref
        path = case[mask_column]
        if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
            raise DermretrError(f"case {case['case_id']} has no mask in column {mask_column!r}; leave its pairs "
                                "out")
        try:
            gt = load_mask(path, bit=bit)
            with Image.open(case["image_path"]) as im:
                w, h = im.size
        except (DermretrError, OSError) as exc:
            raise DermretrError(f"case {case['case_id']}: {exc}") from None
        if abs(gt.shape[0] / gt.shape[1] - h / w) > 0.02 * (h / w):
            raise DermretrError(f"case {case['case_id']}: the mask {path} is {gt.shape[1]}x{gt.shape[0]} but its "
                                f"image is {w}x{h} (another aspect ratio): is it the mask of another image?")
        gt = align_mask(gt, size)
        if not gt.any():
            skipped.append(str(case["case_id"]))
            continue
        items.append((ref["image_path"], str(pair[text_column]), tgt["image_path"]))
        masks.append(gt)
        labels.append(str(case["case_id"]))
        rows.append({"reference_case_id": str(ref["case_id"]), "target_case_id": str(tgt["case_id"]),
                     "text": str(pair[text_column])})
    if skipped:
        warnings.warn(f"{len(skipped)} pairs left out: the mask of {skipped[0]}{' ...' if len(skipped) > 1 else ''} "
                      "is empty in the model's (centre-cropped) frame", DataWarning, stacklevel=2)
    if not items:
        raise DermretrError("no pair has a non-empty mask in the model's frame")
    out = _localise(retriever, items, masks, rows, id_columns, side=side, labels=labels, method=method,
                    which=which, tolerance=tolerance, top_fraction=top_fraction, batch_size=batch_size, **options)
    out.attrs.update({"side": side, "mask_column": mask_column, "skipped": skipped})
    return out
