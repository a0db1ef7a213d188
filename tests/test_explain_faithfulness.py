"""Faithfulness of attributions: deletion curves and model randomisation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from explain_helpers import TEXT, not_blank, random_images, tiny_retriever

from dermretr.explain import (
    compare_attributions,
    deletion_curve,
    explain_pair,
    pair_deletion_curve,
    randomisation_check,
)


@pytest.fixture(scope="module")
def tiny():
    return tiny_retriever()


@pytest.fixture(scope="module")
def images():
    return random_images()


def test_deletion_curve_finds_the_region_a_toy_score_uses():
    def score(x):  # only the top-left 8x8 corner counts
        return x[:, :, :8, :8].mean(dim=(1, 2, 3))

    image = torch.ones(3, 32, 32)
    right = np.zeros((32, 32), np.float32)
    right[:8, :8] = 1
    good = deletion_curve(score, image, right, steps=8, patch=8, seeds=(0, 1, 2, 3))
    assert good.fractions[0] == 0 and good.fractions[-1] == 1
    assert good.attributed[0] == pytest.approx(1.0) and good.attributed[-1] == pytest.approx(0.0)
    assert good.auc_attributed < good.auc_random - 2 * good.auc_random_std
    wrong = deletion_curve(score, image, 1 - right, steps=8, patch=8, seeds=(0, 1, 2, 3))
    assert wrong.auc_attributed > wrong.auc_random
    fig = good.plot()
    assert len(fig.axes[0].lines) == 2 and not_blank(fig)


def test_deletion_curve_of_integrated_gradients_on_the_model(tiny, images):
    a = explain_pair(tiny, images[0], TEXT, images[1], method="ig")
    c = pair_deletion_curve(tiny, images[0], TEXT, images[1], a, steps=8, patch=8)
    assert c.attributed[0] == pytest.approx(a.score, abs=1e-5)
    assert c.gap > 3 * c.auc_random_std


def test_randomisation_check(tiny, images):
    a = explain_pair(tiny, images[0], TEXT, images[1], method="ig")
    same = explain_pair(copy.deepcopy(tiny), images[0], TEXT, images[1], method="ig")
    assert compare_attributions(a, same) == pytest.approx(1.0)
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    chk = randomisation_check(tiny, images[0], TEXT, images[1], method="ig", mode="cascading")
    assert chk.stages[0] == "retrieval heads" and chk.stages[-1] == "embedding"
    assert len(chk.randomised) == len(chk.stages) == len(chk.spearman)
    assert chk.spearman.max() < 0.9 and chk.spearman[-1] < 0.6
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())  # the model was not touched
    indep = randomisation_check(tiny, images[0], TEXT, images[1], method="gradcam", mode="independent",
                                heads=False)
    assert indep.stages[0] == "vision head" and np.isfinite(indep.spearman).all()
    fig = chk.plot()
    assert len(fig.axes) == len(chk.stages) + 2 and not_blank(fig)
