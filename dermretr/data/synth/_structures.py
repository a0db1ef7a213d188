"""The lesion of a DermSynth image: its geometry and one drawing function per 7-point structure.

Each function draws one criterion value from its own seeded generator (the same lesion seed gives the same
layout) and returns the structure's alpha layer(s) and its ground-truth mask.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter
from scipy.spatial import cKDTree

from ..._errors import DermretrError
from ._paint import Canvas, dilate, smooth_noise, smoothstep, soften

__all__ = [
    "Geometry",
    "network_layer",
    "blotch_layer",
    "streak_layer",
    "globule_layers",
    "peppering_layer",
    "regression_regions",
    "vessel_layers",
]


class Geometry:
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
        self.alpha = smoothstep(1.0, 1.0 - self.edge, self.t)
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
        field_ = -d + 0.22 * ragged * smooth_noise(rng, self.size, 6) + 0.08 * ragged * smooth_noise(rng, self.size, 14)
        inside = self.t < 0.97
        vals = field_[inside]
        if vals.size == 0:
            return np.zeros_like(self.t, dtype=bool)
        thr = np.quantile(vals, 1.0 - coverage)
        return (field_ >= thr) & inside


# ----------------------------------------------------------------------------- structures


def network_layer(g: Geometry, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    size = g.size
    cell = max(0.085, 9.0 / size)  # normalised cell size, at least ~4.5 px
    box = g.t < 1.05
    ys, xs = np.nonzero(box)
    px = np.c_[g.xx[ys, xs], g.yy[ys, xs]]
    lo, hi = px.min(0) - 2 * cell, px.max(0) + 2 * cell
    if kind == "typical":
        rows = np.arange(lo[1], hi[1], cell * 0.866)
        lattice = [
            (x + (cell / 2 if i % 2 else 0.0), y)
            for i, y in enumerate(rows)
            for x in np.arange(lo[0], hi[0], cell)
        ]
        pts = np.asarray(lattice) + rng.normal(0, 0.08 * cell, (len(lattice), 2))
        width = np.full(len(xs), 0.13 * cell, dtype=np.float32)
        region = g.t < 0.93
        fade = smoothstep(0.98, 0.45, g.t)
        strength = 0.75
    else:
        area = (hi - lo).prod()
        n = int(area / (cell * 1.25) ** 2 * 1.3)
        cand = rng.uniform(lo, hi, (n * 3, 2))
        dens = 0.5 + 0.5 * np.sin(cand[:, 0] * rng.uniform(3, 6)) * np.cos(cand[:, 1] * rng.uniform(3, 6))
        keep = rng.uniform(0, 1, len(cand)) < 0.25 + 0.75 * dens
        pts = cand[keep][:n]
        wn = smooth_noise(rng, size, 7)[ys, xs]
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


def blotch_layer(g: Geometry, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    diffuse = kind.startswith("diffuse")
    regular = kind.endswith(" regular")
    if regular:
        r0 = rng.uniform(0.62, 0.75) if diffuse else rng.uniform(0.28, 0.38)
        region = g.t < r0
        alpha = smoothstep(r0, r0 - 0.12, g.t)
    else:
        cov = rng.uniform(0.5, 0.65) if diffuse else rng.uniform(0.12, 0.2)
        centre = g.point(rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.55))
        region = g.region(rng, cov, centre=centre, ragged=1.8)
        soft = np.asarray(
            Image.fromarray((region * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(g.size / 160)),
            dtype=np.float32,
        ) / 255.0
        alpha = soft * (0.85 + 0.25 * smooth_noise(rng, g.size, 9)).clip(0.5, 1.0)
    return alpha.astype(np.float32), region


def streak_layer(g: Geometry, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    c = Canvas(g.size)
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
    return alpha, dilate(alpha > 0.15, max(1, g.size // 100))


def globule_layers(g: Geometry, rng: np.random.Generator, kind: str):
    c_dark = Canvas(g.size)
    c_blue = Canvas(g.size)
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
    mask = dilate((dark + blue) > 0.2, max(1, g.size // 90))
    return dark, blue, mask


def peppering_layer(g: Geometry, rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    c = Canvas(g.size)
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


def regression_regions(g: Geometry, rng: np.random.Generator, kind: str):
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


def _tree(c: Canvas, rng, x, y, ang, length, width, depth):
    pts = [(x, y)]
    for _ in range(3):
        ang += rng.normal(0, 0.25)
        x, y = x + length / 3 * math.cos(ang), y + length / 3 * math.sin(ang)
        pts.append((x, y))
    c.line(pts, width)
    if depth > 0:
        for side in (-1, 1):
            _tree(c, rng, x, y, ang + side * rng.uniform(0.35, 0.8), length * 0.68, width * 0.62, depth - 1)


def vessel_layers(g: Geometry, rng: np.random.Generator, kind: str, regression: np.ndarray | None):
    red = Canvas(g.size)
    halo: np.ndarray | None = None
    pink: np.ndarray | None = None
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
        halo_canvas = Canvas(g.size)
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
            halo_canvas.line(loop, 0.045)
            red.line(loop, 0.014)
        halo = halo_canvas.array(blur=1.0)
    elif kind == "within regression":
        region = regression if regression is not None and regression.sum() > 20 else g.region(
            rng, rng.uniform(0.2, 0.3), eccentric=0.7
        )
        pink = soften(region, g.size / 120) * 0.55
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
        radii = np.sqrt(k / n) * 0.85
        angles = k * 2.39996 + rng.uniform(0, 2 * np.pi)
        for a_, t_ in zip(angles, radii):
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
    return alpha, halo, pink, dilate(support, max(1, g.size // 110))
