"""Leak-free query text: every source's findings pass the guard, captions that name the diagnosis do not.

The fixtures are the loader tests' own tiny datasets (imported from their test modules), so this file
checks the text views of exactly the tables those tests check.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from fixtures import load_quietly
from test_source_ddi import _dataset as ddi_dataset
from test_source_derm7pt import _make as derm7pt_dataset
from test_source_fitzpatrick17k import _dataset as fitzpatrick17k_dataset
from test_source_ham10000 import _dataset as ham10000_dataset
from test_source_isic2020 import _dataset as isic2020_dataset
from test_source_pad_ufes20 import _dataset as pad_ufes20_dataset
from test_source_ph2 import _dataset as ph2_dataset
from test_source_scin import _dataset as scin_dataset

from dermretr._errors import DermretrError
from dermretr.data import load
from dermretr.data.vocab import TEXT_STYLES, case_text
from dermretr.evaluate import case_scores, check_query_text, load_triplets, modify_search

#: source -> writes its fixture folder under the given path and returns the folder to load
WRITERS = {
    "pad-ufes-20": pad_ufes20_dataset,
    "fitzpatrick17k": fitzpatrick17k_dataset,
    "ddi": ddi_dataset,
    "scin": scin_dataset,
    "ham10000": ham10000_dataset,
    "isic2020": isic2020_dataset,
    "ph2": ph2_dataset,
    "derm7pt": lambda root: (derm7pt_dataset(root), root)[1],
}
#: the real sources whose caption (``descriptors``) names the diagnosis
CAPTION_NAMES_DIAGNOSIS = ("pad-ufes-20", "fitzpatrick17k", "ddi", "scin", "ham10000", "isic2020")
#: sources described by 7-point criteria: their findings are their (diagnosis-free) descriptors
CRITERIA_SOURCES = ("derm7pt", "ph2", "synthetic")
SOURCES = (*WRITERS, "synthetic")


@pytest.fixture(scope="module")
def synth_small(tmp_path_factory):
    from dermretr.data.synth import generate

    return generate(tmp_path_factory.mktemp("leak") / "ds", n_cases=16, seed=3, image_size=64,
                    modification_rate=0.5, workers=1, progress=False)


@pytest.fixture(scope="module")
def tables(tmp_path_factory, synth_small) -> dict[str, pd.DataFrame]:
    out = {"synthetic": load("synthetic", synth_small)}
    for source, write in WRITERS.items():
        out[source] = load_quietly(load, source, write(tmp_path_factory.mktemp(source.replace("-", ""))))
    return out


def _texts(cases: pd.DataFrame, view: str, style: str = "terse", seed: int | None = None) -> list[str]:
    return [case_text(row, style=style, seed=seed, view=view) for _, row in cases.iterrows()]


# --------------------------------------------------------------------------- every source


def test_every_source_is_covered(tables):
    from dermretr.data import SOURCES as REGISTERED

    assert set(REGISTERED) == set(SOURCES)
    for source, cases in tables.items():
        assert len(cases) > 0 and {"descriptors", "findings"} <= set(cases.columns), source


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("style", TEXT_STYLES)
def test_findings_of_every_source_pass_the_guard(tables, source, style):
    cases = tables[source]
    for seed in (None, 0, 1):
        texts = _texts(cases, "findings", style, seed)
        for relevant in ("diagnosis_group", "diagnosis"):
            check_query_text(cases, texts, relevant=relevant)
    check_query_text(cases)  # the default texts: what case_scores builds


@pytest.mark.parametrize("source", SOURCES)
def test_findings_columns_hold_no_label(tables, source):
    cases = tables[source]  # the column itself, whatever view renders it
    check_query_text(cases, cases["findings"].fillna("").tolist())


@pytest.mark.parametrize("source", CAPTION_NAMES_DIAGNOSIS)
def test_captions_that_name_the_diagnosis_trip_the_guard(tables, source):
    cases = tables[source]
    with pytest.raises(DermretrError, match=rf"^query text names the answer: source '{source}', case '[^']+': "
                                            r"'[^']+' in .+ \(and \d+ more of \d+ queries\)"):
        check_query_text(cases, _texts(cases, "caption"))


@pytest.mark.parametrize("source", CRITERIA_SOURCES)
def test_criteria_sources_findings_are_their_descriptors(tables, source):
    cases = tables[source]
    assert cases["findings"].equals(cases["descriptors"])
    assert _texts(cases, "caption") == _texts(cases, "findings")  # training and queries read the same criteria


# --------------------------------------------------------------------------- the guard itself


def _cases(**columns) -> pd.DataFrame:
    base = {"case_id": ["c1", "c2", "c3"], "source": ["ham10000", "ham10000", "ddi"],
            "diagnosis": ["mel", "nv", "verruca-vulgaris"], "diagnosis_group": ["MEL", "NEV", "benign"]}
    return pd.DataFrame({**base, **columns})


def _leak(cases: pd.DataFrame, texts, **options) -> str:
    with pytest.raises(DermretrError) as err:
        check_query_text(cases, texts, **options)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_message_names_the_source_the_case_and_the_word():
    message = _leak(_cases(), ["on the back", "age 45", "Verruca-Vulgaris on the hand"])
    assert message.startswith("query text names the answer: source 'ddi', case 'c3': 'verruca vulgaris' in "
                              "'Verruca-Vulgaris on the hand'; queries must hold findings only")
    message = _leak(_cases(), ["melanoma", "on the back", "benign"])
    assert "case 'c1': 'melanoma'" in message and "(and 1 more of 3 queries)" in message
    no_source = _cases().drop(columns=["source", "case_id"])
    assert "'row 1': 'nevi'" in _leak(no_source, ["on the back", "nevi on the back", ""])


def test_whole_words_only_and_letter_case_ignored():
    cases = _cases()
    check_query_text(cases, ["melanocytic pattern", "nevoid", "MELANIN"])  # 'mel', 'nevus' only as words
    assert "'mel'" in _leak(cases, ["Mel.", "", ""])
    assert "'nevus'" in _leak(cases, ["nevus-like", "", ""])
    assert "'melanoma in situ'" in _leak(cases, ["MELANOMA (in situ)", "", ""])  # the longest phrase is named


def test_labels_of_two_characters_or_fewer_are_not_checked():
    cases = _cases(diagnosis=["df", "nv", "SK"], diagnosis_group=["SK", "NV", "AK"])
    check_query_text(cases, ["df", "nv on the back", "sk ak"])


def test_group_names_are_refused_even_generic_ones():
    assert "'benign'" in _leak(_cases(), ["", "benign", ""])
    groups = _cases(diagnosis=["psoriasis", "acne", "eczema"], diagnosis_group=["inflammatory", "other", "other"])
    assert "'other'" in _leak(groups, ["", "other body part", ""])
    assert "'inflammatory'" in _leak(groups, ["inflammatory plaque", "", ""], relevant="diagnosis")
    check_query_text(groups, ["on another body part", "", ""])


def test_the_relevant_column_and_the_vocabulary_are_refused():
    cases = _cases(family=["pigmented", "pigmented", "viral"])
    check_query_text(cases, ["viral", "", ""])
    assert "'viral'" in _leak(cases, ["viral", "", ""], relevant="family")
    for synonym in ("naevi", "malignant", "cancer", "seborrheic keratosis", "blue nevus", "akiec", "BCC"):
        assert f"'{synonym.lower()}'" in _leak(cases, ["", synonym, ""])


def test_bad_input_is_a_one_line_error():
    assert "2 query texts for 3 query cases" in _leak(_cases(), ["a", "b"])
    assert "relevant column 'family' is not in the case table" in _leak(_cases(), ["", "", ""], relevant="family")


# --------------------------------------------------------------------------- the protocols use it


class NoEncoding:
    """A retriever that must not be reached: the guard fails first."""

    def encode_queries(self, *_, **__):
        raise AssertionError("a leaking query was encoded")

    encode_targets = encode_queries


def _table(findings: list[str]) -> pd.DataFrame:
    n = len(findings)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                         "image_path": [f"{i}.png" for i in range(n)], "diagnosis": ["psoriasis", "acne"] * (n // 2),
                         "diagnosis_group": "inflammatory", "split": ["train", "test"] * (n // 2),
                         "source": "fitzpatrick17k", "descriptors": ["psoriasis; inflammatory", "acne"] * (n // 2),
                         "findings": findings})


def test_case_protocol_refuses_a_leaking_findings_column_before_encoding():
    leaking = _table(["Fitzpatrick type II skin", "acne on the face"] * 2)
    with pytest.raises(DermretrError, match=r"source 'fitzpatrick17k', case 'c1': 'acne'"):
        case_scores(NoEncoding(), leaking)


def test_case_protocol_queries_with_the_findings_only():
    class Texts:
        def encode_queries(self, paths, texts, **_):
            self.texts = list(texts)
            return {"global": np.ones((len(paths), 2)), "local": None}

        def encode_targets(self, paths, **_):
            return {"global": np.ones((len(paths), 2)), "local": None}

    retriever = Texts()
    with pytest.warns(UserWarning, match="findings of source 'fitzpatrick17k' name only the skin type.*"
                                         "--protocol tone"):
        case_scores(retriever, _table(["Fitzpatrick type II skin", "Fitzpatrick type V skin"] * 2))
    assert retriever.texts == ["Fitzpatrick type V skin"] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # findings beyond the skin type: no warning
        case_scores(retriever, _table(["Fitzpatrick type II skin", "itching; Fitzpatrick type V skin"] * 2))
    case_scores(retriever, _table(["", ""]).drop(columns="findings"))  # an old table: never its caption
    assert retriever.texts == ["no specific dermoscopic structures"]


def test_modify_protocol_refuses_a_text_naming_a_diagnosis():
    cases = _table(["", ""] * 2).assign(split="test")
    triplets = pd.DataFrame({"reference_case_id": ["c0", "c1"], "target_case_id": ["c1", "c0"],
                             "modification_text": ["same lesion but with a blue-whitish veil",
                                                   "same lesion but a melanoma"]})
    with pytest.raises(DermretrError, match=r"case 'c1': 'melanoma' in 'same lesion but a melanoma'"):
        modify_search(NoEncoding(), cases, triplets)


def test_dermsynth_modification_texts_pass_the_guard(tables, synth_small):
    cases = tables["synthetic"]
    triplets = load_triplets(synth_small)
    assert triplets is not None and len(triplets) > 0
    refs = cases.set_index("case_id").loc[triplets["reference_case_id"]].reset_index()
    check_query_text(refs, triplets["modification_text"].tolist())
