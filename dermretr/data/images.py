"""Reading images robustly, and the torch Dataset over a case table.

Every image becomes 8-bit RGB: EXIF orientation is applied; L, LA, P, RGBA,
CMYK, I;16 (16-bit) and float images are converted.  A file that cannot be
decoded (truncated, empty, not an image) raises :class:`ImageReadError`
naming the file, or is skipped under ``on_error="skip"`` with a report.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> from dermretr.data.synth import generate
>>> from dermretr.data.images import ImageDataset
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=4, image_size=64,
...                 workers=1, progress=False)
>>> ds = ImageDataset(load("synthetic", root))
>>> image, index = ds[0]
>>> image.size, index
((64, 64), 0)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch.utils.data
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from .._errors import DataWarning, DermretrError

__all__ = ["load_rgb", "ImageDataset", "ImageReadError", "ON_ERROR"]

ON_ERROR = ("raise", "skip")


class ImageReadError(DermretrError, OSError):
    """An image file could not be read or decoded."""


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode in ("I", "F") and arr.max() <= 255 and arr.min() >= 0:
            top = 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as 8-bit RGB with its EXIF orientation applied.

    Raises
    ------
    ImageReadError
        If the file is missing, empty, truncated or not an image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "gray16.png"
    >>> Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(p)
    >>> img = load_rgb(p)
    >>> img.mode, img.getpixel((0, 0))
    ('RGB', (255, 255, 255))
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError(f"image file {path} is empty (0 bytes)")
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {path}") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path} is not an image file PIL can read") from None
    except Image.DecompressionBombError as exc:  # a decompression bomb, or a truly huge scan
        raise ImageReadError(f"{path} is too large to open safely ({exc}); downscale it first") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageReadError(f"cannot decode image {path}: {exc}") from None


class ImageDataset(torch.utils.data.Dataset):
    """A torch-style Dataset over a case table: item ``i`` is ``(image, i)``.

    ``image`` is ``preprocess(PIL RGB image)`` (for instance an open_clip
    preprocess giving a tensor), or the PIL image when ``preprocess`` is None;
    ``i`` is the row position in ``cases``, so results can be joined back.

    Parameters
    ----------
    cases : DataFrame
        A case table (needs ``image_path`` and ``case_id``).
    preprocess : callable, optional
        Applied to each RGB PIL image.
    on_error : {"raise", "skip"}
        "raise" (default) raises :class:`ImageReadError` naming the case and
        the file when an item cannot be read.  "skip" reads every image once
        up front, drops the unreadable ones with a :class:`DataWarning`, and
        lists them in :attr:`report` (case_id, image_path, error).
    progress : bool
        Show a progress bar for the up-front check of ``on_error="skip"``.

    Attributes
    ----------
    indices : ndarray
        Row positions of ``cases`` that the dataset serves.
    report : DataFrame
        Unreadable images found (empty under "raise").
    """

    def __init__(
        self,
        cases: pd.DataFrame,
        preprocess: Callable[[Image.Image], Any] | None = None,
        on_error: str = "raise",
        progress: bool = True,
    ):
        if on_error not in ON_ERROR:
            raise DermretrError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        for col in ("image_path", "case_id"):
            if col not in cases.columns:
                raise DermretrError(f"the case table has no {col!r} column; load it with dermretr.data.load")
        self.cases = cases.reset_index(drop=True)
        self.preprocess = preprocess
        self.on_error = on_error
        self.indices = np.arange(len(self.cases))
        self.report = pd.DataFrame(columns=["case_id", "image_path", "error"])
        if on_error == "skip":
            self._check_all(progress)

    def _check_all(self, progress: bool) -> None:
        bad = []
        paths = self.cases["image_path"].tolist()
        ids = self.cases["case_id"].tolist()
        for i in tqdm(range(len(paths)), desc="Checking images", unit="img", disable=not progress):
            try:
                load_rgb(paths[i])
            except ImageReadError as exc:
                bad.append((i, ids[i], paths[i], str(exc)))
        if bad:
            self.report = pd.DataFrame([b[1:] for b in bad], columns=["case_id", "image_path", "error"])
            self.indices = np.setdiff1d(self.indices, [b[0] for b in bad])
            examples = "; ".join(f"{b[1]} ({b[3]})" for b in bad[:3])
            warnings.warn(
                f"skipped {len(bad)} unreadable image(s) of {len(paths)}: {examples}"
                f"{' ...' if len(bad) > 3 else ''} (see ImageDataset.report)",
                DataWarning,
                stacklevel=3,
            )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        index = int(self.indices[item])
        path = self.cases.at[index, "image_path"]
        try:
            img = load_rgb(path)
        except ImageReadError as exc:
            raise ImageReadError(
                f"case {self.cases.at[index, 'case_id']!r} (row {index}): {exc}; "
                "fix or remove the file, or use on_error='skip'"
            ) from None
        return (self.preprocess(img) if self.preprocess is not None else img), index
