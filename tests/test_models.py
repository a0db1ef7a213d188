"""Backbones (factory, weights-file and local-dir routes), composer masks and losses (the retriever: test_retriever)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from dermretr._errors import DermretrError
from dermretr.models import backbones
from dermretr.models.backbones import create
from dermretr.models.losses import group_positives, multi_positive_infonce
from dermretr.models.retriever import Retriever


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create("dermretr-tiny", device="cpu", image_size=64)


def _images(n=3, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- backbones


def test_tiny_backbone_exposes_global_patch_and_token_features(tiny):
    g, tokens = tiny.encode_image(_images())
    assert tuple(g.shape) == (3, 128) and tuple(tokens.shape) == (3, 16, 192)
    assert tiny.grid == (4, 4) and tiny.embed_dim == 128 and tiny.vision_width == 192
    pooled, feats, mask = tiny.encode_text(tiny.tokenize(["atypical pigment network", ""]))
    assert tuple(pooled.shape) == (2, 128) and feats.shape[:2] == (2, 64)
    assert mask[0].sum() > mask[1].sum() >= 2  # start/end tokens only for the empty text
    cfg = open_clip.get_model_config("dermretr-tiny")
    assert cfg["vision_cfg"]["width"] == 192 and cfg["text_cfg"]["context_length"] == 64
    assert "dermretr-small" in backbones.list_models()


def test_convolutional_towers_give_their_feature_map_cells_as_patch_tokens():
    """open_clip's ResNets and timm CNNs only give NCHW feature maps; the full model pools their cells."""
    torch.manual_seed(0)
    cnn = create("dermretr-cnn", device="cpu", image_size=64)  # timm resnet18, stride 32
    g, tokens = cnn.encode_image(_images())
    assert tuple(g.shape) == (3, 128) and tuple(tokens.shape) == (3, 4, 512)
    assert cnn.grid == (2, 2) and cnn.vision_width == 512
    r = Retriever(cnn, kind="full", n_masks=2)
    with torch.no_grad():
        q = r.query_features(_images(2), ["streaks", "blue-whitish veil"])
    assert tuple(q["global"].shape) == (2, 128) and tuple(q["local"].shape) == (2, 2, 128)
    assert torch.isfinite(q["local"]).all()


def test_unknown_name_lists_close_matches():
    with pytest.raises(DermretrError, match="did you mean dermretr-tiny"):
        create("dermretr-tinny", device="cpu")
    with pytest.raises(DermretrError, match="did you mean ViT-B-16"):
        create("VIT-B-16", device="cpu")


def test_image_size_must_fit_the_patch_size():
    with pytest.raises(DermretrError, match="not divisible by the patch size 16.*e.g. 96"):
        create("dermretr-tiny", device="cpu", image_size=100)


def test_bad_pretrained_values(tmp_path):
    with pytest.raises(DermretrError, match="unknown pretrained tag 'laion'"):
        create("dermretr-tiny", pretrained="laion", device="cpu")
    with pytest.raises(DermretrError, match="weights file not found"):
        create("dermretr-tiny", pretrained=str(tmp_path / "missing.pt"), device="cpu")


def test_weights_file_route_gives_identical_outputs(tiny, tmp_path):
    path = tmp_path / "tiny_weights.pt"
    torch.save(tiny.model.state_dict(), path)
    again = create("dermretr-tiny", pretrained=str(path), device="cpu", image_size=64)
    x = _images()
    with torch.no_grad():
        a, ta = tiny.encode_image(x)
        b, tb = again.encode_image(x)
        ea = tiny.model.encode_text(tiny.tokenize(["blue-whitish veil"]))
        eb = again.model.encode_text(again.tokenize(["blue-whitish veil"]))
    assert torch.equal(a, b) and torch.equal(ta, tb) and torch.equal(ea, eb)
    fresh = create("dermretr-tiny", device="cpu", image_size=64)
    with torch.no_grad():
        assert not torch.equal(fresh.encode_image(x)[0], a)  # the file really mattered
    # a dermretr checkpoint gives its backbone (fine-tuning a model trained elsewhere, e.g. on DermSynth)
    checkpoint = Retriever(tiny, kind="full", n_masks=2).save(tmp_path / "best.pt")
    tuned = create("dermretr-tiny", pretrained=str(checkpoint), device="cpu", image_size=64)
    with torch.no_grad():
        assert torch.equal(tuned.encode_image(x)[0], a)
        assert torch.equal(tuned.model.encode_text(tuned.tokenize(["blue-whitish veil"])), ea)
    small = Retriever(create("dermretr-small", device="cpu"), kind="image").save(tmp_path / "small.pt")
    with pytest.raises(DermretrError, match="small.pt does not fit architecture 'dermretr-tiny'"):
        create("dermretr-tiny", pretrained=str(small), device="cpu")


def test_weights_of_another_architecture_are_a_clear_error(tmp_path):
    small = create("dermretr-small", device="cpu")
    path = tmp_path / "small.pt"
    torch.save(small.model.state_dict(), path)
    with pytest.raises(DermretrError, match="does not fit architecture 'dermretr-tiny'"):
        create("dermretr-tiny", pretrained=str(path), device="cpu")


