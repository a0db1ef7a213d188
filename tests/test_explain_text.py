"""Text attributions: Layer Integrated Gradients over the query's words."""

from __future__ import annotations

import numpy as np
import pytest
from explain_helpers import TEXT, not_blank, random_images, tiny_retriever

from dermretr._errors import DermretrError
from dermretr.explain import explain_text, explain_texts


@pytest.fixture(scope="module")
def tiny():
    return tiny_retriever()


@pytest.fixture(scope="module")
def images():
    return random_images()


def test_text_attribution_per_word(tiny, images):
    t = explain_text(tiny, images[0], TEXT, images[1], n_steps=32)
    assert t.words == ["blue", "-", "whitish", "veil", "and", "irregular", "streaks"]
    assert len(t.tokens) == len(t.token_scores) >= len(t.words)
    assert t.word_scores.sum() == pytest.approx(t.token_scores.sum(), rel=1e-4, abs=1e-9)
    assert np.isfinite(t.token_scores).all() and np.abs(t.token_scores).max() > 0
    assert abs(t.delta) <= 0.05 * np.abs(t.token_scores).sum() + 1e-6  # completeness vs the all-padding text
    fig = t.plot()
    labels = [x.get_text() for x in fig.axes[0].get_yticklabels()]
    assert labels == t.words and not_blank(fig)
    both = explain_texts(tiny, [(images[0], TEXT, images[1]), (images[2], "streaks", images[3])], which="local")
    assert both[0].words == t.words and both[1].words == ["streaks"] and both[1].which == "local"


def test_blank_texts_have_nothing_to_attribute(tiny, images):
    q, t = images[0], images[1]
    for text in ("", "   "):
        with pytest.raises(DermretrError, match="has no tokens to attribute"):
            explain_text(tiny, q, text, t)
