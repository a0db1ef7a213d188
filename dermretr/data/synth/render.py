"""Procedural rendering of one DermSynth dermoscopy image and its ground-truth masks.

Every 7-point criterion value is a visible, distinct pattern:

* pigment network: *typical* is a regular thin honeycomb (Voronoi cells on a
  jittered hexagonal lattice) fading towards the rim; *atypical* is an
  irregular mesh of thick, uneven lines with cells of varying size, covering
  part of the lesion and ending abruptly.
* streaks: *regular* radial lines with bulbous tips all round the rim;
  *irregular* ones of uneven length and angle, clustered in one sector.
* pigmentation (structureless dark blotches): *diffuse* covers most of the
  lesion, *localized* a small part; *regular* is central, round and
  symmetric, *irregular* eccentric and ragged.
* regression: *blue areas* are blue-grey peppering (fine granules), *white
  areas* white scar-like patches, *combinations* both side by side.
* dots and globules: *regular* are round globules of one size spread evenly;
  *irregular* dots of many sizes and colours clustered off centre.
* blue-whitish veil: a confluent, structureless blue-white area with a
  ground-glass haze.
* vascular structures: arborizing (branching trees), comma (short arcs),
  hairpin (loops with a white halo), within regression (fine vessels on a
  pink-white scar), wreath (crown vessels at the rim pointing inwards),
  dotted (small red dots spread evenly), linear irregular (long tortuous
  lines of uneven width).

Skin colour is drawn in CIELAB from the Individual Typology Angle range of
the Fitzpatrick type; lesion contrast falls on darker skin.  Artifacts (hair,
ruler marks, gel bubbles, dark vignette corners, uneven illumination, JPEG
compression) are each switchable through :class:`Artifacts`.

Examples
--------
>>> from dermretr.data.synth.render import LesionSpec, render_case
>>> spec = LesionSpec(lesion_seed=1, image_seed=2, skin_seed=3, diagnosis="melanoma",
...                   fitzpatrick=2, criteria={"blue_whitish_veil": "present"})
>>> out = render_case(spec, size=96)
>>> out.image.shape, out.image.dtype.name, int(out.masks["blue_whitish_veil"].sum()) > 0
((96, 96, 3), 'uint8', True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.spatial import cKDTree

from ..._errors import DermretrError
from ...color import ita as _ita
from ...color import lab_to_rgb
from ..vocab import CRITERION_NAMES, is_malignant, normalize_criteria

__all__ = [
    "Artifacts",
    "LesionSpec",
    "Rendered",
    "render_case",
    "skin_lab",
    "ITA_RANGES",
    "MASK_BITS",
    "encode_masks",
    "decode_masks",
]

#: ITA ranges (degrees) drawn for Fitzpatrick types I..VI, inside the ITA
#: categories very light, light, intermediate, tan, brown and dark.
ITA_RANGES: dict[int, tuple[float, float]] = {
    1: (57.0, 70.0),
    2: (43.0, 53.0),
    3: (30.0, 39.0),
    4: (12.0, 26.0),
    5: (-25.0, 8.0),
    6: (-55.0, -33.0),
}
#: Lesion contrast (fraction of the full pigment contrast) per Fitzpatrick type.
CONTRAST: dict[int, float] = {1: 1.0, 2: 0.93, 3: 0.84, 4: 0.74, 5: 0.62, 6: 0.52}

#: Bit of each ground-truth mask in the 8-bit mask PNG (bit 0 is the lesion).
MASK_BITS: dict[str, int] = {"lesion": 0, **{c: i + 1 for i, c in enumerate(CRITERION_NAMES)}}


@dataclass(frozen=True)
class Artifacts:
    """Which imaging artifacts DermSynth may add; each one is switchable.

    Examples
    --------
    >>> Artifacts.none().hair
    False
    >>> Artifacts.from_names(["hair", "jpeg"]).ruler
    False
    """

    hair: bool = True
    ruler: bool = True
    bubbles: bool = True
    vignette: bool = True
    illumination: bool = True
    jpeg: bool = True

    @classmethod
    def none(cls) -> Artifacts:
        """No artifacts at all (clean images, near-lossless JPEG)."""
        return cls(**{f.name: False for f in fields(cls)})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The artifact names."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_names(cls, names: Iterable[str]) -> Artifacts:
        """Only the named artifacts switched on; unknown names are an error."""
        names = [n.strip() for n in names if n.strip()]
        unknown = sorted(set(names) - set(cls.names()))
        if unknown:
            raise DermretrError(
                f"unknown artifact(s) {unknown}; choose from {', '.join(cls.names())}"
            )
        return cls(**{n: n in names for n in cls.names()})

    def enabled(self) -> list[str]:
        """Names of the artifacts switched on."""
        return [n for n in self.names() if getattr(self, n)]


@dataclass(frozen=True)
class LesionSpec:
    """Everything that determines one rendered case.

    ``lesion_seed`` fixes the lesion's shape and the layout of every structure,
    ``skin_seed`` the patient's skin, ``image_seed`` the artifacts.  Re-rendering
    with one criterion changed and the same seeds gives the same lesion with
    only that structure changed (DermSynth's modification targets).
    """

    lesion_seed: int
    image_seed: int
    skin_seed: int
    diagnosis: str
    fitzpatrick: int
    criteria: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Rendered:
    """A rendered case: RGB image, ground-truth masks, skin colour and ITA."""

    image: np.ndarray
    masks: dict[str, np.ndarray]
    skin_lab: tuple[float, float, float]
    ita: float


# ----------------------------------------------------------------------------- helpers


def _rng(seed: int, layer: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(layer)])


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth zero-mean, unit-variance noise with about ``cells`` blobs across."""
    cells = max(2, int(cells))
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    big = np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.BICUBIC))
    big = big - big.mean()
    return big / (big.std() + 1e-6)


