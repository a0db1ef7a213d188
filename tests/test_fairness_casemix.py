"""Case mix of skin-tone groups: diagnosis mixes, the gap standardised to a common mix, its warning and its output."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DataWarning, DermretrError
from dermretr.cli import main
from dermretr.fairness import (
    MIX_THRESHOLD,
    FairnessReport,
    adjusted_gap,
    case_mix,
    format_case_mix,
    is_fairness_folder,
    slice_metrics,
)

DIFF = "difference (max - min)"


def mixed(spec: dict, metric: str = "recall@1") -> pd.DataFrame:
    """Queries from ``{fitzpatrick: {diagnosis_group: [metric values]}}``; map@10 = half the metric."""
    rows = []
    for fitz, by_dx in spec.items():
        for dx, values in by_dx.items():
            for v in values:
                i = len(rows)
                rows.append({"case_id": f"q{i}", "patient_id": f"p{i}", "fitzpatrick": fitz, "diagnosis_group": dx,
                             "n_relevant": 1, metric: float(v), "map@10": float(v) / 2})
    out = pd.DataFrame(rows)
    out["fitzpatrick"] = out["fitzpatrick"].astype("Int64")
    return out


def hits(n: int, rate: float) -> list[int]:
    """``n`` results of which exactly ``round(rate * n)`` are hits."""
    k = round(rate * n)
    return [1] * k + [0] * (n - k)


def row(table: pd.DataFrame, group: str, metric: str = "recall@1") -> pd.Series:
    sel = table[(table["group"] == group) & (table["metric"] == metric)]
    assert len(sel) == 1, (group, metric)
    return sel.iloc[0]


# ----------------------------------------------------------------------------- the adjusted gap


def test_adjusted_gap_vanishes_when_quality_depends_only_on_the_diagnosis():
    # nevi are found 80% of the time, melanomas 20%, on every skin type; type I is mostly nevi, type VI melanomas
    pq = mixed({1: {"NEV": hits(90, 0.8), "MEL": hits(10, 0.2)}, 6: {"NEV": hits(10, 0.8), "MEL": hits(90, 0.2)}})
    with pytest.warns(DataWarning, match=r"the diagnosis_group mix differs .* \(I is 0\.40 from their pooled mix, "
                                         r"total variation distance; threshold 0\.2\): the raw gap mixes case mix "
                                         r"with skin tone; read the case-mix-adjusted gap"):
        slices = slice_metrics(pq, metrics=["recall@1"], n_boot=300)
    raw = row(slices, DIFF)
    assert raw["value"] == pytest.approx(0.48) and raw["p_value"] < 0.01  # a "significant" raw gap
    assert slices.attrs["case_mix_tvd"] == pytest.approx(0.4)
    t = adjusted_gap(pq, metrics=["recall@1"], n_boot=300)
    d = row(t, DIFF)
    assert d["raw"] == pytest.approx(0.48)
    assert d["adjusted"] == pytest.approx(0.0, abs=1e-12) and d["ci_low"] == 0.0 and d["ci_high"] < 0.3
    assert d["p_value"] == 1.0 and d["n_standardised"] == 200 and d["tvd"] == pytest.approx(0.4)
    assert d["note"] == "equal after adjustment"
    # both groups at the pooled mix (half nevi): 0.5 * 0.8 + 0.5 * 0.2
    for g, crude in (("I", 0.74), ("VI", 0.26)):
        r = row(t, g)
        assert r["raw"] == pytest.approx(crude) and r["adjusted"] == pytest.approx(0.5)
        assert r["ci_low"] < 0.5 < r["ci_high"] and r["n_queries"] == 100
    assert t.attrs["standard"] == {"MEL": 0.5, "NEV": 0.5} and t.attrs["n_dropped"] == 0
    assert t.attrs["gap_groups"] == ["I", "VI"] and "direct standardisation" in t.attrs["method"]


def test_adjusted_equals_raw_when_the_mixes_are_equal():
    rng = np.random.default_rng(0)
    spec = {fitz: {dx: rng.integers(0, 2, n).tolist() for dx, n in (("NEV", 20), ("MEL", 12), ("SK", 8))}
            for fitz in (1, 3, 6)}
    pq = mixed(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # equal mixes: no case-mix warning
        slices = slice_metrics(pq, n_boot=0)
    assert slices.attrs["case_mix_tvd"] == 0.0
    t = adjusted_gap(pq, n_boot=100)
    for metric in ("recall@1", "map@10"):
        for g in ("I", "III", "VI", DIFF):
            r = row(t, g, metric)
            assert r["adjusted"] == pytest.approx(r["raw"]) and r["tvd"] == 0.0
        assert row(t, DIFF, metric)["raw"] == pytest.approx(row(slices, DIFF, metric)["value"])


def test_adjusted_gap_interval_covers_the_truth_in_a_simulation():
    # within both diagnosis groups, type I is found 0.1 more often than type VI: the true adjusted gap is 0.1
    # (whatever the standard); the mixes differ (80% against 20% nevi), so the raw gap is about 0.34
    rng = np.random.default_rng(7)
    covered, adjusted, raw = 0, [], []
    reps = 100
    for rep in range(reps):
        spec = {1: {"NEV": rng.random(80) < 0.8, "MEL": rng.random(20) < 0.4},
                6: {"NEV": rng.random(20) < 0.7, "MEL": rng.random(80) < 0.3}}
        t = adjusted_gap(mixed(spec), metrics=["recall@1"], n_boot=200, seed=rep)
        d = row(t, DIFF)
        covered += d["ci_low"] <= 0.1 <= d["ci_high"]
        adjusted.append(d["adjusted"])
        raw.append(d["raw"])
    assert covered / reps >= 0.9
    assert np.mean(adjusted) == pytest.approx(0.1, abs=0.03) and np.mean(raw) == pytest.approx(0.34, abs=0.03)


def test_strata_missing_from_a_gap_group_are_left_out_and_counted():
    pq = mixed({1: {"NEV": [1, 1, 0, 1], "MEL": [0, 1], "SK": [1, 1, 1]}, 6: {"NEV": [1, 0], "MEL": [0, 0, 1, 0]}})
    t = adjusted_gap(pq, metrics=["recall@1"], n_boot=50, min_group=2)
    assert t.attrs["dropped_strata"] == ["SK"] and t.attrs["n_dropped"] == 3 and t.attrs["n_gap"] == 15
    assert t.attrs["standard"] == {"MEL": 0.5, "NEV": 0.5}  # 6 melanomas, 6 nevi in the common diagnosis groups
    i, vi, d = row(t, "I"), row(t, "VI"), row(t, DIFF)
    assert (i["n_queries"], i["n_standardised"]) == (9, 6)
    assert i["adjusted"] == pytest.approx(0.5 * 0.75 + 0.5 * 0.5) and vi["adjusted"] == pytest.approx(0.5 * 0.5
                                                                                                      + 0.5 * 0.25)
    assert i["raw"] == pytest.approx(7 / 9) and d["adjusted"] == pytest.approx(0.25)
    assert "3 of 15 queries left out (diagnosis_group SK: not in every gap group)" in d["note"]
    assert d["note"].startswith("max I, min VI")
    # a diagnosis group in no gap group's common set: nothing to standardise
    none = adjusted_gap(mixed({1: {"NEV": [1, 0]}, 6: {"MEL": [0, 1]}}), metrics=["recall@1"], n_boot=10, min_group=2)
    assert np.isnan(row(none, DIFF)["adjusted"]) and "nothing to standardise" in row(none, DIFF)["note"]


# ----------------------------------------------------------------------------- the mixes and the warning


def test_case_mix_counts_shares_and_distances():
    pq = mixed({1: {"NEV": [1] * 15, "MEL": [0] * 5}, 6: {"NEV": [1] * 5, "MEL": [0] * 15},
                3: {"SK": [1, 1]}, None: {"NEV": [1, 0, 1]}})
    mix = case_mix(pq, min_group=10)
    counts = mix.pivot(index="group", columns="stratum", values="n_queries")
    assert counts.loc["I"].to_dict() == {"MEL": 5, "NEV": 15, "SK": 0}
    assert counts.loc["VI"].to_dict() == {"MEL": 15, "NEV": 5, "SK": 0}
    assert counts.loc["III"].to_dict() == {"MEL": 0, "NEV": 0, "SK": 2}
    assert counts.loc["unknown"].to_dict() == {"MEL": 0, "NEV": 3, "SK": 0}
    assert counts.loc["pooled (gap groups)"].to_dict() == {"MEL": 20, "NEV": 20, "SK": 0}  # I and VI only
    shares = mix.pivot(index="group", columns="stratum", values="share")
    assert shares.loc["I", "NEV"] == 0.75 and shares.loc["pooled (gap groups)", "NEV"] == 0.5
    by_group = mix.groupby("group", sort=False).first()
    assert by_group.loc["I", "tvd"] == pytest.approx(0.25) and by_group.loc["III", "tvd"] == pytest.approx(1.0)
    assert by_group["in_gap"].to_dict() == {"I": True, "III": False, "VI": True, "unknown": False,
                                            "pooled (gap groups)": False}
    assert mix.attrs["gap_groups"] == ["I", "VI"] and mix.attrs["max_tvd"] == pytest.approx(0.25)
    assert mix.attrs["differs"] and mix.attrs["threshold"] == MIX_THRESHOLD
    shown = format_case_mix(mix)
    assert shown.loc["I"].tolist() == ["20", "5 (25%)", "15 (75%)", "0 (0%)", "0.25"]
    assert shown.loc["III", "TVD"] == "(1.00)" and shown.loc["pooled (gap groups)", "TVD"] == ""
    with pytest.raises(DermretrError, match="cannot compare case mixes: neither the per-query table nor the case "
                                            "table has a 'diagnosis_group' column"):
        case_mix(pq.drop(columns="diagnosis_group"))


@pytest.mark.parametrize(("nevi_i", "nevi_vi", "warns"), [(15, 5, True), (13, 7, False)])
def test_case_mix_warning_fires_above_the_threshold_and_not_below(nevi_i, nevi_vi, warns):
    # two groups of 20: each one's distance from the pooled mix is half the difference of their shares of nevi
    pq = mixed({1: {"NEV": [1] * nevi_i, "MEL": [0] * (20 - nevi_i)},
                6: {"NEV": [1] * nevi_vi, "MEL": [0] * (20 - nevi_vi)}})
    tvd = (nevi_i - nevi_vi) / 40
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slices = slice_metrics(pq, metrics=["recall@1"], n_boot=0)
    noted = [w for w in caught if "mixes case mix with skin tone" in str(w.message)]
    assert len(noted) == (1 if warns else 0) and all(w.category is DataWarning for w in noted)
    assert slices.attrs["case_mix_tvd"] == pytest.approx(tvd)
    assert case_mix(pq).attrs["differs"] is warns
    # no diagnosis groups known: nothing to compare, no warning
    assert np.isnan(slice_metrics(pq.drop(columns="diagnosis_group"), metrics=["recall@1"], n_boot=0)
                    .attrs["case_mix_tvd"])


# ----------------------------------------------------------------------------- dermretr fairness


def test_cli_prints_each_groups_mix_and_the_adjusted_gap_and_names_the_grouping_once(tmp_path, monkeypatch, capsys):
    pq = mixed({1: {"NEV": hits(30, 0.8), "MEL": hits(10, 0.2)}, 6: {"NEV": hits(10, 0.8), "MEL": hits(30, 0.2)}})
    pq["ita_estimated"] = pq["fitzpatrick"].map({1: 60.0, 6: -50.0}).astype(float)
    by = "ita_category_estimated"

    def fake_run_fairness(run_dir, data, by, metrics, n_boot, min_group, seed, **_):
        slices = slice_metrics(pq, by=by, metrics=metrics, n_boot=n_boot, min_group=min_group, seed=seed)
        return FairnessReport(by=by, run="run", method="full", protocol="case", cases=pq, per_query=pq,
                              slices=slices, case_mix=case_mix(pq, by=by, min_group=min_group),
                              adjusted=adjusted_gap(pq, by=by, metrics=metrics, n_boot=n_boot, min_group=min_group,
                                                    seed=seed))

    monkeypatch.setattr("dermretr.fairness.run_fairness", fake_run_fairness)
    out = tmp_path / "fair"
    assert main(["fairness", "--run", str(tmp_path / "run"), "--data", "synthetic:ds", "--by", by, "--out", str(out),
                 "--n-boot", "100", "--exposure-k", "0"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "run (full), protocol case on synthetic:ds; 95% bootstrap CI, 100 resamples; * = fewer than " \
                       "20 queries"
    assert lines[2].startswith("ITA category (estimated from pixels); 0.0% of queries unknown")
    assert captured.out.count("(estimated from pixels)") == 1  # the grouping is named once, by the table
    assert "Diagnosis mix per group" in captured.out and "Case-mix-adjusted gap" in captured.out
    mix_at = next(i for i, line in enumerate(lines) if line.startswith("Diagnosis mix per group"))
    assert lines[mix_at + 1].split() == ["queries", "MEL", "NEV", "TVD"]
    assert lines[mix_at + 3].split() == ["very", "light", "40", "10", "(25%)", "30", "(75%)", "0.25"]
    adj_at = next(i for i, line in enumerate(lines) if line.startswith("Case-mix-adjusted gap"))
    assert "adjusted" in lines[adj_at + 1] and "adj_low" in lines[adj_at + 1]
    adjusted_rows = [line for line in lines[adj_at:] if line.strip().startswith(DIFF)]
    assert len(adjusted_rows) == 2 and adjusted_rows[0].split()[7:9] == ["0.300", "0.000"]  # raw, adjusted
    warned = [line for line in captured.err.splitlines() if line.startswith("dermretr: warning: ")]
    assert any("mixes case mix with skin tone" in w for w in warned)
    assert any("estimated from the pixels (ITA category), not labelled" in w for w in warned)
    assert not any("(estimated from pixels)" in w for w in warned)
    for name in (f"case_mix_{by}.csv", f"adjusted_gap_{by}.csv"):
        assert (out / name).is_file(), name
    assert is_fairness_folder(out)  # a second run may write there again
    saved = pd.read_csv(out / f"adjusted_gap_{by}.csv")
    assert saved.loc[saved["group"] == DIFF, "adjusted"].abs().max() < 1e-12
