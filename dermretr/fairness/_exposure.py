"""Exposure: the skin-tone mix of the retrieved top-k per group of queries, against the gallery's mix.

:func:`retrieve_topk` lists each query's top-k cases (the "case" protocol of
:mod:`dermretr.evaluate`); :func:`exposure` asks whether retrieval drifts
towards light (or dark) skin.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._checks import check_boot, check_int
from .._errors import DataWarning, DermretrError
from ..evaluate import case_scores
from ..stats import as_text, bootstrap_ci
from ._groups import GROUPINGS, UNKNOWN, check_by, estimate_note, is_estimated, skin_tone_groups
from ._uncertainty import LOW_CONFIDENCE

__all__ = ["retrieve_topk", "exposure"]


def retrieve_topk(retriever, cases: pd.DataFrame, k: int = 10, query_split: str = "test",
                  gallery_splits: Sequence[str] = ("train", "val"), alpha: float | None = None,
                  text_style: str = "terse", batch_size: int = 64, progress: bool = False,
                  queries: dict | None = None, gallery: dict | None = None) -> pd.DataFrame:
    """The top-k gallery cases of each query of the "case" protocol, as a long table.

    Queries, gallery, scores and exclusions are those of
    :func:`dermretr.evaluate.case_search`: a query is a ``query_split``
    case's image and findings text; its own case and every case of its
    patient are never retrieved.

    Parameters
    ----------
    retriever : Retriever
        Anything with ``encode_queries``/``encode_targets``.
    cases : DataFrame
        A validated case table.
    k : int
        Results per query (fewer when the gallery is smaller).
    query_split, gallery_splits, alpha, text_style, batch_size, progress
        As in :func:`~dermretr.evaluate.case_search`.
    queries, gallery : dict, optional
        Pre-computed encodings (table order), as in ``case_search``.

    Returns
    -------
    DataFrame
        ``query_case_id, rank, case_id, score``: ``k`` rows per query, best first.

    Examples
    --------
    >>> class OneHot:
    ...     def encode(self, paths, *_, **__):
    ...         return {"global": np.array([[p.startswith("M"), p.startswith("N")] for p in paths], float),
    ...                 "local": None, "alpha": 0.0}
    ...     encode_queries = encode_targets = encode
    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("pqrs"),
    ...     "image_path": ["M1", "N2", "M3", "N4"], "diagnosis": "x", "diagnosis_group": "X",
    ...     "split": ["train", "train", "test", "test"]})
    >>> retrieve_topk(OneHot(), cases, k=1)[["query_case_id", "rank", "case_id"]].to_numpy().tolist()
    [['c', 1, 'a'], ['d', 1, 'b']]
    """
    check_int(k, "k")
    q, g, s, exclude = case_scores(retriever, cases, query_split, gallery_splits, alpha=alpha, text_style=text_style,
                                   batch_size=batch_size, progress=progress, queries=queries, gallery=gallery)
    s = np.asarray(s, dtype=np.float64)
    qid, gid = as_text(q["case_id"]), as_text(g["case_id"])
    s = np.where(exclude, -np.inf, s)
    kk = min(int(k), s.shape[1])
    order = np.argsort(-s, axis=1, kind="stable")[:, :kk]
    top = np.take_along_axis(s, order, axis=1)
    qi, r = np.nonzero(np.isfinite(top))
    return pd.DataFrame({"query_case_id": qid[qi], "rank": (r + 1).astype(np.int64),
                         "case_id": gid[order[qi, r]], "score": top[qi, r]})


def exposure(results: pd.DataFrame, cases: pd.DataFrame, by: str = "fitzpatrick", k: int | None = None,
             gallery_splits: Sequence[str] | None = ("train", "val"), n_boot: int = 1000, ci: float = 0.95,
             seed: int = 0, low_confidence: float = LOW_CONFIDENCE) -> pd.DataFrame:
    """Skin-tone mix of the retrieved top-k per group of queries, against the gallery's mix.

    Parameters
    ----------
    results : DataFrame
        Retrieved cases: ``query_case_id``, ``rank`` (1 = best) and
        ``case_id`` (from :func:`retrieve_topk`, or an index search with the
        query's case id added).
    cases : DataFrame
        The case table holding queries, results and gallery.
    by : str
        A grouping of :data:`GROUPINGS`, for queries and retrieved cases.
    k : int, optional
        Use ranks 1..k (default: every rank in ``results``).
    gallery_splits : strs or None
        The gallery the results were drawn from (default train and val, as
        the case protocol); None for every case (a whole-index search).
    n_boot, ci, seed
        Bootstrap CI of the drift, over queries.
    low_confidence : float
        With estimated groups: estimates below this confidence are moved in
        the second family of scenarios (see below).

    Returns
    -------
    DataFrame
        One row per query group with queries, then ``all queries`` and
        ``gallery``: ``group, n_queries, n_retrieved``, the share of each
        skin-tone group among the retrieved cases (one column per group,
        rows sum to 1), ``mean_tone`` (mean position on the scale, 1 =
        lightest, over known tones), ``drift`` = mean retrieved tone minus the
        gallery's (negative: towards lighter skin) with ``drift_low`` /
        ``drift_high``, and ``same_tone`` (share retrieved with the query's
        own group) against ``same_tone_expected`` (the gallery's share of that
        group).  ``attrs`` hold ``by``, ``k``, ``levels`` and ``estimated``.

        With an estimated grouping (``*_estimated``), a :class:`DataWarning`
        says so with the share of unknown cases (``attrs``: ``n_unknown``,
        ``unknown_share``), and ``drift_scenario_low`` / ``drift_scenario_high``
        give the smallest and largest drift of each row when every unknown
        case (queries, results and gallery), then every estimate with a
        confidence below ``low_confidence``, is put into one group, each group
        in turn: a sensitivity analysis.  The draw model of
        :func:`~dermretr.fairness.gap_uncertainty` is not used here: exposure
        has no per-query outcome for the imputation to condition on, and
        drawing each case's group independently of the retrieval makes the
        retrieved mix look like the gallery's, shrinking the drift towards 0
        by construction (the attenuation of non-differential misclassification).

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": list("abcdef"), "fitzpatrick": [1, 1, 6, 6, 1, 6],
    ...                       "split": ["train"] * 4 + ["test"] * 2})
    >>> results = pd.DataFrame({"query_case_id": ["e", "e", "f", "f"], "rank": [1, 2, 1, 2],
    ...                         "case_id": ["a", "b", "a", "c"]})
    >>> t = exposure(results, cases, k=2, n_boot=0).set_index("group")
    >>> t.loc[["VI", "all queries", "gallery"], ["I", "VI", "drift"]].to_numpy().tolist()
    [[0.5, 0.5, 0.0], [0.75, 0.25, -1.25], [0.5, 0.5, 0.0]]
    """
    check_by(by)
    check_boot(n_boot, ci)
    if not 0.0 <= float(low_confidence) <= 1.0:
        raise DermretrError(f"low_confidence must be in [0, 1], got {low_confidence!r}")
    if not isinstance(results, pd.DataFrame):
        raise DermretrError(f"results must be a DataFrame, got {type(results).__name__}")
    missing = [c for c in ("query_case_id", "rank", "case_id") if c not in results.columns]
    if missing:
        hint = (" (an index search numbers its queries: add the query's case id as 'query_case_id')"
                if "query" in results.columns else "")
        raise DermretrError(f"results lack column(s) {missing}; use retrieve_topk(){hint}")
    if len(results) == 0:
        raise DermretrError("no retrieved cases in the results")
    ranks = pd.to_numeric(results["rank"], errors="coerce").to_numpy(dtype=float)
    if np.isnan(ranks).any() or (ranks < 1).any():
        raise DermretrError("results: 'rank' must be positive integers (1 = best)")
    if k is not None:
        check_int(k, "k")
        if k > ranks.max():
            raise DermretrError(f"k={k} but the results hold only the top {int(ranks.max())} per query")
        results = results[ranks <= k]
    k_used = int(k) if k is not None else int(ranks.max())
    tones = skin_tone_groups(cases, by).astype(object).to_numpy()
    ids = as_text(cases["case_id"])
    pos = pd.Series(np.arange(len(ids)), index=ids)
    if pos.index.duplicated().any():
        raise DermretrError("the case table has duplicate case ids")
    qids, rids = as_text(results["query_case_id"]), as_text(results["case_id"])
    for what, vals in (("query", qids), ("retrieved", rids)):
        bad = ~np.isin(vals, ids)
        if bad.any():
            raise DermretrError(f"the results do not come from this case table: {int(bad.sum())} {what} case ids "
                                f"are not in it (e.g. {vals[bad][0]!r}); use the dataset (and index) they were "
                                "retrieved from")
    if gallery_splits is None:
        in_gallery = np.ones(len(ids), dtype=bool)
    else:
        if "split" not in cases.columns:
            raise DermretrError("the case table has no 'split' column; pass gallery_splits=None")
        in_gallery = np.isin(as_text(cases["split"]), list(gallery_splits))
        outside = ~in_gallery[pos.reindex(rids).to_numpy()]
        if outside.any():
            raise DermretrError(f"{int(outside.sum())} retrieved cases are not in the gallery {list(gallery_splits)} "
                                f"(e.g. {rids[outside][0]!r}); pass gallery_splits=None for a search over every case")
    q_rows, r_rows = pos.reindex(qids).to_numpy(), pos.reindex(rids).to_numpy()
    table = _mix(tones, q_rows, r_rows, in_gallery, qids, by, n_boot, ci, seed)
    table.attrs["k"] = k_used
    if is_estimated(by):
        involved = in_gallery.copy()
        involved[q_rows] = True
        n_unknown = int((tones[involved] == UNKNOWN).sum())
        table.attrs.update({"estimated": True, "n_unknown": n_unknown, "unknown_share": n_unknown / involved.sum()})
        conf = (pd.to_numeric(cases["ita_confidence"], errors="coerce").to_numpy(dtype=float)
                if "ita_confidence" in cases.columns else np.ones(len(tones)))
        _add_scenarios(table, tones, conf, q_rows, r_rows, in_gallery, qids, by, low_confidence)
        note = estimate_note(by, n_unknown, int(involved.sum()), "cases (queries and gallery)",
                             "left out of the mean tone; drift_scenario_low/high: the drift with them, or the "
                             f"estimates below confidence {low_confidence:g}, all in one group")
        warnings.warn(note, DataWarning, stacklevel=2)
    else:
        table.attrs.update({"estimated": False})
    return table


def _mix(tones: np.ndarray, q_rows: np.ndarray, r_rows: np.ndarray, in_gallery: np.ndarray, qids: np.ndarray,
         by: str, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """The exposure table of the case groups ``tones`` (queries and results as rows of the case table)."""
    levels = [*GROUPINGS[by], UNKNOWN]
    position = {g: float(i + 1) for i, g in enumerate(GROUPINGS[by])}
    q_tone = tones[q_rows]
    r_tone = tones[r_rows]
    g_tone = tones[in_gallery]
    g_known = np.array([position[t] for t in g_tone if t != UNKNOWN])
    g_mean = float(g_known.mean()) if len(g_known) else np.nan
    g_share = {lv: float((g_tone == lv).mean()) for lv in levels}
    r_pos = np.array([position.get(t, np.nan) for t in r_tone])
    same = np.where((q_tone == UNKNOWN) | (r_tone == UNKNOWN), np.nan, (r_tone == q_tone).astype(float))
    frame = pd.DataFrame({"q": qids, "q_tone": q_tone, "r_pos": r_pos, "same": same})
    per_query = frame.groupby("q", sort=False).agg(q_tone=("q_tone", "first"), r_pos=("r_pos", "mean"),
                                                    same=("same", "mean"))
    with_levels = [lv for lv in levels if lv != UNKNOWN or (g_tone == UNKNOWN).any() or (r_tone == UNKNOWN).any()]

    def row(name: str, mask_rows: np.ndarray, q_mask: np.ndarray, expected: float) -> dict:
        sub = r_tone[mask_rows]
        out = {"group": name, "n_queries": int(q_mask.sum()), "n_retrieved": int(mask_rows.sum())}
        out.update({lv: float((sub == lv).mean()) if len(sub) else np.nan for lv in with_levels})
        known = r_pos[mask_rows]
        known = known[np.isfinite(known)]
        out["mean_tone"] = float(known.mean()) if len(known) else np.nan
        vals = per_query.loc[q_mask, "r_pos"].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)] - g_mean
        out["drift"] = float(vals.mean()) if len(vals) else np.nan  # the mean over queries, like its CI
        out["drift_low"], out["drift_high"] = bootstrap_ci(vals, n_boot=n_boot, level=ci, seed=seed)
        out["same_tone"] = float(per_query.loc[q_mask, "same"].mean()) if q_mask.any() else np.nan
        out["same_tone_expected"] = expected
        return out

    rows = []
    pq_tone = per_query["q_tone"].to_numpy()
    for lv in levels:
        q_mask = pq_tone == lv
        if not q_mask.any():
            continue
        rows.append(row(lv, q_tone == lv, q_mask, g_share[lv]))
    expected_all = float(np.mean([g_share[t] for t in pq_tone]))
    rows.append(row("all queries", np.ones(len(r_tone), dtype=bool), np.ones(len(pq_tone), dtype=bool), expected_all))
    gal = {"group": "gallery", "n_queries": 0, "n_retrieved": int(in_gallery.sum())}
    gal.update({lv: g_share[lv] for lv in with_levels})
    gal.update({"mean_tone": g_mean, "drift": 0.0, "drift_low": np.nan, "drift_high": np.nan, "same_tone": np.nan,
                "same_tone_expected": np.nan})
    rows.append(gal)
    table = pd.DataFrame(rows, columns=["group", "n_queries", "n_retrieved", *with_levels, "mean_tone", "drift",
                                        "drift_low", "drift_high", "same_tone", "same_tone_expected"])
    table.attrs.update({"by": by, "levels": list(with_levels)})
    return table


def _add_scenarios(table: pd.DataFrame, tones: np.ndarray, conf: np.ndarray, q_rows: np.ndarray, r_rows: np.ndarray,
                   in_gallery: np.ndarray, qids: np.ndarray, by: str, low_confidence: float) -> None:
    """Add ``drift_scenario_low`` / ``_high``: the drift with the unknown, then the doubtful, cases in one group."""
    known = tones != UNKNOWN
    families = [~known, known & (conf < low_confidence)]
    drifts: dict[str, list[float]] = {g: [] for g in table["group"]}
    for movable in families:
        for g in GROUPINGS[by]:
            if not (movable & (tones != g)).any():
                continue
            moved = np.where(movable, g, tones).astype(object)
            shifted = _mix(moved, q_rows, r_rows, in_gallery, qids, by, 0, 0.95, 0).set_index("group")["drift"]
            for name in drifts:
                if name in shifted.index and name != "gallery":
                    drifts[name].append(float(shifted[name]))
    low = [np.nanmin(d) if np.isfinite(d).any() else np.nan for d in map(np.array, drifts.values())]
    high = [np.nanmax(d) if np.isfinite(d).any() else np.nan for d in map(np.array, drifts.values())]
    at = list(table.columns).index("drift_high") + 1
    table.insert(at, "drift_scenario_low", low)
    table.insert(at + 1, "drift_scenario_high", high)

