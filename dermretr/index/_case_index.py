"""The :class:`CaseIndex` class: construction, search and persistence, each delegated to its module."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._checks import check_alpha, show
from .._errors import DermretrError
from ..data.cases import validate_cases
from ..data.vocab import mentioned_criteria
from ..models.embeddings import Embeddings, EmbeddingsLike
from . import _search, _store
from ._common import INT_MAX, check_count, check_path, check_result_columns, check_retriever
from ._faiss import check_index_options, check_kind, check_options, new_index
from ._filters import filter_mask
from ._manifest import new_manifest, read_manifest
from ._model import load_pretrained, pretrained_name
from ._model import model_info as _model_info
from ._vectors import check_targets, image_cases

__all__ = ["CaseIndex"]


def _setting(name: str, minimum: int, doc: str) -> property:
    """A checked integer search setting (an error names it and leaves the old value when a bad one is set)."""
    def get(self: CaseIndex) -> int:
        return self._settings[name]

    def set_(self: CaseIndex, value: Any) -> None:
        self._settings[name] = check_count(value, name, minimum, None if name == "rerank" else INT_MAX)

    return property(get, set_, doc=f"{doc} (an integer >= {minimum}; checked when set).")


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
    >>> index.search_vectors(query, k=5, exclude=["c3"])["case_id"].iloc[0] != "c3"
    True
    """

    rerank = _setting("rerank", 1, "Candidates re-scored exactly per query")
    ef_search = _setting("ef_search", 1, "HNSW search breadth")
    nprobe = _setting("nprobe", 1, "IVF lists visited per query")
    exact_filter_below = _setting("exact_filter_below", 0, "Filtered searches matching at most this many cases "
                                                           "score them all exactly")

    def __init__(self, faiss_index: Any, global_vectors: np.ndarray, local_vectors: np.ndarray | None,
                 cases: pd.DataFrame, manifest: dict, retriever: Any = None):
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

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, retriever: Any, cases: pd.DataFrame, kind: str = "flat", *,
              checkpoint: str | os.PathLike | None = None, batch_size: int = 64, progress: bool = False,
              device: str = "auto", pretrained: str | os.PathLike | None = None, **options: Any) -> CaseIndex:
        """Encode every case image with ``retriever`` and index the vectors.

        Parameters
        ----------
        retriever : Retriever or str
            The model; its :meth:`encode_targets` gives the database vectors.  A
            name or folder that :meth:`Retriever.from_pretrained` reads (such as
            the released ``"dermretr/dermsynth-tiny"``) is loaded (``device``) and
            recorded in the manifest, so that :meth:`open` and ``dermretr search``
            load it again.
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
        device : str
            Where a ``retriever`` given by name is loaded (``"auto"``: CUDA when present).
        pretrained : str or path, optional
            The name or folder a ``retriever`` given as an object was loaded from with
            ``Retriever.from_pretrained``: recorded like a name (so it is not loaded twice).
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
        # everything that can be wrong is said before the (long) encoding, and before a model is loaded
        check_index_options(kind, options)
        batch_size = check_count(batch_size, "batch_size")
        cases = image_cases(cases)
        if isinstance(retriever, (str, os.PathLike)):
            if pretrained is not None:
                raise DermretrError("pretrained= names the model of a retriever given as an object; a model given "
                                    "by name is recorded by that name")
            retriever, pretrained = load_pretrained(retriever, device, checkpoint, cases)
        elif pretrained is not None:
            if checkpoint is not None:
                raise DermretrError("give checkpoint= or pretrained=, not both: the index records one way to load "
                                    "its model again")
            pretrained = pretrained_name(pretrained)
        check_retriever(retriever)
        if checkpoint is not None:
            checkpoint = check_path(checkpoint, "checkpoint")
        info = _model_info(retriever, checkpoint, pretrained=pretrained)
        try:
            targets = retriever.encode_targets(cases["image_path"].tolist(), batch_size=batch_size,
                                               progress=bool(progress))
        except DermretrError as exc:
            raise type(exc)(f"case image: {exc}") from None
        index = cls.from_embeddings(targets, cases, kind=kind, model_info=info, **options)
        index.retriever = retriever
        return index

    @classmethod
    def from_embeddings(cls, targets: EmbeddingsLike, cases: pd.DataFrame, kind: str = "flat", *,
                        model_info: Mapping | None = None, alpha: float | None = None, rerank: int = 100,
                        nlist: int | None = None, nprobe: int | None = None, hnsw_m: int = 32,
                        ef_construction: int = 200, ef_search: int = 128, pq_m: int | None = None,
                        pq_nbits: int = 8, seed: int = 0) -> CaseIndex:
        """Index pre-computed target vectors (no model needed).

        Parameters
        ----------
        targets : Embeddings or dict
            What :meth:`Retriever.encode_targets` returns, or a dict ``{"global": [n, D],
            "local": [n, M, D] or None, "alpha": float}``.  Locals are kept as float16.
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
            Weight of local evidence; default the targets' alpha (0 without locals).
        rerank : int
            Candidates re-scored exactly per query.
        seed : int
            Seed of the IVF/PQ k-means.

        Returns
        -------
        CaseIndex
        """
        check_kind(kind)
        check_options(alpha=alpha, rerank=rerank, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                      ef_construction=ef_construction, ef_search=ef_search, pq_m=pq_m, pq_nbits=pq_nbits, seed=seed)
        if model_info is not None and not isinstance(model_info, Mapping):
            raise DermretrError(f"model_info must be a dict (see dermretr.index.model_info), got {show(model_info)}")
        cases = validate_cases(cases)
        check_result_columns(cases, "the case table")
        g, local, alpha = check_targets(targets, len(cases), alpha)
        rerank = check_count(rerank, "rerank")
        index, params = new_index(g, kind, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_construction=ef_construction,
                                  ef_search=ef_search, pq_m=pq_m, pq_nbits=pq_nbits, seed=seed, stacklevel=3)
        n, d = g.shape
        manifest = new_manifest(kind, n, d, 0 if local is None else int(local.shape[1]), alpha,
                                {"rerank": rerank, **params}, model_info)
        return cls(index, g, local, cases, manifest)

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

    def targets(self) -> Embeddings:
        """The stored vectors as :meth:`encode_targets` gives them (locals as float32)."""
        return Embeddings(np.asarray(self._global),
                          None if self._local is None else np.asarray(self._local, dtype=np.float32), self.alpha)

    def filter_mask(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Boolean mask of the cases passing ``filters`` (None: no filter); see :func:`dermretr.index.filter_mask`."""
        return filter_mask(self.cases, filters)

    # ------------------------------------------------------------------ searching

    def search(self, image: Any, text: str = "", k: int = 10, alpha: float | None = None,
               filters: Mapping[str, Any] | None = None, exclude: Any = None) -> pd.DataFrame:
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
            Column -> allowed values, e.g. ``{"fitzpatrick": [5, 6]}`` (see :func:`filter_mask`).
        exclude : str or collection of str, optional
            Case ids never returned (e.g. the reference case itself); k results still come back
            when k allowed cases remain.  Ids not in the index are ignored.

        Returns
        -------
        DataFrame
            ``rank, case_id, score, s_global, s_local`` and the case's columns,
            best first.  Empty (with a :class:`DataWarning`) when no case
            matches the filters.
        """
        if text is not None and not isinstance(text, str):
            raise DermretrError(f"text must be a str (the descriptor or modification text), got {show(text)}")
        if isinstance(image, (list, tuple)):
            raise DermretrError(f"image must be one file path or PIL image, got a {type(image).__name__}; for "
                                "several queries use search_batch(images, texts)")
        out = self.search_batch([image], [text], k=k, alpha=alpha, filters=filters,
                                exclude=None if exclude is None else [exclude])
        found = out.attrs.get("descriptors", [{}])[0]
        out = out.drop(columns="query")
        out.attrs["descriptors"] = found
        return out

    def search_batch(self, images: Sequence, texts: Sequence[str], k: int = 10, alpha: float | None = None,
                     filters: Mapping[str, Any] | None = None, batch_size: int = 64,
                     exclude: Any = None) -> pd.DataFrame:
        """Search with several (image, text) queries; one DataFrame with a ``query`` column (0-based).

        ``images`` are paths or PIL images; texts, ``filters`` as in :meth:`search`; ``exclude``
        as in :meth:`search_vectors` (``exclude=list(reference_ids)``: each query drops its own).
        """
        if self.retriever is None:
            raise DermretrError("this index has no retriever to encode queries: load it with "
                                "CaseIndex.load(dir, retriever) or search pre-computed vectors with search_vectors()")
        images, texts = _search.check_batch(images, texts)
        k = _search.check_k(k, len(self))
        if alpha is not None:
            check_alpha(alpha)
        batch_size = check_count(batch_size, "batch_size")
        self.filter_mask(filters)  # bad k, alpha, filters or exclusions fail before encoding
        _search.exclude_rows(exclude, self.cases, len(images))
        loaded = _search.load_query_images(images)
        queries = self.retriever.encode_queries(loaded, texts, batch_size=batch_size)
        out = _search.search_vectors(self, queries, k, alpha, filters, exclude, stacklevel=3)
        out.attrs["descriptors"] = [mentioned_criteria(t) for t in texts]
        return out

    def search_vectors(self, queries: EmbeddingsLike, k: int = 10, alpha: float | None = None,
                       filters: Mapping[str, Any] | None = None, exclude: Any = None) -> pd.DataFrame:
        """Two-stage search with pre-computed query vectors (:meth:`Retriever.encode_queries`).

        Parameters
        ----------
        queries : Embeddings or dict
            What :meth:`Retriever.encode_queries` returns, or ``{"global": [Q, D], "local": [Q, M, D] or None}``.
        k, alpha, filters
            As in :meth:`search`.
        exclude : optional
            Case ids never returned: a case id or a set of case ids (left out of every query's
            results), or a list (tuple, array, Series) with one entry per query, each a case id,
            a collection of case ids or None.  Ids not in the index are ignored.  A query excluding
            ``e`` cases returns what asking ``k + e`` results and dropping them would.

        Returns
        -------
        DataFrame
            ``query, rank, case_id, score, s_global, s_local`` and the case's
            columns; ``Q * k`` rows (fewer when fewer cases match the filters or remain
            after the exclusions).
        """
        return _search.search_vectors(self, queries, k, alpha, filters, exclude, stacklevel=3)

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
        return _store.save_index(self, path, overwrite, stacklevel=3)

    @staticmethod
    def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Raise :class:`~dermretr._errors.OutputError` unless :meth:`save` may write ``path``.

        ``path`` may be missing, an empty folder, or (with ``overwrite``) a
        folder holding an index and nothing else; the absolute path is
        returned (a symbolic link is followed: the index goes where it points).
        """
        return _store.check_output(path, overwrite)

    @classmethod
    def read_manifest(cls, path: str | os.PathLike) -> dict:
        """The manifest of an index folder, checked for a format this version reads and for its fields' values."""
        return read_manifest(path)

    @classmethod
    def load(cls, path: str | os.PathLike, retriever: Any = None, checkpoint: str | os.PathLike | None = None,
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
        faiss_index, g, local, cases, manifest = _store.load_parts(path, retriever, checkpoint, mmap)
        return cls(faiss_index, g, local, cases, manifest, retriever=retriever)

    @classmethod
    def open(cls, path: str | os.PathLike, device: str = "auto", mmap: bool = True) -> CaseIndex:
        """Load an index together with the retriever recorded in its manifest (as ``dermretr search`` does).

        Raises :class:`~dermretr.DermretrError` when the index records no
        checkpoint, the checkpoint file is gone, or it changed since the build.
        """
        path, retriever, ckpt = _store.open_retriever(path, device)
        return cls.load(path, retriever, checkpoint=ckpt, mmap=mmap)
