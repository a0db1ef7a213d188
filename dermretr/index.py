"""Case search at scale: a FAISS index of the database plus exact re-ranking.

:class:`CaseIndex` holds a case table and, for every case, the target vectors
of :meth:`~dermretr.models.retriever.Retriever.encode_targets`: the
L2-normalised global vector (``[n, D]`` float32) and, for ``kind="full"``
retrievers, the M local vectors (``[n, M, D]``, stored as float16).

Search is two-stage:

1. FAISS returns the ``N = max(rerank, k)`` best cases by inner product of the
   composed query's global vector with the stored global vectors
   (``"flat"``: exact ``IndexFlatIP``; ``"hnsw"``: ``IndexHNSWFlat``;
   ``"ivf"``: ``IndexIVFFlat``; ``"ivfpq"``: ``IndexIVFPQ``, compressed).
2. Those N candidates are re-scored exactly with the retriever's convex score
   ``s = a * s_local + (1 - a) * s_global`` (:func:`~dermretr.models.retriever.convex_score`)
   and the best k are returned.

When N covers the database the result equals brute-force scoring of every
case; shrinking N trades a little recall for speed (``benchmarks/search_scale.py``
measures how much).  Filters on case-table columns
(``{"fitzpatrick": [5, 6], "diagnosis_group": ["MEL"]}``) restrict both stages
to the matching cases, so k results come back whenever at least k cases match.

On disk an index is a folder: ``manifest.json`` (format version, the model's
config hash, weights and checkpoint sha256, dimensions, alpha, count, creation
time), ``index.faiss``, ``global.npy`` (float32), ``local.npy`` (float16; both
memory-mapped on load) and ``cases.csv``.  :meth:`CaseIndex.save` writes a new
folder beside the target and swaps it in, so an interrupted save leaves the
previous index intact.  The command line: ``dermretr index --run RUN_DIR --data
SPEC --out INDEX_DIR`` and ``dermretr search --index INDEX_DIR --image PATH
--text "..."``; in Python, :meth:`CaseIndex.search` takes an image and a text.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> g = rng.normal(size=(50, 16)).astype(np.float32)
>>> g /= np.linalg.norm(g, axis=1, keepdims=True)
>>> cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(50)], "patient_id": "p",
...     "image_path": "x.jpg", "diagnosis": "nevus", "diagnosis_group": ["MEL", "NEV"] * 25,
...     "fitzpatrick": [1, 2, 3, 4, 5] * 10, "split": "train", "source": "demo"})
>>> index = CaseIndex.from_embeddings({"global": g, "local": None}, cases, kind="hnsw")
>>> index
CaseIndex(kind='hnsw', count=50, dim=16, n_masks=0, alpha=0.0, rerank=100, model=None)
>>> hits = index.search_vectors({"global": g[:1]}, k=3, filters={"diagnosis_group": ["MEL"]})
>>> hits["case_id"].iloc[0], len(hits), set(hits["diagnosis_group"])
('c0', 3, {'MEL'})
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import math
import numbers
import os
import re
import stat
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from . import __version__, _io
from ._errors import DataWarning, DermretrError, OutputError
from .data.cases import CASE_COLUMNS, validate_cases

__all__ = ["CaseIndex", "IndexWarning", "INDEX_FORMAT", "INDEX_KINDS", "model_info", "config_hash",
           "file_sha256", "RESULT_COLUMNS"]

#: Version of the on-disk layout written by :meth:`CaseIndex.save`.
INDEX_FORMAT = 1
#: Index kinds: exact, graph (HNSW), inverted file (IVF-Flat) and compressed inverted file (IVF-PQ).
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf", "ivfpq")
#: Columns every search result starts with (``search_batch``/``search_vectors`` add ``query`` first).
RESULT_COLUMNS: tuple[str, ...] = ("rank", "case_id", "score", "s_global", "s_local")

_MANIFEST = "manifest.json"
_FAISS = "index.faiss"
_GLOBAL = "global.npy"
_LOCAL = "local.npy"
_CASES = "cases.csv"
_NA = "\\N"  # how a missing value is written in cases.csv (an empty string stays an empty string)
_MIN_POINTS_PER_LIST = 39  # FAISS k-means wants at least this many training points per centroid
_CHUNK = 64  # queries re-ranked at once
_EXACT_BLOCK = 65536  # database rows scored at once by exact (fallback) search
#: The files of an index folder; a folder holding anything else is not replaced by :meth:`CaseIndex.save`.
_INDEX_FILES = frozenset((_MANIFEST, _FAISS, _GLOBAL, _LOCAL, _CASES))
#: The FAISS class each index kind reads back as (checked before searching it).
_FAISS_TYPES = {"flat": "IndexFlat", "hnsw": "IndexHNSW", "ivf": "IndexIVFFlat", "ivfpq": "IndexIVFPQ"}
#: Keyword options of :meth:`CaseIndex.from_embeddings` that :meth:`CaseIndex.build` passes on.
_OPTIONS = ("alpha", "rerank", "nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "pq_m", "pq_nbits", "seed")
_PARAMS = ("rerank", "ef_search", "nprobe", "nlist", "hnsw_m", "ef_construction", "pq_m", "pq_nbits")
_FINITE_BLOCK = 65536  # stored vector rows checked for NaN/inf at once when an index is opened
_INT_MAX = 2**31 - 1  # FAISS keeps its parameters (efSearch, nprobe, seed...) in C ints


class IndexWarning(UserWarning):
    """An index setting was adjusted to fit the data (e.g. fewer IVF lists on a small database)."""


# ---------------------------------------------------------------------------- model identity


def config_hash(config: Mapping) -> str:
    """sha256 of a retriever config as canonical JSON (sorted keys, no spaces).

    >>> config_hash({"kind": "full", "n_masks": 4}) == config_hash({"n_masks": 4, "kind": "full"})
    True
    """
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> file_sha256(p)[:12]
    'ba7816bf8f01'
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DermretrError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def _weights_sha256(retriever) -> str:
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(retriever.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_info(retriever, checkpoint: str | os.PathLike | None = None) -> dict:
    """What identifies a retriever in an index manifest.

    Returns ``{"config", "config_hash", "weights_sha256", "checkpoint_path",
    "checkpoint_sha256"}``; the checkpoint entries are None unless
    ``checkpoint`` (the file the retriever was loaded from) is given.

    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> info = model_info(Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="image"))
    >>> info["config"]["kind"], len(info["config_hash"]), info["checkpoint_sha256"]
    ('image', 64, None)
    """
    config = retriever.config()
    info = {"config": config, "config_hash": config_hash(config), "weights_sha256": _weights_sha256(retriever),
            "checkpoint_path": None, "checkpoint_sha256": None}
    if checkpoint is not None:
        path = Path(checkpoint).expanduser().resolve()
        if not path.is_file():
            raise DermretrError(f"checkpoint not found: {path}")
        info["checkpoint_path"] = str(path)
        info["checkpoint_sha256"] = file_sha256(path)
    return info


# ---------------------------------------------------------------------------- helpers


def _as_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DermretrError(f"{name} must be an integer, got {_show(value)}")
    return int(value)


def _positive(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    value = _as_int(value, name)
    if value < minimum:
        raise DermretrError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise DermretrError(f"{name} must be at most {maximum}, got {value}")
    return value


def _show(value, limit: int = 60) -> str:
    """``repr`` of a value with its type when that helps, cut to ``limit`` characters."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if not isinstance(value, (str, int, float, bool, type(None), list, dict, tuple)):
        text = f"{text} ({type(value).__name__})"
    return text


def _is_real(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "fiu"
    return isinstance(value, numbers.Real)


def _check_alpha(alpha) -> float:
    if not _is_real(alpha):
        raise DermretrError(f"alpha (the weight of local evidence) must be a number in [0, 1], got {_show(alpha)}")
    a = float(alpha)
    if not 0.0 <= a <= 1.0 or math.isnan(a):
        raise DermretrError(f"alpha (the weight of local evidence) must be in [0, 1], got {alpha}")
    return a


def _as_array(value, what: str, dtype=np.float32) -> np.ndarray:
    """``value`` as a numeric array, or a clear error naming ``what``."""
    if isinstance(value, (str, bytes)) or value is None:
        raise DermretrError(f"{what} must be a numeric array, got {_show(value)}")
    try:
        out = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DermretrError(f"{what} must be a numeric array, got {type(value).__name__} "
                            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else 'not numeric'})") from None
    return out


