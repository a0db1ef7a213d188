"""An index folder written from shards, streamed: besides the FAISS index, no step holds more than a shard or a chunk.

The global and local vectors go straight into memory-mapped ``global.npy`` / ``local.npy`` of the
new index folder (``np.lib.format.open_memmap``), one shard at a time; the FAISS index is then built
from the mapped global matrix: ``flat`` and ``hnsw`` add it in chunks of :data:`ADD_ROWS` rows,
``ivf`` and ``ivfpq`` first train on a seeded sample of at most ``256 * nlist`` rows (all rows, in
order, when there are no more, so that a small archive gets the very index
:meth:`~dermretr.index.CaseIndex.from_embeddings` builds) and then add the chunks.  The folder is
the one :meth:`~dermretr.index.CaseIndex.save` writes, and :meth:`~dermretr.index.CaseIndex.open`
reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._checks import show
from .._errors import DermretrError
from ._common import GLOBAL, LOCAL, check_result_columns
from ._faiss import add_vectors, check_index_options, empty_index, train_index
from ._manifest import new_manifest
from ._store import save_folder

__all__ = ["ADD_ROWS", "TRAIN_POINTS_PER_LIST", "training_rows", "write_from_shards"]

#: Rows of the mapped global matrix added to the FAISS index at once.
ADD_ROWS = 65536
#: IVF training sample: at most this many vectors per list (FAISS's own ``max_points_per_centroid``).
TRAIN_POINTS_PER_LIST = 256


def training_rows(n: int, nlist: int, seed: int) -> slice | np.ndarray:
    """The rows an IVF index of ``nlist`` lists trains on: all when few, else a seeded sorted sample.

    >>> training_rows(1000, 8, 0)
    slice(0, 1000, None)
    >>> rows = training_rows(5000, 8, 0)
    >>> len(rows), bool((np.diff(rows) > 0).all())
    (2048, True)
    """
    most = TRAIN_POINTS_PER_LIST * nlist
    if n <= most:
        return slice(0, n)
    return np.sort(np.random.default_rng(seed).choice(n, size=most, replace=False))


def write_from_shards(path: Path, overwrite: bool, cases: pd.DataFrame, kind: str, options: Mapping[str, Any],
                      ranges: list[tuple[int, int]], read_shard: Callable[[int], tuple[np.ndarray, Any]],
                      dim: int, n_masks: int, alpha: float, model_info: Mapping, stacklevel: int = 2) -> dict:
    """Write the index folder ``path`` from shards; returns its manifest.

    Parameters
    ----------
    path : Path
        The index folder, checked with :func:`~dermretr.index.CaseIndex.check_output`.
    overwrite : bool
        Replace an index there.
    cases : DataFrame
        The validated case table (row ``i`` is vector ``i``).
    kind, options
        The FAISS index kind and the options of :func:`check_index_options`.
    ranges : list of (start, stop)
        The rows of each shard, in order, covering the case table.
    read_shard : callable
        ``read_shard(i)`` gives shard ``i``'s float32 ``(global, local or None)``.
    dim, n_masks : int
        The vectors' dimension and local vectors per case (0: none).
    alpha : float
        The model's weight of local evidence (``options["alpha"]`` overrides it; 0 without locals).
    model_info : dict
        :func:`~dermretr.index.model_info` of the model.
    stacklevel : int
        Stack level of the warnings as seen from here.
    """
    n = len(cases)
    if not ranges or ranges[0][0] != 0 or ranges[-1][1] != n or any(
            a[1] != b[0] for a, b in zip(ranges, ranges[1:])):
        raise DermretrError(f"the shards do not cover the {n} cases in order, got {show(ranges, 80)}")
    check_result_columns(cases, "the case table")
    o = check_index_options(kind, options)
    if n_masks:
        alpha = o["alpha"] if o["alpha"] is not None else alpha
    else:
        alpha = 0.0
    index, params = empty_index(kind, n, dim, nlist=o["nlist"], nprobe=o["nprobe"], hnsw_m=o["hnsw_m"],
                                ef_construction=o["ef_construction"], ef_search=o["ef_search"], pq_m=o["pq_m"],
                                pq_nbits=o["pq_nbits"], seed=o["seed"], stacklevel=stacklevel + 1)
    manifest = new_manifest(kind, n, dim, n_masks, float(alpha), {"rerank": o["rerank"], **params}, model_info)

    def write_vectors(tmp: Path) -> Any:
        g = np.lib.format.open_memmap(tmp / GLOBAL, mode="w+", dtype=np.float32, shape=(n, dim))
        local = (np.lib.format.open_memmap(tmp / LOCAL, mode="w+", dtype=np.float16, shape=(n, n_masks, dim))
                 if n_masks else None)
        for i, (start, stop) in enumerate(ranges):
            sg, sl = read_shard(i)
            g[start:stop] = sg
            if local is not None:
                with np.errstate(over="ignore"):
                    local[start:stop] = sl
                if not np.isfinite(local[start:stop]).all():
                    raise DermretrError(f"the local vectors of cases {start}..{stop - 1} are too large for float16 "
                                        "storage (|x| > 65504); index normalised vectors")
        g.flush()
        if local is not None:
            local.flush()
            del local
        if kind in ("ivf", "ivfpq"):
            train_index(index, kind, g[training_rows(n, params["nlist"], o["seed"])], n)
        for start in range(0, n, ADD_ROWS):
            add_vectors(index, kind, g[start:start + ADD_ROWS], n)
        del g
        return index

    return save_folder(path, overwrite, manifest, cases, write_vectors, stacklevel + 1)
