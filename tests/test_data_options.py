"""Loader options (-o KEY=VALUE) on every command that loads data, where a split came from, one warning format.

The data is a small Derm7pt-layout folder (dermoscopic and clinical images, Fitzpatrick types) without the
publisher's split files, plus split files of the user's in ``splits/``.  Runs are untrained tiny models with a
``config.json`` written here, except one trained by ``dermretr train`` to check what a run records.
"""

from __future__ import annotations

import json
import warnings

import pytest
import test_data_faults
import test_source_derm7pt
from fixtures import write_csv, write_dataset

from dermretr._errors import DataWarning, DermretrError
from dermretr.cli import main
from dermretr.data import describe_split_source, load, same_options, split_source
from dermretr.evaluate import data_options_for
from dermretr.train import read_run_config, run_data

N = 40
TRAIN, VAL, TEST = list(range(0, 24)), list(range(24, 32)), list(range(32, 40))
SPLIT_FILES = "splits/train.csv,splits/valid.csv,splits/test.csv"


def _dataset(root, publisher_splits=False):
    """A Derm7pt folder of N cases with derm and clinic images and Fitzpatrick types; split files in splits/."""
    rows = [dict(r, fitzpatrick=i % 6 + 1) for i, r in enumerate(test_source_derm7pt._rows(N, full=True))]
    write_dataset(root / "meta" / "meta.csv", rows,
                  image=lambda i, row: [root / "images" / row["derm"], root / "images" / row["clinic"]])
    for name, idx in (("train", TRAIN), ("valid", VAL), ("test", TEST)):
        write_csv(root / "splits" / f"{name}.csv", {"indexes": idx})
        if publisher_splits:
            write_csv(root / "meta" / f"{name}_indexes.csv", {"indexes": idx})
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("opts") / "derm7pt")


def _fake_run(path, data_spec=None, options=None):
    """An untrained run folder: checkpoints/best.pt and, with ``data_spec``, a config.json recording the data."""
    import torch

    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    torch.manual_seed(0)
    Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2).save(
        path / "checkpoints" / "best.pt")
    if data_spec is not None:
        values = {"data": data_spec, "model": "full", "backbone": "dermretr-tiny"}
        if options is not None:
            values["data_options"] = options
        (path / "config.json").write_text(json.dumps(values))
    return path


def _stderr_lines(capsys) -> tuple[str, list[str]]:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line]
    assert "Warning:" not in err and ".py:" not in err and "warnings.warn" not in err, err
    return out, lines


# ----------------------------------------------------------------------------- where a split came from


