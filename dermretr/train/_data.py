"""Training inputs: the case images cached in memory, their transforms and pairs of views, and the sampling weights."""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from .._errors import DermretrError
from ..data.images import load_rgb

__all__ = ["Pairs", "cache_images", "transforms", "balance_weights"]


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


def transforms(backbone, size: int, augment: bool):
    mean, std = backbone.image_mean, backbone.image_std  # the backbone owns its normalisation numbers
    base = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.CenterCrop(size),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    if not augment:
        return base, None
    aug = v2.Compose([
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
