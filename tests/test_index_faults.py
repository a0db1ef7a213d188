"""Case index under faults: concurrent and killed saves, damaged index folders.

Every bad input or damaged file must end in a one-line :class:`DermretrError` naming what is wrong
(the folder, the file or field, the value) and what to do; nothing the user wrote is ever replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
from index_fixtures import D, M, N, dead_pid, first_query, one_line_error, small_index, snapshot

from dermretr import _io
from dermretr._errors import DermretrError, OutputError
from dermretr.index import CaseIndex, IndexWarning, _store

# ---------------------------------------------------------------------------- save: temporaries, umask, user files


@pytest.mark.parametrize("mask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_save_follows_the_umask_and_uses_dermretr_temporaries(tmp_path, monkeypatch, mask, folder_mode, file_mode):
    seen = []
    real = _store.write_cases

    def spy(cases, file):
        seen.append((file.parent.name, stat.S_IMODE(file.parent.stat().st_mode)))
        return real(cases, file)

    monkeypatch.setattr(_store, "write_cases", spy)
    old = os.umask(mask)
    try:
        for overwrite in (False, True):
            path = small_index().save(tmp_path / "idx", overwrite=overwrite)
            assert stat.S_IMODE(path.stat().st_mode) == folder_mode
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
            assert set(modes) == {"manifest.json", "index.faiss", "global.npy", "local.npy", "cases.csv"}
            assert set(modes.values()) == {file_mode}, modes
    finally:
        os.umask(old)
    assert len(seen) == 2
    for name, mode in seen:  # written in a temporary of dermretr's naming that follows the umask, not 0700
        assert re.fullmatch(rf"\.idx\.dermretr-{os.getpid()}-\w+\.new", name), name
        assert mode == folder_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_a_killed_save_leaves_temporaries_the_next_save_removes(tmp_path):
    index = small_index()
    index.save(tmp_path / "idx")
    dead, alive = dead_pid(), os.getppid()
    stale = [tmp_path / f".idx.dermretr-{dead}-ab12cd34.new", tmp_path / f".idx.dermretr-{dead}-ef56gh78.old"]
    for folder in stale:  # what kill -9 during a save leaves: a half-written new folder, the moved-away old one
        folder.mkdir()
        (folder / "index.faiss").write_bytes(b"half")
    kept = [tmp_path / f".idx.dermretr-{alive}-zz99zz99.new",  # a live process's save in progress
            tmp_path / f".other.dermretr-{dead}-ab12cd34.new",  # another output's: not this save's business
            tmp_path / ".idx.new-mine"]  # a folder of the user's
    for folder in kept:
        folder.mkdir()
        (folder / "keep.txt").write_text("mine")
    with pytest.warns(_io.StaleTemporaryWarning, match="interrupted dermretr run"):
        index.save(tmp_path / "idx", overwrite=True)
    assert not any(p.exists() for p in stale)
    assert all((p / "keep.txt").read_text() == "mine" for p in kept)
    assert len(CaseIndex.load(tmp_path / "idx")) == N


def test_temporaries_of_older_versions_are_reported_not_removed(tmp_path):
    """Older versions named them .NAME.new-XXXXXXXX / .NAME.old-XXXXXXXX, without a process id."""
    index = small_index()
    index.save(tmp_path / "idx")
    old = [tmp_path / ".idx.new-k2j4_x9a", tmp_path / ".idx.old-0abcdefg"]
    for folder in old:
        folder.mkdir()
        (folder / "index.faiss").write_bytes(b"half")
    with pytest.warns(IndexWarning, match=r"2 folder\(s\) beside .*\(\.idx\.new-k2j4_x9a, \.idx\.old-0abcdefg\); "
                                          "delete them if no older dermretr"):
        index.save(tmp_path / "idx", overwrite=True)
    assert all((p / "index.faiss").read_bytes() == b"half" for p in old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.save(tmp_path / "other")  # none beside this one: no warning


def test_an_index_folder_holding_user_files_is_never_replaced(tmp_path):
    folder = small_index().save(tmp_path / "idx")
    (folder / "notes.txt").write_text("my notes on these cases")
    before = snapshot(folder)
    one_line_error(lambda: small_index(40).save(folder, overwrite=True), str(folder), "notes.txt",
                    "did not write", "nothing was changed", error=OutputError)
    one_line_error(lambda: CaseIndex.check_output(folder, overwrite=True), "notes.txt", error=OutputError)
    assert snapshot(folder) == before
    (folder / "notes.txt").unlink()
    (folder / "extra").mkdir()  # a sub-folder is not an index's either
    one_line_error(lambda: small_index(40).save(folder, overwrite=True), "extra", error=OutputError)


@pytest.mark.parametrize("content", [
    {"thesis.docx": b"chapter 1", "index.faiss": b"my own file that happens to have this name"},
    {"manifest.json": b'{"name": "my web app", "start_url": "/"}'},
    {"manifest.json": b"not json at all", "global.npy": b"mine"},
    {"cases.csv": b"a,b\n1,2\n", "global.npy": b"mine"},
])
def test_a_folder_with_index_like_names_among_user_files_is_not_an_index(tmp_path, content):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, data in content.items():
        (folder / name).write_bytes(data)
    assert not _store.is_index_dir(folder)
    for overwrite in (False, True):
        one_line_error(lambda: small_index().save(folder, overwrite=overwrite), "is not a dermretr index folder",
                        error=OutputError)
    assert snapshot(folder) == content


@pytest.mark.parametrize("damage", ["older format", "manifest not json", "manifest only"])
def test_a_damaged_or_older_index_can_be_replaced_with_overwrite(tmp_path, damage):
    folder = small_index().save(tmp_path / "idx")
    if damage == "older format":
        (folder / "manifest.json").unlink()
    elif damage == "manifest not json":
        (folder / "manifest.json").write_text("{trunc")
    else:
        for p in folder.iterdir():
            if p.name != "manifest.json":
                p.unlink()
    with pytest.raises(DermretrError):
        CaseIndex.load(folder)
    one_line_error(lambda: small_index(40).save(folder), "already holds an index; pass overwrite=True",
                   error=OutputError)
    small_index(40).save(folder, overwrite=True)
    assert len(CaseIndex.load(folder)) == 40


def test_save_through_a_symlink_writes_where_it_points(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert small_index().save(link) == real
    small_index(40).save(link, overwrite=True)
    assert link.is_symlink() and len(CaseIndex.load(link)) == 40 and len(CaseIndex.load(real)) == 40


@pytest.mark.parametrize("path, message", [(42, "must be a path"), ("", "must be a path"), (None, "must be a path")])
def test_save_bad_path_or_overwrite(tmp_path, path, message):
    one_line_error(lambda: small_index().save(path), message, error=OutputError)
    one_line_error(lambda: small_index().save(tmp_path / "i", overwrite="no"), "overwrite must be True or False")
    (tmp_path / "file").write_text("x")
    one_line_error(lambda: small_index().save(tmp_path / "file" / "idx"), "is a file, not a folder", error=OutputError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("where", ["faiss", "npy", "short write"])
def test_a_full_disk_during_save_is_one_clear_error_and_changes_nothing(tmp_path, monkeypatch, where):
    folder = small_index().save(tmp_path / "idx")
    before = snapshot(folder)

    def full(*args, **kwargs):
        if where == "faiss":
            raise RuntimeError("Error in faiss::FileIOWriter::operator()(...) at /project/faiss/impl/io.cpp:98: "
                               "Error: 'ret == n' failed: write error\nsecond line")
        raise OSError(28, "No space left on device")

    def short(file, array):  # what numpy's tofile says when the disk fills up: no errno
        Path(file).write_bytes(b"\x93NUMPY")
        raise OSError("192000 requested and 177120 written")

    if where == "faiss":
        monkeypatch.setattr(faiss, "write_index", full)
        parts = ["FAISS could not write index.faiss ('ret == n' failed: write error)", "disk space"]
    elif where == "short write":
        monkeypatch.setattr(np, "save", short)
        parts = ["global.npy was only partly written (192000 requested and 177120 written)", "free some disk space"]
    else:
        monkeypatch.setattr(np, "save", full)
        parts = ["No space left on device", "free some disk space"]
    one_line_error(lambda: small_index(40).save(folder, overwrite=True), "cannot write", str(folder), *parts,
                    error=OutputError)
    assert snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_paths_the_system_refuses(tmp_path):
    nul, long = str(tmp_path / "a\0b"), tmp_path / ("x" * 300)
    one_line_error(lambda: small_index().save(nul), "contains a NUL character", error=OutputError)
    one_line_error(lambda: small_index().save(long), "cannot use", "File name too long", error=OutputError)
    one_line_error(lambda: CaseIndex.load(nul), "contains a NUL character")
    one_line_error(lambda: CaseIndex.load(long), "cannot use", "File name too long")
    one_line_error(lambda: CaseIndex.open(long), "cannot use", "File name too long")
    assert list(tmp_path.iterdir()) == []


def test_save_while_another_process_writes_the_folder(tmp_path):
    path = tmp_path / "idx"
    with _io.exclusive(path, "index folder"):  # what another process's save holds
        one_line_error(lambda: small_index().save(path), str(path), "being written by another dermretr process",
                        error=OutputError)
    assert not path.exists()
    small_index().save(path)


def test_save_checks_the_folder_again_once_it_holds_the_lock(tmp_path, monkeypatch):
    """Another process finished saving between our first check and our lock: ours must not replace it."""
    path = tmp_path / "idx"
    real = _io.exclusive

    @contextlib.contextmanager
    def late(target, what="output"):
        monkeypatch.setattr(_io, "exclusive", real)
        small_index(40, seed=9).save(path)  # the other process's save, done just before we got the lock
        with real(target, what):
            yield

    monkeypatch.setattr(_io, "exclusive", late)
    one_line_error(lambda: small_index().save(path), "already holds an index; pass overwrite=True", error=OutputError)
    assert len(CaseIndex.load(path)) == 40


_SAVER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from index_fixtures import small_index
from dermretr._errors import DermretrError
from dermretr.index import _store

path, n, sync = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
index = small_index(n)
real = _store.write_cases
def slow(cases, file):  # a save that takes a while, so that the others come while it writes
    time.sleep(0.5)
    real(cases, file)
_store.write_cases = slow
(sync / f"ready-{n}").touch()
deadline = time.time() + 60
while not (sync / "go").exists() and time.time() < deadline:
    time.sleep(0.005)
try:
    index.save(path)
except DermretrError as exc:
    print(f"ERROR {exc}")
    sys.exit(2)
print("SAVED")
"""


