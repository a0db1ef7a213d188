"""Non-learned rankings ("floors") of every protocol, to print beside every learned retriever.

On real dermoscopy a learned retriever may rank no better than a trivial
ranking, and micro averages reward putting the most common diagnosis first
on imbalanced data.  :func:`floor_search` evaluates three rankings that need
no model, on exactly the queries, gallery, exclusions and relevance of
:func:`dermretr.evaluate.case_search` (query = a held-out case; gallery =
the other splits; the query's own case and patient excluded; relevant =
same diagnosis group or diagnosis), with the same per-query table, so
bootstrap intervals, macro averages, :func:`~dermretr.evaluate.paired_difference`
and :func:`~dermretr.evaluate.results_table` work on them unchanged:

* ``random`` - the *expected* value of every metric under a uniformly
  random order of the query's gallery (analytic, no sampling: see
  :func:`expected_random_metrics`);
* ``majority`` - every gallery case of the gallery's most common class (of
  the relevance column; equal counts: the first in sorted order) first,
  then the others.  A majority query hits at rank 1, any other query
  misses at ranks 1 .. (size of the majority block);
* ``criteria_match`` - gallery cases by agreement of annotated 7-point
  findings with the query's: the number of criteria known on both sides
  with equal values minus the number known on both sides with different
  values (a criterion unknown on either side counts nothing).  It uses
  the annotated findings, never the text or the
  diagnosis, and needs the criteria columns of
  :data:`dermretr.data.vocab.CRITERIA` (derm7pt, PH2).

Equal scores (within the majority block and the rest; criteria_match's
many equal agreement counts) are ordered by ``ties``.  The default,
``"expected"``, gives the exact expected metrics over a uniformly random
order of equal scores (:func:`expected_tie_metrics`).  ``"stable"`` keeps
the gallery's (table) order, which is arbitrary and may follow the
diagnosis: PH2's table lists every nevus before the melanomas, so stable
ties rank nevi first and criteria_match's macro recall@1 drops by about
0.2.  ``"pessimistic"`` and ``"optimistic"`` (see
:func:`dermretr.evaluate.rank_metrics`) bound what the order can do.

The tone protocol (:func:`dermretr.evaluate.tone_search`: "this condition,
on darker skin") has its own floors, :func:`tone_floor_search`, on exactly
its queries (one per test case and other skin-tone range), exclusions and
relevance (same diagnosis group *and* skin tone in the target range):

* ``random`` - as above, the expected value of a uniformly random order;
* ``filter_only`` - a skin-tone filter and nothing else: every gallery case
  in the target range first, in a uniformly random order (expected value,
  as ``ties="expected"``), then the others; diagnosis-agnostic, so it is
  what the range alone earns.  A model must beat it to show that it uses
  the reference image and findings.
* ``majority`` - the filter, then the target range's most common class
  first: the gallery cases of the target range whose class (of the
  relevance column) is the most common among that range's gallery cases,
  then the range's other cases, then the rest;
* ``criteria_match`` - the filter, then agreement of the query case's
  annotated 7-point findings (the findings its text states) with each
  gallery case's, as the case protocol's ``criteria_match``.

Equal scores are expected values (``ties="expected"``) in every tone floor.

The modify protocol (:func:`dermretr.evaluate.modify_search`: a reference
image plus "the same lesion, with irregular streaks") has the floors
:data:`MODIFY_FLOORS`, :func:`modify_floor_search`, on exactly its queries,
gallery and relevance: ``random`` and ``majority`` as above, and
``criteria_match`` with the reference's annotated findings *after the
requested change* as the query's findings.

The random floor's per-query values are expectations, so its bootstrap
interval reflects only which queries were drawn, not the spread of one
random ranking; the same holds for ``ties="expected"``.
:func:`evaluate_floors` returns per-query tables and the records of
``metrics.json`` for a data set (``run`` ``"floor:NAME"``, ``method`` the
floor's name).

Examples
--------
>>> import pandas as pd
>>> cases = pd.DataFrame({"case_id": list("abcdef"), "patient_id": list("abcdef"),
...     "diagnosis": "x", "diagnosis_group": ["NEV", "NEV", "MEL", "NEV", "MEL", "NEV"],
...     "split": ["train", "train", "train", "val", "test", "test"]})
>>> per_query, summary = floor_search(cases, "majority", ks=(1,))
>>> per_query[["method", "case_id", "diagnosis_group", "recall@1"]].to_numpy().tolist()
[['majority', 'e', 'MEL', 0.0], ['majority', 'f', 'NEV', 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._checks import check_boot, check_seed
from .._errors import DermretrError
from ..data.splits import split_source
from ..data.vocab import CRITERIA
from ._case import case_pairs, case_relevance
from ._common import (
    PROTOCOLS,
    attach_metrics,
    check_relevant,
    check_split,
    is_known,
    load_data,
    query_columns,
    resolve_gallery_splits,
)
from ._expected import expected_random_metrics, expected_tie_metrics
from ._metrics import TIES, check_ks, rank_metrics, summarize_metrics
from ._modify import ModifyQueries, load_triplets, modify_queries
from ._records import metric_records
from ._tone import ToneQueries, tone_queries, with_tone_estimate

__all__ = ["FLOORS", "MODIFY_FLOORS", "TONE_FLOORS", "FLOOR_TIES", "floor_search", "modify_floor_search",
           "tone_floor_search", "evaluate_floors", "criteria_scores", "findings_columns", "available_floors"]

#: The non-learned rankings of the case protocol, in the order tables show them.
FLOORS = ("random", "majority", "criteria_match")
#: The non-learned rankings of the modify protocol.
MODIFY_FLOORS = ("random", "majority", "criteria_match")
#: The non-learned rankings of the tone protocol.
TONE_FLOORS = ("random", "majority", "criteria_match", "filter_only")
#: Orders of equal scores of the floors: :data:`dermretr.evaluate.TIES` and their expectation.
FLOOR_TIES = (*TIES, "expected")


def findings_columns(cases: pd.DataFrame) -> list[str]:
    """The 7-point criteria columns of a case table with at least one known value.

    >>> findings_columns(pd.DataFrame({"streaks": ["absent", None], "pigment_network": [None, None]}))
    ['streaks']
    """
    return [c for c in CRITERIA if c in cases.columns and any(is_known(v) for v in cases[c].astype(object))]


def available_floors(cases: pd.DataFrame, split: str = "test", gallery_splits: Sequence[str] | None = None,
                     protocol: str = "case", triplets: pd.DataFrame | None = None,
                     tone_scale: str = "fitzpatrick") -> tuple[str, ...]:
    """The floors a case table allows (:data:`FLOORS`, :data:`MODIFY_FLOORS` or :data:`TONE_FLOORS`).

    Every protocol: random and majority always (tone: and filter_only),
    criteria_match when both the ``split`` queries and their gallery have 7-point findings
    (modify: and the ``triplets``, when given, name the ``criterion`` and
    ``to_value`` they ask for; tone: the protocol's queries, and gallery
    cases with a skin tone of ``tone_scale``, an ITA estimate already in the table).

    >>> available_floors(pd.DataFrame({"case_id": ["a"], "diagnosis_group": ["NEV"], "split": ["test"]}))
    ('random', 'majority')
    """
    splits = cases["split"].astype(str) if "split" in cases.columns else pd.Series("", index=cases.index)
    q = cases[(splits == split).to_numpy()]
    if protocol == "modify" and triplets is not None and "target_case_id" in triplets.columns:
        g = cases  # DermSynth's triplets: the gallery is every case
    else:
        g = cases[splits.isin(list(resolve_gallery_splits(split, gallery_splits))).to_numpy()]
    findings = bool([c for c in findings_columns(q) if c in findings_columns(g)])
    if protocol == "tone":
        findings = findings and _tone_findings(cases, split, gallery_splits, tone_scale)
        return TONE_FLOORS if findings else tuple(f for f in TONE_FLOORS if f != "criteria_match")
    if protocol == "modify" and triplets is not None:
        findings = findings and {"criterion", "to_value"} <= set(triplets.columns)
    return (MODIFY_FLOORS if protocol == "modify" else FLOORS) if findings else ("random", "majority")


def _tone_findings(cases: pd.DataFrame, split: str, gallery_splits: Sequence[str] | None, scale: str) -> bool:
    """Whether the tone protocol's queries and its gallery cases of a known skin tone share 7-point findings."""
    try:
        tq = tone_queries(cases, split, gallery_splits, scale=scale, texts=False)
    except DermretrError:  # no tone query at all: tone_floor_search says why
        return False
    return bool([c for c in findings_columns(tq.rows) if c in findings_columns(_ranged(tq))])