def _blend(img: np.ndarray, alpha: np.ndarray, color) -> None:
    """Alpha-composite ``color`` (RGB triple or HxWx3) onto ``img`` in place."""
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    img *= 1.0 - a
    img += a * np.asarray(color, dtype=np.float32)


def _rgb(lab) -> np.ndarray:
    lab = np.asarray(lab, dtype=np.float64)
    lab[0] = np.clip(lab[0], 3.0, 98.0)
    return lab_to_rgb(lab).astype(np.float32)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class _Canvas:
    """Anti-aliased drawing of lines and ellipses into a float mask (2x supersampled)."""

    def __init__(self, size: int):
        self.size = size
        self.ss = 2
        self.img = Image.new("L", (size * self.ss, size * self.ss), 0)
        self.draw = ImageDraw.Draw(self.img)

    def _px(self, x: float, y: float) -> tuple[float, float]:
        s = self.size * self.ss
        return ((x + 1) * 0.5 * s, (y + 1) * 0.5 * s)

    def _w(self, w: float) -> int:
        return max(1, int(round(w * 0.5 * self.size * self.ss)))

    def line(self, pts, width: float, value: int = 255) -> None:
        px = [self._px(x, y) for x, y in pts]
        w = self._w(width)
        self.draw.line(px, fill=value, width=w, joint="curve")
        r = w / 2
        for cx, cy in (px[0], px[-1]):
            self.draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value)

    def dot(self, x: float, y: float, r: float, value: int = 255) -> None:
        cx, cy = self._px(x, y)
        rr = max(0.75, r * 0.5 * self.size * self.ss)
        self.draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=value)

    def array(self, blur: float = 0.0) -> np.ndarray:
        img = self.img.resize((self.size, self.size), Image.BOX)
        if blur > 0:
            img = img.filter(ImageFilter.GaussianBlur(blur))
        return np.asarray(img, dtype=np.float32) / 255.0


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask
    img = Image.fromarray((mask * 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.MaxFilter(2 * px + 1))) > 127


# ----------------------------------------------------------------------------- skin


def skin_lab(fitzpatrick: int, skin_seed: int) -> tuple[float, float, float]:
    """The patient's skin colour in CIELAB, drawn from the type's ITA range.

    >>> from dermretr.color import ita
    >>> L, a, b = skin_lab(6, 0)
    >>> -55 <= float(ita(L, b)) <= -33
    True
    """
    if fitzpatrick not in ITA_RANGES:
        raise DermretrError(f"Fitzpatrick type must be 1..6, got {fitzpatrick!r}")
    rng = _rng(skin_seed, 0)
    lo, hi = ITA_RANGES[fitzpatrick]
    angle = math.radians(rng.uniform(lo, hi))
    b = rng.uniform(13.0, 21.0)
    L = 50.0 + b * math.tan(angle)
    a = rng.uniform(7.0, 13.0) if fitzpatrick <= 4 else rng.uniform(8.0, 12.0)
    return (float(L), float(a), float(b))


