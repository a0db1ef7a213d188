"""Figures of the fairness tables (dermretr.fairness._plots)."""

from __future__ import annotations

import pandas as pd
import pytest
from fairness_helpers import HAND, RESULTS, exposure_cases, make_per_query

from dermretr._errors import DermretrError
from dermretr.fairness import (
    compare_runs,
    exposure,
    gap_uncertainty,
    ita_confusion,
    plot_comparison,
    plot_exposure,
    plot_gap_uncertainty,
    plot_ita_confusion,
    plot_slices,
    slice_metrics,
)


def test_figures_are_drawn_and_saved(tmp_path):
    from matplotlib.figure import Figure

    from dermretr._io import save_figure

    pq = make_per_query(HAND)
    table = slice_metrics(pq, metrics=["recall@1", "map@10"], n_boot=100)
    after = pq.assign(**{"recall@1": 1.0})
    figs = {"slices": plot_slices(table), "exposure": plot_exposure(exposure(RESULTS, exposure_cases(), n_boot=50)),
            "confusion": plot_ita_confusion(ita_confusion(pd.DataFrame({"fitzpatrick": [1, 2, 6],
                                                                        "fitzpatrick_estimated": [1, 3, 6]}))),
            "comparison": plot_comparison(compare_runs(pq, after, metrics=["recall@1"], n_boot=50))}
    estimated = pq.assign(ita_estimated=pq["fitzpatrick"].map({1: 60.0, 3: 30.0, 6: -50.0}).astype(float),
                          ita_confidence=0.6, ita_iqr_estimated=5.0)
    confusion = ita_confusion(estimated.assign(fitzpatrick_estimated=estimated["fitzpatrick"]))
    gaps = gap_uncertainty(estimated, metrics=["recall@1", "map@10"], n_draws=50)
    figs["uncertainty"] = plot_gap_uncertainty(gaps, labelled=table, confusion=confusion)
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        assert save_figure(fig, tmp_path / f"{name}.png").stat().st_size > 1000
    texts = [t.get_text() for ax in figs["slices"].axes for t in ax.texts]
    assert len(figs["slices"].axes) == 2 and any(t.startswith("gap 0.400") for t in texts)
    assert any(t == "n=0" for t in texts)
    with pytest.raises(DermretrError, match="plot_slices needs the table of slice_metrics"):
        plot_slices(pq)
    # the confusion, then per metric: labelled, estimated, + the estimate's uncertainty, the scenarios
    axes = figs["uncertainty"].axes
    assert len(axes) == 3 and [t.get_text() for t in axes[1].get_yticklabels()][0].startswith("labelled")
    assert len(axes[1].get_yticklabels()) == 4 and any(t.get_text().startswith("0.400 [") for t in axes[1].texts)
    with pytest.raises(DermretrError, match="plot_gap_uncertainty needs the table of gap_uncertainty"):
        plot_gap_uncertainty(table)
