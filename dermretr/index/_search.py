"""Two-stage search: FAISS (or exact) candidates by global score, exact convex re-ranking, the result table.

Filters restrict both stages to the matching cases.  Excluded case ids (``exclude=``) are dropped
from each query's candidates after a first stage asked for as many more: a search excluding ``e``
cases returns what asking ``k + e`` results and dropping them would.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._checks import check_alpha, show
from .._errors import DataWarning, DermretrError
from ..models.embeddings import Embeddings
from ._common import as_array, as_int
from ._faiss import first_stage
from ._filters import filter_mask

if TYPE_CHECKING:
    from ._case_index import CaseIndex

__all__ = ["CHUNK", "EXACT_BLOCK", "check_k", "check_queries", "exclude_rows", "search_vectors",
           "candidates", "exact_candidates", "rerank", "result_frame", "check_batch", "load_query_images"]

CHUNK = 64  # queries re-ranked at once
EXACT_BLOCK = 65536  # database rows scored at once by exact (fallback) search


def check_k(k: Any, n: int) -> int:
    k = as_int(k, "k")
    if k < 1:
        raise DermretrError(f"k (results per query) must be at least 1, got {k}")
    if k > n:
        raise DermretrError(f"k={k} is larger than the database ({n} cases); use k <= {n}")
    return k


def check_queries(queries: Any, dim: int, n_masks: int,
                  has_local: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``[Q, D]`` global and ``[Q, M, D]`` local (None when either side has none) query vectors, checked."""
    if isinstance(queries, Embeddings):
        raw_g, raw_l = queries.global_vectors, queries.local_vectors
    elif isinstance(queries, Mapping) and "global" in queries:
        raw_g, raw_l = queries["global"], queries.get("local")
    else:
        raise DermretrError("queries must be a dict with a 'global' array (as Retriever.encode_queries returns)")
    qg = as_array(raw_g, "queries['global']")
    if qg.ndim == 1:
        qg = qg[None]
    if qg.ndim != 2 or qg.shape[1] != dim:
        raise DermretrError(f"query vectors have shape {qg.shape} but the index holds {dim}-dimensional vectors "
                            "(was it built with another model?)")
    if qg.shape[0] == 0:
        raise DermretrError("queries['global'] holds no query vector: give at least one")
    if not np.isfinite(qg).all():
        raise DermretrError("query vectors hold NaN or infinite values")
    if raw_l is None or not has_local:
        return np.ascontiguousarray(qg), None
    ql = as_array(raw_l, "queries['local']")
    if ql.ndim == 2:
        ql = ql[None]
    want = (qg.shape[0], n_masks, dim)
    if ql.shape != want:
        raise DermretrError(f"query local vectors have shape {ql.shape}, expected {want} "
                            "(was the index built with another model?)")
    if not np.isfinite(ql).all():
        raise DermretrError("query local vectors hold NaN or infinite values")
    return np.ascontiguousarray(qg), np.ascontiguousarray(ql)


def exclude_rows(exclude: Any, cases: pd.DataFrame, n_queries: int) -> list[np.ndarray] | None:
    """The rows each query must not return: ``exclude`` resolved against the case ids (None: none excluded).

    ``exclude`` is a case id or a set of case ids (excluded from every query's results), or a
    sequence (list, tuple, array, Series) with one entry per query: a case id, a collection of
    case ids, or None.  Ids that are not in the index are ignored (a reference may come from
    outside the database).
    """
    if exclude is None:
        return None
    known = pd.Index(cases["case_id"].astype(str))

    def rows(ids: Any, where: str) -> np.ndarray:
        if ids is None:
            return np.zeros(0, np.int64)
        if isinstance(ids, str):
            ids = [ids]
        elif isinstance(ids, (bytes, Mapping)) or not isinstance(ids, Iterable):
            raise DermretrError(f"{where} must be a case id or a collection of case ids, got {show(ids)}")
        ids = list(ids)
        for v in ids:
            if not isinstance(v, str):
                raise DermretrError(f"{where}: case ids are strings, got {show(v)}")
        found = known.get_indexer(ids)
        return np.unique(found[found >= 0]).astype(np.int64)

    if isinstance(exclude, (str, set, frozenset)):
        shared = rows(exclude, "exclude")
        return [shared] * n_queries
    if isinstance(exclude, (Sequence, np.ndarray, pd.Series, pd.Index)) and not isinstance(exclude, bytes):
        entries = list(exclude)
        if len(entries) != n_queries:
            raise DermretrError(f"exclude has {len(entries)} entries for {n_queries} queries: give one entry per "
                                "query (a case id, a list of case ids or None), or a set of case ids to exclude "
                                "from every query")
        return [rows(e, f"exclude entry {i}") for i, e in enumerate(entries)]
    raise DermretrError(f"exclude must be a case id, a set of case ids (excluded from every query) or a list with "
                        f"one entry per query, got {show(exclude)}")


