"""The released model ``dermretr/dermsynth-tiny``: it ships, loads, matches its manifest hash, fits in 10 MB,
says what it is, and reaches its documented quality on a freshly generated DermSynth test split.

The documented quality is the card's (``config.json``'s ``metrics``), measured by
``scripts/release_dermsynth_tiny.py`` on the model as it ships.  The test regenerates the same fresh
data set (the recipe's settings and its fresh data seed, cases the model never saw) and measures again;
the stated tolerance covers floating-point differences between machines, not a different model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dermretr.models.hub import PRETRAINED_DIR, RELEASED, pretrained_metrics, shipped_models
from dermretr.models.retriever import Retriever

ROOT = Path(__file__).resolve().parents[1]
FOLDER = PRETRAINED_DIR / RELEASED.split("/", 1)[1]
#: How far a re-measured metric may be from the documented one (floating-point differences only).
TOLERANCE = 0.02
MAX_BYTES = 10 * 1024 * 1024


def _recipe():
    spec = importlib.util.spec_from_file_location("release_recipe", ROOT / "scripts" / "release_dermsynth_tiny.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def released():
    return Retriever.from_pretrained(RELEASED, device="cpu")


def test_it_ships_with_the_package_and_its_hash_matches(released):
    assert RELEASED == "dermretr/dermsynth-tiny" and "dermsynth-tiny" in shipped_models()
    config = json.loads((FOLDER / "config.json").read_text())
    weights = FOLDER / "model.safetensors"
    assert config["sha256"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert weights.stat().st_size <= MAX_BYTES
    assert config["dtype"] == "float16" and config["token_rows"]["vocab_size"] == 49408
    assert config["config"] == released.config()
    assert released.config() == {"backbone": "dermretr-tiny", "image_size": 128, "kind": "full", "n_masks": 4,
                                 "learn_alpha": True, "freeze_backbone": False, "text_skip": True}


def test_the_card_says_what_it_is_and_reports_floors():
    card = (FOLDER / "README.md").read_text()
    assert "library_name: dermretr" in card and 'license: "mit"' in card
    assert "**Not for diagnosis.**" in card and "scripts/release_dermsynth_tiny.py" in card
    assert "never seen a real lesion" in card and "Skin-tone coverage: training cases per range" in card
    assert 'Retriever.from_pretrained("dermretr/dermsynth-tiny")' in card
    records = pretrained_metrics(RELEASED)
    runs = {r["run"] for r in records}
    assert {"full", "floor:random", "floor:majority", "floor:criteria_match"} <= runs
    assert {r["average"] for r in records} == {"micro", "macro"}
    for r in records:  # every number in config.json is in the card's table, with its interval
        if r["ci_low"] is not None:
            assert f"| {r['value']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] |" in card


def test_its_vocabulary_holds_what_the_course_and_the_builder_type(released):
    from safetensors.torch import load_file

    from dermretr.data.vocab import modification_text

    rows = json.loads((FOLDER / "config.json").read_text())["token_rows"]
    kept = set(load_file(str(FOLDER / "model.safetensors"))[rows["key"] + ".kept_ids"].tolist())
    assert len(kept) == rows["kept"] and 200 < len(kept) < 3000
    texts = ["irregular streaks and a blue-white veil", "on Fitzpatrick type V-VI skin", "on darker skin",
             modification_text({"blue_whitish_veil": "absent"}, {"blue_whitish_veil": "present"}, seed=None),
             "atypical pigment network, regression structures; dotted vessels"]
    for text in texts:  # every token has its own trained row: none reads as the shared unknown-word row
        missing = set(released.backbone.tokenize([text])[0].tolist()) - kept
        assert not missing, (text, missing)


@pytest.mark.slow
def test_documented_quality_on_a_freshly_generated_test_split(released, tmp_path):
    from dermretr.data import load
    from dermretr.data.synth import generate
    from dermretr.evaluate import case_search, metric_records

    recipe = _recipe()
    root = generate(tmp_path / "fresh", n_cases=recipe.DATA["n_cases"], image_size=recipe.DATA["image_size"],
                    seed=recipe.FRESH_SEED, progress=False)
    per_query, _ = case_search(released, load("synthetic", root), query_split="test")
    measured = {(r["average"], r["metric"], r["k"]): r["value"]
                for r in metric_records(per_query, "full", "full", "case", n_boot=0, average=("micro", "macro"))}
    protocol = f"case (dermsynth-seed{recipe.FRESH_SEED})"
    documented = {(r["average"], r["metric"], r["k"]): r["value"] for r in pretrained_metrics(RELEASED)
                  if r["run"] == "full" and r["protocol"] == protocol}
    assert set(documented) == {(a, m, k) for a in ("micro", "macro") for m, k in recipe.METRICS}
    for key, value in documented.items():
        assert np.isclose(measured[key], value, atol=TOLERANCE), (key, measured[key], value)