def test_concurrent_saves_into_one_new_folder_one_wins(tmp_path):
    out, sync = tmp_path / "out", tmp_path / "sync"
    out.mkdir()
    sync.mkdir()
    sizes = [31, 32, 33, 34]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen([sys.executable, "-c", _SAVER, str(out / "idx"), str(n), str(sync),
                               str(Path(__file__).parent)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for n in sizes]
    try:
        deadline = time.time() + 120
        while len(list(sync.glob("ready-*"))) < len(sizes) and time.time() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.02)
        (sync / "go").touch()  # all start saving together
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outputs = [o.strip() for o, _ in results]
    assert all(e.strip() == "" for _, e in results), [e for _, e in results]  # no traceback anywhere
    winners = [n for n, o in zip(sizes, outputs) if o == "SAVED"]
    assert len(winners) == 1, outputs
    for o in outputs:
        if o != "SAVED":
            assert o.startswith("ERROR") and "\n" not in o
            assert "being written by another dermretr process" in o or "already holds an index" in o, o
    assert [p.returncode for p in procs].count(0) == 1 and [p.returncode for p in procs].count(2) == 3
    assert len(CaseIndex.load(out / "idx")) == winners[0]
    assert sorted(p.name for p in out.iterdir()) == ["idx"]  # no temporary or lock file left