def _ranged(tq: ToneQueries) -> pd.DataFrame:
    """The gallery cases with a skin tone: those a tone floor's findings must come from."""
    return tq.gallery[pd.notna(tq.gallery_range)]


def _majority_first(labels: np.ndarray, n_queries: int) -> np.ndarray:
    """Scores ``[n_queries, G]``: 1 for the gallery's most common known label, 0 for the others.

    Equal counts: the first label in sorted order.
    """
    labels = np.asarray(labels, dtype=object)
    known = pd.Series(labels, dtype=object).dropna().astype(str)
    if known.empty:
        return np.zeros((n_queries, len(labels)))
    counts = known.value_counts()
    top = sorted(counts.index[counts == counts.max()])[0]
    hit = np.array([is_known(v) and str(v) == top for v in labels], dtype=float)
    return np.broadcast_to(hit, (n_queries, len(labels)))


def _shared_findings(q: pd.DataFrame, g: pd.DataFrame, others: str = "the random and majority floors") -> list[str]:
    columns = [c for c in findings_columns(q) if c in findings_columns(g)]
    if not columns:
        raise DermretrError(
            "the criteria_match floor needs annotated 7-point findings (columns "
            f"{', '.join(CRITERIA)}) on both query and gallery cases; this dataset has none (derm7pt, ph2 and "
            f"DermSynth have them); use {others}"
        )
    return columns


