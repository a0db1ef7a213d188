"""Non-learned floors (random, majority, criteria match) of the case and modify protocols (tone: test_tone.py)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DermretrError
from dermretr.data.vocab import CRITERIA
from dermretr.evaluate import (
    choose_findings_weight,
    hybrid_scores,
    metric_records,
    paired_difference,
    rank_metrics,
    results_table,
    scores_search,
    summarize_metrics,
)
from dermretr.floors import (
    FLOORS,
    MODIFY_FLOORS,
    available_floors,
    criteria_scores,
    evaluate_floors,
    expected_random_metrics,
    expected_tie_metrics,
    floor_search,
    modify_floor_search,
)

KS = (1, 2, 3, 5, 10)
PH2 = Path("/work/shared/data/ph2")


# ----------------------------------------------------------------------------- the random floor, analytically


def _all_orders(n_items: int, n_relevant: int, n_excluded: int = 2):
    """rank_metrics of every order of ``n_items`` (the first ``n_relevant`` relevant), plus excluded columns."""
    perms = np.array(list(itertools.permutations(range(n_items))), dtype=float).reshape(-1, n_items)
    scores = np.concatenate([-perms, np.zeros((len(perms), n_excluded))], axis=1)
    relevant = np.zeros(scores.shape, dtype=bool)
    relevant[:, :n_relevant] = True
    relevant[:, n_items:] = True  # excluded relevant columns must not count
    exclude = np.zeros(scores.shape, dtype=bool)
    exclude[:, n_items:] = True
    return rank_metrics(scores, relevant, exclude, ks=KS)


@pytest.mark.parametrize("n_items", [1, 2, 3, 4, 5, 6])
def test_random_expectation_equals_the_mean_over_every_order(n_items):
    # exhaustive: every permutation is equally likely, so the mean over all of them IS the expectation;
    # covers R = 0, R = N, N = 1 and K > N
    for n_relevant in range(n_items + 1):
        exact = _all_orders(n_items, n_relevant).mean()
        got = expected_random_metrics([n_items], [n_relevant], ks=KS).iloc[0]
        assert list(got.index) == list(exact.index)
        np.testing.assert_allclose(got.to_numpy(float), exact.to_numpy(float), rtol=0, atol=1e-12,
                                   err_msg=f"N={n_items} R={n_relevant}")
        if n_relevant == 0:
            assert (got.drop("n_relevant") == 0).all()
        if n_relevant == n_items:
            assert got["recall@1"] == got["mrr"] == 1.0 and got["map@10"] == pytest.approx(1.0)


def test_random_expectation_matches_monte_carlo_on_a_larger_gallery():
    n_items, n_relevant, draws = 40, 7, 20000
    rng = np.random.default_rng(0)
    scores = rng.permuted(np.tile(np.arange(n_items, dtype=float), (draws, 1)), axis=1)
    relevant = np.zeros((draws, n_items + 3), dtype=bool)
    relevant[:, :n_relevant] = True
    exclude = np.zeros_like(relevant)
    exclude[:, n_items:] = True
    scores = np.concatenate([scores, np.full((draws, 3), 99.0)], axis=1)  # excluded, though scored best
    mc = rank_metrics(scores, relevant, exclude, ks=(1, 5, 10, 50))
    got = expected_random_metrics([n_items], [n_relevant], ks=(1, 5, 10, 50)).iloc[0]
    for col in mc.columns.drop("n_relevant"):
        se = mc[col].std() / math.sqrt(draws)
        assert abs(mc[col].mean() - got[col]) < 4.5 * se + 1e-12, col
    assert mc["n_relevant"].iloc[0] == got["n_relevant"] == n_relevant


def test_random_expectation_closed_forms_by_hand():
    # independent of scipy: the hypergeometric miss probability and E[1/first] from math.comb
    n, r = 9, 3
    t = expected_random_metrics([n], [r], ks=(4,)).iloc[0]
    assert t["recall@4"] == pytest.approx(1 - math.comb(n - r, 4) / math.comb(n, 4))
    assert t["precision@4"] == pytest.approx(r / n)
    mrr = sum(math.comb(n - j, r - 1) / math.comb(n, r) / j for j in range(1, n - r + 2))
    assert t["mrr"] == pytest.approx(mrr)
    # precision@K divides by K even when K exceeds the gallery, as rank_metrics does
    assert expected_random_metrics([3], [1], ks=(10,))["precision@10"].item() == pytest.approx(1 / 10)
    with pytest.raises(DermretrError, match="0 <= n_relevant <= n_items"):
        expected_random_metrics([3], [4])


def test_expected_ties_equal_the_mean_over_every_tie_break():
    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(1, 7))
        scores = rng.integers(0, 3, n).astype(float)
        relevant = rng.random(n) < 0.4
        exclude = rng.random(n) < 0.15
        keys = np.array(list(itertools.permutations(range(n))))
        # every order that keeps the scores' order, each equally often: rank by (score, random key)
        ranked = np.array([np.argsort(np.lexsort((key, -scores))) for key in keys], dtype=float)
        exact = rank_metrics(-ranked, np.tile(relevant, (len(keys), 1)), np.tile(exclude, (len(keys), 1)),
                             ks=KS).mean()
        got = expected_tie_metrics(scores[None], relevant[None], exclude[None], ks=KS).iloc[0]
        np.testing.assert_allclose(got.to_numpy(float), exact.to_numpy(float), rtol=0, atol=1e-12)
    # all scores equal: the random floor
    flat = expected_tie_metrics(np.zeros((1, 30)), (np.arange(30) < 7)[None], ks=(1, 10)).iloc[0]
    assert np.allclose(flat.to_numpy(float), expected_random_metrics([30], [7], ks=(1, 10)).iloc[0].to_numpy(float))


# ----------------------------------------------------------------------------- floors on hand-made tables


def _imbalanced() -> pd.DataFrame:
    """Gallery: 4 NEV, 2 MEL, 1 SK (NEV the majority); test: 2 NEV, 3 MEL, 1 SK (MEL the test majority)."""
    gallery = ["NEV", "MEL", "NEV", "SK", "NEV", "MEL", "NEV"]
    test = ["NEV", "MEL", "MEL", "NEV", "SK", "MEL"]
    groups = gallery + test
    n = len(groups)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                         "diagnosis": [g.lower() for g in groups], "diagnosis_group": groups,
                         "split": ["train"] * 5 + ["val"] * 2 + ["test"] * 6})


@pytest.mark.parametrize("ties", ["stable", "expected"])
def test_majority_floor_ranks_the_gallery_majority_first(ties):
    cases = _imbalanced()
    pq, summary = floor_search(cases, "majority", ks=(1, 5), ties=ties)
    assert list(pq.columns[:3]) == ["method", "case_id", "patient_id"] and set(pq["method"]) == {"majority"}
    assert pq["recall@1"].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]  # NEV (gallery majority), not MEL
    nev = pq["diagnosis_group"] == "NEV"
    assert (pq.loc[nev, "map@5"] == 1.0).all() and (pq.loc[nev, "mrr"] == 1.0).all()
    if ties == "stable":
        # the rest block in gallery order: MEL (gallery position 1), SK (3), MEL (5) after the 4 NEV
        assert pq.loc[~nev, "mrr"].tolist() == [1 / 5, 1 / 5, 1 / 6, 1 / 5]
    else:
        # rest block of 3 in random order: MEL (2 of 3) first at 5 w.p. 2/3, else at 6; SK at 5, 6, 7
        mel, sk = (2 / 3) / 5 + (1 / 3) / 6, (1 / 5 + 1 / 6 + 1 / 7) / 3
        assert pq.loc[~nev, "mrr"].tolist() == pytest.approx([mel, mel, sk, mel])
    assert summary["recall@1"] == pytest.approx(2 / 6)
    macro = summarize_metrics(pq, average="macro")
    assert macro["recall@1"] == pytest.approx((1 + 0 + 0) / 3) and macro["n_classes"] == 3
    recs = metric_records(pq, "floor:majority", "majority", "case", n_boot=200)
    by = {(r["average"], r["metric"], r["k"]): r for r in recs}
    assert by["micro", "recall", 1]["value"] == pytest.approx(1 / 3)
    assert by["macro", "recall", 1]["value"] == pytest.approx(1 / 3)
    # precision@5: 4 NEV then the first of the rest (MEL in gallery order; a MEL 2 times in 3 at random)
    mel_first, sk_first = (1.0, 0.0) if ties == "stable" else (2 / 3, 1 / 3)
    want = (2 * 4 / 5 + 3 * mel_first / 5 + sk_first / 5) / 6
    assert by["micro", "precision", 5]["value"] == pytest.approx(want)


def test_micro_rewards_the_majority_floor_and_macro_does_not():
    # 8 NEV test queries, 2 MEL: majority first gives micro hit@1 0.8, macro 0.5
    groups = ["NEV"] * 12 + ["MEL"] * 3 + ["NEV"] * 8 + ["MEL"] * 2
    n = len(groups)
    cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                          "diagnosis": "x", "diagnosis_group": groups, "split": ["train"] * 15 + ["test"] * 10})
    pq, recs = evaluate_floors(cases, ["majority", "random"], ks=(1,), n_boot=0)
    value = {(r["method"], r["average"], r["metric"]): r["value"] for r in recs}
    assert value["majority", "micro", "recall"] == pytest.approx(0.8)
    assert value["majority", "macro", "recall"] == pytest.approx(0.5)
    # random: hit@1 = R / N per query: NEV 12/15, MEL 3/15
    assert value["random", "micro", "recall"] == pytest.approx((8 * 12 / 15 + 2 * 3 / 15) / 10)
    assert value["random", "macro", "recall"] == pytest.approx((12 / 15 + 3 / 15) / 2)
    assert set(pq["run"]) == {"floor:majority", "floor:random"} and set(pq["protocol"]) == {"case"}


def test_floors_follow_the_protocol_exclusions():
    cases = _imbalanced()
    cases.loc[cases["case_id"] == "c8", "patient_id"] = "p1"  # a MEL query shares its patient with a MEL gallery case
    pq, _ = floor_search(cases, "random", ks=(1,))
    row = pq.set_index("case_id").loc["c8"]
    assert row["n_relevant"] == 1 and row["recall@1"] == pytest.approx(1 / 6)  # 1 MEL among 6 rankable
    pq_maj, _ = floor_search(cases, "majority", ks=(1,))
    assert pq_maj["n_relevant"].tolist() == pq["n_relevant"].tolist()
    # so a model's and a floor's tables pair up
    assert paired_difference(pq_maj, pq, metrics=["recall@1"], n_boot=0).loc["recall@1", "n_queries"] == 6


def _with_findings() -> pd.DataFrame:
    na = None
    rows = [  # query first, then gallery g0..g4
        ("q", "test", "MEL", "atypical", "irregular", na),
        ("g0", "train", "MEL", "typical", "irregular", "present"),   # -1 + 1 + 0 = 0
        ("g1", "train", "NEV", "atypical", "irregular", "absent"),   # +1 + 1 = 2
        ("g2", "train", "NEV", "atypical", na, "present"),           # +1 = 1
        ("g3", "train", "MEL", "typical", "absent", "absent"),       # -1 - 1 = -2
        ("g4", "val", "NEV", na, na, na),                             # 0
    ]
    frame = pd.DataFrame(rows, columns=["case_id", "split", "diagnosis_group", "pigment_network", "streaks",
                                        "blue_whitish_veil"])
    return frame.assign(patient_id=frame["case_id"], diagnosis=frame["diagnosis_group"].str.lower())


def test_criteria_match_counts_agreements_minus_disagreements():
    cases = _with_findings()
    # ranking g1 (2), g2 (1), g0 (0), g4 (0), g3 (-2); relevant (MEL): g0, g3
    stable, _ = floor_search(cases, "criteria_match", ks=(1, 3, 5), ties="stable")
    row = stable.iloc[0]
    assert (row["method"], row["n_relevant"], row["recall@1"], row["recall@3"]) == ("criteria_match", 2, 0.0, 1.0)
    assert row["mrr"] == pytest.approx(1 / 3) and row["map@5"] == pytest.approx((1 / 3 + 2 / 5) / 2)
    pessimistic, _ = floor_search(cases, "criteria_match", ks=(1,), ties="pessimistic")
    assert pessimistic["mrr"].item() == pytest.approx(1 / 4)  # g4 (not relevant) before g0 in the tie
    expected, _ = floor_search(cases, "criteria_match", ks=(1,))
    assert expected["mrr"].item() == pytest.approx((1 / 3 + 1 / 4) / 2)
    # the diagnosis does not move the ranking: relabel everything, the scores stay
    relabelled = cases.assign(diagnosis_group=["MEL", "NEV", "NEV", "MEL", "MEL", "NEV"])  # relevant: g2, g3
    assert floor_search(relabelled, "criteria_match", ks=(1,), ties="stable")[0]["mrr"].item() == pytest.approx(1 / 2)


def test_criteria_scores_rescale_the_floor_and_fuse_through_scores_search():
    cases = _with_findings()
    q, g = cases[cases["split"] == "test"], cases[cases["split"] != "test"]
    crit = criteria_scores(q, g)
    # 2 criteria compared (the query has no blue-whitish veil finding): 1/2 + (agree - disagree) / 4
    assert crit.shape == (1, 5) and crit[0].tolist() == pytest.approx([0.5, 1.0, 0.75, 0.0, 0.5])
    floor, _ = floor_search(cases, "criteria_match", ks=(1, 3), ties="stable")
    fused = scores_search(q.reset_index(drop=True), g.reset_index(drop=True), crit, np.zeros(crit.shape, bool),
                          ks=(1, 3))
    pd.testing.assert_frame_equal(fused, floor.drop(columns="method"))
    with pytest.raises(DermretrError, match="needs 7-point criteria columns"):
        criteria_scores(q, g, columns=["diagnosis"])
    # findings among the gallery only: no criteria_match floor
    blind = cases.copy()
    blind.loc[blind["split"] == "test", ["pigment_network", "streaks"]] = None
    assert available_floors(blind) == ("random", "majority")
    with pytest.raises(DermretrError, match="on both query and gallery cases"):
        floor_search(blind, "criteria_match")


def test_criteria_match_needs_findings_and_floors_refuse_bad_input():
    cases = _imbalanced()
    assert available_floors(cases) == ("random", "majority")
    assert available_floors(_with_findings()) == FLOORS
    with pytest.raises(DermretrError, match="criteria_match floor needs annotated 7-point findings"):
        floor_search(cases, "criteria_match")
    with pytest.raises(DermretrError, match="criteria_match floor needs"):
        evaluate_floors(cases, ["criteria_match"], n_boot=0)
    with pytest.raises(DermretrError, match="unknown floor 'oracle'"):
        floor_search(cases, "oracle")
    with pytest.raises(DermretrError, match=r"unknown floor\(s\) \['oracle'\]"):
        evaluate_floors(cases, ["random", "oracle"])
    with pytest.raises(DermretrError, match="ties must be one of"):
        floor_search(cases, "majority", ties="random")
    with pytest.raises(DermretrError, match="relevant must be"):
        floor_search(cases, "majority", relevant="fitzpatrick")
    with pytest.raises(DermretrError, match="no cases in split 'val'"):
        evaluate_floors(cases.assign(split=cases["split"].replace("val", "train")), split="val")


# ----------------------------------------------------------------------------- real data: PH2


@pytest.mark.skipif(not PH2.is_dir(), reason="PH2 not at /work/shared/data/ph2")
def test_ph2_floors_are_sane():
    from dermretr.data import load

    cases = load("ph2", PH2)
    assert available_floors(cases) == FLOORS
    pq, recs = evaluate_floors(cases, split="test", relevant="diagnosis_group", ks=(1, 5, 10), n_boot=1000)
    value = {(r["method"], r["average"], r["metric"], r["k"]): r for r in recs}
    test = cases[cases["split"] == "test"]
    gallery = cases[cases["split"] != "test"]
    majority = gallery["diagnosis_group"].value_counts().idxmax()
    share = float((test["diagnosis_group"] == majority).mean())
    groups = test["diagnosis_group"].nunique()
    # majority first: micro hit@1 = the share of majority-group queries; macro = 1 / number of groups
    assert value["majority", "micro", "recall", 1]["value"] == pytest.approx(share)
    assert value["majority", "macro", "recall", 1]["value"] == pytest.approx(1 / groups)
    # random: hit@1 of a query is R / N (N: gallery cases of other patients)
    rand = pq[pq["method"] == "random"].set_index("case_id")
    for _, q in test.iterrows():
        others = gallery[gallery["patient_id"] != q["patient_id"]]
        r = int((others["diagnosis_group"] == q["diagnosis_group"]).sum())
        assert rand.loc[q["case_id"], "recall@1"] == pytest.approx(r / len(others))
    # findings carry signal: criteria_match beats random on the macro average
    for metric, k in (("map", 10), ("recall", 1)):
        assert (value["criteria_match", "macro", metric, k]["value"]
                > value["random", "macro", metric, k]["value"])
    for r in recs:
        assert 0.0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1.0 and r["n_queries"] == len(test)
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(results_table(recs)[["recall@1", "recall@1 (macro)", "map@10", "map@10 (macro)", "queries"]])


# ----------------------------------------------------------------------------- the modify protocol's floors


def _modify_rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference r (MEL) asks for irregular streaks; t (its exact target) has r's findings after the change."""
    rows = [  # case, patient, group, streaks, veil, network
        ("r", "p", "MEL", "absent", "present", "atypical"),
        ("t", "p", "MEL", "irregular", "present", "atypical"),     # after the change: 3 agreements
        ("u", "u", "NEV", "irregular", "present", "typical"),      # 2 - 1 = 1
        ("v", "v", "NEV", "absent", "present", "atypical"),        # r unchanged: 3; after the change: 1
        ("w", "w", "NEV", "irregular", "absent", "typical"),       # 1 - 2 = -1
    ]
    cases = pd.DataFrame(rows, columns=["case_id", "patient_id", "diagnosis_group", "streaks", "blue_whitish_veil",
                                        "pigment_network"])
    cases = cases.assign(image_path=cases["case_id"], diagnosis=cases["diagnosis_group"].str.lower(), split="test")
    mods = pd.DataFrame({"reference_case_id": ["r", "t"], "modification_text": ["with irregular streaks",
                                                                                "without streaks"],
                         "target_case_id": ["t", "r"], "criterion": "streaks", "from_value": ["absent", "irregular"],
                         "to_value": ["irregular", "absent"]})
    return cases, mods