# ---------------------------------------------------------------------------- open: a damaged manifest


@pytest.fixture
def saved(tmp_path) -> Path:
    return small_index().save(tmp_path / "idx")


def _edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    for key, value in changes.items():
        target = manifest
        *parents, last = key.split("__")
        for p in parents:
            target = target[p]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))


_DELETE = object()


@pytest.mark.parametrize("field, value, shown", [
    ("count", "abc", "'abc'"), ("count", -5, "-5"), ("count", 0, "0"), ("count", True, "True"),
    ("count", 30.0, "30.0"), ("dim", 0, "0"), ("dim", "8", "'8'"), ("dim", None, "None"),
    ("n_masks", -1, "-1"), ("n_masks", "2", "'2'"),
    ("alpha", 5.0, "5.0"), ("alpha", -0.1, "-0.1"), ("alpha", "high", "'high'"), ("alpha", None, "None"),
    ("alpha", float("nan"), "nan"), ("alpha", False, "False"),
    ("kind", "annoy", "'annoy'"), ("kind", 3, "3"), ("kind", ["flat"], "['flat']"),
    ("params", "fast", "'fast'"), ("params__rerank", 0, "0"), ("params__rerank", 2.5, "2.5"),
    ("params__nprobe", -1, "-1"), ("params__ef_search", "x", "'x'"), ("params__nlist", None, "None"),
    ("columns", ["a"], "['a']"), ("model", "x", "'x'"), ("model", {"checkpoint_path": 5}, "5"),
    ("files", {"index.faiss": "big"}, "'big'"), ("files", [1], "[1]"), ("case_ids_sha256", 12, "12"),
    ("columns", {"age": 5}, "5"),
])
def test_bad_manifest_fields_are_named_with_their_value(saved, field, value, shown):
    _edit_manifest(saved, **{field: value})
    name = field.replace("__", ".")
    if isinstance(value, dict):  # the entry inside is named
        name = f"{name}.{next(iter(value))}"

    for call in (lambda: CaseIndex.load(saved), lambda: CaseIndex.read_manifest(saved)):
        one_line_error(call, f"index {saved} is damaged", f"field {name!r} is {shown}", "rebuild it with")


