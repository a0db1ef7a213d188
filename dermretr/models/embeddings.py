"""The typed embedding record of encoded queries or targets, and the convex score between two of them.

:class:`Embeddings` holds what :meth:`~dermretr.models.retriever.Retriever.encode_queries` and
:meth:`~dermretr.models.retriever.Retriever.encode_targets` return: ``[n, D]`` global vectors,
``[n, M, D]`` local vectors (or None) and the model's weight of local evidence ``alpha``.
:func:`convex_score` scores every query against every target; it takes records or the older
``{"global", "local", "alpha"}`` dicts.

Examples
--------
>>> e = Embeddings(np.eye(3, 4, dtype=np.float32), alpha=0.0)
>>> len(e), e.dim, e.n_masks
(3, 4, 0)
>>> e["global"] is e.global_vectors  # the dict keys of older code still read (transitional)
True
>>> convex_score(e, e)[0].shape
(3, 3)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .._checks import check_alpha, show
from .._errors import DermretrError

__all__ = ["Embeddings", "EmbeddingsLike", "EncodingCache", "convex_score", "DEFAULT_ALPHA"]

#: The default weight of local evidence of a retriever (and of a query dict that does not say).
DEFAULT_ALPHA = 0.6

#: The keys of the dicts encoders returned before :class:`Embeddings`, and the attribute each one names.
_KEYS = {"global": "global_vectors", "local": "local_vectors", "alpha": "alpha"}


def _check_vectors(value: Any, name: str, ndim: int, shape: str) -> None:
    if not isinstance(value, np.ndarray):
        raise DermretrError(f"Embeddings.{name} must be a numpy array {shape}, got {show(value)}")
    if value.ndim != ndim or value.dtype.kind != "f":
        raise DermretrError(f"Embeddings.{name} must be a float array {shape}, got a {value.dtype} array of shape "
                            f"{value.shape}")


def _as_float(value: Any) -> Any:
    """A numeric array-like as an array, float32 unless it already is a float array (kept as given)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value
    try:
        array = np.asarray(value)
    except Exception:  # not array-like: left for the record's own check to name
        return value
    return array.astype(np.float32) if array.dtype.kind in "biuf" else value


