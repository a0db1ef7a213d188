"""Helpers the loader tests use to write tiny datasets in the publishers' own layouts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def write_image(path: Path, size: int = 24, mode: str = "RGB", seed: int = 0, fmt: str | None = None) -> Path:
    """Write a small random image in ``mode`` (RGB, L, LA, P, RGBA, CMYK, I;16) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (size, size), dtype=np.uint16))
    elif mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        img = rgb.convert(mode)
    fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), "PNG")
    img.save(path, format=fmt)
    return path


def write_csv(path: Path, rows: Sequence[dict] | pd.DataFrame, bom: bool = False, crlf: bool = False,
              trailing_blank_lines: int = 0) -> Path:
    """Write a CSV as publishers do (optionally with a UTF-8 BOM, CRLF endings, blank lines at the end)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    text = df.to_csv(index=False, lineterminator="\r\n" if crlf else "\n")
    text += ("\r\n" if crlf else "\n") * trailing_blank_lines
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def corrupt_files(folder: Path) -> dict[str, Path]:
    """Write a truncated JPEG, a zero-byte .jpg and a text file named .jpg into ``folder``."""
    folder = Path(folder)
    good = write_image(folder / "_good.jpg", size=64)
    data = good.read_bytes()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "text.jpg"
    text.write_text("this is not an image\n")
    good.unlink()
    return {"truncated": truncated, "empty": empty, "text": text}