@pytest.mark.parametrize("text, message", [
    (b"{not json", "manifest.json is not valid JSON"), (b"", "manifest.json is not valid JSON"),
    (b"\xff\xfe\x00garbage", "manifest.json is not valid JSON"), (b"[" * 100000, "manifest.json is not valid JSON"),
    (b"[1, 2]", "holds [1, 2] instead of a JSON object"), (b'"x"', "instead of a JSON object"),
    (b"42", "instead of a JSON object"), (b"null", "instead of a JSON object"),
    (b'{"format": true}', "has no format version"), (b'{"format": "1"}', "has no format version"),
    (b'{"format": 1}', "is incomplete (missing ['kind', 'count', 'dim', 'n_masks', 'alpha'])"),
])
def test_a_manifest_that_is_not_one(saved, text, message):
    (saved / "manifest.json").write_bytes(text)
    one_line_error(lambda: CaseIndex.load(saved), message, "rebuild it with")


def test_manifest_missing_unreadable_or_a_folder(saved, tmp_path, monkeypatch):
    one_line_error(lambda: CaseIndex.load(saved / "index.faiss"), "is a file, not an index folder")
    one_line_error(lambda: CaseIndex.load(42), "index folder must be a path")
    real = Path.read_bytes

    def denied(self):
        if self.name == "manifest.json":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    one_line_error(lambda: CaseIndex.load(saved), f"cannot read {saved / 'manifest.json'}: Permission denied",
                    "check that it is readable")
    monkeypatch.undo()
    (saved / "manifest.json").unlink()
    (saved / "manifest.json").mkdir()
    one_line_error(lambda: CaseIndex.load(saved), "manifest.json is a folder", "rebuild")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: CaseIndex.load(tmp_path / "empty"), "is not a dermretr index (no manifest.json)")


