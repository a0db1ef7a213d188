"""Case index on disk: save/load round trips, refused folders, interrupted saves, format errors."""

from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pandas as pd
import pytest
from index_fixtures import build as _build
from index_fixtures import cases as _cases
from index_fixtures import queries as _queries
from index_fixtures import targets as _targets

from dermretr._errors import DermretrError, OutputError
from dermretr.data.cases import validate_cases
from dermretr.index import INDEX_FORMAT, CaseIndex, _store

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
        monkeypatch.setattr(faiss, "write_index", boom)
    elif where == "cases":
        monkeypatch.setattr(_store, "write_cases", boom)  # after index.faiss and the .npy files
    elif where == "manifest":
        monkeypatch.setattr(json, "dumps", boom)
    else:  # the old folder is moved away, then moving the new one in fails
        real = os.replace
        calls = []

        def replace(src, dst):
            calls.append(src)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
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



def test_case_table_round_trip_keeps_values(tmp_path):
    cases = validate_cases(_cases(12))
    index = CaseIndex.from_embeddings(_targets(12), cases)
    loaded = CaseIndex.load(index.save(tmp_path / "i"))
    assert loaded.cases["note"].tolist() == cases["note"].tolist()  # empty strings stay empty, not NA
    assert loaded.cases["age"].dtype == np.int64 and loaded.cases["ita"].tolist() == cases["ita"].tolist()
