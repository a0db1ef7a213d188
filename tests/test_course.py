"""dermretr.course.Course: the course notebooks' sizes, dataset and trained models in one place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dermretr.course as course_module
from dermretr._errors import DermretrError
from dermretr.course import SIZES, Course
from dermretr.models.hub import RELEASED


def _stamp(path: Path) -> int:
    return path.stat().st_mtime_ns


# ----------------------------------------------------------------------------- sizes and arguments


def test_the_sizes_are_the_course_sizes():
    full, fast = Course(), Course(fast=True)
    assert (full.n_cases, full.image_size, full.train_image_size, full.epochs, full.batch_size, full.n_boot) == \
        (600, 128, 96, 10, 48, 1000)
    assert (fast.n_cases, fast.image_size, fast.train_image_size, fast.epochs, fast.batch_size, fast.n_boot) == \
        (240, 128, 64, 3, 32, 200)
    # the dataset has the released model's image size; training resizes to the course's smaller one
    assert full.model == fast.model == "dermretr/dermsynth-tiny" == RELEASED
    assert full.sizes == SIZES["full"] and fast.sizes == SIZES["fast"]
    assert full.runs == Path("dermretr-course") / "full" and fast.runs == Path("dermretr-course") / "fast"
    assert full.root == Path("dermsynth-course") and full.source == "synthetic"


def test_paths_follow_the_arguments(tmp_path):
    c = Course(f"derm7pt:{tmp_path / 'release_v0'}", fast=True, seed=4, out=tmp_path / "models")
    assert c.source == "derm7pt" and c.root == tmp_path / "release_v0" and c.seed == 4
    assert c.runs == tmp_path / "models" / "fast"
    assert c.run_dir("full-1mask") == tmp_path / "models" / "fast" / "full-1mask"
    assert c.checkpoint("full") == tmp_path / "models" / "fast" / "full" / "checkpoints" / "best.pt"
    assert "240 cases of 128 px" in repr(c) and "training at 64 px" in repr(c) and "fast=True" in repr(c)
    assert "searches with dermretr/dermsynth-tiny" in repr(c)
    assert "trains the model it searches with" in repr(Course(model=None))
    assert Course(model=tmp_path / "my-model").model == str(tmp_path / "my-model")


@pytest.mark.parametrize("kwargs,match", [
    (dict(data="nowhere"), "SOURCE:PATH"),
    (dict(data="derm8pt:./x"), "derm8pt"),
    (dict(data=Path("dermsynth")), "data spec"),
    (dict(fast="yes"), "fast must be True or False, got 'yes'"),
    (dict(fast=1), "fast must be True or False, got 1"),
    (dict(fast=None), "fast must be True or False"),
    (dict(seed=-1), "seed must be a whole number"),
    (dict(seed=1.5), "seed must be a whole number"),
    (dict(seed=True), "seed must be a whole number"),
    (dict(out=""), "out must be a folder path"),
    (dict(out=None), "out must be a folder path"),
    (dict(out=3), "out must be a folder path"),
    (dict(model=""), "model must be a model name or folder"),
    (dict(model=3), "model must be a model name or folder .* or None to train one, got 3"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(DermretrError, match=match) as info:
        Course(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "../full", "a\\b", " full", None, 3])
def test_bad_run_names_are_refused(name):
    with pytest.raises(DermretrError, match="a run name must be a plain folder name") as info:
        Course().checkpoint(name)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("settings,match", [
    (dict(n_maks=2), "unknown training setting 'n_maks'.*n_masks"),
    (dict(out="elsewhere"), "the course sets 'out' itself"),
    (dict(data="synthetic:./other"), "the course sets 'data' itself"),
])
def test_bad_training_settings_are_refused_before_anything_runs(tmp_path, monkeypatch, settings, match):
    monkeypatch.setattr(course_module, "ensure", lambda *a, **k: pytest.fail("the data must not be generated"))
    c = Course(f"synthetic:{tmp_path / 'ds'}", fast=True, out=tmp_path / "runs")
    with pytest.raises(DermretrError, match=match):
        c.train("full", **settings)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- the dataset


def test_the_dataset_is_generated_as_the_notebooks_did(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(course_module, "ensure", lambda root, **kwargs: calls.append((root, kwargs)))
    monkeypatch.setattr(course_module, "load", lambda spec: spec)
    c = Course(f"synthetic:{tmp_path / 'ds'}", fast=True, seed=3)
    assert c.cases == f"synthetic:{tmp_path / 'ds'}"
    assert calls == [(tmp_path / "ds", dict(n_cases=240, image_size=128, seed=3, modification_rate=0.4, replace=True,
                                             progress=False))]
    Course(f"synthetic:{tmp_path / 'ds'}").cases
    assert calls[1][1]["n_cases"] == 600 and calls[1][1]["image_size"] == 128 and calls[1][1]["progress"] is True


@pytest.fixture(scope="module")
def course_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("course")


@pytest.fixture(scope="module")
def fast_course(course_dir):
    """A fast course whose dataset has been generated (by its first ``cases``)."""
    c = Course(f"synthetic:{course_dir / 'dermsynth'}", fast=True, seed=0, out=course_dir / "models")
    assert not (course_dir / "dermsynth").exists()
    c.cases
    return c


def test_cases_are_generated_once_then_reused(fast_course, course_dir):
    meta = course_dir / "dermsynth" / "meta" / "meta.csv"
    cases = fast_course.cases
    assert len(cases) == 240 and meta.is_file()
    stamp = _stamp(meta)
    assert fast_course.cases is cases  # cached
    again = Course(fast_course.data, fast=True, seed=0, out=course_dir / "models").cases  # a later notebook
    assert _stamp(meta) == stamp, "a dataset with the same settings must not be generated again"
    assert again["case_id"].tolist() == cases["case_id"].tolist()
    params = json.loads((course_dir / "dermsynth" / "meta" / "dermsynth.json").read_text())
    assert (params["n_cases"], params["image_size"], params["seed"], params["modification_rate"]) == (240, 128, 0, 0.4)


def test_another_source_is_only_read(fast_course, monkeypatch):
    monkeypatch.setattr(course_module, "ensure", lambda *a, **k: pytest.fail("only a synthetic source is generated"))
    as_derm7pt = Course(f"derm7pt:{fast_course.root}", fast=True)
    assert len(as_derm7pt.cases) == 240 and as_derm7pt.cases["source"].iloc[0] == "derm7pt"


# ----------------------------------------------------------------------------- trained models


def test_train_trains_once_then_reuses(fast_course, course_dir):
    first = fast_course.train("tiny", epochs=1)  # the real fit_or_load, one epoch to stay quick
    run = fast_course.run_dir("tiny")
    assert first.run_dir.resolve() == run.resolve() and len(first.history) == 1
    best = fast_course.checkpoint("tiny")
    assert best.is_file()
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"] == fast_course.data and saved["out"] == str(run)
    assert (saved["image_size"], saved["batch_size"], saved["seed"], saved["progress"]) == (64, 32, 0, False)
    stamp = _stamp(best)

    later = Course(fast_course.data, fast=True, seed=0, out=course_dir / "models")  # a later notebook
    again = later.train("tiny", epochs=1)
    assert _stamp(best) == stamp, "a finished run with the same settings must not be trained again"
    assert again.history == first.history and again.best == first.best
    with pytest.raises(DermretrError, match="n_masks"):
        later.train("tiny", epochs=1, n_masks=1)  # the same folder, other settings


def test_a_users_own_dermsynth_with_other_sizes_is_never_replaced(tmp_path):
    """The course replaces only its own datasets (its fast or full sizes); another DermSynth is refused."""
    from dermretr._errors import OutputError
    from dermretr.data.synth import generate

    root = generate(tmp_path / "mine", n_cases=12, image_size=64, seed=5, workers=1, progress=False)
    before = (root / "meta" / "dermsynth.json").read_text()
    with pytest.raises(OutputError, match="does not replace a dataset it did not make"):
        Course(f"synthetic:{root}", fast=True).cases
    assert (root / "meta" / "dermsynth.json").read_text() == before
    assert len(list((root / "images").rglob("*.jpg"))) == 12


def test_the_released_model_is_searched_without_training(fast_course, monkeypatch):
    from dermretr.index import CaseIndex
    from dermretr.models.retriever import Retriever

    monkeypatch.setattr(Course, "train", lambda *a, **k: pytest.fail("the released model needs no training"))
    model = fast_course.retriever()
    assert isinstance(model, Retriever) and model.config()["image_size"] == 128
    assert fast_course.retriever() is model  # loaded once
    with pytest.raises(DermretrError, match=r"searches with dermretr/dermsynth-tiny \(MODEL\); retriever\('image'\)"):
        fast_course.retriever("image")
    index = fast_course.index()
    assert isinstance(index, CaseIndex) and len(index) == len(fast_course.cases)
    assert index.manifest["model"]["pretrained"] == RELEASED and index.manifest["model"]["checkpoint_path"] is None
    case = fast_course.cases.iloc[0]
    hits = index.search(case["image_path"], "blue-whitish veil", k=3, exclude=case["case_id"])
    assert len(hits) == 3 and case["case_id"] not in set(hits["case_id"])


def test_without_a_model_the_searched_model_is_trained_here(fast_course, course_dir, capsys):
    trained = Course(fast_course.data, fast=True, seed=0, out=course_dir / "models", model=None)
    model = trained.retriever("full")  # trains the course's "full" run (or reuses it)
    assert model.config()["image_size"] == 64  # the course's training size, not the released model
    index = trained.index("full")
    assert index.manifest["model"]["checkpoint_path"] == str(trained.checkpoint("full").resolve())
    as_real = Course(f"derm7pt:{fast_course.root}", fast=True)
    as_real.retriever()
    assert "was trained on DermSynth only; for derm7pt data set MODEL = None" in capsys.readouterr().out
