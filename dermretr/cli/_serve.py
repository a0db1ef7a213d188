"""``dermretr serve``: keep an index and its model loaded, so that ``dermretr search`` answers at once.

A one-off ``dermretr search`` spends almost all its seconds starting: importing torch and open_clip
(which imports torchvision and, through torchvision's ops, ``torch._dynamo``), then loading the
model; the search itself takes a fraction of a second (``benchmarks/bench_search_startup.py``).
``dermretr serve --index INDEX_DIR`` pays that once.  Every later ``dermretr search --index
INDEX_DIR`` of the same user on this machine finds the server, sends it its arguments and prints
what the server's search printed, byte for byte what it would have printed itself; the command
then imports no torch, faiss or pandas.  ``--no-server`` searches in the command's own process.

Where: a private folder of the user (``$DERMRETR_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/dermretr``,
else ``<temp>/dermretr-<user id>``; made with mode 0700 and refused when others can write to it),
holding one socket (a named pipe on Windows) and one key file per index, named by a hash of the
index folder's resolved path.  The key (32 random bytes, mode 0600) authenticates the search
command through :mod:`multiprocessing.connection`'s HMAC challenge; requests and answers are JSON,
never pickles.  The server removes both files when it stops (Ctrl-C or SIGTERM); the files of a
server that was killed are removed by the next ``serve`` or ``search`` of that index.  When the
index folder is rewritten (``dermretr index --overwrite``), the server reopens it before answering.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import secrets
import sys
import tempfile
import threading
from contextlib import redirect_stderr, redirect_stdout, suppress
from pathlib import Path
from typing import Any

from .. import __version__
from .._errors import DermretrError
from ._parsing import one_line_warnings, run_reporting
from ._search import answer

__all__ = ["add_serve_command", "cmd_serve", "serve", "forward", "endpoint", "runtime_dir"]

#: The search arguments a request carries (the rest of ``dermretr search``'s are the client's own).
REQUEST_FIELDS = ("image", "text", "k", "alpha", "filter", "rerank", "keep_self", "json")
_MAX_MESSAGE = 1 << 20  # a request is a few hundred bytes; anything larger is not from dermretr search


def add_serve_command(sub) -> None:
    serve_ = sub.add_parser(
        "serve", help="keep an index and its model loaded; `dermretr search --index` then answers at once",
        description="Load INDEX_DIR and its model once and answer every `dermretr search --index INDEX_DIR` of "
                    "this user on this machine until stopped (Ctrl-C): a search then takes well under a second "
                    "instead of the seconds torch and the model take to load.  The search command finds the "
                    "server by itself; `search --no-server` does not use it.")
    serve_.add_argument("--index", required=True, help="index folder written by `dermretr index`")
    serve_.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


#: The longest socket path (bytes, without the final NUL) the system's ``sockaddr_un`` holds.
_SOCKET_PATH_LIMIT = {"linux": 107, "other": 103}


def runtime_dir(create: bool = False) -> Path:
    """The user's private folder for servers' sockets and keys (see the module's docstring)."""
    given = os.environ.get("DERMRETR_RUNTIME_DIR", "").strip()
    xdg = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    folder = Path(given) if given else Path(xdg) / "dermretr"\
        if xdg else Path(tempfile.gettempdir()) / f"dermretr-{uid}"
    if create:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DermretrError(f"cannot make the server folder {folder}: {exc.strerror or exc}; set "
                                "DERMRETR_RUNTIME_DIR to a folder of yours") from None
    if folder.exists() and hasattr(os, "getuid"):
        st = folder.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise DermretrError(f"the server folder {folder} belongs to another user or others can write to it; "
                                "set DERMRETR_RUNTIME_DIR to a private folder of yours")
    return folder


def endpoint(index_dir: str | os.PathLike, create: bool = False) -> tuple[str, str, Path]:
    """``(address, family, key file)`` of the server of ``index_dir`` (its resolved path names it)."""
    name = "search-" + hashlib.sha256(str(Path(index_dir).resolve()).encode()).hexdigest()[:20]
    folder = runtime_dir(create)
    if sys.platform == "win32":
        return rf"\\.\pipe\dermretr-{name}", "AF_PIPE", folder / f"{name}.key"
    address = str(folder / f"{name}.sock")
    limit = _SOCKET_PATH_LIMIT.get(sys.platform, _SOCKET_PATH_LIMIT["other"])
    if create and len(os.fsencode(address)) > limit:  # bind would fail with "AF_UNIX path too long"
        raise DermretrError(f"the server folder {folder} is too deep for a socket: its path would be "
                            f"{len(os.fsencode(address))} bytes, more than this system's {limit}; set "
                            "DERMRETR_RUNTIME_DIR to a shorter private folder of yours (e.g. /tmp/dermretr-$USER)")
    return address, "AF_UNIX", folder / f"{name}.key"


def _remove(address: str, family: str, key_file: Path) -> None:
    """Remove a server's files (its own, in the private folder)."""
    with suppress(FileNotFoundError):
        key_file.unlink()
    if family == "AF_UNIX":
        with suppress(FileNotFoundError):
            os.unlink(address)


def _connect(address: str, family: str, key_file: Path) -> Any:
    """A connection to the live server, or None when there is none (its leftover files are removed)."""
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    try:
        key = key_file.read_bytes()
    except OSError:  # no server (or one still starting: it writes the key before it listens)
        return None
    try:
        return Client(address, family, authkey=key)
    except (ConnectionRefusedError, FileNotFoundError):  # its server was killed: nobody listens
        _remove(address, family, key_file)
        return None
    except (OSError, EOFError, AuthenticationError):  # not a server this key opens: leave it alone
        return None


class _Served:
    """The open index, reopened when its folder is rewritten."""

    def __init__(self, path: Path, device: str):
        self.path, self.device = path, device
        self.index: Any = None
        self.stamp: tuple | None = None
        self.refresh()

    def _stamp(self) -> tuple:
        st = (self.path / "manifest.json").stat()
        return st.st_ino, st.st_mtime_ns, st.st_size

    def refresh(self) -> None:
        from ..index import CaseIndex

        try:
            stamp = self._stamp()
        except OSError:
            stamp = None
        if self.index is None or stamp != self.stamp:
            self.index = CaseIndex.open(self.path, device=self.device)
            self.rerank, self.stamp = self.index.rerank, stamp

    def answer(self, request: dict) -> dict:
        """What ``dermretr search`` with these arguments prints, and its exit code."""
        out, err = io.StringIO(), io.StringIO()
        cwd = request.pop("cwd", None)
        args = argparse.Namespace(**{f: request.get(f) for f in REQUEST_FIELDS})

        def run(args) -> int:
            self.refresh()
            try:
                return answer(self.index, args, cwd=cwd if isinstance(cwd, str) else None)
            finally:
                self.index.rerank = self.rerank

        with redirect_stdout(out), redirect_stderr(err), one_line_warnings():
            rc = run_reporting(run, args)
        return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def serve(index_dir: str | os.PathLike, device: str = "auto", stop: threading.Event | None = None,
          announce=print) -> None:
    """Answer ``dermretr search --index index_dir`` until interrupted (or ``stop`` is set).

    ``announce`` gets one line once the server listens.  Another live server of the same index is
    a :class:`DermretrError`; the files of a dead one are removed first.

    Examples
    --------
    In one terminal ``dermretr serve --index idx``; in another, as often as wanted,
    ``dermretr search --index idx --image lesion.jpg --text "blue-whitish veil"``.
    """
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Listener

    path = Path(index_dir).resolve()
    address, family, key_file = endpoint(path, create=True)
    live = _connect(address, family, key_file)
    if live is not None:
        with live:
            pid = _ask(live, {"ping": True}).get("pid", "?")
        raise DermretrError(f"{path} is already served (server process {pid}); stop it first (Ctrl-C in its "
                            "terminal)")
    _remove(address, family, key_file)  # a killed server's leftovers (no server answered on them)
    served = _Served(path, device)
    key = secrets.token_bytes(32)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        with Listener(address, family, backlog=16, authkey=key) as listener:
            announce(f"dermretr: serving {path} ({len(served.index)} cases) to `dermretr search --index`; "
                     "Ctrl-C stops it")
            while stop is None or not stop.is_set():
                try:
                    conn = listener.accept()
                except (AuthenticationError, OSError, EOFError):  # a caller without the key, or one that left
                    continue
                with conn:
                    if stop is not None and stop.is_set():
                        break
                    try:
                        request = json.loads(conn.recv_bytes(_MAX_MESSAGE))
                        if not isinstance(request, dict):
                            raise ValueError("not a request")
                        if request.get("ping") or request.get("version") != __version__:  # another dermretr: no answer
                            reply = {"pid": os.getpid(), "version": __version__}
                        else:
                            reply = {"pid": os.getpid(), **served.answer(request)}
                        conn.send_bytes(json.dumps(reply).encode())
                    except (OSError, EOFError, ValueError):  # the caller left, or sent what dermretr never sends
                        continue
    finally:
        _remove(address, family, key_file)


def _ask(conn: Any, request: dict) -> dict:
    conn.send_bytes(json.dumps(request).encode())
    reply = json.loads(conn.recv_bytes())
    return reply if isinstance(reply, dict) else {}


def forward(args) -> int | None:
    """Have the server of ``args.index`` answer this search: its exit code, or None without a server.

    What the server's search printed is printed here; a note on stderr says who answered.
    """
    try:
        address, family, key_file = endpoint(args.index)
    except DermretrError:  # an unsafe server folder: search here, without a server
        return None
    conn = _connect(address, family, key_file)
    if conn is None:
        return None
    request = {f: getattr(args, f) for f in REQUEST_FIELDS}
    request["image"] = str(Path(args.image).absolute()) if isinstance(args.image, str) else args.image
    request["cwd"], request["version"] = os.getcwd(), __version__
    try:
        with conn:
            reply = _ask(conn, request)
    except (OSError, EOFError, ValueError):  # the server stopped while answering: search here instead
        return None
    if not {"rc", "stdout", "stderr"} <= reply.keys():
        import warnings

        warnings.warn(f"the search server of {args.index} (process {reply.get('pid', '?')}) runs dermretr "
                      f"{reply.get('version', '?')}, this command {__version__}: searched in this process instead; "
                      "restart `dermretr serve` to use the server again", stacklevel=2)
        return None
    print(f"dermretr: note: answered by `dermretr serve` (process {reply.get('pid', '?')}); --no-server searches "
          "in this process", file=sys.stderr)
    sys.stderr.write(reply["stderr"])
    sys.stdout.write(reply["stdout"])
    return int(reply["rc"])


def cmd_serve(args) -> int:
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # also when started with SIGINT ignored (`cmd &`)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)
    try:
        serve(args.index, device=args.device, announce=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("dermretr: server stopped", file=sys.stderr)
    return 0