def exact_candidates(global_vectors: np.ndarray, qg: np.ndarray, n_cand: int, ids: np.ndarray | None) -> np.ndarray:
    """Top ``n_cand`` rows of ``ids`` (None = all rows) by exact global score, per query, in row blocks."""
    total = len(global_vectors) if ids is None else len(ids)
    best_s = np.full((len(qg), 0), -np.inf, np.float32)
    best_i = np.zeros((len(qg), 0), np.int64)
    for a in range(0, total, EXACT_BLOCK):
        b = min(total, a + EXACT_BLOCK)
        rows = np.arange(a, b) if ids is None else ids[a:b]
        block = global_vectors[a:b] if ids is None else global_vectors[rows]
        s = np.concatenate([best_s, qg @ np.asarray(block).T], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(rows, (len(qg), len(rows)))], axis=1)
        if s.shape[1] > n_cand:
            top = np.argpartition(-s, n_cand - 1, axis=1)[:, :n_cand]
            s, i = np.take_along_axis(s, top, axis=1), np.take_along_axis(i, top, axis=1)
        best_s, best_i = s, i
    return np.ascontiguousarray(best_i)


def _drop(cand: np.ndarray, drop: list[np.ndarray] | None, which: np.ndarray | None = None) -> np.ndarray:
    """``cand`` with the excluded rows of each query (``drop[q]``) set to -1; ``which``: the queries of ``cand``."""
    if drop is None:
        return cand
    queries = range(len(cand)) if which is None else which
    if len(drop) and all(d is drop[0] for d in drop):  # one exclusion shared by every query
        cand[np.isin(cand, drop[0])] = -1
        return cand
    for row, q in enumerate(queries):
        if len(drop[q]):
            cand[row, np.isin(cand[row], drop[q])] = -1
    return cand


def candidates(index: CaseIndex, qg: np.ndarray, n_cand: int, enough: int | np.ndarray,
               allowed: np.ndarray | None = None, drop: list[np.ndarray] | None = None) -> np.ndarray:
    """``[Q, n_cand]`` candidate rows (-1 = none or excluded) from the first stage, at least ``enough[q]`` each."""
    ids_ok = None if allowed is None else np.flatnonzero(allowed)
    if ids_ok is not None and len(ids_ok) <= max(n_cand, index.exact_filter_below):
        # few matches: scoring them all exactly is cheaper (and surer) than a filtered graph/list search
        return _drop(exact_candidates(index.global_vectors, qg, n_cand, ids_ok), drop)
    cand = first_stage(index.faiss_index, index.kind, qg, n_cand, index.ef_search, index.nprobe, allowed)
    cand = _drop(cand, drop)
    # an approximate index may return fewer than k candidates (sparse filter, small nprobe): fall back to exact
    short = np.flatnonzero((cand >= 0).sum(axis=1) < enough)
    if len(short):
        cand[short] = _drop(exact_candidates(index.global_vectors, qg[short], n_cand, ids_ok), drop, short)
    return cand


def rerank(global_vectors: np.ndarray, local_vectors: np.ndarray | None, qg: np.ndarray, ql: np.ndarray | None,
           cand: np.ndarray, alpha: float, k: int) -> tuple[np.ndarray, ...]:
    """Exact convex scores of the candidates: the best ``k`` per query, ``(rows, s, s_global, s_local, valid)``."""
    q, n_cand = cand.shape
    out_ids = np.empty((q, k), np.int64)
    out_valid = np.empty((q, k), bool)
    out = [np.empty((q, k), np.float64) for _ in range(3)]
    for a in range(0, q, CHUNK):
        b = min(q, a + CHUNK)
        c = cand[a:b]
        valid = c >= 0
        rows = np.where(valid, c, 0)
        flat = rows.ravel()
        order = np.argsort(flat, kind="stable")  # sorted reads are kinder to memory-mapped files
        g = np.empty((flat.size, qg.shape[1]), np.float32)
        g[order] = global_vectors[flat[order]]
        sg = np.einsum("qnd,qd->qn", g.reshape(b - a, n_cand, -1), qg[a:b])
        if ql is not None and local_vectors is not None:
            loc = np.empty((flat.size, *local_vectors.shape[1:]), np.float32)
            loc[order] = local_vectors[flat[order]]
            sl = np.einsum("qnmd,qmd->qn", loc.reshape(b - a, n_cand, *local_vectors.shape[1:]), ql[a:b])
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
        out_valid[a:b] = pick(valid, best, axis=1)
        for dst, src in zip(out, (s, sg, sl)):
            dst[a:b] = pick(src, best, axis=1)
    return out_ids, out[0], out[1], out[2], out_valid


