"""Case index: two-stage search vs brute force, filters, save/load, model checks, bad input, CLI."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest

import dermretr.index as index_module
from dermretr._errors import DataWarning, DermretrError, OutputError
from dermretr.cli import main
from dermretr.data.cases import validate_cases
from dermretr.index import INDEX_FORMAT, CaseIndex, IndexWarning
from dermretr.models.retriever import convex_score

GROUPS = np.array(["MEL", "NEV", "BCC", "SK", "MISC"])


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _targets(n: int, d: int = 24, m: int = 3, seed: int = 0, local: bool = True) -> dict:
    """Clustered unit vectors; locals near the global vector of their case, with their own noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, d))
    g = _unit(centers[rng.integers(0, 12, n)] + 0.7 * rng.normal(size=(n, d)))
    out = {"global": g, "local": None, "alpha": 0.6}
    if local:
        out["local"] = _unit(g[:, None, :] + 0.9 * rng.normal(size=(n, m, d)))
    return out


def _queries(targets: dict, q: int = 12, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(targets["global"]), q)
    g = targets["global"]
    out = {"global": _unit(g[rows] + 0.3 * rng.normal(size=(q, g.shape[1]))), "local": None}
    if targets["local"] is not None:
        out["local"] = _unit(targets["local"][rows] + 0.5 * rng.normal(size=targets["local"][rows].shape))
    return out


def _cases(n: int) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({
        "case_id": [f"c{j:05d}" for j in i], "patient_id": [f"p{j // 2}" for j in i],
        "image_path": [f"/nowhere/{j}.jpg" for j in i], "diagnosis": "lesion",
        "diagnosis_group": GROUPS[i % 5], "fitzpatrick": i % 6 + 1,
        "malignant": (i % 5 == 0), "split": "train", "source": "demo",
        "ita": np.round(np.linspace(-40, 60, n), 3),  # extra columns survive save/load with their dtypes
        "note": np.where(i % 3 == 0, "", "seen twice"),
        "age": (20 + i % 60).astype(np.int64),
    })


def _brute_force(index: CaseIndex, queries: dict, k: int, alpha=None, allowed=None) -> tuple[np.ndarray, np.ndarray]:
    """Full convex score of every case, best k ids per query (ties by row)."""
    s, _, _ = convex_score(queries, index.targets(), alpha=index.alpha if alpha is None else alpha)
    if allowed is not None:
        s = np.where(allowed[None, :], s, -np.inf)
    rows = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    order = np.lexsort((rows, -s), axis=-1)[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def _ids(hits: pd.DataFrame, q: int) -> np.ndarray:
    return hits["case_id"].str[1:].astype(int).to_numpy().reshape(q, -1)


def _build(kind: str, targets: dict, n: int, **kw) -> CaseIndex:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IndexWarning)
        return CaseIndex.from_embeddings(targets, _cases(n), kind=kind, **kw)


# ---------------------------------------------------------------------------- two-stage search


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
@pytest.mark.parametrize("alpha", [None, 0.0, 1.0])
def test_two_stage_equals_brute_force_when_candidates_cover_the_database(kind, alpha):
    n, k = 600, 10
    targets = _targets(n)
    queries = _queries(targets)
    index = _build(kind, targets, n, rerank=n)
    if kind.startswith("ivf"):
        index.nprobe = index.faiss_index.nlist
    hits = index.search_vectors(queries, k=k, alpha=alpha)
    want, want_s = _brute_force(index, queries, k, alpha)
    np.testing.assert_array_equal(_ids(hits, len(want)), want)
    np.testing.assert_allclose(hits["score"].to_numpy().reshape(want.shape), want_s, atol=1e-5)
    assert list(hits["rank"][:k]) == list(range(1, k + 1))
    assert hits.groupby("query")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    a = index.alpha if alpha is None else alpha
    np.testing.assert_allclose(hits["score"], a * hits["s_local"] + (1 - a) * hits["s_global"], atol=1e-6)
    # the re-ranking matters: the global score alone orders differently
    global_only = np.argsort(-(queries["global"] @ targets["global"].T), axis=1)[:, :k]
    if a > 0:
        assert (global_only != want).any()


