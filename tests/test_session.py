"""The query session (dermretr.session) driven without widgets: reference, text, filters, results, caching."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermretr._errors import DermretrError, VocabularyError
from dermretr.data.images import ImageReadError
from dermretr.data.vocab import CRITERIA, render_text
from dermretr.index import CaseIndex
from dermretr.session import UNKNOWN, QuerySession, SearchReport, tone_exposure_text

SESSION = Path(__file__).resolve().parents[1] / "dermretr" / "session"


@pytest.fixture
def session(index):
    return QuerySession(index, k=6)


def _subindex(index: CaseIndex, cases: pd.DataFrame) -> CaseIndex:
    n = len(cases)
    return CaseIndex.from_embeddings({k: (v[:n] if k != "alpha" else v) for k, v in index.targets().items()},
                                     cases.reset_index(drop=True))


def _png(path: str) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_the_session_imports_no_widgets_and_no_threads():
    for path in SESSION.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("ipywidgets", "threading", "IPython") for n in names), (path, names)


def test_a_reference_case_composes_its_text_and_gives_results(session, index):
    cid = str(index.cases["case_id"].iloc[5])
    row = index.cases.set_index("case_id").loc[cid]
    session.set_reference(cid)
    known = {c: str(row[c]) for c in CRITERIA}
    assert session.reference_case == cid and session.criteria == known and session.wanted() == {}
    assert session.text == render_text(known, seed=None)
    res = session.results()
    assert len(res) == 6 and cid not in set(res["case_id"]) and list(res["rank"]) == list(range(1, 7))
    assert res.attrs["text"] == session.text and res.attrs["descriptors"]
    assert res["relevant"].tolist() == (res["diagnosis_group"] == row["diagnosis_group"]).tolist()
    assert list(res.columns[:6]) == ["rank", "case_id", "score", "s_global", "s_local", "relevant"]
    pd.testing.assert_frame_equal(session.last_results, res)


def test_excluding_the_reference_equals_asking_one_more_and_dropping_it(session, index):
    cid = str(index.cases["case_id"].iloc[3])
    session.set_reference(cid)
    session.text = "irregular streaks"
    got = session.results()
    q = session.encode("irregular streaks")
    full = index.search_vectors(q, k=7, alpha=session.alpha)
    want = full[full["case_id"] != cid].head(6)
    assert got["case_id"].tolist() == want["case_id"].tolist()
    np.testing.assert_allclose(got["score"], want["score"])
    session.exclude_reference = False
    assert cid in set(session.results()["case_id"])


def test_changed_criteria_write_the_modification_text_and_relevance_follows(session, index):
    sel = (index.cases["blue_whitish_veil"].astype("string") == "absent").fillna(False).to_numpy(dtype=bool)
    cid = str(index.cases["case_id"][sel].iloc[0])
    session.set_reference(cid)
    session.set_criterion("blue_whitish_veil", "present")
    assert session.text == "same lesion but with a blue-whitish veil"
    assert session.wanted() == {"blue_whitish_veil": "present"}
    res = session.results()
    assert not res.loc[res["relevant"].astype(bool), "blue_whitish_veil"].ne("present").any()
    session.set_criterion("blue_whitish_veil", "absent")
    assert session.wanted() == {} and session.compose_text() == session.base_text
    with pytest.raises(VocabularyError, match="unknown criterion"):
        session.set_criterion("colour", "blue")
    with pytest.raises(VocabularyError, match="unknown value"):
        session.set_criterion("streaks", "wavy")


def test_other_references_an_image_bytes_and_a_file(session, index):
    path = str(index.cases["image_path"].iloc[7])
    for reference in (Image.open(path), _png(path), path, Path(path)):
        session.set_reference(reference)
        assert session.reference_case is None and session.reference is not None
        assert all(v == UNKNOWN for v in session.criteria.values()) and session.text == ""
        res = session.results()
        assert len(res) == 6 and res["relevant"].isna().all()
    with pytest.raises(ImageReadError, match="letter.txt is not an image"):
        session.set_reference(b"Dear colleague", "letter.txt")
    with pytest.raises(DermretrError, match="not in this index"):
        session.set_reference("nope")


def test_without_a_reference_results_say_what_to_do(index):
    session = QuerySession(index, k=3)
    report = session.search()
    assert isinstance(report, SearchReport) and report.results is None and report.level == "warning"
    with pytest.raises(DermretrError, match="pick a reference case"):
        session.results()
    with pytest.raises(DermretrError, match="no results to explain yet"):
        session.explain(1)


def test_filters_use_the_index_rules(session, index):
    session.set_reference(str(index.cases["case_id"].iloc[10]))
    session.skin_types = (5, 6)
    session.groups = ("mel",)  # string filters match case-insensitively, as CaseIndex.search does
    res = session.results()
    assert len(res) and set(res["fitzpatrick"]) <= {5, 6} and set(res["diagnosis_group"]) == {"MEL"}
    assert session.filters() == {"fitzpatrick": [5, 6], "diagnosis_group": ["mel"]}
    session.groups = ("no-such-group",)
    report = session.search()
    assert len(report.results) == 0 and report.level == "warning"
    assert "no case matches the filters (skin type V, VI and diagnosis group no-such-group)" in report.lines()[0]


def test_a_filter_on_a_column_the_cases_lack_is_an_error(session, index):
    session.set_reference(str(index.cases["case_id"].iloc[0]))
    session.cases = session.cases.drop(columns="fitzpatrick")  # a case table without skin types
    session.skin_types = (5,)
    with pytest.raises(DermretrError, match="cannot filter on unknown column 'fitzpatrick'"):
        session.search()


def test_fewer_cases_than_k_are_noted(session, index):
    group = index.cases["diagnosis_group"].value_counts().index[-1]
    n = int((index.cases["diagnosis_group"] == group).sum())
    session.k = n + 3
    session.set_reference(str(index.cases["case_id"].iloc[0]))
    session.groups = (group,)
    report = session.search()
    shown = n - int(index.cases["diagnosis_group"].iloc[0] == group)
    assert len(report.results) == shown and report.level == "warning"
    assert f"showing {shown}, not k={n + 3}" in " ".join(report.lines())


def test_tone_modifier_text_note_filter_and_relevance(session, index):
    session.set_reference(str(index.cases["case_id"].iloc[10]))
    base = session.text
    assert session.tone_note() == tone_exposure_text(index.cases)
    session.set_tone("darker")
    assert session.tone == "V-VI" and session.text.startswith("on Fitzpatrick type V-VI skin: ")
    assert session.tone_note() == tone_exposure_text(index.cases, "V-VI")
    assert session.filters() == {}
    session.tone_only = True
    assert session.filters() == {"fitzpatrick": [5, 6]}
    assert set(session.results()["fitzpatrick"]) <= {5, 6}
    session.tone_only, session.k = False, 30
    res = session.results()
    group = index.cases["diagnosis_group"].iloc[10]
    assert res["relevant"].tolist() == ((res["diagnosis_group"] == group) & res["fitzpatrick"].isin([5, 6])).tolist()
    session.set_tone(None)
    assert session.tone is None and session.text == base
    with pytest.raises(VocabularyError, match="not a Fitzpatrick type"):
        session.set_tone(7)


def test_encoded_queries_are_cached_per_reference_and_text(session, index, monkeypatch):
    calls = []
    encode = session.retriever.encode_queries
    monkeypatch.setattr(session.retriever, "encode_queries", lambda *a, **kw: calls.append(1) or encode(*a, **kw))
    session.set_reference(str(index.cases["case_id"].iloc[1]))
    session.results()
    session.k, session.alpha = 3, 0.4  # controls only: the encoded query is reused
    session.results()
    assert len(calls) == 1
    session.text = "regular dots and globules"
    session.results()
    assert len(calls) == 2
    assert session.thumbnail_png(index.cases["image_path"].iloc[0], 32).startswith(b"\x89PNG")


def test_bad_arguments_are_clear_errors(index):
    with pytest.raises(DermretrError, match="QuerySession needs a CaseIndex"):
        QuerySession(3)  # a case table is indexed with the released model (tests/test_pretrained_search.py)
    with pytest.raises(DermretrError, match="QuerySession needs a retriever"):
        QuerySession(CaseIndex.from_embeddings(index.targets(), index.cases))
    with pytest.raises(DermretrError, match="k must be a positive integer, got 0"):
        QuerySession(index, k=0)
    with pytest.raises(DermretrError, match="unknown explain_method 'shap'"):
        QuerySession(index, explain_method="shap")
    with pytest.raises(DermretrError, match=r"must be in \[0, 1\], got 2"):
        QuerySession(index, alpha=2)
    session = QuerySession(index, k=3)
    session.set_reference(str(index.cases["case_id"].iloc[0]))
    session.results()
    with pytest.raises(DermretrError, match=r"rank must be between 1 and 3 \(the results shown\), got 4"):
        session.result_row(4)