def test_modify_floors_rank_by_the_findings_after_the_change():
    cases, mods = _modify_rows()
    assert available_floors(cases, protocol="modify", triplets=mods) == MODIFY_FLOORS
    pq, summary = modify_floor_search(cases, "criteria_match", mods, ks=(1, 2))
    # r -> t: t is the only case with all three findings; t -> r: r and v tie at 3 (r is the target)
    assert pq["case_id"].tolist() == ["r", "t"] and pq["target_case_id"].tolist() == ["t", "r"]
    assert pq["recall@1"].tolist() == [1.0, 0.5] and pq["recall@2"].tolist() == [1.0, 1.0]
    assert pq["mrr"].tolist() == [1.0, 0.75]
    # with the references' own findings (no change), v beats t, and r ties with u and v: the change is what counts
    unchanged = mods.assign(to_value=mods["from_value"])
    assert modify_floor_search(cases, "criteria_match", unchanged, ks=(1,))[0]["recall@1"].tolist() == pytest.approx(
        [0.0, 1 / 3])
    # a criterion the reference has no finding for counts once the change names it: t (veil unknown) asks for
    # veil absent; r (its target) and w lead with 1 each; were the veil left out, all four would tie (0.25)
    asked = mods.iloc[[1]].assign(criterion="blue_whitish_veil", to_value="absent")
    veil = cases.assign(blue_whitish_veil=["absent", None, "present", "present", "absent"])
    hit, _ = modify_floor_search(veil, "criteria_match", asked, ks=(1,))
    assert hit["recall@1"].tolist() == [0.5]
    # stable ties keep the table order: r (the target) before v
    assert modify_floor_search(cases, "criteria_match", mods, ks=(1,), ties="stable")[0]["recall@1"].tolist() == [
        1.0, 1.0]
    # random: one relevant among the 4 rankable cases (the reference excluded); majority: NEV first (3 of 5)
    rand, _ = modify_floor_search(cases, "random", mods, ks=(1, 2))
    assert rand["recall@1"].tolist() == [0.25, 0.25] and rand["recall@2"].tolist() == [0.5, 0.5]
    majority, _ = modify_floor_search(cases, "majority", mods, ks=(1,))
    assert majority["recall@1"].tolist() == [0.0, 0.0]
    assert majority["mrr"].tolist() == pytest.approx([1 / 4, 1 / 4])  # the target after the 3 NEV cases


