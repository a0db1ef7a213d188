"""Faults: kill -9 in the middle of checkpoint and index writes, a full disk, concurrent writers.

Each kill test starts a real process, kills it with SIGKILL at a random point of its writes
(the process announces each write and the kill lands a random few milliseconds later, inside
the write or between writes), then checks that what was there before is intact and readable
and that the next run removes every temporary the killed one left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import read_only_folder, tmpfs

from dermretr._errors import OutputError

TRIALS = 3


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """A DermSynth set just large enough to train on (training cost is what these tests pay most)."""
    from dermretr.data.synth import generate

    return generate(tmp_path_factory.mktemp("faults") / "ds", n_cases=40, seed=3, image_size=64, workers=1,
                    progress=False)


def _temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".dermretr-" in p.name)


def _kill_at_a_write(code: str, nth: int, delay: float, cwd: Path) -> list[str]:
    """Run ``code``; it prints WRITE lines; SIGKILL it ``delay`` s after the ``nth`` one. Returns its lines."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=cwd, env=env)
    lines, writes = [], 0
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("WRITE"):
                writes += 1
                if writes == nth:
                    import time

                    time.sleep(delay)
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return lines


# ----------------------------------------------------------------------------- checkpoints


_TRAIN = textwrap.dedent("""
    import time, torch
    real_save = torch.save
    def announced_save(obj, f, *args, **kwargs):
        print("WRITE", f, flush=True)
        real_save(obj, f, *args, **kwargs)
        time.sleep(0.05)  # the complete temporary, not yet renamed: a window for the kill
    torch.save = announced_save
    from dermretr.train import TrainConfig, fit
    fit(TrainConfig(data="synthetic:{data}", out="{run}", epochs=2, batch_size=8, image_size=64, n_masks=2,
                    progress=False, resume={resume}))
    print("DONE", flush=True)
""")


def _check_run_consistent(run: Path) -> int:
    """last.pt, best.pt and metrics.jsonl agree; returns the last completed epoch (0 if none)."""
    ckpt = run / "checkpoints"
    if not (ckpt / "last.pt").exists():
        assert not (ckpt / "best.pt").exists(), "best.pt without last.pt"
        return 0
    last = torch.load(ckpt / "last.pt", map_location="cpu", weights_only=True)
    history = json.loads(last["history"])
    epoch = int(last["epoch"])
    assert [h["epoch"] for h in history] == list(range(1, epoch + 1))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    # metrics.jsonl is written after last.pt: equal, or one epoch behind after a kill between the two
    assert metrics in (history, history[:-1]), "metrics.jsonl is not last.pt's history"
    if (ckpt / "best.pt").exists():  # absent after a kill between the first last.pt and best.pt
        best = torch.load(ckpt / "best.pt", map_location="cpu", weights_only=True)
        assert int(best["extra"]["epoch"]) <= epoch, "best.pt is newer than last.pt"
    return epoch


@pytest.mark.slow
def test_kill_during_checkpoint_writes_keeps_a_consistent_run(tiny_root, tmp_path):
    from dermretr.train import TrainConfig, fit

    rng = random.Random(14)
    for trial in range(TRIALS):
        run = tmp_path / f"run{trial}"
        nth = rng.randint(1, 3)  # last.pt each epoch, best.pt when it improves: at least 3 writes in 2 epochs
        lines = _kill_at_a_write(_TRAIN.format(data=tiny_root, run=run, resume=False), nth, rng.uniform(0, 0.06),
                                 tmp_path)
        assert "DONE" not in lines, lines[-5:]
        done = _check_run_consistent(run)
        # the next run resumes (or starts again when no epoch was complete), removes the killed one's temporaries
        # and says so
        left = _temporaries(run)
        with pytest.warns(UserWarning, match="interrupted") if left else _nothing():
            fit(TrainConfig(data=f"synthetic:{tiny_root}", out=str(run), epochs=2, batch_size=8, image_size=64,
                            n_masks=2, progress=False, resume=done > 0))
        assert _check_run_consistent(run) == 2
        assert (run / "checkpoints" / "best.pt").exists()
        assert _temporaries(run) == [], trial
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in metrics] == [1, 2]


