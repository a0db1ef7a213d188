"""What every explanation starts from: the option constants, the model's input pixels, baselines and display.

Images of any accepted kind (path, PIL image, RGB array, normalised tensor)
become the model's normalised input here; :func:`to_display` undoes the
normalisation with the backbone's own numbers (:attr:`Backbone.image_mean
<dermretr.models.backbones.Backbone.image_mean>`), and :func:`explaining`
freezes a retriever for the duration of an attribution.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .._checks import check_choice, check_int
from .._errors import DermretrError

__all__ = ["METHODS", "WHICH", "SIDES", "BASELINES", "METHOD_OPTIONS", "MAX_SIDE_FACTOR", "explaining",
           "norm_tensors", "to_pixels", "to_display", "make_baseline", "as_texts", "check_options",
           "check_batch_size"]

#: Attribution methods for images.
METHODS: tuple[str, ...] = ("ig", "occlusion", "gradcam")
#: Which score is explained: the final convex score, or one of its two parts.
WHICH: tuple[str, ...] = ("score", "global", "local")
#: Which image of the pair is attributed.
SIDES: tuple[str, ...] = ("target", "reference")
#: Baselines ("absence of signal") for IG and Occlusion.
BASELINES: tuple[str, ...] = ("mean", "black", "blur")

#: The options each method takes (``**options`` of :func:`~dermretr.explain.explain_pairs`).
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "ig": ("n_steps", "baseline", "internal_batch_size"),
    "occlusion": ("window", "stride", "baseline", "perturbations_per_eval"),
    "gradcam": ("block", "relu"),
}
MAX_SIDE_FACTOR: int = 4  # larger images are shrunk to this many times the input side before the preprocess


@contextlib.contextmanager
def explaining(*retrievers: nn.Module) -> Iterator[None]:
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


def norm_tensors(backbone) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's input normalisation (its ``image_mean`` and ``image_std``) as ``[3, 1, 1]`` tensors."""
    return (torch.tensor(backbone.image_mean).view(3, 1, 1), torch.tensor(backbone.image_std).view(3, 1, 1))


def to_pixels(retriever, image: Any, what: str = "image") -> torch.Tensor:
    """One image as the model's normalised input ``[3, S, S]`` on the retriever's device."""
    from ..data.images import load_rgb

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
    if max(img.size) > MAX_SIDE_FACTOR * size:  # very large images: shrink cheaply first, then preprocess
        img = img.copy()
        img.thumbnail((MAX_SIDE_FACTOR * size, MAX_SIDE_FACTOR * size), Image.Resampling.BILINEAR,
                      reducing_gap=2.0)
    x = bb.preprocess(img)
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != (3, size, size):
        raise DermretrError(f"{what}: the backbone preprocess gave {getattr(x, 'shape', type(x))}, "
                            f"expected [3, {size}, {size}]")
    return x.to(retriever.device)


def to_display(retriever, pixels: torch.Tensor) -> np.ndarray:
    """A normalised input ``[3, S, S]`` back to uint8 RGB ``[S, S, 3]``."""
    mean, std = norm_tensors(retriever.backbone)
    img = pixels.detach().float().cpu() * std + mean
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def make_baseline(retriever, pixels: torch.Tensor, kind: str | float) -> torch.Tensor:
    """The "no signal" input for IG/Occlusion: the preprocess mean colour, black, or a blurred copy."""
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(pixels, float(kind))
    check_choice("baseline", kind, BASELINES)
    if kind == "mean":
        return torch.zeros_like(pixels)
    if kind == "black":
        mean, std = norm_tensors(retriever.backbone)
        return ((0 - mean) / std).to(pixels).expand_as(pixels).clone()
    from torchvision.transforms.functional import gaussian_blur

    size = pixels.shape[-1]
    sigma = max(1.0, size / 16)
    kernel = int(2 * round(3 * sigma) + 1)
    kernel = min(kernel, 2 * ((size - 1) // 2) + 1)
    return gaussian_blur(pixels, [kernel, kernel], [sigma, sigma])


def as_texts(texts: Iterable[Any]) -> list[str]:
    """The query texts as strings (None becomes the empty text)."""
    return ["" if t is None else str(t) for t in texts]


def check_options(method: str, options: Mapping[str, Any]) -> None:
    """Refuse options the attribution ``method`` does not take, naming the ones it does."""
    allowed = METHOD_OPTIONS[method]
    bad = [k for k in options if k not in allowed]
    if bad:
        raise DermretrError(f"unknown option{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} for "
                            f"method={method!r}; its options: {', '.join(allowed)}")


def check_batch_size(batch_size: Any) -> int:
    """The number of pairs attributed at once: an integer of at least 1 (a bool is not a count)."""
    value = check_int(batch_size, "batch_size", 1, what="at least 1")
    assert value is not None
    return value
