"""The composed query builder (dermretr.widgets), driven programmatically: widgets, results, grid, bad input."""

from __future__ import annotations

import datetime
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermretr._errors import DermretrError, VocabularyError
from dermretr.data.vocab import ABSENT, CRITERIA, modification_text, parse_modification, parse_tone, render_text
from dermretr.index import CaseIndex
from dermretr.widgets import UNKNOWN, QueryBuilder, decode_image, tone_counts, tone_filter, tone_labels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture
def app(index):
    qb = QueryBuilder(index, k=6, debounce=0, map_params={"n_epochs": 30})
    yield qb
    qb.close()


def _text(html_value: str) -> str:
    return re.sub(r"<[^>]+>", " ", html_value)


def _case_with(index: CaseIndex, **want) -> str:
    """Id of a case whose criteria are as given (first one)."""
    sel = np.ones(len(index.cases), dtype=bool)
    for c, v in want.items():
        sel &= (index.cases[c].astype("string") == v).fillna(False).to_numpy(dtype=bool)
    assert sel.any(), f"the test data has no case with {want}"
    return str(index.cases["case_id"].to_numpy()[np.flatnonzero(sel)[0]])


def _png_bytes(image_path: str) -> bytes:
    buf = io.BytesIO()
    Image.open(image_path).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _subindex(index: CaseIndex, cases: pd.DataFrame) -> CaseIndex:
    """An index of the first len(cases) vectors of ``index`` with a changed case table."""
    n = len(cases)
    return CaseIndex.from_embeddings({k: (v[:n] if k != "alpha" else v) for k, v in index.targets().items()},
                                     cases.reset_index(drop=True))


# ---------------------------------------------------------------------------- reference and descriptors


def test_picking_a_case_fills_the_dropdowns_text_preview_and_results(app, index):
    cid = _case_with(index, streaks="irregular")
    row = index.cases.set_index("case_id").loc[cid]
    app.case_picker.value = cid  # as a user picks it
    known = {c: str(row[c]) for c in CRITERIA}
    assert {c: dd.value for c, dd in app.criteria.items()} == known
    assert app.text.value == render_text(known, seed=None)
    assert app.reference_case == cid and bytes(app.preview.value).startswith(PNG_MAGIC)
    res = app.results
    assert len(res) == 6 and len(app.grid.children) == 6
    assert cid not in set(res["case_id"])  # the reference itself is left out
    assert list(res["rank"]) == list(range(1, 7))
    assert res.attrs["text"] == app.text.value and res.attrs["descriptors"]["streaks"] == "irregular"
    # relevance = same diagnosis group as the reference (no criterion changed yet)
    assert res["relevant"].tolist() == (res["diagnosis_group"] == row["diagnosis_group"]).tolist()
    assert "6 results for" in _text(app.message.value) and "relevant (green frame)" in _text(app.message.value)


def test_changing_a_criterion_writes_the_modification_text_and_searches_once(app, index):
    cid = _case_with(index, blue_whitish_veil="absent", streaks="absent")
    app.select_case(cid)
    base_text, before = app.text.value, app.results
    count = app.search_count
    app.set_criterion("blue_whitish_veil", "present")
    assert app.text.value == modification_text({"blue_whitish_veil": "absent"}, {"blue_whitish_veil": "present"},
                                               seed=None)
    assert app.text.value == "same lesion but with a blue-whitish veil"
    assert app.search_count == count + 1  # one search, not one per widget that moved
    after = app.results
    assert after.attrs["text"] == app.text.value
    assert not np.allclose(before["s_global"].to_numpy(), after["s_global"].to_numpy())
    # relevant now also needs the wanted value
    assert not after.loc[after["relevant"].astype(bool), "blue_whitish_veil"].ne("present").any()

    app.set_criterion("streaks", "irregular")  # a second change: both phrased together
    assert parse_modification(app.text.value) == {"streaks": "irregular", "blue_whitish_veil": "present"}
    assert app.wanted() == {"streaks": "irregular", "blue_whitish_veil": "present"}
    app.set_criterion("streaks", "absent")
    app.set_criterion("blue_whitish_veil", "absent")  # back to the reference: its own text again
    assert app.text.value == base_text and app.wanted() == {}

    with pytest.raises(VocabularyError, match="unknown criterion"):
        app.set_criterion("colour", "blue")
    with pytest.raises(VocabularyError, match="unknown value"):
        app.set_criterion("streaks", "wavy")


