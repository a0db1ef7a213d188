"""Skin tone from the pixels: the Individual Typology Angle of a lesion image's healthy skin.

:func:`skin_mask` picks the healthy skin after colour constancy (no dark
corners, background, highlights, shadows, hair or lesion; the pixel models are
in :mod:`dermretr.skin_pixels`), :func:`estimate_ita` measures its patch-wise
ITA, :func:`estimate_ita_details` adds a confidence and its parts,
:func:`ita_to_fitzpatrick` maps it to an approximate Fitzpatrick type,
:func:`estimate_skin_tone` adds them to a case table (labelled *estimated*;
'unknown' below :data:`MIN_CONFIDENCE`), and :func:`skin_mask_agreement` checks the
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._checks import check_int
from ._errors import DataWarning, DermretrError
from .color import ITA_CATEGORIES, ita, ita_category, rgb_to_lab
from .skin_pixels import (
    CONSTANCY,
    as_rgb,
    check_mask_aspect,
    correct_illuminant,
    default_mask_bit,
    field_of_view,
    lesion_region,
    otsu_threshold,
    patch_ita,
    skin_colour,
    specular,
)
from .stats import as_text

__all__ = [
    "ITA_FITZPATRICK",
    "MIN_CONFIDENCE",
    "SkinToneEstimate",
    "skin_mask",
    "estimate_ita",
    "estimate_ita_details",
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

#: A thin dark structure (hair, ruler mark) is at least this much darker (L*) than its closing.
_HAIR_DEPTH = 5.0
#: Otsu's two classes must differ by at least this (L*) to be lesion and skin rather than texture.
_MIN_CONTRAST = 4.0
#: Pixels farther than this from the centre decide which Otsu class is skin (lesions are centred).
_RING = 0.6
#: Without a lesion mask, Otsu's lesion is grown by 1/this of the side (0: not grown).
_LESION_MARGIN = 20
#: Skin pixels farther than this many robust standard deviations (1.4826 MAD) of L* from the median are
#: shadows or highlights (Hampel's outlier rule).
_HAMPEL = 3.0

#: Default colour constancy (see :func:`dermretr.skin_pixels.correct_illuminant`).
DEFAULT_CONSTANCY = "skin_locus"
#: The patch grid of the patch-wise ITA (``PATCH_GRID`` x ``PATCH_GRID`` tiles of the image).
PATCH_GRID = 8
#: Below this many usable skin patches the ITA falls back to all skin pixels pooled.
MIN_PATCHES = 3
#: Confidence parts: skin covering this share of the image, this many usable patches, and a patch-ITA
#: interquartile range of this many degrees (half credit) are what :func:`estimate_ita_details` scores.
FULL_COVERAGE, FULL_PATCHES, SPREAD_SCALE = 0.15, 8, 15.0
#: A lighter class set aside by Otsu over this share of the skin candidates (from the first to the second
#: value) takes the confidence's ``separation`` part from 1 to 0.
SEPARATION = (0.1, 0.4)
#: ... counted only when it is this much lighter (L*, class means): a lesion and skin, not the two sides of
#: uneven lighting.
SEPARATION_CONTRAST = 12.0
#: Estimates with a confidence below this are 'unknown' in :func:`estimate_skin_tone`.
MIN_CONFIDENCE = 0.25


@dataclass(frozen=True)
class SkinToneEstimate:
    """One image's skin tone estimate and how far to trust it (from :func:`estimate_ita_details`).

    Attributes
    ----------
    ita : float
        ITA in degrees of the healthy skin (NaN when too little skin is visible).
    fitzpatrick : int or None
        Approximate Fitzpatrick type (:func:`ita_to_fitzpatrick`).
    confidence : float
        ``coverage * patches * spread * separation`` in [0, 1] (0 when the ITA is NaN).
    skin_fraction : float
        Share of the image's pixels taken as healthy skin.
    n_patches : int
        Patches of the :data:`PATCH_GRID` tiling that are at least half skin.
    ita_iqr : float
        Interquartile range (degrees) of the patch ITAs (NaN under two patches).
    coverage, patches, spread, separation : float
        The confidence parts: ``min(1, skin_fraction / FULL_COVERAGE)``,
        ``min(1, n_patches / FULL_PATCHES)``, ``1 / (1 + (ita_iqr / SPREAD_SCALE) ** 2)``
        and, without a lesion mask, 1 falling to 0 as the share of skin
        candidates Otsu set aside as *lighter* (by 12 L* or more) than the
        kept class grows from 10% to 40% (:data:`SEPARATION`): a lesion that
        fills the periphery is then taken for skin and the real skin for a
        reflection.
    gains : tuple of float
        The colour-constancy gains applied to linear R, G, B.
    """

    ita: float
    fitzpatrick: int | None
    confidence: float
    skin_fraction: float
    n_patches: int
    ita_iqr: float
    coverage: float
    patches: float
    spread: float
    separation: float
    gains: tuple[float, float, float]


def _skin(rgb: np.ndarray, lesion_mask: np.ndarray | None,
          constancy: str | None = DEFAULT_CONSTANCY) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
    """CIELAB of the corrected ``rgb``, its healthy skin (:func:`skin_mask`'s rules), gains, lighter share, guard.

    ``lighter`` is the share of the skin candidates Otsu set aside as
    *lighter* than the kept class (the ``separation`` part of the
    confidence); ``guard`` the band Otsu's lesion was grown by.
    """
    from scipy import ndimage

    lab = rgb_to_lab(rgb)
    radius, valid = field_of_view(lab[..., 0])
    rgb, gains = correct_illuminant(rgb, valid, constancy)
    if not np.all(gains == 1.0):
        lab = rgb_to_lab(rgb)
    L = lab[..., 0]
    h, w = L.shape
    valid &= skin_colour(rgb) & ~specular(rgb, lab)
    size = max(3, (min(h, w) // 24) | 1)  # wider than a hair, narrower than a lesion
    valid &= ndimage.grey_closing(L, size=(size, size)) - L <= _HAIR_DEPTH
    lighter, guard = 0.0, np.zeros_like(valid)
    if lesion_mask is not None:
        mask = np.asarray(lesion_mask, dtype=bool)
        if mask.shape != (h, w):
            raise DermretrError(f"the lesion mask is {mask.shape[:2]} but the image is {(h, w)}")
        valid &= ~ndimage.binary_dilation(mask, iterations=max(1, min(h, w) // 40))
    else:
        outer = radius > _RING
        for _ in range(2):  # a second pass when bright structures (scars, reflections) were split off first
            vals = L[valid]
            if vals.size < 16:
                break
            t = otsu_threshold(vals)
            dark = L < t
            lo, hi = vals[vals < t], vals[vals >= t]
            if lo.size == 0 or hi.size == 0 or hi.mean() - lo.mean() < _MIN_CONTRAST:
                break
            ring = valid & outer
            keep_dark = dark[ring].mean() > 0.5 if ring.any() else lo.size > hi.size
            if keep_dark and hi.mean() - lo.mean() >= SEPARATION_CONTRAST:
                lighter = max(lighter, hi.size / vals.size)
            if not keep_dark and _LESION_MARGIN:
                grown = lesion_region(valid & dark, max(1, min(h, w) // _LESION_MARGIN))
                guard |= grown & valid & ~dark
                valid &= ~grown
            valid &= dark if keep_dark else ~dark
            if not keep_dark:
                break
    if valid.sum() >= 16:  # shadows and highlights left on the skin
        vals = L[valid]
        med = np.median(vals)
        valid &= np.abs(L - med) <= _HAMPEL * 1.4826 * np.median(np.abs(vals - med))
    return lab, valid, gains, lighter, guard


def skin_mask(image: Any, lesion_mask: np.ndarray | None = None,
              constancy: str | None = DEFAULT_CONSTANCY) -> np.ndarray:
    """The pixels :func:`estimate_ita` treats as healthy skin (boolean ``[H, W]``).

    After colour constancy (``constancy``, see
    :func:`dermretr.skin_pixels.correct_illuminant`), left out are: dark
    corners (outside 95% of the half-side from the centre) and near-black
    pixels; everything outside the YCbCr skin cluster of Chai & Ngan (1999)
    (background, cloth, paper, rulers, gel: :func:`dermretr.skin_pixels.skin_colour`);
    specular highlights (:func:`dermretr.skin_pixels.specular`); hair and
    ruler marks (a morphological black-hat on L*: thin structures more than
    5 L* darker than their surroundings); the lesion: ``lesion_mask`` dilated
    by 2.5% of the side, or without a mask, Otsu's threshold on L* (the class
    that fills most of the periphery is skin; a second pass when the first
    split bright structures off; no split when the two classes differ by
    less than 4 L*); and last, shadows and highlights: skin pixels whose L*
    is more than 3 robust standard deviations from the median (Hampel).

    >>> img = np.full((64, 64, 3), [0.85, 0.65, 0.55])
    >>> img[24:40, 24:40] = [0.35, 0.2, 0.15]
    >>> img[:, :8] = [0.2, 0.35, 0.7]  # a blue cloth
    >>> m = skin_mask(img)
    >>> bool(m[5, 32]), bool(m[32, 32]), bool(m[0, 0]), bool(m[32, 3])
    (True, False, False, False)
    """
    return _skin(as_rgb(image), lesion_mask, constancy)[1]


def estimate_ita(image: Any, lesion_mask: np.ndarray | None = None, min_fraction: float = 0.01,
                 constancy: str | None = DEFAULT_CONSTANCY, min_confidence: float = 0.0) -> float:
    """Individual Typology Angle (degrees) of the healthy skin of a lesion image.

    The image is colour-corrected (``constancy``), converted to CIELAB
    (:func:`dermretr.color.rgb_to_lab`), the skin pixels are chosen by
    :func:`skin_mask`, and the ITA is the median of the patch ITAs
    (:func:`estimate_ita_details`).

    Parameters
    ----------
    image : array [H, W, 3], PIL image or path
        uint8 / uint16, or float in [0, 1].
    lesion_mask : bool array [H, W], optional
        The lesion (e.g. DermSynth's ``load_masks(...)["lesion"]``); without
        one the lesion is segmented by Otsu's threshold on L*.
    min_fraction : float
        NaN is returned when fewer pixels than this fraction are skin.
    constancy : {"skin_locus", "shades_of_gray", "gray_world", None}
        Colour constancy first (:func:`dermretr.skin_pixels.correct_illuminant`).
    min_confidence : float
        NaN is returned when the estimate's confidence is lower (default 0:
        never; :func:`estimate_skin_tone` uses :data:`MIN_CONFIDENCE`).

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
    est = estimate_ita_details(image, lesion_mask, min_fraction, constancy)
    return est.ita if est.confidence >= min_confidence else float("nan")