def criteria_scores(q: pd.DataFrame, g: pd.DataFrame, columns: Sequence[str] | None = None) -> np.ndarray:
    """criteria_match's scores ``[Q, G]`` rescaled to [0, 1]: ``1/2 + (agreements - disagreements) / (2 C)``.

    ``C`` is the number of criteria compared (default: the 7-point criteria
    with findings among both the queries and the gallery); a criterion
    unknown on either side counts nothing, so 1/2 means no evidence either
    way.  The ranking is the floor's; use it to fuse findings with a model's
    scores (:func:`dermretr.evaluate.case_scores`, :func:`dermretr.evaluate.scores_search`).

    >>> q = pd.DataFrame({"streaks": ["irregular"], "blue_whitish_veil": ["present"]})
    >>> g = pd.DataFrame({"streaks": ["irregular", "absent", None], "blue_whitish_veil": ["present", "present", None]})
    >>> criteria_scores(q, g).tolist()
    [[1.0, 0.5, 0.5]]
    """
    if columns is None:
        columns = _shared_findings(q, g)
    columns = list(columns)
    missing = [c for c in columns if c not in CRITERIA or c not in q.columns or c not in g.columns]
    if not columns or missing:
        raise DermretrError(f"criteria_scores needs 7-point criteria columns of both tables, got {columns!r}")
    return 0.5 + _criteria_scores(q, g, columns) / (2 * len(columns))


