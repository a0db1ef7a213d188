"""Reference images and thumbnails of a query session: decoding uploads, PNG bytes, a small LRU cache.

An uploaded file is decoded exactly as :func:`~dermretr.data.images.load_rgb`
reads a file on disk; thumbnails are PNG bytes, cached by path and size.
"""

from __future__ import annotations

import io
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from ..data.images import ImageReadError, load_rgb

__all__ = ["decode_image", "png_bytes", "thumbnail", "LRUCache"]

V = TypeVar("V")


def _safe_name(name: str) -> str:
    base = Path(str(name or "upload")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return base[:80]


def decode_image(data: bytes, name: str = "upload") -> Image.Image:
    """Decode image bytes exactly as :func:`~dermretr.data.images.load_rgb` reads a file.

    Raises
    ------
    ImageReadError
        When the bytes are empty, truncated or not an image (the message names ``name``).

    Examples
    --------
    >>> decode_image(b"hello", "notes.txt")
    Traceback (most recent call last):
    ...
    dermretr.data.images.ImageReadError: notes.txt is not an image file PIL can read; give a JPEG or PNG image ...
    """
    name = str(name or "upload")
    with tempfile.TemporaryDirectory(prefix="dermretr-upload-") as tmp:
        path = Path(tmp) / _safe_name(name)
        path.write_bytes(bytes(data))
        try:
            img = load_rgb(path)
            img.load()
            return img.copy()
        except ImageReadError as exc:
            raise ImageReadError(str(exc).replace(str(path), name)) from None
        except Exception as exc:  # e.g. PIL's DecompressionBombError
            raise ImageReadError(f"cannot decode image {name}: {exc}") from None


def png_bytes(array_or_image: Any) -> bytes:
    """An RGB image (PIL image or ``[H, W, 3]`` array) as PNG file bytes.

    >>> png_bytes(np.zeros((2, 2, 3), np.uint8)).startswith(b"\\x89PNG")
    True
    """
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(np.asarray(array_or_image))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def thumbnail(image: Image.Image, size: int) -> Image.Image:
    """A copy of ``image`` fitted into ``size`` x ``size`` pixels (aspect kept)."""
    img = image.copy()
    img.thumbnail((size, size))
    return img


class LRUCache(Generic[V]):
    """A dict-like cache keeping the ``size`` most recently used entries.

    >>> cache = LRUCache(2)
    >>> [cache.get_or_make(k, lambda: k * 10) for k in (1, 2, 1, 3)]
    [10, 20, 10, 30]
    >>> sorted(cache.keys())
    [1, 3]
    """

    def __init__(self, size: int):
        self.size = int(size)
        self._items: OrderedDict[Hashable, V] = OrderedDict()

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        """The cached value of ``key``, made (and cached) by ``make()`` when missing."""
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        value = make()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def keys(self) -> list[Hashable]:
        """The cached keys, least recently used first."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)