# ----------------------------------------------------------------------------- geometry


class _Geometry:
    """Lesion geometry in normalised coordinates (the image spans [-1, 1])."""

    def __init__(self, size: int, rng: np.random.Generator, malignant: bool):
        self.size = size
        lin = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        self.yy, self.xx = np.meshgrid(lin, lin, indexing="ij")
        self.cx, self.cy = rng.uniform(-0.08, 0.08, 2)
        self.R = rng.uniform(0.45, 0.62)
        amp = 0.22 if malignant else 0.07
        self.harm = [(k, rng.uniform(0, amp) / (k - 1), rng.uniform(0, 2 * np.pi)) for k in range(2, 7)]
        dx, dy = self.xx - self.cx, self.yy - self.cy
        self.rho = np.hypot(dx, dy)
        self.theta = np.arctan2(dy, dx)
        self.t = self.rho / self.radius(self.theta)
        self.edge = rng.uniform(0.04, 0.10) if malignant else rng.uniform(0.08, 0.16)
        self.alpha = _smoothstep(1.0, 1.0 - self.edge, self.t)
        self.mask = self.t < 1.0

    def radius(self, theta):
        r = 1.0
        for k, a, ph in self.harm:
            r = r + a * np.cos(k * theta + ph)
        return self.R * r

    def t_at(self, x: float, y: float) -> float:
        """Relative radius (0 centre, 1 rim) of a point."""
        dx, dy = x - self.cx, y - self.cy
        return math.hypot(dx, dy) / float(self.radius(math.atan2(dy, dx)))

    def point(self, theta: float, t: float) -> tuple[float, float]:
        r = float(self.radius(theta)) * t
        return (self.cx + r * math.cos(theta), self.cy + r * math.sin(theta))

    def region(self, rng: np.random.Generator, coverage: float, eccentric: float = 0.6,
               ragged: float = 1.0, centre: tuple[float, float] | None = None) -> np.ndarray:
        """An irregular sub-region of the lesion covering about ``coverage`` of it."""
        if centre is None:
            ang = rng.uniform(0, 2 * np.pi)
            centre = self.point(ang, rng.uniform(0, eccentric))
        d = np.hypot(self.xx - centre[0], self.yy - centre[1]) / self.R
        field_ = -d + 0.22 * ragged * _noise(rng, self.size, 6) + 0.08 * ragged * _noise(rng, self.size, 14)
        inside = self.t < 0.97
        vals = field_[inside]
        if vals.size == 0:
            return np.zeros_like(self.t, dtype=bool)
        thr = np.quantile(vals, 1.0 - coverage)
        return (field_ >= thr) & inside


# ----------------------------------------------------------------------------- structures


