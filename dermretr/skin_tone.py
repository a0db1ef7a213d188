"""Skin tone from the pixels: the Individual Typology Angle of a lesion image's healthy skin.

:func:`skin_mask` picks the healthy skin (no dark corners, hair or lesion),
:func:`estimate_ita` measures its ITA, :func:`ita_to_fitzpatrick` maps it to an
approximate Fitzpatrick type, :func:`estimate_skin_tone` adds all three to a
case table (labelled *estimated*), and :func:`skin_mask_agreement` checks the
lesion/skin separation against true lesion masks (PH2's, DermSynth's), read
with :func:`default_mask_bit` and :func:`check_mask_aspect`.  It sits on
:mod:`dermretr.data` (images and masks are read with its loaders).

Examples
--------
>>> from dermretr.color import lab_to_rgb
>>> skin = np.broadcast_to(lab_to_rgb(np.array([65.0, 10.0, 15.0])), (64, 64, 3)).copy()
>>> round(estimate_ita(skin), 1), ita_to_fitzpatrick(estimate_ita(skin))
(45.0, 2)
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

from ._checks import check_int
from ._errors import DataWarning, DermretrError
from .color import ITA_CATEGORIES, ita, ita_category, rgb_to_lab
from .stats import as_text

__all__ = [
    "ITA_FITZPATRICK",
    "skin_mask",
    "estimate_ita",
    "ita_to_fitzpatrick",
    "estimate_skin_tone",
    "skin_mask_agreement",
    "default_mask_bit",
    "check_mask_aspect",
]

#: ITA category -> approximate Fitzpatrick type: the usual correspondence (very light I, light II,
#: intermediate III, tan IV, brown V, dark VI; e.g. Del Bino & Bernerd 2013, Kinyanjui et al. 2020).
#: DermSynth draws each type's skin colour inside that category (``render.ITA_RANGES``).
ITA_FITZPATRICK: dict[str, int] = {name: i + 1 for i, (name, _, _) in enumerate(ITA_CATEGORIES)}

#: Pixels farther than this from the centre (the image spans [-1, 1]) are dark corners / vignette.
_RADIUS = 0.95
#: Pixels darker than this L* are shadow or background, never skin.
_BLACK_L = 3.0
#: A thin dark structure (hair, ruler mark) is at least this much darker (L*) than its closing.
_HAIR_DEPTH = 5.0
#: Otsu's two classes must differ by at least this (L*) to be lesion and skin rather than texture.
_MIN_CONTRAST = 4.0
#: Pixels farther than this from the centre decide which Otsu class is skin (lesions are centred).
_RING = 0.6


def _as_rgb(image: Any) -> np.ndarray:
    """An image (array, PIL image or path) as float RGB in [0, 1], refusing what is not one."""
    from PIL import Image

    from .data.images import load_rgb

    if isinstance(image, (str, os.PathLike)):
        image = load_rgb(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or min(arr.shape[:2]) < 8:
        raise DermretrError(f"an RGB image (height x width x 3, at least 8 px) is needed, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < -1e-6 or arr.max() > 1 + 1e-6:
            raise DermretrError("a float image must hold values in [0, 1]")
        return np.clip(arr.astype(np.float64), 0.0, 1.0)
    raise DermretrError(f"unsupported image dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of 1-D values (maximal between-class variance)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    return float(edges[int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2)) + 1])


def _field(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the centre (the image spans [-1, 1]) and the field of view: no dark corner, no black."""
    h, w = L.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    radius = np.hypot(yy, xx)
    return radius, (radius <= _RADIUS) & (L > _BLACK_L)


