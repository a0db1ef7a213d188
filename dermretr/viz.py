"""Figures: every function returns a matplotlib Figure (never only shows it).

* :func:`contact_sheet` - example cases grouped by a column;
* :func:`umap_map` - the whole database at a glance (UMAP of the embeddings),
  coloured by diagnosis, diagnosis group, skin type or split, with queries and
  their results placed on the same map by a fitted, cached :class:`MapReducer`
  (:func:`fit_map`);
* :func:`gallery` - a query (image and text) and its top-k results with their
  scores, relevant hits framed, optionally a row of attribution overlays;
* :func:`overlay` and :func:`text_bars` - one attribution heatmap over its image,
  per-word text attributions (used by :mod:`dermretr.explain`).

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> from dermretr.data.synth import generate
>>> from dermretr.viz import contact_sheet
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=10, image_size=64,
...                 workers=1, progress=False)
>>> fig = contact_sheet(load("synthetic", root), by="diagnosis_group", per_group=2)
>>> len(fig.axes) > 0
True
"""

from __future__ import annotations

import hashlib
import math
import textwrap
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ._errors import DermretrError
from .data.images import ImageReadError, load_rgb

__all__ = ["contact_sheet", "load_thumbnail", "overlay", "text_bars", "MapReducer", "fit_map", "clear_map_cache",
           "umap_map", "gallery", "COLOR_BY"]

#: Columns :func:`umap_map` is meant to colour by (any case-table column works).
COLOR_BY: tuple[str, ...] = ("diagnosis", "diagnosis_group", "fitzpatrick", "split")


def load_thumbnail(path: str, size: int = 128) -> np.ndarray:
    """Read an image (EXIF orientation applied, any mode) as an RGB thumbnail array.

    A file that cannot be read gives a grey tile with a red cross instead of
    an error, so that one bad file does not break a whole figure.
    """
    try:
        img = load_rgb(path)
        img.thumbnail((size, size))
        return np.asarray(img)
    except ImageReadError:
        tile = np.full((size, size, 3), 200, dtype=np.uint8)
        idx = np.arange(size)
        tile[idx, idx] = tile[idx, size - 1 - idx] = (200, 0, 0)
        return tile


