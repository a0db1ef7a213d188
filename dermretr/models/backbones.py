"""Backbones: an open_clip factory plus dermretr's small model configs.

:func:`create` wraps ``open_clip.create_model_and_transforms`` and returns a
:class:`Backbone` exposing what composed retrieval needs: the image's global
embedding *and* its patch tokens (open_clip 3.x ``forward_intermediates``),
and the text's pooled embedding *and* its token features.

Names accepted:

* dermretr's configs ``"dermretr-tiny"`` (ViT width 192, depth 4, patch 16,
  128 px; text width 128, depth 3, context 64), ``"dermretr-small"`` and
  ``"dermretr-cnn"`` (a timm ResNet-18 image tower, random init, with the tiny
  text tower: a convolutional model for small data), registered with
  ``open_clip.add_model_config``;
* any open_clip architecture (``"ViT-B-16"``) with an optional pretrained tag;
* ``"hf-hub:ORG/REPO"`` (e.g. ``hf-hub:redlessone/DermLIP_ViT-B-16``) and
  ``"local-dir:/path"`` (a folder with ``open_clip_config.json`` and weights);
* ``pretrained="/path/to/checkpoint.pt"`` (or ``.bin`` / ``.safetensors``): a
  local weights file for the named architecture, read by :func:`read_weights`
  (``weights_only=True``: a pickle holding Python objects is refused, never run);
  a dermretr checkpoint (``RUN/checkpoints/best.pt``) gives its backbone, so a
  model trained on one dataset (DermSynth) is fine-tuned on another.

A file that is not a weights file, or whose weights do not fit the architecture
(:func:`weights_mismatch`), raises :class:`~dermretr.DermretrError` naming the
file and what was expected.

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
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn

from .._device import resolve_device
from .._errors import DermretrError

__all__ = ["Backbone", "create", "list_models", "read_weights", "weights_mismatch", "CONFIG_DIR", "DERMRETR_MODELS",
           "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD"]

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)
#: dermretr's own small configs (shipped as JSON in ``dermretr/models/configs``).
DERMRETR_MODELS: tuple[str, ...] = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))

#: Per-channel mean and standard deviation of OpenAI CLIP's input normalisation (RGB, on [0, 1] pixels): the
#: default of :attr:`Backbone.image_mean` / :attr:`Backbone.image_std` when a backbone names none.
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

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
    image_mean, image_std : (float, float, float)
        The per-channel normalisation of the inputs (properties; see :attr:`image_mean`).
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

    def _norm_stat(self, key: str) -> tuple[float, float, float]:
        """``key`` ("mean" or "std") of the input normalisation.

        From the preprocess's ``Normalize`` (the last one when there are
        several), else the model's ``visual.preprocess_cfg``, else OpenAI CLIP's.
        """
        found = None
        for t in getattr(self.preprocess, "transforms", []):
            if hasattr(t, "mean") and hasattr(t, "std"):
                found = getattr(t, key)
        if found is None:
            cfg = getattr(getattr(self.model, "visual", None), "preprocess_cfg", None)
            found = cfg.get(key) if isinstance(cfg, dict) else None
        if found is None:
            return OPENAI_CLIP_MEAN if key == "mean" else OPENAI_CLIP_STD
        values = tuple(float(v) for v in found)
        return (values[0], values[1], values[2]) if len(values) == 3 else (values[0],) * 3

    @property
    def image_mean(self) -> tuple[float, float, float]:
        """Per-channel mean (RGB, pixels in [0, 1]) the inputs are normalised by.

        Read from the backbone's own preprocess (its ``Normalize``), else the
        open_clip model's ``visual.preprocess_cfg``, else
        :data:`OPENAI_CLIP_MEAN`: the one place these numbers come from.

        >>> from dermretr.models.backbones import create
        >>> create("dermretr-tiny", device="cpu", image_size=32).image_mean == OPENAI_CLIP_MEAN
        True
        """
        return self._norm_stat("mean")

    @property
    def image_std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation the inputs are normalised by (see :attr:`image_mean`)."""
        return self._norm_stat("std")

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Tokenize texts onto the backbone's device."""
        return self.tokenizer(list(texts)).to(self.device)

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global embedding ``[B, D]`` (not normalised) and patch tokens ``[B, N, W]``.

        Patch tokens are the last block's output after the final norm, without
        class/prefix tokens; for convolutional towers (open_clip's ResNets, timm
        CNNs) they are the cells of the last feature map, row by row.
        """
        return _image_features(self.model.visual, images)

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled embedding ``[B, D]``, token features ``[B, L, W_t]`` and a padding mask ``[B, L]``.

        The mask is True for real tokens (not padding).
        """
        model: Any = self.model  # open_clip's CLIP / CustomTextCLIP
        out = model.forward_intermediates(
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


def _image_features(visual: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global embedding and patch tokens ``[B, N, W]`` of an open_clip image tower (:meth:`Backbone.encode_image`)."""
    # open_clip's ViT gives token lists (NLC); its ResNets and timm towers give feature maps only (NCHW)
    out = visual.forward_intermediates(
        images, indices=1, normalize_intermediates=True,
        output_fmt="NLC" if isinstance(visual, VisionTransformer) else "NCHW",
    )
    tokens = out["image_intermediates"][-1]
    if tokens.dim() == 4:  # feature maps: one token per cell, row by row
        tokens = tokens.flatten(2).transpose(1, 2)
    return out["image_features"], tokens


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file starts with the little-endian length of its JSON header, then ``{``."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= size - 8 and head[8:9] == b"{"


def _zip_names(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


_REFUSED = ("it was refused as unsafe: it is not a plain weights file but a pickle of Python objects, which "
            "could run code when loaded (was it saved with torch.save(model) instead of "
            "torch.save(model.state_dict())?)")


def read_weights(path: str | os.PathLike, expected: str) -> object:
    """Read a PyTorch (``weights_only=True``) or safetensors file, with a clear error for anything else.

    Returns what the file holds (a dict of tensors, or a dict with one, for a
    weights file).  Any file that cannot be read that way -- a pickle of Python
    objects (refused as unsafe, never run), an empty, truncated or corrupt file,
    a numpy ``.npy``/``.npz`` archive, random bytes -- raises a
    :class:`~dermretr.DermretrError` naming ``path``, what is wrong and
    ``expected`` (what the caller wanted, e.g. ``"a dermretr checkpoint"``).

    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "weights.pt"
    >>> _ = bad.write_bytes(b"")
    >>> read_weights(bad, "a weights file")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: cannot load .../weights.pt: the file is empty (...); expected a weights file
    """
    path = Path(path).expanduser()

    def fail(reason: str) -> DermretrError:
        return DermretrError(f"cannot load {path}: {reason}; expected {expected}")

    if not path.exists():
        raise DermretrError(f"{path} not found; expected {expected}")
    if path.is_dir():
        raise fail("it is a folder, not a file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise fail(f"it cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise fail("the file is empty (an interrupted copy or download?)")
    if path.suffix.lower() == ".safetensors" or _looks_like_safetensors(head, size):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise fail("reading a .safetensors file needs the safetensors package (pip install safetensors)") from None
        try:
            return load_file(str(path), device="cpu")
        except MemoryError:
            raise fail("there is not enough memory to load it") from None
        except Exception as exc:  # SafetensorError and friends
            raise fail(f"it is not a readable safetensors file ({_first_line(exc)}): truncated or corrupt?") from None
    if head.startswith(b"\x93NUMPY"):
        raise fail("it is a numpy .npy array, not a PyTorch or safetensors weights file")
    is_zip = head.startswith(b"PK")
    if is_zip:
        names = _zip_names(path)
        if names is None:
            raise fail("it is a truncated or corrupt archive (an interrupted copy or download?)")
        if not any(n.endswith("data.pkl") for n in names):
            if names and all(n.endswith(".npy") for n in names):
                raise fail("it is a numpy .npz archive, not a PyTorch or safetensors weights file")
            raise fail("it is a zip archive but not a PyTorch file (no data.pkl inside)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4 in the checkpoint"
            return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise fail("there is not enough memory to load it") from None
    except Exception as exc:  # torch.load fails with many exception types
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text:
            raise fail(_REFUSED) from None
        if isinstance(exc, EOFError):
            raise fail("it ends early: truncated (an interrupted copy or download?)") from None
        if is_zip:
            raise fail(f"it is a truncated or corrupt PyTorch file ({_first_line(exc, 120)})") from None
        if head[:1] == b"\x80" and "Weights only load failed" in text:
            raise fail(_REFUSED.replace("a pickle of Python objects", "a Python pickle")) from None
        raise fail("it is not a PyTorch or safetensors weights file (unrecognised content)") from None


def weights_mismatch(model: nn.Module, state: dict) -> str | None:
    """One line saying how the weights ``state`` do not fit ``model`` (None when they fit exactly).

    Counts the model's weights missing from ``state``, the entries of ``state``
    the model does not have and those of another shape, with an example of each.

    >>> weights_mismatch(nn.Linear(2, 3), {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}) is None
    True
    >>> for part in weights_mismatch(nn.Linear(2, 3), {"weight": torch.zeros(4, 2), "head.bias": torch.zeros(3)}
    ...                              ).split("; "):
    ...     print(part)
    1 of the model's 2 weights missing (e.g. bias)
    1 unknown to it (e.g. head.bias)
    1 of another shape (e.g. weight: [4, 2] in the file, [3, 2] in the model)
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [str(k) for k in state if k not in own]
    not_tensor = [k for k in own if k in state and not isinstance(state[k], torch.Tensor)]
    shape = [k for k in own if k in state and k not in not_tensor and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or not_tensor or shape):
        return None

    def eg(keys: list[str]) -> str:
        return ", ".join(keys[:2]) + (", ..." if len(keys) > 2 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's {len(own)} weights missing (e.g. {eg(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unknown to it (e.g. {eg(unexpected)})")
    if not_tensor:
        parts.append(f"{len(not_tensor)} not tensors (e.g. {eg(not_tensor)})")
    if shape:
        k = shape[0]
        parts.append(f"{len(shape)} of another shape (e.g. {k}: {list(state[k].shape)} in the file, "
                     f"{list(own[k].shape)} in the model)")
    return "; ".join(parts)


def _weights_in_dir(folder: Path) -> str | None:
    """The weights file open_clip would pick in a ``local-dir:`` folder (None when there is none)."""
    find = getattr(open_clip.factory, "_find_checkpoint_in_dir", None)
    if find is not None:
        return find(folder)
    found = sorted(p for ext in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(ext))
    return str(found[0]) if found else None


def _load_local_weights(model: nn.Module, path: str, name: str) -> None:
    """Load the weights file ``path`` into the open_clip ``model``.

    As open_clip's ``load_checkpoint`` does, but reading it with
    :func:`read_weights` and summarising a mismatch in one line.
    """
    expected = (f"a weights file for architecture {name!r} (its state dict saved with torch.save, "
                "or a .safetensors file)")
    if Path(path).suffix.lower() in (".npz", ".npy"):  # big_vision (SigLIP) numpy weights, read without pickle
        try:
            open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
        except Exception as exc:
            raise DermretrError(f"cannot load {path}: it is not big_vision (SigLIP) numpy weights for architecture "
                                f"{name!r} ({type(exc).__name__}: {_first_line(exc, 150)}); expected {expected}"
                                ) from None
        return
    obj = read_weights(path, expected)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
        encoder = {k[len("encoder."):]: v for k, v in obj.items() if isinstance(k, str) and k.startswith("encoder.")}
        if encoder:  # a dermretr checkpoint (RUN/checkpoints/best.pt): start from its backbone, e.g. to fine-tune
            obj = encoder  # a model trained on DermSynth on real images
    if isinstance(obj, torch.jit.ScriptModule):  # pragma: no cover - weights_only never returns one
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        held = "an empty dict" if isinstance(obj, dict) and not obj else f"a {type(obj).__name__}"
        raise DermretrError(f"cannot load {path}: it holds {held}, not a state dict of weights; expected {expected}")
    state = dict(obj)
    if next(iter(state)).startswith("module."):
        state = {k[len("module."):]: v for k, v in state.items()}
    for key in ("input_resolution", "context_length", "vocab_size"):
        if not isinstance(state.get(key, torch.zeros(0)), torch.Tensor):
            state.pop(key)
    try:  # open_clip's conversions of third-party and older layouts, and resized position embeddings
        from open_clip.convert import convert_state_dict
        from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

        state = convert_state_dict(model, state)
        if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
            state = convert_to_custom_text_state_dict(state)
        for key in ("logit_scale", "logit_bias"):
            own = getattr(model, key, None)
            if isinstance(state.get(key), torch.Tensor) and isinstance(own, torch.Tensor) \
                    and own.ndim != state[key].ndim and own.numel() == state[key].numel():
                state[key] = state[key].reshape(own.shape)
        if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None \
                and isinstance(state.get("logit_scale"), torch.Tensor):
            state["logit_bias"] = torch.zeros_like(state["logit_scale"])
        state.pop("text.transformer.embeddings.position_ids", None)
        resize_pos_embed(state, model)
        resize_text_pos_embed(state, model)
    except Exception:  # a foreign layout: the mismatch below says how it differs
        pass
    problem = weights_mismatch(model, state)
    if problem:
        raise DermretrError(f"weights file {path} does not fit architecture {name!r}: {problem}; expected {expected}")
    model.load_state_dict(state, strict=True)


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
        if path.is_dir():
            raise DermretrError(f"pretrained weights {path} is a folder, not a file; pass the weights file itself "
                                f"or use the name 'local-dir:{path}' for a folder with open_clip_config.json")
        if not path.is_file():
            raise DermretrError(f"pretrained weights file not found: {path}")
        if name.startswith(("hf-hub:", "local-dir:")):
            raise DermretrError(f"{name!r} brings its own weights; do not pass pretrained={str(path)!r}")
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
    dev = resolve_device(str(device) if isinstance(device, torch.device) else device)
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
    # a local weights file (given, or in a local-dir folder) is read here (read_weights: weights-only,
    # clear errors), not by open_clip
    local_file = pretrained if pretrained is not None and os.path.isfile(pretrained) else None
    local_dir = name.startswith("local-dir:")
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))  # silence "No pretrained weights loaded" for random init
    try:
        model, train_pre, pre = open_clip.create_model_and_transforms(
            name, pretrained=None if local_file else pretrained, load_weights=not local_dir, device=dev,
            cache_dir=cache_dir, weights_only=True, **kwargs
        )
        if local_dir:
            local_file = _weights_in_dir(Path(name[len("local-dir:"):]))
        if local_file:
            _load_local_weights(model, local_file, name)
    except DermretrError:
        raise
    except MemoryError:
        raise DermretrError(f"not enough memory to create model {name!r}") from None
    except Exception as exc:  # open_clip, hub downloads and their weights files fail in many ways
        text = f"{type(exc).__name__}: {exc}"
        if "Weights only load failed" in text or "GLOBAL" in text:  # never pass on torch's advice to unpickle
            text = _REFUSED
        elif "safetensor" in type(exc).__name__.lower():
            text = f"a weights file is not a readable safetensors file ({_first_line(exc)}): truncated or corrupt?"
        remote = name.startswith("hf-hub:") or (pretrained is not None and not local_file)
        if remote and any(w in text.lower() for w in ("connect", "resolve", "offline", "internet", "http",
                                                       "huggingface", "hub", "download", "network")):
            raise DermretrError(f"could not fetch weights for {name!r} ({text.splitlines()[0][:200]}); "
                                f"{_OFFLINE_HINT}") from None
        raise DermretrError(f"could not create model {name!r}: {text.splitlines()[0][:300]}") from None
    finally:
        logger.setLevel(level)
    model.eval()
    visual = model.visual
    grid = tuple(getattr(visual, "grid_size", (0, 0)))
    side = getattr(visual, "image_size", image_size)
    side = side[0] if isinstance(side, (tuple, list)) else side
    if side is None:
        raise DermretrError(f"cannot tell the input size of model {name!r}; pass image_size")
    img_size = int(side)
    with torch.no_grad():  # one probe forward gives the embedding dimension and the token shape
        pooled, tokens = _image_features(visual, torch.zeros(1, 3, img_size, img_size, device=dev))
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
