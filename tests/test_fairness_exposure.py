"""Exposure: the skin-tone mix of the retrieved top-k against the gallery (dermretr.fairness._exposure)."""

from __future__ import annotations

import pytest
from fairness_helpers import RESULTS, RandomRetriever, exposure_cases

from dermretr._errors import DermretrError
from dermretr.evaluate import case_search
from dermretr.fairness import UNKNOWN, exposure, retrieve_topk


def test_exposure_on_a_hand_made_results_table():
    t = exposure(RESULTS, exposure_cases(), n_boot=0).set_index("group")
    assert list(t.index) == ["I", "VI", "all queries", "gallery"] and t.attrs["k"] == 3
    assert t.loc["gallery", ["I", "II", "VI", UNKNOWN]].tolist() == [0.4, 0.2, 0.2, 0.2]
    assert t.loc["gallery", "mean_tone"] == 2.5
    assert t.loc["I", ["I", "II", "VI"]].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert t.loc["I", "drift"] == pytest.approx(4 / 3 - 2.5)
    assert (t.loc["I", "same_tone"], t.loc["I", "same_tone_expected"]) == (pytest.approx(2 / 3), 0.4)
    assert t.loc["VI", ["I", "VI", UNKNOWN]].tolist() == pytest.approx([1 / 3] * 3)
    assert t.loc["VI", "drift"] == pytest.approx(1.0)  # the unknown result is left out of the mean tone
    # the mean over queries (each query's known results averaged first), the quantity its CI resamples
    assert t.loc["all queries", "drift"] == pytest.approx((4 / 3 + 3.5) / 2 - 2.5)
    assert t.loc["all queries", "n_retrieved"] == 6 and t.loc["all queries", "n_queries"] == 2
    top2 = exposure(RESULTS, exposure_cases(), k=2, n_boot=0).set_index("group")
    assert top2.loc["I", "I"] == 1.0 and top2.loc["VI", ["I", "VI"]].tolist() == [0.5, 0.5]
    ci = exposure(RESULTS, exposure_cases(), n_boot=100).set_index("group")
    assert ci.loc["all queries", "drift_low"] <= ci.loc["all queries", "drift"] <= ci.loc["all queries", "drift_high"]


def test_exposure_bad_input():
    cases = exposure_cases()
    with pytest.raises(DermretrError, match="1 retrieved case ids are not in it .e.g. 'zz'"):
        exposure(RESULTS.replace({"case_id": {"e": "zz"}}), cases)
    with pytest.raises(DermretrError, match="not in the gallery .'train', 'val'. .e.g. 'q2'"):
        exposure(RESULTS.replace({"case_id": {"e": "q2"}}), cases)
    assert len(exposure(RESULTS.replace({"case_id": {"e": "q2"}}), cases, gallery_splits=None, n_boot=0))
    with pytest.raises(DermretrError, match="k=5 but the results hold only the top 3"):
        exposure(RESULTS, cases, k=5)
    with pytest.raises(DermretrError, match="add the query's case id as 'query_case_id'"):
        exposure(RESULTS.rename(columns={"query_case_id": "query"}), cases)
    with pytest.raises(DermretrError, match="no 'monk' column"):
        exposure(RESULTS, cases, by="monk")


def test_retrieve_topk_ranks_like_case_search_and_excludes_the_patient(synth_cases):
    ret = RandomRetriever()
    per_query, _ = case_search(ret, synth_cases, ks=(1,), ties="stable")
    top = retrieve_topk(ret, synth_cases, k=5)
    assert len(top) == 5 * len(per_query) and top["rank"].tolist() == [1, 2, 3, 4, 5] * len(per_query)
    assert (top.groupby("query_case_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    info = synth_cases.set_index("case_id")
    q, r = info.loc[top["query_case_id"]], info.loc[top["case_id"]]
    assert (q["patient_id"].to_numpy() != r["patient_id"].to_numpy()).all()
    assert set(r["split"].astype(str)) <= {"train", "val"} and set(q["split"].astype(str)) == {"test"}
    first = top[top["rank"] == 1].set_index("query_case_id")
    hit = (info.loc[first["case_id"], "diagnosis_group"].to_numpy()
           == info.loc[first.index, "diagnosis_group"].to_numpy())
    assert hit.astype(float).tolist() == per_query.set_index("case_id").loc[first.index, "recall@1"].tolist()
    table = exposure(top, synth_cases, n_boot=0)
    assert table.set_index("group").loc["all queries", "n_retrieved"] == len(top)
