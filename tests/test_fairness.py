"""Fairness slicing: groupings, per-group metrics with CIs and gaps, comparison, exposure, ITA from pixels, CLI."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DermretrError
from dermretr.cli import main
from dermretr.color import ita, lab_to_rgb, rgb_to_lab
from dermretr.evaluate import bootstrap_ci, case_search
from dermretr.fairness import (GROUPINGS, UNKNOWN, compare_runs, estimate_ita, estimate_skin_tone, exposure,
                               format_slices, ita_agreement, ita_confusion, ita_to_fitzpatrick, plot_comparison,
                               plot_exposure, plot_ita_confusion, plot_slices, retrieve_topk, skin_mask,
                               skin_tone_groups, slice_metrics)

# ----------------------------------------------------------------------------- helpers


def _per_query(groups: dict, metric: str = "recall@1") -> pd.DataFrame:
    """One query per value: ``{fitzpatrick (or None): [metric values]}``; map@10 = half the metric."""
    rows, i = [], 0
    for fitz, values in groups.items():
        for v in values:
            rows.append({"case_id": f"q{i}", "patient_id": f"p{i}", "fitzpatrick": fitz, "n_relevant": 1,
                         metric: float(v), "map@10": float(v) / 2})
            i += 1
    out = pd.DataFrame(rows)
    out["fitzpatrick"] = out["fitzpatrick"].astype("Int64")
    return out


def _row(table: pd.DataFrame, group: str, metric: str = "recall@1") -> pd.Series:
    sel = table[(table["group"] == group) & (table["metric"] == metric)]
    assert len(sel) == 1, (group, metric, table)
    return sel.iloc[0]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dermretr: error: ") and err.count("\n") == 1, err
    return err


def _flat(lab, size=64, dtype=float) -> np.ndarray:
    rgb = np.broadcast_to(lab_to_rgb(np.asarray(lab, dtype=float)), (size, size, 3)).copy()
    return (rgb * 255 + 0.5).astype(np.uint8) if dtype == np.uint8 else rgb


class RandomRetriever:
    """Deterministic random embeddings per image path (texts ignored)."""

    kind = "random"

    def _vectors(self, paths):
        out = np.stack([np.random.default_rng(zlib.crc32(str(p).encode())).standard_normal(16) for p in paths])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_targets(self, paths, **_):
        return {"global": self._vectors(paths), "local": None, "alpha": 0.0}

    def encode_queries(self, paths, texts, **_):
        return {"global": self._vectors(paths), "local": None, "alpha": 0.0}


# ----------------------------------------------------------------------------- groupings


def test_every_grouping_labels_cases_and_keeps_unknown():
    cases = pd.DataFrame({
        "fitzpatrick": pd.array([1, 3, 6, pd.NA, pd.NA], dtype="Int64"),
        "skin_tone_group": [None, None, None, "V-VI", None],
        "monk": pd.array([1, 10, pd.NA, 5, 7], dtype="Int64"),
        "ita": [60.0, 30.0, -40.0, np.nan, 12.0],
        "ita_estimated": [56.0, 41.5, -31.0, 9.0, np.nan],
    })
    assert skin_tone_groups(cases, "fitzpatrick").tolist() == ["I", "III", "VI", UNKNOWN, UNKNOWN]
    assert skin_tone_groups(cases, "fitzpatrick_pairs").tolist() == ["I-II", "III-IV", "V-VI", "V-VI", UNKNOWN]
    assert skin_tone_groups(cases, "monk").tolist() == ["1", "10", UNKNOWN, "5", "7"]
    assert skin_tone_groups(cases, "ita_category").tolist() == ["very light", "intermediate", "dark", UNKNOWN, "tan"]
    assert skin_tone_groups(cases, "ita_category_estimated").tolist() == [
        "very light", "light", "dark", "brown", UNKNOWN]
    assert skin_tone_groups(cases, "fitzpatrick_estimated").tolist() == ["I", "II", "VI", "V", UNKNOWN]
    groups = skin_tone_groups(cases, "fitzpatrick")
    assert list(groups.cat.categories) == [*GROUPINGS["fitzpatrick"], UNKNOWN] and groups.cat.ordered
    assert groups.index.equals(cases.index) and groups.name == "fitzpatrick"
    # estimate_skin_tone's own columns win over ita_estimated
    cases["fitzpatrick_estimated"] = pd.array([2, 2, 2, 2, pd.NA], dtype="Int64")
    assert skin_tone_groups(cases, "fitzpatrick_estimated").tolist() == ["II"] * 4 + [UNKNOWN]


def test_groupings_refuse_absent_unknown_or_off_scale_columns():
    cases = pd.DataFrame({"case_id": ["a", "b"], "fitzpatrick": pd.array([pd.NA, pd.NA], dtype="Int64")})
    with pytest.raises(DermretrError, match="no case has a known Fitzpatrick skin type .all 2 are unknown"):
        skin_tone_groups(cases, "fitzpatrick")
    with pytest.raises(DermretrError, match="no 'monk' column.*Monk labels"):
        skin_tone_groups(cases, "monk")
    with pytest.raises(DermretrError, match="estimate skin tone from the pixels first"):
        skin_tone_groups(cases, "fitzpatrick_estimated")
    with pytest.raises(DermretrError, match="only DermSynth has a labelled 'ita'"):
        skin_tone_groups(cases, "ita_category")
    with pytest.raises(DermretrError, match="unknown skin-tone grouping 'skin'; choose one of fitzpatrick"):
        skin_tone_groups(cases, "skin")
    with pytest.raises(DermretrError, match=r"values off the 1\.\.6 scale \(7\)"):
        skin_tone_groups(pd.DataFrame({"fitzpatrick": [1, 7]}), "fitzpatrick")


def test_fairness_refuses_the_tone_protocol_which_is_already_by_skin_tone(tmp_path):
    from dermretr.fairness import run_fairness

    with pytest.raises(DermretrError, match="the tone protocol is already by skin tone: use `dermretr evaluate"):
        run_fairness(tmp_path, "synthetic:nowhere", protocol="tone")
    with pytest.raises(DermretrError, match="unknown skin-tone labels .'light-ish'"):
        skin_tone_groups(pd.DataFrame({"ita_category": ["light", "light-ish"]}), "ita_category")


def test_ita_to_fitzpatrick_follows_the_categories_and_dermsynth_ranges():
    from dermretr.data.synth.render import ITA_RANGES

    angles = (56, 55, 41.5, 41, 28.5, 10.5, 10, -29, -30.5)
    assert [ita_to_fitzpatrick(a) for a in angles] == [1, 2, 2, 3, 3, 4, 5, 5, 6]
    assert ita_to_fitzpatrick(float("nan")) is None
    for fitz, (lo, hi) in ITA_RANGES.items():  # DermSynth draws each type inside its category
        assert ita_to_fitzpatrick(lo) == ita_to_fitzpatrick(hi) == fitz


# ----------------------------------------------------------------------------- slicing


HAND = {1: [1] * 20 + [0] * 5, 6: [1] * 10 + [0] * 15, 3: [1] * 5, None: [1, 0, 1]}


def test_slice_metrics_matches_hand_computed_groups_gap_and_flags():
    pq = _per_query(HAND)
    ignored = _per_query({1: [0, 0]}).assign(case_id=["x1", "x2"], n_relevant=0)  # no relevant case: left out
    pq = pd.concat([pq, ignored], ignore_index=True)
    table = slice_metrics(pq, by="fitzpatrick", metrics=("recall@1", "map@10"), n_boot=400, seed=3)
    i, vi, iii, unk = (_row(table, g) for g in ("I", "VI", "III", UNKNOWN))
    assert (i["n_queries"], i["value"], i["small"], i["note"]) == (25, 0.8, False, "")
    assert (vi["n_queries"], vi["value"]) == (25, 0.4)
    assert (iii["n_queries"], iii["value"], iii["small"], iii["note"]) == (5, 1.0, True, "fewer than 20 queries")
    assert (unk["n_queries"], unk["value"], unk["note"]) == (3, 2 / 3, "unknown skin tone: not part of the gap")
    # the group CI is bootstrap_ci of the group's queries (both metrics share the resamples)
    vals = np.array(HAND[1], float)
    low, high = bootstrap_ci(np.c_[vals, vals / 2], n_boot=400, seed=3)
    assert (i["ci_low"], i["ci_high"]) == (low[0], high[0])
    assert (_row(table, "I", "map@10")["ci_low"], _row(table, "I", "map@10")["value"]) == (low[1], 0.4)
    for empty in ("II", "IV", "V"):
        r = _row(table, empty)
        assert r["n_queries"] == 0 and np.isnan(r["value"]) and r["note"] == "no queries" and r["small"]
    overall = _row(table, "overall")
    assert overall["n_queries"] == 58 and overall["value"] == pytest.approx(37 / 58)
    # the gap leaves out the small group III and unknown: I (0.8) vs VI (0.4)
    diff, ratio = _row(table, "difference (max - min)"), _row(table, "ratio (min / max)")
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
    assert _row(low_min, "difference (max - min)")["value"] == pytest.approx(0.6)
    assert _row(low_min, "ratio (min / max)")["value"] == pytest.approx(0.4)
    shown = format_slices(table)
    assert shown.loc["III", "queries"] == "5*" and shown.loc["I", "recall@1"].startswith("0.800 [")
    assert " p=" in shown.loc["difference (max - min)", "recall@1"]


def test_equal_groups_have_no_gap_and_p_one():
    pq = _per_query({1: [1, 0, 1, 1, 0] * 5, 6: [0, 1, 1, 0, 1] * 5})
    table = slice_metrics(pq, metrics=["recall@1"], n_boot=300)
    diff = _row(table, "difference (max - min)")
    assert diff["value"] == 0.0 and diff["p_value"] == 1.0
    assert _row(table, "ratio (min / max)")["value"] == 1.0
    # a small noisy difference: the interval reaches 0 (a percentile interval of max - min would not)
    noisy = slice_metrics(_per_query({1: [1] * 13 + [0] * 12, 6: [1] * 12 + [0] * 13}), metrics=["recall@1"],
                          n_boot=500)
    diff = _row(noisy, "difference (max - min)")
    assert diff["value"] == pytest.approx(0.04) and diff["ci_low"] == 0.0 and diff["p_value"] > 0.5
    assert _row(noisy, "ratio (min / max)")["ci_high"] == 1.0


def test_only_small_groups_gap_falls_back_and_says_so():
    table = slice_metrics(_per_query({1: [1, 1, 0], 2: [0, 0, 1]}), metrics=["recall@1"], n_boot=0)
    diff = _row(table, "difference (max - min)")
    assert diff["value"] == pytest.approx(1 / 3) and diff["small"]
    assert "includes groups with fewer than 20 queries" in diff["note"]
    one = slice_metrics(_per_query({1: [1, 1], None: [0]}), metrics=["recall@1"], n_boot=0)
    assert np.isnan(_row(one, "difference (max - min)")["value"])
    assert "fewer than two skin-tone groups" in _row(one, "difference (max - min)")["note"]


def test_requested_groups_and_the_case_table(synth_cases):
    pq = _per_query(HAND)
    pairs = slice_metrics(pq, by="fitzpatrick_pairs", metrics=["recall@1"], n_boot=0, groups=["I-II", "V-VI"])
    assert list(pairs.loc[pairs["kind"] == "group", "group"]) == ["I-II", "V-VI"]
    with pytest.raises(DermretrError, match="group.s. 'III-IV' of 'fitzpatrick_pairs' have no queries"):
        slice_metrics(_per_query({1: [1], 6: [0]}), by="fitzpatrick_pairs", groups=["I-II", "III-IV"],
                      metrics=["recall@1"], n_boot=0)
    with pytest.raises(DermretrError, match="no group 'VII'"):
        slice_metrics(pq, groups=["VII"], metrics=["recall@1"], n_boot=0)
    # tones come from the case table when given (here: its estimated ITA)
    cases = synth_cases.head(6).assign(ita_estimated=[60.0, 60.0, 60.0, -40.0, -40.0, -40.0])
    pq = pd.DataFrame({"case_id": cases["case_id"], "patient_id": cases["patient_id"], "n_relevant": 1,
                       "recall@1": [1.0, 1, 1, 0, 0, 1]})
    table = slice_metrics(pq, cases, by="fitzpatrick_estimated", metrics=["recall@1"], n_boot=0, min_group=1)
    assert _row(table, "I")["value"] == 1.0 and _row(table, "VI")["value"] == pytest.approx(1 / 3)


def test_slice_metrics_bad_input(synth_cases):
    pq = _per_query(HAND)
    with pytest.raises(DermretrError, match="lacks column.*'n_relevant'"):
        slice_metrics(pq.drop(columns="n_relevant"))
    with pytest.raises(DermretrError, match=r"metric\(s\) \['ndcg@5'\] not in the per-query table; it has recall@1"):
        slice_metrics(pq, metrics=["ndcg@5"])
    with pytest.raises(DermretrError, match="no 'monk' column"):
        slice_metrics(pq, by="monk", metrics=["recall@1"])
    with pytest.raises(DermretrError, match="no query has a known Fitzpatrick skin type"):
        slice_metrics(_per_query({None: [1, 0]}), metrics=["recall@1"])
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
    before = _per_query({1: [1] * 30, 6: [0] * 30})
    after = _per_query({1: [1] * 30, 6: [1] * 24 + [0] * 6})
    cmp = compare_runs(before, after, metrics=["recall@1"], n_boot=500, seed=1)
    vi, i, overall, gap = (_row(cmp, g) for g in ("VI", "I", "overall", "gap"))
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
    noisy = _per_query({1: [1, 0] * 15, 6: [0, 1] * 15})
    flipped = noisy.assign(**{"recall@1": noisy["recall@1"].to_numpy()[::-1]})
    assert _row(compare_runs(noisy, flipped, metrics=["recall@1"], n_boot=300), "overall")["p_value"] > 0.5


def test_compare_runs_refuses_unpaired_tables():
    a = _per_query({1: [1] * 5, 6: [0] * 5})
    with pytest.raises(DermretrError, match="cover different queries .1 only in the first, 0 only in the second"):
        compare_runs(a, a.iloc[1:], metrics=["recall@1"], n_boot=0)
    with pytest.raises(DermretrError, match="disagree on the relevant cases of 10 queries"):
        compare_runs(a, a.assign(n_relevant=2), metrics=["recall@1"], n_boot=0)
    with pytest.raises(DermretrError, match="same query twice"):
        compare_runs(pd.concat([a, a.iloc[:1]]), a, metrics=["recall@1"], n_boot=0)


# ----------------------------------------------------------------------------- exposure


def _exposure_cases():
    return pd.DataFrame({"case_id": ["a", "b", "c", "d", "e", "q1", "q2"],
                         "fitzpatrick": pd.array([1, 1, 2, 6, pd.NA, 1, 6], dtype="Int64"),
                         "split": ["train"] * 5 + ["test"] * 2})


RESULTS = pd.DataFrame({"query_case_id": ["q1"] * 3 + ["q2"] * 3, "rank": [1, 2, 3] * 2,
                        "case_id": ["a", "b", "c", "a", "d", "e"]})


def test_exposure_on_a_hand_made_results_table():
    t = exposure(RESULTS, _exposure_cases(), n_boot=0).set_index("group")
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
    top2 = exposure(RESULTS, _exposure_cases(), k=2, n_boot=0).set_index("group")
    assert top2.loc["I", "I"] == 1.0 and top2.loc["VI", ["I", "VI"]].tolist() == [0.5, 0.5]
    ci = exposure(RESULTS, _exposure_cases(), n_boot=100).set_index("group")
    assert ci.loc["all queries", "drift_low"] <= ci.loc["all queries", "drift"] <= ci.loc["all queries", "drift_high"]


def test_exposure_bad_input():
    cases = _exposure_cases()
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


# ----------------------------------------------------------------------------- skin tone from pixels


@pytest.mark.parametrize("lab", [(70.0, 10.0, 15.0), (45.0, 12.0, 20.0), (30.0, 8.0, 12.0), (85.0, 6.0, 14.0)])
def test_estimate_ita_of_a_flat_colour_is_its_ita(lab):
    img = _flat(lab)
    L, _, b = rgb_to_lab(img[0, 0])
    assert estimate_ita(img) == pytest.approx(float(ita(L, b)), abs=1e-9)
    assert estimate_ita(img) == pytest.approx(float(ita(lab[0], lab[2])), abs=0.05)
    assert estimate_ita(_flat(lab, dtype=np.uint8)) == pytest.approx(float(ita(lab[0], lab[2])), abs=1.0)


def _skin_with_lesion_hair_and_corners(size=128):
    rng = np.random.default_rng(0)
    skin_lab = np.array([62.0, 10.0, 17.0])
    img = _flat(skin_lab, size) * (1 + 0.01 * rng.standard_normal((size, size, 1)))
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    lesion = np.hypot(yy - 0.1, xx + 0.05) < 0.6
    img[lesion] = lab_to_rgb(np.array([35.0, 15.0, 25.0]))
    for x0 in (0.3, -0.6, 0.75):  # three dark hairs
        img[np.abs(xx - x0 - 0.3 * yy) < 0.02] = lab_to_rgb(np.array([15.0, 3.0, 6.0]))
    img[np.hypot(yy, xx) > 1.0] = 0.01  # dark vignette corners
    return np.clip(img, 0, 1), lesion, float(ita(skin_lab[0], skin_lab[2]))


def test_estimate_ita_ignores_lesion_hair_and_dark_corners():
    img, lesion, truth = _skin_with_lesion_hair_and_corners()
    lab = rgb_to_lab(img)
    naive = float(ita(np.median(lab[..., 0]), np.median(lab[..., 2])))
    assert abs(naive - truth) > 5  # the whole image is a poor estimate
    assert estimate_ita(img) == pytest.approx(truth, abs=1.0)  # Otsu finds the lesion
    assert estimate_ita(img, lesion) == pytest.approx(truth, abs=1.0)
    mask = skin_mask(img)
    assert not (mask & lesion).any() and not mask[0, 0] and mask.mean() > 0.3


def test_estimate_ita_bad_input():
    with pytest.raises(DermretrError, match="an RGB image"):
        estimate_ita(np.zeros((32, 32)))
    with pytest.raises(DermretrError, match=r"float image must hold values in \[0, 1\]"):
        estimate_ita(np.full((32, 32, 3), 2.0))
    with pytest.raises(DermretrError, match="the lesion mask is"):
        estimate_ita(_flat((60, 10, 15), 32), np.zeros((16, 16), bool))
    assert np.isnan(estimate_ita(_flat((60, 10, 15), 32), np.ones((32, 32), bool)))  # no skin left
    with pytest.raises(DermretrError, match="cannot|not found|No such"):
        estimate_ita("/no/such/image.png")


def test_dermsynth_skin_type_estimated_within_one_type(synth_cases):
    for use_masks in (True, False):
        est = estimate_skin_tone(synth_cases, use_masks=use_masks, progress=False)
        confusion = ita_confusion(est)
        agreement = ita_agreement(est)
        print(f"\nDermSynth (masks={use_masks}): {agreement}\n{confusion}")
        assert agreement["n"] == len(synth_cases) and est["fitzpatrick_estimated"].notna().all()
        assert agreement["within_one"] >= 0.8 and agreement["exact"] >= 0.8
        assert agreement["ita_mae"] < 3.0
        assert int(confusion.to_numpy().sum()) == len(synth_cases)
        assert confusion.index.tolist() == list(GROUPINGS["fitzpatrick"])
    assert est["ita_category_estimated"].dtype == "string" and est["fitzpatrick_estimated"].dtype == "Int64"


def test_estimate_skin_tone_marks_unreadable_images_unknown(tmp_path):
    from PIL import Image

    from dermretr._errors import DataWarning

    good = tmp_path / "good.png"
    Image.fromarray(_flat((70.0, 10.0, 15.0), 64, np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    cases = pd.DataFrame({"case_id": ["a", "b"], "image_path": [str(good), str(bad)], "fitzpatrick": [2, 5]})
    with pytest.warns(DataWarning, match="1 of 2 cases .1 unreadable"):
        est = estimate_skin_tone(cases, progress=False)
    assert est["ita_category_estimated"].tolist()[0] == "light" and est["fitzpatrick_estimated"].isna().tolist() == [
        False, True]
    m = ita_confusion(est)
    assert UNKNOWN in m.columns and m.attrs["exact"] == 0.5 and int(m.loc["V", UNKNOWN]) == 1


# ----------------------------------------------------------------------------- figures


def test_figures_are_drawn_and_saved(tmp_path):
    from matplotlib.figure import Figure

    from dermretr._io import save_figure

    pq = _per_query(HAND)
    table = slice_metrics(pq, metrics=["recall@1", "map@10"], n_boot=100)
    after = pq.assign(**{"recall@1": 1.0})
    figs = {"slices": plot_slices(table), "exposure": plot_exposure(exposure(RESULTS, _exposure_cases(), n_boot=50)),
            "confusion": plot_ita_confusion(ita_confusion(pd.DataFrame({"fitzpatrick": [1, 2, 6],
                                                                        "fitzpatrick_estimated": [1, 3, 6]}))),
            "comparison": plot_comparison(compare_runs(pq, after, metrics=["recall@1"], n_boot=50))}
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        assert save_figure(fig, tmp_path / f"{name}.png").stat().st_size > 1000
    texts = [t.get_text() for ax in figs["slices"].axes for t in ax.texts]
    assert len(figs["slices"].axes) == 2 and any(t.startswith("gap 0.400") for t in texts)
    assert any(t == "n=0" for t in texts)
    with pytest.raises(DermretrError, match="plot_slices needs the table of slice_metrics"):
        plot_slices(pq)


# ----------------------------------------------------------------------------- command line


def _fake_run(path, kind, seed):
    import torch

    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    torch.manual_seed(seed)
    Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind=kind, n_masks=2).save(
        path / "checkpoints" / "best.pt")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("fair-runs")
    return _fake_run(base / "after", "full", 0), _fake_run(base / "before", "image", 1)


def test_cli_fairness_end_to_end(synth_root, synth_cases, runs, tmp_path, capsys):
    after, before = runs
    out = tmp_path / "fair"
    rc = main(["fairness", "--run", str(after), "--data", f"synthetic:{synth_root}", "--by", "fitzpatrick",
               "--out", str(out), "--n-boot", "50", "--min-group", "3", "--exposure-k", "5", "--baseline",
               str(before), "--estimate-ita", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "difference (max - min)" in printed and "ratio (min / max)" in printed and "Exposure" in printed
    assert "Estimated vs labelled skin type" in printed and "after vs before" in printed
    for name in ("fairness_fitzpatrick.csv", "fairness_fitzpatrick.png", "per_query.csv", "exposure_fitzpatrick.csv",
                 "exposure_fitzpatrick.png", "ita_confusion.csv", "ita_confusion.png", "skin_tone_estimated.csv",
                 "comparison_fitzpatrick.csv", "comparison_fitzpatrick.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "fairness_fitzpatrick.csv")
    n_test = int((synth_cases["split"] == "test").sum())
    overall = table[(table["group"] == "overall") & (table["metric"] == "recall@1")]
    assert 0 < int(overall["n_queries"].iloc[0]) <= n_test
    assert set(table["metric"]) == {"recall@1", "map@10"}
    per_query = pd.read_csv(out / "per_query.csv")
    assert len(per_query) == n_test and set(per_query["run"]) == {"after"}
    # the written per-query table slices again to the same numbers
    again = slice_metrics(per_query, synth_cases, metrics=["recall@1", "map@10"], n_boot=50, min_group=3)
    assert np.allclose(again["value"].to_numpy(float), table["value"].to_numpy(float), equal_nan=True)
    exp = pd.read_csv(out / "exposure_fitzpatrick.csv").set_index("group")
    assert exp.loc["all queries", "n_retrieved"] == 5 * n_test

    rc = main(["fairness", "--run", str(after), "--data", f"synthetic:{synth_root}", "--by", "ita_category_estimated",
               "--out", str(out), "--n-boot", "0", "--exposure-k", "0", "--no-progress"])
    assert rc == 0 and "ITA category (estimated from pixels)" in capsys.readouterr().out
    assert (out / "fairness_ita_category_estimated.csv").is_file()


def test_cli_groupings_are_the_library_ones():
    from dermretr.cli import _GROUPINGS

    assert _GROUPINGS == tuple(GROUPINGS)


def test_cli_fairness_bad_input(synth_root, runs, tmp_path, capsys):
    after, _ = runs
    data = f"synthetic:{synth_root}"
    assert main(["fairness", "--run", str(after), "--data", data, "--by", "monk", "--out", str(tmp_path)]) == 2
    assert "no case has a known Monk skin tone" in _one_line_error(capsys)
    assert main(["fairness", "--run", str(tmp_path / "nope"), "--data", data]) == 2
    assert "run folder" in _one_line_error(capsys)
    assert main(["fairness", "--run", str(after), "--data", data, "--metrics", "recall@0"]) == 2
    assert "unknown metric 'recall@0'" in _one_line_error(capsys)
    file = tmp_path / "file.txt"
    file.write_text("x")
    assert main(["fairness", "--run", str(after), "--data", data, "--out", str(file)]) == 2
    assert "is a file" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["fairness", "--run", str(after), "--data", data, "--by", "skin"])
    assert exc.value.code == 2 and "invalid choice: 'skin'" in capsys.readouterr().err
