"""Safe output: atomic files and folders, stale temporaries, locks, umask and folder ownership.

Every file or folder dermretr writes goes through this module, so that:

* an output is replaced atomically (a temporary beside the target, then a rename);
  an interrupted or failed write leaves the previous state as it was;
* temporaries carry dermretr's own naming, ``.NAME.dermretr-PID-XXXXXXXX.{tmp,new,old}``:
  one whose process is gone (killed with ``kill -9``, a power cut) is removed on the next
  write of the same folder, with a warning, and nothing else is ever removed;
* outputs follow the process umask like any other program's (``mkstemp`` alone would make
  them 0600, unreadable for the students of an instructor who prepared them);
* two processes never write the same output at once: :func:`exclusive` takes a lock and the
  second one gets a clear error;
* a folder output is only ever written into, reused or replaced when dermretr created it
  (:func:`claim_dir` marks it): a non-empty folder of the user's is refused, never emptied.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from ._errors import OutputError

__all__ = ["atomic_path", "atomic_dir", "save_figure", "clean_stale", "exclusive", "claim_dir", "claim_file",
           "owner_kind", "OWNER_FILE", "StaleTemporaryWarning", "umask", "os_error"]

#: The marker file of a folder dermretr created (its ``kind``: run, demo, fairness...).
OWNER_FILE = ".dermretr.json"

_STALE = re.compile(r"^\.(?P<name>.+)\.dermretr-(?P<pid>\d+)-[A-Za-z0-9_]+\.(?:tmp|new|old|lock)$")


class StaleTemporaryWarning(UserWarning):
    """A temporary left by an interrupted dermretr process was removed."""


def os_error(exc: OSError, path: str | os.PathLike, what: str = "write") -> OutputError:
    """An :class:`OutputError` naming ``path`` and saying what to do about ``exc``."""
    reason = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free some disk space or choose a folder on another disk",
            errno.EDQUOT: "free some disk space or choose a folder on another disk",
            errno.EACCES: "choose a folder you can write to",
            errno.EPERM: "choose a folder you can write to",
            errno.EROFS: "choose a folder on a writable disk"}.get(exc.errno or 0, "check the path and try again")
    return OutputError(f"cannot {what} {path}: {reason}; {hint}")


def umask() -> int:
    """The process umask, read without changing it where the system allows (``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(path: Path, folder: bool) -> None:
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale(folder: str | os.PathLike, name: str | None = None, warn: bool = True) -> list[Path]:
    """Remove temporaries of dermretr's naming in ``folder`` whose process has ended.

    Only entries named ``.NAME.dermretr-PID-XXXX.{tmp,new,old,lock}`` whose PID is no longer
    running are removed (those of ``name`` only, when given); a live writer's are left alone.
    A :class:`StaleTemporaryWarning` lists what was removed.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".a.txt.dermretr-999999999-abcd1234.tmp").write_text("half")
    >>> _ = (d / "notes.tmp").write_text("mine")
    >>> [p.name for p in clean_stale(d, warn=False)]
    ['.a.txt.dermretr-999999999-abcd1234.tmp']
    >>> sorted(p.name for p in d.iterdir())
    ['notes.tmp']
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _STALE.match(entry.name)
        if not m or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    if removed and warn:
        warnings.warn(f"removed {len(removed)} temporary file(s) left by an interrupted dermretr run in {folder}: "
                      + ", ".join(p.name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""),
                      StaleTemporaryWarning, stacklevel=3)
    return removed


def _prefix(path: Path) -> str:
    return f".{path.name}.dermretr-{os.getpid()}-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any error the temporary file is removed and ``path`` is left as it was.  The file
    follows the umask; stale temporaries of the same name are cleaned first.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> target.read_text()
    'hello'
    """
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path.parent, path.name)
        fd, tmp_name = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        _follow_umask(tmp, folder=False)
    except OSError as exc:
        raise os_error(exc, path) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise os_error(exc, path) from exc
        raise


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace folder ``target`` by folder ``tmp``; ``target`` is missing only between two renames."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".old", dir=target.parent))
        old.rmdir()
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        if old.is_symlink():  # the target was a link: the link goes, what it pointed to is not ours to remove
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; on success it replaces ``path``.

    The caller decides beforehand whether ``path`` may be replaced (see :func:`claim_dir`);
    on any error the temporary folder is removed and ``path`` is left as it was.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> with atomic_dir(target) as tmp:
    ...     _ = (tmp / "a.txt").write_text("hello")
    >>> [p.name for p in target.iterdir()]
    ['a.txt']
    """
    path = Path(path).expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path.parent, path.name)
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".new", dir=path.parent))
        _follow_umask(tmp, folder=True)
    except OSError as exc:
        raise os_error(exc, path) from None
    try:
        yield tmp
        _swap_in(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise os_error(exc, path) from exc
        raise


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "output") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a file or folder, existing or not) for the block.

    A second process asking for the same lock gets an :class:`OutputError` at once instead
    of racing the first (the last writer would silently win).  The lock is a file named like
    dermretr's temporaries beside ``path``, removed on release.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "index"
    >>> with exclusive(target):
    ...     pass
    >>> list(target.parent.iterdir())
    []
    """
    import fcntl

    path = Path(path).expanduser().absolute()
    lock = path.parent / f".{path.name}.dermretr-lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, path) from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        except OSError as exc:
            raise os_error(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"{path} is being written by another dermretr process right now; wait for it to "
                              f"finish or choose another {what}") from None
        try:  # the file may have been removed by the previous holder between our open and our lock
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _check_ancestor(path: Path, option: str, include_self: bool) -> None:
    """Check that the nearest existing folder above ``path`` is a folder dermretr can write into.

    ``path`` itself, when it exists and ``include_self``, is checked by the caller.
    """
    for parent in ([path] if include_self else []) + list(path.parents):
        if parent.exists() or parent.is_symlink():
            if parent is path:
                return
            if not parent.is_dir():
                raise OutputError(f"cannot write {path}: {parent} is a file, not a folder; choose another {option}")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"cannot write {path}: {parent} is not writable (a read-only folder or disk); "
                                  "choose a folder you can write to")
            return