@pytest.mark.parametrize("source", list(test_data_faults.PUBLISHED))
def test_every_loader_records_where_its_split_came_from(tmp_path, source):
    root, _ = test_data_faults._published(tmp_path, source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cases = load(source, root, seed=3)
    record = split_source(cases)
    if source == "derm7pt":  # the fixture has the publisher's split files
        assert record == {"kind": "publisher", "files": ["meta/train_indexes.csv", "meta/valid_indexes.csv",
                                                         "meta/test_indexes.csv"]}
        assert describe_split_source(record).startswith("publisher's split files meta/train_indexes.csv")
    else:  # no other source ships a split: derived, and no warning says so
        assert record == {"kind": "derived", "method": "group_split", "groups": "patient_id",
                          "stratify": "diagnosis" if source == "ph2" else "diagnosis_group",
                          "fractions": [0.6, 0.2, 0.2], "seed": 3}
        assert "seed 3" in describe_split_source(record)
        assert not [w for w in caught if "split" in str(w.message)], [str(w.message) for w in caught]
    json.dumps(record)  # it goes into config.json and metrics.json


def test_derm7pt_without_split_files_derives_one_with_one_warning(tmp_path):
    root = _dataset(tmp_path / "d")
    with pytest.warns(DataWarning) as caught:
        cases = load("derm7pt", root)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert messages[0].startswith(f"derm7pt: no split files in {root / 'meta'} (train_indexes.csv, "
                                  "valid_indexes.csv, test_indexes.csv not found), so the split is derived")
    assert "not the published one" in messages[0] and "split_files" in messages[0]
    assert split_source(cases)["kind"] == "derived"
    # the publisher's files, some rows in none of them: those rows are derived, with one warning
    _dataset(tmp_path / "p", publisher_splits=True)
    write_csv(tmp_path / "p" / "meta" / "test_indexes.csv", {"indexes": TEST[:-3]})
    with pytest.warns(DataWarning, match=r"3 of 40 rows of meta.csv are in none of the split files"):
        record = split_source(load("derm7pt", tmp_path / "p"))
    assert record["kind"] == "publisher" and record["rest"]["rows"] == 3 and record["rest"]["kind"] == "derived"


def test_split_files_relative_to_the_dataset_folder_or_absolute(data, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # files given: no warning
        cases = load("derm7pt", data, split_files=SPLIT_FILES)
        absolute = load("derm7pt", data, split_files=[data / "splits" / f"{n}.csv" for n in ("train", "valid", "test")])
    assert cases["split"].astype(str).tolist() == ["train"] * 24 + ["val"] * 8 + ["test"] * 8
    assert split_source(cases) == {"kind": "split_files", "files": SPLIT_FILES.split(",")}
    assert absolute["split"].equals(cases["split"])
    outside = write_csv(tmp_path / "elsewhere" / "test.csv", {"indexes": TEST})
    record = split_source(load("derm7pt", data, split_files=f"splits/train.csv,splits/valid.csv,{outside}"))
    assert record["files"][2] == outside.as_posix()  # outside the dataset folder: recorded absolute
    with pytest.raises(DermretrError, match=rf"split file {data / 'splits' / 'nope.csv'} not found \(split_files\[2\]"):
        load("derm7pt", data, split_files="splits/train.csv,splits/valid.csv,splits/nope.csv")


def test_info_takes_split_files_and_says_where_the_split_came_from(data, capsys):
    assert main(["info", f"derm7pt:{data}", "-o", f"split_files={SPLIT_FILES}"]) == 0
    out, lines = _stderr_lines(capsys)
    assert not lines and "\ntrain     24" in out and "\ntest       8" in out
    assert f"split from: split files given (split_files): {SPLIT_FILES.replace(',', ', ')}" in out
    assert main(["info", f"derm7pt:{data}", "-o", "image=clinic"]) == 0
    out, lines = _stderr_lines(capsys)
    assert "split from: derived by dermretr (group_split: groups patient_id" in out
    assert len(lines) == 1 and lines[0].startswith("dermretr: warning: derm7pt: no split files in"), lines
    for option, says in (("split_files=splits/train.csv,splits/nope.csv,splits/test.csv", "split file "
                          f"{data / 'splits' / 'nope.csv'} not found"),
                         ("split_files=splits/train.csv", "split_files needs three paths"),
                         ("image=xray", "image must be 'derm' or 'clinic'"),
                         ("colour=red", "unknown option 'colour' for data source 'derm7pt'"),
                         ("missing=keep", "option 'missing' is set by `dermretr info` itself")):
        assert main(["info", f"derm7pt:{data}", "-o", option]) == 2
        _, lines = _stderr_lines(capsys)
        assert lines[-1].startswith("dermretr: error: ") and says in lines[-1], (option, lines)


# ----------------------------------------------------------------------------- -o on every command


def test_every_command_that_loads_data_takes_loader_options():
    from dermretr.cli import build_parser

    parser = build_parser()
    for command in (["info", "derm7pt:d"], ["train", "--data", "derm7pt:d", "--out", "o"],
                    ["evaluate", "--run", "r", "--data", "derm7pt:d", "--out", "m.json"],
                    ["index", "--data", "derm7pt:d", "--out", "i"], ["search", "--data", "derm7pt:d", "--image", "x"],
                    ["fairness", "--run", "r", "--data", "derm7pt:d"]):
        args = parser.parse_args([*command, "-o", "image=clinic", "--option", f"split_files={SPLIT_FILES}"])
        assert args.option == ["image=clinic", f"split_files={SPLIT_FILES}"], command
        assert parser.parse_args(command).option is None, command


@pytest.mark.parametrize("option, says", [("colour=red", "unknown option 'colour' for data source 'derm7pt'"),
                                          ("image", "must look like KEY=VALUE"),
                                          ("missing=keep", "missing=keep keeps cases whose image file is missing")])
def test_bad_options_fail_in_one_line_before_anything_is_done(data, tmp_path, capsys, option, says):
    run = _fake_run(tmp_path / "run")
    for command in (["train", "--data", f"derm7pt:{data}", "--out", str(tmp_path / "new"), "--device", "cpu"],
                    ["evaluate", "--run", str(run), "--data", f"derm7pt:{data}", "--out", str(tmp_path / "m.json")],
                    ["index", "--run", str(run), "--data", f"derm7pt:{data}", "--out", str(tmp_path / "ix")],
                    ["fairness", "--run", str(run), "--data", f"derm7pt:{data}", "--out", str(tmp_path / "f")]):
        assert main([*command, "-o", option]) == 2, command
        _, lines = _stderr_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith("dermretr: error: ") and says in lines[0], (command, lines)
    assert not any((tmp_path / name).exists() for name in ("new", "m.json", "ix", "f"))


def test_search_takes_options_with_data_only(data, tmp_path, capsys):
    assert main(["search", "--index", str(tmp_path / "ix"), "--image", "x.jpg", "-o", "image=clinic"]) == 2
    _, lines = _stderr_lines(capsys)
    assert lines == ["dermretr: error: -o (loader options) goes with --data; an --index folder holds the cases it "
                     "was built from"]
    assert main(["search", "--data", f"derm7pt:{data}", "--image", "x.jpg", "-o", "colour=red"]) == 2
    _, lines = _stderr_lines(capsys)
    assert len(lines) == 1 and "unknown option 'colour'" in lines[0]


# ----------------------------------------------------------------------------- a run records and reuses them


def test_train_config_checks_its_data_options():
    from pathlib import Path

    from dermretr.train import TrainConfig

    def check(options):
        TrainConfig(data="derm7pt:/d", out="o", data_options=options).check()

    check({"image": "clinic", "split_files": ["a.csv", "b.csv", "c.csv"], "seed": 2})
    for options, says in (({"split_files": Path("a.csv")}, "data_options must map option names to text"),
                          ({"colour": "red"}, "data_options: unknown option 'colour' for data source 'derm7pt'"),
                          (["image=clinic"], "data_options must be a dict")):
        with pytest.raises(DermretrError, match=says):
            check(options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`dermretr train -o image=clinic -o split_files=...` for one epoch, on a folder missing two derm images."""
    import contextlib
    import io

    base = tmp_path_factory.mktemp("trained")
    data = _dataset(base / "derm7pt")
    for row in test_source_derm7pt._rows(2, full=True):
        (data / "images" / row["derm"]).unlink()  # image=derm would drop them with a warning
    run = base / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "--data", f"derm7pt:{data}", "--out", str(run), "-o", "image=clinic", "-o",
                     f"split_files={SPLIT_FILES}", "--epochs", "1", "--batch-size", "8", "--image-size", "64",
                     "--n-masks", "2", "--device", "cpu", "--no-progress"])
    assert code == 0
    return run, out.getvalue(), data


def test_train_records_the_options_and_the_split_in_config_json(trained):
    run, out, _ = trained
    config = json.loads((run / "config.json").read_text())
    assert config["data_options"] == {"image": "clinic", "split_files": SPLIT_FILES}
    assert config["data_split"] == {"kind": "split_files", "files": SPLIT_FILES.split(",")}
    assert "split from: split files given (split_files): splits/train.csv" in out
    assert read_run_config(run / "config.json").data_options == config["data_options"]  # resumable, reusable
    assert run_data(run)["data_split"] == config["data_split"]


def test_evaluate_index_and_fairness_reuse_the_runs_options(trained, tmp_path, capsys):
    run, _, data = trained  # with the run's image=clinic no image is missing and the split is given: no warning
    spec = f"derm7pt:{data}"
    assert main(["evaluate", "--run", str(run), "--data", spec, "--out", str(tmp_path / "m.json"), "--n-boot", "0",
                 "--device", "cpu", "--no-progress"]) == 0
    out, lines = _stderr_lines(capsys)
    assert not lines, lines
    assert f"Data: -o image=clinic -o split_files={SPLIT_FILES} (as the run was trained); split from: split files " \
           "given" in out
    records = json.loads((tmp_path / "m.json").read_text())
    assert records and all(r["split_source"] == {"kind": "split_files", "files": SPLIT_FILES.split(",")}
                           for r in records)
    assert main(["index", "--run", str(run), "--data", spec, "--out", str(tmp_path / "ix"), "--device", "cpu",
                 "--no-progress"]) == 0
    _, lines = _stderr_lines(capsys)
    assert not lines, lines
    assert main(["fairness", "--run", str(run), "--data", spec, "--out", str(tmp_path / "f"), "--n-boot", "0",
                 "--exposure-k", "0", "--min-group", "1", "--metrics", "recall@1", "--device", "cpu",
                 "--no-progress"]) == 0
    _, lines = _stderr_lines(capsys)
    assert not [line for line in lines if "split" in line or "not found" in line], lines
    # options that load another way are refused, naming both
    for command in (["evaluate", "--run", str(run), "--data", spec, "--out", str(tmp_path / "m2.json")],
                    ["index", "--run", str(run), "--data", spec, "--out", str(tmp_path / "ix2")],
                    ["fairness", "--run", str(run), "--data", spec, "--out", str(tmp_path / "f2")]):
        assert main([*command, "-o", "image=derm", "--device", "cpu", "--no-progress"]) == 2
        _, lines = _stderr_lines(capsys)
        assert len(lines) == 1 and lines[0] == (
            f"dermretr: error: run {run} was trained on {spec} with -o image=clinic -o split_files={SPLIT_FILES}, "
            f"but -o image=derm is given for {spec}: leave -o out to load the data as the run did, or give the same "
            "options"), lines
    # the same options spelt out are fine
    assert main(["evaluate", "--run", str(run), "--data", spec, "--out", str(tmp_path / "m3.json"), "--n-boot", "0",
                 "-o", f"split_files={SPLIT_FILES}", "-o", "image=clinic", "-o", "seed=0", "--floors", "none",
                 "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()


def test_runs_that_disagree_and_runs_of_older_versions(data, tmp_path, capsys):
    spec = f"derm7pt:{data}"
    clinic = _fake_run(tmp_path / "clinic", spec, {"image": "clinic"})
    derm = _fake_run(tmp_path / "derm", spec, {})
    old = _fake_run(tmp_path / "old", spec)  # a run of an older dermretr: no data_options
    other = _fake_run(tmp_path / "other", "ham10000:/somewhere", {"metadata": "x.csv"})
    assert data_options_for(spec, None, [clinic, old, other]) == {"image": "clinic"}
    assert data_options_for(spec, None, [old, derm]) == {}
    assert data_options_for(spec, {"image": "derm"}, [old, other, derm]) == {"image": "derm"}
    assert same_options("derm7pt", {"split_files": ["a", "b", "c"]}, {"split_files": "a,b,c"})
    with pytest.raises(DermretrError, match=f"runs {clinic} and {derm} were trained on derm7pt with different "
                                            r"loader options \(-o image=clinic; no -o options"):
        data_options_for(spec, None, [clinic, derm])
    assert main(["evaluate", "--run", str(clinic), str(derm), "--data", spec, "--out", str(tmp_path / "m.json"),
                 "--device", "cpu", "--no-progress"]) == 2
    _, lines = _stderr_lines(capsys)
    assert len(lines) == 1 and "different loader options" in lines[0]
    assert main(["evaluate", "--run", str(old), "--data", spec, "--out", str(tmp_path / "m.json"), "--n-boot", "0",
                 "-o", f"split_files={SPLIT_FILES}", "--device", "cpu", "--no-progress"]) == 0
    out, lines = _stderr_lines(capsys)
    assert not lines and "(as the run was trained)" not in out
    config = {"data": spec, "out": "o", "data_split": {"kind": "derived"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert read_run_config(tmp_path / "config.json").data_options == {}  # older config.json: the defaults


# ----------------------------------------------------------------------------- one warning format everywhere


def test_every_command_prints_data_warnings_as_one_dermretr_line(data, model, tmp_path, capsys):
    """The derived split of a Derm7pt folder without split files is warned about by every command alike."""
    spec = f"derm7pt:{data}"
    run = _fake_run(tmp_path / "run", spec, {})
    folder = model.save_pretrained(tmp_path / "model")
    image = data / "images" / test_source_derm7pt._rows(1)[0]["derm"]
    commands = {
        "info": ["info", spec],
        "train": ["train", "--data", spec, "--out", str(tmp_path / "t"), "--batch-size", "1000", "--device", "cpu"],
        "evaluate": ["evaluate", "--run", str(run), "--data", spec, "--out", str(tmp_path / "m.json"), "--n-boot",
                     "0", "--device", "cpu", "--no-progress"],
        "index": ["index", "--run", str(run), "--data", spec, "--out", str(tmp_path / "ix"), "--device", "cpu",
                  "--no-progress"],
        "search": ["search", "--data", spec, "--model", str(folder), "--image", str(image), "--device", "cpu"],
        "fairness": ["fairness", "--run", str(run), "--data", spec, "--out", str(tmp_path / "f"), "--n-boot", "0",
                     "--exposure-k", "0", "--min-group", "1", "--metrics", "recall@1", "--device", "cpu",
                     "--no-progress"],
    }
    for name, command in commands.items():
        code = main(command)
        _, lines = _stderr_lines(capsys)
        assert code == (2 if name == "train" else 0), (name, lines)  # train stops at the batch size
        derived = [line for line in lines if "no split files" in line]
        assert len(derived) == 1 and derived[0].startswith("dermretr: warning: derm7pt: no split files in "), (
            name, lines)
        assert all(line.startswith(("dermretr: warning: ", "dermretr: error: batch size")) for line in lines), (
            name, lines)
    records = json.loads((tmp_path / "m.json").read_text())
    assert {r["split_source"]["kind"] for r in records} == {"derived"}
    assert {r["split_source"]["seed"] for r in records} == {0}