def result_frame(cases: pd.DataFrame, ids: np.ndarray, s: np.ndarray, sg: np.ndarray, sl: np.ndarray,
                 valid: np.ndarray | None = None) -> pd.DataFrame:
    """``query, rank, case_id, score, s_global, s_local`` and the case columns; only the ``valid`` entries."""
    q, k = ids.shape
    if valid is None or valid.all():
        query, rank = np.repeat(np.arange(q), k), np.tile(np.arange(1, k + 1), q)
        flat, s, sg, sl = ids.ravel(), s.ravel(), sg.ravel(), sl.ravel()
    else:  # fewer results for some queries (their exclusions left fewer than k cases): valid entries come first
        query, position = np.nonzero(valid)
        rank = position + 1
        flat, s, sg, sl = ids[valid], s[valid], sg[valid], sl[valid]
    table = cases.iloc[flat].reset_index(drop=True)
    front = pd.DataFrame({
        "query": query.astype(np.int64),
        "rank": rank.astype(np.int64),
        "case_id": table["case_id"],
        "score": s.astype(np.float64),
        "s_global": sg.astype(np.float64),
        "s_local": sl.astype(np.float64),
    })
    return pd.concat([front, table.drop(columns="case_id")], axis=1)


def search_vectors(index: CaseIndex, queries: Any, k: Any, alpha: Any, filters: Mapping[str, Any] | None,
                   exclude: Any, stacklevel: int = 2) -> pd.DataFrame:
    """:meth:`CaseIndex.search_vectors`; ``stacklevel`` of its warnings as seen from here."""
    qg, ql = check_queries(queries, index.manifest["dim"], index.manifest["n_masks"], index.local_vectors is not None)
    k = check_k(k, len(index))
    a = index.alpha if alpha is None else check_alpha(alpha)
    allowed = filter_mask(index.cases, filters)
    drop = exclude_rows(exclude, index.cases, len(qg))
    filters = None if allowed is None else dict(filters or {})
    n_ok = len(index) if allowed is None else int(allowed.sum())
    if n_ok == 0:
        warnings.warn(f"no case matches the filters {filters}; the result is empty", DataWarning,
                      stacklevel=stacklevel)
        none = np.zeros((qg.shape[0], 0))
        return result_frame(index.cases, none.astype(np.int64), none, none, none)
    if n_ok < k:
        warnings.warn(f"only {n_ok} cases match the filters {filters}; returning {n_ok} per query "
                      f"instead of k={k}", DataWarning, stacklevel=stacklevel)
        k = n_ok
    if drop is not None and allowed is not None:  # an excluded case the filters drop anyway takes no one's place
        if all(d is drop[0] for d in drop):
            drop = [drop[0][allowed[drop[0]]]] * len(drop)
        else:
            drop = [d[allowed[d]] for d in drop]
    n_drop = np.zeros(len(qg), np.int64) if drop is None else np.array([len(d) for d in drop], np.int64)
    enough = np.minimum(k, n_ok - n_drop)
    if (enough < k).any():
        few = np.flatnonzero(enough < k)
        warnings.warn(f"{len(few)} quer{'y' if len(few) == 1 else 'ies'} (query {few[0]}"
                      f"{' ...' if len(few) > 1 else ''}) keep fewer than k={k} cases once the excluded ones are "
                      f"dropped (as few as {int(enough.min())}); they return fewer results", DataWarning,
                      stacklevel=stacklevel)
    n_cand = min(max(index.rerank, k + int(n_drop.max(initial=0))), n_ok)
    cand = candidates(index, qg, n_cand, enough, allowed, drop)
    ids, s, sg, sl, valid = rerank(index.global_vectors, index.local_vectors, qg, ql, cand, a, k)
    return result_frame(index.cases, ids, s, sg, sl, valid)


def check_batch(images: Any, texts: Any) -> tuple[list, list[str]]:
    """The query images and texts of :meth:`CaseIndex.search_batch` as two lists of one entry per query."""
    from PIL import Image

    if isinstance(images, (str, bytes, os.PathLike, Image.Image)) or not isinstance(images, Iterable):
        raise DermretrError(f"images must be a list of query images (paths or PIL images), got {show(images)}; "
                            "for a single query use search(image, text)")
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise DermretrError(f"texts must be a list of query texts (one str per image), got {show(texts)}; "
                            "for a single query use search(image, text)")
    images, texts = list(images), list(texts)
    for i, t in enumerate(texts):
        if t is not None and not isinstance(t, str):
            raise DermretrError(f"query text {i} must be a str, got {show(t)}")
    texts = ["" if t is None else t for t in texts]
    if len(images) != len(texts):
        raise DermretrError(f"{len(images)} query images but {len(texts)} texts: give one text per image")
    if not images:
        raise DermretrError("no query: give at least one image and text")
    return images, texts


def load_query_images(images: list) -> list:
    """The query images as RGB PIL images (paths are read), each checked; a DermretrError says which is bad."""
    from PIL import Image

    from ..data.images import load_rgb

    loaded = []
    for img in images:
        if isinstance(img, Image.Image):
            loaded.append(img.convert("RGB"))
            continue
        if isinstance(img, np.ndarray):
            raise DermretrError(f"query image must be a file path or a PIL image, got an array of shape "
                                f"{img.shape}; convert it with PIL.Image.fromarray(array)")
        if isinstance(img, bool) or not isinstance(img, (str, os.PathLike)):
            raise DermretrError(f"query image must be a file path or a PIL image, got {show(img)}")
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
    return loaded