def _all_finite(a: np.ndarray) -> bool:
    """No NaN or infinite value in ``a`` (checked in row blocks, so a memory-mapped file is not copied whole)."""
    return all(np.isfinite(a[s:s + _FINITE_BLOCK]).all() for s in range(0, len(a), _FINITE_BLOCK))


def _case_ids_sha256(case_ids: Iterable) -> str:
    h = hashlib.sha256()
    for case_id in case_ids:
        h.update(str(case_id).encode())
        h.update(b"\n")
    return h.hexdigest()


def _check_result_columns(cases: pd.DataFrame, where: str) -> None:
    """Search results put their own columns in front of the case columns: the names must not clash."""
    clash = [c for c in ("query", *RESULT_COLUMNS) if c != "case_id" and c in cases.columns]
    if clash:
        raise DermretrError(f"{where} has column(s) {clash} whose names search results use for their own values; "
                            "rename them")


def _check_path(path, what: str, error: type[DermretrError] = DermretrError) -> Path:
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise error(f"{what} must be a path (str or pathlib.Path), got {_show(path)}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise error(f"{what} must be a path (str or pathlib.Path), got {_show(path)}")
    if not text:
        raise error(f"{what} is an empty path")
    if "\0" in text:
        raise error(f"{what} {text!r} contains a NUL character; check the path")
    return Path(text).expanduser()


def _exists(path: Path, error: type[DermretrError] = DermretrError) -> bool:
    """``path.exists()``, with a clear error for a path the system refuses (name too long, loops...)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return path.is_symlink()
    except OSError as exc:
        raise error(f"cannot use {path}: {exc.strerror or exc}; check the path") from None
    return True


def _check_retriever(retriever, what: str = "retriever") -> None:
    if not all(callable(getattr(retriever, m, None)) for m in ("encode_targets", "encode_queries", "config",
                                                               "state_dict")):
        hint = (" (to open an index with the checkpoint it records, use CaseIndex.open(dir))"
                if isinstance(retriever, (str, os.PathLike)) else "")
        raise DermretrError(f"{what} must be a dermretr Retriever, got {_show(retriever)}{hint}")


def _descriptors(text: str) -> dict | None:
    """The 7-point criteria a query text mentions (None when the mentions conflict)."""
    from ._errors import VocabularyError
    from .data.vocab import parse_text

    if not text or not str(text).strip():
        return {}
    try:
        found = parse_text(str(text), default=None)
    except VocabularyError:
        return None
    return {c: v for c, v in found.items() if v is not None}


def _restore_column(series: pd.Series, dtype: str) -> pd.Series:
    """Turn a column read from cases.csv as text back into its saved dtype (best effort, never eval)."""
    try:
        if dtype in ("int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64") and series.notna().all():
            return pd.to_numeric(series).astype(dtype)
        if dtype in ("float64", "float32"):
            return pd.to_numeric(series).astype(dtype)
        if dtype in ("Int64", "Int32", "Int16", "Int8", "Float64", "Float32"):
            return pd.to_numeric(series).astype(dtype)
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


def _foreign_entries(path: Path) -> list[str] | None:
    """What in folder ``path`` an index save may not replace (``[]``: nothing; None: unreadable)."""
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return None
    foreign = [p.name for p in entries
               if p.name not in _INDEX_FILES or p.is_symlink() or not p.is_file()]
    if foreign or not entries:
        return foreign
    names = {p.name for p in entries}
    if _FAISS in names:
        return []
    # a manifest.json alone (or with .npy/.csv files) is ours only when it reads as an index manifest
    try:
        manifest = json.loads((path / _MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict) and "format" in manifest and "kind" in manifest:
        return []
    return sorted(names)


def _is_index_dir(path: Path) -> bool:
    """A folder holding an index dermretr wrote: its own files only (no file of the user's among them)."""
    return path.is_dir() and _foreign_entries(path) == [] and any(path.iterdir())


def _warn_old_temporaries(path: Path) -> None:
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
                      "dermretr is saving this index right now", IndexWarning, stacklevel=3)


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


def _read_error(file: Path, exc: OSError) -> DermretrError:
    """A file of an index that exists but cannot be read (permissions, disk)."""
    return DermretrError(f"cannot read {file}: {exc.strerror or exc}; check that it is readable (permissions, "
                         "disk)")


def _faiss_reason(exc: BaseException) -> str:
    """The useful part of a FAISS error ("Error in <C++ signature> at <file>:<line>: Error: 'x' failed: why")."""
    if isinstance(exc, MemoryError):
        return "it asks for more memory than there is"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", text)
    text = text.rsplit("Error: ", 1)[-1].strip()
    return text if len(text) <= 120 else text[:117] + "..."


_FOURCC = (b"IxFI", b"IxF2", b"IHNf", b"IwFl", b"IwPQ")  # FAISS headers of the kinds written here


def _read_faiss(file: Path, kind: str, n: int, d: int, damaged) -> Any:
    """Read ``index.faiss`` after checking its header against the manifest (FAISS trusts the sizes it reads)."""
    try:
        with open(file, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise _read_error(file, exc) from None
    if len(head) < 16:
        raise damaged(f"{_FAISS} is truncated ({len(head)} bytes)")
    if head[:4] in _FOURCC:  # fourcc, then d (int32) and ntotal (int64), as every index header starts
        hd, hn = int.from_bytes(head[4:8], "little", signed=True), int.from_bytes(head[8:16], "little", signed=True)
        if (hd, hn) != (d, n):
            raise damaged(f"{_FAISS} holds {hn} vectors of dimension {hd} but {_MANIFEST} says {n} of dimension {d}")
    try:
        index = faiss.read_index(str(file))
    except (RuntimeError, MemoryError) as exc:
        raise damaged(f"{_FAISS} cannot be read by FAISS, it is corrupt or truncated ({_faiss_reason(exc)})") from None
    want = getattr(faiss, _FAISS_TYPES[kind])
    if not isinstance(index, want):
        raise damaged(f"{_FAISS} holds a {type(index).__name__} but {_MANIFEST} says kind {kind!r}")
    if index.ntotal != n or index.d != d:
        raise damaged(f"{_FAISS} holds {index.ntotal} vectors of dimension {index.d} but {_MANIFEST} says {n} of "
                      f"dimension {d}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise damaged(f"{_FAISS} does not use inner-product search")
    return index


def _read_npy(file: Path, mode: str | None, damaged) -> np.ndarray:
    try:
        array = np.load(file, mmap_mode=mode, allow_pickle=False)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise _read_error(file, exc) from None
        raise damaged(f"{file.name} cannot be read ({exc.strerror or exc})") from None
    except (ValueError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise damaged(f"{file.name} cannot be read ({reason})") from None
    if not isinstance(array, np.ndarray):
        with contextlib.suppress(Exception):
            array.close()
        raise damaged(f"{file.name} is not a .npy array file")
    return array


def _check_manifest(manifest: dict, path: Path, rebuild: str) -> None:
    """Types and ranges of a manifest's fields (a hand-edited or damaged one is a clear error, not a traceback)."""

    def bad(field: str, value, expected: str) -> DermretrError:
        return DermretrError(f"index {path} is damaged: {_MANIFEST} field {field!r} is {_show(value)} (expected "
                             f"{expected}); {rebuild}")

    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def optional_str(value) -> bool:
        return value is None or isinstance(value, str)

    kind = manifest["kind"]
    if not isinstance(kind, str) or kind not in INDEX_KINDS:
        raise bad("kind", kind, f"one of {', '.join(INDEX_KINDS)}")
    for field, low in (("count", 1), ("dim", 1), ("n_masks", 0)):
        value = manifest[field]
        if not is_int(value) or value < low:
            raise bad(field, value, "a positive integer" if low else "an integer >= 0")
    alpha = manifest["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise bad("alpha", alpha, "a number in [0, 1]")
    params = manifest.get("params", {})
    if not isinstance(params, dict):
        raise bad("params", params, "a JSON object")
    for key in _PARAMS:
        if key in params and (not is_int(params[key]) or params[key] < 1):
            raise bad(f"params.{key}", params[key], "a positive integer")
    columns = manifest.get("columns", {})
    if not isinstance(columns, dict):
        raise bad("columns", columns, "a JSON object of column name -> dtype name")
    for column, dtype in columns.items():
        if not isinstance(dtype, str):
            raise bad(f"columns.{column}", dtype, "a dtype name")
    model = manifest.get("model")
    if model is not None:
        if not isinstance(model, dict):
            raise bad("model", model, "a JSON object or null")
        for key in ("config_hash", "weights_sha256", "checkpoint_path", "checkpoint_sha256"):
            if not optional_str(model.get(key)):
                raise bad(f"model.{key}", model.get(key), "a string or null")
        if model.get("config") is not None and not isinstance(model["config"], dict):
            raise bad("model.config", model["config"], "a JSON object or null")
    files = manifest.get("files")
    if files is not None:
        if not isinstance(files, dict):
            raise bad("files", files, "a JSON object of file name -> size in bytes")
        for name, size in files.items():
            if not is_int(size) or size < 0:
                raise bad(f"files.{name}", size, "a size in bytes")
    if not optional_str(manifest.get("case_ids_sha256")):
        raise bad("case_ids_sha256", manifest["case_ids_sha256"], "a string")


# ---------------------------------------------------------------------------- the index


class CaseIndex:
    """A searchable database of cases: FAISS over global vectors, exact re-ranking with local ones.

    Create one with :meth:`build` (from a retriever and a case table),
    :meth:`from_embeddings` (from pre-computed target vectors) or :meth:`load`.

    Attributes
    ----------
    cases : DataFrame
        The validated case table; row ``i`` is vector ``i``.
    manifest : dict
        Kind, count, dimensions, alpha, the model's identity, creation time...
    retriever : Retriever or None
        Encodes query images and texts for :meth:`search`; None for an index
        built from embeddings or loaded without a model (use :meth:`search_vectors`).
    rerank : int
        Candidates re-scored exactly per query (``N = max(rerank, k)``, at most
        the database size).
    ef_search : int
        HNSW search breadth (raised to N when smaller).
    nprobe : int
        IVF lists visited per query.
    exact_filter_below : int
        With filters matching at most this many cases (default 4096), the first
        stage scores them all exactly instead of a filtered FAISS search.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> n, m, d = 30, 2, 8
    >>> unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    >>> targets = {"global": unit(rng.normal(size=(n, d))), "local": unit(rng.normal(size=(n, m, d))),
    ...            "alpha": 0.6}
    >>> cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "patient_id": "p",
    ...     "image_path": "x.jpg", "diagnosis": "nevus", "diagnosis_group": "NEV", "split": "test",
    ...     "source": "demo"})
    >>> index = CaseIndex.from_embeddings(targets, cases)
    >>> query = {"global": targets["global"][3:4], "local": targets["local"][3:4]}
    >>> hits = index.search_vectors(query, k=5)
    >>> list(hits.columns[:6]), hits["case_id"].iloc[0]
    (['query', 'rank', 'case_id', 'score', 's_global', 's_local'], 'c3')
    """

    def __init__(self, faiss_index, global_vectors: np.ndarray, local_vectors: np.ndarray | None,
                 cases: pd.DataFrame, manifest: dict, retriever=None):
        self.faiss_index = faiss_index
        self._global = global_vectors
        self._local = local_vectors
        self.cases = cases
        self.manifest = manifest
        self.retriever = retriever
        self._settings: dict[str, int] = {}
        params = manifest.get("params") or {}
        self.rerank = params.get("rerank", 100)
        self.ef_search = params.get("ef_search", 128)
        self.nprobe = params.get("nprobe", 1)
        self.exact_filter_below = 4096

    def _setting(name: str, minimum: int, doc: str):  # noqa: N805 (a property factory used in the class body)
        def get(self) -> int:
            return self._settings[name]

        def set_(self, value) -> None:
            self._settings[name] = _positive(value, name, minimum, None if name == "rerank" else _INT_MAX)

        return property(get, set_, doc=f"{doc} (an integer >= {minimum}; checked when set).")

    rerank = _setting("rerank", 1, "Candidates re-scored exactly per query")
    ef_search = _setting("ef_search", 1, "HNSW search breadth")
    nprobe = _setting("nprobe", 1, "IVF lists visited per query")
    exact_filter_below = _setting("exact_filter_below", 0, "Filtered searches matching at most this many cases "
                                                           "score them all exactly")
    del _setting

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, retriever, cases: pd.DataFrame, kind: str = "flat", *, checkpoint: str | os.PathLike | None = None,
              batch_size: int = 64, progress: bool = False, **options: Any) -> CaseIndex:
        """Encode every case image with ``retriever`` and index the vectors.

        Parameters
        ----------
        retriever : Retriever
            The model; its :meth:`encode_targets` gives the database vectors.
        cases : DataFrame
            A case table (validated here); ``image_path`` must be readable
            (the index stores it as an absolute path).
        kind : {"flat", "hnsw", "ivf", "ivfpq"}
            FAISS index over the global vectors.
        checkpoint : path, optional
            The checkpoint ``retriever`` was loaded from; its path and sha256 go
            into the manifest so that ``dermretr search`` can rebuild the model.
        batch_size : int
            Images encoded at once.
        progress : bool
            Show a progress bar.
        **options
            Passed to :meth:`from_embeddings` (``nlist``, ``nprobe``,
            ``hnsw_m``, ``ef_construction``, ``ef_search``, ``pq_m``,
            ``pq_nbits``, ``rerank``, ``seed``).

        Returns
        -------
        CaseIndex

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from dermretr.data import load
        >>> from dermretr.data.synth import generate
        >>> from dermretr.models.backbones import create
        >>> from dermretr.models.retriever import Retriever
        >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=8, image_size=64,
        ...                 workers=1, progress=False)
        >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
        >>> index = CaseIndex.build(r, load("synthetic", root))
        >>> len(index), index.manifest["n_masks"]
        (8, 2)
        >>> len(index.search(root / "images" / "s000" / "ds000001.jpg", "blue-whitish veil", k=3))
        3
        """
        # everything that can be wrong is said before the (long) encoding
        _check_retriever(retriever)
        cls._check_kind(kind)
        unknown = sorted(map(str, set(options) - set(_OPTIONS)))
        if unknown:
            raise DermretrError(f"unknown index option(s) {', '.join(unknown)}; options: {', '.join(_OPTIONS)}")
        cls._check_options(**options)
        batch_size = _positive(batch_size, "batch_size")
        if checkpoint is not None:
            checkpoint = _check_path(checkpoint, "checkpoint")
        cases = validate_cases(cases)
        if len(cases) == 0:
            raise DermretrError("the case table is empty: nothing to index")
        _check_result_columns(cases, "the case table")
        # stored absolute, so that results point at the images from any working directory
        cases["image_path"] = cases["image_path"].map(lambda p: str(Path(p).expanduser().absolute())).astype("string")
        folders = cases["image_path"][cases["image_path"].map(os.path.isdir)]
        if len(folders):
            raise DermretrError(f"case table column 'image_path': {folders.iloc[0]} (case "
                                f"{cases['case_id'][folders.index[0]]!r}) is a folder, not an image file"
                                + (f"; {len(folders) - 1} more like it" if len(folders) > 1 else ""))
        info = model_info(retriever, checkpoint)
        try:
            targets = retriever.encode_targets(cases["image_path"].tolist(), batch_size=batch_size,
                                               progress=bool(progress))
        except DermretrError as exc:
            raise type(exc)(f"case image: {exc}") from None
        index = cls.from_embeddings(targets, cases, kind=kind, model_info=info, **options)
        index.retriever = retriever
        return index

    @classmethod
    def from_embeddings(cls, targets: Mapping, cases: pd.DataFrame, kind: str = "flat", *,
                        model_info: Mapping | None = None, alpha: float | None = None, rerank: int = 100,
                        nlist: int | None = None, nprobe: int | None = None, hnsw_m: int = 32,
                        ef_construction: int = 200, ef_search: int = 128, pq_m: int | None = None,
                        pq_nbits: int = 8, seed: int = 0) -> CaseIndex:
        """Index pre-computed target vectors (no model needed).

        Parameters
        ----------
        targets : dict
            ``{"global": [n, D], "local": [n, M, D] or None, "alpha": float}``
            as :meth:`Retriever.encode_targets` returns.  Locals are kept as float16.
        cases : DataFrame
            The case table, one row per vector (validated here).
        kind : {"flat", "hnsw", "ivf", "ivfpq"}
            ``flat`` is exact; ``hnsw`` (``hnsw_m`` links, ``ef_construction``)
            is fast and nearly exact; ``ivf`` clusters into ``nlist`` lists
            (default ``sqrt(n)``) of which ``nprobe`` (default ``nlist / 8``)
            are searched; ``ivfpq`` also compresses vectors to ``pq_m`` codes
            of ``pq_nbits`` bits (the re-ranking stays exact).
        model_info : dict, optional
            :func:`model_info` of the retriever that made the vectors.
        alpha : float, optional
            Weight of local evidence; default ``targets["alpha"]`` (0 without locals).
        rerank : int
            Candidates re-scored exactly per query.
        seed : int
            Seed of the IVF/PQ k-means.

        Returns
        -------
        CaseIndex
        """
        cls._check_kind(kind)
        cls._check_options(alpha=alpha, rerank=rerank, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                           ef_construction=ef_construction, ef_search=ef_search, pq_m=pq_m, pq_nbits=pq_nbits,
                           seed=seed)
        if model_info is not None and not isinstance(model_info, Mapping):
            raise DermretrError(f"model_info must be a dict (see dermretr.index.model_info), got {_show(model_info)}")
        cases = validate_cases(cases)
        _check_result_columns(cases, "the case table")
        if not isinstance(targets, Mapping) or "global" not in targets:
            raise DermretrError("targets must be a dict with a 'global' array (as Retriever.encode_targets returns)")
        g = np.ascontiguousarray(_as_array(targets["global"], "targets['global']"))
        if g.ndim != 2 or g.shape[0] == 0 or g.shape[1] == 0:
            raise DermretrError(f"targets['global'] must be a non-empty [n, D] array, got shape {g.shape}")
        n, d = g.shape
        if len(cases) != n:
            raise DermretrError(f"{n} target vectors but {len(cases)} cases: give one case-table row per vector")
        if not np.isfinite(g).all():
            raise DermretrError("targets['global'] holds NaN or infinite values")
        local = targets.get("local")
        if local is not None:
            local = _as_array(local, "targets['local']")
            if local.ndim != 3 or local.shape[0] != n or local.shape[2] != d or local.shape[1] == 0:
                raise DermretrError(f"targets['local'] must be [n={n}, M>0, D={d}], got shape {local.shape}")
            if not np.isfinite(local).all():
                raise DermretrError("targets['local'] holds NaN or infinite values")
            with np.errstate(over="ignore"):
                local = np.ascontiguousarray(local, dtype=np.float16)
            if not np.isfinite(local).all():
                raise DermretrError("targets['local'] holds values too large for float16 storage (|x| > 65504); "
                                    "give normalised vectors")
        if alpha is None:
            alpha = targets.get("alpha", 0.0) if local is not None else 0.0
            alpha = 0.0 if alpha is None else alpha
        alpha = _check_alpha(alpha) if local is not None else 0.0
        rerank = _positive(rerank, "rerank")

        params: dict[str, Any] = {"rerank": rerank}
        metric = faiss.METRIC_INNER_PRODUCT
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            hnsw_m, ef_construction, ef_search = (_as_int(v, name) for v, name in (
                (hnsw_m, "hnsw_m"), (ef_construction, "ef_construction"), (ef_search, "ef_search")))
            if min(hnsw_m, ef_construction, ef_search) < 1:
                raise DermretrError("hnsw_m, ef_construction and ef_search must be positive")
            index = faiss.IndexHNSWFlat(d, hnsw_m, metric)
            index.hnsw.efConstruction = ef_construction
            params.update(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
        else:
            nlist = cls._fit_nlist(n, nlist)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, metric)
            else:
                pq_m, pq_nbits = cls._fit_pq(n, d, pq_m, pq_nbits)
                index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, pq_m, pq_nbits, metric)
                params.update(pq_m=pq_m, pq_nbits=pq_nbits)
            index.cp.seed = _as_int(seed, "seed")
            index.cp.min_points_per_centroid = 1  # too few points was handled (and said) by _fit_nlist / _fit_pq
            if kind == "ivfpq":
                index.pq.cp.min_points_per_centroid = 1
            try:
                index.train(g)
            except RuntimeError as exc:
                raise DermretrError(f"FAISS could not train the {kind} index on {n} cases ({_faiss_reason(exc)}); "
                                    "use kind='flat', exact and fast at this size") from None
            nprobe = max(1, nlist // 8) if nprobe is None else _as_int(nprobe, "nprobe")
            if nprobe < 1:
                raise DermretrError(f"nprobe must be at least 1, got {nprobe}")
            params.update(nlist=nlist, nprobe=min(nprobe, nlist))
        try:
            index.add(g)
        except RuntimeError as exc:
            raise DermretrError(f"FAISS could not add {n} vectors to the {kind} index ({_faiss_reason(exc)})") from None

        model = dict(model_info) if model_info is not None else None
        manifest = {
            "format": INDEX_FORMAT,
            "kind": kind,
            "count": n,
            "dim": d,
            "n_masks": 0 if local is None else int(local.shape[1]),
            "alpha": alpha,
            "metric": "inner_product",
            "local_dtype": None if local is None else "float16",
            "params": params,
            "model": model,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "dermretr_version": __version__,
        }
        return cls(index, g, local, cases, manifest)

    @staticmethod
    def _check_kind(kind) -> str:
        if not isinstance(kind, str) or kind not in INDEX_KINDS:
            raise DermretrError(f"unknown index kind {_show(kind)}; kinds: {', '.join(INDEX_KINDS)}")
        return kind

    @staticmethod
    def _check_options(alpha=None, rerank=100, nlist=None, nprobe=None, hnsw_m=32, ef_construction=200,
                       ef_search=128, pq_m=None, pq_nbits=8, seed=0) -> None:
        """Type and range of every index option, whatever the kind (a bad one is never silently ignored)."""
        if alpha is not None:
            _check_alpha(alpha)
        for name, value in (("rerank", rerank), ("hnsw_m", hnsw_m), ("ef_construction", ef_construction),
                            ("ef_search", ef_search), ("pq_nbits", pq_nbits), ("nlist", nlist),
                            ("nprobe", nprobe), ("pq_m", pq_m)):
            if value is not None or name in ("rerank", "hnsw_m", "ef_construction", "ef_search", "pq_nbits"):
                _positive(value, name, 1, None if name == "rerank" else _INT_MAX)
        _positive(seed, "seed", 0, _INT_MAX)

    @staticmethod
    def _fit_nlist(n: int, nlist: int | None) -> int:
        asked = nlist is not None
        nlist = int(np.clip(round(math.sqrt(n)), 1, 65536)) if nlist is None else _as_int(nlist, "nlist")
        if nlist < 1:
            raise DermretrError(f"nlist must be at least 1, got {nlist}")
        most = max(1, n // _MIN_POINTS_PER_LIST)
        if nlist > most:
            warnings.warn(
                f"IVF index on {n} cases: using nlist={most} lists instead of {nlist}{' (asked)' if asked else ''}, "
                f"since k-means needs about {_MIN_POINTS_PER_LIST} cases per list; at this size kind='flat' is "
                "exact and fast", IndexWarning, stacklevel=3)
            nlist = most
        return nlist

    @staticmethod
    def _fit_pq(n: int, d: int, pq_m: int | None, pq_nbits: int) -> tuple[int, int]:
        if pq_m is None:
            pq_m = next((m for m in (64, 48, 32, 16, 8, 4, 2, 1) if d % m == 0 and d // m >= 4), 1)
        pq_m, pq_nbits = _as_int(pq_m, "pq_m"), _as_int(pq_nbits, "pq_nbits")
        if pq_m < 1 or d % pq_m:
            raise DermretrError(f"pq_m={pq_m} must divide the vector dimension {d}")
        if not 1 <= pq_nbits <= 16:
            raise DermretrError(f"pq_nbits must be in 1..16, got {pq_nbits}")
        most = max(1, int(math.log2(max(2, n // _MIN_POINTS_PER_LIST))))
        if pq_nbits > most:
            warnings.warn(f"IVF-PQ index on {n} cases: using {most}-bit codes instead of {pq_nbits} "
                          f"(training {2 ** pq_nbits} centroids needs about {_MIN_POINTS_PER_LIST * 2 ** pq_nbits} "
                          "cases)", IndexWarning, stacklevel=3)
            pq_nbits = most
        return pq_m, pq_nbits

    # ------------------------------------------------------------------ properties

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def __repr__(self) -> str:
        m = self.manifest
        model = (m.get("model") or {}).get("config") or None
        model_txt = None if model is None else f"{model.get('backbone')}/{model.get('kind')}"
        return (f"CaseIndex(kind={m['kind']!r}, count={m['count']}, dim={m['dim']}, n_masks={m['n_masks']}, "
                f"alpha={round(m['alpha'], 4)}, rerank={self.rerank}, model={model_txt!r})")

    @property
    def kind(self) -> str:
        """The FAISS index kind (``flat``, ``hnsw``, ``ivf`` or ``ivfpq``)."""
        return self.manifest["kind"]

    @property
    def alpha(self) -> float:
        """Weight of local evidence used when a search does not override it."""
        return float(self.manifest["alpha"])

    @property
    def global_vectors(self) -> np.ndarray:
        """``[n, D]`` float32 global vectors (memory-mapped after :meth:`load`)."""
        return self._global

    @property
    def local_vectors(self) -> np.ndarray | None:
        """``[n, M, D]`` float16 local vectors (memory-mapped after :meth:`load`), or None."""
        return self._local

    def targets(self) -> dict:
        """The stored vectors as an :meth:`encode_targets`-style dict (locals as float32)."""
        return {"global": np.asarray(self._global),
                "local": None if self._local is None else np.asarray(self._local, dtype=np.float32),
                "alpha": self.alpha}

    # ------------------------------------------------------------------ searching

    def search(self, image, text: str = "", k: int = 10, alpha: float | None = None,
               filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Search with one reference image (path or PIL image) and a descriptor text.

        Parameters
        ----------
        image : path or PIL.Image
            The reference lesion image.
        text : str
            Descriptor or modification text; any free text works, an empty one
            means "cases like this image".  ``result.attrs["descriptors"]`` holds
            the 7-point criteria recognised in it (``{}`` when none).
        k : int
            Results wanted, 1..len(index).
        alpha : float, optional
            Override the weight of local evidence.
        filters : dict, optional
            Column -> allowed values, e.g. ``{"fitzpatrick": [5, 6]}``.

        Returns
        -------
        DataFrame
            ``rank, case_id, score, s_global, s_local`` and the case's columns,
            best first.  Empty (with a :class:`DataWarning`) when no case
            matches the filters.
        """
        if text is not None and not isinstance(text, str):
            raise DermretrError(f"text must be a str (the descriptor or modification text), got {_show(text)}")
        if isinstance(image, (list, tuple)):
            raise DermretrError(f"image must be one file path or PIL image, got a {type(image).__name__}; for "
                                "several queries use search_batch(images, texts)")
        out = self.search_batch([image], [text], k=k, alpha=alpha, filters=filters)
        descriptors = out.attrs.get("descriptors", [{}])[0]
        out = out.drop(columns="query")
        out.attrs["descriptors"] = descriptors
        return out

    def search_batch(self, images: Sequence, texts: Sequence[str], k: int = 10, alpha: float | None = None,
                     filters: Mapping[str, Any] | None = None, batch_size: int = 64) -> pd.DataFrame:
        """Search with several (image, text) queries; one DataFrame with a ``query`` column (0-based).

        ``images`` are paths or PIL images; texts as in :meth:`search`.
        """
        if self.retriever is None:
            raise DermretrError("this index has no retriever to encode queries: load it with "
                                "CaseIndex.load(dir, retriever) or search pre-computed vectors with search_vectors()")
        from PIL import Image

        from .data.images import load_rgb

        if isinstance(images, (str, bytes, os.PathLike, Image.Image)) or not isinstance(images, Iterable):
            raise DermretrError(f"images must be a list of query images (paths or PIL images), got {_show(images)}; "
                                "for a single query use search(image, text)")
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
            raise DermretrError(f"texts must be a list of query texts (one str per image), got {_show(texts)}; "
                                "for a single query use search(image, text)")
        images, texts = list(images), list(texts)
        for i, t in enumerate(texts):
            if t is not None and not isinstance(t, str):
                raise DermretrError(f"query text {i} must be a str, got {_show(t)}")
        texts = ["" if t is None else t for t in texts]
        if len(images) != len(texts):
            raise DermretrError(f"{len(images)} query images but {len(texts)} texts: give one text per image")
        if not images:
            raise DermretrError("no query: give at least one image and text")
        k = self._check_k(k)
        if alpha is not None:
            _check_alpha(alpha)
        batch_size = _positive(batch_size, "batch_size")
        self._allowed(filters)  # bad k, alpha or filters fail before encoding
        loaded = []
        for img in images:
            if isinstance(img, Image.Image):
                loaded.append(img.convert("RGB"))
                continue
            if isinstance(img, np.ndarray):
                raise DermretrError(f"query image must be a file path or a PIL image, got an array of shape "
                                    f"{img.shape}; convert it with PIL.Image.fromarray(array)")
            if isinstance(img, bool) or not isinstance(img, (str, os.PathLike)):
                raise DermretrError(f"query image must be a file path or a PIL image, got {_show(img)}")
            if not os.fspath(img):
                raise DermretrError("query image: the image path is empty")
            if "\0" in str(os.fspath(img)):
                raise DermretrError(f"query image: {os.fspath(img)!r} contains a NUL character; check the path")
            if os.path.isdir(img):
                raise DermretrError(f"query image: {os.fspath(img)} is a folder, not an image file")
            try:
                loaded.append(load_rgb(img))
            except DermretrError as exc:
                raise type(exc)(f"query image: {exc}") from None
        queries = self.retriever.encode_queries(loaded, texts, batch_size=batch_size)
        out = self.search_vectors(queries, k=k, alpha=alpha, filters=filters)
        out.attrs["descriptors"] = [_descriptors(t) for t in texts]
        return out

    def search_vectors(self, queries: Mapping, k: int = 10, alpha: float | None = None,
                       filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Two-stage search with pre-computed query vectors (:meth:`Retriever.encode_queries`).

        Parameters
        ----------
        queries : dict
            ``{"global": [Q, D], "local": [Q, M, D] or None}``.
        k, alpha, filters
            As in :meth:`search`.

        Returns
        -------
        DataFrame
            ``query, rank, case_id, score, s_global, s_local`` and the case's
            columns; ``Q * k`` rows (fewer when fewer cases match the filters).
        """
        qg, ql = self._check_queries(queries)
        k = self._check_k(k)
        a = self.alpha if alpha is None else _check_alpha(alpha)
        allowed = self._allowed(filters)
        filters = None if allowed is None else dict(filters)
        n_ok = len(self) if allowed is None else int(allowed.sum())
        if n_ok == 0:
            warnings.warn(f"no case matches the filters {filters}; the result is empty", DataWarning,
                          stacklevel=2)
            none = np.zeros((qg.shape[0], 0))
            return self._frame(none.astype(np.int64), none, none, none)
        if n_ok < k:
            warnings.warn(f"only {n_ok} cases match the filters {filters}; returning {n_ok} per query "
                          f"instead of k={k}", DataWarning, stacklevel=2)
            k = n_ok
        n_cand = min(max(self.rerank, k), n_ok)
        cand = self._candidates(qg, n_cand, k, allowed)
        ids, s, sg, sl = self._rerank(qg, ql, cand, a, k)
        return self._frame(ids, s, sg, sl)

    def _check_k(self, k) -> int:
        k = _as_int(k, "k")
        if k < 1:
            raise DermretrError(f"k (results per query) must be at least 1, got {k}")
        if k > len(self):
            raise DermretrError(f"k={k} is larger than the database ({len(self)} cases); use k <= {len(self)}")
        return k

    def _check_queries(self, queries: Mapping) -> tuple[np.ndarray, np.ndarray | None]:
        if not isinstance(queries, Mapping) or "global" not in queries:
            raise DermretrError("queries must be a dict with a 'global' array (as Retriever.encode_queries returns)")
        qg = _as_array(queries["global"], "queries['global']")
        if qg.ndim == 1:
            qg = qg[None]
        d = self.manifest["dim"]
        if qg.ndim != 2 or qg.shape[1] != d:
            raise DermretrError(f"query vectors have shape {qg.shape} but the index holds {d}-dimensional vectors "
                                "(was it built with another model?)")
        if qg.shape[0] == 0:
            raise DermretrError("queries['global'] holds no query vector: give at least one")
        if not np.isfinite(qg).all():
            raise DermretrError("query vectors hold NaN or infinite values")
        ql = queries.get("local")
        if ql is None or self._local is None:
            return np.ascontiguousarray(qg), None
        ql = _as_array(ql, "queries['local']")
        if ql.ndim == 2:
            ql = ql[None]
        want = (qg.shape[0], self.manifest["n_masks"], d)
        if ql.shape != want:
            raise DermretrError(f"query local vectors have shape {ql.shape}, expected {want} "
                                "(was the index built with another model?)")
        if not np.isfinite(ql).all():
            raise DermretrError("query local vectors hold NaN or infinite values")
        return np.ascontiguousarray(qg), np.ascontiguousarray(ql)

    def _allowed(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Boolean mask of the cases passing ``filters`` (None = no filter)."""
        if filters is None or (isinstance(filters, Mapping) and not filters):
            return None
        if not isinstance(filters, Mapping):
            raise DermretrError(f"filters must be a dict column -> allowed values, e.g. {{'fitzpatrick': [5, 6]}}, "
                                f"got {_show(filters)}")
        mask = np.ones(len(self), dtype=bool)
        for column, values in filters.items():
            if not isinstance(column, str) or column not in self.cases.columns:
                raise DermretrError(f"cannot filter on unknown column {column!r}; columns: "
                                    f"{', '.join(map(str, self.cases.columns))}")
            if isinstance(values, Mapping):
                raise DermretrError(f"filter {column!r}: the allowed values must be a list, got {_show(values)}")
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                values = [values]
            values = list(values)
            if not values:
                raise DermretrError(f"filter {column!r} has no allowed values")
            for v in values:
                if not (v is None or isinstance(v, (str, numbers.Number, np.bool_, np.number))):
                    raise DermretrError(f"filter {column!r}: each allowed value must be a str, number or bool, "
                                        f"got {_show(v)}")
            mask &= self._match(self.cases[column], values, column)
        return mask

    @staticmethod
    def _match(series: pd.Series, values: list, column: str) -> np.ndarray:
        want_na = any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)
        values = [v for v in values if not (v is None or (isinstance(v, float) and math.isnan(v)))]
        hit = series.isna().to_numpy() if want_na else np.zeros(len(series), dtype=bool)
        if not values:
            return hit
        if pd.api.types.is_bool_dtype(series.dtype):
            truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            wanted = set()
            for v in values:
                key = str(v).strip().lower()
                if key not in truth:
                    raise DermretrError(f"filter {column!r}: {v!r} is not a boolean (use true/false)")
                wanted.add(truth[key])
            return hit | series.isin(list(wanted)).fillna(False).to_numpy(dtype=bool)
        if pd.api.types.is_numeric_dtype(series.dtype):
            nums = pd.to_numeric(pd.Series(values, dtype=object).astype(str).str.strip(), errors="coerce")
            if nums.isna().any():
                bad = [v for v, x in zip(values, nums) if pd.isna(x)]
                raise DermretrError(f"filter {column!r}: {bad[0]!r} is not a number (the column is numeric)")
            return hit | series.isin(nums.tolist()).fillna(False).to_numpy(dtype=bool)
        text = series.astype("string").str.strip().str.casefold()
        wanted = [str(v).strip().casefold() for v in values]
        return hit | text.isin(wanted).fillna(False).to_numpy(dtype=bool)

    def _search_params(self, n_cand: int, selector=None):
        kind = self.kind
        if kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, n_cand), sel=selector)
        if kind in ("ivf", "ivfpq"):
            return faiss.SearchParametersIVF(nprobe=max(1, min(self.nprobe, self.faiss_index.nlist)), sel=selector)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _exact_candidates(self, qg: np.ndarray, n_cand: int, ids: np.ndarray | None) -> np.ndarray:
        """Top ``n_cand`` rows of ``ids`` (None = all rows) by exact global score, per query, in row blocks."""
        total = len(self) if ids is None else len(ids)
        best_s = np.full((len(qg), 0), -np.inf, np.float32)
        best_i = np.zeros((len(qg), 0), np.int64)
        for a in range(0, total, _EXACT_BLOCK):
            b = min(total, a + _EXACT_BLOCK)
            rows = np.arange(a, b) if ids is None else ids[a:b]
            block = self._global[a:b] if ids is None else self._global[rows]
            s = np.concatenate([best_s, qg @ np.asarray(block).T], axis=1)
            i = np.concatenate([best_i, np.broadcast_to(rows, (len(qg), len(rows)))], axis=1)
            if s.shape[1] > n_cand:
                top = np.argpartition(-s, n_cand - 1, axis=1)[:, :n_cand]
                s, i = np.take_along_axis(s, top, axis=1), np.take_along_axis(i, top, axis=1)
            best_s, best_i = s, i
        return np.ascontiguousarray(best_i)

    def _candidates(self, qg: np.ndarray, n_cand: int, k: int, allowed: np.ndarray | None) -> np.ndarray:
        """``[Q, n_cand]`` candidate rows (-1 = none) from the first stage."""
        if allowed is not None:
            ids_ok = np.flatnonzero(allowed)
            if len(ids_ok) <= max(n_cand, self.exact_filter_below):
                # few matches: scoring them all exactly is cheaper (and surer) than a filtered graph/list search
                return self._exact_candidates(qg, n_cand, ids_ok)
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        else:
            ids_ok, bitmap, selector = None, None, None
        params = self._search_params(n_cand, selector)
        _, cand = self.faiss_index.search(qg, n_cand, params=params)
        del bitmap  # kept alive until the search is done
        # an approximate index may return fewer than k candidates (sparse filter, small nprobe): fall back to exact
        short = np.flatnonzero((cand >= 0).sum(axis=1) < k)
        if len(short):
            cand[short] = self._exact_candidates(qg[short], n_cand, ids_ok)
        return cand

    def _rerank(self, qg: np.ndarray, ql: np.ndarray | None, cand: np.ndarray, alpha: float, k: int):
        """Exact convex scores of the candidates; the best ``k`` per query."""
        q, n_cand = cand.shape
        out_ids = np.empty((q, k), np.int64)
        out = [np.empty((q, k), np.float64) for _ in range(3)]
        use_local = ql is not None and self._local is not None
        for a in range(0, q, _CHUNK):
            b = min(q, a + _CHUNK)
            c = cand[a:b]
            valid = c >= 0
            rows = np.where(valid, c, 0)
            flat = rows.ravel()
            order = np.argsort(flat, kind="stable")  # sorted reads are kinder to memory-mapped files
            g = np.empty((flat.size, qg.shape[1]), np.float32)
            g[order] = self._global[flat[order]]
            sg = np.einsum("qnd,qd->qn", g.reshape(b - a, n_cand, -1), qg[a:b])
            if use_local:
                loc = np.empty((flat.size, *self._local.shape[1:]), np.float32)
                loc[order] = self._local[flat[order]]
                sl = np.einsum("qnmd,qmd->qn", loc.reshape(b - a, n_cand, *self._local.shape[1:]), ql[a:b])
                sl /= ql.shape[1]
                s = alpha * sl + (1 - alpha) * sg
            else:
                sl = np.zeros_like(sg)
                s = sg
            if not np.isfinite(s[valid]).all():
                raise DermretrError("search scores are not finite numbers: the query vectors or the index's stored "
                                    "vectors hold invalid or too large values; normalise the query vectors, or rebuild "
                                    "the index with `dermretr index ... --overwrite`")
            s = np.where(valid, s, -np.inf)
            best = np.lexsort((rows, -s), axis=-1)[:, :k]  # by score, ties by row
            pick = np.take_along_axis
            out_ids[a:b] = pick(rows, best, axis=1)
            for dst, src in zip(out, (s, sg, sl)):
                dst[a:b] = pick(src, best, axis=1)
        return out_ids, out[0], out[1], out[2]

    def _frame(self, ids: np.ndarray, s: np.ndarray, sg: np.ndarray, sl: np.ndarray) -> pd.DataFrame:
        q, k = ids.shape
        flat = ids.ravel()
        table = self.cases.iloc[flat].reset_index(drop=True)
        front = pd.DataFrame({
            "query": np.repeat(np.arange(q), k),
            "rank": np.tile(np.arange(1, k + 1), q),
            "case_id": table["case_id"],
            "score": s.ravel().astype(np.float64),
            "s_global": sg.ravel().astype(np.float64),
            "s_local": sl.ravel().astype(np.float64),
        })
        return pd.concat([front, table.drop(columns="case_id")], axis=1)

    # ------------------------------------------------------------------ saving and loading

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the index folder atomically.

        Everything is written to a new folder beside ``path`` (named
        ``.NAME.dermretr-PID-XXXX.new``, following the umask) which then
        replaces ``path``; if anything fails, ``path`` is left as it was.
        Temporaries left by a save that was killed are removed (with a
        warning) by the next save.  Two processes saving the same folder at
        once: one writes it, the other gets an :class:`~dermretr._errors.OutputError`.

        Parameters
        ----------
        path : path
            The index folder.
        overwrite : bool
            Replace an existing index there (a folder holding anything but an
            index's own files is never replaced).

        Returns
        -------
        Path
        """
        if not isinstance(overwrite, (bool, np.bool_)):
            raise DermretrError(f"overwrite must be True or False, got {_show(overwrite)}")
        path = self.check_output(path, overwrite)  # at once, before taking the lock
        manifest = dict(self.manifest)
        manifest["params"] = dict(manifest.get("params") or {}, rerank=self.rerank)
        if self.kind == "hnsw":
            manifest["params"]["ef_search"] = self.ef_search
        if self.kind in ("ivf", "ivfpq"):
            manifest["params"]["nprobe"] = self.nprobe
        manifest["columns"] = {str(c): str(t) for c, t in self.cases.dtypes.items()}
        manifest["case_ids_sha256"] = _case_ids_sha256(self.cases["case_id"])
        with _io.exclusive(path, "index folder"):
            self.check_output(path, overwrite)  # again: another process may have written it meanwhile
            with _io.atomic_dir(path) as tmp:
                try:
                    faiss.write_index(self.faiss_index, str(tmp / _FAISS))
                except RuntimeError as exc:
                    raise OutputError(f"cannot write the index {path}: FAISS could not write {_FAISS} "
                                      f"({_faiss_reason(exc)}); check the free disk space and try again (nothing "
                                      "was changed)") from None
                _write_npy(tmp / _GLOBAL, np.asarray(self._global, dtype=np.float32), path)
                if self._local is not None:
                    _write_npy(tmp / _LOCAL, np.asarray(self._local, dtype=np.float16), path)
                self._write_cases(tmp / _CASES)
                manifest["files"] = {name: (tmp / name).stat().st_size for name in (_FAISS, _GLOBAL, _LOCAL)
                                     if (tmp / name).exists()}
                (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        self.manifest = manifest
        _warn_old_temporaries(path)
        return path

    @staticmethod
    def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Raise :class:`~dermretr._errors.OutputError` unless :meth:`save` may write ``path``.

        ``path`` may be missing, an empty folder, or (with ``overwrite``) a
        folder holding an index and nothing else; the absolute path is
        returned (a symbolic link is followed: the index goes where it points).
        """
        if isinstance(path, str) and not path:
            raise OutputError("the index folder must be a path (str or pathlib.Path), got ''")
        path = _check_path(path, "the index folder", OutputError).absolute()
        _exists(path, OutputError)
        if path.is_symlink():
            path = path.resolve()
        for parent in path.parents:
            if _exists(parent, OutputError):
                if not parent.is_dir():
                    raise OutputError(f"cannot write the index {path}: {parent} is a file, not a folder; choose "
                                      "another index folder")
                break
        if path.exists():
            if not path.is_dir():
                raise OutputError(f"{path} exists and is not a folder; choose another index folder")
            foreign = _foreign_entries(path)
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

    def _write_cases(self, file: Path) -> None:
        self.cases.to_csv(file, index=False, na_rep=_NA)

    @classmethod
    def read_manifest(cls, path: str | os.PathLike) -> dict:
        """The manifest of an index folder, checked for a format this version reads and for its fields' values."""
        path = _check_path(path, "index folder")
        rebuild = f"rebuild it with `dermretr index --run RUN_DIR --data SPEC --out {path} --overwrite`"
        if not _exists(path):
            raise DermretrError(f"index folder not found: {path}")
        if not path.is_dir():
            raise DermretrError(f"{path} is a file, not an index folder: give the folder `dermretr index` wrote")
        file = path / _MANIFEST
        try:
            if file.stat().st_size > 16 << 20:
                raise DermretrError(f"index {path} is damaged: {_MANIFEST} is too large to be an index manifest "
                                    f"({file.stat().st_size} bytes); {rebuild}")
            text = file.read_bytes()
        except FileNotFoundError:
            if (path / _FAISS).is_file():
                raise DermretrError(f"{path} has no {_MANIFEST}: it is an index from an older dermretr format; "
                                    f"{rebuild}") from None
            raise DermretrError(f"{path} is not a dermretr index (no {_MANIFEST})") from None
        except IsADirectoryError:
            raise DermretrError(f"index {path} is damaged: {_MANIFEST} is a folder; {rebuild}") from None
        except OSError as exc:
            raise _read_error(file, exc) from None
        try:
            manifest = json.loads(text)
        except (ValueError, RecursionError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DermretrError(f"index {path} is damaged: {_MANIFEST} is not valid JSON ({reason}); "
                                f"{rebuild}") from None
        if not isinstance(manifest, dict):
            raise DermretrError(f"index {path} is damaged: {_MANIFEST} holds {_show(manifest, 30)} instead of a "
                                f"JSON object; {rebuild}")
        fmt = manifest.get("format")
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            raise DermretrError(f"{file} has no format version: it is from an older dermretr format; {rebuild}")
        if fmt > INDEX_FORMAT:
            raise DermretrError(f"{path} was written by a newer dermretr (index format {fmt}; this version reads "
                                f"format {INDEX_FORMAT}); upgrade dermretr")
        if fmt < INDEX_FORMAT:
            raise DermretrError(f"{path} is an index of an older format ({fmt}; this version reads format "
                                f"{INDEX_FORMAT}); {rebuild}")
        missing = [key for key in ("kind", "count", "dim", "n_masks", "alpha") if key not in manifest]
        if missing:
            raise DermretrError(f"{file} is incomplete (missing {missing}); {rebuild}")
        _check_manifest(manifest, path, rebuild)
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike, retriever=None, checkpoint: str | os.PathLike | None = None,
             mmap: bool = True) -> CaseIndex:
        """Open an index folder written by :meth:`save`.

        Every file is checked against the manifest (shapes, dtypes, sizes, the
        case ids) and the stored vectors for NaN or infinite values, so that a
        damaged index is a clear :class:`~dermretr.DermretrError` here and
        never wrong scores later.

        Parameters
        ----------
        path : path
            The index folder.
        retriever : Retriever, optional
            The model for :meth:`search`; it must be the one the index was
            built with (same config hash and weights) or a
            :class:`~dermretr.DermretrError` says so.  Without it, use
            :meth:`search_vectors`.
        checkpoint : path, optional
            The checkpoint ``retriever`` came from; compared with the sha256
            recorded at build time.
        mmap : bool
            Memory-map ``global.npy`` and ``local.npy`` (default) instead of
            reading them into memory.

        Returns
        -------
        CaseIndex
        """
        path = _check_path(path, "index folder")
        if retriever is not None:
            _check_retriever(retriever)
        if checkpoint is not None:
            checkpoint = _check_path(checkpoint, "checkpoint")
        if not isinstance(mmap, (bool, np.bool_)):
            raise DermretrError(f"mmap must be True or False, got {_show(mmap)}")
        manifest = cls.read_manifest(path)
        if retriever is not None or checkpoint is not None:
            cls._check_model(path, manifest, retriever, checkpoint)
        rebuild = f"rebuild it with `dermretr index ... --out {path} --overwrite`"

        def damaged(what: str) -> DermretrError:
            return DermretrError(f"index {path} is damaged: {what}; {rebuild}")

        kind, n, d, m = manifest["kind"], manifest["count"], manifest["dim"], manifest["n_masks"]
        sizes = {}
        for name in (_FAISS, _GLOBAL, _CASES) + ((_LOCAL,) if m else ()):
            file = path / name
            try:
                st = file.stat()
            except FileNotFoundError:
                raise DermretrError(f"index {path} is incomplete: {name} is missing; {rebuild}") from None
            except OSError as exc:
                raise _read_error(file, exc) from None
            if not stat.S_ISREG(st.st_mode):
                raise damaged(f"{name} is not a file")
            sizes[name] = st.st_size
        if not m and (path / _LOCAL).exists():
            raise damaged(f"{_LOCAL} is there but {_MANIFEST} says the index has no local vectors (n_masks 0)")
        for name, size in (manifest.get("files") or {}).items():
            if name in sizes and sizes[name] != size:
                raise damaged(f"{name} has {sizes[name]} bytes but {size} were written (truncated or replaced?)")
        index = _read_faiss(path / _FAISS, kind, n, d, damaged)
        mode = "r" if mmap else None
        g = _read_npy(path / _GLOBAL, mode, damaged)
        if g.shape != (n, d) or g.dtype != np.float32:
            raise damaged(f"{_GLOBAL} holds a {g.dtype} array of shape {g.shape}, {_MANIFEST} says float32 "
                          f"({n}, {d}) ({n} cases of dimension {d})")
        local = None
        if m:
            local = _read_npy(path / _LOCAL, mode, damaged)
            if local.shape != (n, m, d) or local.dtype != np.float16:
                raise damaged(f"{_LOCAL} holds a {local.dtype} array of shape {local.shape}, {_MANIFEST} says "
                              f"float16 ({n}, {m}, {d})")
        if not _all_finite(g):
            raise damaged(f"{_GLOBAL} holds NaN or infinite values")
        if local is not None and not _all_finite(local):
            raise damaged(f"{_LOCAL} holds NaN or infinite values")
        cases = cls._read_cases(path / _CASES, manifest.get("columns") or {}, rebuild)
        if len(cases) != n:
            raise damaged(f"{_CASES} has {len(cases)} rows, {_MANIFEST} says {n}")
        recorded = manifest.get("case_ids_sha256")
        if recorded is not None and _case_ids_sha256(cases["case_id"]) != recorded:
            raise damaged(f"the case ids in {_CASES} are not those the vectors were stored for (edited, reordered "
                          "or replaced?)")
        return cls(index, g, local, cases, manifest, retriever=retriever)

    @staticmethod
    def _read_cases(file: Path, columns: Mapping[str, str], rebuild: str) -> pd.DataFrame:
        try:
            raw = pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[_NA])
        except OSError as exc:
            raise _read_error(file, exc) from None
        except ValueError as exc:  # not CSV, not UTF-8, empty
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DermretrError(f"index {file.parent} is damaged: cannot read {_CASES} ({reason}); {rebuild}") from None
        try:
            cases = validate_cases(raw)
            _check_result_columns(cases, _CASES)
        except DermretrError as exc:
            raise DermretrError(f"index {file.parent} is damaged: {file}: {exc}; {rebuild}") from None
        for column, dtype in columns.items():
            if column in cases.columns and column not in CASE_COLUMNS:
                cases[column] = _restore_column(cases[column], dtype)
        return cases

    @staticmethod
    def _check_model(path: Path, manifest: dict, retriever, checkpoint) -> None:
        model = manifest.get("model") or {}
        rebuild = f"rebuild the index with `dermretr index --run RUN_DIR --data SPEC --out {path} --overwrite`"
        if not model.get("config_hash"):
            raise DermretrError(f"index {path} was built from embeddings without a model record, so a retriever "
                                "cannot be checked against it; load it without one and use search_vectors(), or "
                                f"{rebuild}")
        if retriever is not None:
            config = retriever.config()
            got = config_hash(config)
            if got != model["config_hash"]:
                saved = model.get("config") or {}
                diff = ", ".join(f"{key}: index {saved.get(key)!r}, model {config.get(key)!r}"
                                 for key in sorted(set(saved) | set(config)) if saved.get(key) != config.get(key))
                diff = f"; {diff}" if diff else ""
                raise DermretrError(f"index {path} was built with another model (config hash "
                                    f"{model['config_hash'][:12]}; this model's is {got[:12]}{diff}); use the model "
                                    f"it was built with, or {rebuild}")
        if checkpoint is not None and model.get("checkpoint_sha256"):
            got = file_sha256(checkpoint)
            if got != model["checkpoint_sha256"]:
                raise DermretrError(f"index {path} was built from checkpoint {model.get('checkpoint_path')} "
                                    f"(sha256 {model['checkpoint_sha256'][:12]}) but {checkpoint} has sha256 "
                                    f"{got[:12]}; use that checkpoint, or {rebuild}")
        if retriever is not None and model.get("weights_sha256"):
            got = _weights_sha256(retriever)
            if got != model["weights_sha256"]:
                raise DermretrError(f"index {path} was built with other weights of the same model (weights sha256 "
                                    f"{model['weights_sha256'][:12]}; this model's is {got[:12]}); use the "
                                    f"checkpoint it was built with, or {rebuild}")

    @classmethod
    def open(cls, path: str | os.PathLike, device: str = "auto", mmap: bool = True) -> CaseIndex:
        """Load an index together with the retriever recorded in its manifest (as ``dermretr search`` does).

        Raises :class:`~dermretr.DermretrError` when the index records no
        checkpoint, the checkpoint file is gone, or it changed since the build.
        """
        from .models.retriever import Retriever

        path = _check_path(path, "index folder")
        if not isinstance(device, str):
            raise DermretrError(f"device must be a str ('auto', 'cpu' or 'cuda'), got {_show(device)}")
        manifest = cls.read_manifest(path)
        ckpt = (manifest.get("model") or {}).get("checkpoint_path")
        if not ckpt:
            raise DermretrError(f"index {path} does not record the checkpoint it was built from; load it in Python "
                                "with CaseIndex.load(dir, retriever) or rebuild it with `dermretr index`")
        if not Path(ckpt).is_file():
            raise DermretrError(f"the checkpoint index {path} was built with is gone: {ckpt}; restore it or rebuild "
                                f"the index with `dermretr index --run RUN_DIR --data SPEC --out {path} --overwrite`")
        retriever = Retriever.load(ckpt, device=device)
        return cls.load(path, retriever, checkpoint=ckpt, mmap=mmap)