def test_recall_is_lost_as_the_candidate_pool_shrinks():
    n, k = 1500, 10
    targets = _targets(n, seed=3)
    queries = _queries(targets, q=40, seed=4)
    index = _build("flat", targets, n)
    want, _ = _brute_force(index, queries, k)
    recall = {}
    for rerank in (k, 50, 300, n):
        index.rerank = rerank
        got = _ids(index.search_vectors(queries, k=k), len(want))
        recall[rerank] = np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want)])
    assert recall[n] == 1.0
    assert recall[k] < recall[300] <= recall[n]
    assert recall[k] < 0.9


def test_global_only_index_scores_are_the_global_scores():
    n = 200
    targets = _targets(n, local=False)
    index = _build("hnsw", targets, n)
    assert index.local_vectors is None and index.manifest["n_masks"] == 0 and index.alpha == 0.0
    q = _queries(targets)
    hits = index.search_vectors(q, k=5)
    assert (hits["s_local"] == 0).all()
    np.testing.assert_allclose(hits["score"], hits["s_global"])
    want, _ = _brute_force(index, q, 5)
    np.testing.assert_array_equal(_ids(hits, len(want)), want)


# ---------------------------------------------------------------------------- filters


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_filters_return_k_matching_cases(kind):
    n, k = 900, 10
    targets = _targets(n, seed=5)
    queries = _queries(targets)
    index = _build(kind, targets, n, rerank=n)
    if kind == "ivf":
        index.nprobe = index.faiss_index.nlist
    filters = {"fitzpatrick": [5, 6], "diagnosis_group": ["MEL"]}
    hits = index.search_vectors(queries, k=k, filters=filters)
    assert hits.groupby("query").size().tolist() == [k] * len(queries["global"])
    assert hits["fitzpatrick"].isin([5, 6]).all() and (hits["diagnosis_group"] == "MEL").all()
    allowed = index.cases["fitzpatrick"].isin([5, 6]).to_numpy() & (index.cases["diagnosis_group"] == "MEL").to_numpy()
    want, _ = _brute_force(index, queries, k, allowed=allowed)
    np.testing.assert_array_equal(_ids(hits, len(want)), want)
    # text values as the CLI gives them, any case
    again = index.search_vectors(queries, k=k, filters={"fitzpatrick": ["5", "6"], "diagnosis_group": "mel"})
    pd.testing.assert_frame_equal(again, hits)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_filtered_faiss_search_still_returns_k(kind, monkeypatch):
    """The FAISS stage with an ID selector (forced here) never returns fewer than k when k cases match."""
    n, k = 3000, 10
    targets = _targets(n, seed=6, local=False)
    queries = _queries(targets, q=20)
    index = _build(kind, targets, n, rerank=20)
    monkeypatch.setattr(index_module, "_EXACT_BLOCK", 97)  # exact scoring merges many row blocks
    filters = {"diagnosis_group": ["MEL", "NEV"]}
    mask = index._allowed(filters)
    exact = index.search_vectors(queries, k=k, filters=filters)  # 1200 matches: scored exactly, whatever the kind
    np.testing.assert_array_equal(_ids(exact, 20), _brute_force(index, queries, k, allowed=mask)[0])
    index.exact_filter_below = 0
    index.nprobe = 1  # a sparse probe: some queries must fall back to exact scoring of the matches
    for filters in ({"diagnosis_group": ["MEL", "NEV", "BCC", "SK"]}, {"fitzpatrick": [6], "diagnosis_group": ["SK"]}):
        hits = index.search_vectors(queries, k=k, filters=filters)
        assert hits.groupby("query").size().tolist() == [k] * 20
        mask = index._allowed(filters)
        assert mask[hits["case_id"].str[1:].astype(int)].all()
        if kind == "flat":  # global-only and exact: equals brute force over the matches
            want, _ = _brute_force(index, queries, k, allowed=mask)
            np.testing.assert_array_equal(_ids(hits, 20), want)


