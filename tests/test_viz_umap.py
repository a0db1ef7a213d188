"""UMAP maps: deterministic, cached, coloured by a case column, with queries and results placed on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dermretr._errors import DermretrError
from dermretr.viz import MapReducer, clear_map_cache, fit_map, umap_map


def _not_blank(fig: Figure) -> bool:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].std() > 5


def _clusters(n: int = 240, d: int = 16, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centers = rng.normal(size=(k, d)) * 4
    x = (centers[labels] + rng.normal(size=(n, d))).astype(np.float32)
    return x, labels


@pytest.fixture(scope="module")
def clustered():
    x, labels = _clusters()
    groups = np.array(["MEL", "NEV", "BCC", "SK"])[labels]
    cases = pd.DataFrame({
        "case_id": [f"c{i}" for i in range(len(x))], "diagnosis_group": groups,
        "diagnosis": [f"{g.lower()} type {i % 3}" for i, g in enumerate(groups)],
        "fitzpatrick": pd.array([None if i % 17 == 0 else i % 6 + 1 for i in range(len(x))], dtype="Int64"),
        "split": np.array(["train", "valid", "test"])[np.arange(len(x)) % 3],
    })
    return x, labels, cases


@pytest.fixture(scope="module")
def fitted(clustered):
    return fit_map(clustered[0], seed=3, n_epochs=100)


def test_map_is_deterministic_cached_and_places_new_points(clustered, fitted):
    x, labels, _ = clustered
    assert isinstance(fitted, MapReducer) and fitted.embedding.shape == (len(x), 2)
    assert fit_map(x, seed=3, n_epochs=100) is fitted  # cached: same bytes, same parameters
    clear_map_cache()
    again = fit_map(x, seed=3, n_epochs=100)
    assert again is not fitted and np.array_equal(again.embedding, fitted.embedding)  # deterministic
    other = fit_map(x, seed=4, n_epochs=100)
    assert not np.array_equal(other.embedding, fitted.embedding)
    # clusters stay apart on the map: each point's nearest map neighbour has its label
    e = fitted.embedding
    dist = ((e[:, None] - e[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert (labels[dist.argmin(1)] == labels).mean() > 0.95
    # a new point near cluster members lands among them
    new = x[:5] + 0.01
    placed = fitted.transform(new)
    assert placed.shape == (5, 2)
    for p, lab in zip(placed, labels[:5]):
        nearest = np.argsort(((e - p) ** 2).sum(1))[:5]
        assert (labels[nearest] == lab).mean() >= 0.8
    with pytest.raises(DermretrError, match="dimension 3"):
        fitted.transform(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("color_by", ["diagnosis", "diagnosis_group", "fitzpatrick", "split"])
def test_umap_map_colours_by_a_case_column(clustered, fitted, color_by):
    x, _, cases = clustered
    fig = umap_map(x, cases, color_by=color_by, reducer=fitted)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    values = cases[color_by].astype(object).where(cases[color_by].notna(), "unknown").astype(str)
    assert len(ax.collections) == values.nunique()
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(x)
    legend = [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()]
    assert set(legend) == set(values)
    assert _not_blank(fig)


def test_umap_map_with_highlights_queries_and_results(clustered, fitted):
    x, _, cases = clustered
    results = pd.DataFrame({"query": [0, 0, 0, 1, 1], "case_id": ["c1", "c2", "c3", "c10", "c11"]})
    fig = umap_map(x, cases, color_by="diagnosis_group", reducer=fitted, highlight=["c5", "c6"],
                   queries=x[[1, 10]] + 0.01, results=results)
    ax = fig.axes[0]
    stars = [c for c in ax.collections if len(c.get_offsets()) == 1 and c.get_label().startswith("query")]
    assert [c.get_label() for c in stars] == ["query 1 + 3 results", "query 2 + 2 results"]
    assert len(ax.lines) == 5  # one line from each query to each of its results
    assert any(c.get_label() == "highlighted (2)" for c in ax.collections)
    mask = np.zeros(len(x), bool)
    mask[:4] = True
    fig = umap_map(x, cases, reducer=fitted, highlight=mask)
    assert any(c.get_label() == "highlighted (4)" for c in fig.axes[0].collections)


def test_umap_map_bad_input(clustered, fitted):
    x, _, cases = clustered
    with pytest.raises(DermretrError, match="cannot colour by 'colour'"):
        umap_map(x, cases, color_by="colour", reducer=fitted)
    with pytest.raises(DermretrError, match="240 embeddings but 10 cases"):
        umap_map(x, cases.iloc[:10], reducer=fitted)
    with pytest.raises(DermretrError, match="'zz' is not among the mapped cases"):
        umap_map(x, cases, reducer=fitted, highlight=["zz"])
    with pytest.raises(DermretrError, match="NaN"):
        fit_map(np.full((10, 4), np.nan, np.float32))
    with pytest.raises(DermretrError, match="at least 4 points"):
        fit_map(np.zeros((3, 4), np.float32))

