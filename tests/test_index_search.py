"""Case index search: two stages vs brute force, filters (and filter_mask), exclusions, bad vectors."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from index_fixtures import brute_force as _brute_force
from index_fixtures import build as _build
from index_fixtures import cases as _cases
from index_fixtures import ids as _ids
from index_fixtures import queries as _queries
from index_fixtures import targets as _targets

from dermretr._errors import DataWarning, DermretrError
from dermretr.index import CaseIndex, IndexWarning, _search

# ---------------------------------------------------------------------------- two-stage search


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
@pytest.mark.parametrize("alpha", [None, 0.0, 1.0])
def test_two_stage_equals_brute_force_when_candidates_cover_the_database(kind, alpha):
    n, k = 600, 10
    targets = _targets(n)
    queries = _queries(targets)
    index = _build(kind, targets, n, rerank=n)
    if kind.startswith("ivf"):
        index.nprobe = index.faiss_index.nlist
    hits = index.search_vectors(queries, k=k, alpha=alpha)
    want, want_s = _brute_force(index, queries, k, alpha)
    np.testing.assert_array_equal(_ids(hits, len(want)), want)
    np.testing.assert_allclose(hits["score"].to_numpy().reshape(want.shape), want_s, atol=1e-5)
    assert list(hits["rank"][:k]) == list(range(1, k + 1))
    assert hits.groupby("query")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    a = index.alpha if alpha is None else alpha
    np.testing.assert_allclose(hits["score"], a * hits["s_local"] + (1 - a) * hits["s_global"], atol=1e-6)
    # the re-ranking matters: the global score alone orders differently
    global_only = np.argsort(-(queries["global"] @ targets["global"].T), axis=1)[:, :k]
    if a > 0:
        assert (global_only != want).any()


def test_recall_is_lost_as_the_candidate_pool_shrinks():
    n, k = 1500, 10
    targets = _targets(n, seed=3)
    queries = _queries(targets, q=40, seed=4)
    index = _build("flat", targets, n)
    want, _ = _brute_force(index, queries, k)
    recall = {}
    for rerank in (k, 50, 300, n):
        index.rerank = rerank
        got = _ids(index.search_vectors(queries, k=k), len(want))
        recall[rerank] = np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want)])
    assert recall[n] == 1.0
    assert recall[k] < recall[300] <= recall[n]
    assert recall[k] < 0.9


def test_global_only_index_scores_are_the_global_scores():
    n = 200
    targets = _targets(n, local=False)
    index = _build("hnsw", targets, n)
    assert index.local_vectors is None and index.manifest["n_masks"] == 0 and index.alpha == 0.0
    q = _queries(targets)
    hits = index.search_vectors(q, k=5)
    assert (hits["s_local"] == 0).all()
    np.testing.assert_allclose(hits["score"], hits["s_global"])
    want, _ = _brute_force(index, q, 5)
    np.testing.assert_array_equal(_ids(hits, len(want)), want)


# ---------------------------------------------------------------------------- filters


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_filters_return_k_matching_cases(kind):
    n, k = 900, 10
    targets = _targets(n, seed=5)
    queries = _queries(targets)
    index = _build(kind, targets, n, rerank=n)
    if kind == "ivf":
        index.nprobe = index.faiss_index.nlist
    filters = {"fitzpatrick": [5, 6], "diagnosis_group": ["MEL"]}
    hits = index.search_vectors(queries, k=k, filters=filters)
    assert hits.groupby("query").size().tolist() == [k] * len(queries["global"])
    assert hits["fitzpatrick"].isin([5, 6]).all() and (hits["diagnosis_group"] == "MEL").all()
    allowed = index.cases["fitzpatrick"].isin([5, 6]).to_numpy() & (index.cases["diagnosis_group"] == "MEL").to_numpy()
    want, _ = _brute_force(index, queries, k, allowed=allowed)
    np.testing.assert_array_equal(_ids(hits, len(want)), want)
    # text values as the CLI gives them, any case
    again = index.search_vectors(queries, k=k, filters={"fitzpatrick": ["5", "6"], "diagnosis_group": "mel"})
    pd.testing.assert_frame_equal(again, hits)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_filtered_faiss_search_still_returns_k(kind, monkeypatch):
    """The FAISS stage with an ID selector (forced here) never returns fewer than k when k cases match."""
    n, k = 3000, 10
    targets = _targets(n, seed=6, local=False)
    queries = _queries(targets, q=20)
    index = _build(kind, targets, n, rerank=20)
    monkeypatch.setattr(_search, "EXACT_BLOCK", 97)  # exact scoring merges many row blocks
    filters = {"diagnosis_group": ["MEL", "NEV"]}
    mask = index.filter_mask(filters)
    exact = index.search_vectors(queries, k=k, filters=filters)  # 1200 matches: scored exactly, whatever the kind
    np.testing.assert_array_equal(_ids(exact, 20), _brute_force(index, queries, k, allowed=mask)[0])
    index.exact_filter_below = 0
    index.nprobe = 1  # a sparse probe: some queries must fall back to exact scoring of the matches
    for filters in ({"diagnosis_group": ["MEL", "NEV", "BCC", "SK"]}, {"fitzpatrick": [6], "diagnosis_group": ["SK"]}):
        hits = index.search_vectors(queries, k=k, filters=filters)
        assert hits.groupby("query").size().tolist() == [k] * 20
        mask = index.filter_mask(filters)
        assert mask[hits["case_id"].str[1:].astype(int)].all()
        if kind == "flat":  # global-only and exact: equals brute force over the matches
            want, _ = _brute_force(index, queries, k, allowed=mask)
            np.testing.assert_array_equal(_ids(hits, 20), want)


def test_filters_matching_nothing_give_an_empty_result_and_a_warning():
    n = 100
    index = _build("flat", _targets(n), n)
    q = _queries(index.targets(), q=2)
    normal = index.search_vectors(q, k=3)
    with pytest.warns(DataWarning, match="no case matches the filters"):
        empty = index.search_vectors(q, k=3, filters={"diagnosis_group": ["XYZ"]})
    assert len(empty) == 0
    assert list(empty.columns) == list(normal.columns)
    assert (empty.dtypes == normal.dtypes).all()
    with pytest.warns(DataWarning, match="only 4 cases match"):  # fitzpatrick 6 and MEL: rows 5, 35, 65, 95
        few = index.search_vectors(q, k=10, filters={"fitzpatrick": [6], "diagnosis_group": ["MEL"]})
    assert few.groupby("query").size().tolist() == [4, 4]


def test_bad_filters_are_clear_errors():
    index = _build("flat", _targets(50), 50)
    q = _queries(index.targets(), q=1)
    with pytest.raises(DermretrError, match="unknown column 'skin_type'.*fitzpatrick"):
        index.search_vectors(q, k=3, filters={"skin_type": [5]})
    with pytest.raises(DermretrError, match="filter 'fitzpatrick': 'V' is not a number"):
        index.search_vectors(q, k=3, filters={"fitzpatrick": ["V"]})
    with pytest.raises(DermretrError, match="'maybe' is not a boolean"):
        index.search_vectors(q, k=3, filters={"malignant": ["maybe"]})
    hits = index.search_vectors(q, k=3, filters={"malignant": ["true"]})
    assert hits["malignant"].all()


@pytest.mark.parametrize("k, message", [(0, "at least 1, got 0"), (-3, "at least 1, got -3"),
                                        (51, r"k=51 is larger than the database \(50 cases\)"),
                                        (2.5, "k must be an integer")])
def test_bad_k(k, message):
    index = _build("hnsw", _targets(50), 50)
    with pytest.raises(DermretrError, match=message):
        index.search_vectors(_queries(index.targets(), q=1), k=k)


def test_bad_vectors_are_clear_errors():
    targets = _targets(40)
    with pytest.raises(DermretrError, match="40 target vectors but 39 cases"):
        CaseIndex.from_embeddings(targets, _cases(39))
    with pytest.raises(DermretrError, match="unknown index kind 'annoy'"):
        CaseIndex.from_embeddings(targets, _cases(40), kind="annoy")
    index = CaseIndex.from_embeddings(targets, _cases(40))
    with pytest.raises(DermretrError, match="shape \\(1, 8\\).*24-dimensional"):
        index.search_vectors({"global": np.ones((1, 8), np.float32)}, k=3)


def test_small_ivf_shrinks_its_lists_with_a_warning():
    with pytest.warns(IndexWarning, match=r"using nlist=2 lists instead of 50 \(asked\)"):
        index = CaseIndex.from_embeddings(_targets(100), _cases(100), kind="ivf", nlist=50)
    assert index.faiss_index.nlist == 2 and index.manifest["params"]["nlist"] == 2


def test_filter_mask_is_public_and_is_the_index_rule():
    from dermretr.index import filter_mask

    cases = _cases(30)
    index = _build("flat", _targets(30), 30)
    for filters in ({"diagnosis_group": "mel"}, {"fitzpatrick": ["5", 6], "diagnosis_group": [" nev ", "MEL"]},
                    {"malignant": ["yes"]}, {"note": [""]}):
        mask = filter_mask(cases, filters)
        np.testing.assert_array_equal(mask, index.filter_mask(filters))
        hits = index.search_vectors(_queries(index.targets(), q=1), k=3, filters=filters)
        assert mask[hits["case_id"].str[1:].astype(int)].all()
    assert filter_mask(cases, None) is None and filter_mask(cases, {}) is None
    assert filter_mask(cases, {"diagnosis_group": "MEL"}).sum() == 6  # casefolded, not exact
    np.testing.assert_array_equal(filter_mask(cases, {"fitzpatrick": 6}), cases["fitzpatrick"].to_numpy() == 6)
    with_na = cases.assign(ita=cases["ita"].where(cases.index % 2 == 0))
    np.testing.assert_array_equal(filter_mask(with_na, {"ita": [None]}), with_na["ita"].isna().to_numpy())
    with pytest.raises(DermretrError, match="cannot filter on unknown column 'skin'; columns: case_id, patient_id"):
        filter_mask(cases, {"skin": [5]})
    with pytest.raises(DermretrError, match="filters must be a dict"):
        filter_mask(cases, ["fitzpatrick"])


# ---------------------------------------------------------------------------- exclusions


def _ask_more_and_drop(index: CaseIndex, queries: dict, k: int, drop: list[set], **kw) -> pd.DataFrame:
    """What exclude= promises: ask k + len(drop) results, drop the excluded cases, keep k per query."""
    more = index.search_vectors(queries, k=k + max(len(d) for d in drop), **kw)
    keep = [cid not in drop[q] for q, cid in zip(more["query"], more["case_id"])]
    out = more[keep].groupby("query", group_keys=False).head(k).reset_index(drop=True)
    out["rank"] = out.groupby("query").cumcount() + 1
    return out


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
@pytest.mark.parametrize("rerank", [30, 600])
def test_each_reference_excludes_itself_as_asking_one_more_and_dropping_it(kind, rerank):
    n, k, q = 600, 8, 10
    targets = _targets(n, seed=11)
    rows = np.random.default_rng(12).choice(n, q, replace=False)
    queries = {"global": targets["global"][rows], "local": targets["local"][rows]}  # each query is a case
    index = _build(kind, targets, n, rerank=rerank)
    refs = [f"c{r:05d}" for r in rows]
    plain = index.search_vectors(queries, k=k)
    assert (plain.groupby("query")["case_id"].first().tolist() == refs) or kind != "flat"
    hits = index.search_vectors(queries, k=k, exclude=refs)
    assert hits.groupby("query").size().tolist() == [k] * q
    assert not any(cid == refs[qi] for qi, cid in zip(hits["query"], hits["case_id"]))
    pd.testing.assert_frame_equal(hits, _ask_more_and_drop(index, queries, k, [{r} for r in refs]))
    assert list(hits.dtypes) == list(plain.dtypes)


def test_one_set_of_ids_is_excluded_from_every_query_and_unknown_ids_are_ignored():
    n, k = 400, 6
    index = _build("hnsw", _targets(n, seed=13), n, rerank=50)
    queries = _queries(index.targets(), q=5, seed=14)
    top = index.search_vectors(queries, k=3)["case_id"]
    gone = set(top) | {"not-in-the-index", "c99999"}
    hits = index.search_vectors(queries, k=k, exclude=gone)
    assert hits.groupby("query").size().tolist() == [k] * 5 and not hits["case_id"].isin(gone).any()
    known = set(top)
    pd.testing.assert_frame_equal(hits, _ask_more_and_drop(index, queries, k, [known] * 5))
    # the same set as a one-entry-per-query list, and frozenset/str forms
    pd.testing.assert_frame_equal(index.search_vectors(queries, k=k, exclude=[gone] * 5), hits)
    one = top.iloc[0]
    pd.testing.assert_frame_equal(index.search_vectors(queries, k=k, exclude=one),
                                  index.search_vectors(queries, k=k, exclude=frozenset([one])))
    # ids that are all unknown, None entries and an empty set change nothing
    plain = index.search_vectors(queries, k=k)
    for exclude in ({"nobody"}, [None] * 5, set(), ["nobody", None, (), [], {"x"}]):
        pd.testing.assert_frame_equal(index.search_vectors(queries, k=k, exclude=exclude), plain)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_exclusions_with_filters_in_the_faiss_stage_and_the_exact_fallback(kind):
    n, k = 3000, 10
    targets = _targets(n, seed=6, local=False)
    queries = _queries(targets, q=12)
    index = _build(kind, targets, n, rerank=20)
    filters = {"diagnosis_group": ["MEL", "NEV", "BCC", "SK"]}  # 2400 matches
    mask = index.filter_mask(filters)
    first = index.search_vectors(queries, k=3, filters=filters)
    refs = first.groupby("query")["case_id"].apply(set).tolist()
    for below, nprobe in ((4096, 1), (0, 1), (0, 4)):  # exact first stage, then FAISS with a sparse probe
        index.exact_filter_below, index.nprobe = below, nprobe
        hits = index.search_vectors(queries, k=k, filters=filters, exclude=refs)
        assert hits.groupby("query").size().tolist() == [k] * 12
        assert mask[hits["case_id"].str[1:].astype(int)].all()
        assert not any(cid in refs[qi] for qi, cid in zip(hits["query"], hits["case_id"]))
        if kind == "flat" or below:  # exact: the same as asking more and dropping
            pd.testing.assert_frame_equal(hits, _ask_more_and_drop(index, queries, k, refs, filters=filters))
    # an excluded case the filters drop anyway takes no result's place
    index.exact_filter_below = 4096
    other = index.search_vectors(queries, k=k, filters={"diagnosis_group": ["MISC"]})
    again = index.search_vectors(queries, k=k, filters={"diagnosis_group": ["MISC"]},
                                 exclude=[set(first["case_id"])] * 12)
    pd.testing.assert_frame_equal(again, other)


def test_exclusions_leaving_fewer_than_k_cases_return_fewer_results_with_a_warning():
    n = 100
    index = _build("flat", _targets(n), n)
    q = _queries(index.targets(), q=3)
    filters = {"fitzpatrick": [6], "diagnosis_group": ["MEL"]}  # rows 5, 35, 65, 95
    with pytest.warns(DataWarning, match=r"2 queries \(query 0 \.\.\.\) keep fewer than k=4 cases once the "
                                         r"excluded ones are dropped \(as few as 2\)"):
        hits = index.search_vectors(q, k=4, filters=filters, exclude=[["c00005", "c00035"], None, ["c00065"]])
    assert hits.groupby("query").size().tolist() == [2, 4, 3]
    assert hits.groupby("query")["rank"].apply(list).tolist() == [[1, 2], [1, 2, 3, 4], [1, 2, 3]]
    assert set(hits.loc[hits["query"] == 0, "case_id"]) == {"c00065", "c00095"}
    with pytest.warns(DataWarning, match="keep fewer than k=4"):
        none = index.search_vectors({"global": q["global"][:1], "local": q["local"][:1]}, k=4,
                                    filters=filters, exclude={"c00005", "c00035", "c00065", "c00095"})
    assert len(none) == 0 and list(none.columns) == list(hits.columns)


@pytest.mark.parametrize("exclude, message", [
    (["c00001", "c00002"], "exclude has 2 entries for 3 queries: give one entry per query"),
    (5, "exclude must be a case id, a set of case ids (excluded from every query) or a list"),
    ({"c00001": 1}, "exclude must be a case id, a set of case ids"),
    ({1, 2}, "exclude: case ids are strings, got 1"),
    ([["c00001"], [3], None], "exclude entry 1: case ids are strings, got 3"),
    (["c00001", 4.5, None], "exclude entry 1 must be a case id or a collection of case ids, got 4.5"),
    (b"c00001", "exclude must be a case id"),
])
def test_bad_exclusions_are_clear_errors(exclude, message):
    index = _build("flat", _targets(50), 50)
    with pytest.raises(DermretrError, match=re.escape(message)):
        index.search_vectors(_queries(index.targets(), q=3), k=3, exclude=exclude)
