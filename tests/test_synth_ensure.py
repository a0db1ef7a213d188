"""dermretr.data.synth.ensure: DermSynth generated once, kept while its settings match, never over a user's folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dermretr._errors import OutputError
from dermretr.data.synth import ensure

SMALL = dict(n_cases=8, image_size=64, seed=1, workers=1, progress=False)


def _stamp(root):
    return (root / "meta" / "meta.csv").stat().st_mtime_ns


def test_ensure_generates_then_keeps_a_dataset_with_the_same_settings(tmp_path):
    root = ensure(tmp_path / "ds", **SMALL)
    assert root == (tmp_path / "ds").absolute() and len(pd.read_csv(root / "meta" / "meta.csv")) == 8
    stamp = _stamp(root)
    assert ensure(tmp_path / "ds", **{**SMALL, "workers": 2}) == root  # workers do not change the bytes
    assert _stamp(root) == stamp
    params = json.loads((root / "meta" / "dermsynth.json").read_text())
    assert params["seed"] == 1 and params["n_cases"] == 8


def test_ensure_replaces_a_dataset_with_other_settings_or_missing_images(tmp_path):
    root = ensure(tmp_path / "ds", **SMALL)
    with pytest.raises(OutputError, match="already holds a DermSynth dataset"):
        ensure(root, **{**SMALL, "n_cases": 10})  # by default a dataset with other settings is not replaced
    ensure(root, **{**SMALL, "n_cases": 10}, replace=True)
    assert len(pd.read_csv(root / "meta" / "meta.csv")) == 10
    stamp = _stamp(root)
    next((root / "images").rglob("*.jpg")).unlink()  # an incomplete dataset is generated again
    ensure(root, **{**SMALL, "n_cases": 10}, replace=True)
    assert _stamp(root) != stamp and len(list((root / "images").rglob("*.jpg"))) == 10
    with pytest.raises(OutputError, match="already holds a DermSynth dataset"):
        ensure(root, **{**SMALL, "seed": 2}, replace=False)
    assert json.loads((root / "meta" / "dermsynth.json").read_text())["seed"] == 1


def test_ensure_never_touches_a_folder_it_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.docx").write_text("keep")
    with pytest.raises(OutputError, match="not a DermSynth dataset"):
        ensure(mine, **SMALL)
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.docx"]
    ds = ensure(tmp_path / "ds", **SMALL)
    (ds / "notes.txt").write_text("mine")  # a dataset to which the user added a file is not replaced
    with pytest.raises(OutputError, match="notes.txt"):
        ensure(ds, **{**SMALL, "n_cases": 9}, replace=True)
    assert (ds / "notes.txt").read_text() == "mine" and len(pd.read_csv(ds / "meta" / "meta.csv")) == 8
