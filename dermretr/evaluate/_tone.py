"""The "tone" protocol ("this condition, on darker skin") and the skin-tone ranges of a case table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._errors import DermretrError
from ..data.vocab import TONE_RANGES, TONE_SCALES, TONE_STYLES, tone_findings, tone_query_text, tone_range
from ..skin_tone import estimate_skin_tone
from ._case import case_pairs, case_relevance
from ._common import attach_metrics, check_relevant, check_split, query_columns, resolve_gallery_splits
from ._leak import check_query_text
from ._metrics import check_ks, rank_metrics, summarize_metrics

__all__ = ["TONE_COLUMNS", "tone_ranges", "with_tone_estimate", "ToneQueries", "tone_queries", "tone_search",
           "tone_scores", "tone_scores_search"]

#: Where each skin-tone scale of the tone protocol reads its values (columns of the case table).
TONE_COLUMNS: dict[str, tuple[str, ...]] = {
    "fitzpatrick": ("fitzpatrick", "skin_tone_group"),
    "monk": ("monk",),
    "ita": ("ita_category_estimated", "ita_estimated"),
}
_TONE_HINTS = {
    "fitzpatrick": "use data with Fitzpatrick types (DermSynth, fitzpatrick17k, ddi, pad_ufes20, scin), "
                   "--tone-scale monk for Monk tones, or --tone-scale ita to estimate skin tone from the pixels",
    "monk": "few datasets have Monk tones (scin does); use --tone-scale fitzpatrick, or --tone-scale ita to "
            "estimate skin tone from the pixels",
    "ita": "estimate skin tone from the pixels first (dermretr.fairness.estimate_skin_tone(cases); "
           "`dermretr evaluate --protocol tone --tone-scale ita` does it), or use labelled data with "
           "--tone-scale fitzpatrick",
}


def tone_ranges(cases: pd.DataFrame, scale: str = "fitzpatrick") -> np.ndarray:
    """The skin-tone range (:data:`~dermretr.data.vocab.TONE_RANGES`) of every case; None when unknown.

    Parameters
    ----------
    cases : DataFrame
        A case table.
    scale : {"fitzpatrick", "monk", "ita"}
        ``fitzpatrick``: the ``fitzpatrick`` column, else ``skin_tone_group``
        (DDI publishes only the pairs I-II, III-IV, V-VI); ``monk``: the
        ``monk`` column; ``ita``: the skin tone *estimated* from the pixels
        (``ita_category_estimated`` or ``ita_estimated``, from
        :func:`dermretr.skin_tone.estimate_skin_tone`).  A missing column
        gives unknowns.

    Returns
    -------
    ndarray of object
        Range names or None, one per case.

    Examples
    --------
    >>> cases = pd.DataFrame({"fitzpatrick": pd.array([1, 4, None, None], dtype="Int64"),
    ...                       "skin_tone_group": [None, None, "V-VI", None]})
    >>> tone_ranges(cases).tolist(), tone_ranges(cases, "monk").tolist()
    (['I-II', 'III-IV', 'V-VI', None], [None, None, None, None])
    """
    from ..color import ita_category

    if scale not in TONE_SCALES:
        raise DermretrError(f"unknown skin-tone scale {scale!r}; scales: {', '.join(TONE_SCALES)}")
    out = np.full(len(cases), None, dtype=object)
    for column in TONE_COLUMNS[scale]:
        if column not in cases.columns:
            continue
        values = cases[column].astype(object).to_numpy()
        if column == "ita_estimated":
            values = np.array([ita_category(float(v)) if pd.notna(v) and np.isfinite(float(v)) else None
                               for v in values], dtype=object)
        unknown = np.array([r is None for r in out], dtype=bool)
        out[unknown] = [tone_range(v, scale) for v in np.asarray(values, dtype=object)[unknown]]
    return out


def _check_tone_labels(cases: pd.DataFrame, ranges: np.ndarray, scale: str) -> None:
    """Refuse a case table without skin-tone labels in at least two ranges of ``scale`` (one line, with a hint)."""
    names = list(TONE_RANGES[scale])
    known = [r for r in ranges if r is not None]
    present = sorted(set(known), key=names.index)
    if len(present) >= 2:
        return
    sources = (pd.unique(cases["source"].astype(str)).tolist() if "source" in cases.columns else [])
    data = (f"source {', '.join(map(repr, sources[:3]))}" if sources else "the case table") + f" ({len(cases)} cases)"
    one, many = {"fitzpatrick": ("Fitzpatrick type", "Fitzpatrick types"), "monk": ("Monk tone", "Monk tones"),
                 "ita": ("estimated ITA category", "estimated ITA categories")}[scale]
    what = (f"has no {one}" + (" (no column " + " or ".join(map(repr, TONE_COLUMNS[scale])) + ")"
                               if not set(TONE_COLUMNS[scale]) & set(cases.columns) else "")
            if not known else f"has {many} in range {present[0]} only ({len(known)} labelled cases)")
    hint = _TONE_HINTS[scale]
    if scale == "ita" and set(TONE_COLUMNS["ita"]) & set(cases.columns):
        hint = "the estimate from the pixels does not tell skin tones apart here; use labelled data"
    raise DermretrError(f"the tone protocol needs {many} in at least two ranges ({', '.join(names)}), "
                        f"but {data} {what}; {hint}")


def with_tone_estimate(cases: pd.DataFrame, scale: str, progress: bool = False) -> pd.DataFrame:
    """``cases`` with the skin tone estimated from the pixels when ``scale="ita"`` needs it and it is missing.

    Other scales, and tables that already have ``ita_category_estimated`` or
    ``ita_estimated``, are returned as they are.

    >>> t = pd.DataFrame({"fitzpatrick": [1]})
    >>> with_tone_estimate(t, "fitzpatrick") is t
    True
    """
    if scale != "ita" or set(TONE_COLUMNS["ita"]) & set(cases.columns):
        return cases
    return estimate_skin_tone(cases, progress=progress)


@dataclass
class ToneQueries:
    """The queries, gallery, relevance and exclusions of the "tone" protocol (:func:`tone_queries`).

    ``info`` is the per-query table's head (the query case's
    :data:`QUERY_COLUMNS`, ``query_range``, ``target_range`` and, with texts,
    ``tone_text``); ``rows`` the query cases, one row per query; ``gallery``
    the gallery cases and ``gallery_range`` their ranges; ``relevant`` and
    ``exclude`` are ``[Q, G]``; ``skipped`` counts the ``(case, other range)``
    pairs without a relevant gallery case (``"no_relevant"``) and the query
    cases whose own skin tone is unknown (``"unknown_tone"``).
    """

    info: pd.DataFrame
    rows: pd.DataFrame
    gallery: pd.DataFrame
    gallery_range: np.ndarray
    relevant: np.ndarray
    exclude: np.ndarray
    texts: list[str] | None
    skipped: dict[str, int]


def tone_queries(cases: pd.DataFrame, split: str = "test", gallery_splits: Sequence[str] | None = None, *,
                 scale: str = "fitzpatrick", relevant: str = "diagnosis_group", style: str = "scale",
                 text_style: str = "terse", texts: bool = True) -> ToneQueries:
    """The queries of the "tone" protocol, without a model (see :func:`tone_search`).

    One query per ``(split case, other range)``: every query case with a
    known range of ``scale`` is asked for each other range in which the
    gallery holds a relevant case (same ``relevant`` value, skin tone in the
    range, another patient); the other pairs are skipped and counted.  The
    text is :func:`~dermretr.data.vocab.tone_query_text` of the case's
    findings (:func:`~dermretr.data.vocab.case_text`, ``view="findings"``,
    with its own skin-type mention removed by
    :func:`~dermretr.data.vocab.strip_tone`), checked by :func:`check_query_text`.

    Raises
    ------
    DermretrError
        Data without labels in two ranges, or without any query that has a
        relevant gallery case.

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"), "image_path": list("abcd"),
    ...     "diagnosis": "x", "diagnosis_group": ["MEL", "MEL", "NEV", "MEL"],
    ...     "fitzpatrick": [1, 6, 6, 2], "split": ["train", "train", "train", "test"]})
    >>> tq = tone_queries(cases)
    >>> tq.info[["case_id", "query_range", "target_range", "tone_text"]].to_numpy().tolist()
    [['d', 'I-II', 'V-VI', 'on Fitzpatrick type V-VI skin: no specific dermoscopic structures']]
    >>> tq.relevant.tolist(), tq.skipped
    ([[False, True, False]], {'no_relevant': 1, 'unknown_tone': 0})
    """
    check_relevant(relevant)
    if style not in TONE_STYLES:
        raise DermretrError(f"unknown tone style {style!r}; styles: {', '.join(TONE_STYLES)}")
    check_split(cases, split)
    gallery_splits = resolve_gallery_splits(split, gallery_splits)
    q, g, exclude = case_pairs(cases, split, gallery_splits)
    q_range, g_range = tone_ranges(q, scale), tone_ranges(g, scale)
    _check_tone_labels(cases, np.concatenate([q_range, g_range]), scale)
    names = list(TONE_RANGES[scale])
    base = case_relevance(q, g, relevant) & ~exclude
    has = {t: (base & (g_range == t)[None, :]).any(axis=1) for t in names}
    pairs = [(i, t) for i, own in enumerate(q_range) if own is not None for t in names if t != own]
    kept = [(i, t) for i, t in pairs if has[t][i]]
    skipped = {"no_relevant": len(pairs) - len(kept), "unknown_tone": int(sum(r is None for r in q_range))}
    if not kept:
        raise DermretrError(
            f"no tone query has a relevant gallery case: none of the {len(q) - skipped['unknown_tone']} {split} "
            f"cases with a known skin tone has a {'/'.join(gallery_splits)} case of its {relevant} in another "
            f"{scale} range; use a larger dataset or relevant='diagnosis_group'")
    qi = np.array([i for i, _ in kept], dtype=int)
    targets = np.array([t for _, t in kept], dtype=object)
    rows = q.iloc[qi].reset_index(drop=True)
    info = query_columns(rows).assign(query_range=q_range[qi], target_range=targets)
    text_list = None
    if texts:
        findings = {i: tone_findings(q.iloc[i], style=text_style) for i in dict.fromkeys(qi.tolist())}
        text_list = [tone_query_text(findings[i], t, scale, style) for i, t in zip(qi.tolist(), targets)]
        check_query_text(rows, text_list, relevant=relevant)
        info["tone_text"] = text_list
    rel = base[qi] & (g_range[None, :] == targets[:, None])
    return ToneQueries(info=info, rows=rows, gallery=g, gallery_range=g_range, relevant=rel, exclude=exclude[qi],
                       texts=text_list, skipped=skipped)


def tone_search(retriever, cases: pd.DataFrame, split: str = "test", gallery_splits: Sequence[str] | None = None,
                *, scale: str = "fitzpatrick", relevant: str = "diagnosis_group", ks: Sequence[int] = (1, 5, 10),
                alpha: float | None = None, style: str = "scale", text_style: str = "terse", batch_size: int = 64,
                progress: bool = False, ties: str = "stable",
                queries: ToneQueries | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """The "tone" protocol: "this condition, on darker skin".

    The query is a ``split`` case's image plus a text naming a skin-tone
    range other than the case's own, then its findings
    (:func:`tone_queries`: ``"on Fitzpatrick type V-VI skin: irregular
    streaks"``); the gallery is ``gallery_splits`` (train+val for test
    queries); relevant are gallery cases with the query's diagnosis group (or
    diagnosis: ``relevant``) *and* a skin tone in the target range; the
    query's own patient is excluded.  Works with every retriever kind: an
    image-only one ignores the text, a text-only one reads findings and tone.

    Parameters
    ----------
    retriever : Retriever
        Anything with ``encode_queries``/``encode_targets``.
    cases : DataFrame
        A validated case table with skin-tone labels in two ranges or more.
    split, gallery_splits
        Query split and gallery (default: train+val for test, train for val).
    scale : {"fitzpatrick", "monk", "ita"}
        Skin-tone scale (:func:`tone_ranges`; ``ita`` needs the estimate of
        :func:`dermretr.skin_tone.estimate_skin_tone`).
    relevant : {"diagnosis_group", "diagnosis"}
    ks, alpha, batch_size, progress, ties
        As :func:`case_search`.
    style : {"scale", "plain"}
        The tone phrase (:func:`~dermretr.data.vocab.tone_text`).
    text_style : {"terse", "sentence", "note"}
        Style of the findings text.
    queries : ToneQueries, optional
        The queries already built by :func:`tone_queries` from these cases
        and settings (with texts), so they are not built twice.

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics: the query case's :data:`QUERY_COLUMNS`,
        ``query_range``, ``target_range``, ``tone_text``, ``n_relevant`` and
        the metrics (one row per case and target range; ``attrs["skipped"]``
        counts the skipped pairs); and their micro means with ``n_skipped``
        (pairs without a relevant gallery case) and ``n_unknown_tone``
        (query cases without a skin tone).  Macro over target ranges:
        ``summarize_metrics(per_query, "macro", by="target_range")``.

    Examples
    --------
    A stand-in retriever that reads the target range from the text, and the
    gallery's skin tone from the image name:

    >>> class ToneReader:
    ...     def encode_targets(self, paths, **_):
    ...         return {"global": np.array([[p.endswith("6"), p.endswith("1")] for p in paths], float), "local": None}
    ...     def encode_queries(self, paths, texts, **_):
    ...         return {"global": np.array([["V-VI" in t, "I-II" in t] for t in texts], float), "local": None}
    >>> cases = pd.DataFrame({"case_id": list("abcde"), "patient_id": list("abcde"),
    ...     "image_path": ["a1", "b6", "c6", "d1", "e6"], "diagnosis": "x",
    ...     "diagnosis_group": ["MEL", "MEL", "NEV", "MEL", "MEL"], "fitzpatrick": [1, 6, 6, 1, 6],
    ...     "split": ["train", "train", "train", "test", "test"]})
    >>> per_query, summary = tone_search(ToneReader(), cases, ks=(1,))
    >>> per_query[["case_id", "target_range", "n_relevant", "recall@1"]].to_numpy().tolist()
    [['d', 'V-VI', 1, 1.0], ['e', 'I-II', 1, 1.0]]
    """
    tq = queries if queries is not None else tone_queries(cases, split, gallery_splits, scale=scale,
                                                          relevant=relevant, style=style, text_style=text_style)
    ks = check_ks(ks)
    s = tone_scores(retriever, tq, alpha=alpha, batch_size=batch_size, progress=progress)
    per_query = tone_scores_search(tq, s, ks=ks, ties=ties)
    summary = summarize_metrics(per_query)
    summary.update(n_skipped=tq.skipped["no_relevant"], n_unknown_tone=tq.skipped["unknown_tone"])
    return per_query, summary


def tone_scores(retriever, queries: ToneQueries, alpha: float | None = None, batch_size: int = 64,
                progress: bool = False) -> np.ndarray:
    """A retriever's scores ``[Q, G]`` of the tone protocol's queries (built by :func:`tone_queries`) on their gallery.

    :func:`tone_search` is :func:`tone_scores` then :func:`tone_scores_search`; use the two to change the scores
    in between (e.g. :func:`~dermretr.evaluate.hybrid_scores` with ``queries.rows`` and ``queries.gallery``).

    >>> class Same:
    ...     def encode_queries(self, paths, texts, **_): return {"global": np.ones((len(paths), 2)), "local": None}
    ...     encode_targets = lambda self, paths, **_: {"global": np.ones((len(paths), 2)), "local": None}
    >>> cases = pd.DataFrame({"case_id": list("abc"), "patient_id": list("abc"), "image_path": list("xyz"),
    ...     "diagnosis": "x", "diagnosis_group": "MEL", "fitzpatrick": [6, 1, 1], "split": ["train", "train", "test"]})
    >>> tone_scores(Same(), tone_queries(cases)).shape
    (1, 2)
    """
    from ..models.retriever import convex_score

    if queries.texts is None:
        raise DermretrError("tone queries built with texts=False cannot be searched; build them with texts=True")
    qe = retriever.encode_queries(queries.rows["image_path"].tolist(), queries.texts, batch_size=batch_size,
                                  progress=progress)
    ge = retriever.encode_targets(queries.gallery["image_path"].tolist(), batch_size=batch_size, progress=progress)
    s, _, _ = convex_score(qe, ge, alpha=alpha)
    return s


def tone_scores_search(queries: ToneQueries, scores: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                       ties: str = "stable") -> pd.DataFrame:
    """Per-query metrics of the tone protocol for scores computed elsewhere (:func:`tone_scores`, possibly changed).

    The columns are :func:`tone_search`'s; ``attrs["skipped"]`` counts the skipped pairs.

    >>> cases = pd.DataFrame({"case_id": list("abc"), "patient_id": list("abc"), "image_path": list("xyz"),
    ...     "diagnosis": "x", "diagnosis_group": "MEL", "fitzpatrick": [6, 1, 1], "split": ["train", "train", "test"]})
    >>> tq = tone_queries(cases)  # the type I test case asks for V-VI: only case a is relevant
    >>> tone_scores_search(tq, np.array([[0.1, 0.9]]), ks=(1,))[["case_id", "target_range", "recall@1", "mrr"]]
      case_id target_range  recall@1  mrr
    0       c         V-VI       0.0  0.5
    """
    scores = np.asarray(scores)
    if scores.shape != queries.relevant.shape:
        raise DermretrError(f"scores {scores.shape} do not fit {len(queries.rows)} tone queries and "
                            f"{len(queries.gallery)} gallery cases; score these queries (tone_scores)")
    per_query = attach_metrics(queries.info, rank_metrics(scores, queries.relevant, queries.exclude,
                                                          ks=check_ks(ks), ties=ties))
    per_query.attrs["skipped"] = dict(queries.skipped)
    return per_query
