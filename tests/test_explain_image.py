"""Image attributions: IG, Occlusion and GradCAM heatmaps, batches, index look-up and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from explain_helpers import SIZE, TEXT, not_blank, random_images, region_retriever, tiny_retriever
from matplotlib.figure import Figure
from PIL import Image

from dermretr._errors import DermretrError
from dermretr.explain import (
    METHODS,
    Attribution,
    PairScore,
    explain_pair,
    explain_pairs,
    explain_result,
    explain_results,
    localisation_score,
)
from dermretr.index import CaseIndex
from dermretr.models.retriever import Retriever


@pytest.fixture(scope="module")
def tiny():
    return tiny_retriever()


@pytest.fixture(scope="module")
def images():
    return random_images()


@pytest.fixture(scope="module")
def region_model():
    return region_retriever()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("side", ["target", "reference"])
def test_heatmaps_at_image_resolution_with_overlay_figures(tiny, images, method, side):
    a = explain_pair(tiny, images[0], TEXT, images[1], method=method, side=side, label="c1")
    assert isinstance(a, Attribution)
    assert a.heatmap.shape == (SIZE, SIZE) and a.heatmap.dtype == np.float32
    assert np.isfinite(a.heatmap).all() and np.ptp(a.heatmap) > 0
    assert a.image.shape == (SIZE, SIZE, 3) and a.image.dtype == np.uint8
    if method == "gradcam":
        assert a.grid.shape == tiny.backbone.grid and (a.heatmap >= 0).all()
    assert (a.method, a.side, a.label) == (method, side, "c1")
    fig = a.overlay()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [im.get_array().shape[:2] for im in ax.images] == [(SIZE, SIZE), (SIZE, SIZE)]
    assert "c1" in ax.get_title() and not_blank(fig)
    # the reference side's figure says it shows the reference image, not case c1 (issue 21)
    assert ax.get_title().startswith(f"{method} on " + ("the reference image (against case c1)" if side == "reference"
                                                         else "case c1"))


def test_the_three_scores_are_explained_separately(tiny, images):
    out = {w: explain_pair(tiny, images[0], TEXT, images[1], method="ig", which=w, n_steps=16)
           for w in ("score", "global", "local")}
    scores = out["score"].scores
    a = tiny.alpha
    assert scores["score"] == pytest.approx(a * scores["local"] + (1 - a) * scores["global"], abs=1e-5)
    for which, att in out.items():
        assert att.score == pytest.approx(scores[which])
    assert not np.allclose(out["global"].heatmap, out["local"].heatmap)
    # the global score's GradCAM is not empty: the tapped layer feeds the class token
    g = explain_pair(tiny, images[0], TEXT, images[1], method="gradcam", which="global", relu=False)
    assert np.abs(g.grid).max() > 0


def test_integrated_gradients_completeness(tiny, images):
    a = explain_pair(tiny, images[0], TEXT, images[1], method="ig", n_steps=64, baseline="mean")
    with torch.no_grad():
        f = PairScore(tiny.eval(), [images[0]], [TEXT], [torch.zeros(3, SIZE, SIZE)])
        at_baseline = f.scores["score"][0]
    diff = a.score - at_baseline
    assert abs(a.heatmap.sum() - diff) <= 0.02 * abs(diff) + 1e-4
    assert abs(a.delta) < 1e-3


def test_batches_of_pairs_match_single_pairs(tiny, images):
    pairs = [(images[0], TEXT, images[1]), (images[2], "streaks", images[3]), (images[1], "", images[0])]
    for method, opts in (("ig", {"n_steps": 8, "internal_batch_size": 5}),
                         ("occlusion", {"window": 16, "perturbations_per_eval": 3}), ("gradcam", {})):
        batch = explain_pairs(tiny, pairs, method=method, batch_size=3, **opts)
        for pair, att in zip(pairs, batch):
            single = explain_pair(tiny, *pair, method=method, **opts)
            np.testing.assert_allclose(att.heatmap, single.heatmap, rtol=1e-3, atol=1e-6)
            assert att.score == pytest.approx(single.score, abs=1e-6)


@pytest.mark.parametrize("method", ["ig", "occlusion"])
def test_attribution_stays_where_the_score_looks(region_model, images, method):
    """The toy model only sees the top-left quadrant: nothing may be attributed elsewhere."""
    opts = {"window": 8, "stride": 8} if method == "occlusion" else {}  # windows never straddle the border
    a = explain_pair(region_model, images[0], TEXT, images[1], method=method, **opts)
    h = np.abs(a.heatmap)
    inside = h[: SIZE // 2, : SIZE // 2].sum()
    assert inside > 0 and h.sum() - inside <= 1e-6 * inside
    mask = np.zeros((SIZE, SIZE), bool)
    mask[: SIZE // 2, : SIZE // 2] = True
    s = localisation_score(h, mask)
    assert s["hit"] == 1.0 and s["energy"] == pytest.approx(1.0) and s["energy_baseline"] == 0.25


def _index(synth_cases, n=6):
    cases = synth_cases.iloc[:n].reset_index(drop=True)
    g = np.eye(n, 8, dtype=np.float32)
    return CaseIndex.from_embeddings({"global": g, "local": None}, cases)


def test_explain_result_looks_the_case_up(tiny, synth_cases):
    index = _index(synth_cases)
    query = synth_cases["image_path"].iloc[10]
    cid = index.cases["case_id"].iloc[2]
    a = explain_result(index, tiny, query, TEXT, cid, method="gradcam")
    assert a.label == cid and a.heatmap.shape == (SIZE, SIZE)
    direct = explain_pair(tiny, query, TEXT, index.cases["image_path"].iloc[2], method="gradcam")
    np.testing.assert_allclose(a.heatmap, direct.heatmap, rtol=1e-5, atol=1e-7)
    hits = pd.DataFrame({"case_id": index.cases["case_id"].iloc[:3]})
    assert [x.label for x in explain_results(index, tiny, query, TEXT, hits)] == hits["case_id"].tolist()
    with pytest.raises(DermretrError, match=r"case id 'nope' is not in this index .*search results"):
        explain_result(index, tiny, query, TEXT, "nope")
    with pytest.raises(DermretrError, match="no retriever"):
        explain_result(index, None, query, TEXT, cid)


def test_very_large_images_are_resized_first(tiny):
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (3000, 2200, 3), dtype=np.uint8))
    a = explain_pair(tiny, big, TEXT, big, method="gradcam")
    assert a.heatmap.shape == (SIZE, SIZE) and a.image.shape == (SIZE, SIZE, 3)
    t = explain_pair(tiny, torch.randn(3, 300, 200), TEXT, torch.randn(1, 3, 500, 500), method="gradcam")
    assert t.heatmap.shape == (SIZE, SIZE)


def test_explaining_restores_modes_and_weights(tiny, images):
    tiny.train()
    tiny.encoder.eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    explain_pair(tiny, images[0], TEXT, images[1], method="ig", n_steps=4)
    with pytest.raises(DermretrError):
        explain_pair(tiny, images[0], TEXT, images[1], method="occlusion", window=1000)
    assert tiny.training and tiny.combiner.training and not tiny.encoder.training
    assert {p.requires_grad for p in tiny.parameters()} == {True}
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())
    with pytest.raises(DermretrError, match=r"call retriever.eval\(\) first"):
        PairScore(tiny, [images[0]], [TEXT], [images[1]])(images[1][None])
    tiny.eval()


def test_bad_input_messages(tiny, images, tmp_path):
    q, t = images[0], images[1]
    with pytest.raises(DermretrError, match=r"occlusion window of 100 px is larger than the 64x64 px"):
        explain_pair(tiny, q, TEXT, t, method="occlusion", window=100)
    with pytest.raises(DermretrError, match="unknown method 'shap'; choose one of: ig, occlusion, gradcam"):
        explain_pair(tiny, q, TEXT, t, method="shap")
    with pytest.raises(DermretrError, match="unknown which"):
        explain_pair(tiny, q, TEXT, t, which="both")
    with pytest.raises(DermretrError, match="unknown side"):
        explain_pair(tiny, q, TEXT, t, side="query")
    with pytest.raises(DermretrError, match="unknown option 'steps' for method='ig'"):
        explain_pair(tiny, q, TEXT, t, method="ig", steps=3)
    with pytest.raises(DermretrError, match=r"must be \[3, H, W\]"):
        explain_pair(tiny, torch.zeros(4, 64, 64), TEXT, t)
    with pytest.raises(DermretrError, match="not found"):
        explain_pair(tiny, tmp_path / "missing.jpg", TEXT, t)
    with pytest.raises(DermretrError, match="block 9 does not exist"):
        explain_pair(tiny, q, TEXT, t, method="gradcam", block=9)
    plain = Retriever(tiny.backbone, kind="global")
    with pytest.raises(DermretrError, match="no local score"):
        explain_pair(plain, q, TEXT, t, which="local")
    with pytest.raises(DermretrError, match="no pairs"):
        explain_pairs(tiny, [])