def estimate_ita_details(image: Any, lesion_mask: np.ndarray | None = None, min_fraction: float = 0.01,
                         constancy: str | None = DEFAULT_CONSTANCY) -> SkinToneEstimate:
    """The ITA of an image's healthy skin with its confidence and the parts of it (a :class:`SkinToneEstimate`).

    The skin (:func:`skin_mask`) is tiled into :data:`PATCH_GRID` x
    :data:`PATCH_GRID` patches; each patch that is at least half skin gets
    its own ITA (:func:`dermretr.skin_pixels.patch_ita`) and the estimate is
    their median (patch-wise ITA as in Kinyanjui et al. 2020; Groh et al.
    2021 show how far a whole-image ITA strays on clinical photographs).
    Under :data:`MIN_PATCHES` patches the skin pixels are pooled; with fewer
    than ``min_fraction`` of the pixels (and 16) the ITA is NaN.

    The confidence multiplies four parts in [0, 1]: how much skin there is
    (``skin_fraction / FULL_COVERAGE``, capped at 1), how many patches
    (``n_patches / FULL_PATCHES``, capped), how much the patches agree
    (``1 / (1 + (IQR / SPREAD_SCALE) ** 2)``: 0.5 at an interquartile range
    of 15 degrees, about the width of one ITA category; under two patches
    the spread is unknown and scores 0.5) and how clear the lesion/skin
    separation was (``separation``, see :class:`SkinToneEstimate`).

    Examples
    --------
    >>> from dermretr.color import lab_to_rgb
    >>> skin = np.broadcast_to(lab_to_rgb(np.array([65.0, 10.0, 15.0])), (64, 64, 3)).copy()
    >>> est = estimate_ita_details(skin)
    >>> round(est.ita, 1), est.fitzpatrick, est.confidence, est.n_patches, est.ita_iqr
    (45.0, 2, 1.0, 44, 0.0)

    A blue cloth with a little skin in the middle: an estimate, but one not to trust.

    >>> blue = np.full((64, 64, 3), [0.2, 0.35, 0.7])
    >>> blue[24:40, 24:40] = skin[:16, :16]
    >>> est = estimate_ita_details(blue)
    >>> round(est.ita, 1), est.n_patches, round(est.skin_fraction, 4), est.confidence < MIN_CONFIDENCE
    (45.0, 4, 0.0625, True)
    """
    lab, skin, gains, lighter, _ = _skin(as_rgb(image), lesion_mask, constancy)
    return _details(lab, skin, gains, lighter, min_fraction=min_fraction)


