"""Training, checkpoints and weights files under faults: bad files, bad options, full disks, kills, races.

Every fault must end in a one-line DermretrError naming the file or option (never a traceback,
never advice to unpickle), and must leave the user's files and the previous checkpoints as they were.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import read_only_folder, train_config

from dermretr._errors import DermretrError, OutputError
from dermretr._io import OWNER_FILE, StaleTemporaryWarning, exclusive
from dermretr.cli import main
from dermretr.evaluate import run_checkpoint
from dermretr.models.backbones import create, read_weights
from dermretr.models.retriever import CHECKPOINT_FORMAT, Retriever
from dermretr.train import _loop, fit


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from dermretr.data.synth import generate

    root = generate(tmp_path_factory.mktemp("faults") / "ds", n_cases=40, seed=5, image_size=64,
                    modification_rate=0.5, workers=1, progress=False)
    return f"synthetic:{root}"


def _cfg(data, out, **kw):
    return train_config(data, out, **{"epochs": 1, **kw})


@pytest.fixture(scope="module")
def done_run(data, tmp_path_factory):
    """A finished one-epoch run; tests damage copies of it."""
    run = tmp_path_factory.mktemp("done") / "run"
    fit(_cfg(data, run))
    return run


@pytest.fixture(scope="module")
def straight2(data, tmp_path_factory):
    """An uninterrupted two-epoch run, the reference of the interrupted ones."""
    run = tmp_path_factory.mktemp("straight") / "run"
    fit(_cfg(data, run, epochs=2))
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path, but: tuple[str, ...] = ()) -> dict[str, str]:
    """Digest of every file under ``folder`` (but those named in ``but``), by relative path."""
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in but}


def _no_data_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded before the fault was reported")

    monkeypatch.setattr(_loop, "load", refuse)


def _plain_message(exc_info, *parts: str) -> str:
    message = str(exc_info.value)
    assert "\n" not in message, message
    assert "weights_only" not in message and "Traceback" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# --------------------------------------------------------------------------- bad weights files


class _Evil:
    """Unpickling it would create a folder: the proof that a refused file never ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _write_bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files that are not weights files, by name: (path, what the error must say)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = str(folder / "code-ran")
    good = folder / "_good.pt"
    torch.save({"w": torch.zeros(64, 64)}, good)
    files: dict[str, tuple[Path, str]] = {}

    def add(name: str, filename: str, write, says: str) -> None:
        path = folder / filename
        write(path)
        files[name] = (path, says)

    add("unsafe pickle", "model_object.pt",
        lambda p: torch.save({"w": torch.zeros(2), "obj": _Evil(marker)}, p), "refused as unsafe")
    add("plain pickle", "plain.pkl.pt", lambda p: p.write_bytes(pickle.dumps(_Evil(marker))), "refused as unsafe")
    add("plain pickle protocol 2", "plain2.pt", lambda p: p.write_bytes(pickle.dumps(_Evil(marker), protocol=2)),
        "refused as unsafe")
    add("random bytes", "random.pt", lambda p: p.write_bytes(b"\x00" + np.random.default_rng(0).bytes(4095)),
        "not a PyTorch or safetensors weights file")
    add("empty", "empty.pt", lambda p: p.write_bytes(b""), "the file is empty")
    add("truncated", "truncated.pt", lambda p: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
        "truncated or corrupt")
    add("numpy npz", "arrays.pt", lambda p: _numpy_to(p, np.savez, a=np.zeros(3)), "numpy .npz archive")
    add("numpy npy", "array.pt", lambda p: _numpy_to(p, np.save, np.zeros(3)), "numpy .npy array")
    add("text", "notes.pt", lambda p: p.write_text("these are not weights\n"), "not a PyTorch or safetensors")
    add("corrupt safetensors", "model.safetensors", lambda p: p.write_bytes(_safetensors_bytes()[:-7]),
        "not a readable safetensors file")
    add("random safetensors", "random.safetensors", lambda p: p.write_bytes(np.random.default_rng(1).bytes(300)),
        "not a readable safetensors file")
    add("folder", "folder.pt", lambda p: p.mkdir(), "folder")
    good.unlink()
    return files