def owner_kind(path: str | os.PathLike) -> str | None:
    """The kind dermretr recorded in a folder it created (``None`` when it has no readable marker)."""
    try:
        data = json.loads((Path(path) / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def _mark(path: Path, kind: str) -> None:
    from . import __version__

    with atomic_path(path / OWNER_FILE) as tmp:
        tmp.write_text(json.dumps({"kind": kind, "written_by": f"dermretr {__version__}"}) + "\n")


def claim_dir(path: str | os.PathLike, kind: str, *, option: str = "--out",
              recognise: Callable[[Path], bool] | None = None, create: bool = True) -> Path:
    """Check that dermretr may write the folder ``path`` as a ``kind`` output, and mark it so.

    Accepted: a missing folder (created, with ``create``), an empty one, or one that dermretr
    marked as ``kind`` before (or that ``recognise`` identifies as one, for folders written by
    older versions).  Anything else raises an :class:`OutputError` naming the folder and some
    of what it holds; nothing is deleted.  The absolute path is returned.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> claim_dir(d / "run", "run").name
    'run'
    >>> _ = (d / "mine").mkdir(); _ = (d / "mine" / "thesis.docx").write_text("...")
    >>> claim_dir(d / "mine", "run")
    Traceback (most recent call last):
    ...
    dermretr._errors.OutputError: ... holds files that dermretr did not write (thesis.docx); ...
    """
    path = Path(path).expanduser().absolute()
    _check_ancestor(path, option, include_self=True)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file, not a folder; choose a new or empty folder")
    if path.is_dir():
        try:
            content = sorted(p.name for p in path.iterdir()
                             if not _STALE.match(p.name) and not p.name.endswith(".dermretr-lock"))
        except OSError as exc:
            raise os_error(exc, path, "read") from None
        found = owner_kind(path)
        if content and found is not None and found != kind:
            raise OutputError(f"{path} is a dermretr {found} folder, not a {kind} folder; choose another {option}")
        if content and found is None and not (recognise is not None and recognise(path)):
            shown = ", ".join(content[:3]) + (f" and {len(content) - 3} more" if len(content) > 3 else "")
            raise OutputError(f"{path} holds files that dermretr did not write ({shown}); choose a new or empty "
                              f"folder for {option} (nothing was changed)")
        if found == kind:
            return path
    elif not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        _mark(path, kind)
    except OutputError:
        raise
    except OSError as exc:
        raise os_error(exc, path) from None
    return path


def claim_file(path: str | os.PathLike, *, option: str = "--out",
               recognise: Callable[[Path], bool] | None = None) -> Path:
    """Check that dermretr may write the file ``path``: it is missing, or ``recognise`` says dermretr wrote it.

    A folder, a path below a file, an unwritable folder or an existing file that dermretr did
    not write raise an :class:`OutputError` (nothing is changed).  The absolute path is returned.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "notes.json").write_text("mine")
    >>> claim_file(d / "notes.json")
    Traceback (most recent call last):
    ...
    dermretr._errors.OutputError: ... exists and is not a file dermretr wrote; ...
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name such as {path / 'metrics.json'}")
    _check_ancestor(path, option, include_self=False)
    if path.exists():
        try:
            ours = recognise is not None and recognise(path)
        except (OSError, ValueError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise OutputError(f"{option} {path} exists and is not a file dermretr wrote; choose another name "
                              "(nothing was changed)")
    return path


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically; the format follows the file suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path
