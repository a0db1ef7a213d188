"""Reading images robustly, and the torch Dataset over a case table.

Every image becomes 8-bit RGB: EXIF orientation is applied; L, LA, P, RGBA,
CMYK, I;16 (16-bit) and float images are converted.  A file that cannot be
decoded (truncated, empty, not an image, a folder) raises
:class:`ImageReadError` naming the file, or is skipped under
``on_error="skip"`` with a report.

Large images are handled without large memory:

* an image of more than :data:`MAX_PIXELS` pixels (40 megapixels, e.g.
  8000 x 5000) is refused from its header, before anything is decoded, with
  an error naming the file, its size and the limit (downscale it first);
  PIL's own, higher limit (about 89 megapixels) is never reached;
* an image whose long side is at least twice :data:`MAX_SIDE` (2048 px) is
  reduced on load by an integer factor, to a long side of at least
  ``MAX_SIDE``: JPEG files are decoded directly at 1/2, 1/4 or 1/8 scale
  (``draft``), other formats are reduced right after decoding.  Every model
  works at a few hundred pixels, so nothing is lost; pass ``max_side=None``
  to :func:`load_rgb` for the full resolution.

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

from .._checks import check_int
from .._errors import DataWarning, DermretrError

__all__ = ["load_rgb", "load_mask", "ImageDataset", "ImageReadError", "ON_ERROR", "MAX_PIXELS", "MAX_SIDE"]

ON_ERROR = ("raise", "skip")
#: Images with more pixels than this are refused (from the header, before decoding): 40 megapixels,
#: about 120 MB once decoded as RGB.  PIL's own limit (``Image.MAX_IMAGE_PIXELS``) is higher.
MAX_PIXELS = 40_000_000
#: Images whose long side is at least twice this are reduced on load to a long side of at least this.
MAX_SIDE = 2048


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


def _check_size(path: str, size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise ImageReadError(
            f"image {path} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), more than the "
            f"{limit / 1e6:g} megapixels dermretr reads (MAX_PIXELS); downscale it first, e.g. to at most "
            f"{_fit_side(size, limit)} px on its long side"
        )


def _fit_side(size: tuple[int, int], limit: int) -> int:
    """The long side a ``size`` image may have, keeping its aspect, to fit in ``limit`` pixels."""
    width, height = size
    scale = (limit / max(width * height, 1)) ** 0.5
    return max(1, int(max(width, height) * scale))


def _reduce(img: Image.Image, max_side: int | None) -> Image.Image:
    """``img`` reduced by the largest integer factor keeping its long side at least ``max_side``."""
    if max_side is None:
        return img
    factor = max(img.size) // max_side
    if factor < 2:
        return img
    try:
        return img.reduce(factor)
    except ValueError:  # modes reduce() does not take (1, P, I;16): reduced after the conversion
        return img


_REPLACE = "give a JPEG or PNG image (or replace the file)"


def _read_error(exc: BaseException, path: str, what: str) -> BaseException:
    """The one-line :class:`ImageReadError` for a failure to read ``path`` (``what``: image or mask)."""
    if isinstance(exc, ImageReadError):
        return exc
    if isinstance(exc, FileNotFoundError):
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
        return ImageReadError(f"{what} file not found: {path}{where}; check the path")
    if isinstance(exc, IsADirectoryError):
        return ImageReadError(f"{what} path {path} is a folder, not an image file")
    if isinstance(exc, PermissionError):
        return ImageReadError(f"cannot read {what} {path}: permission denied; make the file readable")
    if isinstance(exc, UnidentifiedImageError):
        return ImageReadError(f"{path} is not an image file PIL can read; {_REPLACE}" if what == "image" else
                              f"{what} {path} is not an image file PIL can read")
    if isinstance(exc, Image.DecompressionBombError):  # PIL's own limit, when set lower than MAX_PIXELS
        return ImageReadError(f"{path} is too large to open safely ({exc}); dermretr reads at most "
                              f"{MAX_PIXELS / 1e6:g} megapixels (MAX_PIXELS): downscale it first")
    if isinstance(exc, MemoryError):
        return ImageReadError(f"not enough memory to decode {what} {path}; downscale it first")
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):  # truncated or corrupt data
        return ImageReadError(f"cannot decode {what} {path}: {exc}")
    return exc  # anything else is a bug: not disguised as bad input


def load_rgb(path: str | os.PathLike, max_side: int | None = MAX_SIDE) -> Image.Image:
    """Open an image as 8-bit RGB with its EXIF orientation applied.

    Parameters
    ----------
    path : path
        The image file.
    max_side : int or None
        Reduce an image whose long side is at least twice ``max_side`` by an
        integer factor, to a long side of at least ``max_side`` (JPEG files are
        decoded at that scale directly).  Default :data:`MAX_SIDE`; ``None``
        keeps the full resolution.

    Raises
    ------
    ImageReadError
        If the file is missing, a folder, empty, truncated or not an image, or
        has more than :data:`MAX_PIXELS` pixels (checked from the header,
        before decoding).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "gray16.png"
    >>> Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(p)
    >>> img = load_rgb(p)
    >>> img.mode, img.getpixel((0, 0))
    ('RGB', (255, 255, 255))
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ImageReadError(f"an image path must be a file path (str or os.PathLike), got {type(path).__name__} "
                             f"{path!r}")
    check_int(max_side, "max_side", allow_none=True)
    path = os.fspath(path)
    try:
        if os.path.isdir(path):
            raise ImageReadError(f"image path {path} is a folder, not an image file")
        if os.path.getsize(path) == 0:
            raise ImageReadError(f"image file {path} is empty (0 bytes); {_REPLACE}")
        with warnings.catch_warnings():  # the size is checked below against a lower limit than PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(path)
        with img:
            _check_size(path, img.size, MAX_PIXELS)  # from the header: nothing is decoded yet
            if max_side is not None and max(img.size) // max_side >= 2 and img.format == "JPEG":
                factor = max(img.size) // max_side
                img.draft(None, (max(1, img.width // factor), max(1, img.height // factor)))
            img.load()
            img = _reduce(img, max_side)
            img = _exif_transpose(img, path)
            return _reduce(_to_rgb(img), max_side)
    except Exception as exc:  # noqa: BLE001 - every way a file can fail to be an image, as one message
        raise _read_error(exc, path, "image") from None


def load_mask(path: str | os.PathLike, bit: int | None = None) -> np.ndarray:
    """Read a binary region mask (e.g. a lesion segmentation) as a boolean array ``[H, W]``.

    The region is the non-zero pixels (of the image converted to 8-bit grey,
    so a 0/255 BMP, a 1-bit image or a 0/1 PNG all work), or, with ``bit``,
    the pixels whose raw value has that bit set (DermSynth packs the lesion in
    bit 0 and one criterion per higher bit: :data:`dermretr.data.synth.MASK_BITS`).
    No EXIF orientation is applied and nothing is resized.

    Raises
    ------
    ImageReadError
        If the file is missing, a folder or not an image, or (with ``bit``)
        not a single-channel integer image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "mask.png"
    >>> Image.fromarray(np.array([[0, 255], [1, 5]], np.uint8)).save(p)
    >>> load_mask(p).tolist(), load_mask(p, bit=2).tolist()
    ([[False, True], [True, True]], [[False, True], [False, True]])
    >>> load_mask(p.with_name("missing.png"))
    Traceback (most recent call last):
    ...
    dermretr.data.images.ImageReadError: mask file not found: ...missing.png
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ImageReadError(f"a mask path must be a file path (str or os.PathLike), got {type(path).__name__} "
                             f"{path!r}")
    check_int(bit, "bit", 0, 15, what="an integer in 0..15 or None", allow_none=True)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageReadError(f"mask file not found: {path}")
    if os.path.isdir(path):
        raise ImageReadError(f"mask path {path} is a folder, not an image file")
    try:
        with Image.open(path) as img:
            _check_size(path, img.size, MAX_PIXELS)
            img.load()
            if bit is None:
                return np.asarray(img.convert("L")) != 0
            if img.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "I;16N"):
                raise ImageReadError(f"mask {path} is a {img.mode!r} image; bit {bit} can only be read from a "
                                     "single-channel integer image (such as DermSynth's mask PNGs)")
            return (np.asarray(img).astype(np.int64) >> int(bit)) & 1 == 1
    except Exception as exc:  # noqa: BLE001
        raise _read_error(exc, path, "mask") from None


def _exif_transpose(img: Image.Image, path: str) -> Image.Image:
    """Apply the EXIF orientation; a corrupt EXIF block leaves the image as stored, with a DataWarning."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF raises many types; the pixels are still good
        warnings.warn(f"{path}: its EXIF orientation could not be read ({type(exc).__name__}: {exc}); "
                      "the image is used as stored", DataWarning, stacklevel=3)
        return img.copy()  # the caller closes the file's image


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
        if not isinstance(on_error, str) or on_error not in ON_ERROR:
            raise DermretrError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if not isinstance(cases, pd.DataFrame):
            raise DermretrError(f"cases must be a case table (a pandas DataFrame from dermretr.data.load), "
                                f"got {type(cases).__name__}")
        if preprocess is not None and not callable(preprocess):
            raise DermretrError(f"preprocess must be a function of a PIL image (or None), got "
                                f"{type(preprocess).__name__}")
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
            examples = "; ".join(f"case {b[1]!r}: {b[3]}" for b in bad[:3])
            warnings.warn(
                f"skipped {len(bad)} unreadable image(s) of the {len(paths)} in the case table, e.g. {examples}"
                f"{' ...' if len(bad) > 3 else ''} (ImageDataset.report lists them all)",
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
                "or leave such cases out with on_error='skip'"
            ) from None
        return (self.preprocess(img) if self.preprocess is not None else img), index
