"""The retriever: composed queries against database images, and its baselines.

Scoring
-------
``s = a * s_local + (1 - a) * s_global`` with ``a`` in [0, 1] (learned through
a sigmoid, or fixed), leaning to local evidence by default (``a = 0.6``):

* ``s_global`` - cosine of the composed query vector and the target's global
  image embedding;
* ``s_local`` - mean over the M masks of the cosine between the query's
  text-conditioned local vector and the target's local vector.

The target side never depends on the query, so a database is encoded once
(:meth:`Retriever.encode_targets`) and searched with :func:`convex_score`.

Kinds (one interface; ``KINDS``)
--------------------------------
``"image"``        image-only: the reference image embedding, text ignored
``"text"``         text-only: the text embedding
``"late_fusion"``  sum of the normalised image and text embeddings
``"clip4cir"``     the CLIP4Cir combiner (baseline to beat)
``"global"``       dermretr's gated residual composer, global only (a = 0)
``"full"``         global + local (the dermretr model)

Empty query text
----------------
An empty (or blank) text means "cases like this image": composed kinds use the
reference image embedding as the global query and untouched (target-like)
masks for the local one.  Text-only retrieval has nothing to search with and
raises :class:`~dermretr.DermretrError`.

Examples
--------
>>> import torch
>>> from dermretr.models.backbones import create
>>> r = Retriever(create("dermretr-tiny", device="cpu"), kind="full", n_masks=2)
>>> q = r.encode_queries(torch.zeros(3, 3, 128, 128), ["blue-whitish veil", "", "irregular streaks"])
>>> t = r.encode_targets(torch.zeros(5, 3, 128, 128))
>>> q.global_vectors.shape, q.local_vectors.shape, convex_score(q, t, alpha=0.5)[0].shape
((3, 128), (3, 2, 128), (3, 5))
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from .._checks import check_alpha, check_int, is_int
from .._errors import DermretrError
from .._io import atomic_path, claim_file, os_error
from ..data.images import load_rgb
from .backbones import Backbone, create, read_weights, weights_mismatch
from .composer import Clip4CirCombiner, GatedResidualCombiner, SpatialMasks
from .embeddings import DEFAULT_ALPHA, Embeddings, convex_score

__all__ = ["Retriever", "KINDS", "convex_score", "Embeddings", "DEFAULT_ALPHA", "CHECKPOINT_FORMAT", "save_checkpoint",
           "is_checkpoint", "from_checkpoint"]

KINDS: tuple[str, ...] = ("image", "text", "late_fusion", "clip4cir", "global", "full")
# 2: competing cosine masks; 3: scale-matched, per-mask text composition of the local query;
# 4: optional text skip in the composers (config "text_skip"; absent = False, as format 3 was)
CHECKPOINT_FORMAT = 4


class Retriever(nn.Module):
    """Composed-query retriever over an open_clip backbone.

    Parameters
    ----------
    backbone : Backbone
        From :func:`dermretr.models.backbones.create`.
    kind : str
        One of :data:`KINDS`.
    n_masks : int
        Number M of spatial masks (``kind="full"``).
    alpha : float
        Initial (or fixed) weight of local evidence, in [0, 1].
    learn_alpha : bool
        Learn ``alpha`` through a sigmoid (default) or keep it fixed.
    freeze_backbone : bool
        Keep the backbone's weights fixed (train only the heads).
    text_skip : bool
        ``kind="global"`` and ``"full"``: the composers add a learned-scale text term, so an untrained
        composed query starts as late fusion rather than as the image alone (see
        :class:`~dermretr.models.composer.GatedResidualCombiner`); ``False`` is the ablation (and
        the composer of checkpoints before format 4).
    """

    def __init__(self, backbone: Backbone, kind: str = "full", n_masks: int = 4, alpha: float = DEFAULT_ALPHA,
                 learn_alpha: bool = True, freeze_backbone: bool = False, text_skip: bool = True):
        super().__init__()
        if kind not in KINDS:
            raise DermretrError(f"unknown retriever kind {kind!r}; kinds: {', '.join(KINDS)}")
        check_int(n_masks, "n_masks")
        alpha = check_alpha(alpha)
        self.backbone = backbone
        self.encoder = backbone.model  # registered so that state_dict holds the backbone weights
        self.kind = kind
        self.n_masks = int(n_masks)
        self.learn_alpha = learn_alpha
        self.freeze_backbone = freeze_backbone
        self.text_skip = bool(text_skip) and kind in ("global", "full")
        dim = backbone.embed_dim
        self.combiner: nn.Module | None
        if kind == "clip4cir":
            self.combiner = Clip4CirCombiner(dim)
        elif kind in ("global", "full"):
            self.combiner = GatedResidualCombiner(dim, text_skip=self.text_skip)
        else:
            self.combiner = None
        self.masks = (
            SpatialMasks(backbone.vision_width, dim, n_masks, text_dim=dim, init_proj=backbone.project_tokens(),
                         text_skip=self.text_skip)
            if kind == "full" else None
        )
        a = min(max(alpha, 1e-4), 1 - 1e-4)
        logit = torch.tensor(math.log(a / (1 - a)))
        if learn_alpha and kind == "full":
            self.alpha_logit = nn.Parameter(logit)
        else:
            self.register_buffer("alpha_logit", logit if kind == "full" else torch.tensor(-math.inf))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if freeze_backbone:
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    # ------------------------------------------------------------------ config

    @property
    def alpha(self) -> float:
        """Current weight of local evidence (0 for kinds without local vectors)."""
        return float(torch.sigmoid(self.alpha_logit.detach()))

    @property
    def uses_local(self) -> bool:
        return self.masks is not None

    def config(self) -> dict:
        """What is needed to rebuild this retriever (saved with checkpoints)."""
        return {
            "backbone": self.backbone.name,
            "image_size": self.backbone.image_size,
            "kind": self.kind,
            "n_masks": self.n_masks,
            "learn_alpha": self.learn_alpha,
            "freeze_backbone": self.freeze_backbone,
            # only when on, so that models without it (and the indexes built with them) keep their config
            **({"text_skip": True} if self.text_skip else {}),
        }

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    # ------------------------------------------------------------------ features (torch, differentiable)

    def _has_text(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([bool(t and str(t).strip()) for t in texts], device=self.device)

    def target_features(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Normalised global ``[B, D]`` and local ``[B, M, D]`` target vectors, and the masks."""
        g, tokens = self.backbone.encode_image(images)
        out: dict[str, torch.Tensor | None] = {"global": F.normalize(g, dim=-1), "local": None, "attn": None,
                                               "tokens": tokens}
        if self.masks is not None:
            local, attn = self.masks(tokens)
            out["local"], out["attn"] = F.normalize(local, dim=-1), attn
        return out

    def query_features(self, images: torch.Tensor | None, texts: Sequence[str],
                       text_tokens: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
        """Normalised composed global ``[B, D]`` and local ``[B, M, D]`` query vectors, and the masks.

        ``text_tokens`` (``[B, context]``, optional) are the texts already tokenised, e.g. the inputs
        that text attribution varies; ``texts`` still decides which queries have a text.
        """
        has_text = self._has_text(texts)
        if text_tokens is not None and text_tokens.shape[0] != len(texts):
            raise DermretrError(f"{text_tokens.shape[0]} token rows for {len(texts)} texts: give one row per text")

        def tokenized() -> torch.Tensor:
            if text_tokens is not None:
                return text_tokens
            return self.backbone.tokenize([t if t else "" for t in texts])
        out: dict[str, torch.Tensor | None] = {"local": None, "attn": None, "tokens": None}
        if self.kind == "text":
            if not bool(has_text.all()):
                raise DermretrError("text-only retrieval needs a non-empty query text for every query")
            t, _, _ = self.backbone.encode_text(tokenized())
            out["global"] = F.normalize(t, dim=-1)
            return out
        if images is None:
            raise DermretrError(f"a {self.kind!r} retriever needs query images")
        g, tokens = self.backbone.encode_image(images)
        x = F.normalize(g, dim=-1)
        out["tokens"] = tokens
        if self.kind == "image":
            out["global"] = x
            return out
        t, _, _ = self.backbone.encode_text(tokenized())
        t = F.normalize(t, dim=-1)
        if self.kind == "late_fusion":
            q = x + t
        else:
            assert self.combiner is not None  # composed kinds have one
            q = self.combiner(x, t)
        q = torch.where(has_text[:, None], q, x)  # empty text: "cases like this image"
        out["global"] = F.normalize(q, dim=-1)
        if self.masks is not None:
            local, attn = self.masks(tokens, text=t, has_text=has_text)
            out["local"], out["attn"] = F.normalize(local, dim=-1), attn
        out["text"] = t
        return out

    def score(self, q: dict, t: dict, alpha: float | None = None,
              paired: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(s, s_global, s_local)`` between query and target features, each ``[Bq, Bt]``.

        With ``paired=True`` query ``i`` is scored against target ``i`` only (each ``[B]``).
        """
        if paired and q["global"].shape[0] != t["global"].shape[0]:
            raise DermretrError(f"paired scores need as many queries as targets, got {q['global'].shape[0]} "
                                f"and {t['global'].shape[0]}")
        s_global = (q["global"] * t["global"]).sum(-1) if paired else q["global"] @ t["global"].T
        if q.get("local") is None or t.get("local") is None:
            return s_global, s_global, torch.zeros_like(s_global)
        a = torch.sigmoid(self.alpha_logit) if alpha is None else torch.tensor(check_alpha(alpha))
        pattern = "bmd,bmd->b" if paired else "qmd,tmd->qt"
        s_local = torch.einsum(pattern, q["local"], t["local"]) / q["local"].shape[1]
        return a * s_local + (1 - a) * s_global, s_global, s_local

    # ------------------------------------------------------------------ numpy encoding (no gradients)

    def _to_batch(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            return images.to(self.device)
        tensors = []
        for img in images:
            if not isinstance(img, Image.Image):
                img = load_rgb(img)
            tensors.append(self.backbone.preprocess(img))
        return torch.stack(tensors).to(self.device)

    def _encode(self, fn, n: int, batch_size: int, progress: bool, desc: str) -> Embeddings:
        if batch_size < 1:
            raise DermretrError(f"batch_size must be at least 1, got {batch_size}")
        was_training = self.training
        self.eval()
        parts: dict[str, list[np.ndarray]] = {"global": [], "local": []}
        try:
            with torch.inference_mode():
                for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, unit="batch"):
                    out = fn(start, min(n, start + batch_size))
                    parts["global"].append(out["global"].float().cpu().numpy())
                    if out.get("local") is not None:
                        parts["local"].append(out["local"].float().cpu().numpy())
        finally:
            self.train(was_training)
        dim = self.backbone.embed_dim
        g = np.concatenate(parts["global"]) if parts["global"] else np.zeros((0, dim), np.float32)
        local = np.concatenate(parts["local"]) if parts["local"] else (
            np.zeros((0, self.n_masks, dim), np.float32) if self.uses_local else None)
        return Embeddings(np.ascontiguousarray(g, dtype=np.float32),
                          None if local is None else np.ascontiguousarray(local, dtype=np.float32), self.alpha)

    def encode_targets(self, images, batch_size: int = 64, progress: bool = False) -> Embeddings:
        """Encode database images: :class:`~dermretr.models.embeddings.Embeddings` (float32).

        ``global_vectors`` ``[n, D]``, ``local_vectors`` ``[n, M, D]`` or None, and the model's
        ``alpha``.  ``images`` is a preprocessed tensor batch, or a sequence of PIL images or paths.
        """
        n = len(images)
        return self._encode(lambda a, b: self.target_features(self._to_batch(images[a:b])), n, batch_size,
                            progress, "Encoding targets")

    def encode_queries(self, images, texts: Sequence[str], batch_size: int = 64,
                       progress: bool = False) -> Embeddings:
        """Encode composed queries (image + text) like :meth:`encode_targets`.

        For ``kind="text"`` ``images`` may be None.
        """
        texts = ["" if t is None else str(t) for t in texts]
        if images is not None and len(images) != len(texts):
            raise DermretrError(f"{len(images)} query images but {len(texts)} texts: give one text per image")
        n = len(texts)
        return self._encode(
            lambda a, b: self.query_features(None if images is None else self._to_batch(images[a:b]), texts[a:b]),
            n, batch_size, progress, "Encoding queries",
        )

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the weights and config atomically (loadable with ``weights_only=True``).

        An existing file at ``path`` is replaced only when it is a dermretr checkpoint (saving
        again, a run's ``best.pt``); any other file is refused with an
        :class:`~dermretr.OutputError` and left as it was.  A failed write (a full disk...)
        raises an OutputError naming ``path`` and leaves the previous file, if any, as it was.
        """
        claim_file(path, option="path", recognise=is_checkpoint)
        payload = {"format": CHECKPOINT_FORMAT, "config": self.config(), "state_dict": self.state_dict(),
                   "extra": extra or {}}
        return save_checkpoint(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> Retriever:
        """Rebuild a retriever saved with :meth:`save` (or from a training run's ``last.pt``).

        Anything that is not such a checkpoint (another file, another model's weights, a
        damaged config) raises :class:`~dermretr.DermretrError` naming the file.
        """
        path = Path(path).expanduser()
        if not path.exists():
            raise DermretrError(f"checkpoint not found: {path}")
        return from_checkpoint(read_weights(path, _EXPECTED), path, device, model_class=cls)

    # ------------------------------------------------------------------ Hugging Face style sharing (models/hub.py)

    def save_pretrained(self, directory: str | os.PathLike, *, card: dict | None = None, overwrite: bool = False,
                        dtype: str = "float32", vocabulary: Sequence[str] | None = None) -> Path:
        """Write a Hugging Face style model folder (``model.safetensors``, ``config.json``, ``README.md``).

        See :func:`dermretr.models.hub.save_pretrained` (``card``: the model card's facts and metrics;
        ``vocabulary``: keep only the token embeddings of these texts' words).
        """
        from .hub import save_pretrained

        return save_pretrained(self, directory, card=card, overwrite=overwrite, dtype=dtype, vocabulary=vocabulary)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str = "auto", *, revision: str | None = None,
                        token: str | None = None) -> Retriever:
        """Load a folder written by :meth:`save_pretrained`, ``"hf-hub:ORG/NAME"`` or a shipped ``"dermretr/NAME"``.

        See :func:`dermretr.models.hub.from_pretrained`.
        """
        from .hub import from_pretrained

        return from_pretrained(name_or_path, device, revision=revision, token=token, model_class=cls)

    def push_to_hub(self, repo_id: str, *, card: dict | None = None, token: str | None = None, private: bool = False,
                    commit_message: str = "Upload dermretr model", dtype: str = "float32"):
        """Upload this model to the Hugging Face Hub as ``repo_id`` (``"ORG/NAME"``); needs a login or ``token``.

        See :func:`dermretr.models.hub.push_to_hub`.
        """
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, card=card, token=token, private=private, commit_message=commit_message,
                           dtype=dtype)


_EXPECTED = "a dermretr checkpoint (RUN_DIR/checkpoints/best.pt written by `dermretr train`)"
#: Required entries of a checkpoint's config and their types.
_CONFIG_TYPES = {"backbone": str, "kind": str, "n_masks": int, "learn_alpha": bool, "freeze_backbone": bool}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def from_checkpoint(payload, source: str | os.PathLike, device: str = "auto", *, expected: str = _EXPECTED,
                    model_class: type[Retriever] | None = None) -> Retriever:
    """The retriever a checkpoint ``payload`` (``{"format", "config", "state_dict"}``) read from ``source`` holds.

    The config is checked, the backbone created on ``device`` and the weights loaded strictly;
    anything wrong raises a one-line :class:`~dermretr.DermretrError` naming ``source`` and
    ``expected`` (what the caller wanted).

    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="image")
    >>> payload = {"format": CHECKPOINT_FORMAT, "config": r.config(), "state_dict": r.state_dict()}
    >>> from_checkpoint(payload, "in-memory", "cpu").kind
    'image'
    """
    path = Path(source)
    cfg, state = _checkpoint_parts(payload, path, expected)
    try:
        backbone = create(cfg["backbone"], device=device, image_size=cfg.get("image_size"))
    except DermretrError as exc:  # e.g. a backbone unknown here, or a device not available
        raise DermretrError(f"cannot load {path} (backbone {cfg['backbone']!r}): {exc}") from None
    model = (model_class or Retriever)(backbone, kind=cfg["kind"], n_masks=cfg["n_masks"],
                                       learn_alpha=cfg["learn_alpha"], freeze_backbone=cfg["freeze_backbone"],
                                       text_skip=cfg.get("text_skip", False))
    problem = weights_mismatch(model, state)
    if problem:
        shown = ", ".join(f"{k} {cfg[k]!r}" for k in ("backbone", "kind", "n_masks"))
        raise DermretrError(f"cannot load {path}: its weights do not fit its config ({shown}): {problem}; "
                            f"expected {expected}")
    model.load_state_dict(state, strict=True)
    return model.to(backbone.device)


def _checkpoint_parts(payload, path: Path, expected: str = _EXPECTED) -> tuple[dict, dict]:
    """The config and state dict of a checkpoint's ``payload``, checked; a DermretrError naming ``path``."""
    def fail(reason: str) -> DermretrError:
        return DermretrError(f"cannot load {path}: {reason}; expected {expected}")

    if not isinstance(payload, dict):
        raise fail(f"it holds a {type(payload).__name__}, not a checkpoint")
    if "config" not in payload or "state_dict" not in payload:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise fail("it holds bare weights without dermretr's config (backbone weights go to --pretrained)")
        raise fail("it is not a dermretr checkpoint (no config/state_dict)")
    fmt = payload.get("format", 0)
    if not is_int(fmt):
        raise fail(f"its format {fmt!r} is not a checkpoint format number")
    if fmt > CHECKPOINT_FORMAT:
        raise DermretrError(f"{path} was written by a newer dermretr (format {fmt}); upgrade")
    cfg, state = payload["config"], payload["state_dict"]
    if not isinstance(cfg, dict):
        raise fail(f"its config is a {type(cfg).__name__}, not a dict")
    if not isinstance(state, dict):
        raise fail(f"its state_dict is a {type(state).__name__}, not a dict of weights")
    missing = [k for k in _CONFIG_TYPES if k not in cfg]
    if missing:
        raise fail(f"its config lacks {', '.join(map(repr, missing))} (it has {sorted(map(str, cfg)) or 'nothing'})")
    for key, kind in _CONFIG_TYPES.items():
        value = cfg[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise fail(f"its config has {key}={value!r}, not {_TYPE_NAMES[kind]}")
    if cfg["kind"] not in KINDS:
        raise fail(f"its config has kind={cfg['kind']!r}, not one of {', '.join(KINDS)}")
    if cfg["n_masks"] < 1:
        raise fail(f"its config has n_masks={cfg['n_masks']!r}, not a positive integer")
    if not isinstance(cfg.get("text_skip", False), bool):
        raise fail(f"its config has text_skip={cfg['text_skip']!r}, not {_TYPE_NAMES[bool]}")
    size = cfg.get("image_size")
    if size is not None and (not is_int(size) or size < 1):
        raise fail(f"its config has image_size={size!r}, not a positive integer")
    if fmt < 3 and cfg["kind"] == "full":
        raise DermretrError(f"{path} is a full model from an older dermretr whose spatial masks have since "
                            f"changed (checkpoint format {fmt}); retrain it with `dermretr train`")
    return cfg, state


def _write_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.save's way of saying a write failed (a full disk...)."""
    text = str(exc)
    return any(w in text for w in ("PytorchStreamWriter", "file write failed", "enforce fail", "unexpected pos"))


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint dermretr wrote (a retriever's, or a training run's ``last.pt``).

    Read memory-mapped with ``weights_only=True``: the tensors are not loaded, and no code runs.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "notes.pt").write_text("mine")
    >>> is_checkpoint(folder / "notes.pt"), is_checkpoint(folder / "missing.pt")
    (False, False)
    >>> model = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="image")
    >>> is_checkpoint(model.save(folder / "model.pt"))
    True
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch file, an old zip format, unpicklable: not ours
        return False
    return isinstance(payload, dict) and {"format", "config", "state_dict"} <= set(payload)


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` atomically to ``path``; a failed write is an :class:`~dermretr.OutputError`.

    torch reports a full disk as a ``RuntimeError`` ("PytorchStreamWriter failed writing
    file ..."); it becomes an OutputError naming ``path`` with the "free disk space" hint.
    The temporary is removed and a previous ``path`` is left as it was.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:
            if _write_failed(exc):
                raise os_error(OSError(errno.ENOSPC, "writing failed, the disk may be full"), path) from None
            raise
    return path
