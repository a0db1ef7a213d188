"""Attribution overlays and result galleries: basic properties (axes, image sizes, frames, not blank), not pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dermretr._errors import DermretrError
from dermretr.viz import gallery, overlay, text_bars


def _not_blank(fig: Figure) -> bool:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].std() > 5


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