def _skin(rgb: np.ndarray, lesion_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """CIELAB of ``rgb`` and the healthy-skin pixels (:func:`skin_mask`'s rules)."""
    from scipy import ndimage

    lab = rgb_to_lab(rgb)
    L = lab[..., 0]
    h, w = L.shape
    radius, valid = _field(L)
    size = max(3, (min(h, w) // 24) | 1)  # wider than a hair, narrower than a lesion
    valid &= ndimage.grey_closing(L, size=(size, size)) - L <= _HAIR_DEPTH
    if lesion_mask is not None:
        mask = np.asarray(lesion_mask, dtype=bool)
        if mask.shape != (h, w):
            raise DermretrError(f"the lesion mask is {mask.shape[:2]} but the image is {(h, w)}")
        valid &= ~ndimage.binary_dilation(mask, iterations=max(1, min(h, w) // 40))
        return lab, valid
    outer = radius > _RING
    for _ in range(2):  # a second pass when bright structures (scars, reflections) were split off first
        vals = L[valid]
        if vals.size < 16:
            break
        t = _otsu(vals)
        dark = L < t
        lo, hi = vals[vals < t], vals[vals >= t]
        if lo.size == 0 or hi.size == 0 or hi.mean() - lo.mean() < _MIN_CONTRAST:
            break
        ring = valid & outer
        keep_dark = dark[ring].mean() > 0.5 if ring.any() else lo.size > hi.size
        valid &= dark if keep_dark else ~dark
        if not keep_dark:
            break
    return lab, valid


def skin_mask(image: Any, lesion_mask: np.ndarray | None = None) -> np.ndarray:
    """The pixels :func:`estimate_ita` treats as healthy skin (boolean ``[H, W]``).

    Left out: dark corners (outside 95% of the half-side from the centre) and
    near-black pixels, hair and ruler marks (a morphological black-hat on L*:
    thin structures more than 5 L* darker than their surroundings), and the
    lesion: ``lesion_mask`` dilated by 2.5% of the side, or without a mask,
    Otsu's threshold on L* (the class that fills most of the periphery is
    skin; a second pass when the first split bright structures off; no split
    when the two classes differ by less than 4 L*).

    >>> img = np.full((64, 64, 3), 0.8)
    >>> img[24:40, 24:40] = 0.3
    >>> m = skin_mask(img)
    >>> bool(m[5, 32]), bool(m[32, 32]), bool(m[0, 0])
    (True, False, False)
    """
    return _skin(_as_rgb(image), lesion_mask)[1]


def estimate_ita(image: Any, lesion_mask: np.ndarray | None = None, min_fraction: float = 0.01) -> float:
    """Individual Typology Angle (degrees) of the healthy skin of a lesion image.

    The image is converted to CIELAB (:func:`dermretr.color.rgb_to_lab`),
    the skin pixels are chosen by :func:`skin_mask`, and the angle is
    ``arctan((L* - 50) / b*) * 180 / pi`` of their median L* and median b*.

    Parameters
    ----------
    image : array [H, W, 3], PIL image or path
        uint8 / uint16, or float in [0, 1].
    lesion_mask : bool array [H, W], optional
        The lesion (e.g. DermSynth's ``load_masks(...)["lesion"]``); without
        one the lesion is segmented by Otsu's threshold on L*.
    min_fraction : float
        NaN is returned when fewer pixels than this fraction are skin.

    Returns
    -------
    float
        ITA in degrees (NaN when too little skin is visible).

    Examples
    --------
    >>> from dermretr.color import lab_to_rgb
    >>> skin = np.broadcast_to(lab_to_rgb(np.array([65.0, 10.0, 15.0])), (64, 64, 3)).copy()
    >>> round(estimate_ita(skin), 2), round(float(ita(65.0, 15.0)), 2)
    (45.0, 45.0)
    """
    return _ita_of(*_skin(_as_rgb(image), lesion_mask), min_fraction)


def _ita_of(lab: np.ndarray, valid: np.ndarray, min_fraction: float = 0.01) -> float:
    """ITA of the median L* and b* of the ``valid`` pixels of ``lab`` (NaN when too few)."""
    if valid.sum() < max(16, min_fraction * valid.size):
        return float("nan")
    return float(ita(np.median(lab[..., 0][valid]), np.median(lab[..., 2][valid])))


def ita_to_fitzpatrick(angle: float) -> int | None:
    """Approximate Fitzpatrick type (1..6) of an ITA angle, through its ITA category.

    The mapping is :data:`ITA_FITZPATRICK` (very light > 55: I, light 41-55: II,
    intermediate 28-41: III, tan 10-28: IV, brown -30-10: V, dark < -30: VI);
    an approximation, to be labelled *estimated*.  None for NaN.

    >>> ita_to_fitzpatrick(60.0), ita_to_fitzpatrick(20.0), ita_to_fitzpatrick(-45.0), ita_to_fitzpatrick(float("nan"))
    (1, 4, 6, None)
    """
    angle = float(angle)
    return None if not np.isfinite(angle) else ITA_FITZPATRICK[ita_category(angle)]


def _shrunk(img: Any, mask: np.ndarray | None, max_side: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A PIL image (and its lesion mask, resized to it) as :func:`estimate_skin_tone` analyses them.

    The mask is brought to the image's size (nearest), then both are shrunk to
    ``max_side`` on the long side (box filter / nearest) when larger.
    """
    from PIL import Image

    m = None
    if mask is not None:
        m = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
        if m.size != img.size:
            m = m.resize(img.size, Image.Resampling.NEAREST)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(8, round(img.size[0] * scale)), max(8, round(img.size[1] * scale)))
        img = img.resize(size, Image.Resampling.BOX)
        m = m.resize(size, Image.Resampling.NEAREST) if m is not None else None
    return np.asarray(img), None if m is None else np.asarray(m) > 127


def estimate_skin_tone(cases: pd.DataFrame, use_masks: bool = True, max_side: int = 256,
                       progress: bool = True) -> pd.DataFrame:
    """Estimate every case's skin tone from its image: ``ita_estimated`` and its category and type.

    Parameters
    ----------
    cases : DataFrame
        A case table (``image_path``; DermSynth's ``mask`` column is used for
        the lesion when present and ``use_masks``).
    use_masks : bool
        Use ground-truth lesion masks when the table has them.
    max_side : int
        Larger images are shrunk to this side first (speed).
    progress : bool
        Show a progress bar.

    Returns
    -------
    DataFrame
        A copy of ``cases`` with ``ita_estimated`` (float, NaN when unknown),
        ``ita_category_estimated`` (string) and ``fitzpatrick_estimated``
        (Int64, via :func:`ita_to_fitzpatrick`).  Images that cannot be read
        or show too little skin stay unknown (one :class:`DataWarning`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.data import load
    >>> from dermretr.data.synth import generate
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=6, image_size=64,
    ...                 workers=1, progress=False)
    >>> est = estimate_skin_tone(load("synthetic", root), progress=False)
    >>> bool(((est["fitzpatrick_estimated"] - est["fitzpatrick"]).abs() <= 1).all())
    True
    """
    from tqdm.auto import tqdm

    from .data.images import load_rgb
    from .data.synth import load_masks

    if not isinstance(cases, pd.DataFrame) or "image_path" not in cases.columns:
        raise DermretrError("estimate_skin_tone needs a case table with an 'image_path' column")
    check_int(max_side, "max_side", 16)
    masks = as_text(cases["mask"]) if use_masks and "mask" in cases.columns else None
    values = np.full(len(cases), np.nan)
    failed: list[str] = []
    paths = as_text(cases["image_path"])
    for i, path in enumerate(tqdm(paths, desc="Skin tone (ITA)", unit="img", disable=not progress)):
        try:
            img = load_rgb(path)
            mask = None
            if masks is not None and masks[i] and os.path.isfile(masks[i]):
                mask = load_masks(masks[i])["lesion"]
            values[i] = estimate_ita(*_shrunk(img, mask, max_side))
        except (DermretrError, OSError, ValueError):  # unreadable image or mask
            failed.append(path)
    unknown = int(np.isnan(values).sum())
    if unknown:
        parts = [f"{len(failed)} unreadable, e.g. {failed[0]}"] if failed else []
        if unknown > len(failed):
            parts.append(f"{unknown - len(failed)} with too little skin visible")
        what = "; ".join(parts)
        warnings.warn(f"skin tone could not be estimated for {unknown} of {len(cases)} cases ({what}); "
                      "they are 'unknown'", DataWarning, stacklevel=2)
    out = cases.copy()
    out["ita_estimated"] = values
    out["ita_category_estimated"] = pd.array([ita_category(v) if np.isfinite(v) else pd.NA for v in values],
                                             dtype="string")
    out["fitzpatrick_estimated"] = pd.array([ita_to_fitzpatrick(v) for v in values], dtype="Int64")
    return out


_AGREEMENT_COLUMNS = ("iou", "contamination", "skin_kept", "lesion_fraction", "lesion_fraction_estimated",
                      "field_pixels", "skin_pixels", "ita", "ita_true_mask")


def skin_mask_agreement(cases: pd.DataFrame, mask_column: str = "lesion_mask", mask_bit: int | None = None,
                        max_side: int = 256, progress: bool = False) -> pd.DataFrame:
    """How well :func:`skin_mask`'s lesion/skin separation (no mask given) agrees with ground-truth lesion masks.

    Each image is analysed as :func:`estimate_skin_tone` analyses an image
    without a mask (shrunk to ``max_side``; the mask with it, nearest), and
    compared inside the *field of view* F that :func:`skin_mask` considers at
    all (not in the dark corners outside 95% of the half-side, not near-black).
    With S the estimated skin, the estimated lesion is E = F and not S (so hair
    and other thin dark structures the method leaves out count as lesion), and
    T is the true lesion inside F.

    Parameters
    ----------
    cases : DataFrame
        A case table with ``image_path`` and ``mask_column``.
    mask_column : str
        Column of mask file paths: PH2's ``lesion_mask`` (non-zero = lesion),
        or DermSynth's ``mask`` (criterion bits: its lesion bit 0 is used).
        Rows where it is empty (NA) are left out with one :class:`DataWarning`.
    mask_bit : int, optional
        Read this bit of the mask's raw values as the region (default: bit 0
        for a column named ``mask``, else every non-zero pixel); see
        :func:`dermretr.data.images.load_mask`.
    max_side : int
        Images are shrunk to this long side first, as in :func:`estimate_skin_tone`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    DataFrame
        One row per image with a mask: ``case_id`` (when the table has one),
        ``iou`` (|E and T| / |E or T|; NaN when both are empty),
        ``contamination`` (the share of S inside the true lesion: lesion pixels
        that would enter the ITA; NaN when S is empty), ``skin_kept`` (the
        share of the true skin in F that S keeps), ``lesion_fraction`` and
        ``lesion_fraction_estimated`` (|T| / |F|, |E| / |F|), ``field_pixels``,
        ``skin_pixels``, ``ita`` (:func:`estimate_ita` without a mask, as on
        data without masks) and ``ita_true_mask`` (with the true mask).
        ``attrs["summary"]`` holds the number of images and the mean and
        median of ``iou``, ``contamination`` and ``skin_kept``.

    Raises
    ------
    DermretrError
        Without the columns, when a mask file is missing or unreadable (naming
        the case), when a mask's shape does not match its image's, or when no
        row has a mask.

    Examples
    --------
    A light skin with a dark disc, and the disc as its mask:

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> yy, xx = np.mgrid[:96, :96]
    >>> disc = (yy - 48) ** 2 + (xx - 48) ** 2 < 20 ** 2
    >>> img = np.where(disc[..., None], [90, 55, 40], [220, 180, 160]).astype(np.uint8)
    >>> Image.fromarray(img).save(d / "case.png")
    >>> Image.fromarray(disc.astype(np.uint8) * 255).save(d / "case_lesion.bmp")
    >>> cases = pd.DataFrame({"case_id": ["c1"], "image_path": [str(d / "case.png")],
    ...                       "lesion_mask": [str(d / "case_lesion.bmp")]})
    >>> table = skin_mask_agreement(cases)
    >>> round(float(table.loc[0, "iou"]), 3), float(table.loc[0, "contamination"])
    (1.0, 0.0)
    """
    from tqdm.auto import tqdm

    from .data.images import load_mask, load_rgb

    if not isinstance(cases, pd.DataFrame):
        raise DermretrError(f"skin_mask_agreement needs a case table (DataFrame), got {type(cases).__name__}")
    missing = [c for c in ("image_path", mask_column) if c not in cases.columns]
    if missing:
        raise DermretrError(f"skin_mask_agreement needs the columns {missing} in the case table (it has "
                            f"{', '.join(map(str, list(cases.columns)[:12]))}); masks are read from "
                            f"mask_column={mask_column!r}")
    check_int(max_side, "max_side", 16)
    bit = default_mask_bit(mask_column, mask_bit)
    raw = cases[mask_column]
    has = (raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy()
    if not has.any():
        raise DermretrError(f"no case has a mask in column {mask_column!r} ({len(cases)} cases)")
    if not has.all():
        warnings.warn(f"{int((~has).sum())} of {len(cases)} cases have no mask in {mask_column!r}; they are left "
                      "out of the agreement", DataWarning, stacklevel=2)
    rows = cases[has]
    ids = as_text(rows["case_id"]) if "case_id" in rows.columns else np.arange(len(cases))[has].astype(str)
    out = []
    for cid, path, mpath in tqdm(list(zip(ids, as_text(rows["image_path"]), as_text(rows[mask_column]))),
                                 desc="Skin mask vs lesion mask", unit="img", disable=not progress):
        try:
            img = load_rgb(path)
            truth = load_mask(mpath, bit=bit)
        except DermretrError as exc:
            raise DermretrError(f"case {cid}: {exc}") from None
        check_mask_aspect(truth.shape, img.size, cid, mpath)
        rgb, shrunk = _shrunk(img, truth, max_side)
        assert shrunk is not None  # a mask was given
        truth = shrunk
        lab, skin = _skin(_as_rgb(rgb), None)  # segmented once: the ITA without a mask is measured on it
        _, field = _field(lab[..., 0])
        t = truth & field
        e = field & ~skin
        union, n_skin, n_true_skin = int((e | t).sum()), int(skin.sum()), int((field & ~truth).sum())
        out.append({"case_id": cid,
                    "iou": (e & t).sum() / union if union else np.nan,
                    "contamination": (skin & truth).sum() / n_skin if n_skin else np.nan,
                    "skin_kept": (skin & ~truth).sum() / n_true_skin if n_true_skin else np.nan,
                    "lesion_fraction": t.sum() / max(int(field.sum()), 1),
                    "lesion_fraction_estimated": e.sum() / max(int(field.sum()), 1),
                    "field_pixels": int(field.sum()), "skin_pixels": n_skin,
                    "ita": _ita_of(lab, skin), "ita_true_mask": estimate_ita(rgb, truth)})
    table = pd.DataFrame(out, columns=["case_id", *_AGREEMENT_COLUMNS])
    for c in _AGREEMENT_COLUMNS:
        table[c] = table[c].astype(int if c.endswith("_pixels") else float)
    if "case_id" not in cases.columns:
        table = table.drop(columns="case_id")
    summary: dict[str, Any] = {"n": len(table), "mask_column": mask_column}
    for c in ("iou", "contamination", "skin_kept"):
        summary[f"{c}_mean"] = float(table[c].mean())
        summary[f"{c}_median"] = float(table[c].median())
    table.attrs["summary"] = summary
    return table


def default_mask_bit(mask_column: str, mask_bit: int | None = None) -> int | None:
    """The bit of a mask file's raw values read as the lesion (for :func:`dermretr.data.images.load_mask`).

    ``mask_bit`` when given; else bit 0 for DermSynth's ``mask`` column (its
    lesion bit; higher bits are criteria), else None: every non-zero pixel
    (PH2's ``lesion_mask`` and other binary masks).

    >>> default_mask_bit("mask"), default_mask_bit("lesion_mask"), default_mask_bit("mask", 3)
    (0, None, 3)
    """
    if mask_bit is not None:
        return mask_bit
    return 0 if mask_column == "mask" else None


def check_mask_aspect(mask_shape: tuple[int, ...], image_size: tuple[int, int], case_id: Any, path: Any) -> None:
    """Refuse a mask whose aspect ratio differs from its image's by more than 2% (the mask of another image).

    ``mask_shape`` is the mask array's ``(height, width)``, ``image_size`` the
    image's PIL size ``(width, height)``; masks are compared by aspect ratio,
    not size, since a mask may be stored at another resolution.

    >>> check_mask_aspect((100, 200), (400, 200), "c1", "c1_mask.png")
    >>> check_mask_aspect((100, 100), (400, 200), "c1", "c1_mask.png")
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: case c1: the mask c1_mask.png is 100x100 but its image is 400x200 (another ...
    """
    (mh, mw), (w, h) = mask_shape[:2], image_size
    if abs(mh / mw - h / w) > 0.02 * (h / w):
        raise DermretrError(f"case {case_id}: the mask {path} is {mw}x{mh} but its image is {w}x{h} (another "
                            "aspect ratio): is it the mask of another image?")