def test_modify_floors_share_the_protocols_queries_and_pair_with_a_model(synth_root, synth_cases):
    from dermretr.evaluate import load_triplets, modify_queries, modify_search

    mods = load_triplets(synth_root)
    mq = modify_queries(synth_cases, mods)

    class Reader:  # scores every gallery case by its (random) position: a stand-in model
        def encode_targets(self, paths, **_):
            return {"global": np.eye(len(paths)), "local": None, "alpha": 0.0}

        def encode_queries(self, paths, texts, **_):
            rng = np.random.default_rng(0)
            return {"global": rng.random((len(texts), len(synth_cases))), "local": None, "alpha": 0.0}

    model, _ = modify_search(Reader(), synth_cases, mods, ks=(1, 10))
    tables = {m: modify_floor_search(synth_cases, m, synth_root, ks=(1, 10))[0] for m in MODIFY_FLOORS}
    for name, pq in tables.items():
        assert pq.columns.tolist() == ["method", *model.columns]
        pd.testing.assert_frame_equal(pq.drop(columns=[c for c in pq.columns if "@" in c or c in ("mrr", "method")]),
                                      model.drop(columns=[c for c in model.columns if "@" in c or c == "mrr"]))
        assert paired_difference(model, pq, metrics=["recall@1"], n_boot=0).loc["recall@1", "n_queries"] == len(mq.info)
    n = (~mq.exclude).sum(axis=1)
    assert tables["random"]["recall@1"].to_numpy() == pytest.approx(1 / n)
    # criteria_match: the target has exactly the reference's findings after the change (DermSynth's variants),
    # so it is in the best block and its expected hit@1 is 1 / (size of that block)
    crit = [c for c in CRITERIA if c in synth_cases.columns]
    by_id = synth_cases.set_index("case_id")
    for (_, t), got in zip(mq.triplets.iterrows(), tables["criteria_match"]["recall@1"]):
        want = by_id.loc[t["reference_case_id"], crit].astype(object).copy()
        want[t["criterion"]] = t["to_value"]
        assert (by_id.loc[t["target_case_id"], crit].astype(object) == want).all()
        same = (by_id[crit].astype(object) == want).all(axis=1)
        same[t["reference_case_id"]] = False
        assert got == pytest.approx(1 / same.sum())
    # evaluate_floors reads the folder's triplets and writes modify records
    per_query, records = evaluate_floors(f"synthetic:{synth_root}", protocol="modify", n_boot=0, ks=(1,))
    assert {r["protocol"] for r in records} == {"modify"} and {r["method"] for r in records} == set(MODIFY_FLOORS)
    assert len(per_query) == 3 * len(mq.info)


