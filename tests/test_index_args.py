"""Case index arguments: every bad argument of the public methods is one clear error, before any encoding."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from index_fixtures import D, M, N, first_query, one_line_error, small_cases, small_index, small_targets

from dermretr.index import CaseIndex, IndexWarning

# ---------------------------------------------------------------------------- arguments of the public methods


@pytest.mark.parametrize("name, value, message", [
    ("rerank", 0, "rerank must be at least 1, got 0"), ("rerank", "abc", "rerank must be an integer, got 'abc'"),
    ("rerank", True, "rerank must be an integer, got True"), ("rerank", 2.5, "rerank must be an integer"),
    ("nprobe", -1, "nprobe must be at least 1"), ("nprobe", None, "nprobe must be an integer, got None"),
    ("ef_search", "128", "ef_search must be an integer, got '128'"),
    ("exact_filter_below", -1, "exact_filter_below must be at least 0"),
])
def test_bad_search_settings(name, value, message):
    index = small_index()
    before = getattr(index, name)
    one_line_error(lambda: setattr(index, name, value), message)
    assert getattr(index, name) == before
    setattr(index, name, np.int64(7))
    assert getattr(index, name) == 7 and type(getattr(index, name)) is int
    assert len(index.search_vectors(first_query(index), k=3)) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"k": True}, "k must be an integer, got True"), ({"k": "5"}, "k must be an integer, got '5'"),
    ({"k": None}, "k must be an integer, got None"), ({"k": 31}, "k=31 is larger than the database (30 cases)"),
    ({"alpha": "high"}, "must be a number in [0, 1], got 'high'"), ({"alpha": float("nan")}, "in [0, 1], got nan"),
    ({"alpha": True}, "must be a number in [0, 1], got True"), ({"alpha": 1.5}, "in [0, 1], got 1.5"),
    ({"alpha": [0.5]}, "must be a number in [0, 1], got [0.5]"),
    ({"filters": ["fitzpatrick"]}, "filters must be a dict column -> allowed values"),
    ({"filters": "fitzpatrick=5"}, "filters must be a dict column -> allowed values"),
    ({"filters": {"skin": [5]}}, "cannot filter on unknown column 'skin'; columns: case_id, patient_id"),
    ({"filters": {5: [5]}}, "cannot filter on unknown column 5; columns:"),
    ({"filters": {"fitzpatrick": {"a": 1}}}, "filter 'fitzpatrick': the allowed values must be a list"),
    ({"filters": {"diagnosis_group": [["MEL"]]}}, "each allowed value must be a str, number or bool, got ['MEL']"),
    ({"filters": {"fitzpatrick": []}}, "filter 'fitzpatrick' has no allowed values"),
])
def test_bad_search_vectors_arguments(kwargs, message):
    index = small_index()
    one_line_error(lambda: index.search_vectors(first_query(index), **kwargs), message)


@pytest.mark.parametrize("queries, message", [
    ({"global": "abc"}, "queries['global'] must be a numeric array, got 'abc'"),
    ({"global": [[1.0, "x"] * 4]}, "queries['global'] must be a numeric array"),
    ({"global": np.zeros((0, D), np.float32)}, "holds no query vector"),
    ({"global": None}, "queries['global'] must be a numeric array, got None"),
    ({"global": np.ones((1, D)), "local": np.full((1, M, D), np.nan)}, "query local vectors hold NaN"),
    ({"global": np.ones((1, D)), "local": "x"}, "queries['local'] must be a numeric array"),
    ([np.ones(D)], "queries must be a dict with a 'global' array"),
])
def test_bad_query_vectors(queries, message):
    one_line_error(lambda: small_index().search_vectors(queries, k=3), message)


@pytest.mark.parametrize("kwargs, message", [
    ({"targets": {"global": "abc", "local": None}}, "targets['global'] must be a numeric array"),
    ({"targets": {"global": [["a"] * D] * N}}, "targets['global'] must be a numeric array"),
    ({"targets": {"global": small_targets()["global"], "local": [["x"]]}}, "targets['local'] must be a numeric array"),
    ({"targets": {"global": small_targets()["global"], "local": np.zeros((N, 0, D))}}, "must be [n=30, M>0, D=8]"),
    ({"targets": {"global": small_targets()["global"], "local": np.full((N, M, D), 1e6)}}, "too large for float16"),
    ({"alpha": "high"}, "alpha (the weight of local evidence) must be a number in [0, 1], got 'high'"),
    ({"targets": small_targets(local=False), "alpha": 2.0}, "must be in [0, 1], got 2.0"),
    ({"kind": "flat", "ef_search": "x"}, "ef_search must be an integer, got 'x'"),
    ({"kind": "flat", "nlist": 0}, "nlist must be at least 1, got 0"),
    ({"kind": "ivf", "seed": "x"}, "seed must be an integer, got 'x'"),
    ({"kind": ["flat"]}, "unknown index kind ['flat']"),
    ({"rerank": None}, "rerank must be an integer, got None"),
    ({"model_info": "x"}, "model_info must be a dict"),
    ({"cases": small_cases().assign(rank=1)}, "column(s) ['rank'] whose names search results use"),
    ({"kind": "hnsw", "ef_search": 2**40}, "ef_search must be at most 2147483647"),
    ({"kind": "hnsw", "ef_construction": 2**40}, "ef_construction must be at most 2147483647"),
    ({"kind": "ivf", "seed": 2**70}, "seed must be at most 2147483647"),
    ({"kind": "ivf", "seed": -1}, "seed must be at least 0"),
    ({"kind": "ivf", "nlist": 2**70}, "nlist must be at most 2147483647"),
    ({"kind": "ivfpq", "targets": small_targets(1), "cases": small_cases(1)},
     "FAISS could not train the ivfpq index on 1 cases"),
])
def test_bad_from_embeddings_arguments(kwargs, message):
    args = {"targets": small_targets(), "cases": small_cases(), **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IndexWarning)  # a 1-case IVF-PQ is first shrunk to 1-bit codes
        one_line_error(lambda: CaseIndex.from_embeddings(**args), message)


# ---------------------------------------------------------------------------- with a tiny model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from dermretr.data import load
    from dermretr.data.synth import generate
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    tmp = tmp_path_factory.mktemp("faults")
    root = generate(tmp / "ds", n_cases=8, seed=3, image_size=64, workers=1, progress=False)
    cases = load("synthetic", root)
    torch.manual_seed(0)
    retriever = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    index = CaseIndex.build(retriever, cases, kind="flat")
    return {"root": root, "cases": cases, "retriever": retriever, "index": index, "tmp": tmp}


@pytest.fixture
def no_encoding(tiny, monkeypatch):
    """Every bad argument must be refused before any query is encoded."""
    def boom(*args, **kwargs):
        raise AssertionError("a bad argument reached the encoder")

    monkeypatch.setattr(tiny["retriever"], "encode_queries", boom)
    return tiny["index"]


@pytest.mark.parametrize("image, text, kwargs, message", [
    (42, "", {}, "query image must be a file path or a PIL image, got 42"),
    (None, "", {}, "query image must be a file path or a PIL image, got None"),
    (b"x.jpg", "", {}, "query image must be a file path or a PIL image, got b'x.jpg' (bytes)"),
    (np.zeros((8, 8, 3), np.uint8), "", {}, "convert it with PIL.Image.fromarray"),
    (["a.jpg"], "", {}, "for several queries use search_batch"),
    ("", "", {}, "query image: the image path is empty"),
    ("a\0b.jpg", "", {}, "contains a NUL character"),
    ("FOLDER", "", {}, "is a folder, not an image file"),
    ("TEXTFILE", "", {}, "is not an image file PIL can read"),
    ("MISSING", "", {}, "query image: image file not found"),
    ("IMG", 42, {}, "text must be a str (the descriptor or modification text), got 42"),
    ("IMG", ["streaks"], {}, "text must be a str"),
    ("IMG", "", {"k": 0}, "k (results per query) must be at least 1, got 0"),
    ("IMG", "", {"k": 2.0}, "k must be an integer, got 2.0"),
    ("IMG", "", {"k": False}, "k must be an integer, got False"),
    ("IMG", "", {"k": 9}, "k=9 is larger than the database (8 cases)"),
    ("IMG", "", {"alpha": "0.5"}, "must be a number in [0, 1], got '0.5'"),
    ("IMG", "", {"alpha": float("nan")}, "must be in [0, 1], got nan"),
    ("IMG", "", {"filters": {"skin_type": ["V"]}}, "unknown column 'skin_type'; columns: case_id"),
    ("IMG", "", {"filters": [("fitzpatrick", 5)]}, "filters must be a dict"),
    ("IMG", "", {"filters": {"fitzpatrick": ["V"]}}, "filter 'fitzpatrick': 'V' is not a number"),
    ("IMG", "", {"exclude": 3}, "exclude entry 0 must be a case id or a collection of case ids, got 3"),
    ("IMG", "", {"exclude": ["c1", 2]}, "exclude entry 0: case ids are strings, got 2"),
])
def test_bad_search_arguments(tiny, no_encoding, tmp_path, image, text, kwargs, message):
    files = {"FOLDER": tmp_path, "TEXTFILE": tmp_path / "notes.jpg", "MISSING": tmp_path / "gone.jpg",
             "IMG": tiny["cases"]["image_path"].iloc[0]}
    (tmp_path / "notes.jpg").write_text("not an image\n")
    if isinstance(image, str) and image in files:
        image = files[image]
    parts = [message] + ([str(image)] if message.startswith(("is a folder", "is not an image", "query image: image"))
                         else [])
    one_line_error(lambda: no_encoding.search(image, text, **{"k": 3, **kwargs}), *parts)


@pytest.mark.parametrize("images, texts, kwargs, message", [
    ("IMG", ["x"], {}, "images must be a list of query images"),
    (["IMG"], "streaks", {}, "texts must be a list of query texts"),
    (["IMG"], [3], {}, "query text 0 must be a str, got 3"),
    (["IMG", "IMG"], ["x"], {}, "2 query images but 1 texts"),
    ([], [], {}, "no query: give at least one image and text"),
    (["IMG"], ["x"], {"batch_size": 0}, "batch_size must be at least 1, got 0"),
    (["IMG"], ["x"], {"batch_size": "8"}, "batch_size must be an integer, got '8'"),
    (42, ["x"], {}, "images must be a list of query images"),
    (["IMG", "IMG"], ["x", "y"], {"exclude": ["c1"]}, "exclude has 1 entries for 2 queries"),
    (["IMG"], ["x"], {"exclude": 7}, "exclude must be a case id, a set of case ids"),
])
def test_bad_search_batch_arguments(tiny, no_encoding, images, texts, kwargs, message):
    img = tiny["cases"]["image_path"].iloc[0]
    images = img if images == "IMG" else [img if i == "IMG" else i for i in images] if isinstance(images, list) \
        else images
    one_line_error(lambda: no_encoding.search_batch(images, texts, **{"k": 3, **kwargs}), message)


def test_good_arguments_still_search(tiny):
    from PIL import Image

    index, img = tiny["index"], tiny["cases"]["image_path"].iloc[0]
    hits = index.search(Path(img), None, k=np.int64(3), alpha=np.float32(0.5), filters=None)
    assert len(hits) == 3 and np.isfinite(hits["score"]).all()
    with Image.open(img) as pil:
        batch = index.search_batch((pil, img), ("streaks", None), k=2)
    assert batch.groupby("query").size().tolist() == [2, 2]


@pytest.mark.parametrize("bad, message", [
    ("empty", "the case table is empty: nothing to index"),
    ("no image_path column", "missing required column(s) ['image_path']"),
    ("image_path missing", "column 'image_path': missing or empty values"),
    ("image gone", "case image: image file not found"),
    ("image is a folder", "is a folder, not an image file"),
    ("score column", "column(s) ['score'] whose names search results use"),
    ("not a table", "a case table must be a pandas DataFrame, got list"),
])
def test_build_with_a_bad_case_table(tiny, bad, message, tmp_path):
    from dermretr.data.cases import empty_cases

    cases = tiny["cases"].copy()
    if bad == "empty":
        cases = empty_cases()
    elif bad == "no image_path column":
        cases = cases.drop(columns="image_path")
    elif bad == "image_path missing":
        cases["image_path"] = cases["image_path"].astype(object)
        cases.loc[2, "image_path"] = None
    elif bad == "image gone":
        cases.loc[2, "image_path"] = str(tmp_path / "gone.jpg")
    elif bad == "image is a folder":
        cases.loc[2, "image_path"] = str(tmp_path)
    elif bad == "score column":
        cases["score"] = 1.0
    else:
        cases = cases.to_dict("records")
    one_line_error(lambda: CaseIndex.build(tiny["retriever"], cases), message)


@pytest.mark.parametrize("retriever, kwargs, message", [
    # a string is a model name or folder for Retriever.from_pretrained (the released model's way in)
    ("model.pt", {}, "model folder not found: model.pt"),
    (None, {}, "retriever must be a dermretr Retriever, got None"),
    ("R", {"kind": "annoy"}, "unknown index kind 'annoy'"),
    ("R", {"nlists": 4}, "unknown index option(s) nlists; options: alpha, rerank"),
    ("R", {"kind": "ivf", "nprobe": "all"}, "nprobe must be an integer, got 'all'"),
    ("R", {"batch_size": 0}, "batch_size must be at least 1"),
    ("R", {"batch_size": 2.5}, "batch_size must be an integer"),
    ("R", {"checkpoint": 5}, "checkpoint must be a path"),
    ("R", {"checkpoint": "/nowhere/best.pt"}, "checkpoint not found"),
])
def test_build_with_bad_arguments_fails_before_encoding(tiny, monkeypatch, retriever, kwargs, message):
    r = tiny["retriever"]

    def boom(*args, **kw):
        raise AssertionError("a bad argument reached the encoder")

    monkeypatch.setattr(r, "encode_targets", boom)
    one_line_error(lambda: CaseIndex.build(r if retriever == "R" else retriever, tiny["cases"], **kwargs), message)


@pytest.mark.parametrize("kind", ["image", "global", "late_fusion", "clip4cir", "text"])
def test_build_with_retrievers_of_other_kinds(tiny, kind):
    """Every retriever kind indexes (global vectors only) and searches, or says clearly why not."""
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind=kind)
    index = CaseIndex.build(r, tiny["cases"])
    assert index.local_vectors is None and index.alpha == 0.0
    hits = index.search(tiny["cases"]["image_path"].iloc[1], "irregular streaks", k=3)
    assert len(hits) == 3 and np.isfinite(hits["score"]).all()
    other = CaseIndex.load(index.save(tiny["tmp"] / f"idx-{kind}", overwrite=True))
    one_line_error(lambda: CaseIndex.load(tiny["tmp"] / f"idx-{kind}", tiny["retriever"]), "another model")
    assert len(other) == len(index)


def test_load_and_open_with_bad_arguments(tiny):
    folder = tiny["index"].save(tiny["tmp"] / "idx-args", overwrite=True)
    one_line_error(lambda: CaseIndex.load(folder, "model.pt"), "retriever must be a dermretr Retriever",
                    "CaseIndex.open(dir)")
    one_line_error(lambda: CaseIndex.load(folder, mmap="yes"), "mmap must be True or False")
    one_line_error(lambda: CaseIndex.load(folder, checkpoint=3), "checkpoint must be a path")
    one_line_error(lambda: CaseIndex.open(folder, device=0), "device must be a str")
    one_line_error(lambda: CaseIndex.open(folder), "does not record the checkpoint it was built from")