@dataclass(frozen=True, eq=False)  # no field-wise ==: arrays do not compare to one bool
class Embeddings:
    """Encoded queries or targets: global vectors, local vectors (or None) and the weight of local evidence.

    Parameters
    ----------
    global_vectors : ndarray
        ``[n, D]`` float (float32 from a retriever) L2-normalised vectors.
    local_vectors : ndarray or None
        ``[n, M, D]`` float vectors of the M spatial masks (``kind="full"``), or None.
    alpha : float
        The model's weight of local evidence, in [0, 1] (0 without local vectors).

    The arrays are kept as given (no copy). During the transition from the dicts the encoders
    returned before, ``emb["global"]``, ``emb["local"]``, ``emb["alpha"]``, ``emb.get(key)``,
    ``key in emb``, ``keys()``, ``items()`` and ``values()`` still read the record; new code uses
    the attributes. Note that ``len(emb)`` is the number of vectors, not of keys.

    Examples
    --------
    >>> g = np.ones((2, 3), np.float32)
    >>> Embeddings(g, np.ones((2, 4, 3), np.float32), alpha=0.6).n_masks
    4
    >>> Embeddings(g, np.ones((3, 4, 3), np.float32))
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: Embeddings.local_vectors must be [n=2, M, D=3], got shape (3, 4, 3)
    """

    global_vectors: np.ndarray
    local_vectors: np.ndarray | None = None
    alpha: float = 0.0

    def __post_init__(self) -> None:
        _check_vectors(self.global_vectors, "global_vectors", 2, "[n, D]")
        local = self.local_vectors
        if local is not None:
            _check_vectors(local, "local_vectors", 3, "[n, M, D]")
            n, d = self.global_vectors.shape
            if local.shape[0] != n or local.shape[2] != d or local.shape[1] == 0:
                raise DermretrError(f"Embeddings.local_vectors must be [n={n}, M, D={d}], got shape {local.shape}")
        object.__setattr__(self, "alpha", check_alpha(self.alpha))

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | Embeddings) -> Embeddings:
        """A record from an older ``{"global", "local", "alpha"}`` dict (``local`` and ``alpha`` optional).

        A dict without ``alpha`` (or with None) weighs local evidence :data:`DEFAULT_ALPHA` when it holds
        local vectors, as :func:`convex_score` always read such dicts, and 0 without them.  Integer arrays,
        lists and CPU tensors become float32; float arrays are kept as they are.  An :class:`Embeddings` is
        returned as it is.

        >>> g = np.zeros((1, 2), np.float32)
        >>> Embeddings.from_mapping({"global": g, "local": None}).alpha
        0.0
        >>> Embeddings.from_mapping({"global": g, "local": np.zeros((1, 3, 2), np.float32)}).alpha
        0.6
        """
        if isinstance(m, Embeddings):
            return m
        if not isinstance(m, Mapping) or "global" not in m:
            raise DermretrError(f"embeddings must be a dict with a 'global' array (as Retriever.encode_targets "
                                f"returns), got {show(m)}")
        glob, local, alpha = _as_float(m["global"]), m.get("local"), m.get("alpha")
        local = None if local is None else _as_float(local)
        if alpha is None:
            alpha = 0.0 if local is None else DEFAULT_ALPHA
        return cls(glob, local, alpha)

    def __len__(self) -> int:
        return int(self.global_vectors.shape[0])

    def __repr__(self) -> str:
        return (f"Embeddings(n={len(self)}, dim={self.dim}, n_masks={self.n_masks}, alpha={round(self.alpha, 4)}, "
                f"dtype={self.global_vectors.dtype})")

    @property
    def dim(self) -> int:
        """The vector dimension D."""
        return int(self.global_vectors.shape[1])

    @property
    def n_masks(self) -> int:
        """The number M of local vectors per item (0 without local vectors)."""
        return 0 if self.local_vectors is None else int(self.local_vectors.shape[1])

    def __getitem__(self, key: str) -> Any:
        """Transitional: ``emb["global"]``, ``emb["local"]`` or ``emb["alpha"]`` as the older dicts read."""
        try:
            return getattr(self, _KEYS[key])
        except (KeyError, TypeError):
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        """Transitional: ``dict.get`` of the older dicts."""
        return self[key] if key in _KEYS else default

    def __contains__(self, key: object) -> bool:
        return key in _KEYS

    def keys(self) -> tuple[str, ...]:
        """Transitional: the keys of the older dicts (``dict(emb)`` and ``{**emb}`` read them)."""
        return tuple(_KEYS)

    def values(self) -> tuple[Any, ...]:
        """Transitional: global vectors, local vectors and alpha."""
        return tuple(self[k] for k in _KEYS)

    def items(self) -> tuple[tuple[str, Any], ...]:
        """Transitional: ``(key, value)`` pairs as the older dicts gave them."""
        return tuple((k, self[k]) for k in _KEYS)

    def __iter__(self) -> Iterator[str]:
        """Transitional: iterates over the keys of the older dicts (not over the vectors)."""
        return iter(_KEYS)


#: What :func:`convex_score` and the index accept: a record or an older dict.
EmbeddingsLike = Union[Embeddings, Mapping[str, Any]]


def _parts(x: EmbeddingsLike) -> tuple[Any, Any, Any]:
    if isinstance(x, Embeddings):
        return x.global_vectors, x.local_vectors, x.alpha
    return x["global"], x.get("local"), x.get("alpha", DEFAULT_ALPHA)


