"""Explanations: Captum attributions, mask maps, faithfulness measures, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from dermretr._errors import DermretrError
from dermretr.data.synth import load_masks
from dermretr.explain import (
    METHODS,
    Attribution,
    PairScore,
    align_mask,
    compare_attributions,
    deletion_curve,
    dermsynth_localisation,
    explain_pair,
    explain_pairs,
    explain_result,
    explain_results,
    explain_text,
    explain_texts,
    localisation_score,
    mask_arrays,
    mask_maps,
    pair_deletion_curve,
    randomisation_check,
)
from dermretr.index import CaseIndex
from dermretr.models.backbones import create
from dermretr.models.retriever import Retriever

SIZE = 64
TEXT = "blue-whitish veil and irregular streaks"


def _rendered(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def _not_blank(fig: Figure) -> bool:
    return _rendered(fig).std() > 5


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Retriever(create("dermretr-tiny", device="cpu", image_size=SIZE), kind="full", n_masks=2)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(3, SIZE, SIZE, generator=g) for _ in range(4)]


class RegionRetriever(Retriever):
    """A retriever that only looks at the top-left quadrant of every image: the right answer is known."""

    def __init__(self, backbone):
        super().__init__(backbone, kind="full", n_masks=2)
        region = torch.zeros(1, 1, SIZE, SIZE)
        region[..., : SIZE // 2, : SIZE // 2] = 1
        self.register_buffer("region", region)

    def target_features(self, images):
        return super().target_features(images * self.region)

    def query_features(self, images, texts):
        return super().query_features(None if images is None else images * self.region, texts)


@pytest.fixture(scope="module")
def region_model():
    torch.manual_seed(0)
    return RegionRetriever(create("dermretr-tiny", device="cpu", image_size=SIZE))


# ---------------------------------------------------------------------------- attributions


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
    assert "c1" in ax.get_title() and _not_blank(fig)


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


def test_text_attribution_per_word(tiny, images):
    t = explain_text(tiny, images[0], TEXT, images[1], n_steps=32)
    assert t.words == ["blue", "-", "whitish", "veil", "and", "irregular", "streaks"]
    assert len(t.tokens) == len(t.token_scores) >= len(t.words)
    assert t.word_scores.sum() == pytest.approx(t.token_scores.sum(), rel=1e-4, abs=1e-9)
    assert np.isfinite(t.token_scores).all() and np.abs(t.token_scores).max() > 0
    assert abs(t.delta) <= 0.05 * np.abs(t.token_scores).sum() + 1e-6  # completeness vs the all-padding text
    fig = t.plot()
    labels = [x.get_text() for x in fig.axes[0].get_yticklabels()]
    assert labels == t.words and _not_blank(fig)
    both = explain_texts(tiny, [(images[0], TEXT, images[1]), (images[2], "streaks", images[3])], which="local")
    assert both[0].words == t.words and both[1].words == ["streaks"] and both[1].which == "local"


# ---------------------------------------------------------------------------- masks


def test_mask_maps_query_and_target(tiny, images):
    m = mask_arrays(tiny, images[0], TEXT, images[1])
    assert m["query"].shape == m["target"].shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(m["query_grid"].sum(axis=(1, 2)), 1, atol=1e-5)
    np.testing.assert_allclose(m["target_grid"].sum(axis=(1, 2)), 1, atol=1e-5)
    assert m["query_image"].shape == (SIZE, SIZE, 3)
    fig = mask_maps(tiny, images[0], TEXT, images[1])
    assert len(fig.axes) == 2 * (2 + 2)
    assert all(ax.images and ax.images[0].get_array().shape[:2] == (SIZE, SIZE) for ax in fig.axes)
    assert _not_blank(fig)


# ---------------------------------------------------------------------------- faithfulness


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
    assert len(fig.axes[0].lines) == 2 and _not_blank(fig)


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
    assert len(fig.axes) == len(chk.stages) + 2 and _not_blank(fig)


def test_localisation_score_on_hand_made_maps():
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    heat = np.zeros((40, 40))
    heat[15, 15] = 1
    s = localisation_score(heat, mask)
    assert s["hit"] == 1.0 and s["hit_baseline"] == pytest.approx(100 / 1600) and s["energy"] == 1.0
    heat = np.zeros((40, 40))
    heat[22, 15] = 1  # two pixels below the mask
    assert localisation_score(heat, mask)["hit"] == 0.0
    tol = localisation_score(heat, mask, tolerance=3)
    assert tol["hit"] == 1.0 and tol["hit_baseline"] > 100 / 1600
    exact = localisation_score(mask.astype(float), mask)
    assert exact["iou"] == 1.0 and exact["iou_baseline"] < 0.1
    inverse = localisation_score(1 - mask.astype(float), mask)
    assert inverse["iou"] == 0.0 and inverse["hit"] == 0.0 and inverse["energy"] == 0.0
    flat = localisation_score(np.ones((40, 40)), mask)  # a uniform map scores its baseline
    assert flat["hit"] == flat["hit_baseline"] and flat["iou"] == pytest.approx(flat["iou_baseline"])
    assert align_mask(np.ones((64, 96), bool), 32).shape == (32, 32)
    with pytest.raises(DermretrError, match="align_mask"):
        localisation_score(np.zeros((10, 10)), mask)
    with pytest.raises(DermretrError, match="empty"):
        localisation_score(heat, np.zeros((40, 40), bool))


def test_dermsynth_localisation_uses_the_ground_truth(tiny, synth_root):
    table = dermsynth_localisation(tiny, synth_root, method="gradcam", n=4, seed=0)
    mods = pd.read_csv(synth_root / "meta" / "modifications.csv", dtype=str, keep_default_na=False)
    assert len(table) == min(4, int((mods["to_value"] != "absent").sum())) > 0  # n triplets that add a structure
    assert (table["to_value"] != "absent").all()
    for col in ("hit", "hit_baseline", "iou", "iou_baseline", "energy", "energy_baseline"):
        assert table[col].between(0, 1).all(), col
    summary = table.attrs["summary"]
    assert summary["pairs"] == len(table) and summary["pointing"] == pytest.approx(table["hit"].mean())
    row = table.iloc[0]
    meta = pd.read_csv(synth_root / "meta" / "meta.csv", dtype=str).set_index("case_id")
    gt = load_masks(synth_root / meta.loc[row["target_case_id"], "mask"])[row["criterion"]]
    assert row["energy_baseline"] == pytest.approx(align_mask(gt, SIZE).mean())


# ---------------------------------------------------------------------------- index look-up and bad input


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
    for text in ("", "   "):
        with pytest.raises(DermretrError, match="has no tokens to attribute"):
            explain_text(tiny, q, text, t)
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
    with pytest.raises(DermretrError, match="no spatial masks"):
        mask_maps(plain, q, TEXT, t)
    with pytest.raises(DermretrError, match="no pairs"):
        explain_pairs(tiny, [])