def contact_sheet(
    cases: pd.DataFrame,
    by: str = "diagnosis",
    per_group: int = 6,
    seed: int = 0,
    thumb: int = 128,
    max_groups: int = 25,
    title: str | None = None,
) -> Figure:
    """A grid of example cases: one row per value of ``by``, ``per_group`` images each.

    Parameters
    ----------
    cases : DataFrame
        A case table (needs ``image_path`` and the ``by`` column).
    by : str
        Column to group by (``"diagnosis"``, ``"diagnosis_group"``,
        ``"fitzpatrick"``, a criterion such as ``"blue_whitish_veil"``...).
    per_group : int
        Images per row (sampled with ``seed``).
    seed : int
        Seed of the sampling.
    thumb : int
        Thumbnail side in pixels.
    max_groups : int
        At most this many rows (the most frequent groups).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if by not in cases.columns:
        raise DermretrError(f"cannot group by {by!r}: not a column of the case table ({list(cases.columns)})")
    if len(cases) == 0:
        raise DermretrError("the case table is empty: nothing to show")
    if per_group < 1:
        raise DermretrError(f"per_group must be at least 1, got {per_group}")
    keys = cases[by].astype(object).where(cases[by].notna(), "unknown").astype(str)
    counts = keys.value_counts()
    groups = sorted(counts.index[:max_groups], key=lambda g: (g == "unknown", g))
    rng = np.random.default_rng(seed)
    ncols = per_group
    fig = Figure(figsize=(1.6 * ncols + 2.2, 1.6 * len(groups) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), ncols, squeeze=False)
    for r, group in enumerate(groups):
        idx = np.flatnonzero(keys.to_numpy() == group)
        pick = rng.choice(idx, size=min(per_group, len(idx)), replace=False)
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(pick):
                row = cases.iloc[pick[c]]
                ax.imshow(load_thumbnail(row["image_path"], thumb))
                ax.set_title(str(row["case_id"]), fontsize=6)
            if c == 0:
                ax.set_ylabel(f"{group}\n(n={counts[group]})", fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title or f"Example cases by {by}", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- attribution overlays


def _heat_style(heatmap: np.ndarray, cmap: str | None) -> tuple[str, float, float]:
    """Colour map and limits: diverging and centred on 0 for signed maps, sequential otherwise."""
    finite = heatmap[np.isfinite(heatmap)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo < 0 < hi:
        top = float(np.percentile(np.abs(finite), 99.5)) or max(abs(lo), abs(hi)) or 1.0
        return cmap or "RdBu_r", -top, top
    if hi <= 0 < -lo:
        return cmap or "Blues_r", lo, 0.0
    top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    return cmap or "inferno", min(lo, 0.0) if lo >= 0 else lo, top if top > lo else lo + 1.0


def overlay(image: np.ndarray, heatmap: np.ndarray, title: str | None = None, ax=None, alpha: float = 0.55,
            cmap: str | None = None, colorbar: bool = True) -> Figure:
    """An attribution heatmap drawn over its image.

    Signed maps use a diverging colour map centred on zero (red: raises the
    score, blue: lowers it); non-negative maps a sequential one.

    Parameters
    ----------
    image : ndarray
        ``[H, W, 3]`` uint8 (or floats in [0, 1]).
    heatmap : ndarray
        ``[h, w]``; stretched over the image when the sizes differ.
    title : str, optional
        Axes title.
    ax : matplotlib Axes, optional
        Draw into this axes (its figure is returned); default a new Figure.
    alpha : float
        Opacity of the heatmap.
    cmap : str, optional
        Colour map name.
    colorbar : bool
        Add a colour bar.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> fig = overlay(np.full((32, 32, 3), 128, np.uint8), np.random.default_rng(0).normal(size=(32, 32)))
    >>> [im.get_array().shape for im in fig.axes[0].images]
    [(32, 32, 3), (32, 32)]
    """
    img = np.asarray(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DermretrError(f"the image must be [H, W, 3], got shape {img.shape}")
    if heat.ndim != 2:
        raise DermretrError(f"the heatmap must be 2-D [H, W], got shape {heat.shape}")
    if ax is None:
        fig = Figure(figsize=(3.6, 3.2), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    h, w = img.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    ax.imshow(img, extent=extent)
    name, vmin, vmax = _heat_style(heat, cmap)
    mappable = ax.imshow(heat, cmap=name, vmin=vmin, vmax=vmax, alpha=alpha, extent=extent,
                         interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    if colorbar:
        fig.colorbar(mappable, ax=ax, shrink=0.8)
    return fig


def text_bars(words: Sequence[str], scores: Sequence[float], title: str | None = None) -> Figure:
    """Per-word attributions as horizontal bars, in reading order (red: for the match, blue: against).

    >>> fig = text_bars(["blue", "veil"], [0.2, -0.05])
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['blue', 'veil']
    """
    words = [str(w) for w in words]
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(words) != len(values):
        raise DermretrError(f"{len(words)} words but {len(values)} scores")
    if not words:
        raise DermretrError("no words to show")
    fig = Figure(figsize=(4.8, 0.9 + 0.28 * len(words)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(words))
    ax.barh(y, values, color=np.where(values >= 0, "#c0392b", "#2e6da4"))
    ax.set_yticks(y, words, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlabel("attribution", fontsize=8)
    if title:
        ax.set_title(title, fontsize=8)
    return fig


# ---------------------------------------------------------------------------- UMAP maps


def _as_embeddings(embeddings: Any, what: str = "embeddings") -> np.ndarray:
    if hasattr(embeddings, "global_vectors"):  # a CaseIndex
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
            rows = _positions(group, lookup, f"results of query {i}")
            for r in rows:
                ax.plot([xy[0], coords[r, 0]], [xy[1], coords[r, 1]], color=color, lw=0.8, alpha=0.7, zorder=3)
            if rows:
                ax.scatter(coords[rows, 0], coords[rows, 1], s=max(5 * size, 40), facecolors="none",
                           edgecolors=[color], linewidths=1.5, zorder=4)
            ax.scatter([xy[0]], [xy[1]], marker="*", s=260, color=color, edgecolors="black", linewidths=0.8,
                       zorder=5, label=f"query {i + 1}" + (f" + {len(rows)} results" if rows else ""))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.legend(fontsize=7, markerscale=max(1.0, 6 / math.sqrt(size)), loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False, title=color_by, title_fontsize=8)
    ax.set_title(title or f"{n} cases coloured by {color_by} (UMAP, seed {reducer.seed})", fontsize=10)
    return fig


# ---------------------------------------------------------------------------- result galleries


def _query_tile(image: Any, size: int) -> np.ndarray:
    if image is None:
        return np.full((size, size, 3), 235, dtype=np.uint8)
    if isinstance(image, Image.Image):
        img = image.convert("RGB").copy()
        img.thumbnail((size, size))
        return np.asarray(img)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] < 3:
            raise DermretrError(f"the query image array must be [H, W, 3], got shape {image.shape}")
        return _query_tile(Image.fromarray(np.ascontiguousarray(arr[..., :3])), size)
    if hasattr(image, "detach"):  # a normalised tensor: cannot be shown faithfully
        raise DermretrError("give the query image as a path, PIL image or RGB array (not a normalised tensor)")
    return load_thumbnail(str(image), size)


def _relevance(results: pd.DataFrame, relevant: Any, query_group: str | None) -> np.ndarray | None:
    if relevant is None:
        if query_group is None:
            return None
        if "diagnosis_group" not in results.columns:
            raise DermretrError("query_group needs a diagnosis_group column in the results")
        return (results["diagnosis_group"].astype(str) == str(query_group)).to_numpy()
    if isinstance(relevant, str):
        if relevant not in results.columns:
            raise DermretrError(f"relevant={relevant!r} is not a column of the results; give a column of "
                                "True/False or a set of relevant case ids")
        return results[relevant].fillna(False).astype(bool).to_numpy()
    ids = {str(r) for r in relevant}
    return results["case_id"].astype(str).isin(ids).to_numpy()


def _fmt(value: Any, spec: str = ".3f") -> str:
    try:
        if value is None or pd.isna(value):
            return "?"
    except (TypeError, ValueError):
        pass
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def gallery(query_image: Any, query_text: str, results: pd.DataFrame, k: int | None = None,
            relevant: Iterable[Any] | str | None = None, query_group: str | None = None,
            attributions: Sequence[Any] | Mapping[str, Any] | None = None, thumb: int = 128,
            title: str | None = None) -> Figure:
    """A query and its top-k results: thumbnails with case id, diagnosis, skin type and scores.

    Parameters
    ----------
    query_image : path, PIL image or RGB array (or None)
        The reference image of the query.
    query_text : str
        The descriptor text (wrapped under the query image).
    results : DataFrame
        A search result (:meth:`CaseIndex.search`): ``case_id`` and
        ``image_path`` are needed; ``rank``, ``diagnosis``, ``fitzpatrick``,
        ``score``, ``s_global``, ``s_local`` are shown when present.
    k : int, optional
        Results shown (default all).
    relevant : set of case ids, or a column name, optional
        Ground truth: relevant hits get a green frame, the others a grey one.
    query_group : str, optional
        Without ``relevant``: results of this diagnosis group are relevant
        (the query case's group, when known).
    attributions : sequence or dict, optional
        :class:`~dermretr.explain.Attribution` per result (in order, or keyed
        by case id): a second row of overlays.
    thumb : int
        Thumbnail side in pixels.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> res = pd.DataFrame({"rank": [1, 2], "case_id": ["a", "b"], "score": [0.9, 0.5], "s_global": [0.8, 0.4],
    ...     "s_local": [0.95, 0.6], "image_path": ["missing.jpg", "missing.jpg"], "diagnosis": "nevus",
    ...     "fitzpatrick": [2, 5]})
    >>> fig = gallery(np.zeros((32, 32, 3), np.uint8), "blue-whitish veil", res, relevant={"a"}, thumb=32)
    >>> len(fig.axes), fig.axes[1].spines["top"].get_edgecolor()[:3]
    (3, (0.17..., 0.62..., 0.17...))
    """
    if not isinstance(results, pd.DataFrame):
        raise DermretrError(f"results must be a DataFrame (a search result), got {type(results).__name__}")
    if len(results) == 0:
        raise DermretrError("no results to show (the search returned nothing)")
    missing = [c for c in ("case_id", "image_path") if c not in results.columns]
    if missing:
        raise DermretrError(f"the results lack column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                            f"(columns: {list(results.columns)}); pass a CaseIndex.search result")
    if k is None:
        k = len(results)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DermretrError(f"k must be a positive integer, got {k!r}")
    if thumb < 8:
        raise DermretrError(f"thumb must be at least 8 pixels, got {thumb}")
    res = results.iloc[: int(k)].reset_index(drop=True)
    k = len(res)
    rel = _relevance(res, relevant, query_group)
    overlays = None
    if attributions is not None:
        if isinstance(attributions, Mapping):
            overlays = [attributions.get(str(c)) for c in res["case_id"].astype(str)]
        else:
            overlays = list(attributions)
            if len(overlays) < k:
                raise DermretrError(f"{len(overlays)} attributions for {k} results: give one per result "
                                    "(or a dict keyed by case id)")
            overlays = overlays[:k]
    nrows = 2 if overlays is not None else 1
    fig = Figure(figsize=(1.75 * (k + 1) + 0.4, 2.9 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, k + 1, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    qa = axes[0, 0]
    qa.imshow(_query_tile(query_image, thumb))
    qa.set_title("query", fontsize=9, fontweight="bold")
    text = str(query_text or "").strip()
    qa.set_xlabel(textwrap.fill(text, 22) if text else "(no text: cases like this image)", fontsize=7)
    for j, row in res.iterrows():
        ax = axes[0, j + 1]
        ax.imshow(load_thumbnail(str(row["image_path"]), thumb))
        rank = row["rank"] if "rank" in res.columns else j + 1
        ax.set_title(f"#{rank} {row['case_id']}", fontsize=7)
        lines = []
        if "diagnosis" in res.columns:
            lines.append(textwrap.shorten(str(row["diagnosis"]), 24, placeholder="..."))
        if "fitzpatrick" in res.columns:
            lines.append(f"skin type {_fmt(row['fitzpatrick'], '.0f')}")
        if "score" in res.columns:
            lines.append(f"s={_fmt(row['score'])}")
        if "s_global" in res.columns or "s_local" in res.columns:
            lines.append(f"glob {_fmt(row.get('s_global'))} loc {_fmt(row.get('s_local'))}")
        ax.set_xlabel("\n".join(lines), fontsize=6.5)
        if rel is not None:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_edgecolor("#2ca02c" if rel[j] else "#bbbbbb")
                spine.set_linewidth(4 if rel[j] else 1)
    if overlays is not None:
        first = next((a for a in overlays if a is not None), None)
        label = "why it matched"
        if first is not None and hasattr(first, "method"):
            label += f"\n({first.method}, {first.which})"
        axes[1, 0].text(0.5, 0.5, label, ha="center", va="center", fontsize=8, transform=axes[1, 0].transAxes)
        for j, att in enumerate(overlays):
            ax = axes[1, j + 1]
            if att is None:
                continue
            if hasattr(att, "heatmap"):
                overlay(att.image, att.heatmap, ax=ax, colorbar=False)
            else:
                tile = load_thumbnail(str(res.loc[j, "image_path"]), thumb)
                overlay(tile, np.asarray(att, dtype=np.float32), ax=ax, colorbar=False)
    head = title or f"top {k} result{'s' if k > 1 else ''}"
    if rel is not None and title is None:
        head += f" - {int(rel.sum())} relevant (green frame)"
    fig.suptitle(head, fontsize=9)
    return fig
