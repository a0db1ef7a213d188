"""Model identity in an index manifest: config hash, weights and checkpoint sha256, and the check on load."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import DermretrError

__all__ = ["config_hash", "file_sha256", "weights_sha256", "model_info", "check_model", "load_pretrained",
           "pretrained_name"]


def config_hash(config: Mapping) -> str:
    """sha256 of a retriever config as canonical JSON (sorted keys, no spaces).

    >>> config_hash({"kind": "full", "n_masks": 4}) == config_hash({"n_masks": 4, "kind": "full"})
    True
    """
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> file_sha256(p)[:12]
    'ba7816bf8f01'
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DermretrError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def weights_sha256(retriever: Any) -> str:
    """sha256 of a retriever's weights (names, dtypes and bytes of its state dict, in name order)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(retriever.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_info(retriever: Any, checkpoint: str | os.PathLike | None = None, *, pretrained: str | None = None
               ) -> dict:
    """What identifies a retriever in an index manifest.

    Returns ``{"config", "config_hash", "weights_sha256", "checkpoint_path",
    "checkpoint_sha256", "pretrained"}``; the checkpoint entries are None unless
    ``checkpoint`` (the file the retriever was loaded from) is given, ``pretrained``
    unless the retriever was loaded with ``Retriever.from_pretrained(pretrained)``.

    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> info = model_info(Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="image"))
    >>> info["config"]["kind"], len(info["config_hash"]), info["checkpoint_sha256"]
    ('image', 64, None)
    """
    config = retriever.config()
    info = {"config": config, "config_hash": config_hash(config), "weights_sha256": weights_sha256(retriever),
            "checkpoint_path": None, "checkpoint_sha256": None, "pretrained": pretrained}
    if checkpoint is not None:
        path = Path(checkpoint).expanduser().resolve()
        if not path.is_file():
            raise DermretrError(f"checkpoint not found: {path}")
        info["checkpoint_path"] = str(path)
        info["checkpoint_sha256"] = file_sha256(path)
    return info


def check_model(path: Path, manifest: dict, retriever: Any, checkpoint: Path | None) -> None:
    """Raise unless ``retriever`` (and ``checkpoint``) are the model the index at ``path`` was built with."""
    model = manifest.get("model") or {}
    source = f"--model {model['pretrained']}" if model.get("pretrained") else "--run RUN_DIR"
    rebuild = f"rebuild the index with `dermretr index {source} --data SPEC --out {path} --overwrite`"
    if not model.get("config_hash"):
        raise DermretrError(f"index {path} was built from embeddings without a model record, so a retriever "
                            "cannot be checked against it; load it without one and use search_vectors(), or "
                            f"{rebuild}")
    if retriever is not None:
        config = retriever.config()
        got = config_hash(config)
        if got != model["config_hash"]:
            saved = model.get("config") or {}
            diff = ", ".join(f"{key}: index {saved.get(key)!r}, model {config.get(key)!r}"
                             for key in sorted(set(saved) | set(config)) if saved.get(key) != config.get(key))
            diff = f"; {diff}" if diff else ""
            raise DermretrError(f"index {path} was built with another model (config hash "
                                f"{model['config_hash'][:12]}; this model's is {got[:12]}{diff}); use the model "
                                f"it was built with, or {rebuild}")
    if checkpoint is not None and model.get("checkpoint_sha256"):
        got = file_sha256(checkpoint)
        if got != model["checkpoint_sha256"]:
            raise DermretrError(f"index {path} was built from checkpoint {model.get('checkpoint_path')} "
                                f"(sha256 {model['checkpoint_sha256'][:12]}) but {checkpoint} has sha256 "
                                f"{got[:12]}; use that checkpoint, or {rebuild}")
    if retriever is not None and model.get("weights_sha256"):
        got = weights_sha256(retriever)
        if got != model["weights_sha256"]:
            raise DermretrError(f"index {path} was built with other weights of the same model (weights sha256 "
                                f"{model['weights_sha256'][:12]}; this model's is {got[:12]}); use the "
                                f"checkpoint it was built with, or {rebuild}")


def load_pretrained(name: str | os.PathLike, device: str, checkpoint: Any = None, cases: Any = None
                    ) -> tuple[Any, str]:
    """A retriever given by name (``Retriever.from_pretrained``) and what an index manifest records of it.

    What is recorded is :func:`pretrained_name`'s.  Indexing real images (``cases`` of another source
    than DermSynth) with the released DermSynth model warns once: it has never seen a real lesion.
    """
    import warnings

    from ..models._released import RELEASED
    from ..models.retriever import Retriever

    if checkpoint is not None:
        raise DermretrError("checkpoint= goes with a retriever loaded from a checkpoint file; a model given by name "
                            "is recorded by that name")
    text = os.fspath(name)
    if text.strip() == RELEASED and cases is not None and "source" in getattr(cases, "columns", ()):
        real = sorted({str(v) for v in cases["source"].dropna()} - {"synthetic"})
        if real:
            warnings.warn(f"{RELEASED} was trained on DermSynth only and has never seen a real lesion; to search "
                          f"{', '.join(real)} images, train a model on them (`dermretr train`) and index with it",
                          stacklevel=3)
    return Retriever.from_pretrained(text, device=device), pretrained_name(text)


def pretrained_name(name: str | os.PathLike) -> str:
    """What an index manifest records of a model loaded with ``Retriever.from_pretrained(name)``.

    A local folder is recorded by its absolute path, a shipped or ``hf-hub:`` model by its name.
    """
    text = os.fspath(name)
    local = Path(text).expanduser()
    return str(local.resolve()) if local.is_dir() else text.strip()
