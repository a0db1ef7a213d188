"""Which pixels of a photograph are healthy skin, under which light: the pixel models of :mod:`dermretr.skin_tone`.

Colour constancy (:func:`illuminant`, :func:`correct_illuminant`: shades of
gray, Finlayson & Trezzi 2004, with gray world as its p = 1 case, as used for
dermoscopy by Barata et al. 2015), a skin-colour model (:func:`skin_colour`:
the YCbCr skin cluster of Chai & Ngan 1999), specular highlights
(:func:`specular`), the field of view of a dermoscope (:func:`field_of_view`),
Otsu's threshold (:func:`otsu_threshold`) and patch-wise ITA
(:func:`patch_ita`, after Kinyanjui et al. 2020).  All work on float RGB in
[0, 1] (:func:`as_rgb`) or its CIELAB.

References
----------
- G. D. Finlayson, E. Trezzi, "Shades of gray and colour constancy", Color
  and Imaging Conference, 2004.
- C. Barata, M. E. Celebi, J. S. Marques, "Improving dermoscopy image
  classification using color constancy", IEEE JBHI 19(3), 2015.
- D. Chai, K. N. Ngan, "Face segmentation using skin-color map in videophone
  applications", IEEE TCSVT 9(4), 1999.
- M. Soriano, B. Martinkauppi, S. Huovinen, M. Laaksonen, "Adaptive skin
  color modeling using the skin locus for selecting training pixels",
  Pattern Recognition 36(3), 2003.
- N. M. Kinyanjui et al., "Fairness of classifiers across skin tones in
  dermatology", MICCAI 2020.
- M. Groh et al., "Evaluating deep neural networks trained on clinical images
  in dermatology with the Fitzpatrick 17k dataset", CVPR Workshops 2021.

Examples
--------
>>> img = np.full((32, 32, 3), [0.85, 0.65, 0.55])
>>> bool(skin_colour(img).all()), bool(skin_colour(np.full((4, 4, 3), [0.2, 0.4, 0.8])).any())
(True, False)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._errors import DermretrError
from .color import ita, lab_to_rgb, linear_to_srgb, rgb_to_lab, srgb_to_linear

__all__ = [
    "CONSTANCY",
    "SHADES_OF_GRAY_P",
    "as_rgb",
    "otsu_threshold",
    "field_of_view",
    "illuminant",
    "correct_illuminant",
    "skin_colour",
    "specular",
    "patch_ita",
    "lesion_region",
    "default_mask_bit",
    "check_mask_aspect",
]

#: Colour-constancy choices of :func:`correct_illuminant`.
CONSTANCY: tuple[str | None, ...] = ("skin_locus", "shades_of_gray", "gray_world", None)
#: Minkowski norm of shades of gray (p = 6 is the usual choice for dermoscopy, Barata et al. 2015).
SHADES_OF_GRAY_P = 6.0

#: Pixels farther than this from the centre (the image spans [-1, 1]) are dark corners / vignette.
RADIUS = 0.95
#: Pixels darker than this L* are shadow or background, never skin.
BLACK_L = 3.0
#: Rec. 709 luminance weights of linear RGB (the corrections keep the estimated illuminant's luminance).
_Y = np.array([0.2126, 0.7152, 0.0722])
#: Chai & Ngan (1999) skin cluster, 8-bit YCbCr (ITU-R BT.601).
CB_RANGE, CR_RANGE = (77.0, 127.0), (133.0, 173.0)
#: A specular highlight: at least this light (L*) with at most this chroma (C*), or a clipped channel.
SPECULAR_L, SPECULAR_C, CLIPPED = 95.0, 6.0, 0.985
#: The skin locus in CIELAB: skin's hue angle h_ab lies between red and yellow and its chroma C* is not
#: near gray (degrees, C* units).  Every DermSynth skin (h 45-72, C* 15-25) and every PH2 image's healthy
#: skin (h 6-75, C* 6-39) lies inside; green, blue and gray casts fall outside.
SKIN_HUE, SKIN_CHROMA = (0.0, 80.0), (5.0, 60.0)
#: The wider YCbCr box whose pixels the skin-locus correction estimates the skin's colour from (a colour
#: cast may push skin a little out of Chai & Ngan's box; gray, Cr = 128, stays out).
LOOSE_CB, LOOSE_CR = (67.0, 137.0), (130.0, 183.0)


def as_rgb(image: Any) -> np.ndarray:
    """An image (array, PIL image or path) as float RGB in [0, 1], refusing what is not one.

    >>> as_rgb(np.full((8, 8, 3), 255, np.uint8)).max()
    np.float64(1.0)
    """
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


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of 1-D values (maximal between-class variance).

    >>> 0.0 < otsu_threshold(np.r_[np.zeros(50), np.ones(50)]) < 1.0
    True
    """
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    return float(edges[int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2)) + 1])


