"""Training inputs: the case images cached in memory, their transforms and pairs of views, and the sampling weights."""

from __future__ import annotations

import pandas as pd
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from .._errors import DermretrError
from ..data.images import load_rgb

__all__ = ["Pairs", "HairAugment", "cache_images", "transforms", "balance_weights"]


class Pairs(Dataset):
    """Two augmented views of cached case images: (query view, target view, row index)."""

    def __init__(self, images: list, transform, augment_transform):
        self.images = images
        self.transform = transform
        self.augment = augment_transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        aug = self.augment or self.transform
        return aug(img), aug(img), i


def cache_images(paths: list[str], size: int, progress: bool) -> list:
    """Decode every image once, resized so the short side is ``size`` (training reads from memory)."""
    out = []
    for p in tqdm(paths, desc="Loading images", unit="img", disable=not progress):
        img = load_rgb(p)
        scale = size / min(img.size)
        if abs(scale - 1) > 1e-6:
            img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                             resample=3)
        out.append(img)
    return out


class HairAugment:
    """Draw hairs on a training view: with probability ``p``, 1 to ``max_hairs`` thin dark curves.

    Dermoscopy images are crossed by hairs that say nothing about the lesion; drawing some teaches a model
    to look past them.  Each hair is a quadratic Bezier curve across the image (ends up to 20% outside it),
    1 px wide (2 px one time in three or so) at the training size, dark brown.  Random numbers come from
    torch's generator, which the training loop seeds per epoch, so a run is reproducible.

    >>> import numpy as np
    >>> torch.manual_seed(0) and None
    >>> view = np.asarray(HairAugment(p=1.0)(Image.new("RGB", (64, 64), (200, 150, 130))))
    >>> changed = view[(view != (200, 150, 130)).any(axis=-1)]
    >>> 0 < len(changed) < 64 * 64 // 4 and int(changed.max()) < 100  # thin and dark
    True
    """

    def __init__(self, p: float = 0.5, max_hairs: int = 8):
        if not 0.0 <= p <= 1.0 or max_hairs < 1:
            raise DermretrError(f"HairAugment needs p in [0, 1] and max_hairs >= 1, got p={p!r}, "
                                f"max_hairs={max_hairs!r}")
        self.p, self.max_hairs = float(p), int(max_hairs)

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.p == 0.0 or float(torch.rand(())) >= self.p:
            return img
        img = img.copy()
        draw = ImageDraw.Draw(img)
        scale = torch.tensor(img.size, dtype=torch.float32)
        for _ in range(int(torch.randint(1, self.max_hairs + 1, ()))):
            p0, p2 = (torch.rand(2) * 1.4 - 0.2) * scale, (torch.rand(2) * 1.4 - 0.2) * scale
            p1 = (p0 + p2) / 2 + torch.randn(2) * 0.15 * scale
            s = torch.linspace(0, 1, 16)[:, None]
            points = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2
            shade = int(torch.randint(25, 60, ()))
            draw.line([(float(x), float(y)) for x, y in points.tolist()], fill=(shade, shade * 4 // 5, shade * 7 // 10),
                      width=1 if float(torch.rand(())) < 0.7 else 2, joint="curve")
        return img

    def __repr__(self) -> str:
        return f"HairAugment(p={self.p:g}, max_hairs={self.max_hairs})"


def transforms(backbone, size: int, augment: bool, hair: float = 0.0):
    """The evaluation transform and, with ``augment``, the training one (``hair``: :class:`HairAugment`'s p)."""
    mean, std = backbone.image_mean, backbone.image_std  # the backbone owns its normalisation numbers
    base = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.CenterCrop(size),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    if not augment:
        return base, None
    aug = v2.Compose([
        *([HairAugment(hair)] if hair > 0 else []),
        v2.PILToTensor(),
        v2.RandomResizedCrop(size, scale=(0.75, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.05),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])
    return base, aug



def balance_weights(cases: pd.DataFrame, balance_by: str) -> torch.Tensor:
    """Sampling weight of each case: ``1 / size`` of its stratum (its combination of ``balance_by`` values)."""
    columns = [c.strip() for c in balance_by.split(",") if c.strip()]
    missing = [c for c in columns if c not in cases.columns]
    if not columns or missing:
        raise DermretrError(f"balance_by {balance_by!r}: column(s) {missing or columns} not in the case table; "
                            f"use columns such as diagnosis_group or diagnosis_group,fitzpatrick")
    strata = cases[columns].astype("string").fillna("<unknown>").agg("|".join, axis=1)
    return torch.tensor((1.0 / strata.map(strata.value_counts())).to_numpy(dtype=float), dtype=torch.double)