def convex_score(queries: EmbeddingsLike, targets: EmbeddingsLike,
                 alpha: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of every query against every target: ``(s, s_global, s_local)``, each ``[Q, T]``.

    ``queries``/``targets`` are the :class:`Embeddings` of :meth:`Retriever.encode_queries` and
    :meth:`Retriever.encode_targets`, or dicts ``{"global": [n, D], "local": [n, M, D] or None,
    "alpha"}`` (a query dict without ``"alpha"`` weighs local evidence :data:`DEFAULT_ALPHA`).
    ``alpha`` overrides the queries' weight of local evidence; without local vectors ``s_local``
    is zero and the score is ``s_global`` whatever ``alpha``.

    >>> q = {"global": np.eye(2, dtype=np.float32), "local": None, "alpha": 0.0}
    >>> convex_score(q, q)[0].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    qg, ql, q_alpha = _parts(queries)
    tg, tl, _ = _parts(targets)
    s_global = qg @ tg.T
    if ql is None or tl is None:
        return s_global, s_global, np.zeros_like(s_global)
    a = check_alpha(q_alpha if alpha is None else alpha)
    s_local = np.einsum("qmd,tmd->qt", ql, tl, optimize=True) / ql.shape[1]
    return a * s_local + (1 - a) * s_global, s_global, s_local


class EncodingCache:
    """A retriever whose encodings are computed once: targets per image, queries per (image, text) pair.

    Wraps anything with ``encode_queries``/``encode_targets`` (a
    :class:`~dermretr.models.retriever.Retriever`); other attributes (``kind``,
    ``alpha``...) are the wrapped retriever's.  Searching the same cases
    several ways (validation then test galleries that share the training
    cases, a model with and without a findings match, test-time alphas)
    then encodes each image once.  Keyword arguments (batch size, progress)
    do not change an encoding, so they are not part of the key.

    >>> class Count:
    ...     calls = 0
    ...     def encode_targets(self, paths, **_):
    ...         self.calls += len(paths)
    ...         return {"global": np.array([[float(len(p)), 1.0] for p in paths]), "local": None}
    >>> model = EncodingCache(Count())
    >>> model.encode_targets(["a", "bb"]).global_vectors[:, 0].tolist()
    [1.0, 2.0]
    >>> model.encode_targets(["bb", "ccc", "a"]).global_vectors[:, 0].tolist(), model.calls
    ([2.0, 3.0, 1.0], 3)
    """

    def __init__(self, retriever: Any):
        self.retriever = retriever
        self._targets: dict[Any, tuple[np.ndarray, np.ndarray | None, float]] = {}
        self._queries: dict[Any, tuple[np.ndarray, np.ndarray | None, float]] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "retriever":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.retriever, name)

    def encode_targets(self, paths, **kwargs: Any) -> Embeddings:
        if not _are_paths(paths):  # tensors or PIL images: no key to remember them by
            return Embeddings.from_mapping(self.retriever.encode_targets(paths, **kwargs))
        keys = [os.fspath(p) for p in paths]
        return self._encoded(self._targets, keys, lambda todo: self.retriever.encode_targets(todo, **kwargs))

    def encode_queries(self, paths, texts, **kwargs: Any) -> Embeddings:
        if not _are_paths(paths) or len(paths) != len(texts):
            return Embeddings.from_mapping(self.retriever.encode_queries(paths, texts, **kwargs))
        keys = list(zip([os.fspath(p) for p in paths], [str(t) for t in texts]))
        return self._encoded(self._queries, keys, lambda todo: self.retriever.encode_queries(
            [p for p, _ in todo], [t for _, t in todo], **kwargs))

    @staticmethod
    def _encoded(cache: dict, keys: list, encode: Any) -> Embeddings:
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if todo:
            new = Embeddings.from_mapping(encode(todo))
            for i, key in enumerate(todo):
                local = None if new.local_vectors is None else new.local_vectors[i]
                cache[key] = (new.global_vectors[i], local, new.alpha)
        if not keys:
            return Embeddings.from_mapping(encode([]))
        rows = [cache[k] for k in keys]
        local = None if rows[0][1] is None else np.stack([r[1] for r in rows])
        return Embeddings(np.stack([r[0] for r in rows]), local, rows[0][2])


def _are_paths(items: Any) -> bool:
    return isinstance(items, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in items)