def test_filters_matching_nothing_give_an_empty_result_and_a_warning():
    n = 100
    index = _build("flat", _targets(n), n)
    q = _queries(index.targets(), q=2)
    normal = index.search_vectors(q, k=3)
    with pytest.warns(DataWarning, match="no case matches the filters"):
        empty = index.search_vectors(q, k=3, filters={"diagnosis_group": ["XYZ"]})
    assert len(empty) == 0
    assert list(empty.columns) == list(normal.columns)
    assert (empty.dtypes == normal.dtypes).all()
    with pytest.warns(DataWarning, match="only 4 cases match"):  # fitzpatrick 6 and MEL: rows 5, 35, 65, 95
        few = index.search_vectors(q, k=10, filters={"fitzpatrick": [6], "diagnosis_group": ["MEL"]})
    assert few.groupby("query").size().tolist() == [4, 4]


def test_bad_filters_are_clear_errors():
    index = _build("flat", _targets(50), 50)
    q = _queries(index.targets(), q=1)
    with pytest.raises(DermretrError, match="unknown column 'skin_type'.*fitzpatrick"):
        index.search_vectors(q, k=3, filters={"skin_type": [5]})
    with pytest.raises(DermretrError, match="filter 'fitzpatrick': 'V' is not a number"):
        index.search_vectors(q, k=3, filters={"fitzpatrick": ["V"]})
    with pytest.raises(DermretrError, match="'maybe' is not a boolean"):
        index.search_vectors(q, k=3, filters={"malignant": ["maybe"]})
    hits = index.search_vectors(q, k=3, filters={"malignant": ["true"]})
    assert hits["malignant"].all()


@pytest.mark.parametrize("k, message", [(0, "at least 1, got 0"), (-3, "at least 1, got -3"),
                                        (51, r"k=51 is larger than the database \(50 cases\)"),
                                        (2.5, "k must be an integer")])
def test_bad_k(k, message):
    index = _build("hnsw", _targets(50), 50)
    with pytest.raises(DermretrError, match=message):
        index.search_vectors(_queries(index.targets(), q=1), k=k)


def test_bad_vectors_are_clear_errors():
    targets = _targets(40)
    with pytest.raises(DermretrError, match="40 target vectors but 39 cases"):
        CaseIndex.from_embeddings(targets, _cases(39))
    with pytest.raises(DermretrError, match="unknown index kind 'annoy'"):
        CaseIndex.from_embeddings(targets, _cases(40), kind="annoy")
    index = CaseIndex.from_embeddings(targets, _cases(40))
    with pytest.raises(DermretrError, match="shape \\(1, 8\\).*24-dimensional"):
        index.search_vectors({"global": np.ones((1, 8), np.float32)}, k=3)


def test_small_ivf_shrinks_its_lists_with_a_warning():
    with pytest.warns(IndexWarning, match=r"using nlist=2 lists instead of 50 \(asked\)"):
        index = CaseIndex.from_embeddings(_targets(100), _cases(100), kind="ivf", nlist=50)
    assert index.faiss_index.nlist == 2 and index.manifest["params"]["nlist"] == 2


# ---------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
def test_save_load_round_trip(tmp_path, kind):
    n = 300
    index = _build(kind, _targets(n, seed=8), n, rerank=50)
    if kind == "hnsw":
        index.ef_search = 77
    if kind.startswith("ivf"):
        index.nprobe = 2
    q = _queries(index.targets(), q=5)
    filters = {"fitzpatrick": [1, 2, 3]}
    before = index.search_vectors(q, k=7, alpha=0.3, filters=filters)
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temporary folders left
    loaded = CaseIndex.load(tmp_path / "idx")
    assert isinstance(loaded.local_vectors, np.memmap) and loaded.local_vectors.dtype == np.float16
    assert isinstance(loaded.global_vectors, np.memmap) and loaded.global_vectors.dtype == np.float32
    assert (loaded.rerank, loaded.kind, len(loaded)) == (50, kind, n)
    assert loaded.ef_search == (77 if kind == "hnsw" else 128) and loaded.nprobe == (2 if kind.startswith("ivf") else 1)
    pd.testing.assert_frame_equal(loaded.search_vectors(q, k=7, alpha=0.3, filters=filters), before)
    pd.testing.assert_frame_equal(loaded.cases, index.cases)
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert (m["format"], m["kind"], m["count"], m["dim"], m["n_masks"]) == (INDEX_FORMAT, kind, n, 24, 3)
    assert m["alpha"] == pytest.approx(0.6) and m["created"].endswith("+00:00") and m["dermretr_version"]
    assert repr(loaded).startswith(f"CaseIndex(kind='{kind}', count=300, dim=24, n_masks=3")


