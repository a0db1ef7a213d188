"""The figures of a query session: why a result matched (attribution overlay, mask maps) and the UMAP map."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .._errors import DermretrError

__all__ = ["check_method", "explain_figures", "map_figure"]


def check_method(method: Any) -> str:
    """``method`` when it is an attribution method of :mod:`dermretr.explain`."""
    from ..explain import METHODS

    if method not in METHODS:
        raise DermretrError(f"unknown explain_method {method!r}; methods: {', '.join(METHODS)}")
    return method


def explain_figures(index: Any, retriever: Any, image: Any, text: str, row: pd.Series, rank: int,
                    method: str = "gradcam") -> list[Figure]:
    """The attribution overlay of the result ``row`` (shown at ``rank``), then (local vectors) the mask maps."""
    from ..explain import explain_result, mask_maps

    cid = str(row["case_id"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        att = explain_result(index, retriever, image, text, cid, method=method)
        figs = [att.overlay(title=f"why #{int(rank)} {cid} matched ({method}, s={float(row['score']):.3f})")]
        if getattr(retriever, "uses_local", False):
            figs.append(mask_maps(retriever, image, text, row["image_path"]))
    return figs


def map_figure(index: Any, map_params: Mapping[str, Any], query: np.ndarray | None = None,
               results: Sequence[str] = ()) -> Figure:
    """The UMAP map of ``index`` with a query's global vector (star) and its ``results`` (case ids).

    ``map_params`` are :func:`~dermretr.viz.fit_map`'s parameters plus ``seed``
    and ``color_by``; the map is fitted once per index (cached).
    """
    from ..viz import fit_map, umap_map

    cases = index.cases
    if len(cases) == 0:
        raise DermretrError("the index holds no case: there is no map to draw")
    if len(cases) < 4:
        raise DermretrError(f"a map needs at least 4 cases; this index has {len(cases)}")
    params = dict(map_params)
    seed = int(params.pop("seed", 0))
    color_by = str(params.pop("color_by", "diagnosis_group"))
    reducer = fit_map(index, seed=seed, **params)
    kwargs: dict[str, Any] = {}
    if query is not None:
        kwargs = {"queries": query, "results": [list(results)]}
    if color_by not in cases.columns:
        color_by = "diagnosis" if "diagnosis" in cases.columns else str(cases.columns[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return umap_map(index, color_by=color_by, reducer=reducer, seed=seed,
                        title="query (star) and its results on the map of the index" if query is not None else None,
                        **kwargs)
