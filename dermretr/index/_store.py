"""An index on disk: the folder's files, the atomic save beside the target, and the checked load.

The folder holds ``manifest.json``, ``index.faiss``, ``global.npy`` (float32), ``local.npy``
(float16) and ``cases.csv``; a save writes a new folder beside the target and swaps it in, and a
load checks every file against the manifest before anything is searched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .. import _io
from .._checks import show
from .._errors import DermretrError, OutputError
from ..data.cases import CASE_COLUMNS, validate_cases
from ._common import (
    CASES,
    FAISS_FILE,
    GLOBAL,
    INDEX_FILES,
    LOCAL,
    MANIFEST,
    IndexWarning,
    all_finite,
    check_path,
    check_result_columns,
    check_retriever,
    exists,
)
from ._faiss import read_faiss, write_faiss
from ._manifest import case_ids_sha256, read_error, read_manifest
from ._model import check_model

if TYPE_CHECKING:
    from ._case_index import CaseIndex

__all__ = ["NA", "check_output", "foreign_entries", "is_index_dir", "write_cases", "save_index", "save_folder",
           "load_parts", "open_retriever"]

NA = "\\N"  # how a missing value is written in cases.csv (an empty string stays an empty string)


# ---------------------------------------------------------------------------- the folder


def foreign_entries(path: Path) -> list[str] | None:
    """What in folder ``path`` an index save may not replace (``[]``: nothing; None: unreadable)."""
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return None
    foreign = [p.name for p in entries
               if p.name not in INDEX_FILES or p.is_symlink() or not p.is_file()]
    if foreign or not entries:
        return foreign
    names = {p.name for p in entries}
    if FAISS_FILE in names:
        return []
    # a manifest.json alone (or with .npy/.csv files) is ours only when it reads as an index manifest
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict) and "format" in manifest and "kind" in manifest:
        return []
    return sorted(names)


def is_index_dir(path: Path) -> bool:
    """A folder holding an index dermretr wrote: its own files only (no file of the user's among them)."""
    return path.is_dir() and foreign_entries(path) == [] and any(path.iterdir())


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """:meth:`CaseIndex.check_output`: the absolute index folder a save may write, or an OutputError."""
    if isinstance(path, str) and not path:
        raise OutputError("the index folder must be a path (str or pathlib.Path), got ''")
    path = check_path(path, "the index folder", OutputError).absolute()
    exists(path, OutputError)
    if path.is_symlink():
        path = path.resolve()
    for parent in path.parents:
        if exists(parent, OutputError):
            if not parent.is_dir():
                raise OutputError(f"cannot write the index {path}: {parent} is a file, not a folder; choose "
                                  "another index folder")
            break
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{path} exists and is not a folder; choose another index folder")
        foreign = foreign_entries(path)
        if foreign is None:
            raise OutputError(f"cannot read the folder {path}; check its permissions or choose another index "
                              "folder")
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise OutputError(f"{path} is not a dermretr index folder: it holds files that dermretr did not "
                              f"write ({shown}); move them out or choose another index folder (nothing was "
                              "changed)")
        if any(path.iterdir()) and not overwrite:
            raise OutputError(f"{path} already holds an index; pass overwrite=True (--overwrite) to "
                              "replace it")
    return path


def _warn_old_temporaries(path: Path, stacklevel: int) -> None:
    """Say (never remove) folders an interrupted save of an older dermretr left beside ``path``.

    They carry no process id, so whether their writer still runs cannot be told: the user decides.
    """
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:new|old)-[A-Za-z0-9_]{{8}}$")
    try:
        old = sorted(p.name for p in path.parent.iterdir() if pattern.match(p.name) and p.is_dir())
    except OSError:
        return
    if old:
        warnings.warn(f"{len(old)} folder(s) beside {path} were left by an interrupted index save of an older "
                      f"dermretr ({', '.join(old[:3])}{' ...' if len(old) > 3 else ''}); delete them if no older "
                      "dermretr is saving this index right now", IndexWarning, stacklevel=stacklevel)


# ---------------------------------------------------------------------------- files


def _write_npy(file: Path, array: np.ndarray, path: Path) -> None:
    try:
        np.save(file, array)
    except OSError as exc:
        if exc.errno is not None:
            raise
        # numpy says a short write without an errno ("N requested and M written"): the disk is full
        raise OutputError(f"cannot write the index {path}: {file.name} was only partly written ({exc}); no space "
                          "left on the disk? free some disk space or choose a folder on another disk (nothing was "
                          "changed)") from None