def _criteria_scores(q: pd.DataFrame, g: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Agreements minus disagreements of the criteria known on both sides, ``[Q, G]``."""
    score = np.zeros((len(q), len(g)))
    for c in columns:
        vq = [str(v) if is_known(v) else None for v in q[c].astype(object)]
        vg = [str(v) if is_known(v) else None for v in g[c].astype(object)]
        values = {v: i for i, v in enumerate(sorted({v for v in vq + vg if v is not None}))}
        cq = np.array([-1 if v is None else values[v] for v in vq])
        cg = np.array([-1 if v is None else values[v] for v in vg])
        both = (cq[:, None] >= 0) & (cg[None, :] >= 0)
        score += np.where(both, np.where(cq[:, None] == cg[None, :], 1.0, -1.0), 0.0)
    return score


def floor_search(cases: pd.DataFrame, method: str, query_split: str = "test", relevant: str = "diagnosis_group",
                 ks: Sequence[int] = (1, 5, 10), gallery_splits: Sequence[str] | None = None,
                 ties: str = "expected") -> tuple[pd.DataFrame, dict[str, float]]:
    """A non-learned ranking on the "case" protocol: per-query metrics like :func:`~dermretr.evaluate.case_search`.

    Parameters
    ----------
    cases : DataFrame
        A validated case table.
    method : {"random", "majority", "criteria_match"}
        The floor (see the module's description).
    query_split : str
        Queries come from this split.
    relevant : {"diagnosis_group", "diagnosis"}
        Relevant = same value of this column; ``majority`` puts the gallery's
        most common value of it first (equal counts: the first in sorted order).
    ks : ints
        Cut-offs.
    gallery_splits : strs, optional
        Default: train and val for test queries, train for val queries (as
        :func:`~dermretr.evaluate.evaluate_run`).
    ties : {"stable", "pessimistic", "optimistic", "expected"}
        Order of equal scores of ``majority`` and ``criteria_match``: the
        expected metrics over a uniformly random order of equal scores
        (default), gallery order, relevant last or relevant first;
        ``random`` is an expectation and has no ties.

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (``method`` first, then the query's columns,
        ``n_relevant`` and the metrics; ``random``'s are expected values) and
        their micro means over queries with a relevant case.

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"), "diagnosis": "x",
    ...     "diagnosis_group": ["NEV", "MEL", "NEV", "MEL"], "split": ["train", "train", "train", "test"]})
    >>> per_query, summary = floor_search(cases, "random", ks=(1, 3))
    >>> [round(summary[m], 4) for m in ("recall@1", "recall@3", "mrr")]   # 1 relevant of 3
    [0.3333, 1.0, 0.6111]
    >>> floor_search(cases, "criteria_match")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: the criteria_match floor needs annotated 7-point findings ...
    """
    if method not in FLOORS:
        raise DermretrError(f"unknown floor {method!r}; floors: {', '.join(FLOORS)}")
    check_relevant(relevant)
    if ties not in FLOOR_TIES:
        raise DermretrError(f"ties must be one of {', '.join(FLOOR_TIES)}, got {ties!r}")
    ks = check_ks(ks)
    q, g, exclude = case_pairs(cases, query_split, resolve_gallery_splits(query_split, gallery_splits))
    rel = case_relevance(q, g, relevant)
    if method == "random":
        metrics = expected_random_metrics((~exclude).sum(axis=1), (rel & ~exclude).sum(axis=1), ks=ks)
    else:
        if method == "majority":
            scores = _majority_first(g[relevant].to_numpy(dtype=object), len(q))
        else:
            scores = _criteria_scores(q, g, _shared_findings(q, g))
        metrics = (expected_tie_metrics(scores, rel, exclude, ks=ks) if ties == "expected"
                   else rank_metrics(scores, rel, exclude, ks=ks, ties=ties))
    per_query = attach_metrics(query_columns(q), metrics)
    per_query.insert(0, "method", method)
    return per_query, summarize_metrics(per_query)


def modify_floor_search(cases: pd.DataFrame, method: str, triplets=None, split: str = "test", *,
                        gallery_splits: Sequence[str] | None = None, ks: Sequence[int] = (1, 5, 10),
                        seed: int = 0, max_per_case: int = 1,
                        ties: str = "expected") -> tuple[pd.DataFrame, dict[str, float]]:
    """A non-learned ranking on the "modify" protocol: per-query metrics like :func:`~dermretr.evaluate.modify_search`.

    Same queries, gallery, exclusions and relevance as ``modify_search``
    (:func:`~dermretr.evaluate.modify_queries`): DermSynth's triplets (the
    exact target) or derived ones (the requested criterion value and the
    reference's diagnosis group).

    Parameters
    ----------
    cases : DataFrame
        A validated case table.
    method : {"random", "majority", "criteria_match"}
        ``random``: the expected metrics of a uniformly random order of the
        gallery; ``majority``: the gallery's most common diagnosis group
        first; ``criteria_match``: gallery cases by agreement of their
        annotated 7-point findings with *the reference's findings after the
        requested change* (the triplet's ``criterion`` set to ``to_value``;
        agreements minus disagreements, as :func:`floor_search`).  It reads
        the annotations, never the text or the images, so it is what knowing
        the findings and the change earns without a model.
    triplets, split, gallery_splits, seed, max_per_case
        As :func:`~dermretr.evaluate.modify_search`.
    ks : ints
        Cut-offs.
    ties : {"expected", "stable", "pessimistic", "optimistic"}
        Order of equal scores of ``majority`` and ``criteria_match`` (see
        :func:`floor_search`).

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (``method`` first, then the columns of
        ``modify_search``) and their micro means.

    Examples
    --------
    The reference ``a`` asks for irregular streaks; its target ``b`` is the
    only case with both of the reference's findings after the change, and
    of the gallery's majority group (MEL: equal counts, first in order):

    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("aacd"),
    ...     "image_path": list("abcd"), "diagnosis": "x", "diagnosis_group": ["MEL", "MEL", "NEV", "NEV"],
    ...     "streaks": ["absent", "irregular", "irregular", "absent"],
    ...     "blue_whitish_veil": ["present", "present", "absent", "present"], "split": "test"})
    >>> mods = pd.DataFrame({"reference_case_id": ["a"], "modification_text": ["with irregular streaks"],
    ...     "target_case_id": ["b"], "criterion": ["streaks"], "to_value": ["irregular"]})
    >>> [round(modify_floor_search(cases, m, mods, ks=(1,))[1]["recall@1"], 4) for m in MODIFY_FLOORS]
    [0.3333, 1.0, 1.0]
    """
    if method not in MODIFY_FLOORS:
        raise DermretrError(f"unknown modify floor {method!r}; floors of the modify protocol: "
                            f"{', '.join(MODIFY_FLOORS)}")
    if ties not in FLOOR_TIES:
        raise DermretrError(f"ties must be one of {', '.join(FLOOR_TIES)}, got {ties!r}")
    ks = check_ks(ks)
    mq = modify_queries(cases, triplets, split=split, gallery_splits=gallery_splits, seed=seed,
                        max_per_case=max_per_case)
    if method == "random":
        metrics = expected_random_metrics((~mq.exclude).sum(axis=1), (mq.relevant & ~mq.exclude).sum(axis=1), ks=ks)
    else:
        if method == "majority":
            scores = _majority_first(mq.gallery["diagnosis_group"].to_numpy(dtype=object), len(mq.texts))
        else:
            wanted = _modified_findings(mq)  # a criterion the change names counts even if no reference had it
            scores = _criteria_scores(wanted, mq.gallery, _shared_findings(wanted, mq.gallery))
        metrics = (expected_tie_metrics(scores, mq.relevant, mq.exclude, ks=ks) if ties == "expected"
                   else rank_metrics(scores, mq.relevant, mq.exclude, ks=ks, ties=ties))
    per_query = attach_metrics(mq.info, metrics)
    per_query.insert(0, "method", method)
    return per_query, summarize_metrics(per_query)


def _modified_findings(mq: ModifyQueries) -> pd.DataFrame:
    """The references' 7-point findings with each triplet's ``criterion`` set to its ``to_value``."""
    t = mq.triplets
    missing = [c for c in ("criterion", "to_value") if c not in t.columns]
    if missing:
        raise DermretrError(f"the criteria_match floor of the modify protocol needs the triplets' columns "
                            f"criterion and to_value (what the text asks to change); these lack {missing}")
    findings = mq.references[[c for c in CRITERIA if c in mq.references.columns]].astype(object).copy()
    for i, (criterion, value) in enumerate(zip(t["criterion"].astype(str), t["to_value"])):
        if criterion not in findings.columns:
            raise DermretrError(f"modification triplet {i} names criterion {criterion!r}, which is not a 7-point "
                                f"criteria column of the case table ({', '.join(findings.columns) or 'none'})")
        findings.iat[i, findings.columns.get_loc(criterion)] = value
    return findings


def tone_floor_search(cases: pd.DataFrame, method: str, query_split: str = "test", *, scale: str = "fitzpatrick",
                      relevant: str = "diagnosis_group", ks: Sequence[int] = (1, 5, 10),
                      gallery_splits: Sequence[str] | None = None,
                      ties: str = "expected") -> tuple[pd.DataFrame, dict[str, float]]:
    """A non-learned ranking on the "tone" protocol: per-query metrics like :func:`~dermretr.evaluate.tone_search`.

    Parameters
    ----------
    cases : DataFrame
        A validated case table with skin-tone labels (see
        :func:`~dermretr.evaluate.tone_queries`).
    method : {"random", "majority", "criteria_match", "filter_only"}
        ``random``: the expected metrics of a uniformly random order of the
        query's gallery; ``filter_only``: the gallery cases in the target
        range first, in a uniformly random order (expected metrics), then
        the others; ``majority`` and ``criteria_match``: the target range
        first too, and within it the range's most common class first, or
        by agreement of annotated findings (see the module's description).
        No case outside the range is relevant, so the order of the rest does
        not change the metrics.
    query_split, scale, relevant, ks, gallery_splits
        As :func:`~dermretr.evaluate.tone_search`.
    ties : {"expected", "stable", "pessimistic", "optimistic"}
        Order of equal scores, as :func:`floor_search` (``random`` is an
        expectation and has no ties; ``filter_only``'s range is one tie).

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (``method`` first, then the columns of
        :func:`~dermretr.evaluate.tone_search` but ``tone_text``) and their
        micro means.

    Examples
    --------
    The test case (type I) asks for V-VI; the gallery holds two V-VI cases, one of its group:

    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"), "diagnosis": "x",
    ...     "diagnosis_group": ["MEL", "NEV", "MEL", "MEL"], "fitzpatrick": [6, 6, 1, 1],
    ...     "split": ["train", "train", "train", "test"]})
    >>> [round(tone_floor_search(cases, m, ks=(1,))[1]["recall@1"], 4) for m in ("random", "filter_only")]
    [0.3333, 0.5]

    The V-VI range holds one MEL and one NEV case; equal counts put the first in sorted order, MEL, first:

    >>> round(tone_floor_search(cases, "majority", ks=(1,))[1]["recall@1"], 4)
    1.0
    """
    if method not in TONE_FLOORS:
        raise DermretrError(f"unknown tone floor {method!r}; floors of the tone protocol: {', '.join(TONE_FLOORS)}")
    if ties not in FLOOR_TIES:
        raise DermretrError(f"ties must be one of {', '.join(FLOOR_TIES)}, got {ties!r}")
    ks = check_ks(ks)
    tq = tone_queries(cases, query_split, gallery_splits, scale=scale, relevant=relevant, texts=False)
    if method == "random":
        metrics = expected_random_metrics((~tq.exclude).sum(axis=1), tq.relevant.sum(axis=1), ks=ks)
    else:
        targets = tq.info["target_range"].to_numpy(dtype=object)
        in_range = tq.gallery_range[None, :] == targets[:, None]
        # the range first (2 or more), then within the range and the rest the floor's own order (0 to 1)
        scores = 2.0 * in_range + _tone_secondary(tq, method, targets, relevant)
        metrics = (expected_tie_metrics(scores, tq.relevant, tq.exclude, ks=ks) if ties == "expected"
                   else rank_metrics(scores, tq.relevant, tq.exclude, ks=ks, ties=ties))
    per_query = attach_metrics(tq.info, metrics)
    per_query.insert(0, "method", method)
    return per_query, summarize_metrics(per_query)


def _tone_secondary(tq: ToneQueries, method: str, targets: np.ndarray, relevant: str) -> np.ndarray:
    """The order of a tone floor inside the target range, as scores in [0, 1]."""
    shape = (len(targets), len(tq.gallery))
    if method == "filter_only":
        return np.zeros(shape)
    if method == "criteria_match":
        columns = _shared_findings(tq.rows, _ranged(tq), "the random, majority and filter_only floors")
        return criteria_scores(tq.rows, tq.gallery, columns)
    labels = tq.gallery[relevant].to_numpy(dtype=object)
    secondary = np.zeros(shape)
    for target in dict.fromkeys(targets.tolist()):
        in_target = tq.gallery_range == target
        hit = np.zeros(len(labels))
        hit[in_target] = _majority_first(labels[in_target], 1)[0]
        secondary[targets == target] = hit
    return secondary


def evaluate_floors(data, floors: Sequence[str] | None = None, *, split: str = "test",
                    relevant: str = "diagnosis_group", ks: Sequence[int] = (1, 5, 10), n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0, by: str | None = None,
                    ties: str = "expected", protocol: str = "case",
                    tone_scale: str = "fitzpatrick", triplets=None) -> tuple[pd.DataFrame, list[dict]]:
    """The floors of a data set on one protocol: per-query metrics and ``metrics.json`` records.

    Parameters
    ----------
    data : str or DataFrame
        ``"SOURCE:PATH"`` or a loaded case table.
    floors : strs, optional
        Default: :func:`available_floors` (criteria_match only with findings).
    split, relevant, ks
        As :func:`~dermretr.evaluate.evaluate_run` (the gallery follows the
        split; the modify protocol's relevance is its own, ``relevant`` is unused there).
    n_boot, level, seed, by
        Bootstrap and macro classes of :func:`~dermretr.evaluate.metric_records`
        (``by`` default: ``diagnosis_group``, ``target_range`` for the tone protocol);
        ``seed`` also derives modification triplets, as :func:`~dermretr.evaluate.evaluate_run`.
    ties
        Order of equal scores: see :func:`floor_search`.
    protocol : {"case", "modify", "tone"}
        The case protocol's floors (:data:`FLOORS`), the modify protocol's
        (:data:`MODIFY_FLOORS`, :func:`modify_floor_search`) or the tone
        protocol's (:data:`TONE_FLOORS`, :func:`tone_floor_search`).
    tone_scale : {"fitzpatrick", "monk", "ita"}
        Skin-tone scale of the tone protocol (``ita`` estimates skin tone
        from the pixels when the table has no estimate).
    triplets : DataFrame or path, optional
        Modification triplets of the modify protocol (default: the data
        folder's ``meta/modifications.csv``, else derived from the criteria).

    Returns
    -------
    (DataFrame, list of dict)
        Per-query metrics of every floor (``run`` = ``"floor:NAME"``,
        ``method`` = NAME and ``protocol`` first) and their records,
        micro and macro (``split_source`` from the table's attrs,
        :func:`dermretr.data.split_source`).

    Examples
    --------
    Two NEV queries hit at rank 1 (NEV is the gallery's majority), the MEL one misses:

    >>> cases = pd.DataFrame({"case_id": list("abcdefg"), "patient_id": list("abcdefg"), "diagnosis": "x",
    ...     "diagnosis_group": ["NEV", "NEV", "MEL", "NEV", "MEL", "NEV", "NEV"],
    ...     "split": ["train", "train", "train", "val", "test", "test", "test"]})
    >>> per_query, records = evaluate_floors(cases, ["majority"], ks=(1,), n_boot=0)
    >>> [(r["run"], r["average"], round(r["value"], 3)) for r in records if r["metric"] == "recall"]
    [('floor:majority', 'micro', 0.667), ('floor:majority', 'macro', 0.5)]
    >>> per_query.columns[:4].tolist()
    ['run', 'method', 'protocol', 'case_id']
    """
    check_relevant(relevant)
    ks = check_ks(ks)
    check_boot(n_boot, level)
    check_seed(seed)
    if protocol not in PROTOCOLS:
        raise DermretrError(f"unknown protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    cases, root = load_data(data)
    split_from = split_source(cases)  # before the tone protocol adds columns
    check_split(cases, split)
    if protocol == "modify":
        if triplets is None and root is not None:
            triplets = load_triplets(root)
        elif triplets is not None and not isinstance(triplets, pd.DataFrame):
            triplets = load_triplets(triplets)
    if protocol == "tone":
        cases = with_tone_estimate(cases, tone_scale)
    if floors is None:
        floors = available_floors(cases, split, protocol=protocol, triplets=triplets, tone_scale=tone_scale)
    floors = (floors,) if isinstance(floors, str) else tuple(dict.fromkeys(floors))
    allowed = {"case": FLOORS, "modify": MODIFY_FLOORS, "tone": TONE_FLOORS}[protocol]
    unknown = [f for f in floors if f not in allowed]
    if unknown:
        raise DermretrError(f"unknown floor(s) {unknown} for the {protocol} protocol; its floors: {', '.join(allowed)}")
    tables, records = [], []
    for name in floors:
        if protocol == "tone":
            pq, _ = tone_floor_search(cases, name, query_split=split, scale=tone_scale, relevant=relevant, ks=ks,
                                      ties=ties)
        elif protocol == "modify":
            pq, _ = modify_floor_search(cases, name, triplets, split=split, ks=ks, seed=seed, ties=ties)
        else:
            pq, _ = floor_search(cases, name, query_split=split, relevant=relevant, ks=ks, ties=ties)
        run = f"floor:{name}"
        records += metric_records(pq, run, name, protocol, n_boot=n_boot, level=level, seed=seed, by=by,
                                  split_source=split_from)
        pq.insert(1, "protocol", protocol)
        pq.insert(0, "run", run)
        tables.append(pq)
    return pd.concat(tables, ignore_index=True), records