def test_the_text_box_is_what_is_searched_and_can_be_edited(app, index):
    app.select_case(index.cases["case_id"].iloc[3])
    app.text.value = "regular dots and globules"
    assert app.results.attrs["text"] == "regular dots and globules"
    assert app.results.attrs["descriptors"] == {"dots_and_globules": "regular"}


def test_criteria_of_an_uploaded_image_are_unknown_and_changes_are_phrased(app, index):
    data = _png_bytes(index.cases["image_path"].iloc[7])
    assert app.upload_bytes(data, "lesion.png") is True
    assert app.reference_case is None and app.case_picker.value is None
    assert all(dd.value == UNKNOWN for dd in app.criteria.values()) and app.text.value == ""
    res = app.results
    assert len(res) == 6 and res["relevant"].isna().all()  # no ground truth for an upload
    message = _text(app.message.value)
    assert "6 results for the image alone" in message and "relevant" not in message
    app.set_criterion("blue_whitish_veil", "present")
    assert app.text.value == "same lesion but with a blue-whitish veil"
    app.set_criterion("streaks", ABSENT)  # unknown -> absent: "without ..."
    assert parse_modification(app.text.value) == {"blue_whitish_veil": "present", "streaks": "absent"}


# ---------------------------------------------------------------------------- results and grid


def test_grid_tiles_show_the_results_table(app, index):
    app.select_case(index.cases["case_id"].iloc[0])
    app.k.value = 4
    res = app.results
    assert len(res) == 4 and len(app.grid.children) == 4
    for (_, row), tile in zip(res.iterrows(), app.grid.children):
        image, caption, button = tile.children
        assert bytes(image.value).startswith(PNG_MAGIC) and "dermretr-result" in image._dom_classes
        text = _text(caption.value)
        assert f"#{row['rank']} {row['case_id']}" in text and str(row["diagnosis"]) in text
        assert f"s_global {row['s_global']:.3f}" in text and f"s_local {row['s_local']:.3f}" in text
        assert f"score {row['score']:.3f}" in text
        roman = ["I", "II", "III", "IV", "V", "VI"][int(row["fitzpatrick"]) - 1]
        assert f"skin type {roman}" in text and button.description == "why?"
        assert ("3px solid" in tile.layout.border) == bool(row["relevant"])
    app.k.value = 7
    assert len(app.results) == 7 and len(app.grid.children) == 7
    assert app.results["case_id"].tolist()[:4] == res["case_id"].tolist()  # same ranking, longer


def test_alpha_weights_local_against_global_evidence(app, index):
    app.select_case(index.cases["case_id"].iloc[5])
    for a in (0.0, 0.3, 1.0):
        app.alpha.value = a
        res = app.results
        np.testing.assert_allclose(res["score"], a * res["s_local"] + (1 - a) * res["s_global"], atol=1e-5)
        assert res["score"].is_monotonic_decreasing
    app.alpha.value = 0.0
    only_global = app.results["score"].to_numpy()
    app.alpha.value = 1.0
    assert not np.allclose(only_global, app.results["score"].to_numpy())


def test_filters_restrict_skin_type_and_diagnosis_group(app, index):
    app.select_case(index.cases["case_id"].iloc[10])
    app.skin_filter.value = (5, 6)
    assert len(app.results) == 6 and set(app.results["fitzpatrick"]) <= {5, 6}
    app.group_filter.value = ("MEL",)
    res = app.results
    assert set(res["fitzpatrick"]) <= {5, 6} and set(res["diagnosis_group"]) == {"MEL"}
    assert app.filters() == {"fitzpatrick": [5, 6], "diagnosis_group": ["MEL"]}
    app.skin_filter.value = ()
    app.group_filter.value = ()
    assert len(set(app.results["fitzpatrick"])) > 1 or len(set(app.results["diagnosis_group"])) > 1


