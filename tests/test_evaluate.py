"""Evaluation: metrics by hand, bootstrap CIs, per-class tables, the case and modify protocols, the CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from fixtures import write_dataset

from dermretr._errors import DermretrError
from dermretr.cli import main
from dermretr.data.vocab import CRITERIA, parse_modification
from dermretr.evaluate import (RECORD_KEYS, bootstrap_ci, case_scores, case_search, derive_triplets, evaluate_run,
                               load_triplets, metric_records, modify_search, paired_difference, per_class,
                               rank_metrics, results_table, scores_search, summarize_metrics, write_metrics)
from dermretr.floors import available_floors

L2 = math.log2


# ----------------------------------------------------------------------------- helpers


class TableRetriever:
    """A stand-in retriever: targets are one-hot case vectors, a query's vector comes from ``weights``.

    ``weights(ref_case_id, text) -> {case_id: score}``; unlisted cases score 0.
    """

    kind = "fake"

    def __init__(self, cases: pd.DataFrame, weights):
        self.ids = cases["case_id"].astype(str).tolist()
        self.index = {cid: i for i, cid in enumerate(self.ids)}
        self.pos = {p: i for i, p in enumerate(cases["image_path"].astype(str))}
        self.id_of_path = dict(zip(cases["image_path"].astype(str), self.ids))
        self.weights = weights

    def encode_targets(self, paths, **_):
        return {"global": np.eye(len(self.ids))[[self.pos[str(p)] for p in paths]], "local": None, "alpha": 0.0}

    def encode_queries(self, paths, texts, **_):
        out = np.zeros((len(texts), len(self.ids)))
        for i, (p, t) in enumerate(zip(paths, texts)):
            for cid, w in self.weights(self.id_of_path[str(p)], t).items():
                out[i, self.index[cid]] = w
        return {"global": out, "local": None, "alpha": 0.0}


def _fake_run(path, kind):
    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    model = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind=kind, n_masks=2)
    model.save(path / "checkpoints" / "best.pt")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two untrained run folders (composed and image-only) with a best.pt each."""
    import torch

    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("runs")
    return [_fake_run(base / "composed", "full"), _fake_run(base / "image-only", "image")]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dermretr: error: ") and err.count("\n") == 1, err
    return err


# ----------------------------------------------------------------------------- metrics by hand


