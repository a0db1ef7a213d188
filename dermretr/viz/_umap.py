"""UMAP maps of the database: a cached, deterministic 2-D map of the case embeddings, with queries placed on it."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .._errors import DermretrError

__all__ = ["MapReducer", "fit_map", "clear_map_cache", "umap_map", "COLOR_BY"]

#: Columns :func:`umap_map` is meant to colour by (any case-table column works).
COLOR_BY: tuple[str, ...] = ("diagnosis", "diagnosis_group", "fitzpatrick", "split")


def _as_embeddings(embeddings: Any, what: str = "embeddings") -> np.ndarray:
    if hasattr(embeddings, "global_vectors"):  # a CaseIndex or an Embeddings record
        embeddings = embeddings.global_vectors
    elif isinstance(embeddings, Mapping):
        if "global" not in embeddings:
            raise DermretrError(f"{what}: a dict must hold a 'global' array (as Retriever.encode_targets returns)")
        embeddings = embeddings["global"]
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DermretrError(f"{what} must be a non-empty [n, D] array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DermretrError(f"{what} hold NaN or infinite values")
    return np.ascontiguousarray(x)


def _fingerprint(x: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str((x.shape, x.dtype.str)).encode())
    h.update(x.tobytes())
    return h.hexdigest()


class MapReducer:
    """A fitted 2-D UMAP of a set of embeddings that can place new points on the same map.

    Create with :func:`fit_map`.

    Attributes
    ----------
    umap : umap.UMAP
        The fitted reducer.
    embedding : ndarray
        ``[n, 2]`` float32 map coordinates of the fitted points.
    key : str
        Fingerprint of the fitted embeddings and parameters (the cache key).
    seed : int
        Random state (same seed, same data, same parameters: same map).
    params : dict
        UMAP parameters used.
    """

    def __init__(self, reducer, embedding: np.ndarray, key: str, seed: int, params: dict, dim: int):
        self.umap = reducer
        self.embedding = embedding
        self.key = key
        self.seed = seed
        self.params = params
        self.dim = dim

    def __len__(self) -> int:
        return int(self.embedding.shape[0])

    def __repr__(self) -> str:
        return f"MapReducer(n={len(self)}, dim={self.dim}, seed={self.seed}, params={self.params})"

    def transform(self, embeddings: Any) -> np.ndarray:
        """Map coordinates ``[m, 2]`` of new embeddings (queries, new cases) on this map."""
        x = _as_embeddings(embeddings, "new embeddings")
        if x.shape[1] != self.dim:
            raise DermretrError(f"new embeddings have dimension {x.shape[1]}, the map was fitted on dimension "
                                f"{self.dim}: use vectors of the same model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self.umap.transform(x), dtype=np.float32)


_MAP_CACHE: OrderedDict[str, MapReducer] = OrderedDict()
_MAP_CACHE_SIZE = 4


def clear_map_cache() -> None:
    """Forget the fitted maps :func:`fit_map` keeps in memory."""
    _MAP_CACHE.clear()


def fit_map(embeddings: Any, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
            n_epochs: int | None = None, cache: bool = True) -> MapReducer:
    """Fit (or fetch from the in-memory cache) a deterministic 2-D UMAP of ``embeddings``.

    Parameters
    ----------
    embeddings : array, dict or CaseIndex
        ``[n, D]`` vectors; a dict with ``"global"`` (``encode_targets``) or a
        :class:`~dermretr.index.CaseIndex` (its global vectors).
    seed : int
        UMAP's ``random_state``: the same seed, data and parameters give the same map.
    n_neighbors, min_dist, metric, n_epochs
        UMAP parameters (``n_neighbors`` is capped at ``n - 1``).
    cache : bool
        Reuse a map fitted on the same bytes with the same parameters (the
        last four maps are kept in memory).

    Returns
    -------
    MapReducer

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    >>> m = fit_map(x, seed=0, n_epochs=50)
    >>> m.embedding.shape, fit_map(x, seed=0, n_epochs=50) is m, m.transform(x[:3]).shape
    ((60, 2), True, (3, 2))
    """
    x = _as_embeddings(embeddings)
    n = x.shape[0]
    if n < 4:
        raise DermretrError(f"a map needs at least 4 points, got {n}")
    if int(n_neighbors) < 2:
        raise DermretrError(f"n_neighbors must be at least 2, got {n_neighbors}")
    params = {"n_neighbors": int(min(int(n_neighbors), n - 1)), "min_dist": float(min_dist), "metric": str(metric),
              "n_epochs": None if n_epochs is None else int(n_epochs)}
    key = _fingerprint(x) + "|" + repr(sorted(params.items())) + f"|seed={int(seed)}"
    if cache and key in _MAP_CACHE:
        _MAP_CACHE.move_to_end(key)
        return _MAP_CACHE[key]
    import umap

    reducer = umap.UMAP(n_components=2, random_state=int(seed), init="spectral" if n > 20 else "random",
                        **{k: v for k, v in params.items() if v is not None})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", small-data notes
        try:
            coords = reducer.fit_transform(x)
        except ValueError as exc:
            raise DermretrError(f"UMAP could not embed these {n} points ({exc}); try another metric or more "
                                "points") from None
    result = MapReducer(reducer, np.asarray(coords, dtype=np.float32), key, int(seed), params, x.shape[1])
    if cache:
        _MAP_CACHE[key] = result
        while len(_MAP_CACHE) > _MAP_CACHE_SIZE:
            _MAP_CACHE.popitem(last=False)
    return result


_FITZPATRICK_COLORS = ("#f2c28c", "#dba06b", "#b97d4b", "#8e5a34", "#5e3b22", "#2e1c10")
_SPLIT_COLORS = {"train": "#1f77b4", "valid": "#ff7f0e", "val": "#ff7f0e", "test": "#2ca02c"}
_UNKNOWN = "unknown"


def _labels(values: pd.Series) -> np.ndarray:
    def one(v):
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return _UNKNOWN
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return np.asarray([one(v) for v in values.astype(object)], dtype=object)


def _palette(color_by: str, categories: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    colors: dict[str, Any] = {}
    tab = colormaps["tab20"] if len(categories) > 10 else colormaps["tab10"]
    others = [c for c in categories if c != _UNKNOWN]
    for i, c in enumerate(others):
        if color_by == "fitzpatrick" and c in {"1", "2", "3", "4", "5", "6"}:
            colors[c] = _FITZPATRICK_COLORS[int(c) - 1]
        elif color_by == "split" and c in _SPLIT_COLORS:
            colors[c] = _SPLIT_COLORS[c]
        else:
            colors[c] = tab(i % tab.N)
    colors[_UNKNOWN] = "#b0b0b0"
    return colors


def _positions(ids: Iterable[Any], lookup: dict[str, int], what: str) -> list[int]:
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in lookup]
    if missing:
        raise DermretrError(f"{what}: case id{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing[:5]))} "
                            f"{'are' if len(missing) > 1 else 'is'} not among the mapped cases")
    return [lookup[i] for i in ids]


def _result_groups(results: Any, n_queries: int) -> list[list[Any]]:
    if isinstance(results, pd.DataFrame):
        if "case_id" not in results.columns:
            raise DermretrError(f"results table has no case_id column (columns: {list(results.columns)})")
        if "query" in results.columns:
            groups = [results.loc[results["query"] == q, "case_id"].tolist() for q in range(n_queries)]
        else:
            groups = [results["case_id"].tolist()]
    else:
        groups = [list(g) for g in results]
        if groups and not any(isinstance(g, (list, tuple)) for g in results):
            groups = [list(results)]
    if len(groups) != n_queries:
        raise DermretrError(f"results for {len(groups)} queries but {n_queries} query vectors: give one list of "
                            "results (or one 'query' number) per query")
    return groups


def umap_map(embeddings: Any, cases: pd.DataFrame | None = None, color_by: str = "diagnosis",
             highlight: Iterable[Any] | np.ndarray | None = None, reducer: MapReducer | None = None, seed: int = 0,
             queries: Any = None, results: Any = None, title: str | None = None, max_legend: int = 20,
             **umap_params: Any) -> Figure:
    """The database at a glance: a 2-D UMAP of the case embeddings, coloured by a case column.

    Parameters
    ----------
    embeddings : array, dict or CaseIndex
        ``[n, D]`` case vectors (a :class:`~dermretr.index.CaseIndex` brings its cases).
    cases : DataFrame, optional
        The case table, row ``i`` = vector ``i`` (default: the index's cases).
    color_by : str
        ``"diagnosis"``, ``"diagnosis_group"``, ``"fitzpatrick"``, ``"split"``
        (or any other column); missing values are shown as "unknown".
    highlight : case ids or boolean array, optional
        Cases drawn larger with a black ring.
    reducer : MapReducer, optional
        A fitted map (:func:`fit_map`); fitted (and cached) here when None.
        When fitted on other vectors, these are placed with its ``transform``.
    seed : int
        Seed of the map when it is fitted here.
    queries : array or dict, optional
        ``[q, D]`` composed query vectors (``encode_queries``) placed on the map as stars.
    results : DataFrame or lists of case ids, optional
        Each query's results (a ``search``/``search_batch`` table, or one list
        of case ids per query), joined to their query by lines.
    title : str, optional
        Figure title.
    max_legend : int
        At most this many categories named in the legend (the most frequent).
    **umap_params
        ``n_neighbors``, ``min_dist``, ``metric``, ``n_epochs`` for :func:`fit_map`.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(40, 8)).astype(np.float32)
    >>> cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(40)], "fitzpatrick": rng.integers(1, 7, 40)})
    >>> fig = umap_map(x, cases, color_by="fitzpatrick", highlight=["c1", "c2"], n_epochs=50)
    >>> len(fig.axes), sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    (1, 42)
    """
    if cases is None:
        cases = getattr(embeddings, "cases", None)
        if cases is None:
            raise DermretrError("give the case table (cases=...) that goes with the embeddings")
    if not isinstance(cases, pd.DataFrame):
        raise DermretrError(f"cases must be a DataFrame (the case table), got {type(cases).__name__}")
    x = _as_embeddings(embeddings)
    if len(cases) != len(x):
        raise DermretrError(f"{len(x)} embeddings but {len(cases)} cases: give one case-table row per vector")
    if color_by not in cases.columns:
        raise DermretrError(f"cannot colour by {color_by!r}: not a column of the case table (try one of "
                            f"{', '.join(c for c in COLOR_BY if c in cases.columns) or list(cases.columns)})")
    if reducer is None:
        reducer = fit_map(x, seed=seed, **umap_params)
        coords = reducer.embedding
    elif not isinstance(reducer, MapReducer):
        raise DermretrError(f"reducer must be a MapReducer from fit_map(), got {type(reducer).__name__}")
    elif reducer.key.split("|")[0] == _fingerprint(x):
        coords = reducer.embedding
    else:
        coords = reducer.transform(x)
    n = len(x)
    labels = _labels(cases[color_by])
    counts = pd.Series(labels).value_counts()
    if color_by == "fitzpatrick" or all(c == _UNKNOWN or c.lstrip("-").isdigit() for c in counts.index):
        order = sorted(counts.index, key=lambda c: (c == _UNKNOWN, int(c) if c != _UNKNOWN else 0))
    else:
        order = sorted(counts.index, key=lambda c: (c == _UNKNOWN, -counts[c], c))
    colors = _palette(color_by, order)
    size = float(np.clip(3000.0 / max(n, 1), 1.5, 40.0))
    fig = Figure(figsize=(7.8, 6.2), layout="constrained")
    ax = fig.subplots()
    named = set(order[:max_legend]) | {_UNKNOWN}
    for cat in order:
        sel = labels == cat
        ax.scatter(coords[sel, 0], coords[sel, 1], s=size, color=colors[cat], linewidths=0, alpha=0.85,
                   label=f"{cat} ({int(counts[cat])})" if cat in named else None, rasterized=n > 2000)
    ids = cases["case_id"].astype(str).tolist() if "case_id" in cases.columns else [str(i) for i in range(n)]
    lookup = {c: i for i, c in enumerate(ids)}
    if highlight is not None:
        h = np.asarray(list(highlight) if not isinstance(highlight, np.ndarray) else highlight)
        if h.dtype == bool:
            if h.shape != (n,):
                raise DermretrError(f"a boolean highlight needs one value per case ({n}), got {h.shape}")
            rows = np.flatnonzero(h)
        else:
            rows = np.asarray(_positions(h.tolist(), lookup, "highlight"), dtype=int)
        ax.scatter(coords[rows, 0], coords[rows, 1], s=max(4 * size, 30), facecolors="none", edgecolors="black",
                   linewidths=1.2, label=f"highlighted ({len(rows)})")
    if queries is not None:
        q = _as_embeddings(queries, "queries")
        q_xy = reducer.transform(q)
        groups = _result_groups(results, len(q)) if results is not None else [[] for _ in range(len(q))]
        from matplotlib import colormaps

        qcolors = colormaps["Dark2"]
        for i, (xy, group) in enumerate(zip(q_xy, groups)):
            color = qcolors(i % qcolors.N)
            hits = _positions(group, lookup, f"results of query {i}")
            for r in hits:
                ax.plot([xy[0], coords[r, 0]], [xy[1], coords[r, 1]], color=color, lw=0.8, alpha=0.7, zorder=3)
            if hits:
                ax.scatter(coords[hits, 0], coords[hits, 1], s=max(5 * size, 40), facecolors="none",
                           edgecolors=[color], linewidths=1.5, zorder=4)
            ax.scatter([xy[0]], [xy[1]], marker="*", s=260, color=color, edgecolors="black", linewidths=0.8,
                       zorder=5, label=f"query {i + 1}" + (f" + {len(hits)} results" if hits else ""))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.legend(fontsize=7, markerscale=max(1.0, 6 / math.sqrt(size)), loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False, title=color_by, title_fontsize=8)
    ax.set_title(title or f"{n} cases coloured by {color_by} (UMAP, seed {reducer.seed})", fontsize=10)
    return fig