def _numpy_to(path: Path, write, *args, **kwargs) -> None:
    with path.open("wb") as fh:  # a file object: numpy would add its own suffix to a name
        write(fh, *args, **kwargs)


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.zeros(8, 8)})


BAD_FILES = ["unsafe pickle", "plain pickle", "plain pickle protocol 2", "random bytes", "empty", "truncated",
             "numpy npz", "numpy npy", "text", "corrupt safetensors", "random safetensors", "folder"]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return _write_bad_files(tmp_path_factory.mktemp("bad_weights"))


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_pretrained_file_is_a_clear_error(bad_files, name):
    path, says = bad_files[name]
    with pytest.raises(DermretrError) as err:
        create("dermretr-tiny", pretrained=str(path), device="cpu", image_size=64)
    _plain_message(err, str(path), says)
    assert not (path.parent / "code-ran").exists()


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_checkpoint_file_is_a_clear_error(bad_files, name):
    path, says = bad_files[name]
    with pytest.raises(DermretrError) as err:
        Retriever.load(path, device="cpu")
    message = _plain_message(err, str(path), says)
    assert "expected a dermretr checkpoint" in message
    assert not (path.parent / "code-ran").exists()


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_last_checkpoint_is_a_clear_error_on_resume(data, done_run, bad_files, tmp_path, name):
    run = _copy(done_run, tmp_path)
    last = run / "checkpoints" / "last.pt"
    last.unlink()
    source, says = bad_files[name]
    if name == "random safetensors":  # as last.pt, without its suffix, it is random bytes
        says = "not a PyTorch or safetensors weights file"
    if source.is_dir():
        last.mkdir()
    else:
        shutil.copyfile(source, last)
    before = {p.name: _digest(p) for p in (run / "checkpoints").iterdir() if p.is_file()}
    with pytest.raises(DermretrError) as err:
        fit(_cfg(data, run, epochs=2, resume=True))
    message = _plain_message(err, str(last), says)
    assert "training checkpoint" in message
    assert {p.name: _digest(p) for p in (run / "checkpoints").iterdir() if p.is_file()} == before
    assert not (tmp_path / "code-ran").exists() and not (bad_files[name][0].parent / "code-ran").exists()


