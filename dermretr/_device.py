"""Device selection: ``"auto"`` picks CUDA when present, never requires it."""

from __future__ import annotations

from ._errors import DermretrError

__all__ = ["resolve_device"]


def resolve_device(device: str | None = "auto"):
    """Return a ``torch.device``; ``"auto"`` (or None) means CUDA if available, else CPU.

    >>> resolve_device("cpu").type
    'cpu'
    """
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DermretrError(f"unknown device {device!r}: {exc}; use 'auto', 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DermretrError(f"device {device!r} asked for, but no CUDA GPU is available here; use 'auto' or 'cpu'")
    return dev