def test_the_cli_says_a_damaged_manifest_in_one_line(saved, capsys):
    from dermretr.cli import main

    _edit_manifest(saved, alpha="high")
    assert main(["search", "--index", str(saved), "--image", "x.jpg"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dermretr: error: index ") and "field 'alpha' is 'high'" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- open: damaged or missing files


def _faiss_bytes(kind: str, n: int = N) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return (small_index(n, kind=kind).save(Path(tmp) / "i") / "index.faiss").read_bytes()


@pytest.mark.parametrize("recorded", [True, False], ids=["sizes recorded", "older manifest"])
@pytest.mark.parametrize("damage, message", [
    ("empty", "index.faiss is truncated (0 bytes)"), ("half", None),
    ("ten bytes", "index.faiss is truncated (10 bytes)"), ("garbage", None),
    ("count in header", "index.faiss holds 1000000 vectors of dimension 8 but manifest.json says 30"),
    ("vector size", None), ("hnsw file", "holds a IndexHNSWFlat but manifest.json says kind 'flat'"),
    ("other count", "index.faiss holds 31 vectors"),
])
def test_a_damaged_faiss_file(saved, damage, message, recorded):
    file = saved / "index.faiss"
    data = file.read_bytes()
    new = {"empty": b"", "half": data[: len(data) // 2], "ten bytes": data[:10], "garbage": b"hello world" * 40,
           "count in header": data[:8] + (10 ** 6).to_bytes(8, "little") + data[16:],
           "vector size": data[:37] + (1 << 50).to_bytes(8, "little") + data[45:],
           "hnsw file": _faiss_bytes("hnsw"), "other count": _faiss_bytes("flat", 31)}[damage]
    file.write_bytes(new)
    if not recorded:
        _edit_manifest(saved, files=_DELETE)
    msg = one_line_error(lambda: CaseIndex.load(saved), f"index {saved} is damaged", "rebuild it with")
    if recorded and len(new) != len(data):
        assert f"index.faiss has {len(new)} bytes but {len(data)} were written" in msg
    elif message is not None:
        assert message in msg
    else:
        assert "index.faiss cannot be read by FAISS" in msg and "Error in" not in msg


def test_faiss_running_out_of_memory_on_a_corrupt_file(saved, monkeypatch):
    def oom(*args):
        raise MemoryError

    monkeypatch.setattr(faiss, "read_index", oom)
    one_line_error(lambda: CaseIndex.load(saved), "index.faiss cannot be read by FAISS", "more memory")


def _save_npy(file: Path, array) -> None:
    with open(file, "wb") as f:
        np.save(f, array, allow_pickle=True)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("name, damage, message", [
    ("global.npy", "empty", "global.npy cannot be read"),
    ("global.npy", "half", None), ("global.npy", "garbage", "global.npy cannot be read"),
    ("global.npy", "npz", "global.npy is not a .npy array file"),
    ("global.npy", "objects", "global.npy cannot be read"),
    ("global.npy", "nan", "global.npy holds NaN or infinite values"),
    ("global.npy", "inf", "global.npy holds NaN or infinite values"),
    ("global.npy", "float64", "global.npy holds a float64 array of shape (30, 8)"),
    ("global.npy", "rows", "global.npy holds a float32 array of shape (29, 8)"),
    ("local.npy", "nan", "local.npy holds NaN or infinite values"),
    ("local.npy", "inf", "local.npy holds NaN or infinite values"),
    ("local.npy", "float32", "local.npy holds a float32 array of shape (30, 2, 8)"),
    ("local.npy", "masks", "local.npy holds a float16 array of shape (30, 3, 8)"),
])
def test_damaged_vectors(saved, mmap, name, damage, message):
    file = saved / name
    array = np.load(file)
    if damage in ("empty", "half", "garbage"):
        data = file.read_bytes()
        file.write_bytes({"empty": b"", "half": data[: len(data) // 2], "garbage": b"x" * 300}[damage])
    elif damage == "npz":
        with open(file, "wb") as f:
            np.savez(f, a=array)
    elif damage == "objects":
        _save_npy(file, np.array([1, "a"], dtype=object))
    elif damage in ("nan", "inf"):
        array = array.copy()
        array[7, ...] = np.nan if damage == "nan" else np.inf
        np.save(file, array)
    elif damage in ("float64", "float32"):
        np.save(file, array.astype(damage))
    elif damage == "rows":
        np.save(file, array[:-1])
    else:
        np.save(file, np.concatenate([array, array[:, :1]], axis=1))
    _edit_manifest(saved, files=_DELETE)  # as an older manifest: the contents themselves are checked
    msg = one_line_error(lambda: CaseIndex.load(saved, mmap=mmap), f"index {saved} is damaged", "rebuild it with")
    assert message is None or message in msg, msg


def test_scores_are_never_nan_even_from_vectors_that_bypassed_the_checks():
    index = small_index()
    g = index.global_vectors.copy()
    g[:, 0] = np.nan
    broken = CaseIndex(index.faiss_index, g, index.local_vectors, index.cases, index.manifest)
    one_line_error(lambda: broken.search_vectors(first_query(index), k=3), "scores are not finite", "rebuild")


@pytest.mark.parametrize("name", ["index.faiss", "global.npy", "local.npy", "cases.csv"])
def test_missing_or_unreadable_files(saved, name, monkeypatch):
    (saved / name).rename(saved.parent / "moved")
    one_line_error(lambda: CaseIndex.load(saved), f"index {saved} is incomplete: {name} is missing",
                    "rebuild it with")
    (saved / name).mkdir()
    one_line_error(lambda: CaseIndex.load(saved), f"{name} is not a file")
    (saved / name).rmdir()
    (saved.parent / "moved").rename(saved / name)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    if name == "index.faiss":
        import builtins

        real = builtins.open
        monkeypatch.setattr(builtins, "open", lambda f, *a, **k: denied() if str(f).endswith(name) else
                            real(f, *a, **k))
    elif name == "cases.csv":
        monkeypatch.setattr(pd, "read_csv", denied)
    else:
        monkeypatch.setattr(np, "load", denied)
    one_line_error(lambda: CaseIndex.load(saved), "cannot read", "Permission denied", "check that it is readable")


def test_local_vectors_the_manifest_does_not_know_of(tmp_path):
    folder = small_index(local=False).save(tmp_path / "idx")
    np.save(folder / "local.npy", np.zeros((N, M, D), np.float16))
    one_line_error(lambda: CaseIndex.load(folder), "local.npy is there but manifest.json says the index has no "
                                                    "local vectors")


@pytest.mark.parametrize("damage, message", [
    ("empty", "cannot read cases.csv"), ("binary", "cannot read cases.csv"),
    ("row missing", "cases.csv has 29 rows, manifest.json says 30"),
    ("row added", "cases.csv has 31 rows, manifest.json says 30"),
    ("rows swapped", "case ids in cases.csv are not those the vectors were stored for"),
    ("id renamed", "case ids in cases.csv are not those the vectors were stored for"),
    ("duplicate id", "'case_id'"), ("no image_path", "missing required column"),
    ("score column", "column(s) ['score'] whose names search results use"),
])
def test_damaged_case_table(saved, damage, message):
    file = saved / "cases.csv"
    table = pd.read_csv(file, dtype=str, keep_default_na=False)
    if damage == "empty":
        file.write_bytes(b"")
    elif damage == "binary":
        file.write_bytes(b"\x00\xff\xfe" * 50)
    else:
        if damage == "row missing":
            table = table.iloc[:-1]
        elif damage == "row added":
            table = pd.concat([table, table.iloc[:1].assign(case_id="new")])
        elif damage == "rows swapped":
            table = table.iloc[[1, 0, *range(2, N)]]
        elif damage == "id renamed":
            table.loc[3, "case_id"] = "someone-else"
        elif damage == "duplicate id":
            table.loc[3, "case_id"] = table.loc[4, "case_id"]
        elif damage == "no image_path":
            table = table.drop(columns="image_path")
        else:
            table["score"] = "1"
        table.to_csv(file, index=False)
    one_line_error(lambda: CaseIndex.load(saved), f"index {saved} is damaged", message, "rebuild it with")


def test_an_intact_index_still_loads_with_every_check(saved):
    """The checks above do not refuse a good index (nor one whose case table was edited without changing ids)."""
    file = saved / "cases.csv"
    table = pd.read_csv(file, dtype=str, keep_default_na=False)
    table.loc[0, "diagnosis"] = "corrected diagnosis"
    table.to_csv(file, index=False)
    for mmap in (True, False):
        loaded = CaseIndex.load(saved, mmap=mmap)
        assert loaded.cases.loc[0, "diagnosis"] == "corrected diagnosis"
        assert np.isfinite(loaded.search_vectors(first_query(loaded), k=5)["score"]).all()