def _read_npy(file: Path, mode: Literal["r"] | None, damaged: Any) -> np.ndarray:
    try:
        array = np.load(file, mmap_mode=mode, allow_pickle=False)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise read_error(file, exc) from None
        raise damaged(f"{file.name} cannot be read ({exc.strerror or exc})") from None
    except (ValueError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise damaged(f"{file.name} cannot be read ({reason})") from None
    if not isinstance(array, np.ndarray):
        with contextlib.suppress(Exception):
            array.close()
        raise damaged(f"{file.name} is not a .npy array file")
    return array


def write_cases(cases: pd.DataFrame, file: Path) -> None:
    """Write the case table to ``cases.csv`` (missing values as ``\\N``, empty strings as they are)."""
    cases.to_csv(file, index=False, na_rep=NA)


_NUMERIC = ("int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64",  # NA-free only
            "float64", "float32", "Int64", "Int32", "Int16", "Int8", "Float64", "Float32")


def _restore_column(series: pd.Series, dtype: str) -> pd.Series:
    """Turn a column read from cases.csv as text back into its saved dtype (best effort, never eval)."""
    try:
        # the dtype is a name read from the manifest: a str the pandas stubs cannot narrow to their literals
        numeric: Any = pd.to_numeric(series) if dtype in _NUMERIC else None
        if dtype in _NUMERIC[:8] and series.notna().all():
            return numeric.astype(dtype)
        if dtype in _NUMERIC[8:]:
            return numeric.astype(dtype)
        if dtype in ("bool", "boolean"):
            mapped = series.map({"True": True, "False": False})
            if mapped.notna().sum() == series.notna().sum():
                return mapped.astype("boolean" if dtype == "boolean" or mapped.isna().any() else "bool")
        if dtype == "category":
            return series.astype("category")
        if dtype.startswith("datetime64"):
            return pd.to_datetime(series)
    except (ValueError, TypeError):
        pass
    return series


def _read_cases(file: Path, columns: Mapping[str, str], rebuild: str) -> pd.DataFrame:
    try:
        raw = pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[NA])
    except OSError as exc:
        raise read_error(file, exc) from None
    except ValueError as exc:  # not CSV, not UTF-8, empty
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DermretrError(f"index {file.parent} is damaged: cannot read {CASES} ({reason}); {rebuild}") from None
    try:
        cases = validate_cases(raw)
        check_result_columns(cases, CASES)
    except DermretrError as exc:
        raise DermretrError(f"index {file.parent} is damaged: {file}: {exc}; {rebuild}") from None
    for column, dtype in columns.items():
        if column in cases.columns and column not in CASE_COLUMNS:
            cases[column] = _restore_column(cases[column], dtype)
    return cases


# ---------------------------------------------------------------------------- save and load


def save_index(index: CaseIndex, path: str | os.PathLike, overwrite: Any, stacklevel: int = 2) -> Path:
    """:meth:`CaseIndex.save`; ``stacklevel`` of its warning as seen from here."""
    if not isinstance(overwrite, (bool, np.bool_)):
        raise DermretrError(f"overwrite must be True or False, got {show(overwrite)}")
    path = check_output(path, bool(overwrite))  # at once, before taking the lock
    manifest = dict(index.manifest)
    manifest["params"] = dict(manifest.get("params") or {}, rerank=index.rerank)
    if index.kind == "hnsw":
        manifest["params"]["ef_search"] = index.ef_search
    if index.kind in ("ivf", "ivfpq"):
        manifest["params"]["nprobe"] = index.nprobe

    def write_vectors(tmp: Path) -> Any:
        _write_npy(tmp / GLOBAL, np.asarray(index.global_vectors, dtype=np.float32), path)
        if index.local_vectors is not None:
            _write_npy(tmp / LOCAL, np.asarray(index.local_vectors, dtype=np.float16), path)
        return index.faiss_index

    index.manifest = save_folder(path, bool(overwrite), manifest, index.cases, write_vectors, stacklevel + 1)
    return path


def save_folder(path: Path, overwrite: bool, manifest: dict, cases: pd.DataFrame,
                write_vectors: Callable[[Path], Any], stacklevel: int = 2) -> dict:
    """Write an index folder at ``path`` (checked by :func:`check_output`) atomically, under its lock.

    ``write_vectors(tmp)`` writes ``global.npy`` (and ``local.npy``) into the new folder ``tmp`` and
    returns the FAISS index; this function adds ``index.faiss``, ``cases.csv`` and ``manifest.json``
    (``manifest`` completed with the case columns, the case-id hash and the file sizes, and returned).
    """
    manifest = dict(manifest)
    manifest["columns"] = {str(c): str(t) for c, t in cases.dtypes.items()}
    manifest["case_ids_sha256"] = case_ids_sha256(cases["case_id"])
    with _io.exclusive(path, "index folder"):
        check_output(path, overwrite)  # again: another process may have written it meanwhile
        with _io.atomic_dir(path) as tmp:
            faiss_index = write_vectors(tmp)
            write_faiss(faiss_index, tmp / FAISS_FILE, path)
            write_cases(cases, tmp / CASES)
            manifest["files"] = {name: (tmp / name).stat().st_size for name in (FAISS_FILE, GLOBAL, LOCAL)
                                 if (tmp / name).exists()}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _warn_old_temporaries(path, stacklevel + 1)
    return manifest


