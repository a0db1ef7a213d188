"""The CLI's promise on faults: one line, the right exit code, nothing of the user's touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest

from dermretr import cli
from dermretr._errors import DataWarning
from dermretr.cli import main


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- internal errors


def test_internal_error_is_one_line_exit_1_and_debug_shows_it(monkeypatch, capsys):
    def broken(args):
        raise ValueError("a bug\nover two lines")

    monkeypatch.setattr(cli, "cmd_info", broken)
    monkeypatch.delenv("DERMRETR_DEBUG", raising=False)
    assert main(["info", "synthetic:/nowhere"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("dermretr: internal error: ValueError: a bug over two lines")
    assert "--debug" in err
    with pytest.raises(ValueError, match="a bug"):  # --debug anywhere on the line
        main(["info", "synthetic:/nowhere", "--debug"])
    with pytest.raises(ValueError, match="a bug"):
        main(["--debug", "info", "synthetic:/nowhere"])
    monkeypatch.setenv("DERMRETR_DEBUG", "1")
    with pytest.raises(ValueError, match="a bug"):
        main(["info", "synthetic:/nowhere"])
    monkeypatch.setenv("DERMRETR_DEBUG", "0")
    assert main(["info", "synthetic:/nowhere"]) == 1


def test_internal_error_in_a_real_process(tmp_path):
    """A subprocess with a command that crashes: one line on stderr, exit code 1; --debug gives the traceback."""
    code = ("import sys, dermretr.cli as c\n"
            "def boom(args): raise KeyError('x')\n"
            "c.cmd_info = boom\n"
            "sys.exit(c.main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if k != "DERMRETR_DEBUG"}
    proc = subprocess.run([sys.executable, "-c", code, "info", "synthetic:x"], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 1
    assert _one_line(proc.stderr).startswith("dermretr: internal error: KeyError")
    proc = subprocess.run([sys.executable, "-c", code, "info", "synthetic:x", "--debug"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 1 and "Traceback" in proc.stderr


@pytest.mark.parametrize("exc, message", [
    (OSError(28, "No space left on device", "/data/run/x.pt"), "No space left on device"),
    (PermissionError(13, "Permission denied", "/data/x"), "Permission denied"),
    (MemoryError(), "out of memory"),
])
def test_environment_faults_are_one_line_exit_2(monkeypatch, capsys, exc, message):
    def failing(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_info", failing)
    monkeypatch.delenv("DERMRETR_DEBUG", raising=False)
    assert main(["info", "synthetic:/nowhere"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("dermretr: error:") and message in err


def test_warnings_are_one_dermretr_line_without_source(monkeypatch, capsys):
    def warns(args):
        warnings.warn("3 images missing in /data/meta.csv", DataWarning, stacklevel=1)
        warnings.warn("3 images missing in /data/meta.csv", DataWarning, stacklevel=1)  # every time, not once
        return 0

    monkeypatch.setattr(cli, "cmd_info", warns)
    assert main(["info", "synthetic:/nowhere"]) == 0
    err = capsys.readouterr().err
    assert err == "dermretr: warning: 3 images missing in /data/meta.csv\n" * 2


def test_missing_images_warning_from_a_real_loader(synth_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    first = sorted(p for p in (root / "images").rglob("*") if p.is_file())[0]
    first.unlink()
    # train loads the data (dropping the missing image with a warning), then stops at the batch size
    assert main(["train", "--data", f"synthetic:{root}", "--out", str(tmp_path / "run"), "--batch-size", "100000",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 2 and lines[0].startswith("dermretr: warning: ") and first.name in lines[0], err
    assert lines[1].startswith("dermretr: error: batch size 100000")
    assert "warnings.warn" not in err and ".py:" not in err


# ----------------------------------------------------------------------------- never touch a user's files


def _user_folder(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.docx").write_text("do not delete")
    return path


def _untouched(path):
    assert (path / "thesis.docx").read_text() == "do not delete"


def test_synth_overwrite_never_replaces_a_user_folder(tmp_path, capsys, monkeypatch):
    out = _user_folder(tmp_path / "mine")
    assert main(["synth", "--out", str(out), "--n-cases", "3", "--image-size", "64", "--no-progress",
                 "--overwrite", "--workers", "1"]) == 2
    assert "thesis.docx" in _one_line(capsys.readouterr().err)
    _untouched(out)
    monkeypatch.chdir(out)  # --out . with --overwrite: the current folder
    assert main(["synth", "--out", ".", "--n-cases", "3", "--image-size", "64", "--no-progress", "--overwrite",
                 "--workers", "1"]) == 2
    _one_line(capsys.readouterr().err)
    _untouched(out)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]


def test_demo_refuses_a_user_folder_and_a_users_run_folder(tmp_path, capsys):
    from dermretr import demo
    from dermretr._errors import DermretrError

    out = _user_folder(tmp_path / "mine")
    assert main(["demo", "--out", str(out), "--fast", "--no-progress"]) == 2
    assert "thesis.docx" in _one_line(capsys.readouterr().err)
    _untouched(out)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]
    # a runs/<method> folder holding the user's files inside a demo folder is never removed
    run = _user_folder(tmp_path / "demo" / "runs" / "full")
    settings = demo.demo_settings(fast=True)
    with pytest.raises(DermretrError, match="did not write"):
        demo._train("full", tmp_path / "data", run, settings, progress=False)
    _untouched(run)
    # a run folder dermretr wrote, to which the user added a file, is not removed either
    (run / ".dermretr.json").write_text('{"kind": "run"}')
    (run / "config.json").write_text('{"model": "full", "backbone": "dermretr-tiny"}')
    with pytest.raises(DermretrError, match="did not write"):
        demo._train("full", tmp_path / "data", run, settings, progress=False)
    _untouched(run)


def test_demo_replaces_only_its_own_runs_looking_into_checkpoints_and_past_stale_temporaries(tmp_path):
    from dermretr import demo

    run = tmp_path / "runs" / "full"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".dermretr.json").write_text('{"kind": "run"}')
    (run / "config.json").write_text('{"model": "full", "backbone": "dermretr-tiny"}')
    (run / "checkpoints" / "last.pt").write_bytes(b"weights")
    # a run killed while writing left temporaries (its process is gone): removed, and the run is replaceable
    stale = [run / ".metrics.jsonl.dermretr-999999999-ab12.tmp",
             run / "checkpoints" / ".best.pt.dermretr-999999999-cd34.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    with pytest.warns(UserWarning, match="interrupted"):
        assert demo._replaceable_run(run)
    assert not any(path.exists() for path in stale)
    # a file of the user's inside checkpoints/ keeps the whole run
    mine = run / "checkpoints" / "my_weights.pt"
    mine.write_bytes(b"mine")
    assert not demo._replaceable_run(run) and mine.read_bytes() == b"mine"
    mine.unlink()
    # so does a file where the checkpoints folder should be
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("mine")
    assert not demo._replaceable_run(run)


def test_a_folder_of_runs_and_pictures_without_the_demos_dataset_is_not_a_demo_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "runs").mkdir(parents=True)
    (out / "results.png").write_bytes(b"my figure")
    assert main(["demo", "--out", str(out), "--fast", "--no-progress"]) == 2
    assert "did not write" in _one_line(capsys.readouterr().err)
    assert (out / "results.png").read_bytes() == b"my figure"


def test_train_refuses_a_user_folder_and_a_file(synth_root, tmp_path, capsys):
    out = _user_folder(tmp_path / "mine")
    assert main(["train", "--data", f"synthetic:{synth_root}", "--out", str(out), "--no-progress"]) == 2
    assert "thesis.docx" in _one_line(capsys.readouterr().err)
    _untouched(out)
    (tmp_path / "file").write_text("x")
    assert main(["train", "--data", "synthetic:/nowhere", "--out", str(tmp_path / "file"), "--no-progress"]) == 2
    _one_line(capsys.readouterr().err)
    assert (tmp_path / "file").read_text() == "x"


def test_evaluate_refuses_to_replace_a_users_file_before_any_work(tmp_path, capsys):
    mine = tmp_path / "results.json"
    mine.write_text(json.dumps({"my": "settings"}))
    assert main(["evaluate", "--run", str(tmp_path / "no-run"), "--data", "synthetic:/nowhere", "--out",
                 str(mine)]) == 2
    assert "not a file dermretr wrote" in _one_line(capsys.readouterr().err)
    assert json.loads(mine.read_text()) == {"my": "settings"}
    table = tmp_path / "table.csv"
    table.write_text("patient,age\n1,40\n")
    assert main(["evaluate", "--run", str(tmp_path / "no-run"), "--data", "synthetic:/nowhere", "--out",
                 str(tmp_path / "m.json"), "--per-query", str(table)]) == 2
    assert "--per-query" in _one_line(capsys.readouterr().err)
    assert table.read_text() == "patient,age\n1,40\n"
    assert main(["evaluate", "--run", str(tmp_path / "no-run"), "--data", "synthetic:/nowhere", "--out",
                 str(tmp_path / "m.json"), "--per-query", str(tmp_path / "m.json")]) == 2
    assert "same file" in _one_line(capsys.readouterr().err)


def test_evaluate_replaces_its_own_metrics_file(tmp_path):
    from dermretr.evaluate import write_metrics

    target = tmp_path / "metrics.json"
    write_metrics([{"run": "a", "metric": "mrr", "k": None, "value": 0.5}], target)
    write_metrics([{"run": "a", "metric": "mrr", "k": None, "value": 0.7}], target)
    assert json.loads(target.read_text())[0]["value"] == 0.7


def test_fairness_refuses_a_user_folder_before_any_work(tmp_path, capsys):
    out = _user_folder(tmp_path / "mine")
    assert main(["fairness", "--run", str(tmp_path / "no-run"), "--data", "synthetic:/nowhere", "--out",
                 str(out)]) == 2
    assert "thesis.docx" in _one_line(capsys.readouterr().err)
    _untouched(out)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.docx"]


def test_index_refuses_a_user_folder(tmp_path, capsys):
    out = _user_folder(tmp_path / "mine")
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"")
    assert main(["index", "--run", str(tmp_path / "run"), "--data", "synthetic:/nowhere", "--out", str(out),
                 "--overwrite"]) == 2
    _one_line(capsys.readouterr().err)
    _untouched(out)


def test_index_says_when_the_run_folder_is_missing_or_not_a_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["index", "--run", "nope", "--data", "synthetic:/nowhere", "--out", "idx"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"--run nope: no such folder in {tmp_path}; give the --out folder of `dermretr train`" in err
    (tmp_path / "notarun").mkdir()
    assert main(["index", "--run", "notarun", "--data", "synthetic:/nowhere", "--out", "idx"]) == 2
    assert "is notarun a run folder of `dermretr train`?" in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notarun"]


def test_info_names_empty_images_and_with_check_images_every_unreadable_one(tmp_path, capsys):
    from dermretr.data.synth import generate

    root = generate(tmp_path / "ds", n_cases=6, image_size=64, workers=1, progress=False)
    images = sorted((root / "images").rglob("*.jpg"))
    assert main(["info", f"synthetic:{root}"]) == 0
    assert "unreadable" not in capsys.readouterr().out  # nothing to say when every file has bytes
    assert main(["info", f"synthetic:{root}", "--check-images", "--no-progress"]) == 0
    assert "unreadable images: 0\n" in capsys.readouterr().out
    images[0].write_bytes(b"")
    images[1].write_text("not a picture")
    before = {p: p.read_bytes() for p in images[:2]}
    assert main(["info", f"synthetic:{root}"]) == 0
    out = capsys.readouterr().out
    assert "images found: 6, missing: 0" in out and "unreadable images: 1 (empty files;" in out
    assert f"image file {images[0]} is empty (0 bytes)" in out and str(images[1]) not in out
    assert main(["info", f"synthetic:{root}", "--check-images", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "unreadable images: 2\n" in out and f"{images[1]} is not an image file PIL can read" in out
    assert "replace each with a JPEG or PNG image, or remove its row" in out
    assert {p: p.read_bytes() for p in images[:2]} == before  # only read


@pytest.mark.parametrize("command", [["synth", "--out", "x"], ["demo"],
                                     ["train", "--data", "synthetic:x", "--out", "x"],
                                     ["evaluate", "--run", "r", "--data", "synthetic:x", "--out", "m.json"],
                                     ["fairness", "--run", "r", "--data", "synthetic:x"]])
def test_negative_or_text_seed_is_a_usage_error(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    for seed in ("-1", "abc"):
        with pytest.raises(SystemExit) as exc:
            main([*command, "--seed", seed])
        assert exc.value.code == 2
        assert "invalid seed" in _one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_run_checks_the_seed_before_any_work():
    from dermretr._errors import DermretrError
    from dermretr.evaluate import evaluate_run

    with pytest.raises(DermretrError, match="seed must be a whole number"):
        evaluate_run("no/such/run", "synthetic:/nowhere", seed=-1)


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "-1", "--batch-size must be at least 2, got -1"),
    ("--epochs", "0", "--epochs must be a positive integer, got 0"),
    ("--alpha", "1.5", "--alpha must be a finite number in [0, 1], got 1.5"),
    ("--image-size", "-64", "--image-size must be a positive integer"),
])
def test_train_names_the_option_a_bad_value_was_given_to(tmp_path, capsys, option, value, message):
    out = tmp_path / "run"
    assert main(["train", "--data", "synthetic:/nowhere", "--out", str(out), option, value]) == 2
    assert f"dermretr: error: {message}" in _one_line(capsys.readouterr().err)
    assert not out.exists()  # checked before anything is written