# ----------------------------------------------------------------------------- index folders


def _embeddings(n: int = 300, d: int = 16, m: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, d)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    loc = rng.normal(size=(n, m, d)).astype(np.float32)
    loc /= np.linalg.norm(loc, axis=-1, keepdims=True)
    return {"global": g, "local": loc, "alpha": 0.5}


def _case_table(n: int = 300) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({"case_id": [f"c{j:04d}" for j in i], "patient_id": [f"p{j}" for j in i],
                         "image_path": [f"/nowhere/{j}.jpg" for j in i], "diagnosis": "melanoma",
                         "diagnosis_group": "MEL", "split": "train", "source": "demo"})


_INDEX = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import faiss
    from test_faults import _case_table, _embeddings
    from dermretr.index import CaseIndex
    real_write = faiss.write_index
    def announced(index, path):
        print("WRITE", path, flush=True)
        real_write(index, path)
    faiss.write_index = announced
    for seed in range(1, 1000):  # replace the index again and again until killed
        CaseIndex.from_embeddings(_embeddings(seed=seed), _case_table()).save({target!r}, overwrite=True)
""")


@pytest.mark.slow
def test_kill_during_index_save_keeps_the_previous_index(tmp_path):
    from dermretr.index import CaseIndex

    rng = random.Random(15)
    target = tmp_path / "idx"
    CaseIndex.from_embeddings(_embeddings(seed=0), _case_table()).save(target)
    query = {"global": _embeddings(seed=99)["global"][:3], "local": _embeddings(seed=99)["local"][:3]}
    for trial in range(TRIALS):
        code = _INDEX.format(tests=str(Path(__file__).parent), target=str(target))
        lines = _kill_at_a_write(code, rng.randint(1, 3), rng.uniform(0, 0.05), tmp_path)
        assert lines and lines[-1].startswith("WRITE"), lines[-5:]
        index = CaseIndex.load(target)  # a complete index: the previous one or a newer complete one
        assert len(index) == 300
        hits = index.search_vectors(query, k=5)
        assert np.isfinite(hits["score"]).all()
    left = [p for p in tmp_path.iterdir() if ".dermretr-" in p.name]
    # the next save removes what the killed processes left (they may have left nothing if killed between saves)
    with pytest.warns(UserWarning, match="interrupted") if left else _nothing():
        CaseIndex.from_embeddings(_embeddings(seed=0), _case_table()).save(target, overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if p.name != "idx"] == []
    assert _temporaries(target) == []


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_SAVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_faults import _case_table, _embeddings
    from dermretr._errors import DermretrError
    from dermretr.index import CaseIndex
    index = CaseIndex.from_embeddings(_embeddings(seed={seed}), _case_table())
    while time.time() < {start}:
        time.sleep(0.001)
    try:
        index.save({target!r})
        print("WON", {seed})
    except DermretrError as exc:
        print("REFUSED", exc)
""")


