"""Per-group metrics with CIs and gaps, their printable view, and two runs compared (dermretr.fairness._slicing)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairness_helpers import HAND, make_per_query, row_of

from dermretr._errors import DataWarning, DermretrError
from dermretr.fairness import UNKNOWN, compare_runs, format_slices, slice_metrics
from dermretr.stats import bootstrap_ci


def test_slice_metrics_matches_hand_computed_groups_gap_and_flags():
    pq = make_per_query(HAND)
    ignored = make_per_query({1: [0, 0]}).assign(case_id=["x1", "x2"], n_relevant=0)  # no relevant case: left out
    pq = pd.concat([pq, ignored], ignore_index=True)
    table = slice_metrics(pq, by="fitzpatrick", metrics=("recall@1", "map@10"), n_boot=400, seed=3)
    i, vi, iii, unk = (row_of(table, g) for g in ("I", "VI", "III", UNKNOWN))
    assert (i["n_queries"], i["value"], i["small"], i["note"]) == (25, 0.8, False, "")
    assert (vi["n_queries"], vi["value"]) == (25, 0.4)
    assert (iii["n_queries"], iii["value"], iii["small"], iii["note"]) == (5, 1.0, True, "fewer than 20 queries")
    assert (unk["n_queries"], unk["value"], unk["note"]) == (3, 2 / 3, "unknown skin tone: not part of the gap")
    # the group CI is bootstrap_ci of the group's queries (both metrics share the resamples)
    vals = np.array(HAND[1], float)
    low, high = bootstrap_ci(np.c_[vals, vals / 2], n_boot=400, seed=3)
    assert (i["ci_low"], i["ci_high"]) == (low[0], high[0])
    assert (row_of(table, "I", "map@10")["ci_low"], row_of(table, "I", "map@10")["value"]) == (low[1], 0.4)
    for empty in ("II", "IV", "V"):
        r = row_of(table, empty)
        assert r["n_queries"] == 0 and np.isnan(r["value"]) and r["note"] == "no queries" and r["small"]
    overall = row_of(table, "overall")
    assert overall["n_queries"] == 58 and overall["value"] == pytest.approx(37 / 58)
    # the gap leaves out the small group III and unknown: I (0.8) vs VI (0.4)
    diff, ratio = row_of(table, "difference (max - min)"), row_of(table, "ratio (min / max)")
    assert diff["value"] == pytest.approx(0.4) and ratio["value"] == pytest.approx(0.5)
    assert diff["n_queries"] == 50 and diff["note"] == "max I, min VI" and not diff["small"]
    assert diff["ci_low"] > 0.05 and diff["ci_low"] < 0.4 < diff["ci_high"]
    assert 0 < ratio["ci_low"] < 0.5 < ratio["ci_high"] <= 1
    assert diff["p_value"] < 0.02  # 20/25 vs 10/25: a real difference
    assert table.attrs["gap_groups"] == ["I", "VI"] and table.attrs["by"] == "fitzpatrick"
    assert list(table["group"].unique()) == ["I", "II", "III", "IV", "V", "VI", UNKNOWN, "overall",
                                             "difference (max - min)", "ratio (min / max)"]
    # with a lower threshold the small group joins the gap
    low_min = slice_metrics(pq, metrics=["recall@1"], n_boot=0, min_group=5)
    assert row_of(low_min, "difference (max - min)")["value"] == pytest.approx(0.6)
    assert row_of(low_min, "ratio (min / max)")["value"] == pytest.approx(0.4)
    shown = format_slices(table)
    assert shown.loc["III", "queries"] == "5*" and shown.loc["I", "recall@1"].startswith("0.800 [")
    assert " p=" in shown.loc["difference (max - min)", "recall@1"]


def test_equal_groups_have_no_gap_and_p_one():
    pq = make_per_query({1: [1, 0, 1, 1, 0] * 5, 6: [0, 1, 1, 0, 1] * 5})
    table = slice_metrics(pq, metrics=["recall@1"], n_boot=300)
    diff = row_of(table, "difference (max - min)")
    assert diff["value"] == 0.0 and diff["p_value"] == 1.0
    assert row_of(table, "ratio (min / max)")["value"] == 1.0
    # a small noisy difference: the interval reaches 0 (a percentile interval of max - min would not)
    noisy = slice_metrics(make_per_query({1: [1] * 13 + [0] * 12, 6: [1] * 12 + [0] * 13}), metrics=["recall@1"],
                          n_boot=500)
    diff = row_of(noisy, "difference (max - min)")
    assert diff["value"] == pytest.approx(0.04) and diff["ci_low"] == 0.0 and diff["p_value"] > 0.5
    assert row_of(noisy, "ratio (min / max)")["ci_high"] == 1.0


def test_only_small_groups_gap_falls_back_and_says_so():
    table = slice_metrics(make_per_query({1: [1, 1, 0], 2: [0, 0, 1]}), metrics=["recall@1"], n_boot=0)
    diff = row_of(table, "difference (max - min)")
    assert diff["value"] == pytest.approx(1 / 3) and diff["small"]
    assert "includes groups with fewer than 20 queries" in diff["note"]
    one = slice_metrics(make_per_query({1: [1, 1], None: [0]}), metrics=["recall@1"], n_boot=0)
    assert np.isnan(row_of(one, "difference (max - min)")["value"])
    assert "fewer than two skin-tone groups" in row_of(one, "difference (max - min)")["note"]


def test_requested_groups_and_the_case_table(synth_cases):
    pq = make_per_query(HAND)
    pairs = slice_metrics(pq, by="fitzpatrick_pairs", metrics=["recall@1"], n_boot=0, groups=["I-II", "V-VI"])
    assert list(pairs.loc[pairs["kind"] == "group", "group"]) == ["I-II", "V-VI"]
    with pytest.raises(DermretrError, match="group.s. 'III-IV' of 'fitzpatrick_pairs' have no queries"):
        slice_metrics(make_per_query({1: [1], 6: [0]}), by="fitzpatrick_pairs", groups=["I-II", "III-IV"],
                      metrics=["recall@1"], n_boot=0)
    with pytest.raises(DermretrError, match="no group 'VII'"):
        slice_metrics(pq, groups=["VII"], metrics=["recall@1"], n_boot=0)
    # tones come from the case table when given (here: its estimated ITA)
    cases = synth_cases.head(6).assign(ita_estimated=[60.0, 60.0, 60.0, -40.0, -40.0, -40.0])
    pq = pd.DataFrame({"case_id": cases["case_id"], "patient_id": cases["patient_id"], "n_relevant": 1,
                       "recall@1": [1.0, 1, 1, 0, 0, 1]})
    with pytest.warns(DataWarning, match="not labelled: 0 of 6 queries"):
        table = slice_metrics(pq, cases, by="fitzpatrick_estimated", metrics=["recall@1"], n_boot=0, min_group=1)
    assert row_of(table, "I")["value"] == 1.0 and row_of(table, "VI")["value"] == pytest.approx(1 / 3)


def test_slice_metrics_bad_input(synth_cases):
    pq = make_per_query(HAND)
    with pytest.raises(DermretrError, match="lacks column.*'n_relevant'"):
        slice_metrics(pq.drop(columns="n_relevant"))
    with pytest.raises(DermretrError, match=r"metric\(s\) \['ndcg@5'\] not in the per-query table; it has recall@1"):
        slice_metrics(pq, metrics=["ndcg@5"])
    with pytest.raises(DermretrError, match="no 'monk' column"):
        slice_metrics(pq, by="monk", metrics=["recall@1"])
    with pytest.raises(DermretrError, match="no query has a known Fitzpatrick skin type"):
        slice_metrics(make_per_query({None: [1, 0]}), metrics=["recall@1"])
    with pytest.raises(DermretrError, match="no query has a relevant case"):
        slice_metrics(pq.assign(n_relevant=0), metrics=["recall@1"])
    with pytest.raises(DermretrError, match="mixes several runs .a, b"):
        slice_metrics(pq.assign(run=["a", "b"] * 29), metrics=["recall@1"])
    with pytest.raises(DermretrError, match="has no queries"):
        slice_metrics(pq.iloc[:0], metrics=["recall@1"])
    with pytest.raises(DermretrError, match="min_group must be a positive integer"):
        slice_metrics(pq, metrics=["recall@1"], min_group=0)
    # a per-query table of another dataset / index
    with pytest.raises(DermretrError, match=r"does not come from this case table: 58 of 58 query case ids .*'q0'"):
        slice_metrics(pq, synth_cases, metrics=["recall@1"])
    ours = synth_cases.head(4)
    other = pd.DataFrame({"case_id": ours["case_id"], "patient_id": ours["patient_id"], "n_relevant": 1,
                          "fitzpatrick": (ours["fitzpatrick"] % 6 + 1).astype("Int64"), "recall@1": 1.0})
    with pytest.raises(DermretrError, match="4 queries have another 'fitzpatrick' there"):
        slice_metrics(other, synth_cases, metrics=["recall@1"])


# ----------------------------------------------------------------------------- before / after


def test_compare_runs_finds_a_real_improvement_and_nothing_in_identical_runs():
    before = make_per_query({1: [1] * 30, 6: [0] * 30})
    after = make_per_query({1: [1] * 30, 6: [1] * 24 + [0] * 6})
    cmp = compare_runs(before, after, metrics=["recall@1"], n_boot=500, seed=1)
    vi, i, overall, gap = (row_of(cmp, g) for g in ("VI", "I", "overall", "gap"))
    assert (vi["before"], vi["after"], vi["difference"]) == (0.0, 0.8, pytest.approx(0.8))
    assert vi["ci_low"] > 0.6 and vi["p_value"] < 0.01 and vi["p_holm"] >= vi["p_value"]
    assert i["difference"] == 0.0 and i["p_value"] == 1.0
    assert overall["difference"] == pytest.approx(0.4) and overall["n_queries"] == 60
    assert (gap["before"], gap["after"], gap["difference"]) == (1.0, pytest.approx(0.2), pytest.approx(-0.8))
    assert gap["ci_high"] < -0.5 and gap["p_value"] < 0.01
    # the same model twice: no difference anywhere, p = 1
    same = compare_runs(before, before.sample(frac=1.0, random_state=0), metrics=["recall@1", "map@10"], n_boot=200)
    assert (same["difference"] == 0).all() and (same["p_value"] == 1.0).all()
    # a noisy small change is not significant
    noisy = make_per_query({1: [1, 0] * 15, 6: [0, 1] * 15})
    flipped = noisy.assign(**{"recall@1": noisy["recall@1"].to_numpy()[::-1]})
    assert row_of(compare_runs(noisy, flipped, metrics=["recall@1"], n_boot=300), "overall")["p_value"] > 0.5


def test_compare_runs_refuses_unpaired_tables():
    a = make_per_query({1: [1] * 5, 6: [0] * 5})
    with pytest.raises(DermretrError, match="cover different queries .1 only in the first, 0 only in the second"):
        compare_runs(a, a.iloc[1:], metrics=["recall@1"], n_boot=0)
    with pytest.raises(DermretrError, match="disagree on the relevant cases of 10 queries"):
        compare_runs(a, a.assign(n_relevant=2), metrics=["recall@1"], n_boot=0)
    with pytest.raises(DermretrError, match="same query twice"):
        compare_runs(pd.concat([a, a.iloc[:1]]), a, metrics=["recall@1"], n_boot=0)
