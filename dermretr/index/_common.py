"""Constants of the index layout and the small argument checks every part of the index package shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._checks import is_int, show
from .._errors import DermretrError

__all__ = ["INDEX_FORMAT", "INDEX_KINDS", "RESULT_COLUMNS", "IndexWarning", "as_int", "check_count", "as_array",
           "all_finite", "check_result_columns", "check_path", "exists", "check_retriever"]

#: Version of the on-disk layout written by :meth:`CaseIndex.save`.
INDEX_FORMAT = 1
#: Index kinds: exact, graph (HNSW), inverted file (IVF-Flat) and compressed inverted file (IVF-PQ).
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf", "ivfpq")
#: Columns every search result starts with (``search_batch``/``search_vectors`` add ``query`` first).
RESULT_COLUMNS: tuple[str, ...] = ("rank", "case_id", "score", "s_global", "s_local")

MANIFEST = "manifest.json"
FAISS_FILE = "index.faiss"
GLOBAL = "global.npy"
LOCAL = "local.npy"
CASES = "cases.csv"
#: The files of an index folder; a folder holding anything else is not replaced by :meth:`CaseIndex.save`.
INDEX_FILES = frozenset((MANIFEST, FAISS_FILE, GLOBAL, LOCAL, CASES))
#: Keyword options of :meth:`CaseIndex.from_embeddings` that :meth:`CaseIndex.build` passes on.
OPTIONS = ("alpha", "rerank", "nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "pq_m", "pq_nbits", "seed")
#: The search and build parameters a manifest records (each a positive integer).
PARAMS = ("rerank", "ef_search", "nprobe", "nlist", "hnsw_m", "ef_construction", "pq_m", "pq_nbits")
FINITE_BLOCK = 65536  # stored vector rows checked for NaN/inf at once when an index is opened
INT_MAX = 2**31 - 1  # FAISS keeps its parameters (efSearch, nprobe, seed...) in C ints


class IndexWarning(UserWarning):
    """An index setting was adjusted to fit the data (e.g. fewer IVF lists on a small database)."""


def as_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool); otherwise "NAME must be an integer"."""
    if not is_int(value):
        raise DermretrError(f"{name} must be an integer, got {show(value)}")
    return int(value)


def check_count(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer setting in ``[minimum, maximum]``, with "must be at least/at most" messages.

    >>> check_count(0, "rerank")
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: rerank must be at least 1, got 0
    """
    value = as_int(value, name)
    if value < minimum:
        raise DermretrError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise DermretrError(f"{name} must be at most {maximum}, got {value}")
    return value


def as_array(value: Any, what: str, dtype: Any = np.float32) -> np.ndarray:
    """``value`` as a numeric array, or a clear error naming ``what``."""
    if isinstance(value, (str, bytes)) or value is None:
        raise DermretrError(f"{what} must be a numeric array, got {show(value)}")
    try:
        out = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DermretrError(f"{what} must be a numeric array, got {type(value).__name__} "
                            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else 'not numeric'})") from None
    return out


def all_finite(a: np.ndarray) -> bool:
    """No NaN or infinite value in ``a`` (checked in row blocks, so a memory-mapped file is not copied whole)."""
    return all(np.isfinite(a[s:s + FINITE_BLOCK]).all() for s in range(0, len(a), FINITE_BLOCK))


def check_result_columns(cases: pd.DataFrame, where: str) -> None:
    """Search results put their own columns in front of the case columns: the names must not clash."""
    clash = [c for c in ("query", *RESULT_COLUMNS) if c != "case_id" and c in cases.columns]
    if clash:
        raise DermretrError(f"{where} has column(s) {clash} whose names search results use for their own values; "
                            "rename them")


def check_path(path: Any, what: str, error: type[DermretrError] = DermretrError) -> Path:
    """``path`` (a str or path-like, not empty, no NUL) as an expanded :class:`~pathlib.Path`."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise error(f"{what} must be a path (str or pathlib.Path), got {show(path)}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise error(f"{what} must be a path (str or pathlib.Path), got {show(path)}")
    if not text:
        raise error(f"{what} is an empty path")
    if "\0" in text:
        raise error(f"{what} {text!r} contains a NUL character; check the path")
    return Path(text).expanduser()


def exists(path: Path, error: type[DermretrError] = DermretrError) -> bool:
    """``path.exists()``, with a clear error for a path the system refuses (name too long, loops...)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return path.is_symlink()
    except OSError as exc:
        raise error(f"cannot use {path}: {exc.strerror or exc}; check the path") from None
    return True


def check_retriever(retriever: Any, what: str = "retriever") -> None:
    """A dermretr Retriever (anything that encodes queries and targets and has a config and weights)."""
    if not all(callable(getattr(retriever, m, None)) for m in ("encode_targets", "encode_queries", "config",
                                                               "state_dict")):
        hint = (" (to open an index with the checkpoint it records, use CaseIndex.open(dir))"
                if isinstance(retriever, (str, os.PathLike)) else "")
        raise DermretrError(f"{what} must be a dermretr Retriever, got {show(retriever)}{hint}")

