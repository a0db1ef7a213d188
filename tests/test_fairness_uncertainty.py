"""How sure a gap by estimated skin tone is: propagation, scenarios and warnings (dermretr.fairness._uncertainty)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from fairness_helpers import RESULTS, exposure_cases, make_per_query, one_line_error

from dermretr._errors import DataWarning, DermretrError
from dermretr.cli import main
from dermretr.fairness import UNKNOWN, exposure, format_slices, gap_uncertainty, slice_metrics
from dermretr.fairness._uncertainty import _draws, _measurement

#: The middle of the ITA categories of types II, IV and VI (degrees).
_ITA = {"II": 48.0, "IV": 20.0, "VI": -50.0}


def _estimated(conf: float, iqr: float = 0.0, n: int = 40) -> pd.DataFrame:
    """``n`` queries on each of types II, IV and VI (recall@1 0.8, 0.6, 0.4), estimated with ``conf`` and ``iqr``."""
    rec = np.concatenate([np.tile([1.0] * hits + [0.0] * (5 - hits), n // 5) for hits in (4, 3, 2)])
    ita = np.repeat(list(_ITA.values()), n)
    return pd.DataFrame({"case_id": [f"q{i}" for i in range(len(rec))], "n_relevant": 1, "ita_estimated": ita,
                         "ita_confidence": conf, "ita_iqr_estimated": iqr, "recall@1": rec, "map@10": rec / 2})


def _row(table: pd.DataFrame, kind: str, metric: str = "recall@1", scenario: str | None = None) -> pd.Series:
    sel = table[(table["kind"] == kind) & (table["metric"] == metric)]
    if scenario is not None:
        sel = sel[sel["scenario"] == scenario]
    assert len(sel) == 1, (kind, scenario, table)
    return sel.iloc[0]


def test_certain_estimates_reproduce_the_point_gap_and_the_queries_only_interval():
    pq = _estimated(conf=1.0, iqr=0.0)
    t = gap_uncertainty(pq, metrics=["recall@1", "map@10"], n_draws=2000, seed=4)
    with pytest.warns(DataWarning):
        s = slice_metrics(pq, by="fitzpatrick_estimated", metrics=["recall@1", "map@10"], n_boot=2000, seed=4)
    for metric in ("recall@1", "map@10"):
        est, prop = _row(t, "estimated", metric), _row(t, "propagated", metric)
        diff = s[(s["kind"] == "difference") & (s["metric"] == metric)].iloc[0]
        # the queries-only row is slice_metrics' gap and interval, to the last digit
        assert (est["gap"], est["low"], est["high"]) == (diff["value"], diff["ci_low"], diff["ci_high"])
        assert (est["max_group"], est["min_group"]) == ("II", "VI") and est["n_queries"] == 120
        # nothing moves, so the draws are a stratified bootstrap: the same interval up to resampling noise
        assert prop["gap"] == est["gap"] and prop["share_reassigned"] == 0.0
        assert prop["low"] == pytest.approx(est["low"], abs=0.03)
        assert prop["high"] == pytest.approx(est["high"], abs=0.03)
    assert _row(t, "estimated")["gap"] == pytest.approx(0.4)
    span = _row(t, "scenario range")
    assert np.isnan(span["low"]) and span["note"] == "no unknown or doubtful estimates to move"
    assert (t["kind"] == "scenario").sum() == 0
    assert t.attrs["unknown_share"] == 0.0 and t.attrs["gap_groups"] == ["II", "IV", "VI"]
    assert t.attrs["has_confidence"] and not t.attrs["has_spread"]  # a spread of 0 is no spread


def test_the_interval_widens_as_the_confidence_drops():
    widths, reassigned = [], []
    for conf in (1.0, 0.7, 0.4):
        prop = _row(gap_uncertainty(_estimated(conf), metrics=["recall@1"], n_draws=800), "propagated")
        assert prop["low"] <= 0.4 <= prop["high"]
        widths.append(prop["high"] - prop["low"])
        reassigned.append(prop["share_reassigned"])
    assert widths[0] + 0.05 < widths[1] < widths[2] and reassigned[0] == 0.0 < reassigned[1] < reassigned[2]
    # a patch spread alone moves queries near a category's edge: ITA 20 +- 15 crosses into the neighbours
    spread = gap_uncertainty(_estimated(1.0, iqr=20.0), metrics=["recall@1"], n_draws=400)
    assert spread.attrs["has_spread"] and _row(spread, "propagated")["share_reassigned"] > 0.1


def test_the_imputation_keeps_the_groups_apart_instead_of_shrinking_the_gap():
    """Groups drawn without regard to the outcome would pull every group's mean to the overall mean (0.6)."""
    pq = _estimated(conf=0.3)
    codes = np.repeat([1, 3, 5], 40)  # II, IV, VI
    phi, conf, _ = _measurement(pq, codes, 6)
    means, counts, moved = _draws(pq[["recall@1"]].to_numpy(), codes, phi, conf, 1500, np.random.default_rng(0))
    assert moved.mean() > 0.3  # many queries change group in every draw...
    drawn = np.nanmean(means[:, [1, 3, 5], 0], axis=0)
    assert drawn == pytest.approx([0.8, 0.6, 0.4], abs=0.05)  # ...yet the group means stay (0.66/0.60/0.54 if not)
    assert counts.sum(axis=1).tolist() == [120] * 1500