def test_filters_that_match_nothing_say_so_and_the_app_recovers(app, index):
    counts = pd.crosstab(index.cases["diagnosis_group"], index.cases["fitzpatrick"])
    empty = [(g, int(f)) for g in counts.index for f in counts.columns if counts.loc[g, f] == 0]
    assert empty, "the test data should have a diagnosis group absent from some skin type"
    group, skin = empty[0]
    app.select_case(index.cases["case_id"].iloc[0])
    app.group_filter.value = (group,)
    app.skin_filter.value = (skin,)
    assert len(app.results) == 0 and app.grid.children == ()
    message = _text(app.message.value)
    assert "no case matches the filters" in message and group in message
    app.skin_filter.value = ()
    assert len(app.results) > 0 and set(app.results["diagnosis_group"]) == {group}
    assert len(app.grid.children) == len(app.results)


def test_fewer_matches_than_k_are_shown_with_a_note(app, index):
    group = index.cases["diagnosis_group"].value_counts().index[-1]  # the rarest group
    n = int((index.cases["diagnosis_group"] == group).sum())
    app.k.value = n + 3
    app.select_case(index.cases["case_id"].iloc[0])
    app.group_filter.value = (group,)
    assert set(app.results["diagnosis_group"]) == {group}
    ref_in_group = index.cases["diagnosis_group"].iloc[0] == group
    assert len(app.results) == n - int(ref_in_group)
    assert "only" in _text(app.message.value)


def test_a_text_without_known_descriptors_is_searched_as_free_text(app, index):
    app.select_case(index.cases["case_id"].iloc[2])
    app.text.value = ""
    plain = app.results
    app.text.value = "patient says it itches since last summer"
    free = app.results
    assert len(free) == 6 and free.attrs["descriptors"] == {}
    assert "no 7-point descriptor recognised" in _text(app.message.value)
    assert not np.allclose(free["s_global"].to_numpy(), plain["s_global"].to_numpy())  # the text was used
    app.text.value = "irregular streaks and regular streaks"  # contradictory
    assert len(app.results) == 6 and "twice with different values" in _text(app.message.value)


# ---------------------------------------------------------------------------- buttons, explanations, map


def test_random_case_and_search_button(index):
    one = QueryBuilder(index, k=3, debounce=0)
    two = QueryBuilder(index, k=3, debounce=0)
    try:
        assert one.random_case(seed=3) == two.random_case(seed=3)
        one.random_button.click()
        assert one.reference_case is not None and len(one.results) == 3
        one.live.value = False
        count = one.search_count
        one.k.value = 5
        assert one.search_count == count and len(one.results) == 3  # no live update
        one.search_button.click()
        assert one.search_count == count + 1 and len(one.results) == 5
    finally:
        one.close()
        two.close()


def test_why_button_shows_the_attribution_overlay_and_mask_maps(app, index):
    app.select_case(index.cases["case_id"].iloc[4])
    assert app.detail.outputs == ()
    app.grid.children[1].children[2].click()  # "why?" of result #2
    outs = app.detail.outputs
    pngs = [o for o in outs if "image/png" in o["data"]]
    assert len(pngs) == 2  # overlay + mask maps
    assert all(base64_png(o["data"]["image/png"]) for o in pngs)
    assert app.results["case_id"].iloc[1] in outs[0]["data"]["text/html"]
    figs = app.explain(1)
    assert len(figs) == 2 and len(figs[1].axes) == 8  # 2 masks: image + 2 masks + dominant, two rows
    with pytest.raises(DermretrError, match="rank must be between 1 and 6"):
        app.explain(7)
    app.k.value = 5  # a new search clears the explanation
    assert app.detail.outputs == ()


def base64_png(data: str) -> bool:
    import base64

    return base64.b64decode(data).startswith(PNG_MAGIC)


@pytest.mark.slow  # the first UMAP fit compiles numba code
def test_map_toggle_places_the_query_and_results_on_the_umap(app, index):
    app.select_case(index.cases["case_id"].iloc[6])
    assert app.map_view.outputs == () and app.map_view.layout.display == "none"
    app.map_toggle.value = True
    assert app.map_view.layout.display != "none"
    (out,) = app.map_view.outputs
    assert base64_png(out["data"]["image/png"])
    fig = app.show_map()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "query 1 + 6 results" in labels
    app.map_toggle.value = False
    assert app.map_view.outputs == ()


