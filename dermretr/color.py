"""Colour conversions (sRGB <-> CIELAB, D65) and the Individual Typology Angle.

Small, vectorised numpy functions; images are float arrays in [0, 1] with the
channels last.

Examples
--------
>>> import numpy as np
>>> from dermretr.color import lab_to_rgb, rgb_to_lab, ita
>>> lab = np.array([70.0, 10.0, 15.0])
>>> bool(np.allclose(rgb_to_lab(lab_to_rgb(lab)), lab, atol=1e-3))
True
>>> round(float(ita(70.0, 15.0)), 1)
53.1
"""

from __future__ import annotations

import numpy as np

__all__ = ["rgb_to_lab", "lab_to_rgb", "srgb_to_linear", "linear_to_srgb", "ita", "ITA_CATEGORIES", "ita_category"]

_WHITE = np.array([0.95047, 1.0, 1.08883])
_M_RGB2XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375],
     [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)
_M_XYZ2RGB = np.linalg.inv(_M_RGB2XYZ)
_EPS = 216 / 24389
_KAPPA = 24389 / 27


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve: gamma-encoded values in [0, 1] to linear light.

    >>> round(float(srgb_to_linear(np.array(0.5))), 4)
    0.214
    """
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Apply the sRGB transfer curve: linear light (negative values clipped to 0) to gamma-encoded values.

    >>> round(float(linear_to_srgb(srgb_to_linear(np.array(0.5)))), 6)
    0.5
    """
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, None)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB in [0, 1] (channels last) to CIELAB (L* in 0..100).

    >>> (rgb_to_lab(np.array([1.0, 1.0, 1.0])).round(2) + 0.0).tolist()
    [100.0, 0.0, 0.0]
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    xyz = srgb_to_linear(rgb) @ _M_RGB2XYZ.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Convert CIELAB (channels last) to sRGB in [0, 1] (out-of-gamut values clipped).

    >>> lab_to_rgb(np.array([0.0, 0.0, 0.0])).tolist()
    [0.0, 0.0, 0.0]
    """
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _WHITE
    return np.clip(linear_to_srgb(xyz @ _M_XYZ2RGB.T), 0.0, 1.0)


def ita(L: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Individual Typology Angle in degrees: ``arctan((L* - 50) / b*) * 180 / pi``, in [-90, 90].

    The definition (Chardon et al. 1991) is an arctangent of a ratio, so the angle lies in
    (-90, 90) whatever the sign of b*: a bluish pixel (b* < 0) does not wrap round to angles beyond
    90 degrees as ``arctan2`` would (it gave -144 to 180 on real images).  At b* = 0 the ratio is
    not defined; the angle is the limit from skin's side (b* > 0): +90 above L* = 50, -90 below it,
    and 0 at L* = 50 exactly.

    >>> float(ita(50.0, 20.0)), float(ita(70.0, 20.0)) == float(np.degrees(np.arctan(1.0)))
    (0.0, True)
    >>> ita(np.array([70.0, 30.0, 50.0, 70.0]), np.array([0.0, 0.0, 0.0, -20.0])).tolist()
    [90.0, -90.0, 0.0, -45.0]
    """
    L = np.asarray(L, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dl = L - 50.0
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.degrees(np.arctan(dl / b))
    return np.where(b == 0, 90.0 * np.sign(dl), angle)


#: ITA skin-tone categories (Chardon et al. 1991) as (name, lower bound, upper bound) in degrees.
ITA_CATEGORIES: tuple[tuple[str, float, float], ...] = (
    ("very light", 55.0, 90.0),
    ("light", 41.0, 55.0),
    ("intermediate", 28.0, 41.0),
    ("tan", 10.0, 28.0),
    ("brown", -30.0, 10.0),
    ("dark", -90.0, -30.0),
)


def ita_category(angle: float) -> str:
    """Name of the ITA category containing ``angle`` (degrees).

    >>> ita_category(60.0), ita_category(-45.0)
    ('very light', 'dark')
    """
    for name, lo, hi in ITA_CATEGORIES:
        if angle > lo:
            return name
    return ITA_CATEGORIES[-1][0]