def load_parts(path: str | os.PathLike, retriever: Any = None, checkpoint: str | os.PathLike | None = None,
               mmap: Any = True) -> tuple[Any, np.ndarray, np.ndarray | None, pd.DataFrame, dict]:
    """:meth:`CaseIndex.load`: ``(faiss_index, global_vectors, local_vectors, cases, manifest)``, all checked."""
    path = check_path(path, "index folder")
    if retriever is not None:
        check_retriever(retriever)
    checkpoint = None if checkpoint is None else check_path(checkpoint, "checkpoint")
    if not isinstance(mmap, (bool, np.bool_)):
        raise DermretrError(f"mmap must be True or False, got {show(mmap)}")
    manifest = read_manifest(path)
    if retriever is not None or checkpoint is not None:
        check_model(path, manifest, retriever, checkpoint)
    rebuild = f"rebuild it with `dermretr index ... --out {path} --overwrite`"

    def damaged(what: str) -> DermretrError:
        return DermretrError(f"index {path} is damaged: {what}; {rebuild}")

    kind, n, d, m = manifest["kind"], manifest["count"], manifest["dim"], manifest["n_masks"]
    sizes = {}
    for name in (FAISS_FILE, GLOBAL, CASES) + ((LOCAL,) if m else ()):
        file = path / name
        try:
            st = file.stat()
        except FileNotFoundError:
            raise DermretrError(f"index {path} is incomplete: {name} is missing; {rebuild}") from None
        except OSError as exc:
            raise read_error(file, exc) from None
        if not stat.S_ISREG(st.st_mode):
            raise damaged(f"{name} is not a file")
        sizes[name] = st.st_size
    if not m and (path / LOCAL).exists():
        raise damaged(f"{LOCAL} is there but {MANIFEST} says the index has no local vectors (n_masks 0)")
    for name, size in (manifest.get("files") or {}).items():
        if name in sizes and sizes[name] != size:
            raise damaged(f"{name} has {sizes[name]} bytes but {size} were written (truncated or replaced?)")
    faiss_index = read_faiss(path / FAISS_FILE, kind, n, d, damaged, read_error)
    mode: Literal["r"] | None = "r" if mmap else None
    g = _read_npy(path / GLOBAL, mode, damaged)
    if g.shape != (n, d) or g.dtype != np.float32:
        raise damaged(f"{GLOBAL} holds a {g.dtype} array of shape {g.shape}, {MANIFEST} says float32 "
                      f"({n}, {d}) ({n} cases of dimension {d})")
    local = None
    if m:
        local = _read_npy(path / LOCAL, mode, damaged)
        if local.shape != (n, m, d) or local.dtype != np.float16:
            raise damaged(f"{LOCAL} holds a {local.dtype} array of shape {local.shape}, {MANIFEST} says "
                          f"float16 ({n}, {m}, {d})")
    if not all_finite(g):
        raise damaged(f"{GLOBAL} holds NaN or infinite values")
    if local is not None and not all_finite(local):
        raise damaged(f"{LOCAL} holds NaN or infinite values")
    cases = _read_cases(path / CASES, manifest.get("columns") or {}, rebuild)
    if len(cases) != n:
        raise damaged(f"{CASES} has {len(cases)} rows, {MANIFEST} says {n}")
    recorded = manifest.get("case_ids_sha256")
    if recorded is not None and case_ids_sha256(cases["case_id"]) != recorded:
        raise damaged(f"the case ids in {CASES} are not those the vectors were stored for (edited, reordered "
                      "or replaced?)")
    return faiss_index, g, local, cases, manifest


def open_retriever(path: str | os.PathLike, device: Any) -> tuple[Path, Any, str | None]:
    """:meth:`CaseIndex.open`: the index folder, the retriever its manifest records, and that checkpoint (if any).

    The manifest records a checkpoint file (an index built from a run) or a pretrained model
    (an index built with ``Retriever.from_pretrained``'s name or folder); the model is loaded
    from it and checked against the recorded weights by :meth:`CaseIndex.load`.
    """
    from ..models.retriever import Retriever

    path = check_path(path, "index folder")
    if not isinstance(device, str):
        raise DermretrError(f"device must be a str ('auto', 'cpu' or 'cuda'), got {show(device)}")
    manifest = read_manifest(path)
    model = manifest.get("model") or {}
    ckpt = model.get("checkpoint_path")
    if not ckpt and model.get("pretrained"):
        return path, Retriever.from_pretrained(model["pretrained"], device=device), None
    if not ckpt:
        raise DermretrError(f"index {path} does not record the checkpoint it was built from; load it in Python "
                            "with CaseIndex.load(dir, retriever) or rebuild it with `dermretr index`")
    if not Path(ckpt).is_file():
        raise DermretrError(f"the checkpoint index {path} was built with is gone: {ckpt}; restore it or rebuild "
                            f"the index with `dermretr index --run RUN_DIR --data SPEC --out {path} --overwrite`")
    retriever = Retriever.load(ckpt, device=device)
    return path, retriever, ckpt
