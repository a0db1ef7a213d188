"""`dermretr serve`: a search answered by a server prints exactly what the search prints itself.

The server runs in a thread of the test process (one test starts the real command in its own
process, to check the signals); each test has its own private server folder
(``DERMRETR_RUNTIME_DIR``).  The index holds 20 DermSynth cases encoded by a tiny untrained model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from contextlib import suppress
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from dermretr import DermretrError
from dermretr.cli import main
from dermretr.cli._serve import endpoint, forward, runtime_dir, serve
from dermretr.index import CaseIndex

QUERY_TEXT = "blue-whitish veil, atypical pigment network"


@pytest.fixture(scope="module")
def built(model, synth_cases, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    folder = model.save_pretrained(root / "tiny-model")
    cases = synth_cases.head(20).reset_index(drop=True)
    CaseIndex.build(str(folder), cases, device="cpu").save(root / "index")
    return {"root": root, "folder": folder, "cases": cases, "index": root / "index"}


@pytest.fixture
def private(monkeypatch):
    # a short folder: a socket path holds at most 107 bytes (103 on macOS), and pytest's tmp_path can be longer
    folder = Path(tempfile.mkdtemp(prefix="drs-")) / "run"
    monkeypatch.setenv("DERMRETR_RUNTIME_DIR", str(folder))
    yield folder
    shutil.rmtree(folder.parent, ignore_errors=True)


class Running:
    """A server of ``index`` in a thread; ``stop()`` ends it and returns what it raised, if anything."""

    def __init__(self, index: Path):
        self.index, self.ready, self.event = index, threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(120) or self.error is not None, "the server did not start"

    def _run(self) -> None:
        try:
            serve(self.index, device="cpu", stop=self.event, announce=lambda line: self.ready.set())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
            self.ready.set()

    def stop(self) -> BaseException | None:
        self.event.set()
        address, family, key_file = endpoint(self.index)
        if key_file.exists():  # wake the accept() the server waits in
            with suppress(OSError, EOFError):  # it may have stopped first
                Client(address, family, authkey=key_file.read_bytes()).close()
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.error


@pytest.fixture
def server(built, private):
    running = Running(built["index"])
    assert running.error is None, running.error
    yield running
    running.stop()


def search(capsys, index, *extra, image=None):
    code = main(["search", "--index", str(index), "--image", str(image), "--device", "cpu", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def first_image(built) -> str:
    return str(built["cases"].loc[0, "image_path"])


@pytest.mark.parametrize("extra", [["--text", QUERY_TEXT], ["--text", QUERY_TEXT, "--keep-self", "-k", "3"],
                                   ["--json", "--text", "asymmetric"], ["--filter", "fitzpatrick=1,2,3"]])
def test_a_served_search_prints_what_the_search_prints(server, built, capsys, extra):
    image = first_image(built)
    code, out, err = search(capsys, built["index"], *extra, image=image)
    assert code == 0
    assert "answered by `dermretr serve`" in err
    here = search(capsys, built["index"], "--no-server", *extra, image=image)
    assert here[0] == 0 and "answered by" not in here[2]
    assert out == here[1]  # byte for byte
    assert err.splitlines()[1:] == here[2].splitlines()  # its notes and warnings, after the line saying who answered


def test_image_paths_are_shown_relative_to_the_callers_folder(server, built, capsys, monkeypatch):
    image = Path(first_image(built))
    monkeypatch.chdir(image.parent.parent)  # the query image given relative to the caller's folder
    relative = os.path.relpath(image)
    served = search(capsys, built["index"], "--text", QUERY_TEXT, image=relative)
    here = search(capsys, built["index"], "--no-server", "--text", QUERY_TEXT, image=relative)
    assert served[0] == here[0] == 0 and served[1] == here[1]
    assert f" {image.parent.name}{os.sep}" in served[1]  # shown relative, as the caller's own search shows them


def test_errors_come_back_in_one_line_and_the_server_goes_on(server, built, capsys, tmp_path):
    code, out, err = search(capsys, built["index"], "--text", QUERY_TEXT, image=tmp_path / "missing.jpg")
    assert code == 2 and out == ""
    missing = tmp_path / "missing.jpg"
    assert err.splitlines()[1] == f"dermretr: error: query image: image file not found: {missing}; check the path"
    code, _, err = search(capsys, built["index"], "--rerank", "0", image=first_image(built))
    assert code == 2 and "--rerank must be at least 1, got 0" in err
    code, out, _ = search(capsys, built["index"], "--rerank", "3", image=first_image(built))
    assert code == 0 and "rank " in out
    address, family, key_file = endpoint(built["index"])
    with Client(address, family, authkey=key_file.read_bytes()) as conn:  # what dermretr search never sends
        conn.send_bytes(b"not json")
    code, out, _ = search(capsys, built["index"], image=first_image(built))
    assert code == 0 and "rank " in out
    assert server.thread.is_alive() and server.error is None


def test_a_rerank_of_one_search_does_not_stay_for_the_next(built, private, capsys, monkeypatch):
    seen = []
    real = CaseIndex.search

    def spy(self, *args, **kwargs):
        seen.append(self.rerank)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CaseIndex, "search", spy)
    running = Running(built["index"])
    try:
        assert search(capsys, built["index"], "--rerank", "5", image=first_image(built))[0] == 0
        assert search(capsys, built["index"], image=first_image(built))[0] == 0
    finally:
        assert running.stop() is None
    assert seen[0] == 5 and seen[-1] == 100


def test_a_caller_without_the_key_is_refused(server, built, capsys):
    address, family, _ = endpoint(built["index"])
    with pytest.raises(AuthenticationError):
        Client(address, family, authkey=b"not the key")
    assert search(capsys, built["index"], image=first_image(built))[0] == 0


def test_stopping_removes_the_servers_files(built, private):
    running = Running(built["index"])
    address, family, key_file = endpoint(built["index"])
    assert key_file.exists() and Path(address).exists()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600" and oct(private.stat().st_mode & 0o777) == "0o700"
    assert running.stop() is None
    assert list(private.iterdir()) == []


def test_a_second_server_of_the_same_index_is_refused(server, built, capsys):
    assert main(["serve", "--index", str(built["index"]), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dermretr: error: {built['index'].resolve()} is already served (server process ")
    assert len(err.splitlines()) == 1


def test_a_killed_servers_files_are_removed_and_the_search_runs_here(built, private, capsys):
    address, family, key_file = endpoint(built["index"], create=True)
    dead = socket.socket(socket.AF_UNIX)  # a socket file nobody listens on: what a killed server leaves
    dead.bind(address)
    dead.close()
    key_file.write_bytes(b"k" * 32)
    code, out, err = search(capsys, built["index"], image=first_image(built))
    assert code == 0 and "rank " in out and "answered by" not in err
    assert list(private.iterdir()) == []
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(address)
    dead.close()
    key_file.write_bytes(b"k" * 32)
    running = Running(built["index"])  # a new server removes them too, and starts
    assert running.error is None and running.stop() is None


def test_a_rewritten_index_is_reopened(built, private, capsys, tmp_path):
    index = tmp_path / "index"
    CaseIndex.build(str(built["folder"]), built["cases"], device="cpu").save(index)
    running = Running(index)
    try:
        code, out, _ = search(capsys, index, "--json", "-k", "20", image=first_image(built))
        assert code == 0 and len(json.loads(out)) == 19  # the query's own case left out
        smaller = built["cases"].iloc[5:].reset_index(drop=True)
        CaseIndex.build(str(built["folder"]), smaller, device="cpu").save(index, overwrite=True)
        code, out, err = search(capsys, index, "--json", "-k", "15", image=first_image(built))
        assert code == 0, err
        assert {r["case_id"] for r in json.loads(out)} == set(smaller["case_id"])
    finally:
        assert running.stop() is None


def test_a_folder_others_can_write_to_is_refused(built, private, capsys):
    private.mkdir(mode=0o700)
    private.chmod(0o777)
    with pytest.raises(DermretrError, match="others can write to it; set DERMRETR_RUNTIME_DIR"):
        runtime_dir()
    assert main(["serve", "--index", str(built["index"])]) == 2
    assert "DERMRETR_RUNTIME_DIR" in capsys.readouterr().err
    code, out, err = search(capsys, built["index"], image=first_image(built))  # searched here, without a server
    assert code == 0 and "rank " in out and "answered by" not in err


def test_a_folder_too_deep_for_a_socket_is_refused_in_one_line_and_search_still_runs(built, tmp_path, monkeypatch,
                                                                                   capsys):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("DERMRETR_RUNTIME_DIR", str(deep))
    assert main(["serve", "--index", str(built["index"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dermretr: error: the server folder {deep} is too deep for a socket") and \
        err.count("\n") == 1 and "set DERMRETR_RUNTIME_DIR to a shorter private folder" in err
    code, out, err = search(capsys, built["index"], image=first_image(built))  # searched here, without a server
    assert code == 0 and "rank " in out and "answered by" not in err


def test_no_server_searches_here(built, private, capsys):
    class Args:
        index, image, text, k, alpha, filter, rerank, keep_self, json = (str(built["index"]), "x.jpg", "", 10, None,
                                                                         [], None, False, False)

    assert forward(Args()) is None  # nobody serves this index


def test_the_command_serves_and_stops_on_a_signal(built, private, tmp_path):
    env = {**os.environ, "DERMRETR_RUNTIME_DIR": str(private)}
    proc = subprocess.Popen([sys.executable, "-m", "dermretr", "serve", "--index", str(built["index"]), "--device",
                             "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"dermretr: serving {built['index'].resolve()} (20 cases)"), proc.stderr.read()
        done = subprocess.run([sys.executable, "-m", "dermretr", "search", "--index", str(built["index"]), "--image",
                               first_image(built), "--text", QUERY_TEXT], env=env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        assert done.returncode == 0 and "rank " in done.stdout
        assert done.stderr.startswith(f"dermretr: note: answered by `dermretr serve` (process {proc.pid})")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and err == "dermretr: server stopped\n"
    assert list(private.iterdir()) == []


def test_a_server_of_another_dermretr_version_does_not_answer(server, built, capsys, monkeypatch):
    address, family, key_file = endpoint(built["index"])
    with Client(address, family, authkey=key_file.read_bytes()) as conn:
        conn.send_bytes(json.dumps({"image": first_image(built), "text": "", "version": "0.0.1"}).encode())
        reply = json.loads(conn.recv_bytes())
    assert "rc" not in reply and reply["pid"] == os.getpid()  # it says who it is, and searches nothing
    import dermretr.cli._serve as serve_module

    monkeypatch.setattr(serve_module, "_ask", lambda conn, request: {"pid": 4242, "version": "9.9"})
    code, out, err = search(capsys, built["index"], image=first_image(built))
    assert code == 0 and "rank " in out  # searched here instead
    assert "dermretr: warning: the search server of" in err and "(process 4242) runs dermretr 9.9" in err


@pytest.mark.parametrize("extra, says", [(["--filter", "fitzpatrick"], "must look like COLUMN=V1,V2"),
                                         (["--rerank", "0"], "--rerank must be at least 1, got 0")])
def test_search_arguments_are_checked_before_anything_is_loaded(tmp_path, private, capsys, extra, says):
    code = main(["search", "--index", str(tmp_path / "no-index"), "--image", "x.jpg", *extra])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "index folder not found" not in err and err.count("\n") == 1


def test_a_key_that_does_not_open_the_server_leaves_it_alone(server, built, capsys):
    address, family, key_file = endpoint(built["index"])
    good = key_file.read_bytes()
    key_file.write_bytes(b"x" * 32)
    try:
        code, out, err = search(capsys, built["index"], image=first_image(built))
        assert code == 0 and "rank " in out and "answered by" not in err  # searched here
        assert key_file.exists() and Path(address).exists()  # nothing of the server's removed
    finally:
        key_file.write_bytes(good)
    code, _, err = search(capsys, built["index"], image=first_image(built))
    assert code == 0 and "answered by" in err