def test_save_refuses_foreign_or_existing_folders(tmp_path):
    index = _build("flat", _targets(30), 30)
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "ch1.docx").write_text("keep me")
    with pytest.raises(OutputError, match="is not a dermretr index"):
        index.save(tmp_path / "thesis", overwrite=True)
    assert (tmp_path / "thesis" / "ch1.docx").read_text() == "keep me"
    index.save(tmp_path / "idx")
    with pytest.raises(OutputError, match="already holds an index; pass overwrite=True"):
        index.save(tmp_path / "idx")
    index.save(tmp_path / "idx", overwrite=True)


@pytest.mark.parametrize("where", ["faiss", "cases", "manifest", "swap"])
def test_interrupted_save_leaves_the_previous_index_intact(tmp_path, monkeypatch, where):
    old = _build("flat", _targets(80, seed=1), 80)
    new = _build("hnsw", _targets(90, seed=2), 90)
    old.save(tmp_path / "idx")
    q = _queries(old.targets(), q=3)
    expected = CaseIndex.load(tmp_path / "idx").search_vectors(q, k=5)
    files = {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    if where == "faiss":
        monkeypatch.setattr(index_module.faiss, "write_index", boom)
    elif where == "cases":
        monkeypatch.setattr(CaseIndex, "_write_cases", boom)  # after index.faiss and the .npy files
    elif where == "manifest":
        monkeypatch.setattr(index_module.json, "dumps", boom)
    else:  # the old folder is moved away, then moving the new one in fails
        real = os.replace
        calls = []

        def replace(src, dst):
            calls.append(src)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real(src, dst)

        monkeypatch.setattr(index_module.os, "replace", replace)
    with pytest.raises((RuntimeError, OSError)):
        new.save(tmp_path / "idx", overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()} == files
    pd.testing.assert_frame_equal(CaseIndex.load(tmp_path / "idx").search_vectors(q, k=5), expected)


def test_format_errors(tmp_path):
    index = _build("flat", _targets(30), 30)
    folder = index.save(tmp_path / "idx")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(dict(manifest, format=INDEX_FORMAT + 1)))
    with pytest.raises(DermretrError, match=f"newer dermretr \\(index format {INDEX_FORMAT + 1}.*upgrade"):
        CaseIndex.load(folder)
    (folder / "manifest.json").write_text(json.dumps(dict(manifest, format=0)))
    with pytest.raises(DermretrError, match="older format .*rebuild it with `dermretr index"):
        CaseIndex.load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(DermretrError, match="no manifest.json: it is an index from an older dermretr format; rebuild"):
        CaseIndex.load(folder)
    with pytest.raises(DermretrError, match="index folder not found"):
        CaseIndex.load(tmp_path / "nothing")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    np.save(folder / "local.npy", np.zeros((30, 2, 24), np.float16))
    with pytest.raises(DermretrError, match="damaged: local.npy has 3008 bytes but 4448 were written"):
        CaseIndex.load(folder)
    manifest.pop("files")  # a manifest without file sizes: the array itself is checked
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DermretrError, match=r"damaged: local.npy holds a float16 array of shape \(30, 2, 24\), "
                                            r"manifest.json says float16 \(30, 3, 24\)"):
        CaseIndex.load(folder)


# ---------------------------------------------------------------------------- with a real (tiny) model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 24-case DermSynth set, two tiny retrievers saved as checkpoints, and an index built with the first."""
    import torch

    from dermretr.data import load
    from dermretr.data.synth import generate
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    tmp = tmp_path_factory.mktemp("index")
    root = generate(tmp / "ds", n_cases=24, seed=2, image_size=64, workers=1, progress=False)
    cases = load("synthetic", root)
    torch.manual_seed(0)
    a = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    torch.manual_seed(1)
    b = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    a.save(tmp / "a.pt")
    b.save(tmp / "b.pt")
    index = CaseIndex.build(a, cases, kind="hnsw", checkpoint=tmp / "a.pt", batch_size=16)
    index.save(tmp / "idx")
    return {"root": root, "cases": cases, "a": a, "b": b, "index": index, "tmp": tmp}