def test_modify_floors_refuse_bad_input_and_derive_triplets_without_them():
    cases, mods = _modify_rows()
    no_change = mods.drop(columns=["criterion", "to_value"])
    assert available_floors(cases, protocol="modify", triplets=no_change) == ("random", "majority")
    with pytest.raises(DermretrError, match="needs the triplets' columns criterion and to_value"):
        modify_floor_search(cases, "criteria_match", no_change)
    with pytest.raises(DermretrError, match="criterion 'colour'"):
        modify_floor_search(cases, "criteria_match", mods.assign(criterion="colour"))
    with pytest.raises(DermretrError, match="unknown modify floor 'oracle'"):
        modify_floor_search(cases, "oracle", mods)
    with pytest.raises(DermretrError, match=r"unknown floor\(s\) \['filter_only'\] for the modify protocol"):
        evaluate_floors(cases, ["filter_only"], protocol="modify", triplets=mods)
    with pytest.raises(DermretrError, match="ties must be one of"):
        modify_floor_search(cases, "majority", mods, ties="random")
    with pytest.raises(DermretrError, match="unknown protocol 'retrieval'"):
        evaluate_floors(cases, protocol="retrieval")
    # no triplets: derived ones (requested value and the reference's group), as modify_search derives them
    split = cases.assign(split=["test", "train", "train", "train", "val"], patient_id=list("abcde"))
    pq, _ = modify_floor_search(split, "criteria_match", None, ks=(1,))
    assert pq["criterion"].tolist() == ["streaks"] and pq["to_value"].tolist() == ["irregular"]
    assert pq["n_relevant"].tolist() == [1]  # t: MEL with irregular streaks (u, w are NEV)
    assert pq["recall@1"].tolist() == [1.0]


