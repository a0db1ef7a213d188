"""Result galleries: a query (image and text) and its top-k results, relevant hits framed."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from .._checks import check_int
from .._errors import DermretrError
from ._common import format_value, load_thumbnail
from ._overlays import overlay

__all__ = ["gallery"]


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
    shown = check_int(len(results) if k is None else k, "k")
    assert shown is not None  # check_int returns None only with allow_none
    if thumb < 8:
        raise DermretrError(f"thumb must be at least 8 pixels, got {thumb}")
    res = results.iloc[:shown].reset_index(drop=True)
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
            lines.append(f"skin type {format_value(row['fitzpatrick'], '.0f')}")
        if "score" in res.columns:
            lines.append(f"s={format_value(row['score'])}")
        if "s_global" in res.columns or "s_local" in res.columns:
            lines.append(f"glob {format_value(row.get('s_global'))} loc {format_value(row.get('s_local'))}")
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
