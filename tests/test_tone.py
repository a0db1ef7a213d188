"""Skin-tone composed queries ("this condition, on darker skin"): vocabulary, protocol, floors, training, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from fixtures import train_config

from dermretr._errors import DermretrError, VocabularyError
from dermretr.cli import main
from dermretr.data.vocab import (
    TEXT_STYLES,
    TONE_RANGES,
    TONE_STYLES,
    TONE_WORDS,
    parse_tone,
    render_text,
    strip_tone,
    tone_query_text,
    tone_range,
    tone_text,
)
from dermretr.evaluate import (
    check_query_text,
    choose_findings_weight,
    hybrid_scores,
    metric_records,
    paired_difference,
    summarize_metrics,
    tone_queries,
    tone_ranges,
    tone_scores,
    tone_scores_search,
    tone_search,
    with_tone_estimate,
)
from dermretr.floors import TONE_FLOORS, available_floors, evaluate_floors, tone_floor_search
from dermretr.train import derive_tone_triplets
from dermretr.train._triplets import training_triplets, triplet_positives

# ----------------------------------------------------------------------------- vocabulary


@pytest.mark.parametrize("scale", list(TONE_RANGES))
def test_every_range_and_style_round_trips_through_text(scale):
    findings = [render_text({"streaks": "irregular", "blue_whitish_veil": "present"}, style=s, seed=3)
                for s in TEXT_STYLES] + ["itching; on the arm", ""]
    for name in TONE_RANGES[scale]:
        for style in TONE_STYLES:
            phrase = tone_text(name, scale, style)
            assert parse_tone(phrase, scale) == name, phrase
            for text in findings:
                assert parse_tone(tone_query_text(text, name, scale, style), scale) == name
        lo, hi = TONE_RANGES[scale][name]
        assert {tone_range(v, scale) for v in range(lo, hi + 1)} == {name}


def test_values_words_and_other_scales_map_to_ranges_by_position():
    assert [tone_range(v) for v in (1, 2, 3, 4, 5, 6)] == ["I-II", "I-II", "III-IV", "III-IV", "V-VI", "V-VI"]
    assert [tone_range(v, "monk") for v in (1, 3, 4, 7, 8, 10)] == ["1-3", "1-3", "4-7", "4-7", "8-10", "8-10"]
    assert [tone_range(r) for r in ("i", "IV", "vi", 5.0, np.int64(2), "6")] == ["I-II", "III-IV", "V-VI", "V-VI",
                                                                               "I-II", "V-VI"]
    assert [tone_range(v) for v in (None, float("nan"), pd.NA, " ")] == [None] * 4
    assert tone_range("tan", "ita") == "intermediate-tan" and tone_range(1, "ita") == "very light-light"
    for bad, scale in ((0, "fitzpatrick"), (7, "fitzpatrick"), ("VII", "fitzpatrick"), (11, "monk"),
                       ("olive", "ita"), (True, "fitzpatrick"), (2.5, "monk")):
        with pytest.raises(VocabularyError, match="is not a"):
            tone_range(bad, scale)
    with pytest.raises(VocabularyError, match="unknown skin-tone scale"):
        tone_range(1, "ethnicity")
    monk_phrases = [f"on Monk tone {r} skin" for r in TONE_RANGES["monk"]]
    assert [tone_text(w, "monk", "scale") for w in TONE_WORDS] == monk_phrases
    assert tone_text(6) == "on Fitzpatrick type V-VI skin" and tone_text("III-IV", style="plain") == "on medium skin"
    cases = [("on Fitzpatrick type V skin", "fitzpatrick", "V-VI"),
             ("Fitzpatrick skin type iii", "fitzpatrick", "III-IV"),
             ("skin type 2", "fitzpatrick", "I-II"), ("phototype VI", "monk", "8-10"),
             ("MST 5", "fitzpatrick", "III-IV"), ("monk skin tone 10", "monk", "8-10"),
             ("on dark-toned skin", "fitzpatrick", "V-VI"), ("on brown to dark skin", "monk", "8-10"),
             ("on fair skin", "ita", "very light-light"), ("Fitzpatrick type V\u2013VI", "fitzpatrick", "V-VI"),
             ("dark brown globules, no tone here", "fitzpatrick", None), ("light brown pigmentation", "monk", None)]
    assert [parse_tone(text, scale) for text, scale, _ in cases] == [want for _, _, want in cases]


def test_contradictory_or_spanning_tones_are_refused():
    with pytest.raises(VocabularyError, match="spans more than one"):
        parse_tone("Fitzpatrick type III-V")
    with pytest.raises(VocabularyError, match="spans more than one"):
        parse_tone("on light to dark skin")
    with pytest.raises(VocabularyError, match="'light brown skin' names two skin tones at once"):
        parse_tone("on light brown skin")  # the match alone ("brown skin") would read V-VI
    with pytest.raises(VocabularyError, match="two different skin tones"):
        parse_tone("Fitzpatrick type II, on darker skin")
    assert parse_tone("Fitzpatrick type VI, on darker skin") == "V-VI"  # the same range twice is fine
    with pytest.raises(VocabularyError, match="unknown tone style"):
        tone_text("V-VI", style="fancy")


def test_strip_tone_drops_only_the_skin_type_items():
    assert strip_tone("itching; Fitzpatrick type IV skin; on the arm") == "itching; on the arm"
    assert strip_tone("Fitzpatrick type V-VI skin") == ""
    assert strip_tone("dark brown areas; on the back") == "dark brown areas; on the back"
    assert strip_tone(pd.NA) is pd.NA


def test_tone_phrases_pass_the_leak_guard():
    texts = [tone_query_text("irregular streaks", r, s, st) for s in TONE_RANGES for r in TONE_RANGES[s]
             for st in TONE_STYLES]
    cases = pd.DataFrame({"case_id": [str(i) for i in range(len(texts))], "diagnosis": "psoriasis",
                          "diagnosis_group": "inflammatory"})
    check_query_text(cases, texts)


# ----------------------------------------------------------------------------- protocol on a hand-made table


def _hand_table(column: str = "fitzpatrick") -> pd.DataFrame:
    """Gallery g1..g6 (train/val), queries q1..q4 (test); g1 is q1's own patient.

    q1 (MEL, I-II): III-IV -> g4, V-VI -> g2 (g1 excluded) | q2 (NEV, I-II): III-IV none (skipped), V-VI -> g3
    q3 (MEL, unknown tone): skipped | q4 (NEV, V-VI): I-II -> g6, III-IV none (skipped)
    """
    values = {"fitzpatrick": [6, 5, 6, 3, None, 1, 1, 2, None, 6],
              "monk": [9, 8, 10, 5, None, 2, 1, 3, None, 9]}[column]
    return pd.DataFrame({
        "case_id": ["g1", "g2", "g3", "g4", "g5", "g6", "q1", "q2", "q3", "q4"],
        "patient_id": ["P1", "P2", "P3", "P4", "P5", "P6", "P1", "P7", "P8", "P9"],
        "image_path": [f"img/{c}" for c in ["g1", "g2", "g3", "g4", "g5", "g6", "q1", "q2", "q3", "q4"]],
        "diagnosis": ["mel", "mel", "nev", "mel", "mel", "nev", "mel", "nev", "mel", "nev"],
        "diagnosis_group": ["MEL", "MEL", "NEV", "MEL", "MEL", "NEV", "MEL", "NEV", "MEL", "NEV"],
        column: pd.array(values, dtype="Int64"),
        "split": ["train", "train", "train", "val", "train", "val", "test", "test", "test", "test"],
        "source": "hand",
    })


# scores of each query (case, target range) over the gallery, best first; unlisted gallery cases score 0
_ORDER = {("q1", "III-IV"): ["g4"], ("q1", "V-VI"): ["g1", "g3", "g2"], ("q2", "V-VI"): ["g3"],
          ("q4", "I-II"): ["g1", "g2", "g6"]}


class RangeReader:
    """Targets are one-hot gallery vectors; a query scores the gallery by ``_ORDER`` of its case and target range."""

    kind = "fake"

    def __init__(self, cases, order=_ORDER, scale="fitzpatrick"):
        self.ids = cases["case_id"].tolist()
        self.order, self.scale = order, scale
        self.texts: list[str] = []

    def encode_targets(self, paths, **_):
        return {"global": np.eye(len(self.ids))[[self.ids.index(p.split("/")[1]) for p in paths]], "local": None}

    def encode_queries(self, paths, texts, **_):
        self.texts += list(texts)
        out = np.zeros((len(texts), len(self.ids)))
        for i, (p, t) in enumerate(zip(paths, texts)):
            wanted = self.order.get((p.split("/")[1], parse_tone(t, self.scale)), [])
            for rank, cid in enumerate(wanted):
                out[i, self.ids.index(cid)] = 10.0 - rank
        return {"global": out, "local": None}


def test_tone_queries_relevance_exclusions_and_skips_by_hand():
    tq = tone_queries(_hand_table())
    assert tq.info[["case_id", "query_range", "target_range"]].to_numpy().tolist() == [
        ["q1", "I-II", "III-IV"], ["q1", "I-II", "V-VI"], ["q2", "I-II", "V-VI"], ["q4", "V-VI", "I-II"]]
    assert tq.skipped == {"no_relevant": 2, "unknown_tone": 1}
    gallery = tq.gallery["case_id"].tolist()
    relevant = [[gallery[j] for j in np.flatnonzero(row)] for row in tq.relevant]
    assert relevant == [["g4"], ["g2"], ["g3"], ["g6"]]          # g1 (q1's own patient) is never relevant
    assert [[gallery[j] for j in np.flatnonzero(row)] for row in tq.exclude] == [["g1"], ["g1"], [], []]
    assert tq.texts[1] == "on Fitzpatrick type V-VI skin: no specific dermoscopic structures"
    by_diagnosis = tone_queries(_hand_table().assign(diagnosis=["mel", "mel", "nev", "mel2", "mel", "nev",
                                                                "mel", "nev", "mel", "nev"]), relevant="diagnosis")
    assert by_diagnosis.info["target_range"].tolist() == ["V-VI", "V-VI", "I-II"]  # q1 III-IV: g4 is another diagnosis


def test_tone_search_metrics_and_macro_over_target_ranges_by_hand():
    cases = _hand_table()
    retriever = RangeReader(cases)
    per_query, summary = tone_search(retriever, cases, ks=(1, 2))
    # q1 III-IV: g4 first; q1 V-VI: g1 (own patient, excluded), g3, g2 -> rank 2; q2 V-VI: g3 first;
    # q4 I-II: g1, g2, g6 -> rank 3
    assert per_query["recall@1"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert per_query["mrr"].tolist() == pytest.approx([1.0, 0.5, 1.0, 1 / 3])
    assert per_query["recall@2"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert summary["n_queries"] == 4 and summary["n_skipped"] == 2 and summary["n_unknown_tone"] == 1
    assert per_query.attrs["skipped"] == {"no_relevant": 2, "unknown_tone": 1}
    assert summary["mrr"] == pytest.approx((1 + 0.5 + 1 + 1 / 3) / 4)
    macro = summarize_metrics(per_query, "macro", by="target_range")   # I-II: 1/3; III-IV: 1; V-VI: (0.5 + 1) / 2
    assert macro["mrr"] == pytest.approx((1 / 3 + 1 + 0.75) / 3) and macro["n_classes"] == 3
    records = metric_records(per_query, "r", "fake", "tone", n_boot=50, by="target_range")
    got = {(r["average"], r["metric"], r["k"]): r["value"] for r in records}
    assert got[("macro", "recall", 1)] == pytest.approx((0 + 1 + 0.5) / 3)
    assert got[("micro", "recall", 1)] == pytest.approx(0.5)
    # the texts the retriever saw name the target range, after the (empty) findings
    assert [parse_tone(t) for t in retriever.texts] == ["III-IV", "V-VI", "V-VI", "I-II"]
    # two queries of one case pair by their target range
    better = {**_ORDER, ("q1", "V-VI"): ["g2"], ("q4", "I-II"): ["g6"]}
    other, _ = tone_search(RangeReader(cases, better), cases, ks=(1, 2))
    diff = paired_difference(other, per_query, metrics=["recall@1"], n_boot=0, average="macro", by="target_range")
    assert diff.loc["recall@1", "difference"] == pytest.approx(1 - 0.5)


def test_tone_search_on_the_monk_scale_and_with_plain_words():
    cases = _hand_table("monk")
    retriever = RangeReader(cases, {(c, {"I-II": "1-3", "III-IV": "4-7", "V-VI": "8-10"}[r]): v
                                    for (c, r), v in _ORDER.items()}, scale="monk")
    per_query, _ = tone_search(retriever, cases, scale="monk", style="plain", ks=(1,))
    assert per_query["target_range"].tolist() == ["4-7", "8-10", "8-10", "1-3"]
    assert per_query["recall@1"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert retriever.texts[0] == "on medium skin: no specific dermoscopic structures"


def test_own_skin_type_in_the_findings_is_replaced_by_the_target():
    cases = _hand_table().assign(findings=["", "", "", "", "", "", "itching; Fitzpatrick type I skin", "", "", ""])
    tq = tone_queries(cases, style="plain")
    assert tq.texts[:2] == ["on medium skin: itching", "on darker skin: itching"]


@pytest.mark.parametrize("change, message", [
    (lambda c: c.drop(columns="fitzpatrick"), "source 'hand' (10 cases) has no Fitzpatrick type (no column"),
    (lambda c: c.assign(fitzpatrick=pd.array([None] * 10, dtype="Int64")), "has no Fitzpatrick type;"),
    (lambda c: c.assign(fitzpatrick=pd.array([5, 6] * 5, dtype="Int64")), "in range V-VI only (10 labelled cases)"),
])
def test_data_without_two_skin_tone_ranges_is_refused(change, message):
    with pytest.raises(DermretrError, match="tone protocol needs Fitzpatrick types in at least two ranges") as err:
        tone_queries(change(_hand_table()))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "--tone-scale" in str(err.value)


def test_estimated_ita_ranges_need_the_estimate(synth_cases):
    with pytest.raises(DermretrError, match="has no estimated ITA category .*estimate skin tone from the pixels"):
        tone_queries(_hand_table(), scale="ita")
    assert with_tone_estimate(synth_cases, "fitzpatrick") is synth_cases
    estimated = with_tone_estimate(synth_cases, "ita")
    assert with_tone_estimate(estimated, "ita") is estimated
    tq = tone_queries(estimated, scale="ita")
    assert set(tq.info["target_range"]) == set(TONE_RANGES["ita"])
    assert tq.texts[0].startswith("on ") and parse_tone(tq.texts[0], "ita") == tq.info["target_range"].iloc[0]
    # DermSynth draws each Fitzpatrick type's skin inside its ITA category: the estimate mostly agrees
    agree = tone_ranges(estimated, "ita") == np.array(
        [None if r is None else list(TONE_RANGES["ita"])[list(TONE_RANGES["fitzpatrick"]).index(r)]
         for r in tone_ranges(estimated)], dtype=object)
    assert agree.mean() > 0.8
    with pytest.raises(DermretrError, match="does not tell skin tones apart"):
        tone_queries(estimated.assign(ita_estimated=70.0, ita_category_estimated=pd.NA), scale="ita")


def test_no_query_with_a_relevant_case_is_refused():
    cases = _hand_table().assign(diagnosis_group=["A", "A", "A", "A", "A", "A", "B", "B", "B", "B"])
    with pytest.raises(DermretrError, match="no tone query has a relevant gallery case"):
        tone_queries(cases)


def test_ranges_read_ddi_pairs_and_estimated_ita():
    cases = pd.DataFrame({"fitzpatrick": pd.array([None, 2, None], dtype="Int64"),
                          "skin_tone_group": ["V-VI", None, None], "ita_estimated": [60.0, -40.0, np.nan]})
    assert tone_ranges(cases).tolist() == ["V-VI", "I-II", None]
    assert tone_ranges(cases, "ita").tolist() == ["very light-light", "brown-dark", None]
    assert tone_ranges(cases.assign(ita_category_estimated=["tan", None, None]), "ita").tolist() == [
        "intermediate-tan", "brown-dark", None]


# ----------------------------------------------------------------------------- floors


def test_tone_floors_match_hand_computed_expectations():
    cases = _hand_table()
    random_pq, _ = tone_floor_search(cases, "random", ks=(1,))
    # one relevant among the rankable gallery: 5 for q1 (g1 excluded), 6 for q2 and q4
    assert random_pq["recall@1"].tolist() == pytest.approx([1 / 5, 1 / 5, 1 / 6, 1 / 6])
    assert random_pq["mrr"].iloc[2] == pytest.approx(sum(1 / r for r in range(1, 7)) / 6)
    only, summary = tone_floor_search(cases, "filter_only", ks=(1,))
    # the target range first: q1 III-IV {g4}; q1 V-VI {g2, g3} (g1 excluded); q2 V-VI {g1, g2, g3}; q4 I-II {g6}
    assert only["recall@1"].tolist() == pytest.approx([1.0, 1 / 2, 1 / 3, 1.0])
    assert only["mrr"].tolist() == pytest.approx([1.0, (1 + 1 / 2) / 2, (1 + 1 / 2 + 1 / 3) / 3, 1.0])
    assert list(only.columns[:2]) == ["method", "case_id"] and "tone_text" not in only.columns
    per_query, records = evaluate_floors(cases, protocol="tone", ks=(1,), n_boot=0)
    macro = {r["run"]: r["value"] for r in records if r["average"] == "macro" and r["metric"] == "recall"}
    # majority: the range first, then its most common group (III-IV: MEL; V-VI: MEL 2 of 3; I-II: NEV):
    # q1 III-IV g4, q1 V-VI g2 before g3, q2 V-VI g1 and g2 (MEL) before its relevant g3, q4 I-II g6
    assert macro == pytest.approx({"floor:random": (1 / 6 + 1 / 5 + (1 / 5 + 1 / 6) / 2) / 3,
                                   "floor:filter_only": (1 + 1 + (1 / 2 + 1 / 3) / 2) / 3,
                                   "floor:majority": (1 + 1 + (1 + 0) / 2) / 3})
    majority, _ = tone_floor_search(cases, "majority", ks=(1,))
    assert majority["mrr"].tolist() == pytest.approx([1.0, 1.0, 1 / 3, 1.0])
    # no findings: no criteria_match by default, and a clear refusal when asked
    assert set(per_query["protocol"]) == {"tone"}
    assert set(per_query["method"]) == {"random", "majority", "filter_only"}
    with pytest.raises(DermretrError, match="needs annotated 7-point findings"):
        evaluate_floors(cases, ["criteria_match"], protocol="tone")
    with pytest.raises(DermretrError, match="for the tone protocol; its floors: random, majority, criteria_match, "
                                            "filter_only"):
        evaluate_floors(cases, ["nearest"], protocol="tone")
    with pytest.raises(DermretrError, match="unknown tone floor"):
        tone_floor_search(cases, "nearest")
    # ties: the target range is one tie of filter_only; the worst and best orders inside it bound the expectation
    worst, _ = tone_floor_search(cases, "filter_only", ks=(1,), ties="pessimistic")
    best, _ = tone_floor_search(cases, "filter_only", ks=(1,), ties="optimistic")
    assert worst["recall@1"].tolist() == [1.0, 0.0, 0.0, 1.0] and best["recall@1"].tolist() == [1.0] * 4
    pq, _ = evaluate_floors(cases, ["filter_only", "random"], protocol="tone", ks=(1,), n_boot=0, ties="pessimistic")
    assert pq[pq["method"] == "filter_only"]["recall@1"].tolist() == worst["recall@1"].tolist()
    assert pq[pq["method"] == "random"]["recall@1"].tolist() == pytest.approx(random_pq["recall@1"].tolist())
    with pytest.raises(DermretrError, match="ties must be one of"):
        tone_floor_search(cases, "majority", ties="random")


def test_tone_majority_floor_takes_the_majority_of_the_target_range_not_of_the_gallery():
    # three more NEV cases on type III: NEV is now the gallery's majority (5 against 4), MEL still V-VI's (2 of 3)
    extra = pd.DataFrame({"case_id": ["h1", "h2", "h3"], "patient_id": ["H1", "H2", "H3"],
                          "image_path": ["img/h1", "img/h2", "img/h3"], "diagnosis": "nev", "diagnosis_group": "NEV",
                          "fitzpatrick": pd.array([3, 3, 4], dtype="Int64"), "split": "train", "source": "hand"})
    cases = pd.concat([_hand_table(), extra], ignore_index=True)
    pq, _ = tone_floor_search(cases, "majority", ks=(1,))
    mrr = dict(zip(zip(pq["case_id"], pq["target_range"]), pq["mrr"]))
    # q1 (MEL) III-IV: the range is g4 (MEL) and h1..h3 (NEV): NEV first, g4 at rank 4
    # q1 (MEL) V-VI: MEL first, g2 at rank 1 (g1 excluded) | q2 (NEV) V-VI: g1, g2 (MEL) first, g3 at rank 3
    # q2 and q4 (NEV) III-IV (new: h1..h3 are relevant): NEV first, a hit at rank 1 | q4 (NEV) I-II: g6 alone
    # (the gallery's majority, NEV, would give q1 V-VI 1/2 and q2 V-VI 1)
    assert mrr == pytest.approx({("q1", "III-IV"): 1 / 4, ("q1", "V-VI"): 1.0, ("q2", "III-IV"): 1.0,
                                 ("q2", "V-VI"): 1 / 3, ("q4", "I-II"): 1.0, ("q4", "III-IV"): 1.0})


def test_tone_criteria_match_needs_findings_on_the_protocols_own_queries():
    # findings only on q3, whose skin tone is unknown (no tone query), and on the gallery: no criteria_match
    cases = _hand_table().assign(streaks=["absent"] * 6 + [None, None, "absent", None])
    assert available_floors(cases, protocol="tone") == ("random", "majority", "filter_only")
    per_query, _ = evaluate_floors(cases, protocol="tone", ks=(1,), n_boot=0)
    assert set(per_query["method"]) == {"random", "majority", "filter_only"}
    with pytest.raises(DermretrError, match="use the random, majority and filter_only floors"):
        tone_floor_search(cases, "criteria_match")
    # findings on a query, but in the gallery only on g5, whose skin tone is unknown: no criteria_match either
    cases = _hand_table().assign(streaks=[None] * 4 + ["absent", None, "absent", None, None, None])
    assert available_floors(cases, protocol="tone") == ("random", "majority", "filter_only")


def test_tone_criteria_match_floor_ranks_the_range_first_then_by_findings():
    cases = _hand_table().assign(streaks=["absent", "irregular", "irregular", None, None, "absent",
                                          "absent", "irregular", None, "irregular"])
    assert available_floors(cases, protocol="tone") == TONE_FLOORS
    pq, _ = tone_floor_search(cases, "criteria_match", ks=(1,))
    # q1 III-IV: g4 (unknown streaks) is the range; q1 V-VI: g2 and g3 both disagree (tie, g1 excluded);
    # q2 V-VI: g2 and g3 agree (tie, above g1); q4 I-II: g6 is the range
    assert pq["recall@1"].tolist() == pytest.approx([1.0, 1 / 2, 1 / 2, 1.0])
    assert pq["mrr"].tolist() == pytest.approx([1.0, 3 / 4, 3 / 4, 1.0])
    # the findings decide: q2 with absent streaks puts g1 (agrees, not relevant) first
    flipped = cases.assign(streaks=cases["streaks"].where(cases["case_id"] != "q2", "absent"))
    pq, _ = tone_floor_search(flipped, "criteria_match", ks=(1,))
    assert pq["recall@1"].tolist()[2] == 0.0 and pq["mrr"].tolist()[2] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_tone_findings_fusion_and_its_weight_by_hand():
    # streaks: q1 (absent) agrees with g1, g2 (its V-VI target) and g6; q2 and q4 (irregular) with g3
    cases = _hand_table().assign(streaks=["absent", "absent", "irregular", None, None, "absent",
                                          "absent", "irregular", None, "irregular"])
    tq = tone_queries(cases)
    s = tone_scores(RangeReader(cases), tq)
    plain, _ = tone_search(RangeReader(cases), cases, ks=(1,))
    pd.testing.assert_frame_equal(tone_scores_search(tq, s, ks=(1,)), plain)  # tone_search is the two steps
    # the model's 10, 9, 8 (_ORDER) plus w x agreement (1 agree, 1/2 unknown, 0 disagree), recall@1 of the
    # four queries (q1 III-IV, q1 V-VI, q2 V-VI, q4 I-II): w = 2 lifts g2 over g3 for q1 V-VI; w = 25 also puts
    # g2 and g6 (agreeing, out of range) over g4 for q1 III-IV
    for w, expected in ((0, [1, 0, 1, 0]), (2, [1, 1, 1, 0]), (25, [0, 1, 1, 0])):
        pq = tone_scores_search(tq, hybrid_scores(tq.rows, tq.gallery, s, w), ks=(1,))
        assert pq["recall@1"].tolist() == expected, w
    # chosen by macro over the target ranges (I-II, III-IV, V-VI): 0 -> (0 + 1 + 1/2) / 3, 2 -> 2/3, 25 -> 1/3
    weight, values = choose_findings_weight(RangeReader(cases), cases, "test", ("train", "val"), weights=(0, 2, 25),
                                            metric="recall@1", protocol="tone")
    assert weight == 2 and values.to_dict() == pytest.approx({0: 0.5, 2: 2 / 3, 25: 1 / 3})
    with pytest.raises(DermretrError, match=r"scores \(4, 5\) do not fit 4 tone queries and 6 gallery cases; score"):
        tone_scores_search(tq, s[:, :5])
    with pytest.raises(DermretrError, match="for the case and tone protocols, not 'modify'"):
        choose_findings_weight(RangeReader(cases), cases, protocol="modify")


# ----------------------------------------------------------------------------- training triplets


def test_tone_triplets_are_derived_from_the_labels():
    cases = _hand_table()
    cases = cases[cases["split"] != "test"].reset_index(drop=True).assign(
        patient_id=["P1", "P2", "P3", "P4", "P5", "P3"], findings=["Fitzpatrick type VI skin; itching"] + [""] * 5)
    t = derive_tone_triplets(cases, seed=1)
    rows = {r.reference_case_id: (r.target_case_id, r.target_range) for r in t.itertuples()}
    # g1, g2 (MEL V-VI): the only MEL case of another range is g4 (III-IV); g4 (MEL III-IV): g1 or g2 (V-VI);
    # g3 (NEV V-VI) and g6 (NEV I-II) are one patient: no target; g5: unknown tone
    assert rows["g1"] == ("g4", "III-IV") and rows["g2"] == ("g4", "III-IV")
    assert rows["g4"][0] in ("g1", "g2") and rows["g4"][1] == "V-VI"
    assert set(rows) == {"g1", "g2", "g4"} and set(t["scale"]) == {"fitzpatrick"}
    for r in t.itertuples():
        assert parse_tone(r.modification_text) == r.target_range
    text_g1 = t.set_index("reference_case_id").loc["g1", "modification_text"]
    assert "itching" in text_g1 and "VI skin;" not in text_g1 and "type VI" not in text_g1
    assert t.equals(derive_tone_triplets(cases, seed=1))
    # no labels in two ranges: no triplets; Monk tones serve when Fitzpatrick types do not
    assert derive_tone_triplets(cases.assign(fitzpatrick=pd.array([2] * 6, dtype="Int64"))).empty
    monk = derive_tone_triplets(_hand_table("monk").iloc[:6])
    assert set(monk["scale"]) == {"monk"} and set(monk["target_range"]) <= set(TONE_RANGES["monk"])


def test_training_triplets_hold_dermsynth_and_tone_triplets(synth_root, synth_cases):
    train_idx = np.flatnonzero(synth_cases["split"].astype(str).to_numpy() == "train")
    t = training_triplets(f"synthetic:{synth_root}", synth_cases, train_idx, seed=0)
    tone, mods = t[t["key"] != ""], t[t["key"] == ""]
    assert len(mods) > 0 and len(tone) > 0
    assert set(t["ref"]) | set(t["tgt"]) <= set(train_idx.tolist())
    ref, tgt = synth_cases.iloc[tone["ref"]], synth_cases.iloc[tone["tgt"]]
    assert (ref["diagnosis_group"].to_numpy() == tgt["diagnosis_group"].to_numpy()).all()
    assert (tone_ranges(ref) != tone_ranges(tgt)).all()
    assert (ref["patient_id"].to_numpy() != tgt["patient_id"].to_numpy()).all()
    assert [parse_tone(x) for x in tone["text"]] == tone_ranges(tgt).tolist()
    # a tone query asks for its group and range; every target's own group and range is known to the loss
    groups = ref["diagnosis_group"].astype(str).to_numpy()
    assert tone["key"].tolist() == [f"{g}|{r}" for g, r in zip(groups, tone_ranges(tgt))]
    assert (tone["target_key"] == tone["key"]).all()
    all_tgt = synth_cases.iloc[t["tgt"]]
    assert t["target_key"].tolist() == [f"{g}|{r}" if r is not None else "" for g, r in
                                        zip(all_tgt["diagnosis_group"].astype(str), tone_ranges(all_tgt))]
    # positives: a tone query takes a modification's target of its group and range too, never the reverse

    mod = mods[mods["target_key"].isin(set(tone["key"]))].iloc[:1]
    ask = tone[tone["key"] == mod["target_key"].iloc[0]].iloc[:1]
    pos = triplet_positives(pd.concat([mod, ask], ignore_index=True))
    assert pos.tolist() == [[True, False], [True, True]]
    plain = training_triplets(f"synthetic:{synth_root}", synth_cases, train_idx, seed=0, tone_wanted=False)
    assert (plain["key"] == "").all() and len(plain) == len(mods)  # TrainConfig(tone_triplets=False)


# ----------------------------------------------------------------------------- models and the CLI


@pytest.fixture(scope="module")
def tone_run(synth_root, tmp_path_factory):
    """A composed model trained one epoch on the small DermSynth set (with tone triplets)."""
    from dermretr.train import fit

    out = tmp_path_factory.mktemp("tone") / "run"
    result = fit(train_config(f"synthetic:{synth_root}", out, epochs=1, tone_triplets=True))
    assert "modification" in result.history[0]
    return out


def test_every_retriever_kind_answers_tone_queries(synth_cases):
    import torch

    from dermretr.models.backbones import create
    from dermretr.models.retriever import KINDS, Retriever

    torch.manual_seed(0)
    backbone = create("dermretr-tiny", device="cpu", image_size=64)
    tables = {}
    for kind in KINDS:
        model = Retriever(backbone, kind=kind, n_masks=2).eval()
        tables[kind], summary = tone_search(model, synth_cases, ks=(1, 10), batch_size=32)
        assert summary["n_queries"] == len(tables[kind]) > 0
    # queries built once (as evaluate_run does) give the same table; without their texts they cannot search
    built = tone_queries(synth_cases)
    again, _ = tone_search(model, synth_cases, ks=(1, 10), batch_size=32, queries=built)
    assert again.equals(tables[kind])
    with pytest.raises(DermretrError, match="built with texts=False cannot be searched"):
        tone_search(model, synth_cases, queries=tone_queries(synth_cases, texts=False))
    first = tables["full"]
    for kind, pq in tables.items():
        assert pq["n_relevant"].tolist() == first["n_relevant"].tolist(), kind
    assert first["case_id"].duplicated().any()  # cases asked for two other ranges
    # the same image asked for two ranges: an image-only query ignores the phrase, a text-only one reads it
    paths = synth_cases["image_path"].iloc[:1].tolist() * 2
    texts = [tone_query_text("irregular streaks", "I-II"), tone_query_text("irregular streaks", "V-VI")]
    image_q = Retriever(backbone, kind="image", n_masks=2).eval().encode_queries(paths, texts)["global"]
    text_q = Retriever(backbone, kind="text", n_masks=2).eval().encode_queries(paths, texts)["global"]
    assert np.allclose(image_q[0], image_q[1]) and not np.allclose(text_q[0], text_q[1])


def test_cli_evaluate_tone_protocol(tone_run, synth_root, tmp_path, capsys):
    out, per_query = tmp_path / "metrics.json", tmp_path / "pq.csv"
    rc = main(["evaluate", "--run", str(tone_run), "--data", f"synthetic:{synth_root}", "--protocol", "tone",
               "--out", str(out), "--per-query", str(per_query), "--n-boot", "50", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "Protocol tone" in text and "mean over target skin-tone ranges" in text and "filter_only =" in text
    records = json.loads(out.read_text())
    assert {r["protocol"] for r in records} == {"tone"}
    assert {(r["run"], r["average"]) for r in records} == {
        (run, avg) for run in ("run", "floor:random", "floor:majority", "floor:criteria_match", "floor:filter_only")
        for avg in ("micro", "macro")}
    table = pd.read_csv(per_query)
    model = table[table["run"] == "run"]
    assert set(model["target_range"]) <= set(TONE_RANGES["fitzpatrick"])
    assert (model["target_range"] != model["query_range"]).all() and (model["n_relevant"] > 0).all()
    n_queries = {r["run"]: r["n_queries"] for r in records}
    assert len(set(n_queries.values())) == 1 and n_queries["run"] == len(model)
    assert f"{len(model)} queries, skipped:" in text


def _copy_with_skin_types(root, dest, values):
    shutil.copytree(root, dest)
    meta = pd.read_csv(dest / "meta" / "meta.csv", dtype=str, keep_default_na=False)
    meta["fitzpatrick"] = values
    meta.to_csv(dest / "meta" / "meta.csv", index=False)
    return dest


@pytest.mark.parametrize("values, message", [("", "has no Fitzpatrick type;"),
                                             ("2", "has Fitzpatrick types in range I-II only")])
def test_cli_tone_without_two_skin_tone_ranges_is_one_line_exit_2(tone_run, synth_root, tmp_path, capsys,
                                                                  values, message):
    data = _copy_with_skin_types(synth_root, tmp_path / "ds", values)
    rc = main(["evaluate", "--run", str(tone_run), "--data", f"synthetic:{data}", "--protocol", "tone",
               "--out", str(tmp_path / "m.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("dermretr: error: the tone protocol needs") and err.count("\n") == 1, err
    assert "source 'synthetic'" in err and message in err and "--tone-scale" in err
    assert not (tmp_path / "m.json").exists()


def test_cli_case_protocol_refuses_the_tone_floor(tone_run, synth_root, tmp_path, capsys):
    rc = main(["evaluate", "--run", str(tone_run), "--data", f"synthetic:{synth_root}", "--protocol", "case",
               "--floors", "filter_only", "--out", str(tmp_path / "m.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "for the case protocol; its floors: random, majority, criteria_match" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "m.json").exists()
