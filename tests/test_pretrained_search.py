"""Searching with a pretrained model given by name: CaseIndex.build/open, the query session and builder, the CLI.

A tiny model saved with ``save_pretrained`` stands in for the released one (any name or folder that
``Retriever.from_pretrained`` reads goes the same way); ``tests/test_released.py`` covers the
released model itself.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dermretr._errors import DermretrError
from dermretr.cli import main
from dermretr.index import CaseIndex
from dermretr.session import QuerySession, as_index


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("pretrained") / "tiny-model")


@pytest.fixture(scope="module")
def small(synth_cases):
    return synth_cases.head(24).reset_index(drop=True)


def test_an_index_built_by_name_records_it_and_reopens_with_it(folder, small, model, tmp_path):
    index = CaseIndex.build(str(folder), small, device="cpu")
    info = index.manifest["model"]
    assert info["pretrained"] == str(folder.resolve()) and info["checkpoint_path"] is None
    direct = CaseIndex.build(model, small)  # the same weights, given as an object
    assert np.allclose(index.global_vectors, direct.global_vectors, atol=1e-6)
    index.save(tmp_path / "index")
    again = CaseIndex.open(tmp_path / "index", device="cpu")
    case = small.iloc[0]
    a = index.search(case["image_path"], "blue-whitish veil", k=5)
    b = again.search(case["image_path"], "blue-whitish veil", k=5)
    assert a["case_id"].tolist() == b["case_id"].tolist()
    assert np.allclose(a["score"], b["score"], atol=1e-5)


def test_a_changed_or_missing_pretrained_model_is_a_clear_error(folder, small, tmp_path):
    index = CaseIndex.build(str(folder), small, device="cpu")
    index.save(tmp_path / "index")
    other = tmp_path / "other-model"
    shutil.copytree(folder, other)
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    manifest["model"]["pretrained"] = str(other)
    (tmp_path / "index" / "manifest.json").write_text(json.dumps(manifest))
    assert len(CaseIndex.open(tmp_path / "index", device="cpu")) == len(small)  # same weights: fine
    shutil.rmtree(other)
    with pytest.raises(DermretrError, match="model folder not found"):
        CaseIndex.open(tmp_path / "index", device="cpu")
    with pytest.raises(DermretrError, match="checkpoint= goes with a retriever loaded from a checkpoint file"):
        CaseIndex.build(str(folder), small, checkpoint=tmp_path / "x.pt")


def test_another_models_weights_name_the_model_to_rebuild_with(folder, small, tmp_path):
    import torch

    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    CaseIndex.build(str(folder), small, device="cpu").save(tmp_path / "index")
    torch.manual_seed(99)
    other = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    replaced = other.save_pretrained(tmp_path / "replaced")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    manifest["model"]["pretrained"] = str(replaced)  # same config, other weights (a newer release, say)
    (tmp_path / "index" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DermretrError, match=rf"other weights .* `dermretr index --model {replaced} --data SPEC"):
        CaseIndex.open(tmp_path / "index", device="cpu")


def test_arguments_are_checked_before_a_model_is_loaded(small, monkeypatch):
    from dermretr.index import _case_index

    monkeypatch.setattr(_case_index, "load_pretrained", lambda *a, **k: pytest.fail("loaded before the checks"))
    with pytest.raises(DermretrError, match="annoy"):
        CaseIndex.build("dermretr/dermsynth-tiny", small, kind="annoy")
    with pytest.raises(DermretrError, match="batch_size"):
        CaseIndex.build("dermretr/dermsynth-tiny", small, batch_size=0)


def test_real_images_indexed_with_the_released_model_warn(small):
    real = small.head(6).assign(source="derm7pt")
    with pytest.warns(UserWarning, match="trained on DermSynth only and has never seen a real lesion; to search "
                                         "derm7pt images, train a model"):
        index = CaseIndex.build("dermretr/dermsynth-tiny", real, device="cpu")
    assert index.manifest["model"]["pretrained"] == "dermretr/dermsynth-tiny"


def test_the_session_indexes_a_case_table_or_a_spec_with_the_model(folder, small, synth_root):
    session = QuerySession(small, model=str(folder), k=3)
    assert session.index.manifest["model"]["pretrained"] == str(folder.resolve()) and len(session.cases) == 24
    session.set_reference(str(small["case_id"].iloc[1]))
    assert len(session.results()) == 3
    from_spec = as_index(f"synthetic:{synth_root}", str(folder), device="cpu")
    assert isinstance(from_spec, CaseIndex) and len(from_spec) == 160
    assert as_index(from_spec, "ignored") is from_spec
    for path in ("no-such-folder", r"C:\Users\me\index", "runs/2024-01-01T10:00/index"):  # colons in paths too
        with pytest.raises(DermretrError, match="neither an index folder .* nor a dataset spec SOURCE:PATH"):
            as_index(path, str(folder))


def test_the_builder_takes_a_case_table(folder, small):
    pytest.importorskip("ipywidgets")
    from dermretr.widgets import QueryBuilder

    app = QueryBuilder(small, model=str(folder), k=4, debounce=0)
    app.select_case(str(small["case_id"].iloc[2]))
    assert len(app.search()) == 4


def test_cli_index_and_search_with_a_model_and_no_run(folder, synth_root, tmp_path, capsys):
    image = str(next((synth_root / "images").rglob("*.jpg")))
    assert main(["index", "--model", str(folder), "--data", f"synthetic:{synth_root}", "--out", str(tmp_path / "ix"),
                 "--device", "cpu", "--no-progress"]) == 0
    assert f"with {folder.resolve()}" in capsys.readouterr().out
    assert main(["search", "--index", str(tmp_path / "ix"), "--image", image, "--text", "blue-whitish veil",
                 "-k", "3", "--json", "--device", "cpu"]) == 0
    from_index = json.loads(capsys.readouterr().out)
    assert main(["search", "--data", f"synthetic:{synth_root}", "--model", str(folder), "--image", image,
                 "--text", "blue-whitish veil", "-k", "3", "--json", "--device", "cpu"]) == 0
    from_data = json.loads(capsys.readouterr().out)
    assert [r["case_id"] for r in from_index] == [r["case_id"] for r in from_data]
    assert main(["search", "--index", str(tmp_path / "ix"), "--model", str(folder), "--image", image]) == 2
    assert "--model goes with --data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: one line and exit code 2
        main(["index", "--run", "r", "--model", str(folder), "--data", "x:y", "--out", "z"])
    assert exited.value.code == 2 and "not allowed with argument --run" in capsys.readouterr().err


def test_the_cli_lists_the_index_kinds_the_package_has():
    from dermretr.cli import _search
    from dermretr.index import INDEX_KINDS

    assert tuple(_search.INDEX_KINDS) == tuple(INDEX_KINDS)  # a copy there: faiss loads slowly


def test_a_loaded_model_is_recorded_by_the_name_it_came_from(folder, small, tmp_path, monkeypatch):
    from dermretr.index import _case_index
    from dermretr.models.retriever import Retriever

    loaded = Retriever.from_pretrained(folder, device="cpu")
    monkeypatch.setattr(_case_index, "load_pretrained", lambda *a, **k: pytest.fail("loaded a second time"))
    index = CaseIndex.build(loaded, small, pretrained=str(folder))
    assert index.manifest["model"]["pretrained"] == str(folder.resolve()) and index.retriever is loaded
    index.save(tmp_path / "index")
    monkeypatch.undo()
    assert len(CaseIndex.open(tmp_path / "index", device="cpu")) == len(small)
    with pytest.raises(DermretrError, match="pretrained= names the model of a retriever given as an object"):
        CaseIndex.build(str(folder), small, pretrained=str(folder))
    with pytest.raises(DermretrError, match="give checkpoint= or pretrained=, not both"):
        CaseIndex.build(loaded, small, pretrained=str(folder), checkpoint=tmp_path / "x.pt")
