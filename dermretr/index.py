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

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from . import __version__
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
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DermretrError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise DermretrError(f"alpha (the weight of local evidence) must be a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= a <= 1.0 or math.isnan(a):
        raise DermretrError(f"alpha (the weight of local evidence) must be in [0, 1], got {alpha}")
    return a


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


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace folder ``target`` by folder ``tmp``; ``target`` is never missing for longer than two renames."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        old.rmdir()
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _is_index_dir(path: Path) -> bool:
    return (path / _MANIFEST).is_file() or (path / _FAISS).is_file()


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
        params = manifest.get("params", {})
        self.rerank = int(params.get("rerank", 100))
        self.ef_search = int(params.get("ef_search", 128))
        self.nprobe = int(params.get("nprobe", 1))
        self.exact_filter_below = 4096

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
        cases = validate_cases(cases)
        if len(cases) == 0:
            raise DermretrError("the case table is empty: nothing to index")
        # stored absolute, so that results point at the images from any working directory
        cases["image_path"] = cases["image_path"].map(lambda p: str(Path(p).expanduser().absolute())).astype("string")
        info = model_info(retriever, checkpoint)
        targets = retriever.encode_targets(cases["image_path"].tolist(), batch_size=batch_size, progress=progress)
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
        if kind not in INDEX_KINDS:
            raise DermretrError(f"unknown index kind {kind!r}; kinds: {', '.join(INDEX_KINDS)}")
        cases = validate_cases(cases)
        if not isinstance(targets, Mapping) or "global" not in targets:
            raise DermretrError("targets must be a dict with a 'global' array (as Retriever.encode_targets returns)")
        g = np.ascontiguousarray(np.asarray(targets["global"]), dtype=np.float32)
        if g.ndim != 2 or g.shape[0] == 0 or g.shape[1] == 0:
            raise DermretrError(f"targets['global'] must be a non-empty [n, D] array, got shape {g.shape}")
        n, d = g.shape
        if len(cases) != n:
            raise DermretrError(f"{n} target vectors but {len(cases)} cases: give one case-table row per vector")
        if not np.isfinite(g).all():
            raise DermretrError("targets['global'] holds NaN or infinite values")
        local = targets.get("local")
        if local is not None:
            local = np.asarray(local)
            if local.ndim != 3 or local.shape[0] != n or local.shape[2] != d:
                raise DermretrError(f"targets['local'] must be [n={n}, M, D={d}], got shape {local.shape}")
            if not np.isfinite(local).all():
                raise DermretrError("targets['local'] holds NaN or infinite values")
            local = np.ascontiguousarray(local, dtype=np.float16)
        if alpha is None:
            alpha = targets.get("alpha", 0.0) if local is not None else 0.0
        alpha = _check_alpha(alpha) if local is not None else 0.0
        rerank = _as_int(rerank, "rerank")
        if rerank < 1:
            raise DermretrError(f"rerank must be at least 1, got {rerank}")

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
            index.cp.seed = int(seed)
            index.cp.min_points_per_centroid = 1  # too few points was handled (and said) by _fit_nlist / _fit_pq
            if kind == "ivfpq":
                index.pq.cp.min_points_per_centroid = 1
            index.train(g)
            nprobe = max(1, nlist // 8) if nprobe is None else _as_int(nprobe, "nprobe")
            if nprobe < 1:
                raise DermretrError(f"nprobe must be at least 1, got {nprobe}")
            params.update(nlist=nlist, nprobe=min(nprobe, nlist))
        index.add(g)

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

        images = list(images)
        texts = ["" if t is None else str(t) for t in texts]
        if len(images) != len(texts):
            raise DermretrError(f"{len(images)} query images but {len(texts)} texts: give one text per image")
        k = self._check_k(k)
        if alpha is not None:
            _check_alpha(alpha)
        self._allowed(filters)  # bad k, alpha or filters fail before encoding
        loaded = []
        for img in images:
            if isinstance(img, Image.Image):
                loaded.append(img.convert("RGB"))
                continue
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
        n_ok = len(self) if allowed is None else int(allowed.sum())
        if n_ok == 0:
            warnings.warn(f"no case matches the filters {dict(filters)}; the result is empty", DataWarning,
                          stacklevel=2)
            none = np.zeros((qg.shape[0], 0))
            return self._frame(none.astype(np.int64), none, none, none)
        if n_ok < k:
            warnings.warn(f"only {n_ok} cases match the filters {dict(filters)}; returning {n_ok} per query "
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
        qg = np.asarray(queries["global"], dtype=np.float32)
        if qg.ndim == 1:
            qg = qg[None]
        d = self.manifest["dim"]
        if qg.ndim != 2 or qg.shape[1] != d:
            raise DermretrError(f"query vectors have shape {qg.shape} but the index holds {d}-dimensional vectors "
                                "(was it built with another model?)")
        if not np.isfinite(qg).all():
            raise DermretrError("query vectors hold NaN or infinite values")
        ql = queries.get("local")
        if ql is None or self._local is None:
            return np.ascontiguousarray(qg), None
        ql = np.asarray(ql, dtype=np.float32)
        if ql.ndim == 2:
            ql = ql[None]
        want = (qg.shape[0], self.manifest["n_masks"], d)
        if ql.shape != want:
            raise DermretrError(f"query local vectors have shape {ql.shape}, expected {want} "
                                "(was the index built with another model?)")
        return np.ascontiguousarray(qg), np.ascontiguousarray(ql)

    def _allowed(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Boolean mask of the cases passing ``filters`` (None = no filter)."""
        if filters is None or (isinstance(filters, Mapping) and not filters):
            return None
        if not isinstance(filters, Mapping):
            raise DermretrError(f"filters must be a dict column -> allowed values, got {type(filters).__name__}")
        mask = np.ones(len(self), dtype=bool)
        for column, values in filters.items():
            if column not in self.cases.columns:
                raise DermretrError(f"cannot filter on unknown column {column!r}; columns: "
                                    f"{', '.join(map(str, self.cases.columns))}")
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                values = [values]
            values = list(values)
            if not values:
                raise DermretrError(f"filter {column!r} has no allowed values")
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

        Everything is written to a new folder beside ``path`` which then
        replaces ``path``; if anything fails, ``path`` is left as it was.

        Parameters
        ----------
        path : path
            The index folder.
        overwrite : bool
            Replace an existing index there (a folder that is not an index is
            never replaced).

        Returns
        -------
        Path
        """
        path = self.check_output(path, overwrite)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            faiss.write_index(self.faiss_index, str(tmp / _FAISS))
            np.save(tmp / _GLOBAL, np.asarray(self._global, dtype=np.float32))
            if self._local is not None:
                np.save(tmp / _LOCAL, np.asarray(self._local, dtype=np.float16))
            self._write_cases(tmp / _CASES)
            manifest = dict(self.manifest)
            manifest["params"] = dict(manifest.get("params", {}), rerank=self.rerank)
            if self.kind == "hnsw":
                manifest["params"]["ef_search"] = self.ef_search
            if self.kind in ("ivf", "ivfpq"):
                manifest["params"]["nprobe"] = self.nprobe
            manifest["columns"] = {str(c): str(t) for c, t in self.cases.dtypes.items()}
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            _swap_in(tmp, path)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and not isinstance(exc, DermretrError):
                raise OutputError(f"cannot write the index {path}: {exc.strerror or exc}") from exc
            raise
        self.manifest = manifest
        return path

    @staticmethod
    def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Raise :class:`~dermretr._errors.OutputError` unless :meth:`save` may write ``path``.

        ``path`` may be missing, an empty folder, or (with ``overwrite``) an
        existing index; the absolute path is returned.
        """
        path = Path(path).expanduser().absolute()
        if path.exists():
            if not path.is_dir():
                raise OutputError(f"{path} exists and is not a folder; choose another index folder")
            if any(path.iterdir()):
                if not _is_index_dir(path):
                    raise OutputError(f"{path} exists and is not a dermretr index; choose another index folder")
                if not overwrite:
                    raise OutputError(f"{path} already holds an index; pass overwrite=True (--overwrite) to "
                                      "replace it")
        return path

    def _write_cases(self, file: Path) -> None:
        self.cases.to_csv(file, index=False, na_rep=_NA)

    @classmethod
    def read_manifest(cls, path: str | os.PathLike) -> dict:
        """The manifest of an index folder, checked for a format this version reads."""
        path = Path(path).expanduser()
        rebuild = f"rebuild it with `dermretr index --run RUN_DIR --data SPEC --out {path} --overwrite`"
        if not path.is_dir():
            raise DermretrError(f"index folder not found: {path}")
        file = path / _MANIFEST
        if not file.is_file():
            if (path / _FAISS).is_file():
                raise DermretrError(f"{path} has no {_MANIFEST}: it is an index from an older dermretr format; "
                                    f"{rebuild}")
            raise DermretrError(f"{path} is not a dermretr index (no {_MANIFEST})")
        try:
            manifest = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise DermretrError(f"cannot read {file}: {exc}; {rebuild}") from None
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if not isinstance(fmt, int):
            raise DermretrError(f"{file} has no format version: it is from an older dermretr format; {rebuild}")
        if fmt > INDEX_FORMAT:
            raise DermretrError(f"{path} was written by a newer dermretr (index format {fmt}; this version reads "
                                f"format {INDEX_FORMAT}); upgrade dermretr")
        if fmt < INDEX_FORMAT:
            raise DermretrError(f"{path} is an index of an older format ({fmt}; this version reads format "
                                f"{INDEX_FORMAT}); {rebuild}")
        missing = [key for key in ("kind", "count", "dim", "n_masks", "alpha") if key not in manifest]
        if missing or manifest["kind"] not in INDEX_KINDS:
            raise DermretrError(f"{file} is incomplete (missing {missing or 'a known kind'}); {rebuild}")
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike, retriever=None, checkpoint: str | os.PathLike | None = None,
             mmap: bool = True) -> CaseIndex:
        """Open an index folder written by :meth:`save`.

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
        path = Path(path).expanduser()
        manifest = cls.read_manifest(path)
        if retriever is not None or checkpoint is not None:
            cls._check_model(path, manifest, retriever, checkpoint)
        rebuild = f"rebuild it with `dermretr index ... --out {path} --overwrite`"
        n, d, m = int(manifest["count"]), int(manifest["dim"]), int(manifest["n_masks"])
        mode = "r" if mmap else None
        try:
            index = faiss.read_index(str(path / _FAISS))
            g = np.load(path / _GLOBAL, mmap_mode=mode, allow_pickle=False)
            local = np.load(path / _LOCAL, mmap_mode=mode, allow_pickle=False) if m else None
        except (OSError, ValueError, RuntimeError) as exc:
            raise DermretrError(f"index {path} is damaged ({str(exc).strip().splitlines()[0]}); {rebuild}") from None
        if g.shape != (n, d) or g.dtype != np.float32 or index.ntotal != n or index.d != d or (
                local is not None and (local.shape != (n, m, d) or local.dtype != np.float16)):
            raise DermretrError(f"index {path} is damaged: its files do not match {_MANIFEST} ({n} cases of "
                                f"dimension {d}); {rebuild}")
        cases = cls._read_cases(path / _CASES, manifest.get("columns", {}), rebuild)
        if len(cases) != n:
            raise DermretrError(f"index {path} is damaged: {_CASES} has {len(cases)} rows, {_MANIFEST} says {n}; "
                                f"{rebuild}")
        return cls(index, g, local, cases, manifest, retriever=retriever)

    @staticmethod
    def _read_cases(file: Path, columns: Mapping[str, str], rebuild: str) -> pd.DataFrame:
        try:
            raw = pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[_NA])
        except (OSError, ValueError) as exc:
            raise DermretrError(f"cannot read {file}: {exc}; {rebuild}") from None
        try:
            cases = validate_cases(raw)
        except DermretrError as exc:
            raise DermretrError(f"{file}: {exc}") from None
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

        path = Path(path).expanduser()
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

