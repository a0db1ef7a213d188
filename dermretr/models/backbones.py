"""Backbones: an open_clip factory plus dermretr's small model configs.

:func:`create` wraps ``open_clip.create_model_and_transforms`` and returns a
:class:`Backbone` exposing what composed retrieval needs: the image's global
embedding *and* its patch tokens (open_clip 3.x ``forward_intermediates``),
and the text's pooled embedding *and* its token features.

Names accepted:

* dermretr's configs ``"dermretr-tiny"`` (ViT width 192, depth 4, patch 16,
  128 px; text width 128, depth 3, context 64) and ``"dermretr-small"``,
  registered with ``open_clip.add_model_config``;
* any open_clip architecture (``"ViT-B-16"``) with an optional pretrained tag;
* ``"hf-hub:ORG/REPO"`` (e.g. ``hf-hub:redlessone/DermLIP_ViT-B-16``) and
  ``"local-dir:/path"`` (a folder with ``open_clip_config.json`` and weights);
* ``pretrained="/path/to/checkpoint.pt"`` (or ``.bin`` / ``.safetensors``): a
  local weights file for the named architecture, loaded with
  ``weights_only=True``.

Nothing is downloaded unless you ask for hub weights; offline, that fails with
a message saying how to use a local file instead.

Examples
--------
>>> import torch
>>> from dermretr.models.backbones import create
>>> bb = create("dermretr-tiny", device="cpu")
>>> g, tokens = bb.encode_image(torch.zeros(2, 3, 128, 128))
>>> tuple(g.shape), tuple(tokens.shape), bb.grid
((2, 128), (2, 64, 192), (8, 8))
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .._device import resolve_device
from .._errors import DermretrError

__all__ = ["Backbone", "create", "list_models", "CONFIG_DIR", "DERMRETR_MODELS"]

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)
#: dermretr's own small configs (shipped as JSON in ``dermretr/models/configs``).
DERMRETR_MODELS: tuple[str, ...] = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))

_OFFLINE_HINT = (
    "no internet access here? Download the weights elsewhere and pass the file: "
    "create(NAME, pretrained='/path/open_clip_pytorch_model.bin') for an open_clip architecture, or "
    "create('local-dir:/path/to/folder') for a folder holding open_clip_config.json and the weights "
    "(what an hf-hub repository contains)."
)


def list_models() -> list[str]:
    """All architecture names open_clip knows here, dermretr's configs included.

    >>> "dermretr-tiny" in list_models()
    True
    """
    return list(open_clip.list_models())


@dataclass
class Backbone:
    """An open_clip model with its transforms, tokenizer and token-level access.

    Attributes
    ----------
    model : nn.Module
        The open_clip model (CLIP or CustomTextCLIP).
    preprocess : callable
        Evaluation transform (PIL image -> tensor).
    train_preprocess : callable
        Training transform from open_clip (random resized crop).
    tokenizer : callable
        ``tokenizer(list_of_str) -> LongTensor [B, context_length]``.
    name, pretrained : str
        What was loaded.
    embed_dim : int
        Dimension of the joint embedding.
    vision_width : int
        Width of the patch tokens.
    grid : (int, int)
        Patch grid of the image tower.
    image_size : int
        Input side in pixels.
    """

    model: nn.Module
    preprocess: Callable
    train_preprocess: Callable
    tokenizer: Callable
    name: str
    pretrained: str | None
    embed_dim: int
    vision_width: int
    grid: tuple[int, int]
    image_size: int

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Tokenize texts onto the backbone's device."""
        return self.tokenizer(list(texts)).to(self.device)

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global embedding ``[B, D]`` (not normalised) and patch tokens ``[B, N, W]``.

        Patch tokens are the last block's output after the final norm, without
        class/prefix tokens.
        """
        out = self.model.visual.forward_intermediates(
            images, indices=1, normalize_intermediates=True, output_fmt="NLC"
        )
        tokens = out["image_intermediates"][-1]
        if tokens.dim() == 4:  # NCHW from towers that ignore output_fmt
            tokens = tokens.flatten(2).transpose(1, 2)
        return out["image_features"], tokens

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled embedding ``[B, D]``, token features ``[B, L, W_t]`` and a padding mask ``[B, L]``.

        The mask is True for real tokens (not padding).
        """
        out = self.model.forward_intermediates(
            text=tokens, text_indices=1, normalize=False, normalize_intermediates=True
        )
        feats = out["text_intermediates"][-1]
        mask = tokens != 0
        return out["text_features"], feats, mask

    def project_tokens(self) -> torch.Tensor | None:
        """The image tower's projection (``W -> D``) when it has one, else None."""
        proj = getattr(self.model.visual, "proj", None)
        return proj if isinstance(proj, torch.Tensor) else None

    def text_width(self) -> int:
        """Width of the text token features."""
        with torch.no_grad():
            tok = self.tokenize([""])
            return int(self.encode_text(tok)[1].shape[-1])


