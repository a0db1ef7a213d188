"""The drawing primitives of DermSynth's renderer: seeded generators, smooth noise, colour and anti-aliased strokes.

Every layer of an image is drawn as a float alpha mask (a :class:`Canvas`, or a soft region) and composited
onto the RGB float image with :func:`blend`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ...color import lab_to_rgb

__all__ = ["layer_rng", "smooth_noise", "blend", "lab_rgb", "smoothstep", "Canvas", "dilate", "soften"]


def layer_rng(seed: int, layer: int) -> np.random.Generator:
    """The generator of one layer of a case: a seed (lesion, skin or image) and the layer's number."""
    return np.random.default_rng([int(seed), int(layer)])


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth zero-mean, unit-variance noise with about ``cells`` blobs across."""
    cells = max(2, int(cells))
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    big = np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    big = big - big.mean()
    return big / (big.std() + 1e-6)


def blend(img: np.ndarray, alpha: np.ndarray, color) -> None:
    """Alpha-composite ``color`` (RGB triple or HxWx3) onto ``img`` in place."""
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    img *= 1.0 - a
    img += a * np.asarray(color, dtype=np.float32)


def lab_rgb(lab) -> np.ndarray:
    """An RGB float triple of a CIELAB colour, its lightness kept in [3, 98]."""
    lab = np.asarray(lab, dtype=np.float64)
    lab[0] = np.clip(lab[0], 3.0, 98.0)
    return lab_to_rgb(lab).astype(np.float32)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """The smooth 0 -> 1 ramp of ``x`` from ``e0`` to ``e1`` (``e1 < e0`` ramps down)."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class Canvas:
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
        img = self.img.resize((self.size, self.size), Image.Resampling.BOX)
        if blur > 0:
            img = img.filter(ImageFilter.GaussianBlur(blur))
        return np.asarray(img, dtype=np.float32) / 255.0


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """A boolean mask grown by ``px`` pixels (square max filter)."""
    if px <= 0:
        return mask
    img = Image.fromarray((mask * 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.MaxFilter(2 * px + 1))) > 127


def soften(region: np.ndarray, radius: float) -> np.ndarray:
    """A boolean region as a float alpha in [0, 1] with a Gaussian-blurred edge."""
    img = Image.fromarray((region * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(img, dtype=np.float32) / 255.0