def test_scenarios_move_unknown_and_doubtful_queries_into_each_group():
    pq = make_per_query({1: [1] * 20 + [0] * 5, 6: [1] * 10 + [0] * 15})
    pq = pq.assign(ita_estimated=np.where(pq["fitzpatrick"] == 1, 60.0, -50.0), ita_confidence=0.9)
    pq.loc[20:24, "ita_confidence"] = 0.3  # the five misses of type I are doubtful
    hits = pd.DataFrame({"case_id": [f"u{i}" for i in range(5)], "n_relevant": 1, "recall@1": 1.0, "map@10": 0.5,
                         "ita_estimated": np.nan, "ita_confidence": 0.1})
    pq = pd.concat([pq.drop(columns="fitzpatrick"), hits], ignore_index=True)
    t = gap_uncertainty(pq, metrics=["recall@1"], n_draws=0)
    assert _row(t, "estimated")["gap"] == pytest.approx(0.4) and np.isnan(_row(t, "propagated")["low"])
    assert _row(t, "scenario", scenario="unknown -> I")["gap"] == pytest.approx(25 / 30 - 0.4)
    assert _row(t, "scenario", scenario="unknown -> VI")["gap"] == pytest.approx(0.8 - 15 / 30)
    assert _row(t, "scenario", scenario="unknown -> III")["gap"] == pytest.approx(0.4)  # 5 queries: not in the gap
    doubt = _row(t, "scenario", scenario="confidence < 0.5 -> VI")
    assert doubt["gap"] == pytest.approx(1.0 - 10 / 30) and doubt["share_reassigned"] == pytest.approx(5 / 55)
    assert "confidence < 0.5 -> I" not in set(t["scenario"])  # they are in I already
    span = _row(t, "scenario range")
    assert (span["low"], span["high"]) == (pytest.approx(0.3), pytest.approx(2 / 3))
    assert span["low"] < span["gap"] < span["high"]
    assert span["note"] == "smallest: unknown -> VI; largest: confidence < 0.5 -> VI"
    assert t.attrs["n_unknown"] == 5 and t.attrs["unknown_share"] == pytest.approx(5 / 55)
    assert t.attrs["n_low_confidence"] == 5
    assert len(gap_uncertainty(pq, metrics=["recall@1"], n_draws=0, low_confidence=0.2)) == 3 + 6