def _check_name(name: str) -> None:
    if name.startswith(("hf-hub:", "local-dir:")):
        return
    known = list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DermretrError(
            f"unknown model name {name!r}{hint} (dermretr's own: {', '.join(DERMRETR_MODELS)}; "
            "any open_clip architecture, 'hf-hub:ORG/REPO' or 'local-dir:/path' also work)"
        )


def _check_pretrained(name: str, pretrained: str | None) -> str | None:
    if pretrained is None or str(pretrained).strip() == "":
        return None
    pretrained = str(pretrained)
    looks_like_path = os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
    if looks_like_path:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise DermretrError(f"pretrained weights file not found: {path}")
        return str(path)
    if name.startswith(("hf-hub:", "local-dir:")):
        raise DermretrError(f"{name!r} brings its own weights; do not pass pretrained={pretrained!r}")
    tags = open_clip.list_pretrained_tags_by_model(name) if name in list_models() else []
    if pretrained not in tags:
        raise DermretrError(
            f"unknown pretrained tag {pretrained!r} for {name!r}; known tags: {', '.join(tags) or 'none'}; "
            "or pass the path of a weights file"
        )
    return pretrained


def create(
    name: str = "dermretr-tiny",
    pretrained: str | None = None,
    device: str | torch.device | None = "auto",
    image_size: int | None = None,
    cache_dir: str | None = None,
) -> Backbone:
    """Create an open_clip backbone with token-level access.

    Parameters
    ----------
    name : str
        Architecture (``"dermretr-tiny"``, ``"ViT-B-16"``...), ``"hf-hub:ORG/REPO"``
        or ``"local-dir:/path"``.
    pretrained : str, optional
        An open_clip pretrained tag (``"openai"``) or the path of a local weights
        file; None (default) initialises randomly.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    image_size : int, optional
        Override the input size; must be a multiple of the patch size.
    cache_dir : str, optional
        Where open_clip caches downloaded weights.

    Returns
    -------
    Backbone

    Examples
    --------
    >>> create("dermretr-tiyn")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: unknown model name 'dermretr-tiyn'; did you mean dermretr-tiny, ...
    """
    _check_name(name)
    pretrained = _check_pretrained(name, pretrained)
    dev = resolve_device(device)
    kwargs = {}
    if image_size is not None:
        if name in list_models():
            patch = open_clip.get_model_config(name)["vision_cfg"].get("patch_size")
            if patch and image_size % patch:
                raise DermretrError(
                    f"image size {image_size} is not divisible by the patch size {patch} of {name}; "
                    f"use a multiple of {patch}, e.g. {max(patch, round(image_size / patch) * patch)}"
                )
        kwargs["force_image_size"] = image_size
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))  # silence "No pretrained weights loaded" for random init
    try:
        model, train_pre, pre = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=dev, cache_dir=cache_dir, weights_only=True, **kwargs
        )
    except DermretrError:
        raise
    except (RuntimeError, OSError, ValueError, ImportError, KeyError, AssertionError) as exc:
        text = f"{type(exc).__name__}: {exc}"
        remote = name.startswith("hf-hub:") or (pretrained is not None and not os.path.isfile(pretrained))
        if remote and any(w in text.lower() for w in ("connect", "resolve", "offline", "internet", "http",
                                                       "huggingface", "hub", "download", "network")):
            raise DermretrError(f"could not fetch weights for {name!r} ({text.splitlines()[0][:200]}); "
                                f"{_OFFLINE_HINT}") from None
        if pretrained is not None and os.path.isfile(pretrained):
            raise DermretrError(
                f"weights file {pretrained} does not fit architecture {name!r}: {text.splitlines()[0][:300]}"
            ) from None
        raise DermretrError(f"could not create model {name!r}: {text.splitlines()[0][:300]}") from None
    finally:
        logger.setLevel(level)
    model.eval()
    visual = model.visual
    grid = tuple(getattr(visual, "grid_size", (0, 0)))
    img_size = getattr(visual, "image_size", image_size)
    img_size = int(img_size[0] if isinstance(img_size, (tuple, list)) else img_size)
    with torch.no_grad():  # one probe forward gives the embedding dimension and the token shape
        pooled, tokens = Backbone.encode_image(
            Backbone(model, pre, train_pre, None, name, pretrained, 0, 0, grid, img_size),  # type: ignore[arg-type]
            torch.zeros(1, 3, img_size, img_size, device=dev),
        )
    embed_dim = int(pooled.shape[-1])
    n = tokens.shape[1]
    if not grid or grid[0] * grid[1] != n:
        side = int(round(n**0.5))
        grid = (side, n // side)
    return Backbone(
        model=model,
        preprocess=pre,
        train_preprocess=train_pre,
        tokenizer=open_clip.get_tokenizer(name, cache_dir=cache_dir) if not name.startswith("local-dir:")
        else open_clip.get_tokenizer(name),
        name=name,
        pretrained=pretrained,
        embed_dim=embed_dim,
        vision_width=int(tokens.shape[-1]),
        grid=grid,
        image_size=img_size,
    )


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension."""
    return F.normalize(x, dim=-1)