@pytest.mark.slow
def test_concurrent_index_saves_exactly_one_wins(tmp_path):
    import time

    from dermretr.index import CaseIndex

    target = tmp_path / "idx"
    start = time.time() + 8  # every process imports first, then all save at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", _SAVER.format(tests=str(Path(__file__).parent), seed=s,
                                                                   start=start, target=str(target))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    lines = [o[0].strip() for o in outs]
    winners = [line for line in lines if line.startswith("WON")]
    assert len(winners) == 1, lines
    assert all(line.startswith("REFUSED") for line in lines if not line.startswith("WON"))
    seed = int(winners[0].split()[1])
    np.testing.assert_allclose(CaseIndex.load(target).global_vectors, _embeddings(seed=seed)["global"])
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs to fill."""
    with tmpfs(tmp_path / "disk", "size=1536k", "to fill a disk") as mount:
        yield mount


def test_disk_full_while_training_is_one_line_and_leaves_no_temporary(tiny_root, small_disk, capsys):
    from dermretr.cli import main

    run = small_disk / "run"
    args = ["train", "--data", f"synthetic:{tiny_root}", "--out", str(run), "--epochs", "1", "--batch-size", "8",
            "--image-size", "64", "--n-masks", "2", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dermretr: error:") and "space" in err, err
    assert _temporaries(small_disk) == []
    assert main(args) == 2  # the same error again, not "already holds a run"
    err = capsys.readouterr().err
    assert "space" in err and "already holds" not in err


def test_disk_full_while_saving_an_index_keeps_the_previous_one(small_disk):
    from dermretr.index import CaseIndex

    target = small_disk / "idx"
    CaseIndex.from_embeddings(_embeddings(n=300, d=16), _case_table(300)).save(target)
    before = CaseIndex.load(target).global_vectors.copy()
    big = CaseIndex.from_embeddings(_embeddings(n=3000, d=64, seed=1), _case_table(3000))
    with pytest.raises(OutputError, match="space"):
        big.save(target, overwrite=True)
    np.testing.assert_array_equal(CaseIndex.load(target).global_vectors, before)
    assert _temporaries(small_disk) == []


def test_disk_full_while_generating_dermsynth(small_disk):
    from dermretr.data.synth import generate

    with pytest.raises(OutputError, match="space"):
        generate(small_disk / "ds", n_cases=200, image_size=128, workers=1, progress=False)
    assert list(small_disk.iterdir()) == []


def test_read_only_output_is_one_line_naming_it(tmp_path, capsys):
    from dermretr.cli import main

    with read_only_folder(tmp_path) as ro:
        for args in (["synth", "--out", str(ro / "ds"), "--n-cases", "3", "--image-size", "64", "--no-progress"],
                     ["train", "--data", "synthetic:/nowhere", "--out", str(ro / "run"), "--no-progress"],
                     ["evaluate", "--run", str(tmp_path), "--data", "synthetic:/nowhere", "--out",
                      str(ro / "m.json")],
                     ["fairness", "--run", str(tmp_path), "--data", "synthetic:/nowhere", "--out",
                      str(ro / "fair")]):
            assert main(args) == 2, args
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith("dermretr: error:"), (args, err)
            assert str(ro) in err, (args, err)  # the output is what failed, before the (missing) data was read
        assert list(ro.iterdir()) == []


# ----------------------------------------------------------------------------- permissions


def test_outputs_follow_the_umask(tmp_path):
    from dermretr._io import atomic_dir, atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
        os.umask(0o077)
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("x")
        assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    from dermretr._io import clean_stale

    live = tmp_path / f".a.txt.dermretr-{os.getppid()}-abcdefgh.tmp"  # our parent process is alive
    dead = tmp_path / ".a.txt.dermretr-999999999-abcdefgh.tmp"
    mine = tmp_path / ".a.txt.tmp"
    for p in (live, dead, mine):
        p.write_text("x")
    with pytest.warns(UserWarning, match="interrupted"):
        assert clean_stale(tmp_path) == [dead]
    assert live.exists() and mine.exists() and not dead.exists()


def test_a_second_writer_gets_a_clear_error(tmp_path):
    from dermretr._io import exclusive

    code = textwrap.dedent(f"""
        from dermretr._io import exclusive
        from dermretr._errors import OutputError
        try:
            with exclusive({str(tmp_path / 'out')!r}):
                print("GOT")
        except OutputError as exc:
            print("REFUSED", exc)
    """)
    with exclusive(tmp_path / "out"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.startswith("REFUSED") and "another dermretr process" in out
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.startswith("GOT")
    assert list(tmp_path.iterdir()) == []