def _details(lab: np.ndarray, skin: np.ndarray, gains: np.ndarray, lighter: float = 0.0,
             min_fraction: float = 0.01) -> SkinToneEstimate:
    """:func:`estimate_ita_details` of analysed pixels."""
    n_skin = int(skin.sum())
    values = patch_ita(lab, skin, PATCH_GRID)
    if values.size >= MIN_PATCHES:
        angle = float(np.median(values))
    elif n_skin >= max(16, min_fraction * skin.size):
        angle = float(ita(np.median(lab[..., 0][skin]), np.median(lab[..., 2][skin])))
    else:
        angle = float("nan")
    iqr = float(np.subtract(*np.percentile(values, [75, 25]))) if values.size >= 2 else float("nan")
    fraction = n_skin / skin.size
    coverage = min(1.0, fraction / FULL_COVERAGE)
    patches = min(1.0, values.size / FULL_PATCHES)
    spread = 1.0 / (1.0 + (iqr / SPREAD_SCALE) ** 2) if np.isfinite(iqr) else 0.5
    separation = float(np.clip(1 - (lighter - SEPARATION[0]) / (SEPARATION[1] - SEPARATION[0]), 0, 1))
    confidence = coverage * patches * spread * separation if np.isfinite(angle) else 0.0
    g = tuple(float(x) for x in gains)
    return SkinToneEstimate(ita=angle, fitzpatrick=ita_to_fitzpatrick(angle), confidence=float(confidence),
                            skin_fraction=float(fraction), n_patches=int(values.size), ita_iqr=iqr,
                            coverage=float(coverage), patches=float(patches), spread=float(spread),
                            separation=separation, gains=(g[0], g[1], g[2]))


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
                       progress: bool = True, constancy: str | None = DEFAULT_CONSTANCY,
                       min_confidence: float = MIN_CONFIDENCE) -> pd.DataFrame:
    """Estimate every case's skin tone from its image: ``ita_estimated``, its category, type and confidence.

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
    constancy : {"skin_locus", "shades_of_gray", "gray_world", None}
        Colour constancy (:func:`dermretr.skin_pixels.correct_illuminant`).
    min_confidence : float
        Estimates whose confidence (:func:`estimate_ita_details`) is lower
        are left unknown rather than guessed (default :data:`MIN_CONFIDENCE`;
        0 keeps every estimate).

    Returns
    -------
    DataFrame
        A copy of ``cases`` with ``ita_estimated`` (float, NaN when unknown),
        ``ita_category_estimated`` (string), ``fitzpatrick_estimated``
        (Int64, via :func:`ita_to_fitzpatrick`), ``ita_confidence`` (float in
        [0, 1]; NaN when unreadable: kept for unknown estimates too) and
        ``ita_iqr_estimated`` (the spread of the patch ITAs, degrees).
        Images that cannot be read, show too little skin or give an estimate
        below ``min_confidence`` stay unknown (one :class:`DataWarning`), and
        ``ita_unknown_reason`` says which (``<NA>`` for the estimated).

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
    if constancy not in CONSTANCY:
        raise DermretrError(f"constancy must be one of {list(CONSTANCY)}, got {constancy!r}")
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise DermretrError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
    masks = as_text(cases["mask"]) if use_masks and "mask" in cases.columns else None
    values, confidence, spread = np.full(len(cases), np.nan), np.full(len(cases), np.nan), np.full(len(cases), np.nan)
    failed: list[str] = []
    reason = np.full(len(cases), None, dtype=object)
    paths = as_text(cases["image_path"])
    for i, path in enumerate(tqdm(paths, desc="Skin tone (ITA)", unit="img", disable=not progress)):
        try:
            img = load_rgb(path)
            mask = None
            if masks is not None and masks[i] and os.path.isfile(masks[i]):
                mask = load_masks(masks[i])["lesion"]
            est = estimate_ita_details(*_shrunk(img, mask, max_side), constancy=constancy)
        except (DermretrError, OSError, ValueError):  # unreadable image or mask
            failed.append(path)
            reason[i] = "unreadable image or mask"
            continue
        values[i], confidence[i], spread[i] = est.ita, est.confidence, est.ita_iqr
        reason[i] = None if np.isfinite(est.ita) else "too little skin visible"
    no_skin = int(np.isnan(values).sum()) - len(failed)
    doubtful = np.isfinite(values) & (confidence < min_confidence)
    values[doubtful] = np.nan
    reason[doubtful] = f"confidence below {min_confidence:g}"
    unknown = int(np.isnan(values).sum())
    if unknown:
        parts = [f"{len(failed)} unreadable, e.g. {failed[0]}"] if failed else []
        if no_skin:
            parts.append(f"{no_skin} with too little skin visible")
        if doubtful.any():
            parts.append(f"{int(doubtful.sum())} with a confidence below {min_confidence:g} (little skin or "
                         "patches that disagree; see ita_confidence)")
        what = "; ".join(parts)
        warnings.warn(f"skin tone could not be estimated for {unknown} of {len(cases)} cases ({what}); "
                      "they are 'unknown'", DataWarning, stacklevel=2)
    out = cases.copy()
    out["ita_estimated"] = values
    out["ita_category_estimated"] = pd.array([ita_category(v) if np.isfinite(v) else pd.NA for v in values],
                                             dtype="string")
    out["fitzpatrick_estimated"] = pd.array([ita_to_fitzpatrick(v) for v in values], dtype="Int64")
    out["ita_confidence"] = confidence
    out["ita_iqr_estimated"] = spread
    out["ita_unknown_reason"] = pd.array(reason, dtype="string")
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
    and other thin dark structures the method leaves out count as lesion)
    less the guard band Otsu's lesion is grown by (neither lesion nor skin),
    and T is the true lesion inside F.

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
        arr = as_rgb(rgb)
        lab, skin, gains, lighter, guard = _skin(arr, None)  # segmented once: the ITA without a mask is measured on it
        _, field = field_of_view(rgb_to_lab(arr)[..., 0])
        t = truth & field
        e = field & ~skin & ~guard
        union, n_skin, n_true_skin = int((e | t).sum()), int(skin.sum()), int((field & ~truth).sum())
        out.append({"case_id": cid,
                    "iou": (e & t).sum() / union if union else np.nan,
                    "contamination": (skin & truth).sum() / n_skin if n_skin else np.nan,
                    "skin_kept": (skin & ~truth).sum() / n_true_skin if n_true_skin else np.nan,
                    "lesion_fraction": t.sum() / max(int(field.sum()), 1),
                    "lesion_fraction_estimated": e.sum() / max(int(field.sum()), 1),
                    "field_pixels": int(field.sum()), "skin_pixels": n_skin,
                    "ita": _details(lab, skin, gains, lighter).ita, "ita_true_mask": estimate_ita(rgb, truth)})
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