def field_of_view(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the centre (the image spans [-1, 1]) and the field of view: no dark corner, no black.

    >>> radius, field = field_of_view(np.full((16, 16), 60.0))
    >>> bool(field[8, 8]), bool(field[0, 0])
    (True, False)
    """
    h, w = L.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    radius = np.hypot(yy, xx)
    return radius, (radius <= RADIUS) & (L > BLACK_L)


def illuminant(rgb: np.ndarray, where: np.ndarray | None = None, p: float = SHADES_OF_GRAY_P) -> np.ndarray:
    """The shades-of-gray illuminant estimate: the Minkowski p-mean of each linear RGB channel.

    Finlayson & Trezzi (2004): ``e_c = (mean(I_c ** p)) ** (1/p)``; p = 1 is
    gray world, p = inf white patch.  ``where`` restricts it (the field of
    view); clipped pixels (a channel at or above 0.985) are left out.

    >>> e = illuminant(np.full((8, 8, 3), [0.5, 0.5, 0.5]))
    >>> bool(np.allclose(e / e.sum(), 1 / 3))
    True
    """
    lin = srgb_to_linear(rgb)
    keep = rgb.max(axis=-1) < CLIPPED
    if where is not None:
        keep &= where
    pix = lin[keep] if keep.sum() >= 16 else lin.reshape(-1, 3)
    return np.power(np.mean(np.power(pix, p), axis=0), 1 / p) + 1e-12


def correct_illuminant(rgb: np.ndarray, where: np.ndarray | None = None,
                       constancy: str | None = "skin_locus") -> tuple[np.ndarray, np.ndarray]:
    """Colour-constancy correction of an sRGB image: ``(corrected image, per-channel gains)``.

    A von Kries (diagonal) correction of linear RGB by gains scaled to keep
    the luminance of the estimated illuminant (so L* moves little):

    - ``"shades_of_gray"``: gains turn the shades-of-gray estimate
      (:func:`illuminant`, p = 6) neutral (Finlayson & Trezzi 2004; Barata et
      al. 2015 for dermoscopy);
    - ``"gray_world"``: the same with p = 1 (Buchsbaum 1980);
    - ``"skin_locus"`` (the default of :mod:`dermretr.skin_tone`): the
      shades-of-gray mean of the skin-coloured pixels (a box a little wider
      than :func:`skin_colour`'s, so that a cast does not push skin out) is
      moved to the nearest colour of the skin locus (the colours skin takes
      under a neutral light, Soriano et al. 2003; here the CIELAB hue angles
      :data:`SKIN_HUE` and chromas :data:`SKIN_CHROMA`) and the image with it.
      Skin off the locus is lit by a coloured light; inside it illuminant
      and skin tone cannot be told apart (a yellow light and a darker skin
      both raise b*), so nothing is changed: a guard against green, blue
      and gray casts, not a correction of warm or cool light.  Background objects (blue cloth, white paper) do
      not enter the estimate.  Full gray-world corrections instead turn a
      photo that is mostly skin gray and so erase the skin's own chroma
      (b*, on which ITA depends);
    - None: no correction (gains 1).

    ``where`` is the field of view the estimate is computed on (no dark
    vignette corners).

    >>> skin = np.full((16, 16, 3), [0.80, 0.60, 0.50])
    >>> bool(np.allclose(correct_illuminant(skin)[0], skin))  # a skin scene needs no correction
    True
    >>> gray = correct_illuminant(skin, constancy="gray_world")[0][0, 0]
    >>> bool(np.ptp(gray) < 0.01)  # gray world turns the same skin gray
    True
    """
    if constancy not in CONSTANCY:
        raise DermretrError(f"constancy must be one of {list(CONSTANCY)}, got {constancy!r}")
    ones = np.ones(3)
    if constancy is None:
        return rgb, ones
    if constancy == "skin_locus":
        skin = skin_colour(rgb, LOOSE_CB, LOOSE_CR)
        where = skin if where is None else where & skin
        if where.sum() < 64:
            return rgb, ones
        e = illuminant(rgb, where, SHADES_OF_GRAY_P)
        L, a, b = rgb_to_lab(linear_to_srgb(e))
        hue, chroma = np.degrees(np.arctan2(b, a)), np.hypot(a, b)
        hue2, chroma2 = np.clip(hue, *SKIN_HUE), np.clip(chroma, *SKIN_CHROMA)
        if hue2 == hue and chroma2 == chroma:
            return rgb, ones
        h = np.radians(hue2)
        target = srgb_to_linear(lab_to_rgb(np.array([L, chroma2 * np.cos(h), chroma2 * np.sin(h)])))
        gains = np.maximum(target, 1e-6) / e
    else:
        e = illuminant(rgb, where, 1.0 if constancy == "gray_world" else SHADES_OF_GRAY_P)
        gains = e.mean() / e
    gains *= float(_Y @ e) / float(_Y @ (e * gains))
    return np.clip(linear_to_srgb(srgb_to_linear(rgb) * gains), 0.0, 1.0), gains


def skin_colour(rgb: np.ndarray, cb_range: tuple[float, float] = CB_RANGE,
                cr_range: tuple[float, float] = CR_RANGE) -> np.ndarray:
    """Pixels inside the YCbCr skin cluster of Chai & Ngan (1999): Cb in [77, 127], Cr in [133, 173].

    Computed on 8-bit BT.601 YCbCr of the (colour-corrected) sRGB image; it
    holds skin of every tone (the luminance Y is not constrained) and leaves
    out gray, white, black, blue and green objects (cloth, paper, rulers,
    gel, background).  Lesions are mostly inside it too (separated later).

    >>> skin_colour(np.array([[[0.35, 0.25, 0.20], [0.9, 0.9, 0.9], [0.3, 0.6, 0.3]]])).tolist()
    [[True, False, False]]
    """
    r, g, b = (255 * rgb[..., i] for i in range(3))
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return (cb >= cb_range[0]) & (cb <= cb_range[1]) & (cr >= cr_range[0]) & (cr <= cr_range[1])


def specular(rgb: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Specular highlights: all three channels clipped (>= 0.985), or L* >= 95 with chroma C* <= 6.

    Skin is a dielectric: its specular reflection has the light's colour, so a
    highlight is very light and nearly achromatic (the dichromatic reflection
    model, Shafer 1985).  Light skin in bright dermoscopy (PH2) often clips
    its red channel alone and keeps C* near 10: that stays skin.

    >>> from dermretr.color import rgb_to_lab
    >>> px = np.array([[[1.0, 1.0, 1.0], [0.8, 0.6, 0.5]]])
    >>> specular(px, rgb_to_lab(px)).tolist()
    [[True, False]]
    """
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    return (rgb.min(axis=-1) >= CLIPPED) | ((lab[..., 0] >= SPECULAR_L) & (chroma <= SPECULAR_C))


def patch_ita(lab: np.ndarray, skin: np.ndarray, grid: int = 8, min_share: float = 0.5) -> np.ndarray:
    """ITA of each patch of a ``grid`` x ``grid`` tiling that is at least ``min_share`` skin (at least 4 px).

    Each patch's ITA is :func:`dermretr.color.ita` of the median L* and median
    b* of its skin pixels (the patch-wise ITA of Kinyanjui et al. 2020, robust
    to what is left of the lesion, hair and shading in any one patch).

    >>> lab = np.zeros((32, 32, 3)); lab[..., 0], lab[..., 2] = 65.0, 15.0
    >>> vals = patch_ita(lab, np.ones((32, 32), bool), grid=4)
    >>> len(vals), round(float(vals[0]), 1)
    (16, 45.0)
    """
    h, w = skin.shape
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    out = []
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            m = skin[y0:y1, x0:x1]
            n = int(m.sum())
            if n >= max(4, min_share * m.size):
                block = lab[y0:y1, x0:x1][m]
                out.append(float(ita(np.median(block[:, 0]), np.median(block[:, 2]))))
    return np.asarray(out)


def lesion_region(dark: np.ndarray, margin: int) -> np.ndarray:
    """The lesion Otsu found: its dark class without specks (opening), holes filled, grown by ``margin`` px.

    The transition between lesion and skin is neither; growing the lesion
    keeps it out of the skin as a given lesion mask's dilation does.

    >>> dark = np.zeros((32, 32), bool); dark[10:20, 10:20] = True; dark[2, 2] = True
    >>> grown = lesion_region(dark, 2)
    >>> int(grown.sum()), bool(grown[2, 2])
    (172, False)
    """
    from scipy import ndimage

    core = ndimage.binary_opening(dark, iterations=1)
    labels, n = ndimage.label(core)
    if n == 0:
        return core
    sizes = np.bincount(labels.ravel())[1:]
    big = np.flatnonzero(sizes >= max(16, 0.005 * dark.size)) + 1
    region = ndimage.binary_fill_holes(np.isin(labels, big))
    return ndimage.binary_dilation(region, iterations=margin)


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
