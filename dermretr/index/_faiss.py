"""The FAISS side of an index: kinds and their options, fitting IVF/PQ to the data, reading and writing files."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .._checks import check_alpha, show
from .._errors import DermretrError, OutputError
from ._common import FAISS_FILE, INDEX_KINDS, INT_MAX, MANIFEST, OPTIONS, IndexWarning, as_int, check_count

__all__ = ["FAISS_TYPES", "MIN_POINTS_PER_LIST", "check_kind", "check_options", "check_index_options", "fit_nlist",
           "fit_pq", "new_index", "empty_index", "train_index", "add_vectors", "faiss_reason", "read_faiss",
           "write_faiss", "search_params", "first_stage"]

#: The FAISS class each index kind reads back as (checked before searching it).
FAISS_TYPES = {"flat": "IndexFlat", "hnsw": "IndexHNSW", "ivf": "IndexIVFFlat", "ivfpq": "IndexIVFPQ"}
MIN_POINTS_PER_LIST = 39  # FAISS k-means wants at least this many training points per centroid
_FOURCC = (b"IxFI", b"IxF2", b"IHNf", b"IwFl", b"IwPQ")  # FAISS headers of the kinds written here


def check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind not in INDEX_KINDS:
        raise DermretrError(f"unknown index kind {show(kind)}; kinds: {', '.join(INDEX_KINDS)}")
    return kind


def check_options(alpha: Any = None, rerank: Any = 100, nlist: Any = None, nprobe: Any = None, hnsw_m: Any = 32,
                  ef_construction: Any = 200, ef_search: Any = 128, pq_m: Any = None, pq_nbits: Any = 8,
                  seed: Any = 0) -> None:
    """Type and range of every index option, whatever the kind (a bad one is never silently ignored)."""
    if alpha is not None:
        check_alpha(alpha)
    for name, value in (("rerank", rerank), ("hnsw_m", hnsw_m), ("ef_construction", ef_construction),
                        ("ef_search", ef_search), ("pq_nbits", pq_nbits), ("nlist", nlist),
                        ("nprobe", nprobe), ("pq_m", pq_m)):
        if value is not None or name in ("rerank", "hnsw_m", "ef_construction", "ef_search", "pq_nbits"):
            check_count(value, name, 1, None if name == "rerank" else INT_MAX)
    check_count(seed, "seed", 0, INT_MAX)


def check_index_options(kind: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """``kind`` and the index ``options`` of :meth:`~dermretr.index.CaseIndex.build` checked; all options filled.

    >>> check_index_options("hnsw", {"ef_search": 64})["ef_search"], check_index_options("flat", {})["rerank"]
    (64, 100)
    """
    check_kind(kind)
    unknown = sorted(map(str, set(options) - set(OPTIONS)))
    if unknown:
        raise DermretrError(f"unknown index option(s) {', '.join(unknown)}; options: {', '.join(OPTIONS)}")
    full = {"alpha": None, "rerank": 100, "nlist": None, "nprobe": None, "hnsw_m": 32, "ef_construction": 200,
            "ef_search": 128, "pq_m": None, "pq_nbits": 8, "seed": 0, **options}
    check_options(**full)
    full["rerank"] = check_count(full["rerank"], "rerank")
    return full


def fit_nlist(n: int, nlist: int | None, stacklevel: int = 2) -> int:
    """The IVF list count: ``sqrt(n)`` by default, shrunk (with a warning) to what k-means can train on ``n``."""
    asked = nlist is not None
    nlist = int(np.clip(round(math.sqrt(n)), 1, 65536)) if nlist is None else as_int(nlist, "nlist")
    if nlist < 1:
        raise DermretrError(f"nlist must be at least 1, got {nlist}")
    most = max(1, n // MIN_POINTS_PER_LIST)
    if nlist > most:
        warnings.warn(
            f"IVF index on {n} cases: using nlist={most} lists instead of {nlist}{' (asked)' if asked else ''}, "
            f"since k-means needs about {MIN_POINTS_PER_LIST} cases per list; at this size kind='flat' is "
            "exact and fast", IndexWarning, stacklevel=stacklevel)
        nlist = most
    return nlist


def fit_pq(n: int, d: int, pq_m: int | None, pq_nbits: int, stacklevel: int = 2) -> tuple[int, int]:
    """PQ sub-quantizers (dividing ``d``) and bits per code, shrunk (with a warning) to what ``n`` can train."""
    if pq_m is None:
        pq_m = next((m for m in (64, 48, 32, 16, 8, 4, 2, 1) if d % m == 0 and d // m >= 4), 1)
    pq_m, pq_nbits = as_int(pq_m, "pq_m"), as_int(pq_nbits, "pq_nbits")
    if pq_m < 1 or d % pq_m:
        raise DermretrError(f"pq_m={pq_m} must divide the vector dimension {d}")
    if not 1 <= pq_nbits <= 16:
        raise DermretrError(f"pq_nbits must be in 1..16, got {pq_nbits}")
    most = max(1, int(math.log2(max(2, n // MIN_POINTS_PER_LIST))))
    if pq_nbits > most:
        warnings.warn(f"IVF-PQ index on {n} cases: using {most}-bit codes instead of {pq_nbits} "
                      f"(training {2 ** pq_nbits} centroids needs about {MIN_POINTS_PER_LIST * 2 ** pq_nbits} "
                      "cases)", IndexWarning, stacklevel=stacklevel)
        pq_nbits = most
    return pq_m, pq_nbits


def empty_index(kind: str, n: int, d: int, *, nlist: int | None, nprobe: int | None, hnsw_m: int,
                ef_construction: int, ef_search: int, pq_m: int | None, pq_nbits: int, seed: int,
                stacklevel: int = 2) -> tuple[Any, dict[str, Any]]:
    """An empty FAISS inner-product index of ``kind`` for ``n`` vectors of dimension ``d``, and its parameters.

    IVF kinds come back untrained (:func:`train_index`); the list count and PQ codes are fitted to
    ``n`` (:func:`fit_nlist`, :func:`fit_pq`, whose warnings get ``stacklevel`` as seen from here).

    >>> index, params = empty_index("ivf", 400, 8, nlist=4, nprobe=None, hnsw_m=32, ef_construction=200,
    ...                             ef_search=128, pq_m=None, pq_nbits=8, seed=0)
    >>> index.is_trained, params
    (False, {'nlist': 4, 'nprobe': 1})
    >>> train_index(index, "ivf", np.eye(8, dtype=np.float32).repeat(50, axis=0), 400)
    >>> add_vectors(index, "ivf", np.eye(8, dtype=np.float32).repeat(50, axis=0), 400)
    >>> index.is_trained, index.ntotal
    (True, 400)
    """
    params: dict[str, Any] = {}
    metric = faiss.METRIC_INNER_PRODUCT
    index: Any  # the FAISS class depends on the kind
    if kind == "flat":
        return faiss.IndexFlatIP(d), params
    if kind == "hnsw":
        hnsw_m, ef_construction, ef_search = (as_int(v, name) for v, name in (
            (hnsw_m, "hnsw_m"), (ef_construction, "ef_construction"), (ef_search, "ef_search")))
        if min(hnsw_m, ef_construction, ef_search) < 1:
            raise DermretrError("hnsw_m, ef_construction and ef_search must be positive")
        index = faiss.IndexHNSWFlat(d, hnsw_m, metric)
        index.hnsw.efConstruction = ef_construction
        params.update(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
        return index, params
    nlist = fit_nlist(n, nlist, stacklevel + 1)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, metric)
    else:
        pq_m, pq_nbits = fit_pq(n, d, pq_m, pq_nbits, stacklevel + 1)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, pq_m, pq_nbits, metric)
        params.update(pq_m=pq_m, pq_nbits=pq_nbits)
    index.cp.seed = as_int(seed, "seed")
    index.cp.min_points_per_centroid = 1  # too few points was handled (and said) by fit_nlist / fit_pq
    if kind == "ivfpq":
        index.pq.cp.min_points_per_centroid = 1
    nprobe = max(1, nlist // 8) if nprobe is None else as_int(nprobe, "nprobe")
    if nprobe < 1:
        raise DermretrError(f"nprobe must be at least 1, got {nprobe}")
    params.update(nlist=nlist, nprobe=min(nprobe, nlist))
    return index, params


def train_index(index: Any, kind: str, sample: np.ndarray, n: int) -> None:
    """Train an IVF index of :func:`empty_index` on ``sample`` (float32 rows of the ``n`` to be added).

    A kind without training (``flat``, ``hnsw``) is left as it is.
    """
    if kind not in ("ivf", "ivfpq"):
        return
    try:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    except RuntimeError as exc:
        raise DermretrError(f"FAISS could not train the {kind} index on {n} cases ({faiss_reason(exc)}); "
                            "use kind='flat', exact and fast at this size") from None


def add_vectors(index: Any, kind: str, g: np.ndarray, n: int) -> None:
    """Add the float32 rows ``g`` (all ``n`` vectors, or the next chunk of them) to a (trained) index."""
    try:
        index.add(np.ascontiguousarray(g, dtype=np.float32))
    except RuntimeError as exc:
        raise DermretrError(f"FAISS could not add {n} vectors to the {kind} index ({faiss_reason(exc)})") from None


def new_index(g: np.ndarray, kind: str, *, nlist: int | None, nprobe: int | None, hnsw_m: int,
              ef_construction: int, ef_search: int, pq_m: int | None, pq_nbits: int, seed: int,
              stacklevel: int = 2) -> tuple[Any, dict[str, Any]]:
    """A FAISS inner-product index of ``kind`` holding the ``[n, D]`` vectors ``g``, and the parameters it used.

    ``stacklevel`` is the warnings' stack level seen from here (2: the caller of this function), for the
    warnings of :func:`fit_nlist` and :func:`fit_pq`.
    """
    n, d = g.shape
    index, params = empty_index(kind, n, d, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                                ef_construction=ef_construction, ef_search=ef_search, pq_m=pq_m, pq_nbits=pq_nbits,
                                seed=seed, stacklevel=stacklevel + 1)
    train_index(index, kind, g, n)
    add_vectors(index, kind, g, n)
    return index, params


def faiss_reason(exc: BaseException) -> str:
    """The useful part of a FAISS error ("Error in <C++ signature> at <file>:<line>: Error: 'x' failed: why")."""
    if isinstance(exc, MemoryError):
        return "it asks for more memory than there is"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", text)
    text = text.rsplit("Error: ", 1)[-1].strip()
    return text if len(text) <= 120 else text[:117] + "..."


def read_faiss(file: Path, kind: str, n: int, d: int, damaged: Callable[[str], DermretrError],
               read_error: Callable[[Path, OSError], DermretrError]) -> Any:
    """Read ``index.faiss`` after checking its header against the manifest (FAISS trusts the sizes it reads)."""
    try:
        with open(file, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise read_error(file, exc) from None
    if len(head) < 16:
        raise damaged(f"{FAISS_FILE} is truncated ({len(head)} bytes)")
    if head[:4] in _FOURCC:  # fourcc, then d (int32) and ntotal (int64), as every index header starts
        hd, hn = int.from_bytes(head[4:8], "little", signed=True), int.from_bytes(head[8:16], "little", signed=True)
        if (hd, hn) != (d, n):
            raise damaged(f"{FAISS_FILE} holds {hn} vectors of dimension {hd} but {MANIFEST} says {n} of "
                          f"dimension {d}")
    try:
        index = faiss.read_index(str(file))
    except (RuntimeError, MemoryError) as exc:
        raise damaged(f"{FAISS_FILE} cannot be read by FAISS, it is corrupt or truncated "
                      f"({faiss_reason(exc)})") from None
    want = getattr(faiss, FAISS_TYPES[kind])
    if not isinstance(index, want):
        raise damaged(f"{FAISS_FILE} holds a {type(index).__name__} but {MANIFEST} says kind {kind!r}")
    if index.ntotal != n or index.d != d:
        raise damaged(f"{FAISS_FILE} holds {index.ntotal} vectors of dimension {index.d} but {MANIFEST} says {n} of "
                      f"dimension {d}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise damaged(f"{FAISS_FILE} does not use inner-product search")
    return index


def write_faiss(index: Any, file: Path, path: Path) -> None:
    """Write a FAISS index to ``file`` (inside the index folder ``path`` being saved)."""
    try:
        faiss.write_index(index, str(file))
    except RuntimeError as exc:
        raise OutputError(f"cannot write the index {path}: FAISS could not write {FAISS_FILE} "
                          f"({faiss_reason(exc)}); check the free disk space and try again (nothing "
                          "was changed)") from None


# the faiss stubs lack the SearchParameters* constructors' keyword arguments: reach them untyped
_faiss: Any = faiss


def search_params(index: Any, kind: str, n_cand: int, ef_search: int, nprobe: int, selector: Any = None) -> Any:
    """The FAISS search parameters of a query batch: HNSW breadth, IVF lists visited, an ID selector."""
    if kind == "hnsw":
        return _faiss.SearchParametersHNSW(efSearch=max(ef_search, n_cand), sel=selector)
    if kind in ("ivf", "ivfpq"):
        return _faiss.SearchParametersIVF(nprobe=max(1, min(nprobe, index.nlist)), sel=selector)
    return _faiss.SearchParameters(sel=selector) if selector is not None else None


def first_stage(index: Any, kind: str, qg: np.ndarray, n_cand: int, ef_search: int, nprobe: int,
                allowed: np.ndarray | None) -> np.ndarray:
    """``[Q, n_cand]`` rows of the best global scores by FAISS (-1 = none), among the ``allowed`` rows only."""
    if allowed is not None:
        bitmap = np.packbits(allowed, bitorder="little")
        selector = _faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
    else:
        bitmap, selector = None, None
    _, cand = index.search(qg, n_cand, params=search_params(index, kind, n_cand, ef_search, nprobe, selector))
    del bitmap  # kept alive until the search is done
    return cand