def test_estimated_groups_warn_with_the_share_of_unknowns():
    pq = make_per_query({1: [1] * 30, 6: [0, 1] * 15, None: [1, 0, 1]})
    pq = pq.assign(ita_estimated=pq["fitzpatrick"].map({1: 60.0, 6: -50.0}).astype(float))
    with pytest.warns(DataWarning, match=r"estimated from the pixels \(Fitzpatrick type, via the ITA\), not "
                                         r"labelled: 3 of 63 queries \(4.8%\) are unknown and not part of the gap"):
        table = slice_metrics(pq, by="fitzpatrick_estimated", metrics=["recall@1"], n_boot=0)
    assert table.attrs["estimated"] and table.attrs["n_unknown"] == 3
    assert table.attrs["unknown_share"] == pytest.approx(3 / 63)
    assert format_slices(table).index.name == "Fitzpatrick type (estimated from ITA); 4.8% of queries unknown"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # labelled groups: no warning
        labelled = slice_metrics(pq, by="fitzpatrick", metrics=["recall@1"], n_boot=0)
    assert not labelled.attrs["estimated"] and labelled.attrs["unknown_share"] == pytest.approx(3 / 63)
    assert format_slices(labelled).index.name == "Fitzpatrick skin type"


def test_exposure_by_estimated_groups_warns_and_gives_scenarios():
    cases = exposure_cases()
    cases["ita_estimated"] = cases["fitzpatrick"].map({1: 60.0, 2: 48.0, 6: -50.0}).astype(float)
    with pytest.warns(DataWarning, match=r"1 of 7 cases \(queries and gallery\) \(14.3%\) are unknown and left out "
                                         "of the mean tone"):
        t = exposure(RESULTS, cases, by="fitzpatrick_estimated", n_boot=0)
    assert t.attrs["estimated"] and t.attrs["n_unknown"] == 1
    t = t.set_index("group")
    plain = exposure(RESULTS, cases, by="fitzpatrick", n_boot=0).set_index("group")
    assert t["drift"].tolist() == plain["drift"].tolist() and "drift_scenario_low" not in plain.columns
    # case e (unknown, in the gallery, retrieved by q2) put into I moves the gallery's mean tone to 2.2, into VI to 3.2
    assert t.loc["I", ["drift_scenario_low", "drift_scenario_high"]].tolist() == pytest.approx([4 / 3 - 3.2,
                                                                                                  4 / 3 - 2.2])
    assert t.loc["I", "drift_scenario_low"] < t.loc["I", "drift"] < t.loc["I", "drift_scenario_high"]
    assert np.isnan(t.loc["gallery", "drift_scenario_low"]) and UNKNOWN not in t.index


def test_gap_uncertainty_bad_input():
    pq = _estimated(1.0)
    with pytest.raises(DermretrError, match="for groups estimated from the pixels .* not 'fitzpatrick': labelled"):
        gap_uncertainty(make_per_query({1: [1, 0], 6: [0, 1]}), by="fitzpatrick")
    with pytest.raises(DermretrError, match=r"low_confidence must be in \[0, 1\], got 2"):
        gap_uncertainty(pq, metrics=["recall@1"], low_confidence=2)
    with pytest.raises(DermretrError, match="no 'ita_estimated' or 'ita_category_estimated' column"):
        gap_uncertainty(pq.drop(columns="ita_estimated"), by="ita_category_estimated", metrics=["recall@1"])
    with pytest.raises(DermretrError, match="fewer than two Fitzpatrick type .estimated from ITA. groups with queries"):
        gap_uncertainty(pq.head(40), metrics=["recall@1"], n_draws=10)


def test_cli_min_confidence_is_checked_before_any_work(tmp_path, capsys):
    missing = str(tmp_path / "no-run")  # nothing exists: a later check would complain about the run folder
    base = ["fairness", "--run", missing, "--data", f"synthetic:{tmp_path / 'nowhere'}"]
    assert main([*base, "--estimate-ita", "--min-confidence", "1.5"]) == 2
    assert "--min-confidence must be in [0, 1], got 1.5" in one_line_error(capsys)
    assert main([*base, "--by", "fitzpatrick_estimated", "--min-confidence", "nan"]) == 2
    assert "--min-confidence must be in [0, 1], got nan" in one_line_error(capsys)
    assert main([*base, "--min-confidence", "0.3"]) == 2
    assert "--min-confidence applies to skin tone estimated from the pixels: add" in one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        main([*base, "--estimate-ita", "--min-confidence", "high"])
    assert exc.value.code == 2 and "invalid float value: 'high'" in capsys.readouterr().err
    assert not (tmp_path / "no-run").exists()