# ---------------------------------------------------------------------------- live update


def test_live_updates_are_debounced_into_one_search(index):
    qb = QueryBuilder(index, k=4, debounce=0.15)
    try:
        qb.select_case(index.cases["case_id"].iloc[1])
        qb.k.value = 5
        qb.alpha.value = 0.2
        qb.set_criterion("blue_whitish_veil", "present" if qb.criteria["blue_whitish_veil"].value != "present"
                         else "absent")
        assert qb.search_count == 0  # nothing yet: still within the quiet period
        assert qb.wait(30)
        assert qb.search_count == 1
        res = qb.results
        assert len(res) == 5 and res.attrs["text"].startswith("same lesion but")
        np.testing.assert_allclose(res["score"], 0.2 * res["s_local"] + 0.8 * res["s_global"], atol=1e-5)
        qb.search_button.click()  # the button searches at once
        assert qb.search_count == 2
    finally:
        qb.close()


# ---------------------------------------------------------------------------- bad input


def test_bad_uploads_show_a_message_and_keep_the_app_working(app, index, tmp_path):
    cid = index.cases["case_id"].iloc[8]
    app.select_case(cid)
    before = app.results
    jpg = open(index.cases["image_path"].iloc[8], "rb").read()
    for data, name, said in [
        (b"Dear colleague, please find the lesion attached.", "letter.txt", "letter.txt is not an image"),
        (jpg[: len(jpg) // 3], "cut.jpg", "cannot decode image cut.jpg"),
        (b"", "empty.png", "empty.png is empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "broken.png", "broken.png"),
    ]:
        assert app.upload_bytes(data, name) is False
        message = _text(app.message.value)
        assert said in message and "reference is unchanged" in message, message
        assert app.reference_case == cid
        pd.testing.assert_frame_equal(app.results, before)
        assert "dermretr-upload-" not in message  # no temporary path leaks into the message
    # through the FileUpload widget, as the browser sends it
    app.upload.value = ({"name": "notes.pdf", "type": "application/pdf", "size": 9,
                         "content": memoryview(b"%PDF-1.4\n"), "last_modified": NOW},)
    assert "notes.pdf is not an image" in _text(app.message.value) and app.upload.value == ()
    # and the app still works
    app.set_criterion("streaks", "irregular" if app.criteria["streaks"].value != "irregular" else "regular")
    assert len(app.results) == 6 and app.results.attrs["text"].startswith("same lesion but")
    app.upload.value = ({"name": "ok.png", "type": "image/png", "size": 1,
                         "content": memoryview(_png_bytes(index.cases["image_path"].iloc[9])),
                         "last_modified": NOW},)
    assert app.reference_case is None and len(app.results) == 6


def test_decode_image_reads_what_load_rgb_reads(index):
    path = index.cases["image_path"].iloc[0]
    img = decode_image(open(path, "rb").read(), "x.jpg")
    assert img.mode == "RGB" and img.size == Image.open(path).size
    gray16 = io.BytesIO()
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(gray16, format="PNG")
    assert decode_image(gray16.getvalue(), "g.png").getpixel((0, 0)) == (255, 255, 255)


def test_an_unreadable_case_image_is_reported(model, index, tmp_path):
    cases = index.cases.head(12).copy()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    cases.loc[cases.index[3], "image_path"] = str(broken)
    small = _subindex(index, cases)
    qb = QueryBuilder(small, model, k=11, debounce=0)
    try:
        qb.select_case(cases["case_id"].iloc[0])
        assert len(qb.results) == 11  # the broken case is among them, drawn as a crossed tile
        qb.select_case(cases["case_id"].iloc[3])
        assert f"case {cases['case_id'].iloc[3]}" in _text(qb.message.value)
        assert "reference is unchanged" in _text(qb.message.value)
        assert qb.reference_case == cases["case_id"].iloc[0] and qb.case_picker.value == qb.reference_case
        with pytest.raises(DermretrError, match="not in this index"):
            qb.select_case("nope")
    finally:
        qb.close()


def test_an_empty_index_is_accepted_and_said(model):
    import faiss

    from dermretr.data.cases import empty_cases

    d = model.backbone.embed_dim
    empty = CaseIndex(faiss.IndexFlatIP(d), np.zeros((0, d), np.float32), None, empty_cases(),
                      {"kind": "flat", "count": 0, "dim": d, "n_masks": 0, "alpha": 0.0})
    qb = QueryBuilder(empty, model, debounce=0)
    try:
        assert "holds no case" in _text(qb.message.value)
        assert qb.search_button.disabled and qb.case_picker.disabled and qb.upload.disabled
        res = qb.search()
        assert len(res) == 0 and qb.grid.children == () and "holds no case" in _text(qb.message.value)
        assert qb.random_case() is None
        assert qb.upload_bytes(b"\x89PNG", "x.png") is False
        qb.map_toggle.value = True
        assert "holds no case" in _text(qb.message.value)
    finally:
        qb.close()


def test_an_index_without_a_model_is_a_clear_error(index):
    bare = CaseIndex.from_embeddings(index.targets(), index.cases)
    with pytest.raises(DermretrError, match="needs a retriever to encode queries"):
        QueryBuilder(bare)
    with pytest.raises(DermretrError, match="needs a CaseIndex"):
        QueryBuilder(3)  # a case table is indexed with the released model (tests/test_pretrained_search.py)
    with pytest.raises(DermretrError, match="k must be a positive integer"):
        QueryBuilder(index, k=0)


# ---------------------------------------------------------------------------- skin-tone modifier


def test_tone_modifier_writes_the_tone_protocol_text(app, index):
    from dermretr.evaluate import tone_queries

    tq = tone_queries(index.cases)  # the "tone" protocol's queries of the test split
    query = tq.info[tq.info["target_range"] == "V-VI"].iloc[0]
    app.select_case(query["case_id"])
    base_text, count = app.text.value, app.search_count
    assert app.tone is None and app.tone_picker.value == "any"
    app.tone_picker.value = "V-VI"  # as a user picks it
    assert app.tone == "V-VI" and app.text.value == query["tone_text"]
    assert app.text.value.startswith("on Fitzpatrick type V-VI skin: ") and base_text in app.text.value
    assert app.search_count == count + 1 and app.results.attrs["text"] == query["tone_text"]
    app.set_tone("lighter")
    assert app.tone == "I-II" and app.text.value == f"on Fitzpatrick type I-II skin: {base_text}"
    app.set_tone(None)  # back to any skin: the reference's own text again
    assert app.tone is None and app.text.value == base_text
    with pytest.raises(VocabularyError, match="not a Fitzpatrick type"):
        app.set_tone(7)


def test_tone_modifier_drops_the_reference_own_skin_type(model, index):
    cases = index.cases.head(12).copy()
    for c in CRITERIA:  # criteria unknown: the reference is described by its findings
        cases[c] = pd.NA
    cases["findings"] = "itching; on the arm"
    cases.loc[cases.index[0], "findings"] = "itching; Fitzpatrick type II skin; on the arm"
    qb = QueryBuilder(_subindex(index, cases), model, k=4, debounce=0)
    try:
        qb.select_case(cases["case_id"].iloc[0])
        assert qb.text.value == "itching, Fitzpatrick type II skin, on the arm"
        qb.set_tone("V-VI")
        assert qb.text.value == "on Fitzpatrick type V-VI skin: itching, on the arm"
        assert "type II" not in qb.text.value and parse_tone(qb.text.value) == "V-VI"
        qb.set_tone("any")
        assert qb.text.value == "itching, Fitzpatrick type II skin, on the arm"
    finally:
        qb.close()


def test_tone_modifier_combines_with_criterion_changes_and_follows_the_reference(app, index):
    cid = _case_with(index, blue_whitish_veil="absent")
    app.select_case(cid)
    base_text = app.text.value
    app.set_tone("darker")
    app.set_criterion("blue_whitish_veil", "present")
    assert app.text.value == "on Fitzpatrick type V-VI skin: same lesion but with a blue-whitish veil"
    app.set_tone("any")
    assert app.text.value == "same lesion but with a blue-whitish veil"
    app.set_tone("medium")
    app.set_criterion("blue_whitish_veil", "absent")  # no change left: the reference's text, on III-IV skin
    assert app.text.value == f"on Fitzpatrick type III-IV skin: {base_text}"
    other = _case_with(index, blue_whitish_veil="present")
    app.select_case(other)  # a new reference keeps the modifier
    assert app.tone == "III-IV" and app.text.value.startswith("on Fitzpatrick type III-IV skin: ")
    assert app.text.value != f"on Fitzpatrick type III-IV skin: {base_text}"
    data = _png_bytes(index.cases["image_path"].iloc[7])
    assert app.upload_bytes(data, "lesion.png") and app.text.value == "on Fitzpatrick type III-IV skin"


def test_tone_note_counts_the_database_cases_of_the_range(app, index):
    fitz = index.cases["fitzpatrick"]
    n_dark, total = int(fitz.isin([5, 6]).sum()), len(index.cases)
    assert 0 < n_dark < total
    note = _text(app.tone_note.value)
    assert f"the database holds {total} cases by Fitzpatrick type" in note
    for name, types in (("I-II", [1, 2]), ("III-IV", [3, 4]), ("V-VI", [5, 6])):
        assert f"{name} {int(fitz.isin(types).sum())} (" in note
    app.set_tone("V-VI")
    note = _text(app.tone_note.value)
    assert f"the database holds {n_dark} cases on Fitzpatrick type V-VI skin, " in note
    assert f"{round(100 * n_dark / total)}% of {total}" in note
    counts = tone_counts(index.cases)
    assert counts.to_dict() == {"I-II": int(fitz.isin([1, 2]).sum()), "III-IV": int(fitz.isin([3, 4]).sum()),
                                "V-VI": n_dark, "unknown": int(fitz.isna().sum())}
    app.set_tone(None)
    assert "by Fitzpatrick type" in _text(app.tone_note.value)


def test_only_cases_in_the_range_filters_the_results(app, index):
    app.select_case(index.cases["case_id"].iloc[10])
    app.set_tone("V-VI")
    assert app.filters() == {} and not app.tone_only.value  # off by default: the phrase only
    mixed = app.results
    assert set(mixed["fitzpatrick"]) - {5, 6}, "the unfiltered results should show other skin types"
    count = app.search_count
    app.tone_only.value = True
    assert app.search_count == count + 1 and app.filters() == {"fitzpatrick": [5, 6]}
    res = app.results
    assert len(res) == 6 and set(res["fitzpatrick"]) <= {5, 6}
    assert res.attrs["text"].startswith("on Fitzpatrick type V-VI skin: ")
    group = index.cases["diagnosis_group"].iloc[10]
    assert res["relevant"].tolist() == (res["diagnosis_group"] == group).tolist()  # all in range here
    # relevance follows the tone protocol: same diagnosis group *and* a skin type in the range
    app.tone_only.value = False
    app.k.value = 30
    rel = app.results
    same_group = rel["diagnosis_group"] == group
    assert (same_group & ~rel["fitzpatrick"].isin([5, 6])).any(), "the test needs a same-group hit off the range"
    assert rel["relevant"].tolist() == (same_group & rel["fitzpatrick"].isin([5, 6])).tolist()
    # with the skin-type filter: both hold
    app.k.value = 6
    app.tone_only.value = True
    app.skin_filter.value = (4, 5)
    assert app.filters() == {"fitzpatrick": [5]} and set(app.results["fitzpatrick"]) == {5}
    app.skin_filter.value = (1,)
    assert len(app.results) == 0 and "skin type none" in _text(app.message.value)
    app.skin_filter.value = ()
    app.set_tone("any")  # no range: nothing to keep
    assert app.filters() == {} and len(set(app.results["fitzpatrick"])) > 1


def test_without_skin_type_labels_the_modifier_is_off_and_says_why(model, index):
    cases = index.cases.head(12).copy()
    cases["fitzpatrick"] = pd.array([None] * len(cases), dtype="Int64")
    cases["monk"] = pd.array([None] * len(cases), dtype="Int64")
    qb = QueryBuilder(_subindex(index, cases), model, k=4, debounce=0)
    try:
        assert qb.tone_scale is None and qb.tone_picker.disabled and qb.tone_only.disabled
        assert "needs Fitzpatrick types or Monk tones" in _text(qb.tone_note.value)
        qb.select_case(cases["case_id"].iloc[0])
        text = qb.text.value
        with pytest.raises(DermretrError, match="needs Fitzpatrick types or Monk tones"):
            qb.set_tone("V-VI")
        assert qb.tone is None and qb.text.value == text and len(qb.results) == 4
    finally:
        qb.close()


def test_monk_tones_and_fitzpatrick_pairs_are_used_when_types_are_missing(model, index):
    cases = index.cases.head(12).copy()
    cases["fitzpatrick"] = pd.array([None] * len(cases), dtype="Int64")
    cases["monk"] = pd.array([1, 2, 9, 10, 5, 8, 3, 4, 6, 7, 2, 9], dtype="Int64")
    qb = QueryBuilder(_subindex(index, cases), model, k=4, debounce=0)
    try:
        assert qb.tone_scale == "monk" and not qb.tone_picker.disabled
        assert [label for label, _ in qb.tone_picker.options] == ["any skin", "lighter (1-3)", "medium (4-7)",
                                                                 "darker (8-10)"]
        qb.select_case(cases["case_id"].iloc[0])
        qb.set_tone("darker")
        assert qb.text.value.startswith("on Monk tone 8-10 skin: ")
        assert "holds 4 cases on Monk tone 8-10 skin, 33% of 12" in _text(qb.tone_note.value)
        qb.tone_only.value = True
        assert qb.filters() == {"monk": [8, 9, 10]} and set(qb.results["monk"]) <= {8, 9, 10}
    finally:
        qb.close()
    ddi = cases.assign(monk=pd.array([None] * len(cases), dtype="Int64"),
                       skin_tone_group=["I-II", "V-VI", "III-IV"] * 4)
    assert tone_labels(ddi) == ("fitzpatrick", "skin_tone_group")
    assert tone_filter(ddi, "V-VI") == {"skin_tone_group": ["V-VI"]}
    assert tone_counts(ddi).to_dict() == {"I-II": 4, "III-IV": 4, "V-VI": 4, "unknown": 0}
    assert tone_labels(cases.assign(monk=pd.array([None] * len(cases), dtype="Int64"))) is None


def test_tone_changes_are_debounced_like_the_other_controls(index):
    qb = QueryBuilder(index, k=4, debounce=0.15)
    try:
        qb.select_case(index.cases["case_id"].iloc[1])
        assert qb.wait(30)
        count = qb.search_count
        qb.set_tone("V-VI")
        qb.tone_only.value = True
        assert qb.search_count == count  # still within the quiet period
        assert qb.wait(30) and qb.search_count == count + 1
        assert set(qb.results["fitzpatrick"]) <= {5, 6}
        assert qb.results.attrs["text"].startswith("on Fitzpatrick type V-VI skin: ")
    finally:
        qb.close()


def test_filters_follow_the_index_rules_a_missing_column_is_said(app, index):
    """One filter implementation (CaseIndex's): text matches case-insensitively, an unknown column is an error."""
    app.select_case(index.cases["case_id"].iloc[10])
    app.session.groups = ("mel",)
    app.search()
    assert set(app.results["diagnosis_group"]) == {"MEL"}
    app.session.groups = ()
    app.session.cases = app.session.cases.drop(columns="fitzpatrick")  # a case table without skin types
    before = app.search()
    app.skin_filter.value = (5,)
    assert app.last_message[0] == "error"
    assert "cannot filter on unknown column 'fitzpatrick'" in app.last_message[1]
    pd.testing.assert_frame_equal(app.results, before)  # the app keeps the last results and keeps working
    app.skin_filter.value = ()
    assert len(app.results) == 6 and "6 results for" in _text(app.message.value)
