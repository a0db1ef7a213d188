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

from ..._errors import DermretrError
from ...color import ita as _ita
from ..vocab import CRITERION_NAMES, is_malignant, normalize_criteria
from ._paint import Canvas, blend, lab_rgb, layer_rng, smooth_noise, smoothstep, soften
from ._structures import (
    Geometry,
    blotch_layer,
    globule_layers,
    network_layer,
    peppering_layer,
    regression_regions,
    streak_layer,
    vessel_layers,
)

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
    rng = layer_rng(skin_seed, 0)
    lo, hi = ITA_RANGES[fitzpatrick]
    angle = math.radians(rng.uniform(lo, hi))
    b = rng.uniform(13.0, 21.0)
    L = 50.0 + b * math.tan(angle)
    a = rng.uniform(7.0, 13.0) if fitzpatrick <= 4 else rng.uniform(8.0, 12.0)
    return (float(L), float(a), float(b))


# ----------------------------------------------------------------------------- artifacts


def _add_artifacts(img: np.ndarray, g: Geometry, rng: np.random.Generator, art: Artifacts) -> None:
    size = g.size
    if art.illumination:
        phi = rng.uniform(0, 2 * np.pi)
        grad = 1 + rng.uniform(0.04, 0.14) * (g.xx * math.cos(phi) + g.yy * math.sin(phi))
        img *= grad[..., None]
    if art.hair and rng.uniform() < 0.6:
        c = Canvas(size)
        for _ in range(int(rng.integers(1, 9))):
            p0 = rng.uniform(-1.2, 1.2, 2)
            p2 = rng.uniform(-1.2, 1.2, 2)
            p1 = (p0 + p2) / 2 + rng.normal(0, 0.3, 2)
            s = np.linspace(0, 1, 12)[:, None]
            pts = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2
            c.line([tuple(p) for p in pts], rng.uniform(0.007, 0.013))
        blend(img, c.array(blur=0.3) * 0.9, lab_rgb([rng.uniform(12, 22), 3.0, 6.0]))
    if art.ruler and rng.uniform() < 0.25:
        c = Canvas(size)
        side = int(rng.integers(0, 4))
        for i, tick in enumerate(np.arange(-0.9, 0.9, 0.06)):
            ln = 0.09 if i % 5 == 0 else 0.05
            a, b = (-0.97, -0.97 + ln)
            seg = [(tick, a), (tick, b)] if side % 2 == 0 else [(a, tick), (b, tick)]
            if side >= 2:
                seg = [(-x, -y) for x, y in seg]
            c.line(seg, 0.008)
        blend(img, c.array() * 0.85, (0.08, 0.08, 0.08))
    if art.bubbles and rng.uniform() < 0.3:
        rim, hi = Canvas(size), Canvas(size)
        for _ in range(int(rng.integers(1, 5))):
            x, y = rng.uniform(-0.85, 0.85, 2)
            r = rng.uniform(0.03, 0.11)
            ring = [(x + r * math.cos(a), y + r * math.sin(a)) for a in np.linspace(0, 2 * np.pi, 24)]
            rim.line(ring, 0.006)
            hi.dot(x - r * 0.35, y - r * 0.35, r * 0.22)
        blend(img, rim.array(blur=0.3) * 0.55, (0.97, 0.97, 0.97))
        blend(img, hi.array(blur=0.8) * 0.7, (1.0, 1.0, 1.0))
    if art.vignette and rng.uniform() < 0.5:
        rv = rng.uniform(1.0, 1.3)
        rr = np.hypot(g.xx, g.yy)
        img *= (1 - smoothstep(rv - 0.06, rv + 0.02, rr))[..., None]


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
    g = Geometry(size, layer_rng(spec.lesion_seed, 1), malignant)
    srng = layer_rng(spec.skin_seed, 1 + spec.lesion_seed % 997)
    skin = lab_rgb([L, a, b])
    tex = 1 + 0.025 * smooth_noise(srng, size, 7) + 0.012 * srng.standard_normal((size, size)).astype(np.float32)
    phi = srng.uniform(0, np.pi)
    u = g.xx * math.cos(phi) + g.yy * math.sin(phi)
    lines = (np.exp(-(((u * srng.uniform(9, 14)) % 1.0 - 0.5) / 0.06) ** 2)
             * (0.5 + 0.5 * smooth_noise(srng, size, 4)).clip(0, 1))
    tex -= 0.03 * lines
    img = skin[None, None, :] * tex[..., None]
    img = img.astype(np.float32)

    # --- lesion body, coloured by diagnosis
    lrng = layer_rng(spec.lesion_seed, 2)
    base_delta = {
        "vascular lesion": (-20 * k, 30.0, -2.0),
        "blue nevus": (-28 * k, -a + 1.0, -b - 10.0),
        "seborrheic keratosis": (-16 * k, 5.0, 16.0),
        "basal cell carcinoma": (-10 * k, 10.0, -4.0),
    }.get(spec.diagnosis, (-22 * k, 7.0, 12.0))
    base = lab_rgb([L + base_delta[0], a + base_delta[1], b + base_delta[2]])
    dark = lab_rgb([L + base_delta[0] - 22 * k, a + base_delta[1] * 0.6, b + base_delta[2] * 0.5])
    body_alpha = (0.55 if crit["pigmentation"] == "absent" else 0.75) * (1 + 0.06 * smooth_noise(lrng, size, 8))
    blend(img, g.alpha * body_alpha, base)
    masks: dict[str, np.ndarray] = {"lesion": g.mask}
    empty = np.zeros((size, size), dtype=bool)
    for c in CRITERION_NAMES:
        masks[c] = empty

    # --- pigmentation (structureless blotches)
    if crit["pigmentation"] != "absent":
        alpha, region = blotch_layer(g, layer_rng(spec.lesion_seed, 10), crit["pigmentation"])
        blend(img, alpha * 0.85 * g.alpha, dark)
        masks["pigmentation"] = region & g.mask
    # --- pigment network
    if crit["pigment_network"] != "absent":
        alpha, region = network_layer(g, layer_rng(spec.lesion_seed, 11), crit["pigment_network"])
        col = lab_rgb([L - 40 * k, a + 4, b + 6]) if crit["pigment_network"] == "atypical" else lab_rgb(
            [L - 30 * k, a + 6, b + 10]
        )
        blend(img, alpha, col)
        masks["pigment_network"] = region & g.mask
    # --- streaks
    if crit["streaks"] != "absent":
        alpha, mask = streak_layer(g, layer_rng(spec.lesion_seed, 13), crit["streaks"])
        blend(img, alpha * 0.92, lab_rgb([L - 36 * k, a + 6, b + 8]))
        masks["streaks"] = mask
    # --- regression
    blue_reg = white_reg = None
    if crit["regression_structures"] != "absent":
        rrng = layer_rng(spec.lesion_seed, 14)
        blue_reg, white_reg = regression_regions(g, rrng, crit["regression_structures"])
        region = np.zeros_like(g.mask)
        if white_reg is not None:
            blend(img, soften(white_reg, size / 150) * 0.82, lab_rgb([min(96.0, L + 28), 3.0, 4.0]))
            region |= white_reg
        if blue_reg is not None:
            blend(img, soften(blue_reg, size / 150) * 0.25, lab_rgb([L - 18 * k, -2.0, -10.0]))
            pep = peppering_layer(g, rrng, blue_reg)
            blend(img, pep * 0.9, lab_rgb([L - 30 * k - 6, -2.0, -14.0]))
            region |= blue_reg
        masks["regression_structures"] = region
    # --- blue-whitish veil
    if crit["blue_whitish_veil"] == "present":
        vrng = layer_rng(spec.lesion_seed, 15)
        region = g.region(vrng, vrng.uniform(0.25, 0.4), eccentric=0.45, ragged=0.8)
        soft = soften(region, size / 110)
        veil_L = max(34.0, min(58.0, L - 20 * k))
        blend(img, soft * 0.85, lab_rgb([veil_L, -3.0, -22.0]))
        blend(img, soft * (0.22 + 0.05 * smooth_noise(vrng, size, 10)), (0.92, 0.94, 0.97))
        masks["blue_whitish_veil"] = region
    # --- dots and globules: drawn above the structureless areas (blotch, regression, veil) so that
    # they are not hidden, darker than any blotch, with a faint light rim for contrast
    if crit["dots_and_globules"] != "absent":
        dk, bl, mask = globule_layers(g, layer_rng(spec.lesion_seed, 12), crit["dots_and_globules"])
        rim = soften((dk + bl) > 0.2, size / 90) - np.clip(dk + bl, 0, 1)
        blend(img, np.clip(rim, 0, 1) * 0.35, lab_rgb([min(90.0, L + 6), a, b]))
        blend(img, dk, lab_rgb([max(6.0, L - 55 * k), a + 4, b + 4]))
        blend(img, bl * 0.95, lab_rgb([max(20.0, L - 30 * k), -4.0, -24.0]))
        masks["dots_and_globules"] = mask
    # --- vessels
    if crit["vascular_structures"] != "absent":
        reg = None
        if white_reg is not None:
            reg = white_reg
        elif blue_reg is not None:
            reg = blue_reg
        alpha, halo, pink, mask = vessel_layers(g, layer_rng(spec.lesion_seed, 16), crit["vascular_structures"], reg)
        kv = 0.65 + 0.35 * k
        if pink is not None:
            blend(img, pink, lab_rgb([min(92.0, L + 22), 22.0, 6.0]))
        if halo is not None:
            blend(img, halo * 0.55, lab_rgb([min(94.0, L + 25), 4.0, 4.0]))
        blend(img, alpha * kv, lab_rgb([max(35.0, min(50.0, L - 14)), 62.0, 32.0]))
        masks["vascular_structures"] = mask

    _add_artifacts(img, g, layer_rng(spec.image_seed, 3), art)
    out = (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return Rendered(image=out, masks=masks, skin_lab=(L, a, b), ita=float(_ita(L, b)))


def encode_masks(masks: Mapping[str, np.ndarray]) -> np.ndarray:
    """Pack the lesion and criterion masks into one uint8 image (one bit each).

    >>> m = {"lesion": np.ones((2, 2), bool), "streaks": np.eye(2, dtype=bool)}
    >>> encode_masks(m).tolist()
    [[5, 1], [1, 5]]
    """
    out: np.ndarray | None = None
    for name, mask in masks.items():
        bits = np.asarray(mask, dtype=np.uint8) << MASK_BITS[name]
        out = bits if out is None else out | bits
    if out is None:
        raise DermretrError("no masks to encode: pass at least the lesion mask")
    return out


def decode_masks(packed: np.ndarray) -> dict[str, np.ndarray]:
    """Unpack :func:`encode_masks` output into boolean masks.

    >>> decode_masks(np.array([[5]], np.uint8))["streaks"].tolist()
    [[True]]
    """
    packed = np.asarray(packed, dtype=np.uint8)
    return {name: (packed >> bit) & 1 == 1 for name, bit in MASK_BITS.items()}