def test_build_matches_brute_force_with_the_model(tiny):
    index, a, cases = tiny["index"], tiny["a"], tiny["cases"]
    assert index.manifest["model"]["checkpoint_sha256"] and index.manifest["model"]["config"]["kind"] == "full"
    img = cases["image_path"].iloc[3]
    hits = index.search(img, "irregular streaks, blue-whitish veil", k=5)
    assert "query" not in hits.columns and list(hits.columns[:5]) == ["rank", "case_id", "score", "s_global", "s_local"]
    q = a.encode_queries([img], ["irregular streaks, blue-whitish veil"])
    t = a.encode_targets(cases["image_path"].tolist())
    t["local"] = t["local"].astype(np.float16).astype(np.float32)  # the index stores locals as float16
    s, _, _ = convex_score(q, t, alpha=index.alpha)
    want = cases["case_id"].to_numpy()[np.argsort(-s[0], kind="stable")[:5]]
    assert hits["case_id"].tolist() == want.tolist()
    assert hits.attrs["descriptors"] == {"streaks": "irregular", "blue_whitish_veil": "present"}


def test_free_text_without_descriptors_still_searches(tiny):
    index, img = tiny["index"], tiny["cases"]["image_path"].iloc[0]
    free = index.search(img, "patient says it itches since last summer", k=4)
    plain = index.search(img, "", k=4)
    assert len(free) == 4 and free.attrs["descriptors"] == {}
    assert not np.allclose(free["s_global"].to_numpy(), plain["s_global"].to_numpy())  # the text was used


def test_missing_or_corrupt_query_image(tiny, tmp_path):
    index = tiny["index"]
    missing = tmp_path / "nope.jpg"
    with pytest.raises(DermretrError, match=f"query image: image file not found: {missing}"):
        index.search(missing, "blue-whitish veil")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DermretrError, match=f"query image: .*{bad}"):
        index.search(bad, "blue-whitish veil")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DermretrError, match="is empty"):
        index.search(empty, "")


def test_loading_with_another_model_is_an_error(tiny):
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    folder, a, b, tmp = tiny["tmp"] / "idx", tiny["a"], tiny["b"], tiny["tmp"]
    loaded = CaseIndex.load(folder, a, checkpoint=tmp / "a.pt")
    img = tiny["cases"]["image_path"].iloc[1]
    pd.testing.assert_frame_equal(loaded.search(img, "regular dots", k=6),
                                  tiny["index"].search(img, "regular dots", k=6))
    with pytest.raises(DermretrError,
                       match=r"other weights of the same model .*rebuild the index with `dermretr index"):
        CaseIndex.load(folder, b)
    with pytest.raises(DermretrError,
                       match=r"built from checkpoint .*a\.pt \(sha256 [0-9a-f]{12}\) but .*b\.pt has sha256"):
        CaseIndex.load(folder, a, checkpoint=tmp / "b.pt")
    other = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="global")
    with pytest.raises(DermretrError, match=r"another model \(config hash [0-9a-f]{12}; this model's is [0-9a-f]{12}; "
                                            r"kind: index 'full', model 'global'"):
        CaseIndex.load(folder, other)
    vectors_only = CaseIndex.load(folder)
    with pytest.raises(DermretrError, match="no retriever to encode queries"):
        vectors_only.search(img, "")


def test_opening_an_index_needs_its_checkpoint(tiny, tmp_path):
    import shutil

    opened = CaseIndex.open(tiny["tmp"] / "idx", device="cpu")
    assert opened.retriever is not None and opened.retriever.kind == "full"
    ckpt = tmp_path / "moving.pt"
    shutil.copy(tiny["tmp"] / "a.pt", ckpt)
    index = CaseIndex.build(tiny["a"], tiny["cases"].head(6), checkpoint=ckpt)
    index.save(tmp_path / "idx")
    ckpt.unlink()
    with pytest.raises(DermretrError, match=f"checkpoint index .* was built with is gone: {ckpt}"):
        CaseIndex.open(tmp_path / "idx")
    shutil.copy(tiny["tmp"] / "b.pt", ckpt)  # a different file under the same name
    with pytest.raises(DermretrError, match="sha256"):
        CaseIndex.open(tmp_path / "idx", device="cpu")