def test_local_dir_route_like_a_downloaded_hub_repo(tiny, tmp_path):
    folder = tmp_path / "DermLIP-like"
    folder.mkdir()
    cfg = {"model_cfg": open_clip.get_model_config("dermretr-tiny"),
           "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                              "std": [0.26862954, 0.26130258, 0.27577711]}}
    cfg["model_cfg"]["vision_cfg"] = dict(cfg["model_cfg"]["vision_cfg"], image_size=64)
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.save(tiny.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    local = create(f"local-dir:{folder}", device="cpu")
    x = _images()
    with torch.no_grad():
        assert torch.equal(local.encode_image(x)[0], tiny.encode_image(x)[0])


def test_offline_hub_error_says_how_to_use_a_local_file(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed initial config/weights load from HF Hub org/model: Failed to download file")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    with pytest.raises(DermretrError, match="could not fetch weights.*pretrained='/path/.*local-dir:"):
        create("hf-hub:redlessone/DermLIP_ViT-B-16", device="cpu")


# --------------------------------------------------------------------------- composer


def test_text_reaches_the_local_query_whatever_the_scale_of_regions_and_prototypes():
    """The text's say in the local query must not shrink as pooled vectors or prototypes grow.

    A trained model once had prototypes and pooled vectors of norm ~11 beside a
    text shift of norm 0.18: its local queries were at cosine 0.998 to their
    text-free selves, an image-only score.
    """
    from dermretr.models.composer import SpatialMasks

    torch.manual_seed(0)
    masks = SpatialMasks(token_dim=48, dim=32, n_masks=3, text_dim=32)
    with torch.no_grad():  # make the (tiny-initialised) text paths matter
        for layer in (masks.text_shift[-1], masks.local_residual[-1]):
            torch.nn.init.normal_(layer.weight, std=0.2)
    tokens, texts = torch.randn(2, 16, 48), torch.randn(2, 32)

    @torch.no_grad()
    def query(tokens):
        local, attn = masks(tokens, text=texts)
        return torch.nn.functional.normalize(local, dim=-1), attn

    base, base_attn = query(tokens)
    with torch.no_grad():
        plain, plain_attn = masks(tokens)
    change = 1 - torch.nn.functional.cosine_similarity(base, plain, dim=-1)
    assert float(change.min()) > 0.01 and float((base_attn - plain_attn).abs().max()) > 0.01
    with torch.no_grad():
        masks.value.weight.mul_(100.0)  # pooled vectors 100 times longer
        masks.prototypes.mul_(100.0)  # prototypes 100 times longer
    scaled, scaled_attn = query(tokens)
    assert torch.allclose(scaled, base, atol=1e-5) and torch.allclose(scaled_attn, base_attn, atol=1e-5)
def test_a_single_mask_attends_over_patches_instead_of_averaging():
    from dermretr.models.composer import SpatialMasks

    torch.manual_seed(1)
    masks = SpatialMasks(token_dim=48, dim=32, n_masks=1)
    _, attn = masks(torch.randn(3, 16, 48))
    assert torch.allclose(attn.sum(-1), torch.ones(3, 1), atol=1e-5)
    assert SpatialMasks.statistics(attn)["entropy_fraction"] < 0.95  # not the uniform map


# --------------------------------------------------------------------------- losses


def test_infonce_rewards_ranking_positives_first():
    pos, valid = group_positives(["MEL", "NEV", "MEL", "NEV"])
    good = torch.where(pos, torch.tensor(5.0), torch.tensor(0.0))
    bad = torch.where(pos, torch.tensor(0.0), torch.tensor(5.0))
    assert multi_positive_infonce(good, pos, valid) < 0.1 < multi_positive_infonce(bad, pos, valid)


def test_infonce_ignores_rows_without_positives_and_masked_pairs():
    logits = torch.tensor([[9.0, 0.0], [0.0, 0.0]])
    pos = torch.tensor([[False, True], [False, False]])
    valid = torch.tensor([[False, True], [True, True]])  # the 9.0 pair is masked out
    loss = multi_positive_infonce(logits, pos, valid, symmetric=False)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert float(multi_positive_infonce(logits, torch.zeros_like(pos), valid)) == 0.0


def test_masks_compete_so_they_cannot_collapse_onto_one_map():
    from dermretr.models.composer import SpatialMasks

    torch.manual_seed(0)
    masks = SpatialMasks(token_dim=48, dim=32, n_masks=4)
    tokens = torch.randn(6, 16, 48)
    _, attn = masks(tokens)
    assert torch.allclose(attn.sum(-1), torch.ones(6, 4), atol=1e-5)
    stats = SpatialMasks.statistics(attn)
    assert stats["overlap"] < 0.9 and stats["entropy_fraction"] < 0.97
    # identical prototypes are the collapsed state: every mask the same map, overlap 1
    with torch.no_grad():
        masks.prototypes.copy_(masks.prototypes[:1].expand(4, -1))
    _, same = masks(tokens)
    assert SpatialMasks.statistics(same)["overlap"] == pytest.approx(1.0, abs=1e-5)
    # the statistics themselves: disjoint masks overlap 0, uniform masks have entropy fraction 1
    assert SpatialMasks.statistics(torch.full((1, 2, 8), 1 / 8))["entropy_fraction"] == pytest.approx(1.0)
