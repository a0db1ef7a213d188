"""Figures: basic properties (axes, image sizes, not blank), not pixels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from dermretr._errors import DermretrError
from dermretr.viz import contact_sheet, load_thumbnail


def test_contact_sheet_has_one_row_per_group(synth_cases):
    fig = contact_sheet(synth_cases, by="diagnosis_group", per_group=4, thumb=48)
    assert isinstance(fig, Figure)
    groups = synth_cases["diagnosis_group"].nunique()
    assert len(fig.axes) == groups * 4
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) >= groups
    for ax in shown:
        arr = ax.images[0].get_array()
        assert arr.shape[:2] == (48, 48) and np.asarray(arr).std() > 5  # a real image, not blank
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert {label.split("\n")[0] for label in labels} == set(synth_cases["diagnosis_group"])


def test_contact_sheet_by_criterion_and_unknown_values(synth_cases):
    cases = synth_cases.copy()
    cases.loc[:4, "blue_whitish_veil"] = None
    fig = contact_sheet(cases, by="blue_whitish_veil", per_group=2)
    labels = {ax.get_ylabel().split("\n")[0] for ax in fig.axes if ax.get_ylabel()}
    assert labels == {"absent", "present", "unknown"}


def test_contact_sheet_bad_input(synth_cases):
    with pytest.raises(DermretrError, match="cannot group by 'colour'"):
        contact_sheet(synth_cases, by="colour")
    with pytest.raises(DermretrError, match="empty"):
        contact_sheet(synth_cases.iloc[:0])


def test_unreadable_image_becomes_a_marked_tile(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    tile = load_thumbnail(str(bad), size=32)
    assert tile.shape == (32, 32, 3) and tuple(tile[0, 0]) == (200, 0, 0)


# ---------------------------------------------------------------------------- overlays, UMAP maps, galleries

import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from dermretr.viz import MapReducer, clear_map_cache, fit_map, gallery, overlay, text_bars, umap_map  # noqa: E402


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


def test_overlay_and_text_bars():
    img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    fig = overlay(img, np.linspace(-1, 1, 100).reshape(10, 10), title="t")
    ax = fig.axes[0]
    assert ax.get_title() == "t" and len(fig.axes) == 2  # image axes + colour bar
    lo, hi = ax.images[1].get_clim()
    assert ax.images[1].get_cmap().name == "RdBu_r" and lo == -hi and 0.95 <= hi <= 1.0  # centred on zero
    assert overlay(img, np.ones((40, 40)), colorbar=False).axes[0].images[1].get_cmap().name == "inferno"
    with pytest.raises(DermretrError, match=r"\[H, W, 3\]"):
        overlay(np.zeros((4, 4)), np.zeros((4, 4)))
    fig = text_bars(["a", "b", "c"], [0.5, -0.2, 0.1])
    assert len(fig.axes[0].patches) == 3 and _not_blank(fig)


def _results(cases: pd.DataFrame, k: int = 4) -> pd.DataFrame:
    res = cases.iloc[:k].reset_index(drop=True).copy()
    res.insert(0, "rank", np.arange(1, k + 1))
    res.insert(2, "score", np.linspace(0.9, 0.5, k))
    res.insert(3, "s_global", np.linspace(0.8, 0.4, k))
    res.insert(4, "s_local", np.linspace(0.95, 0.55, k))
    return res


def test_gallery_shows_query_and_results(synth_cases):
    res = _results(synth_cases, 4)
    query = synth_cases["image_path"].iloc[20]
    relevant = set(res["case_id"].iloc[[0, 2]])
    fig = gallery(query, "same lesion but with a blue-whitish veil and some more words to wrap", res,
                  relevant=relevant, thumb=48)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    for ax in fig.axes:
        arr = np.asarray(ax.images[0].get_array())
        assert arr.shape[:2] == (48, 48) and arr.std() > 5
    assert "\n" in fig.axes[0].get_xlabel()  # the query text is wrapped
    for j, ax in enumerate(fig.axes[1:]):
        row = res.iloc[j]
        caption = ax.get_title() + "\n" + ax.get_xlabel()
        for part in (row["case_id"], row["diagnosis"][:10], f"skin type {row['fitzpatrick']}",
                     f"s={row['score']:.3f}", f"glob {row['s_global']:.3f}", f"loc {row['s_local']:.3f}"):
            assert part in caption, part
        green = ax.spines["left"].get_edgecolor()[:3] == pytest.approx((0.173, 0.627, 0.173), abs=0.01)
        assert green == (row["case_id"] in relevant)
    assert "2 relevant" in fig.get_suptitle()
    assert _not_blank(fig)


def test_gallery_relevance_from_the_query_group_and_attribution_row(synth_cases):
    res = _results(synth_cases, 3)
    group = res["diagnosis_group"].iloc[1]
    fig = gallery(None, "", res, query_group=group, thumb=32,
                  attributions=[np.random.default_rng(i).random((32, 32)) for i in range(3)])
    assert len(fig.axes) == 8  # 2 rows x (query + 3)
    frames = [ax.spines["top"].get_linewidth() for ax in fig.axes[1:4]]
    assert frames == [4 if g == group else 1 for g in res["diagnosis_group"]]
    assert all(len(ax.images) == 2 for ax in fig.axes[5:8])  # image + heatmap
    assert "no text" in fig.axes[0].get_xlabel()
    plain = gallery(None, "veil", res, k=2, thumb=32)
    assert len(plain.axes) == 3 and not plain.axes[1].spines["top"].get_visible()


def test_gallery_bad_input(synth_cases):
    res = _results(synth_cases, 3)
    with pytest.raises(DermretrError, match="no results"):
        gallery(None, "x", res.iloc[:0])
    with pytest.raises(DermretrError, match="lack column image_path"):
        gallery(None, "x", res.drop(columns="image_path"))
    with pytest.raises(DermretrError, match="not a column of the results"):
        gallery(None, "x", res, relevant="is_relevant")
    with pytest.raises(DermretrError, match="2 attributions for 3 results"):
        gallery(None, "x", res, attributions=[None, None])
    with pytest.raises(DermretrError, match="k must be a positive integer"):
        gallery(None, "x", res, k=0)
