"""The inputs of an explanation: images as the model saw them, with the backbone's own normalisation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from explain_helpers import SIZE, TEXT
from PIL import Image
from torchvision import transforms

from dermretr._errors import DermretrError
from dermretr.explain import BASELINES, explain_pair, explain_pairs
from dermretr.models.backbones import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, create
from dermretr.models.retriever import Retriever


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return create("dermretr-tiny", device="cpu", image_size=SIZE)


def test_the_backbone_owns_its_normalisation(backbone):
    assert backbone.image_mean == OPENAI_CLIP_MEAN and backbone.image_std == OPENAI_CLIP_STD
    assert backbone.image_size == SIZE
    other = dataclasses.replace(backbone, preprocess=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.2, 0.5, 0.7), (0.3, 0.2, 0.25))]))
    assert other.image_mean == pytest.approx((0.2, 0.5, 0.7)) and other.image_std == pytest.approx((0.3, 0.2, 0.25))
    bare = dataclasses.replace(backbone, preprocess=transforms.ToTensor())  # the model's preprocess_cfg, then CLIP's
    assert bare.image_mean == pytest.approx(backbone.model.visual.preprocess_cfg["mean"])


def test_the_displayed_image_undoes_the_backbones_own_normalisation(backbone):
    """A backbone with other normalisation numbers: the attributed image comes back as it went in."""
    mean, std = (0.2, 0.5, 0.7), (0.3, 0.2, 0.25)
    other = dataclasses.replace(backbone, preprocess=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(mean, std)]))
    model = Retriever(other, kind="full", n_masks=2)
    rgb = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    a = explain_pair(model, Image.fromarray(rgb), TEXT, Image.fromarray(rgb), method="gradcam")
    assert np.abs(a.image.astype(int) - rgb.astype(int)).max() <= 1
    black = explain_pair(model, rgb, TEXT, rgb, method="ig", n_steps=4, baseline="black")
    assert black.heatmap.shape == (SIZE, SIZE)
    assert BASELINES == ("mean", "black", "blur")
    with pytest.raises(DermretrError, match="unknown baseline 'grey'; choose one of: mean, black, blur"):
        explain_pair(model, rgb, TEXT, rgb, method="ig", baseline="grey")
    with pytest.raises(DermretrError, match="batch_size must be at least 1, got 0"):
        explain_pairs(model, [(rgb, TEXT, rgb)], batch_size=0)