@pytest.mark.parametrize("name", ["unsafe pickle", "random bytes", "empty", "truncated", "numpy npz"])
def test_bad_weights_in_a_local_dir_folder_are_a_clear_error(bad_files, tmp_path, name):
    import open_clip

    folder = tmp_path / "DermLIP-like"
    folder.mkdir()
    cfg = {"model_cfg": open_clip.get_model_config("dermretr-tiny"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    weights = folder / "open_clip_pytorch_model.bin"
    shutil.copyfile(bad_files[name][0], weights)
    with pytest.raises(DermretrError) as err:
        create(f"local-dir:{folder}", device="cpu")
    _plain_message(err, str(weights), bad_files[name][1])
    assert not (bad_files[name][0].parent / "code-ran").exists()


def test_read_weights_gives_back_what_a_good_file_holds(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    assert torch.equal(read_weights(tmp_path / "w.pt", "x")["w"], torch.ones(2))
    (tmp_path / "w.safetensors").write_bytes(_safetensors_bytes())
    assert read_weights(tmp_path / "w.safetensors", "x")["w"].shape == (8, 8)
    with pytest.raises(DermretrError, match="not found; expected x"):
        read_weights(tmp_path / "none.pt", "x")


def test_numpy_weights_for_a_non_siglip_architecture_are_a_clear_error(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(DermretrError) as err:
        create("dermretr-tiny", pretrained=str(path), device="cpu", image_size=64)
    _plain_message(err, str(path), "not big_vision (SigLIP) numpy weights", "'dermretr-tiny'")


# --------------------------------------------------------------------------- weights of another model


def test_weights_of_another_model_are_summarised_in_one_line(tmp_path):
    small = create("dermretr-small", device="cpu")
    path = tmp_path / "small.pt"
    torch.save(small.model.state_dict(), path)
    with pytest.raises(DermretrError) as err:
        create("dermretr-tiny", pretrained=str(path), device="cpu", image_size=64)
    message = _plain_message(err, str(path), "does not fit architecture 'dermretr-tiny'", "unknown to it",
                             "of another shape (e.g. ")
    assert len(message) < 600
    torch.save({"module.head.weight": torch.zeros(3)}, path)  # a classifier: nothing of the model's
    with pytest.raises(DermretrError) as err:
        create("dermretr-tiny", pretrained=str(path), device="cpu", image_size=64)
    _plain_message(err, "weights missing", "1 unknown to it (e.g. head.weight)")
    torch.save([torch.zeros(2)], path)
    with pytest.raises(DermretrError) as err:
        create("dermretr-tiny", pretrained=str(path), device="cpu", image_size=64)
    _plain_message(err, "holds a list, not a state dict")


def test_weights_wrapped_in_a_training_checkpoint_or_with_a_module_prefix_load(tmp_path):
    torch.manual_seed(2)
    tiny = create("dermretr-tiny", device="cpu", image_size=64)
    state = tiny.model.state_dict()
    x = torch.randn(1, 3, 64, 64)
    for i, payload in enumerate([{"state_dict": state, "epoch": 3}, {"module." + k: v for k, v in state.items()}]):
        torch.save(payload, tmp_path / f"w{i}.pt")
        again = create("dermretr-tiny", pretrained=str(tmp_path / f"w{i}.pt"), device="cpu", image_size=64)
        with torch.no_grad():
            assert torch.equal(again.encode_image(x)[0], tiny.encode_image(x)[0])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved full retriever (tiny, 2 masks, 64 px) and its payload."""
    torch.manual_seed(0)
    r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    path = r.save(tmp_path_factory.mktemp("ckpt") / "model.pt")
    return path, torch.load(path, weights_only=True)


def _damaged(payload: dict, **changes) -> dict:
    out = dict(payload)
    out["config"] = dict(payload["config"])
    for key, value in changes.items():
        if key.startswith("config_"):
            name = key[len("config_"):]
            if value is _DROP:
                out["config"].pop(name)
            else:
                out["config"][name] = value
        else:
            out[key] = value
    return out


_DROP = object()


@pytest.mark.parametrize("changes, says", [
    (dict(config={}), "its config lacks 'backbone', 'kind', 'n_masks', 'learn_alpha', 'freeze_backbone'"),
    (dict(config_kind=_DROP), "its config lacks 'kind'"),
    (dict(config="full"), "its config is a str, not a dict"),
    (dict(config_backbone="dermretr-small"), "its weights do not fit its config (backbone 'dermretr-small'"),
    (dict(config_backbone="ViT-Q-99"), "unknown model name 'ViT-Q-99'"),
    (dict(config_kind="global"), "its weights do not fit its config"),
    (dict(config_kind="bert"), "kind='bert', not one of"),
    (dict(config_n_masks="2"), "n_masks='2', not an integer"),
    (dict(config_n_masks=3), "of another shape"),
    (dict(config_image_size=72), "not divisible by the patch size"),
    (dict(config_learn_alpha="yes"), "learn_alpha='yes', not true or false"),
    (dict(format="3"), "format '3' is not a checkpoint format number"),
    (dict(format=CHECKPOINT_FORMAT + 1), "written by a newer dermretr"),
    (dict(state_dict=[1, 2]), "its state_dict is a list"),
    (dict(state_dict={"encoder.visual.proj": torch.zeros(2)}), "weights missing"),
])
def test_a_checkpoint_with_a_damaged_config_or_foreign_weights_is_a_clear_error(checkpoint, tmp_path, changes, says):
    path, payload = checkpoint
    bad = tmp_path / "bad.pt"
    torch.save(_damaged(payload, **changes), bad)
    with pytest.raises(DermretrError) as err:
        Retriever.load(bad, device="cpu")
    message = _plain_message(err, str(bad), says)
    assert len(message) < 700


def test_bare_weights_or_a_list_are_not_checkpoints(checkpoint, tmp_path):
    path, payload = checkpoint
    torch.save(payload["state_dict"], tmp_path / "bare.pt")
    with pytest.raises(DermretrError) as err:
        Retriever.load(tmp_path / "bare.pt", device="cpu")
    _plain_message(err, "bare weights without dermretr's config")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(DermretrError) as err:
        Retriever.load(tmp_path / "list.pt", device="cpu")
    _plain_message(err, "holds a list, not a checkpoint")
    assert Retriever.load(path, device="cpu").n_masks == 2  # the undamaged one still loads


@pytest.mark.parametrize("damage, says", [
    (lambda s: s.pop("optimizer"), "it lacks optimizer"),
    (lambda s: s.update(state_dict={k: v for k, v in s["state_dict"].items() if not k.startswith("masks.")}),
     "its weights do not fit this run's model"),
    (lambda s: s.update(history="[{"), "its epoch, history or best record is damaged"),
    (lambda s: s.update(epoch=5), "its epoch, history or best record is damaged"),
    (lambda s: s.update(optimizer={"state": {}, "param_groups": []}), "its optimizer state does not fit this run"),
])
def test_a_damaged_last_checkpoint_is_a_clear_error_on_resume(data, done_run, tmp_path, damage, says):
    run = _copy(done_run, tmp_path)
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    damage(state)
    torch.save(state, last)
    with pytest.raises(DermretrError) as err:
        fit(_cfg(data, run, epochs=2, resume=True))
    _plain_message(err, str(last), says)


def test_the_last_checkpoint_loads_as_a_retriever_too(done_run):
    last = Retriever.load(done_run / "checkpoints" / "last.pt", device="cpu")
    best = Retriever.load(done_run / "checkpoints" / "best.pt", device="cpu")
    assert last.kind == best.kind == "full" and last.n_masks == 2


def test_best_checkpoint_copied_over_last_is_a_clear_error_on_resume(data, done_run, tmp_path):
    run = _copy(done_run, tmp_path)
    shutil.copyfile(run / "checkpoints" / "best.pt", run / "checkpoints" / "last.pt")
    with pytest.raises(DermretrError) as err:
        fit(_cfg(data, run, epochs=2, resume=True))
    _plain_message(err, "last.pt", "it lacks optimizer, scheduler, scaler, epoch, history, best")


# --------------------------------------------------------------------------- the run's config.json


@pytest.mark.parametrize("content, says", [
    (b"{not json", "is not valid JSON (Expecting property name"),
    (b"", "is not valid JSON"),
    (b"[1, 2]", "holds an array, not an object of training options"),
    (b'"full"', "holds a string, not an object"),
    (b"\xff\xfe\x00garbage", "is not a text file"),
    (None, "unknown training option(s) ['colour']"),
    ("epochs", "epochs must be an integer, got '3'"),
    ("lr", "lr must be a finite number > 0, got nan"),
    ("data", "missing training option(s) ['data']"),
])
def test_a_damaged_run_config_is_a_clear_error_on_resume(data, done_run, tmp_path, monkeypatch, content, says):
    run = _copy(done_run, tmp_path)
    file = run / "config.json"
    values = json.loads(file.read_text())
    if content is None:
        values["colour"] = "red"
    elif content == "epochs":
        values["epochs"] = "3"
    elif content == "lr":
        values["lr"] = float("nan")
    elif content == "data":
        del values["data"]
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(json.dumps(values))
    before = {p.name: _digest(p) for p in (run / "checkpoints").iterdir()}
    _no_data_loading(monkeypatch)
    with pytest.raises(DermretrError) as err:
        fit(_cfg(data, run, epochs=2, resume=True))
    _plain_message(err, str(file), says)
    assert {p.name: _digest(p) for p in (run / "checkpoints").iterdir()} == before


def test_a_moved_run_folder_still_resumes(data, done_run, tmp_path):
    run = _copy(done_run, tmp_path)  # its config.json names the original folder
    assert json.loads((run / "config.json").read_text())["out"] != str(run)
    result = fit(_cfg(data, run, epochs=1, resume=True))
    assert [h["epoch"] for h in result.history] == [1]


def test_bad_options_that_need_the_data_fail_before_the_model_is_built(data, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the fault was reported")

    monkeypatch.setattr(_loop, "create", no_model)
    with pytest.raises(DermretrError, match="balance_by 'skin': column"):
        fit(_cfg(data, tmp_path / "a", balance_by="skin"))
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(DermretrError, match="table.csv is a file, not a dataset folder"):
        fit(_cfg(f"synthetic:{tmp_path / 'table.csv'}", tmp_path / "b"))
    if not torch.cuda.is_available():
        with pytest.raises(DermretrError, match="no CUDA GPU is available"):
            fit(_cfg(data, tmp_path / "c", device="cuda:3"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]  # no empty run folders left behind


def test_a_metric_at_another_cut_off_picks_the_best_checkpoint(data, tmp_path):
    result = fit(_cfg(data, tmp_path / "run", select_metric="map@7"))
    assert "map@7" in result.history[0]
    assert result.best["metric"] == "map@7" and result.best["value"] == result.history[0]["map@7"]


# --------------------------------------------------------------------------- the output folder


def test_an_output_that_is_a_file_or_under_a_file_is_refused(data, tmp_path, monkeypatch):
    _no_data_loading(monkeypatch)
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    with pytest.raises(OutputError) as err:
        fit(_cfg(data, file))
    _plain_message(err, str(file), "is a file, not a folder")
    with pytest.raises(OutputError) as err:
        fit(_cfg(data, file / "run"))
    _plain_message(err, f"{file} is a file, not a folder")
    assert file.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_folder_of_the_users_is_refused_and_left_alone(data, tmp_path, monkeypatch):
    _no_data_loading(monkeypatch)
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.docx").write_text("...")
    (mine / "config.json").write_text('{"title": "my thesis"}')  # a config.json that is not a run's
    with pytest.raises(OutputError) as err:
        fit(_cfg(data, mine))
    _plain_message(err, str(mine), "holds files that dermretr did not write", "nothing was changed")
    assert sorted(p.name for p in mine.iterdir()) == ["chapter1.docx", "config.json"]


def test_an_unwritable_output_fails_before_the_data_is_loaded(data, done_run, tmp_path, monkeypatch):
    run = _copy(done_run, tmp_path)
    before = _tree(run)
    _no_data_loading(monkeypatch)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # as in a read-only folder
    with pytest.raises(OutputError) as err:
        fit(_cfg(data, tmp_path / "new"))
    _plain_message(err, f"cannot write {tmp_path / 'new'}", "Permission denied; choose a folder you can write to")
    assert not (tmp_path / "new").exists()  # the folder it made for the run is removed again
    with pytest.raises(OutputError) as err:  # an existing run: checked before the data and the model
        fit(_cfg(data, run, epochs=2, resume=True))
    _plain_message(err, f"cannot write {run}: Permission denied; choose a folder you can write to")
    assert _tree(run) == before


def test_a_read_only_parent_folder_fails_before_the_data_is_loaded(data, tmp_path, monkeypatch):
    _no_data_loading(monkeypatch)
    with read_only_folder(tmp_path) as parent:
        with pytest.raises(OutputError) as err:
            fit(_cfg(data, parent / "run"))
        _plain_message(err, str(parent / "run"), "choose a folder you can write to")
        assert list(parent.iterdir()) == []


def test_a_second_training_into_the_same_folder_is_refused(data, tmp_path, monkeypatch):
    _no_data_loading(monkeypatch)
    run = tmp_path / "run"
    with exclusive(run, "--out"):
        with pytest.raises(OutputError) as err:
            fit(_cfg(data, run))
    _plain_message(err, str(run), "is being written by another dermretr process", "choose another --out")
    assert not run.exists()


def test_a_run_of_an_older_dermretr_is_recognised(data, done_run, tmp_path):
    run = _copy(done_run, tmp_path)
    (run / OWNER_FILE).unlink()  # written before folders were marked
    with pytest.raises(DermretrError, match="already holds a run; pass --resume"):
        fit(_cfg(data, run, epochs=1))
    result = fit(_cfg(data, run, epochs=1, resume=True))
    assert [h["epoch"] for h in result.history] == [1]
    assert json.loads((run / OWNER_FILE).read_text())["kind"] == "run"


def test_a_run_with_only_best_pt_is_not_overwritten(data, done_run, tmp_path):
    run = _copy(done_run, tmp_path)
    (run / "checkpoints" / "last.pt").unlink()  # removed to save space after training
    best = _digest(run / "checkpoints" / "best.pt")
    with pytest.raises(DermretrError, match=r"already holds a run; pass --resume .*\(it has checkpoints/best.pt\)"):
        fit(_cfg(data, run))
    with pytest.raises(DermretrError, match="last.pt is missing \\(only best.pt is there\\).*best.pt is kept"):
        fit(_cfg(data, run, resume=True))
    assert _digest(run / "checkpoints" / "best.pt") == best


def test_a_run_whose_first_epoch_never_finished_starts_again(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", _failing_save(RuntimeError(FULL)))  # the disk filled up in epoch 1
    with pytest.raises(OutputError, match="last.pt: writing failed, the disk may be full"):
        fit(_cfg(data, run))
    assert (run / "config.json").is_file() and not (run / "checkpoints" / "last.pt").exists()
    monkeypatch.undo()
    order = []
    for name in ("write_state", "write_metrics", "write_best", "write_curve"):
        def spy(*args, _real=getattr(_loop, name), _name=name, **kwargs):
            order.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(_loop, name, spy)
    result = fit(_cfg(data, run))  # no --resume needed: nothing of the first attempt was completed
    assert [h["epoch"] for h in result.history] == [1]
    # last.pt first, best.pt after it: best.pt is never newer than last.pt and metrics.jsonl
    assert order == ["write_state", "write_metrics", "write_best", "write_curve"]


def test_stale_temporaries_of_a_killed_run_are_removed_on_the_next(data, done_run, tmp_path):
    run = _copy(done_run, tmp_path)
    stale = [run / "checkpoints" / ".last.pt.dermretr-999999999-abcd1234.tmp",
             run / ".metrics.jsonl.dermretr-999999999-abcd1234.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    mine = run / "checkpoints" / "notes.tmp"
    mine.write_text("mine")
    with pytest.warns(StaleTemporaryWarning, match="interrupted dermretr run"):
        fit(_cfg(data, run, resume=True))
    assert not any(p.exists() for p in stale) and mine.read_text() == "mine"


# --------------------------------------------------------------------------- a full disk


FULL = "[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/3: file write failed"


def _failing_save(error: BaseException):
    def save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half written")
        raise error

    return save


@pytest.mark.parametrize("error", [RuntimeError(FULL), OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_ones(data, done_run, tmp_path, monkeypatch,
                                                                       error):
    run = _copy(done_run, tmp_path)
    before = _tree(run, but=("config.json",))  # which a resumed run writes again first
    monkeypatch.setattr(torch, "save", _failing_save(error))
    with pytest.raises(OutputError) as err:
        fit(_cfg(data, run, epochs=2, resume=True))
    _plain_message(err, f"cannot write {run / 'checkpoints' / 'last.pt'}",
                   "free some disk space or choose a folder on another disk")
    # no temporary left, last.pt, best.pt and metrics.jsonl as they were
    assert _tree(run, but=("config.json",)) == before
    monkeypatch.undo()
    result = fit(_cfg(data, run, epochs=2, resume=True))  # space freed: the run continues
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_a_full_disk_while_saving_a_retriever_keeps_the_previous_file(checkpoint, tmp_path, monkeypatch):
    path, _ = checkpoint
    target = tmp_path / "model.pt"
    shutil.copyfile(path, target)
    model = Retriever.load(target, device="cpu")
    digest = _digest(target)
    monkeypatch.setattr(torch, "save", _failing_save(RuntimeError(FULL)))
    with pytest.raises(OutputError) as err:
        model.save(target)
    _plain_message(err, f"cannot write {target}", "the disk may be full", "free some disk space")
    assert _digest(target) == digest and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    monkeypatch.setattr(torch, "save", _failing_save(RuntimeError("a bug, not a write failure")))
    with pytest.raises(RuntimeError, match="a bug"):  # only write failures are the environment's fault
        model.save(target)
    assert _digest(target) == digest and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


# --------------------------------------------------------------------------- a kill between the epoch's writes


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "train_seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("stage, epoch", [("write_best", 1), ("write_metrics", 1), ("write_metrics", 2),
                                          ("write_curve", 2)])
def test_a_kill_between_the_epoch_writes_is_repaired_on_resume(data, straight2, tmp_path, monkeypatch, stage,
                                                                epoch):
    run = tmp_path / "run"
    real = getattr(_loop, stage)

    def killed(*args, **kwargs):
        at = args[2]["epoch"] if stage == "write_best" else len(args[1])
        if at == epoch:
            raise KeyboardInterrupt  # kill -9 right here
        return real(*args, **kwargs)

    monkeypatch.setattr(_loop, stage, killed)
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(data, run, epochs=2))
    monkeypatch.undo()
    last = _state(run / "checkpoints" / "last.pt")
    assert last["epoch"] == epoch  # last.pt was written: it is the reference
    if stage == "write_best":
        assert not (run / "checkpoints" / "best.pt").exists()
    if stage == "write_metrics":
        assert len(_records(run)) == epoch - 1 if (run / "metrics.jsonl").exists() else epoch == 1

    fit(_cfg(data, run, epochs=epoch, resume=True))  # nothing left to train: only the repair
    last = _state(run / "checkpoints" / "last.pt")
    assert (run / "metrics.jsonl").read_text() == "".join(json.dumps(h) + "\n" for h in json.loads(last["history"]))
    best = json.loads(last["best"])
    assert _state(run / "checkpoints" / "best.pt")["extra"]["epoch"] == best["epoch"]
    assert (run / "training_curve.png").stat().st_mtime_ns >= (run / "checkpoints" / "last.pt").stat().st_mtime_ns

    fit(_cfg(data, run, epochs=2, resume=True))  # and the run ends as an uninterrupted one
    ref_records, got_records = _records(straight2), _records(run)
    assert [r.keys() for r in got_records] == [r.keys() for r in ref_records]
    for ref, got in zip(ref_records, got_records):
        assert got == pytest.approx(ref, rel=1e-4, abs=1e-6)
    ref_best, got_best = _state(straight2 / "checkpoints" / "best.pt"), _state(run / "checkpoints" / "best.pt")
    assert got_best["extra"]["epoch"] == ref_best["extra"]["epoch"]
    for k, v in ref_best["state_dict"].items():
        assert torch.allclose(got_best["state_dict"][k], v, atol=1e-5), k


def _with_best(run: Path, best_epoch: int, best_pt_epoch: int | None) -> None:
    """Make last.pt record ``best_epoch`` as the best, and best.pt hold ``best_pt_epoch`` (None: no best.pt)."""
    ckpt = run / "checkpoints"
    state = _state(ckpt / "last.pt")
    state["best"] = json.dumps({"epoch": best_epoch, "metric": "map@10", "value": 0.5})
    torch.save(state, ckpt / "last.pt")
    if best_pt_epoch is None:
        (ckpt / "best.pt").unlink()
    else:
        payload = _state(ckpt / "best.pt")
        payload["extra"] = dict(payload["extra"], epoch=best_pt_epoch)
        payload["state_dict"] = {k: torch.zeros_like(v) for k, v in payload["state_dict"].items()}
        torch.save(payload, ckpt / "best.pt")


def test_a_best_checkpoint_one_step_behind_last_is_written_from_last(data, straight2, tmp_path):
    run = _copy(straight2, tmp_path)
    _with_best(run, best_epoch=2, best_pt_epoch=1)  # killed after last.pt of epoch 2, before its best.pt
    fit(_cfg(data, run, epochs=2, resume=True))
    best, last = _state(run / "checkpoints" / "best.pt"), _state(run / "checkpoints" / "last.pt")
    assert best["extra"] == {"epoch": 2, "metric": "map@10", "value": 0.5}
    for k, v in last["state_dict"].items():
        assert torch.equal(best["state_dict"][k], v), k


def test_a_best_checkpoint_removed_by_hand_is_reported_not_invented(data, straight2, tmp_path):
    run = _copy(straight2, tmp_path)
    _with_best(run, best_epoch=1, best_pt_epoch=None)  # epoch 1's weights are in no file any more
    with pytest.warns(UserWarning, match="best.pt does not hold epoch 1, the best one recorded in last.pt"):
        fit(_cfg(data, run, epochs=2, resume=True))
    assert not (run / "checkpoints" / "best.pt").exists()


# --------------------------------------------------------------------------- the run folder as an input


def test_run_checkpoint_says_what_is_wrong_with_a_run_folder(done_run, tmp_path):
    best = done_run / "checkpoints" / "best.pt"
    with pytest.raises(DermretrError, match=f"is a file, not a run folder.*\\(here {done_run}\\)"):
        run_checkpoint(best)
    run = _copy(done_run, tmp_path)
    (run / "checkpoints" / "best.pt").unlink()
    with pytest.raises(DermretrError, match="stopped before writing it: continue it with `dermretr train --resume`"):
        run_checkpoint(run)
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    with pytest.raises(DermretrError, match="best.pt is empty"):
        run_checkpoint(run)
    (run / "checkpoints" / "best.pt").unlink()
    (run / "checkpoints" / "best.pt").mkdir()
    with pytest.raises(DermretrError, match="best.pt is not a file"):
        run_checkpoint(run)
    assert run_checkpoint(done_run) == best


# --------------------------------------------------------------------------- the command line


def test_the_cli_reports_bad_weights_and_a_damaged_run_in_one_line(data, done_run, bad_files, tmp_path, capsys):
    evil, _ = bad_files["unsafe pickle"]
    args = ["train", "--data", data, "--out", str(tmp_path / "new"), "--epochs", "1", "--batch-size", "8",
            "--image-size", "64", "--n-masks", "2", "--device", "cpu", "--no-progress"]
    assert main([*args, "--pretrained", str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dermretr: error: cannot load {evil}: it was refused as unsafe")
    assert "weights_only" not in err and not (evil.parent / "code-ran").exists()
    run = _copy(done_run, tmp_path)
    (run / "config.json").write_text("{")
    args[4] = str(run)
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dermretr: error: {run / 'config.json'} is not valid JSON")