def test_rank_metrics_match_hand_computed_values():
    scores = np.tile([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], (3, 1))
    relevant = np.array([[0, 1, 0, 1, 0, 1],    # hits at ranks 2, 4, 6
                         [1, 0, 0, 1, 0, 0],    # own case (excluded) at rank 1, a hit at rank 4 -> 3
                         [0, 0, 0, 0, 0, 0]], dtype=bool)
    exclude = np.zeros_like(relevant)
    exclude[1, 0] = True
    pq = rank_metrics(scores, relevant, exclude, ks=(1, 3, 5, 10))
    first, second, third = (pq.iloc[i] for i in range(3))
    assert pq["n_relevant"].tolist() == [3, 1, 0]
    ideal3 = 1 + 1 / L2(3) + 1 / L2(4)
    expected_first = {"recall@1": 0, "recall@3": 1, "recall@5": 1, "precision@1": 0, "precision@3": 1 / 3,
                      "precision@5": 2 / 5, "precision@10": 3 / 10, "map@3": (1 / 2) / 3,
                      "map@5": (1 / 2 + 2 / 4) / 3, "map@10": (1 / 2 + 2 / 4 + 3 / 6) / 3,
                      "ndcg@3": (1 / L2(3)) / ideal3, "ndcg@5": (1 / L2(3) + 1 / L2(5)) / ideal3, "mrr": 1 / 2}
    for k, v in expected_first.items():
        assert first[k] == pytest.approx(v), k
    expected_second = {"recall@1": 0, "recall@3": 1, "precision@3": 1 / 3, "precision@5": 1 / 5, "map@3": 1 / 3,
                       "map@5": 1 / 3, "ndcg@3": (1 / L2(4)) / 1, "mrr": 1 / 3}
    for k, v in expected_second.items():
        assert second[k] == pytest.approx(v), k
    assert (third.drop("n_relevant") == 0).all()
    summary = summarize_metrics(pq)
    assert summary["n_queries"] == 2 and summary["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_ties_are_ordered_as_asked():
    scores = np.array([[0.5, 0.5, 0.5, 0.1]])
    relevant = np.array([[False, True, False, False]])
    mrr = {t: rank_metrics(scores, relevant, ks=(1,), ties=t)["mrr"].item()
           for t in ("stable", "pessimistic", "optimistic")}
    assert mrr == pytest.approx({"stable": 1 / 2, "pessimistic": 1 / 3, "optimistic": 1.0})
    # an excluded case never takes a rank, whatever its score
    excl = np.array([[False, False, True, False]])
    assert rank_metrics(scores, relevant, excl, ks=(1,), ties="pessimistic")["mrr"].item() == pytest.approx(1 / 2)
    with pytest.raises(DermretrError, match="ties must be one of"):
        rank_metrics(scores, relevant, ties="random")
    with pytest.raises(DermretrError, match="cut-offs K must be positive integers"):
        rank_metrics(scores, relevant, ks=(0,))


# ----------------------------------------------------------------------------- bootstrap, records, tables


def test_bootstrap_ci_contains_the_mean_narrows_and_is_deterministic():
    rng = np.random.default_rng(3)
    small = rng.integers(0, 2, 30).astype(float)
    big = rng.integers(0, 2, 3000).astype(float)
    lo, hi = bootstrap_ci(small, n_boot=2000, seed=0)
    assert lo < small.mean() < hi
    blo, bhi = bootstrap_ci(big, n_boot=2000, seed=0)
    assert blo < big.mean() < bhi
    assert bhi - blo < (hi - lo) / 5
    # close to the normal approximation of a mean's 95% interval
    se = big.std() / math.sqrt(len(big))
    assert bhi - blo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci(small, n_boot=500, seed=7) == bootstrap_ci(small, n_boot=500, seed=7)
    assert bootstrap_ci(small, n_boot=500, seed=7) != bootstrap_ci(small, n_boot=500, seed=8)
    # columns of a 2-D input share the resamples and match 1-D calls
    two = np.stack([small, 1 - small], axis=1)
    lows, highs = bootstrap_ci(two, n_boot=500, seed=7)
    assert (lows[0], highs[0]) == pytest.approx(bootstrap_ci(small, n_boot=500, seed=7))
    assert lows[1] == pytest.approx(1 - highs[0]) and highs[1] == pytest.approx(1 - lows[0])
    assert all(math.isnan(x) for x in bootstrap_ci(small, n_boot=0))
    with pytest.raises(DermretrError, match="confidence level"):
        bootstrap_ci(small, level=95)
    with pytest.raises(DermretrError, match="resamples"):
        bootstrap_ci(small, n_boot=-1)


def _per_query(n=40, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, 12))
    relevant = rng.uniform(size=(n, 12)) < 0.3
    relevant[np.arange(n), rng.integers(0, 12, n)] = True
    relevant[0] = False  # a query without relevant cases
    pq = rank_metrics(scores, relevant, ks=(1, 5))
    pq.insert(0, "diagnosis_group", ["MEL", "NEV", "SK", "NEV"] * (n // 4))
    pq["fitzpatrick"] = pd.array([1, 2, pd.NA, 4] * (n // 4), dtype="Int64")
    return pq


def test_metric_records_keys_values_and_intervals():
    pq = _per_query()
    recs = metric_records(pq, "run-a", "full", "case", n_boot=300)
    assert all(tuple(r) == RECORD_KEYS for r in recs)
    order = [("recall", 1), ("recall", 5), ("precision", 1), ("precision", 5), ("map", 1), ("map", 5), ("ndcg", 1),
             ("ndcg", 5), ("mrr", None)]
    # micro records first (as before averages existed), then macro over diagnosis groups
    assert [(r["average"], r["metric"], r["k"]) for r in recs] == ([("micro", *o) for o in order]
                                                                   + [("macro", *o) for o in order])
    summary = summarize_metrics(pq)
    usable = pq[pq["n_relevant"] > 0]
    for r in recs:
        col = r["metric"] if r["k"] is None else f"{r['metric']}@{r['k']}"
        want = summary[col] if r["average"] == "micro" else usable.groupby("diagnosis_group")[col].mean().mean()
        assert r["value"] == pytest.approx(want)
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["n_queries"] == len(pq) - 1 == summary["n_queries"]
        assert (r["run"], r["method"], r["protocol"]) == ("run-a", "full", "case")
    assert summarize_metrics(pq, average="macro")["recall@1"] == pytest.approx(recs[9]["value"])
    assert metric_records(pq, "r", "m", "case", n_boot=300) == metric_records(pq, "r", "m", "case", n_boot=300)
    none = metric_records(pq, "r", "m", "case", n_boot=0)
    assert none[0]["ci_low"] is None and none[0]["ci_high"] is None


def test_per_class_table_is_tidy_and_matches_group_means():
    pq = _per_query()
    table = per_class(pq, by="diagnosis_group", n_boot=200)
    assert list(table.columns) == ["diagnosis_group", "metric", "k", "value", "ci_low", "ci_high", "n_queries"]
    assert sorted(table["diagnosis_group"].unique()) == ["MEL", "NEV", "SK"]
    usable = pq[pq["n_relevant"] > 0]
    for grp, sub in usable.groupby("diagnosis_group"):
        row = table[(table["diagnosis_group"] == grp) & (table["metric"] == "map") & (table["k"] == 5)].iloc[0]
        assert row["value"] == pytest.approx(sub["map@5"].mean())
        assert row["n_queries"] == len(sub)
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
    # missing skin type is its own class
    by_fitz = per_class(pq, by="fitzpatrick", n_boot=0)
    assert by_fitz["fitzpatrick"].isna().any() and len(by_fitz) == 4 * 9
    with pytest.raises(DermretrError, match="no such column"):
        per_class(pq, by="monk")


def test_results_table_and_metrics_file(tmp_path):
    recs = (metric_records(_per_query(seed=1), "composed", "full", "case", n_boot=100)
            + metric_records(_per_query(seed=2), "image-only", "image", "case", n_boot=100))
    table = results_table(recs)
    assert list(table.index) == [("composed", "full"), ("image-only", "image")]
    assert list(table.columns)[:4] == ["recall@1", "recall@1 (macro)", "recall@5", "recall@5 (macro)"]
    assert "mrr" in table.columns and "mrr (macro)" in table.columns
    r = recs[0]
    assert table.iloc[0]["recall@1"] == f"{r['value']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
    assert table.iloc[0]["queries"] == r["n_queries"]
    path = write_metrics(recs, tmp_path / "m" / "metrics.json")
    assert json.loads(path.read_text()) == recs
    with pytest.raises(DermretrError, match="is a folder"):
        write_metrics(recs, tmp_path)
    with pytest.raises(DermretrError, match="no evaluation records"):
        results_table([])


# ----------------------------------------------------------------------------- protocols


def test_case_search_relevance_exclusion_and_precomputed_queries(synth_cases):
    cases = synth_cases.copy()
    # two test cases share a patient with gallery cases (one of their group, one of another group)
    test_idx = np.flatnonzero(cases["split"].astype(str) == "test")
    gal_idx = np.flatnonzero(cases["split"].astype(str) != "test")
    groups = cases["diagnosis_group"].astype(str).to_numpy()
    same = next(j for j in gal_idx if groups[j] == groups[test_idx[0]])
    other = next(j for j in gal_idx if groups[j] != groups[test_idx[1]])
    patients = cases["patient_id"].astype(object).to_numpy().copy()
    patients[test_idx[0]], patients[test_idx[1]] = patients[same], patients[other]
    cases["patient_id"] = pd.array(patients, dtype="string")
    group = dict(zip(cases["case_id"], cases["diagnosis_group"].astype(str)))
    patient = dict(zip(cases["case_id"], cases["patient_id"].astype(str)))
    gallery = cases[cases["split"].astype(str) != "test"]

    by_patient = cases.groupby("patient_id")["case_id"].agg(list).to_dict()
    by_group = gallery.groupby(gallery["diagnosis_group"].astype(str))["case_id"].agg(list).to_dict()

    def same_group_other_patient_first(ref, text):
        # the query's own case and the other cases of its patient score highest: they must be excluded
        w = {cid: 1.0 for cid in by_group.get(group[ref], [])}
        w.update({cid: 5.0 for cid in by_patient[patient[ref]]})
        return w

    fake = TableRetriever(cases, same_group_other_patient_first)
    pq, summary = case_search(fake, cases, ks=(1,), ties="pessimistic")
    test = cases[cases["split"].astype(str) == "test"]
    assert pq["case_id"].tolist() == test["case_id"].tolist()
    for col in ("diagnosis_group", "fitzpatrick", "monk", "ita", "patient_id"):
        assert col in pq.columns
    expected_n = [int(((gallery["diagnosis_group"].astype(str) == g) & (gallery["patient_id"] != p)).sum())
                  for g, p in zip(test["diagnosis_group"].astype(str), test["patient_id"])]
    assert pq["n_relevant"].tolist() == expected_n
    assert expected_n[0] == int((gallery["diagnosis_group"].astype(str) == groups[test_idx[0]]).sum()) - 1
    assert summary["recall@1"] == 1.0
    # pre-computed encodings give the same result
    q = test.reset_index(drop=True)
    from dermretr.data.vocab import case_text

    qe = fake.encode_queries(q["image_path"].tolist(), [case_text(r, seed=None) for _, r in q.iterrows()])
    pq2, _ = case_search(fake, cases, ks=(1,), queries=qe, ties="pessimistic")
    pd.testing.assert_frame_equal(pq, pq2)
    with pytest.raises(DermretrError, match="pre-computed encodings do not fit"):
        case_search(fake, cases, ks=(1,), queries={k: v[:3] if k == "global" else v for k, v in qe.items()})


def test_scores_search_is_case_search_on_given_scores(synth_cases):
    def weights(ref, text):
        return {cid: (hash((ref, cid)) % 7) / 7 for cid in synth_cases["case_id"].astype(str)}

    retriever = TableRetriever(synth_cases, weights)
    q, g, s, exclude = case_scores(retriever, synth_cases)
    for relevant in ("diagnosis_group", "diagnosis"):
        want, _ = case_search(retriever, synth_cases, relevant=relevant, ties="pessimistic")
        got = scores_search(q, g, s, exclude, relevant=relevant, ties="pessimistic")
        pd.testing.assert_frame_equal(got, want)
    with pytest.raises(DermretrError, match="do not fit"):
        scores_search(q, g, s[:, 1:], exclude[:, 1:])


def test_dermsynth_modify_protocol_relevant_is_the_exact_target(synth_root, synth_cases):
    cases = synth_cases
    mods = load_triplets(synth_root)
    test_ids = set(cases.loc[cases["split"].astype(str) == "test", "case_id"])
    wanted = mods[mods["reference_case_id"].isin(test_ids)].reset_index(drop=True)
    assert len(wanted) >= 4
    target_of = {(r, t): g for r, t, g in zip(mods["reference_case_id"], mods["modification_text"],
                                             mods["target_case_id"])}

    # the reference itself scores highest (must be excluded), then the exact target
    oracle = TableRetriever(cases, lambda ref, text: {ref: 9.0, target_of[(ref, text)]: 1.0})
    pq, summary = modify_search(oracle, cases, synth_root, ks=(1, 5))
    assert pq["case_id"].tolist() == wanted["reference_case_id"].tolist()
    assert pq["target_case_id"].tolist() == wanted["target_case_id"].tolist()
    assert (pq["n_relevant"] == 1).all()
    assert summary["recall@1"] == 1.0 and summary["n_queries"] == len(wanted)

    # every other case (other variants of the family included) beats the target: it ranks last of len-1
    def everything_but_the_target(ref, text):
        return {cid: 1.0 for cid in cases["case_id"] if cid != target_of[(ref, text)]}

    pq, summary = modify_search(TableRetriever(cases, everything_but_the_target), cases, mods, ks=(1,))
    assert summary["mrr"] == pytest.approx(1 / (len(cases) - 1))
    assert summary["recall@1"] == 0.0


def test_derived_triplets_obey_their_definition(synth_cases):
    cases = synth_cases
    trip = derive_triplets(cases, split="test", seed=5)
    assert len(trip) > 10
    pd.testing.assert_frame_equal(trip, derive_triplets(cases, split="test", seed=5))
    assert not trip.equals(derive_triplets(cases, split="test", seed=6))
    by_id = cases.set_index("case_id")
    gallery = cases[cases["split"].astype(str).isin(["train", "val"])]
    for _, t in trip.iterrows():
        ref = by_id.loc[t["reference_case_id"]]
        assert ref["split"] == "test"
        assert t["from_value"] == ref[t["criterion"]] != t["to_value"]
        assert t["to_value"] in CRITERIA[t["criterion"]]
        assert parse_modification(t["modification_text"]) == {t["criterion"]: t["to_value"]}
    assert trip["reference_case_id"].is_unique  # max_per_case=1
    two = derive_triplets(cases, split="test", seed=5, max_per_case=2)
    assert two.groupby("reference_case_id")["criterion"].agg(lambda c: len(c) <= 2 and c.is_unique).all()
    assert two["reference_case_id"].value_counts().max() == 2

    # relevant = gallery cases with the requested value and the reference's group
    oracle = TableRetriever(cases, lambda ref, text: {})
    pq, _ = modify_search(oracle, cases, trip, ks=(1,))
    for (_, t), n in zip(trip.iterrows(), pq["n_relevant"]):
        ref = by_id.loc[t["reference_case_id"]]
        expected = ((gallery[t["criterion"]].astype(object) == t["to_value"])
                    & (gallery["diagnosis_group"] == ref["diagnosis_group"])
                    & (gallery["patient_id"] != ref["patient_id"])).sum()
        assert n == expected >= 1
    # None derives the same triplets
    pq_none, _ = modify_search(oracle, cases, None, ks=(1,), seed=5)
    assert pq_none["modification_text"].tolist() == trip["modification_text"].tolist()


def test_derived_relevance_never_counts_the_same_patient():
    cases = pd.DataFrame({
        "case_id": ["ref", "mine", "other", "wrong_group"],
        "patient_id": ["p", "p", "q", "r"],
        "image_path": ["i0", "i1", "i2", "i3"],
        "diagnosis": ["clark nevus", "clark nevus", "blue nevus", "melanoma"],
        "diagnosis_group": ["NEV", "NEV", "NEV", "MEL"],
        "split": ["test", "train", "train", "train"],
        "streaks": ["absent", "irregular", "irregular", "irregular"],
        "fitzpatrick": [2, 2, 3, 4], "monk": pd.NA,
    })
    trip = derive_triplets(cases)
    assert trip[["criterion", "to_value"]].to_numpy().tolist() == [["streaks", "irregular"]]
    # the same patient's case with the requested value scores highest: it is excluded, "other" is first
    fake = TableRetriever(cases, lambda ref, text: {"mine": 3.0, "other": 2.0, "wrong_group": 1.0})
    pq, summary = modify_search(fake, cases, trip, ks=(1,))
    assert pq["n_relevant"].tolist() == [1] and summary["recall@1"] == 1.0
    # only the same patient has the value: nothing to derive
    alone = cases[cases["case_id"] != "other"]
    assert len(derive_triplets(alone)) == 0
    with pytest.raises(DermretrError, match="no derivable modification queries"):
        modify_search(fake, alone, None)


def test_protocols_refuse_unusable_data(synth_cases, runs):
    no_criteria = synth_cases.copy()
    for c in CRITERIA:
        no_criteria[c] = pd.Categorical([pd.NA] * len(no_criteria), categories=list(CRITERIA[c]))
    with pytest.raises(DermretrError, match="needs modification triplets .* or cases with known 7-point criteria"):
        derive_triplets(no_criteria)
    with pytest.raises(DermretrError, match="needs modification triplets"):
        evaluate_run(runs[0], no_criteria, "modify")
    no_test = synth_cases.copy()
    no_test["split"] = no_test["split"].astype(str).replace("test", "val")
    for protocol in ("case", "modify"):
        with pytest.raises(DermretrError, match=r"no cases in split 'test' .*train \d+, val \d+"):
            evaluate_run(runs[0], no_test, protocol)
    with pytest.raises(DermretrError, match="unknown protocol 'retrieval'; protocols: case, modify"):
        evaluate_run(runs[0], synth_cases, "retrieval")
    with pytest.raises(DermretrError, match="relevant must be"):
        evaluate_run(runs[0], synth_cases, relevant="malignant")
    with pytest.raises(DermretrError, match="has no checkpoint"):
        evaluate_run(runs[0].parent, synth_cases)
    bad = derive_triplets(synth_cases, split="test", seed=1).head(2).assign(criterion="veil")
    with pytest.raises(DermretrError, match=r"criteria \['veil'\] that are not 7-point criteria"):
        evaluate_run(runs[0], synth_cases, "modify", triplets=bad)


# ----------------------------------------------------------------------------- run folders and the CLI


def test_evaluate_run_returns_per_query_and_records(synth_root, synth_cases, runs):
    pq, recs = evaluate_run(runs[0], f"synthetic:{synth_root}", "case", n_boot=100)
    n_test = int((synth_cases["split"].astype(str) == "test").sum())
    assert len(pq) == n_test and set(pq["run"]) == {"composed"} and set(pq["method"]) == {"full"}
    assert {"case_id", "diagnosis_group", "fitzpatrick", "monk", "ita"} <= set(pq.columns)
    assert {r["metric"] for r in recs} == {"recall", "precision", "map", "ndcg", "mrr"}
    assert all(r["protocol"] == "case" and r["n_queries"] == n_test for r in recs)
    assert [r["average"] for r in recs] == ["micro"] * 13 + ["macro"] * 13
    _, again = evaluate_run(runs[0], synth_cases, "case", n_boot=100)
    assert again == recs


def test_cli_evaluate_two_runs_writes_metrics_and_prints_a_table(synth_root, synth_cases, runs, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    per_query = tmp_path / "pq.csv"
    rc = main(["evaluate", "--run", str(runs[0]), str(runs[1]), "--data", f"synthetic:{synth_root}",
               "--protocol", "case", "--out", str(out), "--n-boot", "200", "--per-query", str(per_query),
               "--device", "cpu", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "composed" in text and "image-only" in text and "recall@1" in text and "mrr" in text
    assert "[" in text and "Protocol case" in text and "\nmrr " in text
    # the floors (no model) are rows of the same table, and every metric has its macro average
    floors = available_floors(synth_cases)
    assert "random (floor)" in text and "majority (floor)" in text and "\nrecall@1 (macro) " in text
    recs = json.loads(out.read_text())
    assert all(list(r) == list(RECORD_KEYS) for r in recs)
    assert {r["metric"] for r in recs} == {"recall", "precision", "map", "ndcg", "mrr"}
    assert {(r["run"], r["method"]) for r in recs} == {("composed", "full"), ("image-only", "image")} | {
        (f"floor:{f}", f) for f in floors}
    assert {r["k"] for r in recs} == {1, 5, 10, None} and {r["average"] for r in recs} == {"micro", "macro"}
    assert len(recs) == (2 + len(floors)) * 13 * 2
    for r in recs:
        assert 0.0 <= r["ci_low"] <= r["value"] <= r["ci_high"] <= 1.0
    n_test = int((synth_cases["split"].astype(str) == "test").sum())
    table = pd.read_csv(per_query)
    assert len(table) == (2 + len(floors)) * n_test
    assert {"run", "fitzpatrick", "ita", "recall@1"} <= set(table.columns)
    # a floor's per-query rows pair with a run's (same queries, same relevant cases)
    run, floor = (table[table["run"] == name].drop(columns="run") for name in ("composed", "floor:random"))
    assert paired_difference(run, floor, n_boot=0, average="macro")["n_queries"].min() > 0

    rc = main(["evaluate", "--run", str(runs[0]), "--data", f"synthetic:{synth_root}", "--protocol", "modify",
               "--out", str(out), "--n-boot", "50", "--k", "1", "5", "--device", "cpu", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "exact target" in text and "Floors are computed for the case and tone protocols only" in text
    recs = json.loads(out.read_text())
    assert {r["protocol"] for r in recs} == {"modify"} and {r["k"] for r in recs} == {1, 5, None}


def test_cli_evaluate_bad_input(synth_root, runs, tmp_path, capsys):
    data = f"synthetic:{synth_root}"
    base = ["--data", data, "--out", str(tmp_path / "m.json"), "--no-progress", "--device", "cpu"]
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["evaluate", "--run", str(runs[0]), str(empty), *base]) == 2
    assert "has no checkpoint" in _one_line_error(capsys)
    assert main(["evaluate", "--run", str(tmp_path / "missing"), *base]) == 2
    assert "run folder" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--run", str(runs[0]), *base, "--protocol", "retrieval"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dermretr evaluate: error: argument --protocol: invalid choice: 'retrieval'")
    assert err.count("\n") == 1
    assert main(["evaluate", "--run", str(runs[0]), "--data", data, "--out", str(tmp_path), "--no-progress"]) == 2
    assert "is a folder" in _one_line_error(capsys)
    assert not (tmp_path / "m.json").exists()

    # a dataset without a test split
    no_test = tmp_path / "no_test"
    shutil.copytree(synth_root, no_test)
    meta = no_test / "meta"
    moved = pd.concat([pd.read_csv(meta / "valid_indexes.csv"), pd.read_csv(meta / "test_indexes.csv")])
    moved.to_csv(meta / "valid_indexes.csv", index=False)
    pd.DataFrame({"indexes": []}).to_csv(meta / "test_indexes.csv", index=False)
    assert main(["evaluate", "--run", str(runs[0]), "--data", f"synthetic:{no_test}",
                 "--out", str(tmp_path / "m.json"), "--no-progress"]) == 2
    assert "no cases in split 'test'" in _one_line_error(capsys)

    # modify protocol on data with neither criteria nor triplets (a DDI folder)
    ddi = tmp_path / "ddi"
    rows = [{"DDI_ID": str(i + 1), "DDI_file": f"{i + 1:06d}.png", "skin_tone": ["12", "34", "56"][i % 3],
             "malignant": str(i % 2 == 0), "disease": ["melanoma", "verruca-vulgaris"][i % 2]} for i in range(20)]
    write_dataset(ddi / "ddi_metadata.csv", rows, image=lambda i, row: ddi / row["DDI_file"])
    assert main(["evaluate", "--run", str(runs[0]), "--data", f"ddi:{ddi}", "--protocol", "modify",
                 "--out", str(tmp_path / "m.json"), "--no-progress"]) == 2
    assert "needs modification triplets" in _one_line_error(capsys)
    assert not (tmp_path / "m.json").exists()


def test_paired_difference_pairs_queries_and_tests_the_gap():
    rng = np.random.default_rng(0)
    n = 80
    a = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "n_relevant": 1,
                      "recall@1": (rng.random(n) < 0.7).astype(float), "map@10": rng.random(n)})
    a.loc[0, "n_relevant"] = 0  # no relevant case: left out
    b = a.assign(**{"recall@1": np.where(np.arange(n) % 3 == 0, 0.0, a["recall@1"]), "map@10": a["map@10"] - 0.1 + rng.normal(0, 0.05, n)})
    shuffled = b.sample(frac=1.0, random_state=1)  # pairing is by query, not by row
    t = paired_difference(a, shuffled, n_boot=2000, seed=3)
    keep = a["n_relevant"] > 0
    want = (a.loc[keep, ["recall@1", "map@10"]] - b.loc[keep, ["recall@1", "map@10"]]).mean()
    assert t["n_queries"].tolist() == [n - 1, n - 1]
    assert np.allclose(t["difference"], want.to_numpy())
    assert np.allclose(t["mean_a"] - t["mean_b"], t["difference"])
    assert (t["ci_low"] <= t["difference"]).all() and (t["difference"] <= t["ci_high"]).all()
    assert t.loc["map@10", "p_value"] < 0.01 and t.loc["map@10", "ci_low"] > 0.05
    same = paired_difference(a, a, n_boot=500)
    assert (same["difference"] == 0).all() and (same["p_value"] == 1.0).all()
    assert paired_difference(a, b, n_boot=0)["p_value"].isna().all()
    with pytest.raises(DermretrError, match="cover different queries"):
        paired_difference(a, b.iloc[1:])
    with pytest.raises(DermretrError, match=r"metric\(s\) \['mrr'\] not in the per-query table"):
        paired_difference(a, b, metrics=["mrr"])
    with pytest.raises(DermretrError, match="must be a DataFrame"):
        paired_difference(a.to_numpy(), b)


def test_cli_evaluate_floors_option(synth_root, runs, tmp_path, capsys):
    out = tmp_path / "m.json"
    base = ["evaluate", "--run", str(runs[0]), "--data", f"synthetic:{synth_root}", "--out", str(out),
            "--n-boot", "0", "--device", "cpu", "--no-progress"]
    assert main([*base, "--floors", "none"]) == 0
    assert "(floor)" not in capsys.readouterr().out
    assert {r["run"] for r in json.loads(out.read_text())} == {"composed"}
    assert main([*base, "--floors", "majority"]) == 0
    text = capsys.readouterr().out
    assert "majority (floor)" in text and "random (floor)" not in text
    assert {r["run"] for r in json.loads(out.read_text())} == {"composed", "floor:majority"}
    with pytest.raises(SystemExit):
        main([*base, "--floors", "oracle"])
    assert "invalid choice" in capsys.readouterr().err
