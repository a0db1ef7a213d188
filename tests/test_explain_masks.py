"""The model's own spatial masks, query and target side."""

from __future__ import annotations

import numpy as np
import pytest
from explain_helpers import SIZE, TEXT, not_blank, random_images, tiny_retriever

from dermretr._errors import DermretrError
from dermretr.explain import mask_arrays, mask_maps
from dermretr.models.retriever import Retriever


@pytest.fixture(scope="module")
def tiny():
    return tiny_retriever()


@pytest.fixture(scope="module")
def images():
    return random_images()


def test_mask_maps_query_and_target(tiny, images):
    m = mask_arrays(tiny, images[0], TEXT, images[1])
    assert m["query"].shape == m["target"].shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(m["query_grid"].sum(axis=(1, 2)), 1, atol=1e-5)
    np.testing.assert_allclose(m["target_grid"].sum(axis=(1, 2)), 1, atol=1e-5)
    assert m["query_image"].shape == (SIZE, SIZE, 3)
    fig = mask_maps(tiny, images[0], TEXT, images[1])
    assert len(fig.axes) == 2 * (2 + 2)
    assert all(ax.images and ax.images[0].get_array().shape[:2] == (SIZE, SIZE) for ax in fig.axes)
    assert not_blank(fig)


def test_mask_maps_need_a_full_retriever(tiny, images):
    q, t = images[0], images[1]
    plain = Retriever(tiny.backbone, kind="global")
    with pytest.raises(DermretrError, match="no spatial masks"):
        mask_maps(plain, q, TEXT, t)
