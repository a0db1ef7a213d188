"""The command line: demo end to end, synth, and one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fixtures import assert_self_contained
from PIL import Image

from dermretr.cli import main


def test_demo_released_trains_nothing_and_writes_the_same_report(tmp_path, capsys, monkeypatch):
    import json

    import dermretr.train as train

    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("--released must not train"))
    out = tmp_path / "demo"
    assert main(["demo", "--released", "--out", str(out), "--n-cases", "120", "--workers", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "dermretr demo (released model): 120 DermSynth cases, 128 px, data seed 1001; nothing is trained" in text
    assert "Results on the test split" in text and "Full minus each method and floor" in text
    records = json.loads((out / "metrics.json").read_text())
    assert {r["method"] for r in records} == {"full", "random", "majority", "criteria_match"}
    assert {r["protocol"] for r in records if r["method"] == "full"} == {"case", "modify"}
    assert {r["protocol"] for r in records if r["method"] == "criteria_match"} == {"case", "modify"}  # floors of both
    report = (out / "report.html").read_text()
    assert "Not trained here: the released model was loaded as it ships" in report
    assert "This is the released model <code>dermretr/dermsynth-tiny</code>" in report
    # 120 cases are not the card's 1,000: the report must not claim the card's queries
    assert "which holds none of its training patients (its model card reports 1,000 cases of seed 1001)" in report
    assert "needs training" in report and "Training nothing" in text
    assert "The composed model, Recall@1: gap between skin-type groups " in report
    assert "With skin-type-balanced training" not in report
    assert len(assert_self_contained(report)) == 4  # contact sheet, results, example query, skin-type slices
    for figure in ("contact_sheet.png", "results.png", "example_query.png", "skin_tone_slices.png"):
        assert (out / figure).is_file()
    _next_steps_search(text, out, capsys)
    manifest = json.loads((out / "index" / "manifest.json").read_text())
    assert manifest["model"]["pretrained"] == "dermretr/dermsynth-tiny" and manifest["count"] == 120
    assert not (out / "runs").exists()
    for bad, match in ((["--fast"], "choose --fast or --released"), (["--epochs", "3"], "epochs cannot be set"),
                       (["--seed", "1000"], "would regenerate the released model's own training data")):
        assert main(["demo", "--released", "--out", str(tmp_path / "x"), *bad]) == 2
        assert match in capsys.readouterr().err


def test_demo_end_to_end_writes_report_metrics_and_index(tmp_path, capsys):
    import json

    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--fast", "--n-cases", "80", "--epochs", "1", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for heading in ("Cases per diagnosis", "Cases per criterion value", "Cases per Fitzpatrick skin type", "Splits",
                    "Results on the test split", "Example composed query", "by skin type (Fitzpatrick pairs)"):
        assert heading in text
    assert "blue_whitish_veil" in text and "VI" in text
    with Image.open(out / "contact_sheet.png") as img:
        assert img.size[0] > 300 and img.size[1] > 300
    assert len(pd.read_csv(out / "dermsynth" / "meta" / "meta.csv")) == 80
    records = json.loads((out / "metrics.json").read_text())
    assert {r["method"] for r in records} == {"full", "global", "clip4cir", "late_fusion", "image", "text",
                                              "random", "majority", "criteria_match"}  # with the floors
    assert {r["run"] for r in records if r["method"] == "majority"} == {"floor:majority"}
    assert {r["average"] for r in records} == {"micro", "macro"}
    assert "floor" in text and "(macro)" in text
    assert {r["protocol"] for r in records} == {"case", "modify"}
    assert set(records[0]) == {"run", "method", "protocol", "average", "metric", "k", "value", "ci_low", "ci_high",
                               "n_queries", "split_source"}
    assert {r["split_source"]["kind"] for r in records} == {"publisher"}  # DermSynth writes its split files
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in records if r["ci_low"] is not None)
    report = (out / "report.html").read_text()
    assert len(assert_self_contained(report)) == 6  # every figure embedded: the file can be mailed on its own
    for figure in ("contact_sheet.png", "training_curves.png", "results.png", "example_query.png",
                   "skin_tone_slices.png", "skin_tone_mitigation.png"):
        with Image.open(out / figure) as img:
            low, high = img.convert("L").getextrema()
            assert img.size[0] > 300 and high - low > 100  # not blank
    assert "<table" in report and "modify" in report and "III-IV" in report
    assert "; modify: <i>random</i>" in report  # the modify protocol's floors
    assert (out / "runs" / "full-balanced" / "checkpoints" / "best.pt").is_file()
    assert json.loads((out / "index" / "manifest.json").read_text())["count"] == 80
    per_query = pd.read_csv(out / "per_query.csv")
    assert set(per_query["method"]) == {"full", "global", "clip4cir", "late_fusion", "image", "text", "random",
                                        "majority", "criteria_match"}
    assert "against each method and floor, paired" in report and "How far to trust this table" in report
    assert "Full minus each method and floor" in text
    # every model trained is announced first, with the count and a measured time
    plan = text[:text.index("Training full (1/7")]
    assert "Training 7 models, 1 epoch each (7 epochs): " in plan and "full-balanced" in plan and "Time: " in plan
    assert "Training full-balanced (7/7, 1 epoch)" in text
    # the findings in words, in the report and at the end of the run
    assert "Against global-only, the composed model " in report and "Skin-type-balanced training " in report
    assert "What the numbers say" in text and "Skin-type-balanced training " in text
    # each model's skin-type gap beside the gap at a common diagnosis mix
    for model in ("The composed model", "With skin-type-balanced training"):
        assert f"{model}, Recall@1: " in report and f"{model}, mAP@10: " in text
    assert "The case-mix-adjusted gap (table)" in report
    _next_steps_search(text, out, capsys)
    # a second run reuses the dataset and the finished runs
    mtime = (out / "runs" / "full" / "checkpoints" / "best.pt").stat().st_mtime_ns
    assert main(args) == 0
    assert "Reusing" in capsys.readouterr().out
    assert (out / "runs" / "full" / "checkpoints" / "best.pt").stat().st_mtime_ns == mtime


def _next_steps_search(text, out, capsys):
    """The run ends with the report's path and a search command that works on the demo's own index."""
    steps = text[text.index("Next steps"):]
    assert str(out / "report.html") in steps
    command = next(line.strip() for line in steps.splitlines() if line.strip().startswith("dermretr search"))
    argv = shlex.split(command)
    assert argv[argv.index("--index") + 1] == str(out / "index") and Path(argv[argv.index("--image") + 1]).is_file()
    capsys.readouterr()
    assert main(argv[1:]) == 0
    found = capsys.readouterr().out
    assert found.startswith("model: ") and found.count("dermsynth/images/") >= 10  # the demo's own cases


def test_demo_refuses_a_foreign_folder_and_too_few_cases(tmp_path, capsys):
    (tmp_path / "dermsynth").mkdir()
    (tmp_path / "dermsynth" / "thesis.docx").write_text("do not delete")
    assert main(["demo", "--out", str(tmp_path), "--fast", "--no-progress"]) == 2
    assert "dermretr did not write (dermsynth)" in capsys.readouterr().err
    assert (tmp_path / "dermsynth" / "thesis.docx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dermsynth"]
    assert main(["demo", "--out", str(tmp_path / "x"), "--n-cases", "10", "--no-progress"]) == 2
    assert "at least 60 cases" in capsys.readouterr().err


def test_synth_writes_the_requested_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = main(["synth", "--out", str(out), "--n-cases", "12", "--seed", "3", "--image-size", "64",
               "--artifacts", "none", "--priors", "uniform", "--workers", "1", "--no-progress"])
    assert rc == 0
    assert "12 cases written" in capsys.readouterr().out
    meta = pd.read_csv(out / "meta" / "meta.csv")
    assert len(meta) == 12
    import json

    params = json.loads((out / "meta" / "dermsynth.json").read_text())
    assert params["artifacts"] == [] and params["priors"] == "uniform" and params["seed"] == 3


def test_info_prints_the_sources_licence_line(tmp_path, capsys):
    from dermretr.data.sources._terms import licence_line
    from dermretr.data.synth import generate

    root = generate(tmp_path / "ds", n_cases=6, image_size=64, workers=1, progress=False)
    assert main(["info", f"synthetic:{root}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == licence_line("synthetic")
    assert lines[1].startswith("Licence: MIT") and lines[1].endswith("terms: docs/datasets.md")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n-cases", "0"], "number of cases must be a positive integer"),
        (["--n-cases", "-5"], "number of cases must be a positive integer"),
        (["--image-size", "48"], "at least 64 px"),
        (["--artifacts", "hair,glare"], "unknown artifact"),
    ],
)
def test_synth_bad_values_one_line_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "ds"
    rc = main(["synth", "--out", str(out), "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_synth_existing_folder_refused_and_only_a_dataset_overwritten(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    args = ["synth", "--out", str(out), "--n-cases", "3", "--image-size", "64", "--no-progress", "--workers", "1"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 2  # --overwrite never replaces a folder that is not a DermSynth dataset
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep"
    data = tmp_path / "data"
    args[2] = str(data)
    assert main(args) == 0
    assert main([*args[:4], "5", *args[5:], "--overwrite"]) == 0  # a DermSynth dataset is replaced
    assert len(pd.read_csv(data / "meta" / "meta.csv")) == 5


def test_synth_unwritable_folder(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "f" / "ds"), "--n-cases", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1


def test_console_script_exit_code_and_no_traceback(tmp_path):
    """The installed entry point behaves like main(): usage errors and value errors exit 2."""
    proc = subprocess.run([sys.executable, "-m", "dermretr.cli", "synth", "--out", str(tmp_path / "x"),
                           "--n-cases", "abc"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid int value: 'abc'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    proc = subprocess.run([sys.executable, "-m", "dermretr.cli", "synth", "--out", str(tmp_path / "x"),
                           "--image-size", "10"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_train_options_are_generated_from_train_config():
    """Every TrainConfig field is an option of `dermretr train` with the same default; the flags of old stay."""
    import dataclasses

    from dermretr.cli import TRAIN_FIELDS_NOT_OPTIONS, build_parser
    from dermretr.train import TrainConfig, field_docs

    parser = build_parser()
    args = vars(parser.parse_args(["train", "--data", "synthetic:d", "--out", "o"]))
    defaults = dataclasses.asdict(TrainConfig(data="synthetic:d", out="o"))
    for name, value in defaults.items():
        if name in TRAIN_FIELDS_NOT_OPTIONS:
            continue
        assert name in args, f"TrainConfig.{name} has no option"
        assert args[name] == value and type(args[name]) is type(value), name
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    text = train.format_help()
    for name in defaults:
        if name not in TRAIN_FIELDS_NOT_OPTIONS:
            assert "--" + name.replace("_", "-") in text, name
            assert field_docs()[name].split()[1].strip(".,;:()") in text, name  # its help comes from the docstring
    for flag in ("--fixed-alpha", "--freeze-backbone", "--no-text-skip", "--tone-triplets", "--no-modifications",
                 "--resume", "--no-progress", "--balance-by", "--n-masks", "--patient-weight",
                 "--word-region-weight", "--pretrained", "--backbone", "--model"):
        assert flag in text, flag
    parsed = vars(parser.parse_args(["train", "--data", "d", "--out", "o", "--fixed-alpha", "--no-text-skip",
                                     "--no-modifications", "--tone-triplets", "--freeze-backbone", "--resume",
                                     "--no-progress", "--no-augment", "--select-metric", "mrr", "--seed", "3"]))
    assert not parsed["learn_alpha"] and not parsed["text_skip"] and not parsed["modifications"]
    assert parsed["tone_triplets"] and parsed["freeze_backbone"] and parsed["resume"] and not parsed["progress"]
    assert not parsed["augment"] and parsed["select_metric"] == "mrr" and parsed["seed"] == 3


def test_help_does_not_import_torch():
    code = ("import sys\nfrom dermretr.cli import build_parser\nbuild_parser()\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "False"]
