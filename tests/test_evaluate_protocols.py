"""The case and modify protocols: relevance, exclusions, pre-computed encodings, derived triplets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DermretrError
from dermretr.data.vocab import CRITERIA, parse_modification
from dermretr.evaluate import (
    case_scores,
    case_search,
    derive_triplets,
    load_triplets,
    modify_queries,
    modify_search,
    scores_search,
)

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
    # pre-computed encodings (in modify_queries' order) give the same result, and must fit
    mq = modify_queries(cases, mods)
    qe = oracle.encode_queries(mq.references["image_path"].tolist(), mq.texts)
    ge = oracle.encode_targets(mq.gallery["image_path"].tolist())
    pd.testing.assert_frame_equal(modify_search(oracle, cases, mods, ks=(1, 5), queries=qe, gallery=ge)[0], pq)
    with pytest.raises(DermretrError, match="pre-computed encodings do not fit"):
        modify_search(oracle, cases, mods, queries={k: v[:2] if k == "global" else v for k, v in qe.items()})

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
