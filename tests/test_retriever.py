"""The retriever: every kind through one interface, Embeddings records, convex scores, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermretr._errors import DermretrError
from dermretr.models.backbones import create
from dermretr.models.embeddings import Embeddings
from dermretr.models.retriever import KINDS, Retriever, convex_score


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create("dermretr-tiny", device="cpu", image_size=64)


def _images(n=3, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))




@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_encodes_through_one_interface(tiny, kind):
    r = Retriever(tiny, kind=kind, n_masks=3)
    texts = ["atypical pigment network", "irregular streaks", "hairpin vessels"]
    q = r.encode_queries(None if kind == "text" else _images(), texts, batch_size=2)
    t = r.encode_targets(_images(5, seed=1), batch_size=2)
    assert q["global"].shape == (3, 128) and q["global"].dtype == np.float32
    assert np.allclose(np.linalg.norm(q["global"], axis=1), 1, atol=1e-5)
    if kind == "full":
        assert q["local"].shape == (3, 3, 128) and t["local"].shape == (5, 3, 128)
    else:
        assert q["local"] is None and t["local"] is None
    s, sg, sl = convex_score(q, t)
    assert s.shape == (3, 5)
    if kind != "full":
        assert np.allclose(s, sg)


def test_targets_do_not_depend_on_the_query_and_batching_does_not_matter(tiny):
    r = Retriever(tiny, kind="full", n_masks=2)
    imgs = _images(5, seed=2)
    a = r.encode_targets(imgs, batch_size=5)
    b = r.encode_targets(imgs, batch_size=2)
    r.encode_queries(_images(2), ["blue-whitish veil", "dotted vessels"])
    c = r.encode_targets(imgs, batch_size=3)
    for key in ("global", "local"):
        assert np.allclose(a[key], b[key], atol=1e-5) and np.allclose(a[key], c[key], atol=1e-5)


def test_convex_score_weights_local_and_global(tiny):
    r = Retriever(tiny, kind="full", n_masks=2, alpha=0.6)
    q = r.encode_queries(_images(2), ["blue-whitish veil", "irregular dots and globules"])
    t = r.encode_targets(_images(4, seed=3))
    s, sg, sl = convex_score(q, t)
    assert q["alpha"] == pytest.approx(0.6, abs=1e-4)
    assert np.allclose(s, 0.6 * sl + 0.4 * sg, atol=1e-5)
    assert np.allclose(convex_score(q, t, alpha=0.0)[0], sg) and np.allclose(convex_score(q, t, alpha=1.0)[0], sl)
    with pytest.raises(DermretrError, match=r"must be in \[0, 1\]"):
        convex_score(q, t, alpha=1.5)
    with pytest.raises(DermretrError, match=r"must be in \[0, 1\]"):
        Retriever(tiny, kind="full", alpha=-0.1)


def test_empty_text_means_cases_like_this_image(tiny):
    for kind in ("late_fusion", "clip4cir", "global", "full"):
        r = Retriever(tiny, kind=kind, n_masks=2)
        x = _images(2)
        q = r.encode_queries(x, ["", "   "])
        img = Retriever(tiny, kind="image").encode_queries(x, ["", ""])
        assert np.allclose(q["global"], img["global"], atol=1e-5), kind
        if kind == "full":  # empty-text local queries are pooled exactly like targets
            assert np.allclose(q["local"], r.encode_targets(x)["local"], atol=1e-5)
    with pytest.raises(DermretrError, match="text-only retrieval needs a non-empty query text"):
        Retriever(tiny, kind="text").encode_queries(None, ["veil", ""])


def test_text_changes_the_composed_query(tiny):
    torch.manual_seed(1)
    r = Retriever(tiny, kind="full", n_masks=2)
    for p in r.combiner.residual[-1].parameters():  # make the (tiny-initialised) residual matter
        torch.nn.init.normal_(p, std=0.2)
    x = _images(1)
    a = r.encode_queries(x, ["blue-whitish veil"])
    b = r.encode_queries(x, ["arborizing vessels"])
    assert not np.allclose(a["global"], b["global"], atol=1e-4)


@pytest.mark.parametrize("kind", ["global", "full"])
def test_an_untrained_composer_starts_as_late_fusion_and_the_ablation_as_image_only(tiny, kind):
    """With the text skip the untrained composed query is ~``0.88 x + t`` (the late-fusion query up to the
    gate): the text steers it from the first step.  Without it (the ablation, format-3 composers) the
    text hardly moves the query: an image-only start."""
    torch.manual_seed(4)
    x, texts = _images(2), ["blue-whitish veil", "arborizing vessels"]
    late = Retriever(tiny, kind="late_fusion").eval()
    with torch.no_grad():
        fused = late.encode_queries(x, texts)["global"]
        image = Retriever(tiny, kind="image").encode_queries(x, texts)["global"]
        for skip, like, unlike in ((True, fused, image), (False, image, fused)):
            r = Retriever(tiny, kind=kind, n_masks=2, text_skip=skip).eval()
            q = r.encode_queries(x, texts)
            cos_like, cos_unlike = (np.sum(q["global"] * v, axis=1) for v in (like, unlike))
            assert cos_like.min() > 0.99 and cos_unlike.max() < 0.99, (skip, cos_like, cos_unlike)
            assert (r.combiner.text_weight is not None) == skip and r.config().get("text_skip", False) == skip
            if kind == "full":  # the same holds region by region
                plain = r.encode_targets(x)["local"]
                change = 1 - np.sum(q["local"] * plain, axis=-1)
                assert (change.min() > 0.01) if skip else (change.max() < 1e-3), change
    # composers only; a model without it keeps the config (and the index manifests) of format 3
    assert "text_skip" not in Retriever(tiny, kind="clip4cir", text_skip=True).config()


def test_paired_scores_and_given_tokens_match_the_plain_paths(tiny):
    torch.manual_seed(2)
    r = Retriever(tiny, kind="full", n_masks=2).eval()
    texts = ["blue-whitish veil", "irregular streaks", ""]
    with torch.no_grad():
        q = r.query_features(_images(3), texts)
        given = r.query_features(_images(3), texts, text_tokens=tiny.tokenize(texts))
        t = r.target_features(_images(3, seed=5))
        for a, b in zip(r.score(q, t, paired=True), r.score(q, t)):
            assert torch.allclose(a, torch.diagonal(b), atol=1e-6)
    assert torch.allclose(q["global"], given["global"]) and torch.allclose(q["local"], given["local"])
    with pytest.raises(DermretrError, match="2 token rows for 3 texts"):
        r.query_features(_images(3), texts, text_tokens=tiny.tokenize(texts[:2]))
    with pytest.raises(DermretrError, match="paired scores need as many queries as targets, got 3 and 2"):
        r.score(q, {k: v[:2] for k, v in t.items() if k in ("global", "local")}, paired=True)


def test_retriever_bad_arguments(tiny):
    with pytest.raises(DermretrError, match="unknown retriever kind 'fusion'"):
        Retriever(tiny, kind="fusion")
    with pytest.raises(DermretrError, match="n_masks must be a positive integer"):
        Retriever(tiny, kind="full", n_masks=0)
    r = Retriever(tiny, kind="global")
    with pytest.raises(DermretrError, match="2 query images but 3 texts"):
        r.encode_queries(_images(2), ["a", "b", "c"])


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(3)
    r = Retriever(create("dermretr-tiny", device="cpu"), kind="full", n_masks=2, alpha=0.7)
    path = r.save(tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert payload["config"]["kind"] == "full"
    again = Retriever.load(path, device="cpu")
    x = _images(2, size=128)
    a, b = r.encode_queries(x, ["veil", "streaks"]), again.encode_queries(x, ["veil", "streaks"])
    assert np.allclose(a["global"], b["global"]) and np.allclose(a["local"], b["local"])
    assert again.alpha == pytest.approx(0.7, abs=1e-4)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DermretrError, match="cannot load .*junk.pt: it is not a PyTorch or safetensors weights file"):
        Retriever.load(tmp_path / "junk.pt", device="cpu")
    with pytest.raises(DermretrError, match="checkpoint not found"):
        Retriever.load(tmp_path / "none.pt", device="cpu")
    # a format-3 checkpoint (no text skip; its config has no "text_skip") still loads, as it was trained
    plain = Retriever(create("dermretr-tiny", device="cpu"), kind="full", n_masks=2, text_skip=False)
    old3 = torch.load(plain.save(tmp_path / "plain.pt"), weights_only=True)
    assert not any("text_weight" in k for k in old3["state_dict"]) and "text_skip" not in old3["config"]
    old3["format"] = 3
    torch.save(old3, tmp_path / "format3.pt")
    loaded = Retriever.load(tmp_path / "format3.pt", device="cpu")
    assert loaded.text_skip is False
    assert np.allclose(loaded.encode_queries(x, ["veil", "streaks"])["global"],
                       plain.encode_queries(x, ["veil", "streaks"])["global"], atol=1e-6)
    old3["config"]["text_skip"] = "yes"
    torch.save(old3, tmp_path / "bad_skip.pt")
    with pytest.raises(DermretrError, match="text_skip='yes', not true or false"):
        Retriever.load(tmp_path / "bad_skip.pt", device="cpu")
    for old in (1, 2):  # full models saved before the masks (1) or the local text composition (2) changed
        payload["format"] = old
        torch.save(payload, tmp_path / "old.pt")
        with pytest.raises(DermretrError, match=f"spatial masks have since changed \\(checkpoint format {old}\\)"):
            Retriever.load(tmp_path / "old.pt", device="cpu")


def test_encoders_return_embeddings_records(tiny):
    r = Retriever(tiny, kind="full", n_masks=2, alpha=0.6)
    q = r.encode_queries(_images(2), ["blue-whitish veil", ""])
    t = r.encode_targets(_images(3, seed=1))
    for e, n in ((q, 2), (t, 3)):
        assert isinstance(e, Embeddings) and len(e) == n and e.n_masks == 2 and e.dim == 128
        assert e.global_vectors.dtype == np.float32 and e.local_vectors.flags.c_contiguous
        assert e.alpha == pytest.approx(r.alpha)
    empty = r.encode_targets(_images(0))
    assert empty.global_vectors.shape == (0, 128) and empty.local_vectors.shape == (0, 2, 128)
    image_only = Retriever(tiny, kind="image").encode_targets(_images(2))
    assert image_only.local_vectors is None and image_only.alpha == 0.0 and image_only.n_masks == 0
    np.testing.assert_array_equal(convex_score(q, t)[0], convex_score(dict(q), dict(t))[0])


def test_save_replaces_only_a_checkpoint(tmp_path):
    from dermretr._errors import OutputError
    from dermretr.models.retriever import is_checkpoint

    torch.manual_seed(4)
    r = Retriever(create("dermretr-tiny", device="cpu"), kind="global")
    path = r.save(tmp_path / "model.pt")
    before = path.stat().st_mtime_ns
    assert is_checkpoint(path) and r.save(path, extra={"again": 1}) == path  # saving again replaces its own file
    assert torch.load(path, weights_only=True)["extra"] == {"again": 1} and path.stat().st_mtime_ns >= before
    for name, content in (("results.json", b'{"my": "results"}'), ("weights.pt", b"not ours")):
        mine = tmp_path / name
        mine.write_bytes(content)
        assert not is_checkpoint(mine)
        with pytest.raises(OutputError, match=f"{name} exists and is not a file dermretr wrote"):
            r.save(mine)
        assert mine.read_bytes() == content
    plain = tmp_path / "state.pt"  # a torch file that is not a dermretr checkpoint (a bare state_dict)
    torch.save(r.state_dict(), plain)
    assert not is_checkpoint(plain)
    with pytest.raises(OutputError, match="not a file dermretr wrote"):
        r.save(plain)
    with pytest.raises(OutputError, match="is a folder"):
        r.save(tmp_path)