def _network(g: _Geometry, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    size = g.size
    cell = max(0.085, 9.0 / size)  # normalised cell size, at least ~4.5 px
    box = g.t < 1.05
    ys, xs = np.nonzero(box)
    px = np.c_[g.xx[ys, xs], g.yy[ys, xs]]
    lo, hi = px.min(0) - 2 * cell, px.max(0) + 2 * cell
    if kind == "typical":
        rows = np.arange(lo[1], hi[1], cell * 0.866)
        pts = [
            (x + (cell / 2 if i % 2 else 0.0), y)
            for i, y in enumerate(rows)
            for x in np.arange(lo[0], hi[0], cell)
        ]
        pts = np.asarray(pts) + rng.normal(0, 0.08 * cell, (len(pts), 2))
        width = np.full(len(xs), 0.13 * cell, dtype=np.float32)
        region = g.t < 0.93
        fade = _smoothstep(0.98, 0.45, g.t)
        strength = 0.75
    else:
        area = (hi - lo).prod()
        n = int(area / (cell * 1.25) ** 2 * 1.3)
        cand = rng.uniform(lo, hi, (n * 3, 2))
        dens = 0.5 + 0.5 * np.sin(cand[:, 0] * rng.uniform(3, 6)) * np.cos(cand[:, 1] * rng.uniform(3, 6))
        keep = rng.uniform(0, 1, len(cand)) < 0.25 + 0.75 * dens
        pts = cand[keep][:n]
        wn = _noise(rng, size, 7)[ys, xs]
        width = (0.26 + 0.10 * wn).clip(0.14, 0.42).astype(np.float32) * cell
        region = g.region(rng, rng.uniform(0.55, 0.8), eccentric=0.5)
        fade = np.ones_like(g.t)
        strength = 0.95
    d, _ = cKDTree(pts).query(px, k=2)
    edge = (d[:, 1] - d[:, 0]) * 0.5
    line = np.zeros_like(g.t)
    line[ys, xs] = np.exp(-((edge / width) ** 2))
    alpha = line * fade * region * strength
    return alpha.astype(np.float32), region


def _blotch(g: _Geometry, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    diffuse = kind.startswith("diffuse")
    regular = kind.endswith(" regular")
    if regular:
        r0 = rng.uniform(0.62, 0.75) if diffuse else rng.uniform(0.28, 0.38)
        region = g.t < r0
        alpha = _smoothstep(r0, r0 - 0.12, g.t)
    else:
        cov = rng.uniform(0.5, 0.65) if diffuse else rng.uniform(0.12, 0.2)
        centre = g.point(rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.55))
        region = g.region(rng, cov, centre=centre, ragged=1.8)
        soft = np.asarray(
            Image.fromarray((region * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(g.size / 160)),
            dtype=np.float32,
        ) / 255.0
        alpha = soft * (0.85 + 0.25 * _noise(rng, g.size, 9)).clip(0.5, 1.0)
    return alpha.astype(np.float32), region


def _streaks(g: _Geometry, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    c = _Canvas(g.size)
    if kind == "regular":
        n = int(rng.integers(16, 26))
        angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
        angles += rng.normal(0, 0.04, n)
        lengths = rng.uniform(0.24, 0.30, n)
        widths = np.full(n, 0.022)
        bends = np.zeros(n)
    else:
        n = int(rng.integers(5, 10))
        centre = rng.uniform(0, 2 * np.pi)
        angles = centre + rng.uniform(-0.9, 0.9, n)
        lengths = rng.uniform(0.12, 0.42, n)
        widths = rng.uniform(0.016, 0.034, n)
        bends = rng.normal(0, 0.35, n)
    for ang, ln, w, bend in zip(angles, lengths, widths, bends):
        pts = []
        for s in np.linspace(0, 1, 5):
            t = 0.82 + ln * s
            pts.append(g.point(ang + bend * s * 0.25, t))
        c.line(pts, w)
        tip = pts[-1]
        c.dot(tip[0], tip[1], w * 0.85)
    alpha = c.array(blur=0.4)
    return alpha, _dilate(alpha > 0.15, max(1, g.size // 100))


def _globules(g: _Geometry, rng: np.random.Generator, kind: str):
    c_dark = _Canvas(g.size)
    c_blue = _Canvas(g.size)
    if kind == "regular":
        n = int(rng.integers(14, 26))
        r = rng.uniform(0.024, 0.030)
        # evenly spread: golden-angle spiral inside t < 0.75
        k = np.arange(n) + 0.5
        rad = np.sqrt(k / n) * 0.72
        ang = k * 2.39996 + rng.uniform(0, 2 * np.pi)
        for a_, t_ in zip(ang, rad):
            x, y = g.point(a_, t_ + rng.normal(0, 0.015))
            c_dark.dot(x, y, r * rng.uniform(0.95, 1.05))
    else:
        n = int(rng.integers(22, 40))
        centre_ang = rng.uniform(0, 2 * np.pi)
        cx, cy = g.point(centre_ang, rng.uniform(0.4, 0.65))
        for i in range(n):
            if i < n * 0.75:
                for _ in range(10):  # keep the cluster inside the lesion
                    x, y = cx + rng.normal(0, 0.14 * g.R), cy + rng.normal(0, 0.14 * g.R)
                    if g.t_at(x, y) < 0.85:
                        break
                else:
                    x, y = cx, cy
            else:
                x, y = g.point(rng.uniform(0, 2 * np.pi), rng.uniform(0.72, 0.88))
            r = float(np.clip(rng.lognormal(np.log(0.018), 0.5), 0.009, 0.045))
            (c_blue if rng.uniform() < 0.3 else c_dark).dot(x, y, r)
    dark, blue = c_dark.array(blur=0.3), c_blue.array(blur=0.3)
    mask = _dilate((dark + blue) > 0.2, max(1, g.size // 90))
    return dark, blue, mask


def _peppering(g: _Geometry, rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    c = _Canvas(g.size)
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return c.array()
    n = int(min(400, max(30, len(ys) * 0.05 * (96 / g.size) ** 2 * 4)))
    idx = rng.integers(0, len(ys), n)
    jit = rng.uniform(-0.5, 0.5, (n, 2))
    for (y, x), (jy, jx) in zip(zip(ys[idx], xs[idx]), jit):
        xn = (x + 0.5 + jx) / g.size * 2 - 1
        yn = (y + 0.5 + jy) / g.size * 2 - 1
        c.dot(xn, yn, rng.uniform(0.006, 0.011))
    return c.array()


def _soft(region: np.ndarray, radius: float) -> np.ndarray:
    img = Image.fromarray((region * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(img, dtype=np.float32) / 255.0


def _regression_regions(g: _Geometry, rng: np.random.Generator, kind: str):
    blue = white = None
    if kind in ("blue areas", "combinations"):
        blue = g.region(rng, rng.uniform(0.2, 0.32), eccentric=0.7)
    if kind in ("white areas", "combinations"):
        white = g.region(rng, rng.uniform(0.16, 0.26), eccentric=0.7)
        if blue is not None:
            white &= ~blue
            if white.sum() < 0.05 * g.mask.sum():  # keep the two parts side by side
                white = g.region(rng, 0.3, eccentric=0.7) & ~blue
    return blue, white


def _tree(c: _Canvas, rng, x, y, ang, length, width, depth):
    pts = [(x, y)]
    for _ in range(3):
        ang += rng.normal(0, 0.25)
        x, y = x + length / 3 * math.cos(ang), y + length / 3 * math.sin(ang)
        pts.append((x, y))
    c.line(pts, width)
    if depth > 0:
        for side in (-1, 1):
            _tree(c, rng, x, y, ang + side * rng.uniform(0.35, 0.8), length * 0.68, width * 0.62, depth - 1)


def _vessels(g: _Geometry, rng: np.random.Generator, kind: str, regression: np.ndarray | None):
    red = _Canvas(g.size)
    halo = None
    pink = None
    R = g.R
    if kind == "arborizing":
        for _ in range(int(rng.integers(2, 4))):
            x, y = g.point(rng.uniform(0, 2 * np.pi), rng.uniform(0.55, 0.8))
            ang = math.atan2(g.cy - y, g.cx - x) + rng.normal(0, 0.4)
            _tree(red, rng, x, y, ang, 0.30 * R, 0.028, 3)
    elif kind == "comma":
        for _ in range(int(rng.integers(10, 20))):
            x, y = g.point(rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.75)))
            rad = rng.uniform(0.03, 0.05)
            a0 = rng.uniform(0, 2 * np.pi)
            arc = [(x + rad * math.cos(a0 + s), y + rad * math.sin(a0 + s)) for s in np.linspace(0, 1.9, 6)]
            red.line(arc, 0.018)
    elif kind == "hairpin":
        halo = _Canvas(g.size)
        for _ in range(int(rng.integers(6, 13))):
            x, y = g.point(rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.7)))
            a = rng.uniform(0, 2 * np.pi)
            ln, gap = rng.uniform(0.07, 0.11), 0.022
            ux, uy = math.cos(a), math.sin(a)
            vx, vy = -uy * gap, ux * gap
            loop = [(x + vx, y + vy), (x + vx + ln * ux, y + vy + ln * uy)]
            loop += [
                (x + ln * ux + gap * math.cos(a + math.pi / 2 - s), y + ln * uy + gap * math.sin(a + math.pi / 2 - s))
                for s in np.linspace(0, math.pi, 6)
            ]
            loop += [(x - vx, y - vy)]
            halo.line(loop, 0.045)
            red.line(loop, 0.014)
        halo = halo.array(blur=1.0)
    elif kind == "within regression":
        region = regression if regression is not None and regression.sum() > 20 else g.region(
            rng, rng.uniform(0.2, 0.3), eccentric=0.7
        )
        pink = _soft(region, g.size / 120) * 0.55
        ys, xs = np.nonzero(region)
        for _ in range(int(rng.integers(14, 26))):
            i = rng.integers(0, len(ys))
            x = (xs[i] + 0.5) / g.size * 2 - 1
            y = (ys[i] + 0.5) / g.size * 2 - 1
            a = rng.uniform(0, 2 * np.pi)
            ln = rng.uniform(0.025, 0.05)
            red.line([(x, y), (x + ln * math.cos(a), y + ln * math.sin(a))], 0.011)
    elif kind == "wreath":
        n = int(rng.integers(10, 16))
        for ang in np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi):
            pts = [g.point(ang + 0.12 * math.sin(s * 3), 1.0 - 0.3 * s) for s in np.linspace(0, 1, 5)]
            red.line(pts, 0.018)
            bx, by = pts[2]
            red.line([(bx, by), g.point(ang + 0.18, 0.78)], 0.011)
    elif kind == "dotted":
        n = int(rng.integers(40, 80))
        k = np.arange(n) + 0.5
        rad = np.sqrt(k / n) * 0.85
        ang = k * 2.39996 + rng.uniform(0, 2 * np.pi)
        for a_, t_ in zip(ang, rad):
            x, y = g.point(a_, t_)
            red.dot(x + rng.normal(0, 0.01), y + rng.normal(0, 0.01), rng.uniform(0.015, 0.019))
    elif kind == "linear irregular":
        for _ in range(int(rng.integers(3, 6))):
            x, y = g.point(rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.6)))
            a = rng.uniform(0, 2 * np.pi)
            pts = [(x, y)]
            for _ in range(int(rng.integers(8, 14))):
                a += rng.normal(0, 0.7)
                step = rng.uniform(0.04, 0.07)
                x, y = x + step * math.cos(a), y + step * math.sin(a)
                pts.append((x, y))
            red.line(pts, rng.uniform(0.011, 0.02))
    else:  # pragma: no cover - guarded by the vocabulary
        raise DermretrError(f"unknown vascular structure {kind!r}")
    alpha = red.array(blur=0.35)
    support = alpha > 0.15
    if pink is not None:
        support |= pink > 0.2
    if halo is not None:
        support |= halo > 0.2
    return alpha, halo, pink, _dilate(support, max(1, g.size // 110))


# ----------------------------------------------------------------------------- artifacts


def _add_artifacts(img: np.ndarray, g: _Geometry, rng: np.random.Generator, art: Artifacts) -> None:
    size = g.size
    if art.illumination:
        phi = rng.uniform(0, 2 * np.pi)
        grad = 1 + rng.uniform(0.04, 0.14) * (g.xx * math.cos(phi) + g.yy * math.sin(phi))
        img *= grad[..., None]
    if art.hair and rng.uniform() < 0.6:
        c = _Canvas(size)
        for _ in range(int(rng.integers(1, 9))):
            p0 = rng.uniform(-1.2, 1.2, 2)
            p2 = rng.uniform(-1.2, 1.2, 2)
            p1 = (p0 + p2) / 2 + rng.normal(0, 0.3, 2)
            s = np.linspace(0, 1, 12)[:, None]
            pts = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2
            c.line([tuple(p) for p in pts], rng.uniform(0.007, 0.013))
        _blend(img, c.array(blur=0.3) * 0.9, _rgb([rng.uniform(12, 22), 3.0, 6.0]))
    if art.ruler and rng.uniform() < 0.25:
        c = _Canvas(size)
        side = int(rng.integers(0, 4))
        for i, s in enumerate(np.arange(-0.9, 0.9, 0.06)):
            ln = 0.09 if i % 5 == 0 else 0.05
            a, b = (-0.97, -0.97 + ln)
            seg = [(s, a), (s, b)] if side % 2 == 0 else [(a, s), (b, s)]
            if side >= 2:
                seg = [(-x, -y) for x, y in seg]
            c.line(seg, 0.008)
        _blend(img, c.array() * 0.85, (0.08, 0.08, 0.08))
    if art.bubbles and rng.uniform() < 0.3:
        rim, hi = _Canvas(size), _Canvas(size)
        for _ in range(int(rng.integers(1, 5))):
            x, y = rng.uniform(-0.85, 0.85, 2)
            r = rng.uniform(0.03, 0.11)
            ring = [(x + r * math.cos(a), y + r * math.sin(a)) for a in np.linspace(0, 2 * np.pi, 24)]
            rim.line(ring, 0.006)
            hi.dot(x - r * 0.35, y - r * 0.35, r * 0.22)
        _blend(img, rim.array(blur=0.3) * 0.55, (0.97, 0.97, 0.97))
        _blend(img, hi.array(blur=0.8) * 0.7, (1.0, 1.0, 1.0))
    if art.vignette and rng.uniform() < 0.5:
        rv = rng.uniform(1.0, 1.3)
        rr = np.hypot(g.xx, g.yy)
        img *= (1 - _smoothstep(rv - 0.06, rv + 0.02, rr))[..., None]


# ----------------------------------------------------------------------------- main


def render_case(spec: LesionSpec, size: int = 224, artifacts: Artifacts | None = None) -> Rendered:
    """Render one DermSynth case.

    Parameters
    ----------
    spec : LesionSpec
        Seeds, diagnosis, skin type and criteria (missing criteria are absent).
    size : int
        Image side in pixels (>= 64).
    artifacts : Artifacts, optional
        Which artifacts may appear (default: all).

    Returns
    -------
    Rendered
        ``image`` (uint8, size x size x 3), ``masks`` (bool, one per criterion
        plus ``"lesion"``; empty for absent criteria), ``skin_lab`` and ``ita``.

    Examples
    --------
    >>> spec = LesionSpec(1, 2, 3, "basal cell carcinoma", 5, {"vascular_structures": "arborizing"})
    >>> r = render_case(spec, size=64, artifacts=Artifacts.none())
    >>> bool(r.masks["vascular_structures"].any()), bool(r.masks["streaks"].any())
    (True, False)
    """
    if size < 64:
        raise DermretrError(f"image size must be at least 64 px, got {size}")
    if spec.fitzpatrick not in CONTRAST:
        raise DermretrError(f"Fitzpatrick type must be 1..6, got {spec.fitzpatrick!r}")
    art = artifacts if artifacts is not None else Artifacts()
    crit = normalize_criteria(spec.criteria)
    malignant = is_malignant(spec.diagnosis)
    k = CONTRAST[spec.fitzpatrick]
    L, a, b = skin_lab(spec.fitzpatrick, spec.skin_seed)
    # --- skin with texture and skin lines
    g = _Geometry(size, _rng(spec.lesion_seed, 1), malignant)
    srng = _rng(spec.skin_seed, 1 + spec.lesion_seed % 997)
    skin = _rgb([L, a, b])
    tex = 1 + 0.025 * _noise(srng, size, 7) + 0.012 * srng.standard_normal((size, size)).astype(np.float32)
    phi = srng.uniform(0, np.pi)
    u = g.xx * math.cos(phi) + g.yy * math.sin(phi)
    lines = np.exp(-(((u * srng.uniform(9, 14)) % 1.0 - 0.5) / 0.06) ** 2) * (0.5 + 0.5 * _noise(srng, size, 4)).clip(0, 1)
    tex -= 0.03 * lines
    img = skin[None, None, :] * tex[..., None]
    img = img.astype(np.float32)

    # --- lesion body, coloured by diagnosis
    lrng = _rng(spec.lesion_seed, 2)
    base_delta = {
        "vascular lesion": (-20 * k, 30.0, -2.0),
        "blue nevus": (-28 * k, -a + 1.0, -b - 10.0),
        "seborrheic keratosis": (-16 * k, 5.0, 16.0),
        "basal cell carcinoma": (-10 * k, 10.0, -4.0),
    }.get(spec.diagnosis, (-22 * k, 7.0, 12.0))
    base = _rgb([L + base_delta[0], a + base_delta[1], b + base_delta[2]])
    dark = _rgb([L + base_delta[0] - 22 * k, a + base_delta[1] * 0.6, b + base_delta[2] * 0.5])
    body_alpha = 0.55 if crit["pigmentation"] == "absent" else 0.75
    body_alpha *= 1 + 0.06 * _noise(lrng, size, 8)
    _blend(img, g.alpha * body_alpha, base)
    masks: dict[str, np.ndarray] = {"lesion": g.mask}
    empty = np.zeros((size, size), dtype=bool)
    for c in CRITERION_NAMES:
        masks[c] = empty

    # --- pigmentation (structureless blotches)
    if crit["pigmentation"] != "absent":
        alpha, region = _blotch(g, _rng(spec.lesion_seed, 10), crit["pigmentation"])
        _blend(img, alpha * 0.85 * g.alpha, dark)
        masks["pigmentation"] = region & g.mask
    # --- pigment network
    if crit["pigment_network"] != "absent":
        alpha, region = _network(g, _rng(spec.lesion_seed, 11), crit["pigment_network"])
        col = _rgb([L - 40 * k, a + 4, b + 6]) if crit["pigment_network"] == "atypical" else _rgb(
            [L - 30 * k, a + 6, b + 10]
        )
        _blend(img, alpha, col)
        masks["pigment_network"] = region & g.mask
    # --- streaks
    if crit["streaks"] != "absent":
        alpha, mask = _streaks(g, _rng(spec.lesion_seed, 13), crit["streaks"])
        _blend(img, alpha * 0.92, _rgb([L - 36 * k, a + 6, b + 8]))
        masks["streaks"] = mask
    # --- regression
    blue_reg = white_reg = None
    if crit["regression_structures"] != "absent":
        rrng = _rng(spec.lesion_seed, 14)
        blue_reg, white_reg = _regression_regions(g, rrng, crit["regression_structures"])
        region = np.zeros_like(g.mask)
        if white_reg is not None:
            _blend(img, _soft(white_reg, size / 150) * 0.82, _rgb([min(96.0, L + 28), 3.0, 4.0]))
            region |= white_reg
        if blue_reg is not None:
            _blend(img, _soft(blue_reg, size / 150) * 0.25, _rgb([L - 18 * k, -2.0, -10.0]))
            pep = _peppering(g, rrng, blue_reg)
            _blend(img, pep * 0.9, _rgb([L - 30 * k - 6, -2.0, -14.0]))
            region |= blue_reg
        masks["regression_structures"] = region
    # --- blue-whitish veil
    if crit["blue_whitish_veil"] == "present":
        vrng = _rng(spec.lesion_seed, 15)
        region = g.region(vrng, vrng.uniform(0.25, 0.4), eccentric=0.45, ragged=0.8)
        soft = _soft(region, size / 110)
        veil_L = max(34.0, min(58.0, L - 20 * k))
        _blend(img, soft * 0.85, _rgb([veil_L, -3.0, -22.0]))
        _blend(img, soft * (0.22 + 0.05 * _noise(vrng, size, 10)), (0.92, 0.94, 0.97))
        masks["blue_whitish_veil"] = region
    # --- dots and globules: drawn above the structureless areas (blotch, regression, veil) so that
    # they are not hidden, darker than any blotch, with a faint light rim for contrast
    if crit["dots_and_globules"] != "absent":
        dk, bl, mask = _globules(g, _rng(spec.lesion_seed, 12), crit["dots_and_globules"])
        rim = _soft((dk + bl) > 0.2, size / 90) - np.clip(dk + bl, 0, 1)
        _blend(img, np.clip(rim, 0, 1) * 0.35, _rgb([min(90.0, L + 6), a, b]))
        _blend(img, dk, _rgb([max(6.0, L - 55 * k), a + 4, b + 4]))
        _blend(img, bl * 0.95, _rgb([max(20.0, L - 30 * k), -4.0, -24.0]))
        masks["dots_and_globules"] = mask
    # --- vessels
    if crit["vascular_structures"] != "absent":
        reg = None
        if white_reg is not None:
            reg = white_reg
        elif blue_reg is not None:
            reg = blue_reg
        alpha, halo, pink, mask = _vessels(g, _rng(spec.lesion_seed, 16), crit["vascular_structures"], reg)
        kv = 0.65 + 0.35 * k
        if pink is not None:
            _blend(img, pink, _rgb([min(92.0, L + 22), 22.0, 6.0]))
        if halo is not None:
            _blend(img, halo * 0.55, _rgb([min(94.0, L + 25), 4.0, 4.0]))
        _blend(img, alpha * kv, _rgb([max(35.0, min(50.0, L - 14)), 62.0, 32.0]))
        masks["vascular_structures"] = mask

    _add_artifacts(img, g, _rng(spec.image_seed, 3), art)
    out = (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return Rendered(image=out, masks=masks, skin_lab=(L, a, b), ita=float(_ita(L, b)))


def encode_masks(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Pack the lesion and criterion masks into one uint8 image (one bit each).

    >>> m = {"lesion": np.ones((2, 2), bool), "streaks": np.eye(2, dtype=bool)}
    >>> encode_masks(m).tolist()
    [[5, 1], [1, 5]]
    """
    out = None
    for name, mask in masks.items():
        bits = np.asarray(mask, dtype=np.uint8) << MASK_BITS[name]
        out = bits if out is None else out | bits
    return out


def decode_masks(packed: np.ndarray) -> dict[str, np.ndarray]:
    """Unpack :func:`encode_masks` output into boolean masks.

    >>> decode_masks(np.array([[5]], np.uint8))["streaks"].tolist()
    [[True]]
    """
    packed = np.asarray(packed, dtype=np.uint8)
    return {name: (packed >> bit) & 1 == 1 for name, bit in MASK_BITS.items()}