# ----------------------------------------------------------------------------- findings fusion (hybrid)


class _Embed:
    """A stand-in retriever: every image's global vector is ``vectors[path]`` (the text is ignored)."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode(self, paths, *_, **__):
        return {"global": np.array([self.vectors[p] for p in paths], dtype=np.float32), "local": None}

    encode_queries = encode_targets = encode


def _fusion_cases(streaks: list[str]) -> pd.DataFrame:
    """Six train cases then four val cases, MEL and NEV alternating, with the given streaks findings."""
    groups = ["MEL", "NEV"] * 5
    frame = pd.DataFrame({"case_id": [f"c{i}" for i in range(10)], "split": ["train"] * 6 + ["val"] * 4,
                          "diagnosis_group": groups, "streaks": streaks})
    return frame.assign(patient_id=frame["case_id"], image_path=frame["case_id"],
                        diagnosis=frame["diagnosis_group"].map({"MEL": "melanoma", "NEV": "blue nevus"}))


def test_hybrid_scores_add_the_findings_agreement_and_refuse_bad_weights():
    cases = _with_findings()
    q, g = cases[cases["split"] == "test"], cases[cases["split"] != "test"]
    model = np.array([[0.3, 0.1, 0.2, 0.9, 0.4]])  # on its own: g3, g4, g0, g2, g1
    np.testing.assert_array_equal(hybrid_scores(q, g, model, 0), model)
    fused = hybrid_scores(q, g, model, 2.0)
    np.testing.assert_allclose(fused, model + 2.0 * criteria_scores(q, g))
    # a large weight ranks by the findings first (g1, g2, {g0, g4}, g3) and the model orders the tie (g4 > g0)
    assert np.argsort(-hybrid_scores(q, g, model, 8.0)[0]).tolist() == [1, 2, 4, 0, 3]
    for bad in (-0.5, math.nan, math.inf, True, "1"):
        with pytest.raises(DermretrError, match="a findings weight must be a finite number >= 0"):
            hybrid_scores(q, g, model, bad)
    with pytest.raises(DermretrError, match=r"scores \(1, 4\) do not fit 1 queries and 5 gallery cases"):
        hybrid_scores(q, g, model[:, :4], 1.0)


def test_choose_findings_weight_takes_the_findings_only_where_they_help_on_val():
    informative = _fusion_cases(["irregular", "absent"] * 5)  # streaks name the group exactly
    misleading = _fusion_cases(["irregular", "absent"] * 3 + ["absent", "irregular"] * 2)  # reversed on val
    blind = _Embed({f"c{i}": [1.0, 0.0] for i in range(10)})  # every score equal: the table's order
    seeing = _Embed({f"c{i}": [1.0, 0.0] if i % 2 == 0 else [0.0, 1.0] for i in range(10)})  # the group itself
    weight, values = choose_findings_weight(blind, informative, weights=(0, 0.5, 4), metric="recall@1")
    # alone, the blind model puts c0 (MEL) first for every query: MEL 1, NEV 0; with findings every query is right
    assert weight == 0.5 and values.to_dict() == {0: 0.5, 0.5: 1.0, 4: 1.0}
    assert values.name == "recall@1 (macro)" and values.index.name == "findings_weight"
    # a model that already ranks perfectly: findings cannot help, so the lowest weight (the model alone) wins
    assert choose_findings_weight(seeing, informative, weights=(4, 1, 0))[0] == 0
    # findings that mislead on the validation cases: a large weight ranks every query wrong, so it is never chosen
    weight, wrong = choose_findings_weight(seeing, misleading, weights=(0, 0.25, 8), metric="recall@1")
    assert weight == 0 and wrong[8] == 0.0 and wrong[0] == 1.0
    # the same choice by hand: the chosen weight's value is what scores_search gives on the val cases
    q, g = informative[informative["split"] == "val"], informative[informative["split"] == "train"]
    by_hand = scores_search(q.reset_index(drop=True), g.reset_index(drop=True),
                            hybrid_scores(q, g, np.ones((4, 6)), 0.5), np.zeros((4, 6), bool), ks=(1,))
    assert summarize_metrics(by_hand, average="macro")["recall@1"] == values[0.5] == 1.0


def test_choose_findings_weight_refuses_bad_input():
    cases = _fusion_cases(["irregular", "absent"] * 5)
    blind = _Embed({f"c{i}": [1.0, 0.0] for i in range(10)})
    with pytest.raises(DermretrError, match="needs at least one weight"):
        choose_findings_weight(blind, cases, weights=())
    with pytest.raises(DermretrError, match="a findings weight must be a finite number >= 0, got -1"):
        choose_findings_weight(blind, cases, weights=(0, -1))
    with pytest.raises(DermretrError, match="unknown metric 'mrr' to choose a findings weight by"):
        choose_findings_weight(blind, cases, metric="mrr")
    lonely = cases.assign(diagnosis_group=["MEL"] * 6 + ["NEV"] * 4)  # no val query has a relevant train case
    with pytest.raises(DermretrError, match="no 'val' query has a relevant case in \\['train'\\]"):
        choose_findings_weight(blind, lonely)
    with pytest.raises(DermretrError, match="criteria_match floor needs annotated 7-point findings"):
        choose_findings_weight(blind, cases.drop(columns="streaks"))
