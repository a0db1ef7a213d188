"""Case index with a real (tiny) model: build vs brute force, query images, model checks, the command line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DermretrError
from dermretr.cli import main
from dermretr.index import CaseIndex
from dermretr.models.retriever import convex_score

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
    t = replace(t, local_vectors=t.local_vectors.astype(np.float16).astype(np.float32))  # stored as float16
    s, _, _ = convex_score(q, t, alpha=index.alpha)
    want = cases["case_id"].to_numpy()[np.argsort(-s[0], kind="stable")[:5]]
    assert hits["case_id"].tolist() == want.tolist()
    assert hits.attrs["descriptors"] == {"streaks": "irregular", "blue_whitish_veil": "present"}


def test_a_reference_case_excludes_itself(tiny):
    index, cases = tiny["index"], tiny["cases"]
    ref = cases.iloc[3]
    more = index.search(ref["image_path"], "", k=6)
    assert more["case_id"].iloc[0] == ref["case_id"]  # "cases like this image": the reference finds itself first
    hits = index.search(ref["image_path"], "", k=5, exclude=ref["case_id"])
    want = more[more["case_id"] != ref["case_id"]].head(5).reset_index(drop=True)
    want["rank"] = range(1, 6)
    pd.testing.assert_frame_equal(hits, want)
    assert hits.attrs["descriptors"] == {}
    with_text = index.search(ref["image_path"], "blue-whitish veil", k=6)
    pd.testing.assert_frame_equal(index.search(ref["image_path"], "blue-whitish veil", k=5, exclude={ref["case_id"]}),
                                  with_text[with_text["case_id"] != ref["case_id"]].head(5).reset_index(drop=True)
                                  .assign(rank=range(1, 6)))
    refs = cases.iloc[[1, 2]]
    batch = index.search_batch(refs["image_path"].tolist(), ["", "streaks"], k=4, exclude=list(refs["case_id"]))
    assert batch.groupby("query").size().tolist() == [4, 4]
    assert not any(cid == refs["case_id"].iloc[q] for q, cid in zip(batch["query"], batch["case_id"]))


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
    assert {"s_global", "s_local", "diagnosis", "fitzpatrick", "matches", "contradicts"} <= set(records[0])
    # the same search in Python gives the same answer, once the query image's own case is left out
    own = tiny["cases"]["case_id"].iloc[5]
    assert own not in {r["case_id"] for r in records}
    index = CaseIndex.open(out, device="cpu")
    found = index.search(img, "blue-whitish veil", k=5, exclude=own)["case_id"].tolist()
    assert [r["case_id"] for r in records] == found

    group = tiny["cases"]["diagnosis_group"].value_counts().index[0]
    assert main(["search", "--index", str(out), "--image", img, "--text", "my own words", "-k", "3",
                 "--filter", f"diagnosis_group={group}"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    assert lines[header].split() == ["rank", "case", "score", "s_global", "s_local", "diagnosis", "skin", "image"]
    assert len(lines) == header + 4 and "names no finding dermretr knows" in captured.out

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
    assert "norun: no such folder; give the --out folder of `dermretr train`" in capsys.readouterr().err
    assert main(["search", "--index", str(tmp_path / "none"), "--image", "x.jpg"]) == 2
    assert "index folder not found" in capsys.readouterr().err