# ---------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def run_dir(tiny):
    from dermretr.train import TrainConfig, fit

    run = tiny["tmp"] / "run"
    fit(TrainConfig(data=f"synthetic:{tiny['root']}", out=str(run), epochs=1, batch_size=8, image_size=64,
                    n_masks=2, device="cpu", progress=False))
    return run


def test_cli_index_and_search(tiny, run_dir, tmp_path, capsys):
    spec = f"synthetic:{tiny['root']}"
    out = tmp_path / "cli_idx"
    args = ["index", "--run", str(run_dir), "--data", spec, "--out", str(out), "--kind", "hnsw", "--no-progress"]
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("indexed 24 cases (hnsw, dim 128, 2 local vectors each") and str(out) in summary
    assert main(args) == 2
    assert "already holds an index" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--kind", "flat"]) == 0
    capsys.readouterr()

    img = tiny["cases"]["image_path"].iloc[5]
    assert main(["search", "--index", str(out), "--image", img, "--text", "blue-whitish veil", "-k", "5",
                 "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["case_id"] in set(tiny["cases"]["case_id"]) for r in records)
    scores = [r["score"] for r in records]
    assert scores == sorted(scores, reverse=True)
    assert {"s_global", "s_local", "diagnosis", "fitzpatrick"} <= set(records[0])
    # the same search in Python gives the same answer
    index = CaseIndex.open(out, device="cpu")
    assert [r["case_id"] for r in records] == index.search(img, "blue-whitish veil", k=5)["case_id"].tolist()

    group = tiny["cases"]["diagnosis_group"].value_counts().index[0]
    assert main(["search", "--index", str(out), "--image", img, "--text", "my own words", "-k", "3",
                 "--filter", f"diagnosis_group={group}"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split() == ["rank", "case_id", "diagnosis", "score", "s_global", "s_local"] and len(lines) == 4
    assert "used as free text" in captured.err

    assert main(["search", "--index", str(out), "--image", img, "-k", "3", "--filter", "diagnosis_group=XYZ",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [] and "warning: no case matches the filters" in captured.err


@pytest.mark.parametrize("extra, message", [
    (["-k", "0"], "k (results per query) must be at least 1"),
    (["-k", "1000"], "k=1000 is larger than the database (24 cases)"),
    (["--filter", "fitzpatrick"], "must look like COLUMN=V1,V2"),
    (["--image", "/nowhere/x.jpg"], "query image: image file not found: /nowhere/x.jpg"),
    (["--alpha", "1.5"], "alpha (the weight of local evidence) must be in [0, 1]"),
])
def test_cli_search_errors_are_one_line(tiny, extra, message, capsys):
    img = tiny["cases"]["image_path"].iloc[0]
    args = ["search", "--index", str(tiny["tmp"] / "idx"), "--image", img, "--text", "streaks"] + extra
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("dermretr: error: ") and message in err and err.count("\n") == 1


def test_cli_index_errors(tiny, tmp_path, capsys):
    assert main(["index", "--run", str(tmp_path / "norun"), "--data", f"synthetic:{tiny['root']}", "--out",
                 str(tmp_path / "i")]) == 2
    assert "checkpoints/best.pt not found" in capsys.readouterr().err
    assert main(["search", "--index", str(tmp_path / "none"), "--image", "x.jpg"]) == 2
    assert "index folder not found" in capsys.readouterr().err


def test_case_table_round_trip_keeps_values(tmp_path):
    cases = validate_cases(_cases(12))
    index = CaseIndex.from_embeddings(_targets(12), cases)
    loaded = CaseIndex.load(index.save(tmp_path / "i"))
    assert loaded.cases["note"].tolist() == cases["note"].tolist()  # empty strings stay empty, not NA
    assert loaded.cases["age"].dtype == np.int64 and loaded.cases["ita"].tolist() == cases["ita"].tolist()
