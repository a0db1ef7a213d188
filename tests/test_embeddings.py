"""The typed embedding record: validation, the transitional dict view, convex scores, and its use by the index."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from index_fixtures import small_cases, small_targets

from dermretr._errors import DermretrError
from dermretr.index import CaseIndex
from dermretr.models.embeddings import DEFAULT_ALPHA, Embeddings, EncodingCache, convex_score


def _record(n=4, m=2, d=3, alpha=0.25, local=True) -> Embeddings:
    rng = np.random.default_rng(0)
    return Embeddings(rng.normal(size=(n, d)).astype(np.float32),
                      rng.normal(size=(n, m, d)).astype(np.float32) if local else None, alpha)


def test_fields_sizes_and_repr():
    e = _record()
    assert (len(e), e.dim, e.n_masks, e.alpha) == (4, 3, 2, 0.25)
    assert _record(local=False).n_masks == 0 and _record(local=False).local_vectors is None
    assert repr(e) == "Embeddings(n=4, dim=3, n_masks=2, alpha=0.25, dtype=float32)"
    assert Embeddings(np.zeros((2, 3))).alpha == 0.0 and isinstance(Embeddings(np.zeros((2, 3)), alpha=1).alpha, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.alpha = 0.5  # type: ignore[misc]  # frozen: the assignment is the point of the test
    again = dataclasses.replace(e, alpha=0.5)
    assert again.alpha == 0.5 and again.global_vectors is e.global_vectors  # no copies


@pytest.mark.parametrize("kwargs, message", [
    ({"global_vectors": [[1.0, 2.0]]}, "Embeddings.global_vectors must be a numpy array [n, D], got [[1.0, 2.0]]"),
    ({"global_vectors": np.zeros(3)}, "must be a float array [n, D], got a float64 array of shape (3,)"),
    ({"global_vectors": np.zeros((2, 3), np.int64)}, "got a int64 array of shape (2, 3)"),
    ({"local_vectors": np.zeros((2, 3))}, "Embeddings.local_vectors must be a float array [n, M, D]"),
    ({"local_vectors": np.zeros((3, 1, 3))}, "must be [n=2, M, D=3], got shape (3, 1, 3)"),
    ({"local_vectors": np.zeros((2, 1, 4))}, "must be [n=2, M, D=3], got shape (2, 1, 4)"),
    ({"local_vectors": np.zeros((2, 0, 3))}, "must be [n=2, M, D=3], got shape (2, 0, 3)"),
    ({"alpha": 1.5}, "alpha (the weight of local evidence) must be in [0, 1], got 1.5"),
    ({"alpha": "high"}, "must be a number in [0, 1], got 'high'"),
    ({"alpha": None}, "must be a number in [0, 1], got None"),
])
def test_bad_records_are_clear_errors(kwargs, message):
    args = {"global_vectors": np.zeros((2, 3), np.float32), **kwargs}
    with pytest.raises(DermretrError) as info:
        Embeddings(**args)
    assert message in str(info.value)


def test_the_older_dict_keys_still_read_the_record():
    e = _record()
    assert e["global"] is e.global_vectors and e["local"] is e.local_vectors and e["alpha"] == 0.25
    assert e.get("local") is e.local_vectors and e.get("nothing") is None and e.get("nothing", 3) == 3
    assert "local" in e and "alpha" in e and "global_vectors" not in e
    assert list(e.keys()) == ["global", "local", "alpha"] and list(e) == ["global", "local", "alpha"]
    as_dict = dict(e)
    assert set(as_dict) == {"global", "local", "alpha"} and as_dict["global"] is e.global_vectors
    assert {**e}.keys() == as_dict.keys() and dict(e.items()).keys() == as_dict.keys()
    assert e.values()[2] == 0.25
    with pytest.raises(KeyError):
        e["global_vectors"]
    with pytest.raises(KeyError):
        e[0]  # type: ignore[index]  # a row index is not a key: the error is the point
    assert _record(local=False).get("local") is None


def test_from_mapping():
    g = np.ones((2, 3), np.float32)
    e = Embeddings.from_mapping({"global": g, "local": None, "alpha": 0.3})
    assert e.global_vectors is g and e.local_vectors is None and e.alpha == pytest.approx(0.3)
    assert Embeddings.from_mapping({"global": g}).alpha == 0.0
    assert Embeddings.from_mapping({"global": g, "alpha": None}).alpha == 0.0
    assert Embeddings.from_mapping(e) is e
    for bad in ({"local": None}, [g], None):
        with pytest.raises(DermretrError, match="embeddings must be a dict with a 'global' array"):
            Embeddings.from_mapping(bad)  # type: ignore[arg-type]  # bad input on purpose


def test_convex_score_takes_records_and_dicts_alike():
    q, t = _record(n=3, alpha=0.25), _record(n=5)
    s, sg, sl = convex_score(q, t)
    assert s.shape == sg.shape == sl.shape == (3, 5)
    np.testing.assert_allclose(s, 0.25 * sl + 0.75 * sg, atol=1e-6)
    for qq, tt in ((dict(q), t), (q, dict(t)), (dict(q), dict(t))):
        for got, want in zip(convex_score(qq, tt), (s, sg, sl)):
            np.testing.assert_array_equal(got, want)
    # a query dict without "alpha" weighs local evidence as the retriever does by default
    no_alpha = {"global": q.global_vectors, "local": q.local_vectors}
    np.testing.assert_allclose(convex_score(no_alpha, t)[0], DEFAULT_ALPHA * sl + (1 - DEFAULT_ALPHA) * sg,
                               atol=1e-6)
    np.testing.assert_allclose(convex_score(q, t, alpha=1.0)[0], sl, atol=1e-6)
    plain = convex_score(_record(n=3, local=False), t)
    np.testing.assert_array_equal(plain[0], plain[1])
    assert not plain[2].any()


def test_the_index_takes_records_and_gives_them_back():
    targets = small_targets()
    record = Embeddings(targets["global"], targets["local"], targets["alpha"])
    from_dict, from_record = CaseIndex.from_embeddings(targets, small_cases()), \
        CaseIndex.from_embeddings(record, small_cases())
    assert from_record.alpha == pytest.approx(0.4) and from_record.manifest["n_masks"] == 2
    back = from_record.targets()
    assert isinstance(back, Embeddings) and back.local_vectors is not None
    assert back.local_vectors.dtype == np.float32 and back.alpha == from_record.alpha
    np.testing.assert_array_equal(back.global_vectors, targets["global"])
    queries = Embeddings(back.global_vectors[:3], back.local_vectors[:3], back.alpha)
    hits = from_record.search_vectors(queries, k=4)
    pd.testing.assert_frame_equal(hits, from_dict.search_vectors(dict(queries), k=4))
    assert hits.groupby("query")["case_id"].first().tolist() == ["c000", "c001", "c002"]
    # a record from the index builds the same index again
    again = CaseIndex.from_embeddings(back, from_record.cases)
    pd.testing.assert_frame_equal(again.search_vectors(queries, k=4), hits)


def test_a_query_dict_without_alpha_weighs_local_evidence_as_convex_score_does():
    """Older query dicts without "alpha" scored with DEFAULT_ALPHA; the record must not turn that into 0."""
    from dermretr.evaluate import case_scores
    from dermretr.models.embeddings import DEFAULT_ALPHA, Embeddings, convex_score

    rng = np.random.default_rng(0)
    q = {"global": rng.normal(size=(3, 4)).astype(np.float32), "local": rng.normal(size=(3, 2, 4)).astype(np.float32)}
    t = {"global": rng.normal(size=(2, 4)).astype(np.float32), "local": rng.normal(size=(2, 2, 4)).astype(np.float32)}
    assert Embeddings.from_mapping(q).alpha == DEFAULT_ALPHA
    np.testing.assert_allclose(convex_score(Embeddings.from_mapping(q), t)[0], convex_score(q, t)[0])
    cases = pd.DataFrame({"case_id": list("abcde"), "patient_id": list("pqrst"), "image_path": list("vwxyz"),
                          "diagnosis": "melanoma", "diagnosis_group": "MEL",
                          "split": ["train", "train", "test", "test", "test"]})
    _, _, s, _ = case_scores(None, cases, queries=q, gallery=t)
    np.testing.assert_allclose(s, convex_score(q, t)[0], rtol=1e-6)


def test_integer_arrays_from_older_code_become_float32():
    from dermretr.models.embeddings import Embeddings

    e = Embeddings.from_mapping({"global": np.eye(2, dtype=np.int64)})
    assert e.global_vectors.dtype == np.float32 and e.alpha == 0.0


class _Counting:
    """A stand-in retriever with local vectors that records every image (and text) it encodes."""

    kind, alpha = "full", 0.3

    def __init__(self):
        self.targets, self.queries = [], []

    @staticmethod
    def _vectors(keys):
        g = np.array([[float(sum(map(ord, k))), float(len(k))] for k in keys], np.float32)
        return Embeddings(g, np.stack([g, 2 * g], axis=1), alpha=0.3)

    def encode_targets(self, images, **_):
        if not isinstance(images, list):
            self.targets.append("batch")
            return self._vectors(["x"] * len(images))
        self.targets += images
        return self._vectors(images)

    def encode_queries(self, images, texts, **_):
        self.queries += list(zip(images, texts))
        return self._vectors([f"{i}|{t}" for i, t in zip(images, texts)])


def test_encoding_cache_encodes_each_image_and_query_once_and_gives_the_same_records():
    inner = _Counting()
    model = EncodingCache(inner)
    assert model.kind == "full" and model.alpha == 0.3  # the wrapped retriever's attributes
    first = model.encode_targets(["a.png", "b.png"])
    again = model.encode_targets(["b.png", "c.png", "a.png", "b.png"], batch_size=8)
    plain = _Counting().encode_targets(["b.png", "c.png", "a.png", "b.png"])
    np.testing.assert_array_equal(again.global_vectors, plain.global_vectors)
    np.testing.assert_array_equal(again.local_vectors, plain.local_vectors)
    assert again.alpha == 0.3 and len(first) == 2
    assert inner.targets == ["a.png", "b.png", "c.png"]  # each image once, whatever the order or the repeats
    model.encode_queries(["a.png", "a.png"], ["with streaks", "with veil"])
    q = model.encode_queries(["a.png", "a.png"], ["with veil", "with streaks"])
    assert inner.queries == [("a.png", "with streaks"), ("a.png", "with veil")]  # keyed by image and text
    expected = _Counting().encode_queries(["a.png"] * 2, ["with veil", "with streaks"])
    np.testing.assert_array_equal(q.global_vectors, expected.global_vectors)
    # a batch that is not a list of paths (a tensor, PIL images) has no key: it is encoded every time
    model.encode_targets(np.zeros((2, 3)))
    model.encode_targets(np.zeros((2, 3)))
    assert inner.targets.count("batch") == 2
