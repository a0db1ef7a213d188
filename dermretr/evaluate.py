"""Retrieval metrics, evaluation protocols and bootstrap confidence intervals.

Metrics per query (binary relevance), at cut-off K:

* ``recall@K`` - hit rate: 1 if a relevant case is in the top K;
* ``precision@K`` - fraction of the top K that is relevant;
* ``map@K`` - average precision at K, normalised by ``min(K, #relevant)``;
* ``ndcg@K`` - normalised discounted cumulative gain at K;
* ``mrr`` - reciprocal rank of the first relevant case (whole ranking).

Queries without any relevant case are kept in the per-query tables but left
out of every mean and confidence interval (``n_queries`` counts the others).

Averages: *micro* is the mean over queries; *macro* is the mean over
diagnosis groups (or another query column, ``by``) of each group's mean, so
that a degenerate "most common group first" ranking cannot score well by the
imbalance alone.  Macro intervals resample queries within each group (a
stratified bootstrap).  Records carry ``average`` ("micro" or "macro");
:func:`results_table` shows a macro column ``"recall@1 (macro)"`` beside each
micro one.  Non-learned floors (random, majority first, criteria match) have
the same per-query tables: see :mod:`dermretr.floors`.

Protocol "case" (:func:`case_search`): the query is a test case's image plus
its findings text (:func:`~dermretr.data.vocab.case_text`, ``view="findings"``:
what is known before a diagnosis, never the caption); the gallery is the train
and val cases; relevant cases share the query's diagnosis group (or fine
diagnosis); the query's own case and cases of the same patient are excluded
from the ranking.

Protocol "modify" (:func:`modify_search`): the query is a reference image plus
a modification text.  With DermSynth's triplets (``meta/modifications.csv``)
the only relevant case is the exact target, the gallery is every case but the
reference (targets are the same patient's re-rendered lesion, so they stay).
On datasets with 7-point criteria and no triplets, :func:`derive_triplets`
asks for a criterion value the reference does not have; relevant are the
train/val gallery cases with that value and the reference's diagnosis group;
the reference's patient is excluded.

Protocol "tone" (:func:`tone_search`: "this condition, on darker skin"): the
query is a test case's image plus a skin-tone phrase naming a range other than
the case's own, then its findings (``"on Fitzpatrick type V-VI skin: irregular
streaks"``; :func:`~dermretr.data.vocab.tone_query_text`); one query per case
and other range in which the train+val gallery holds a relevant case (the
other pairs are skipped and counted).  Relevant are gallery cases of the
query's diagnosis group (or diagnosis) *with a skin tone in the target range*;
the query's patient is excluded.  Skin tone is read on a scale
(:data:`~dermretr.data.vocab.TONE_RANGES`): Fitzpatrick pairs I-II / III-IV /
V-VI, Monk 1-3 / 4-7 / 8-10, or ITA categories estimated from the pixels
(:func:`tone_ranges`).  Its macro average is over target ranges
(``by="target_range"``).

Every protocol refuses query texts that name the answer
(:func:`check_query_text`): a diagnosis, a diagnosis group or a synonym, in
which case retrieval would be scored on reading the question.

:func:`evaluate_run` evaluates a run folder (``RUN_DIR/checkpoints/best.pt``)
and returns per-query metrics plus records ``{"run", "method", "protocol",
"average", "metric", "k", "value", "ci_low", "ci_high", "n_queries"}`` with percentile
bootstrap intervals (:func:`bootstrap_ci`); :func:`results_table` prints them,
:func:`write_metrics` writes them as ``metrics.json``.

Examples
--------
>>> import numpy as np
>>> scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.9, 0.5]])
>>> relevant = np.array([[False, True, False], [True, False, False]])
>>> per_query = rank_metrics(scores, relevant, ks=(1, 2))
>>> per_query[["recall@1", "recall@2", "mrr"]].to_numpy().tolist()
[[0.0, 1.0, 0.5], [0.0, 0.0, 0.3333333333333333]]
"""

from __future__ import annotations

import functools
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._errors import DermretrError
from ._io import atomic_path, claim_file
from .data.vocab import (CRITERIA, DIAGNOSES, DIAGNOSIS_SYNONYMS, GROUP_NAMES, TONE_RANGES, TONE_SCALES, TONE_STYLES,
                         case_text, criteria_of, modification_text, strip_tone, tone_findings, tone_query_text,
                         tone_range)

__all__ = [
    "rank_metrics",
    "summarize_metrics",
    "bootstrap_ci",
    "paired_difference",
    "case_search",
    "case_scores",
    "check_query_text",
    "scores_search",
    "modify_search",
    "derive_triplets",
    "load_triplets",
    "tone_search",
    "tone_queries",
    "tone_ranges",
    "with_tone_estimate",
    "ToneQueries",
    "TONE_COLUMNS",
    "evaluate_run",
    "run_checkpoint",
    "metric_records",
    "per_class",
    "results_table",
    "write_metrics",
    "METRICS",
    "RECORD_METRICS",
    "RECORD_KEYS",
    "AVERAGES",
    "PROTOCOLS",
    "TIES",
    "QUERY_COLUMNS",
]

#: Metrics with a cut-off K (``mrr`` has none).
METRICS = ("recall", "precision", "map", "ndcg")
#: Metric names of the records (``metrics.json``).
RECORD_METRICS = (*METRICS, "mrr")
#: The keys of one record, in order.
RECORD_KEYS = ("run", "method", "protocol", "average", "metric", "k", "value", "ci_low", "ci_high", "n_queries")
#: Averages over queries: the plain mean, and the mean over classes of the class means.
AVERAGES = ("micro", "macro")
#: Evaluation protocols.
PROTOCOLS = ("case", "modify", "tone")
#: How equal scores are ordered (see :func:`rank_metrics`).
TIES = ("stable", "pessimistic", "optimistic")
#: Columns of the query case copied into per-query tables (for fairness slicing),
#: followed by any of ``_OPTIONAL_QUERY_COLUMNS`` the table has.
QUERY_COLUMNS = ("case_id", "patient_id", "diagnosis_group", "diagnosis", "fitzpatrick", "monk")
_OPTIONAL_QUERY_COLUMNS = ("ita", "skin_tone_group", "sex", "age")
_METRIC_RE = re.compile(r"^(recall|precision|map|ndcg)@(\d+)$|^mrr$")
_RELEVANT = ("diagnosis_group", "diagnosis")


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(k) for k in ks)
    except (TypeError, ValueError):
        raise DermretrError(f"cut-offs K must be positive integers, got {ks!r}") from None
    if not out or any(k < 1 for k in out) or any(float(k) != float(o) for k, o in zip(ks, out)):
        raise DermretrError(f"cut-offs K must be positive integers, got {list(ks)!r}")
    return tuple(dict.fromkeys(out))


def rank_metrics(scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray | None = None,
                 ks: Sequence[int] = (1, 5, 10), ties: str = "stable") -> pd.DataFrame:
    """Per-query metrics from a score matrix ``[Q, T]`` and a relevance matrix.

    Parameters
    ----------
    scores : ndarray [Q, T]
        Higher is better.
    relevant : bool ndarray [Q, T]
    exclude : bool ndarray [Q, T], optional
        Pairs removed from the ranking (the query's own case, same patient);
        they are neither retrieved nor counted as relevant.
    ks : ints
        Cut-offs.
    ties : {"stable", "pessimistic", "optimistic"}
        Order of equal scores: gallery order (default), relevant cases last
        (no credit for a tie) or relevant cases first.

    Returns
    -------
    DataFrame
        One row per query: ``n_relevant``, ``recall@K``, ``precision@K``,
        ``map@K``, ``ndcg@K`` for each K, and ``mrr``.

    Examples
    --------
    Two gallery cases tie with the best score; only the second is relevant:

    >>> scores = np.array([[0.5, 0.9, 0.9, 0.1]])
    >>> relevant = np.array([[False, False, True, True]])
    >>> rank_metrics(scores, relevant, ks=(1,))["recall@1"].tolist()
    [0.0]
    >>> rank_metrics(scores, relevant, ks=(1,), ties="optimistic")["recall@1"].tolist()
    [1.0]
    >>> exclude = np.array([[False, True, False, False]])
    >>> rank_metrics(scores, relevant, exclude, ks=(1,))[["recall@1", "mrr"]].to_numpy().tolist()
    [[1.0, 1.0]]
    """
    if ties not in TIES:
        raise DermretrError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    ks = _check_ks(ks)
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise DermretrError(f"scores {scores.shape} and relevance {relevant.shape} must be matrices of one shape")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != scores.shape:
            raise DermretrError(f"exclude {exclude.shape} must have the shape of scores {scores.shape}")
        scores = np.where(exclude, -np.inf, scores)
        relevant = relevant & ~exclude
    if ties == "stable":
        order = np.argsort(-scores, axis=1, kind="stable")
    else:  # lexsort: the last key is the primary one
        second = relevant if ties == "pessimistic" else ~relevant
        order = np.lexsort((second, -scores), axis=1)
    ranked = np.take_along_axis(relevant, order, axis=1)
    valid = np.isfinite(np.take_along_axis(scores, order, axis=1))
    ranked &= valid
    n_rel = relevant.sum(axis=1)
    out = {"n_relevant": n_rel}
    n_t = scores.shape[1]
    positions = np.arange(1, n_t + 1)
    hits_cum = np.cumsum(ranked, axis=1)
    discounts = 1.0 / np.log2(positions + 1)
    cum_disc = np.concatenate([[0.0], np.cumsum(discounts)])
    for k in ks:
        k_eff = min(k, n_t)
        top = ranked[:, :k_eff]
        out[f"recall@{k}"] = top.any(axis=1).astype(float)
        out[f"precision@{k}"] = top.sum(axis=1) / k
        prec_at_i = hits_cum[:, :k_eff] / positions[:k_eff]
        denom = np.minimum(k, n_rel)
        out[f"map@{k}"] = np.where(denom > 0, (prec_at_i * top).sum(axis=1) / np.maximum(denom, 1), 0.0)
        dcg = (top * discounts[:k_eff]).sum(axis=1)
        ideal = cum_disc[np.minimum(n_rel, k_eff)]
        out[f"ndcg@{k}"] = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1), 0.0)
    first = np.where(ranked.any(axis=1), ranked.argmax(axis=1) + 1, 0)
    out["mrr"] = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return pd.DataFrame(out)


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if isinstance(c, str) and _METRIC_RE.match(c)]


def _usable(per_query: pd.DataFrame) -> pd.DataFrame:
    if "n_relevant" not in per_query.columns:
        raise DermretrError("per-query metrics need an 'n_relevant' column (from rank_metrics)")
    return per_query[per_query["n_relevant"].to_numpy() > 0]


def _check_average(average: str) -> str:
    if average not in AVERAGES:
        raise DermretrError(f"average must be 'micro' or 'macro', got {average!r}")
    return average


def _classes(usable: pd.DataFrame, by: str) -> np.ndarray:
    """Class codes of the usable queries for a macro average over column ``by``."""
    from ._macro import class_codes

    if not isinstance(by, str) or by not in usable.columns:
        raise DermretrError(f"cannot macro-average over {by!r}: the per-query table has no such column "
                            f"(columns: {list(usable.columns)})")
    return class_codes(usable[by])[0]


def _macro_by(per_query: pd.DataFrame, by: str | None) -> str:
    """The class column of a macro average: ``by``, else the tone protocol's target ranges when the table has
    them, else the diagnosis groups."""
    if by is not None:
        return by
    return "target_range" if "target_range" in per_query.columns else "diagnosis_group"


def summarize_metrics(per_query: pd.DataFrame, average: str = "micro",
                      by: str | None = None) -> dict[str, float]:
    """Mean of each metric over queries that have at least one relevant case.

    Only metric columns (``recall@K`` ... ``mrr``) are averaged; other columns
    (the query's case columns) are ignored.  ``average="macro"`` gives the
    mean over the classes of column ``by`` (missing values are a class) of
    each class's mean, and adds ``n_classes``; ``by`` defaults to
    ``target_range`` for tone-protocol tables, else ``diagnosis_group``.

    >>> pq = pd.DataFrame({"n_relevant": [1, 1, 1, 0], "diagnosis_group": ["NEV", "NEV", "MEL", "MEL"],
    ...                    "recall@1": [1.0, 1.0, 0.0, 0.0]})
    >>> summarize_metrics(pq)
    {'recall@1': 0.6666666666666666, 'n_queries': 3}
    >>> summarize_metrics(pq, average="macro")
    {'recall@1': 0.5, 'n_queries': 3, 'n_classes': 2}
    """
    usable = _usable(per_query)
    if _check_average(average) == "macro":
        from ._macro import macro_mean

        codes = _classes(usable, _macro_by(per_query, by))
        cols = _metric_columns(per_query)
        means = macro_mean(usable[cols].to_numpy(dtype=np.float64), codes) if len(usable) else []
        out = {c: float(v) for c, v in zip(cols, means)}
        out.update(n_queries=int(len(usable)), n_classes=int(len(np.unique(codes))))
        return out
    out = {c: float(usable[c].mean()) for c in _metric_columns(per_query) if len(usable)}
    out["n_queries"] = int(len(usable))
    return out


# ----------------------------------------------------------------------------- bootstrap


def _check_boot(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise DermretrError(f"the number of bootstrap resamples must be a non-negative integer, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise DermretrError(f"the confidence level must be between 0 and 1 (e.g. 0.95), got {level!r}")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DermretrError(f"seed must be a whole number >= 0, got {seed!r}")


def bootstrap_ci(per_query, n_boot: int = 1000, level: float = 0.95, seed: int = 0, groups=None):
    """Percentile bootstrap confidence interval of the mean over queries.

    Queries are resampled with replacement ``n_boot`` times (one index matrix
    ``[n_boot, n_queries]``, drawn in blocks so memory stays small); the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    the resampled means.  The same seed gives the same interval, and the
    columns of a 2-D input share the resamples (a paired bootstrap).

    With ``groups`` (one class label per query), the statistic is the
    *macro* mean (the mean over classes of the class means) and queries are
    resampled within their class, class sizes fixed (a stratified
    bootstrap); a class with one query then adds no spread.

    Parameters
    ----------
    per_query : array-like [n_queries] or [n_queries, n_metrics]
        Per-query values (NaN-free).
    n_boot : int
        Number of resamples; 0 gives NaN bounds.
    level : float
        Coverage, in (0, 1).
    seed : int
        Seed of the resampling.
    groups : array-like [n_queries], optional
        Class of each query (e.g. its diagnosis group; missing values are a
        class): interval of the macro mean, stratified by class.

    Returns
    -------
    (low, high)
        Floats for 1-D input, arrays ``[n_metrics]`` for 2-D input; NaN
        without queries or resamples.

    Examples
    --------
    >>> low, high = bootstrap_ci(np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]), seed=1)
    >>> bool(low < 0.625 < high), (low, high) == bootstrap_ci([0, 1, 1, 0, 1, 1, 1, 0], seed=1)
    (True, True)
    >>> bootstrap_ci([0.5])
    (0.5, 0.5)

    Macro mean of two classes; class B's values are all 1, so only A varies:

    >>> low, high = bootstrap_ci([0, 1, 0, 1, 1, 1], groups=list("AAAABB"), seed=1)
    >>> bool(0.5 <= low < 0.75 < high <= 1.0)
    True
    """
    _check_boot(n_boot, level)
    values = np.asarray(per_query, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise DermretrError(f"per-query values must be 1-D or 2-D, got shape {values.shape}")
    one_d = values.ndim == 1
    if one_d:
        values = values[:, None]
    n_q, n_m = values.shape
    if groups is not None:
        from ._macro import class_codes, stratified_means

        codes = class_codes(groups)[0]
        if len(codes) != n_q:
            raise DermretrError(f"groups has {len(codes)} labels for {n_q} queries; give one label per query")
    if n_q == 0 or n_boot == 0:
        low = high = np.full(n_m, np.nan)
    elif groups is not None:
        means = stratified_means(values, codes, n_boot, seed)
        alpha = (1.0 - float(level)) / 2.0
        low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    else:
        rng = np.random.default_rng(seed)
        block = max(1, 2**18 // n_q)  # depends on n_q only: 1-D and 2-D calls resample alike
        means = np.empty((n_boot, n_m))
        for start in range(0, n_boot, block):
            stop = min(n_boot, start + block)
            idx = rng.integers(0, n_q, size=(stop - start, n_q))
            means[start:stop] = values[idx].mean(axis=1)
        alpha = (1.0 - float(level)) / 2.0
        low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    if one_d:
        return float(low[0]), float(high[0])
    return low, high


# ----------------------------------------------------------------------------- comparing two runs


def _text(series: pd.Series) -> np.ndarray:
    return np.array(["" if (v is None or (not isinstance(v, str) and pd.isna(v))) else str(v)
                     for v in series.astype(object)], dtype=object)


def _check_per_query(per_query, what: str = "per-query table") -> pd.DataFrame:
    if not isinstance(per_query, pd.DataFrame):
        raise DermretrError(f"the {what} must be a DataFrame (from dermretr.evaluate), got {type(per_query).__name__}")
    missing = [c for c in ("case_id", "n_relevant") if c not in per_query.columns]
    if missing:
        raise DermretrError(f"the {what} lacks column(s) {missing}: use the per-query metrics of "
                            "dermretr.evaluate (case_search, modify_search, evaluate_run)")
    if len(per_query) == 0:
        raise DermretrError(f"the {what} has no queries")
    if "run" in per_query.columns and per_query["run"].nunique(dropna=False) > 1:
        runs = ", ".join(map(str, per_query["run"].unique()[:5]))
        raise DermretrError(f"the {what} mixes several runs ({runs}); slice one run at a time, e.g. "
                            "per_query[per_query['run'] == NAME]")
    return per_query


def _check_metrics(per_query: pd.DataFrame, metrics) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise DermretrError("give at least one metric, e.g. metrics=('recall@1', 'map@10')")
    available = _metric_columns(per_query)
    missing = [m for m in metrics if m not in available]
    if missing:
        raise DermretrError(f"metric(s) {missing} not in the per-query table; it has {', '.join(available) or 'none'}"
                            " (evaluate with the cut-offs you need, e.g. --k 1 5 10)")
    return tuple(dict.fromkeys(metrics))


def _pair(per_query_a: pd.DataFrame, per_query_b: pd.DataFrame) -> np.ndarray:
    """Row of ``per_query_b`` for every row of ``per_query_a`` (same query), refusing unpaired tables."""
    keys = ["case_id"] + [c for c in ("modification_text", "target_case_id", "criterion", "to_value",
                                      "target_range") if c in per_query_a.columns and c in per_query_b.columns]

    def key(t):
        return pd.Series(["\x1f".join(parts) for parts in zip(*(_text(t[c]) for c in keys))])

    ka, kb = key(per_query_a), key(per_query_b)
    for k, name in ((ka, "first"), (kb, "second")):
        if k.duplicated().any():
            raise DermretrError(f"the {name} per-query table has the same query twice "
                                f"({k[k.duplicated()].iloc[0].split(chr(31))[0]!r}); cannot pair queries")
    only_a, only_b = ~ka.isin(kb).to_numpy(), ~kb.isin(ka).to_numpy()
    if only_a.any() or only_b.any():
        raise DermretrError(
            f"the two per-query tables cover different queries ({int(only_a.sum())} only in the first, "
            f"{int(only_b.sum())} only in the second, of {len(ka)} and {len(kb)}); compare runs evaluated on the "
            "same data, split and protocol"
        )
    rows = pd.Series(np.arange(len(kb)), index=kb.to_numpy()).reindex(ka.to_numpy()).to_numpy()
    na = per_query_a["n_relevant"].to_numpy()
    nb = per_query_b["n_relevant"].to_numpy()[rows]
    if (na != nb).any():
        raise DermretrError(f"the two per-query tables disagree on the relevant cases of {int((na != nb).sum())} "
                            "queries (another relevance, gallery or dataset version?); compare like with like")
    return rows


def _sign_flip_p(d: np.ndarray, n_perm: int, rng: np.random.Generator,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """Two-sided p-values ``[n_metrics]`` of a paired sign-flip permutation test of per-query differences ``d``
    ``[n_queries, n_metrics]`` (H0: the two runs are exchangeable on every query).  With ``weights``
    ``[n_queries]`` (summing to 1) the statistic is the weighted mean, e.g. the macro mean."""
    if weights is not None:  # sum_i w_i s_i d_i = mean_i s_i (n w_i d_i): the same test on rescaled differences
        d = d * (len(d) * np.asarray(weights, dtype=np.float64))[:, None]
    obs = np.abs(d.mean(axis=0))
    tol = 1e-12 * np.maximum(1.0, obs)
    exceed = np.zeros(d.shape[1])
    n = len(d)
    block = max(1, 2**20 // max(n, 1))
    for start in range(0, n_perm, block):
        k = min(n_perm, start + block) - start
        signs = rng.choice(np.array([-1.0, 1.0]), size=(k, n))
        exceed += (np.abs(signs @ d / n) >= obs - tol).sum(axis=0)
    return (1.0 + exceed) / (1.0 + n_perm)


def paired_difference(per_query_a: pd.DataFrame, per_query_b: pd.DataFrame,
                      metrics: Sequence[str] = ("recall@1", "map@10"), n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0, average: str = "micro", by: str | None = None) -> pd.DataFrame:
    """Run a minus run b on the same queries, one row per metric.

    Queries are paired by case (and modification, for the modify protocol; target range, for the tone one);
    tables that cover different queries or disagree on relevance are refused.
    Queries without a relevant case are left out.  Each row gives both means,
    the mean per-query difference ``a - b`` with a percentile bootstrap CI
    (the metrics share the resamples) and the two-sided p-value of a paired
    sign-flip permutation test with ``n_boot`` permutations.

    With ``average="macro"`` the means and the difference are macro means
    over the classes of column ``by`` of the first table (the mean over
    classes of the class means), the bootstrap resamples queries within
    their class and the permutation test flips the class-weighted
    differences.

    Parameters
    ----------
    per_query_a, per_query_b : DataFrame
        Per-query metrics of two runs (:func:`case_search`, :func:`modify_search`, :func:`evaluate_run`).
    metrics : sequence of str
        Metric columns, e.g. ``("recall@1", "map@10")``.
    n_boot : int
        Bootstrap resamples and permutations (0: no CI, no p-value).
    level : float
        Coverage of the CI.
    seed : int
        Seed of resampling and permutations.
    average : {"micro", "macro"}
        Mean over queries, or over the classes of ``by``.
    by : str, optional
        The class column of a macro average (default: ``target_range`` for tone-protocol tables, else
        ``diagnosis_group``).

    Returns
    -------
    DataFrame
        Indexed by metric: ``n_queries, mean_a, mean_b, difference, ci_low, ci_high, p_value``
        (``attrs`` hold ``level``, ``n_boot``, ``average`` and, for macro, ``by`` and ``n_classes``).

    Examples
    --------
    >>> a = pd.DataFrame({"case_id": list("abcdef"), "n_relevant": 1, "recall@1": [1.0, 1, 1, 1, 1, 0]})
    >>> b = a.assign(**{"recall@1": [0.0, 1, 0, 1, 0, 0]})[::-1]          # any row order
    >>> t = paired_difference(a, b, metrics=["recall@1"], n_boot=500)
    >>> t.loc["recall@1", ["mean_a", "mean_b", "difference"]].tolist()
    [0.8333333333333334, 0.3333333333333333, 0.5]
    >>> a["diagnosis_group"] = ["NEV", "NEV", "NEV", "NEV", "MEL", "MEL"]
    >>> t = paired_difference(a, b, metrics=["recall@1"], n_boot=500, average="macro")
    >>> t.loc["recall@1", ["mean_a", "mean_b", "difference"]].tolist()   # (1 + 1/2)/2, (1/2 + 0)/2
    [0.75, 0.25, 0.5]
    """
    per_query_a = _check_per_query(per_query_a, "first per-query table")
    per_query_b = _check_per_query(per_query_b, "second per-query table")
    metrics = _check_metrics(per_query_a, metrics)
    _check_metrics(per_query_b, metrics)
    _check_boot(n_boot, level)
    _check_average(average)
    by = _macro_by(per_query_a, by)
    rows_b = _pair(per_query_a, per_query_b)
    usable = per_query_a["n_relevant"].to_numpy() > 0
    if not usable.any():
        raise DermretrError("no query has a relevant case: nothing to compare")
    a = per_query_a.loc[usable, list(metrics)].to_numpy(dtype=np.float64)
    b = per_query_b.iloc[rows_b[usable]][list(metrics)].to_numpy(dtype=np.float64)
    if np.isnan(a).any() or np.isnan(b).any():
        raise DermretrError("the per-query tables have missing metric values; evaluate both runs again")
    d = a - b
    attrs = {"level": level, "n_boot": n_boot, "average": average}
    if average == "macro":
        from ._macro import class_weights, macro_mean

        codes = _classes(per_query_a[usable], by)
        w = class_weights(codes)
        low, high = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed, groups=codes)
        p = (_sign_flip_p(d, n_boot, np.random.default_rng(seed), weights=w) if n_boot
             else np.full(len(metrics), np.nan))
        mean_a, mean_b, diff = macro_mean(a, codes), macro_mean(b, codes), macro_mean(d, codes)
        attrs.update(by=by, n_classes=int(len(np.unique(codes))))
    else:
        low, high = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
        p = _sign_flip_p(d, n_boot, np.random.default_rng(seed)) if n_boot else np.full(len(metrics), np.nan)
        mean_a, mean_b, diff = a.mean(axis=0), b.mean(axis=0), d.mean(axis=0)
    out = pd.DataFrame({"n_queries": len(d), "mean_a": mean_a, "mean_b": mean_b,
                        "difference": diff, "ci_low": low, "ci_high": high, "p_value": p},
                       index=pd.Index(metrics, name="metric"))
    out.attrs.update(attrs)
    return out


def _none_if_nan(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _split_metric(column: str) -> tuple[str, int | None]:
    name, _, k = column.partition("@")
    return name, (int(k) if k else None)


def _metric_order(columns: Sequence[str]) -> list[str]:
    def key(c):
        name, k = _split_metric(c)
        return RECORD_METRICS.index(name), k or 0

    return sorted(columns, key=key)


def _metric_rows(per_query: pd.DataFrame, n_boot: int, level: float, seed: int,
                 by: str | None = None) -> list[dict]:
    """``metric, k, value, ci_low, ci_high, n_queries`` for every metric column (macro over ``by`` if given)."""
    usable = _usable(per_query)
    cols = _metric_order(_metric_columns(per_query))
    values = usable[cols].to_numpy(dtype=np.float64) if cols else np.zeros((len(usable), 0))
    if by is None:
        low, high = bootstrap_ci(values, n_boot=n_boot, level=level, seed=seed)
        means = values.mean(axis=0) if len(usable) else np.full(len(cols), np.nan)
    else:
        from ._macro import macro_mean

        codes = _classes(usable, by)
        low, high = bootstrap_ci(values, n_boot=n_boot, level=level, seed=seed, groups=codes)
        means = macro_mean(values, codes)
    rows = []
    for j, c in enumerate(cols):
        name, k = _split_metric(c)
        rows.append({"metric": name, "k": k, "value": _none_if_nan(means[j]), "ci_low": _none_if_nan(low[j]),
                     "ci_high": _none_if_nan(high[j]), "n_queries": int(len(usable))})
    return rows


def metric_records(per_query: pd.DataFrame, run: str, method: str, protocol: str, n_boot: int = 1000,
                   level: float = 0.95, seed: int = 0, *, by: str | None = None,
                   average: str | Sequence[str] | None = None) -> list[dict]:
    """The records of ``metrics.json`` from per-query metrics: mean, bootstrap CI and query count.

    Parameters
    ----------
    per_query : DataFrame
        From :func:`rank_metrics` (or a protocol); needs ``n_relevant``.
        Queries without a relevant case are left out.
    run, method, protocol : str
        Copied into every record (``method`` is the retriever kind).
    n_boot, level, seed
        See :func:`bootstrap_ci`; ``n_boot=0`` gives null bounds.
    by : str, optional
        Classes of the macro average (a query column; missing values are a class); default
        ``target_range`` for tone-protocol tables, else ``diagnosis_group``.
    average : "micro", "macro", both, or None
        Which averages to record.  None (default): micro, and macro too when
        the table has the column ``by`` (a bare :func:`rank_metrics` table has
        none); naming "macro" requires it.

    Returns
    -------
    list of dict
        One record per average, metric and cut-off with the keys
        :data:`RECORD_KEYS` (all micro records first, in the order they always
        had, then the macro ones, whose interval is a stratified bootstrap);
        ``k`` is None for ``mrr``, missing values are None (JSON null).

    Examples
    --------
    >>> pq = rank_metrics(np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]),
    ...                   np.array([[True, False], [True, False], [False, False]]), ks=(1,))
    >>> recs = metric_records(pq, "run-a", "full", "case", n_boot=200)
    >>> [(r["average"], r["metric"], r["k"], r["value"], r["n_queries"]) for r in recs]
    [('micro', 'recall', 1, 0.5, 2), ('micro', 'precision', 1, 0.5, 2), ('micro', 'map', 1, 0.5, 2),
     ('micro', 'ndcg', 1, 0.5, 2), ('micro', 'mrr', None, 0.75, 2)]
    >>> list(recs[0]) == list(RECORD_KEYS)
    True

    With the query's diagnosis group, the macro records follow (three NEV
    queries hit, the MEL one misses):

    >>> pq = pd.DataFrame({"diagnosis_group": ["NEV", "NEV", "NEV", "MEL"], "n_relevant": 1,
    ...                    "recall@1": [1.0, 1.0, 1.0, 0.0]})
    >>> [(r["average"], r["value"]) for r in metric_records(pq, "run-a", "full", "case", n_boot=0)]
    [('micro', 0.75), ('macro', 0.5)]
    """
    by = _macro_by(per_query, by)
    if average is None:
        averages = ("micro", "macro") if isinstance(by, str) and by in per_query.columns else ("micro",)
    else:
        averages = (average,) if isinstance(average, str) else tuple(average)
        if not averages:
            raise DermretrError("give at least one average: 'micro', 'macro' or both")
        averages = tuple(dict.fromkeys(_check_average(a) for a in averages))
    head = {"run": str(run), "method": str(method), "protocol": str(protocol)}
    return [{**head, "average": a, **row} for a in averages
            for row in _metric_rows(per_query, n_boot, level, seed, by=by if a == "macro" else None)]


def per_class(per_query: pd.DataFrame, by: str = "diagnosis_group", n_boot: int = 1000, level: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """Metrics per value of a query column (diagnosis group, skin type ...), as a tidy table.

    Parameters
    ----------
    per_query : DataFrame
        Per-query metrics with the query's columns (from a protocol).
    by : str
        The column to group queries by; missing values form their own class.
    n_boot, level, seed
        Bootstrap CI within each class (see :func:`bootstrap_ci`).

    Returns
    -------
    DataFrame
        Columns ``by, metric, k, value, ci_low, ci_high, n_queries``: one row per
        class, metric and cut-off (``n_queries`` counts queries with a relevant case).

    Examples
    --------
    >>> pq = pd.DataFrame({"diagnosis_group": ["MEL", "NEV", "MEL"], "n_relevant": [2, 1, 1],
    ...                    "recall@1": [1.0, 0.0, 0.0], "mrr": [1.0, 0.5, 0.25]})
    >>> per_class(pq, n_boot=0)[["diagnosis_group", "metric", "k", "value", "n_queries"]]
      diagnosis_group  metric     k  value  n_queries
    0             MEL  recall     1  0.500          2
    1             MEL     mrr  <NA>  0.625          2
    2             NEV  recall     1  0.000          1
    3             NEV     mrr  <NA>  0.500          1
    """
    if by not in per_query.columns:
        raise DermretrError(f"cannot group queries by {by!r}: no such column (columns: {list(per_query.columns)})")
    rows = []
    for value, group in per_query.groupby(by, dropna=False, sort=True, observed=True):
        for row in _metric_rows(group, n_boot, level, seed):
            rows.append({by: value, **row})
    out = pd.DataFrame(rows, columns=[by, "metric", "k", "value", "ci_low", "ci_high", "n_queries"])
    out["k"] = out["k"].astype("Int64")
    for c in ("value", "ci_low", "ci_high"):
        out[c] = out[c].astype(float)
    return out


def results_table(records: Sequence[dict], decimals: int = 3) -> pd.DataFrame:
    """A wide table of records for printing: one row per run, one column per metric.

    Cells read ``"value [ci_low, ci_high]"`` (the value alone without a CI).
    Rows are indexed by run and method (and protocol when records mix
    protocols); a last column gives the number of queries.  Macro records
    (``average="macro"``) get a column ``"METRIC (macro)"`` right after the
    micro one, ``"METRIC"`` (records without ``average`` are micro).

    Examples
    --------
    >>> recs = [{"run": "a", "method": "full", "protocol": "case", "metric": "recall", "k": 1, "value": 0.512,
    ...          "ci_low": 0.44, "ci_high": 0.58, "n_queries": 60},
    ...         {"run": "a", "method": "full", "protocol": "case", "metric": "mrr", "k": None, "value": 0.6,
    ...          "ci_low": None, "ci_high": None, "n_queries": 60}]
    >>> results_table(recs).to_dict("records")
    [{'recall@1': '0.512 [0.44, 0.58]', 'mrr': '0.600', 'queries': 60}]
    >>> macro = dict(recs[0], average="macro", value=0.31, ci_low=0.2, ci_high=0.43)
    >>> list(results_table(recs + [macro]).columns)
    ['recall@1', 'recall@1 (macro)', 'mrr', 'queries']
    """
    if not records:
        raise DermretrError("no evaluation records to tabulate")
    protocols = list(dict.fromkeys(r["protocol"] for r in records))
    index = ["run", "method"] + (["protocol"] if len(protocols) > 1 else [])
    rows: dict[tuple, dict] = {}
    columns: list[str] = []
    for r in records:
        col = r["metric"] if r.get("k") is None else f"{r['metric']}@{r['k']}"
        average = r.get("average") or "micro"
        _check_average(average)
        if average == "macro":
            col += " (macro)"
        if col not in columns:
            columns.append(col)
        key = tuple(r[i] for i in index)
        row = rows.setdefault(key, {})
        v, lo, hi = r.get("value"), r.get("ci_low"), r.get("ci_high")
        if v is None:
            cell = "n/a"
        elif lo is None or hi is None:
            cell = f"{v:.{decimals}f}"
        else:
            cell = f"{v:.{decimals}f} [{lo:.{max(decimals - 1, 1)}f}, {hi:.{max(decimals - 1, 1)}f}]"
        row[col] = cell
        row["queries"] = int(r.get("n_queries") or 0)
    frame = pd.DataFrame(list(rows.values()), index=pd.MultiIndex.from_tuples(list(rows), names=index))
    micro = _metric_order(list(dict.fromkeys(c.removesuffix(" (macro)") for c in columns)))
    ordered = [c for m in micro for c in (m, f"{m} (macro)") if c in columns]
    return frame[ordered + ["queries"]].fillna("")


def is_metrics_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a metrics file :func:`write_metrics` wrote (a JSON list of metric records).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> _ = p.write_text('[{"run": "a", "metric": "mrr", "k": null, "value": 0.5}]')
    >>> is_metrics_file(p)
    True
    >>> _ = p.write_text('{"my": "settings"}')
    >>> is_metrics_file(p)
    False
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, list) and all(isinstance(r, dict) and {"metric", "value"} <= set(r) for r in data)


def is_per_query_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a per-query CSV that dermretr wrote (its header has case_id, run, method, protocol)."""
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        return False
    return {"case_id", "run", "method", "protocol"} <= set(header)


def write_metrics(records: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write records to a JSON file (a list of objects) atomically and return its path.

    >>> import tempfile, pathlib
    >>> p = write_metrics([{"run": "a", "metric": "mrr", "k": None, "value": 0.5}],
    ...                   pathlib.Path(tempfile.mkdtemp()) / "metrics.json")
    >>> json.loads(p.read_text())[0]["k"] is None
    True
    """
    path = claim_file(path, recognise=is_metrics_file)
    clean = [{k: _none_if_nan(v) if isinstance(v, float) else v for k, v in r.items()} for r in records]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n")
    return path


# ----------------------------------------------------------------------------- protocols


def _query_columns(q: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in QUERY_COLUMNS if c in q.columns] + [c for c in _OPTIONAL_QUERY_COLUMNS if c in q.columns]
    return q[cols].reset_index(drop=True)


def _attach(query_info: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([query_info.reset_index(drop=True), metrics.reset_index(drop=True)], axis=1)


def _gallery_splits(split: str, gallery_splits: Sequence[str] | None) -> tuple[str, ...]:
    if gallery_splits is not None:
        return tuple(gallery_splits)
    if split == "test":
        return ("train", "val")
    if split == "val":
        return ("train",)
    raise DermretrError(f"queries must come from a held-out split (val or test), got {split!r}")


def _check_split(cases: pd.DataFrame, split: str) -> pd.Series:
    splits = cases["split"].astype(str)
    if not (splits == split).any():
        counts = ", ".join(f"{k} {v}" for k, v in splits.value_counts().sort_index().items()) or "no cases"
        raise DermretrError(
            f"the dataset has no cases in split {split!r} to query with ({counts}); evaluation needs a "
            f"held-out {split} split"
        )
    return splits


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[:, None] == b[None, :]


# ----------------------------------------------------------------------------- leak guard

_WORD_RE = re.compile(r"[^\W_]+")
_SHOWN_TEXT = 80


def _words(text: object) -> str:
    """Lower-case words separated by single spaces (hyphens, brackets, apostrophes... as spaces)."""
    return " ".join(_WORD_RE.findall(str(text).lower()))


@functools.lru_cache(maxsize=1)
def _known_labels() -> frozenset[str]:
    """Every diagnosis and group name the vocabulary and the loaders know, and their synonyms (as words)."""
    from .data.sources import fitzpatrick17k, ham10000, isic2020, pad_ufes20, ph2

    names = [*DIAGNOSES, *GROUP_NAMES, *DIAGNOSIS_SYNONYMS, *fitzpatrick17k.NINE_PARTITION,
             *fitzpatrick17k.THREE_PARTITION, *ph2.DIAGNOSES, *ph2.GROUPS.values()]
    for module in (pad_ufes20, ham10000, isic2020):
        names += [*module.GROUPS, *module.GROUPS.values(), *getattr(module, "DIAGNOSIS_NAMES", {}).values()]
    return frozenset(map(_words, names))


def check_query_text(cases: pd.DataFrame, texts: Sequence[str] | None = None,
                     relevant: str = "diagnosis_group", style: str = "terse") -> None:
    """Refuse query texts that name the answer: a label, a diagnosis group or a synonym.

    A query whose text names what counts as relevant scores by reading the
    question.  Refused are, as whole words or phrases (letter case, hyphens and
    punctuation ignored; terms of two characters or fewer, such as ``SK``, are
    not checked): every value of the table's ``diagnosis``, ``diagnosis_group``
    and ``relevant`` columns, every diagnosis and group name the vocabulary
    and the loaders know (Derm7pt's 20 diagnoses, HAM10000's ``mel``, ``bkl``,
    PAD-UFES-20's ``ACK``...) and :data:`~dermretr.data.vocab.DIAGNOSIS_SYNONYMS`
    (``nevi``, ``benign``, ``malignant``...).  Whole words only:
    ``melanocytic`` does not trip on ``mel``.

    Parameters
    ----------
    cases : DataFrame
        The query cases, one row per text (its ``case_id`` and ``source``
        name the culprit).
    texts : sequence of str, optional
        The query texts; default: each case's
        :func:`~dermretr.data.vocab.case_text` (``view="findings"``) in
        ``style``.
    relevant : str
        The column whose equal values count as relevant; its values are
        refused besides the diagnoses and groups.
    style : {"terse", "sentence", "note"}
        Style of the default texts.

    Raises
    ------
    DermretrError
        Naming the source, the case, the word and the text of the first
        leaking query, and how many more leak.

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": ["a", "b"], "source": "demo", "diagnosis": ["psoriasis", "acne"],
    ...                       "diagnosis_group": ["inflammatory", "inflammatory"]})
    >>> check_query_text(cases, ["itching; on the arm", "Fitzpatrick type IV skin"])
    >>> check_query_text(cases, ["itching", "acne; on the face"])
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: query text names the answer: source 'demo', case 'b': 'acne' in ...
    """
    if texts is None:
        texts = [case_text(row, style=style, seed=None) for _, row in cases.iterrows()]
    texts = list(texts)
    if len(texts) != len(cases):
        raise DermretrError(f"{len(texts)} query texts for {len(cases)} query cases: give one text per case")
    if relevant not in cases.columns and relevant not in _RELEVANT:
        raise DermretrError(f"relevant column {relevant!r} is not in the case table; columns: {list(cases.columns)}")
    terms = set(_known_labels())
    for column in dict.fromkeys(("diagnosis", "diagnosis_group", relevant)):
        if column in cases.columns:
            terms.update(_words(v) for v in pd.unique(cases[column].dropna().astype(str)))
    terms = sorted((t for t in terms if len(t) > 2), key=lambda t: (-len(t), t))  # the longest phrase is named
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, terms)) + r")\b")
    leaks = [(i, m.group(0)) for i, text in enumerate(texts) if (m := pattern.search(_words(text)))]
    if not leaks:
        return
    i, word = leaks[0]
    row = cases.iloc[i]
    source = f"source {str(row['source'])!r}, " if "source" in cases.columns else ""
    case = str(row["case_id"]) if "case_id" in cases.columns else f"row {i}"
    text = str(texts[i])
    shown = text if len(text) <= _SHOWN_TEXT else text[:_SHOWN_TEXT - 3] + "..."
    more = f" (and {len(leaks) - 1} more of {len(texts)} queries)" if len(leaks) > 1 else ""
    raise DermretrError(
        f"query text names the answer: {source}case {case!r}: {word!r} in {shown!r}{more}; queries must hold "
        "findings only, never a diagnosis, its group or a synonym (case_text(..., view='findings'))"
    )


def case_search(retriever, cases: pd.DataFrame, query_split: str = "test",
                gallery_splits: Sequence[str] = ("train", "val"), relevant: str = "diagnosis_group",
                ks: Sequence[int] = (1, 5, 10), alpha: float | None = None, text_style: str = "terse",
                batch_size: int = 64, progress: bool = False, gallery: dict | None = None,
                queries: dict | None = None, ties: str = "stable") -> tuple[pd.DataFrame, dict[str, float]]:
    """The "case" protocol: test image + its findings text against the train+val gallery.

    Parameters
    ----------
    retriever : Retriever
        Anything with ``encode_queries``/``encode_targets`` like
        :class:`~dermretr.models.retriever.Retriever`.
    cases : DataFrame
        A validated case table.
    query_split, gallery_splits : str
        Where queries and gallery come from.
    relevant : {"diagnosis_group", "diagnosis"}
        Relevant = same value of this column.
    alpha : float, optional
        Override the weight of local evidence.
    gallery : dict, optional
        Pre-computed ``encode_targets`` of the gallery rows (in table order).
    queries : dict, optional
        Pre-computed ``encode_queries`` of the query rows (in table order,
        with their :func:`~dermretr.data.vocab.case_text`, ``view="findings"``;
        such texts are not checked by :func:`check_query_text`).
    ties : {"stable", "pessimistic", "optimistic"}
        Order of equal scores (see :func:`rank_metrics`).

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (with the query's :data:`QUERY_COLUMNS`, and ``ita``
        etc. when present) and their means over queries with a relevant case.

    Examples
    --------
    A stand-in retriever whose embeddings are one-hot diagnosis groups:

    >>> class OneHot:
    ...     def encode(self, paths, *_, **__):
    ...         return {"global": np.array([[p.startswith("M"), p.startswith("N")] for p in paths], float),
    ...                 "local": None, "alpha": 0.0}
    ...     encode_queries = encode_targets = encode
    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("pqrs"),
    ...     "image_path": ["M1", "N2", "M3", "N4"], "diagnosis": ["mel", "nev", "mel", "nev"],
    ...     "diagnosis_group": ["MEL", "NEV", "MEL", "NEV"], "split": ["train", "train", "test", "test"],
    ...     "fitzpatrick": [1, 2, 3, 4], "monk": pd.NA})
    >>> per_query, summary = case_search(OneHot(), cases, ks=(1,))
    >>> summary["recall@1"], per_query["case_id"].tolist()
    (1.0, ['c', 'd'])
    """
    if relevant not in _RELEVANT:
        raise DermretrError(f"relevant must be 'diagnosis_group' or 'diagnosis', got {relevant!r}")
    q, g, s, exclude = case_scores(retriever, cases, query_split, gallery_splits, alpha=alpha, text_style=text_style,
                                   batch_size=batch_size, progress=progress, queries=queries, gallery=gallery)
    per_query = scores_search(q, g, s, exclude, relevant=relevant, ks=ks, ties=ties)
    return per_query, summarize_metrics(per_query)


def scores_search(q: pd.DataFrame, g: pd.DataFrame, scores: np.ndarray, exclude: np.ndarray,
                  relevant: str = "diagnosis_group", ks: Sequence[int] = (1, 5, 10),
                  ties: str = "stable") -> pd.DataFrame:
    """Per-query metrics of the "case" protocol for scores computed elsewhere.

    ``q, g, scores, exclude`` are :func:`case_scores`' output, the scores
    possibly changed (e.g. fused with
    :func:`dermretr.floors.criteria_scores`); relevant = same value of
    ``relevant``, as in :func:`case_search`.

    >>> q = pd.DataFrame({"case_id": ["a"], "patient_id": ["p"], "diagnosis_group": ["MEL"]})
    >>> g = pd.DataFrame({"case_id": ["b", "c"], "patient_id": ["q", "r"], "diagnosis_group": ["NEV", "MEL"]})
    >>> scores_search(q, g, np.array([[0.9, 0.1]]), np.zeros((1, 2), bool), ks=(1,))[["case_id", "recall@1", "mrr"]]
      case_id  recall@1  mrr
    0       a       0.0  0.5
    """
    scores = np.asarray(scores)
    if scores.shape != (len(q), len(g)):
        raise DermretrError(f"scores {scores.shape} do not fit {len(q)} queries and {len(g)} gallery cases")
    rel = _case_relevance(q, g, relevant)
    return _attach(_query_columns(q), rank_metrics(scores, rel, exclude, ks=ks, ties=ties))


def case_scores(retriever, cases: pd.DataFrame, query_split: str = "test",
                gallery_splits: Sequence[str] = ("train", "val"), alpha: float | None = None,
                text_style: str = "terse", batch_size: int = 64, progress: bool = False,
                queries: dict | None = None, gallery: dict | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Queries, gallery, scores ``[Q, G]`` and excluded pairs of the "case" protocol.

    The one place that decides what the protocol compares: a query is a
    ``query_split`` case's image plus its findings text
    (:func:`~dermretr.data.vocab.case_text`, ``view="findings"``, checked by
    :func:`check_query_text`: a text naming a diagnosis is an error), the
    gallery is ``gallery_splits``, and a query's own case and every case of
    its patient are excluded.  :func:`case_search` and
    :func:`dermretr.fairness.retrieve_topk` build on it.

    >>> class Same:
    ...     def encode_queries(self, paths, texts, **_): return {"global": np.ones((len(paths), 2)), "local": None}
    ...     encode_targets = lambda self, paths, **_: {"global": np.ones((len(paths), 2)), "local": None}
    >>> cases = pd.DataFrame({"case_id": list("abc"), "patient_id": list("ppq"), "image_path": list("xyz"),
    ...                       "diagnosis": "x", "diagnosis_group": "X", "split": ["train", "train", "test"]})
    >>> q, g, s, exclude = case_scores(Same(), cases)
    >>> s.shape, exclude.tolist()
    ((1, 2), [[False, False]])
    """
    from .models.retriever import convex_score

    q, g, exclude = _case_pairs(cases, query_split, gallery_splits)
    if queries is None:
        texts = [case_text(row, style=text_style, seed=None, view="findings") for _, row in q.iterrows()]
        check_query_text(q, texts)
        _warn_if_only_skin_type(q)
        queries = retriever.encode_queries(q["image_path"].tolist(), texts, batch_size=batch_size, progress=progress)
    if gallery is None:
        gallery = retriever.encode_targets(g["image_path"].tolist(), batch_size=batch_size, progress=progress)
    if len(queries["global"]) != len(q) or len(gallery["global"]) != len(g):
        raise DermretrError(
            f"pre-computed encodings do not fit: {len(queries['global'])} queries for {len(q)} query cases, "
            f"{len(gallery['global'])} targets for {len(g)} gallery cases"
        )
    s, _, _ = convex_score(queries, gallery, alpha=alpha)
    return q, g, np.asarray(s), exclude


def _warn_if_only_skin_type(q: pd.DataFrame) -> None:
    """Warn when the queries' findings say nothing but the skin type (Fitzpatrick17k, DDI): their "composed"
    case queries are image plus skin type, and the composed question the source can answer is the tone one."""
    if "findings" not in q.columns or not len(q) or any(criteria_of(row) for _, row in q.head(50).iterrows()):
        return
    findings = q["findings"].fillna("").astype(str)
    if (findings.str.strip() != "").any() and (findings.map(strip_tone).str.strip() == "").all():
        source = f"source {q['source'].iloc[0]!r}" if "source" in q.columns else "these cases"
        warnings.warn(f"the findings of {source} name only the skin type: case queries are in effect image plus "
                      "skin type; its composed question is the tone protocol (--protocol tone)", stacklevel=3)


def _case_pairs(cases: pd.DataFrame, query_split: str, gallery_splits: Sequence[str]
                ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Queries, gallery and excluded pairs (own case, same patient) of the "case" protocol."""
    split = cases["split"].astype(str)
    q = cases[split == query_split].reset_index(drop=True)
    g = cases[split.isin(list(gallery_splits))].reset_index(drop=True)
    if len(q) == 0 or len(g) == 0:
        raise DermretrError(
            f"case search needs queries in split {query_split!r} ({len(q)}) and a gallery in {list(gallery_splits)} "
            f"({len(g)})"
        )
    exclude = _same(q["case_id"].astype(str).to_numpy(), g["case_id"].astype(str).to_numpy()) | _same(
        q["patient_id"].astype(str).to_numpy(), g["patient_id"].astype(str).to_numpy())
    return q, g, exclude


def _case_relevance(q: pd.DataFrame, g: pd.DataFrame, relevant: str) -> np.ndarray:
    """Relevance ``[Q, G]`` of the "case" protocol: same (known) value of column ``relevant``."""
    if relevant not in _RELEVANT:
        raise DermretrError(f"relevant must be 'diagnosis_group' or 'diagnosis', got {relevant!r}")
    labels_q, labels_g = q[relevant].astype(object).to_numpy(), g[relevant].astype(object).to_numpy()
    return _same(labels_q.astype(str), labels_g.astype(str)) & pd.notna(labels_q)[:, None]


def load_triplets(root: str | os.PathLike) -> pd.DataFrame | None:
    """DermSynth's modification triplets of a dataset folder, or None when it has none.

    Reads ``ROOT/meta/modifications.csv`` (``reference_case_id``,
    ``modification_text``, ``target_case_id``, ``criterion``, ``from_value``,
    ``to_value``...); ``root`` may also be the CSV file itself.

    >>> import tempfile
    >>> load_triplets(tempfile.mkdtemp()) is None
    True
    """
    path = Path(root).expanduser()
    file = path if path.is_file() else path / "meta" / "modifications.csv"
    if not file.is_file():
        return None
    try:
        mods = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DermretrError(f"cannot read modification triplets {file}: {exc}") from None
    missing = [c for c in ("reference_case_id", "modification_text", "target_case_id") if c not in mods.columns]
    if missing:
        raise DermretrError(f"{file} lacks column(s) {missing}; found {list(mods.columns)}")
    return mods


def _known(value) -> bool:
    return value is not None and not (not isinstance(value, str) and pd.isna(value)) and str(value) != ""


def derive_triplets(cases: pd.DataFrame, split: str = "test", seed: int = 0, max_per_case: int = 1,
                    gallery_splits: Sequence[str] | None = None) -> pd.DataFrame:
    """Modification queries for a dataset with 7-point criteria but no triplets.

    For each reference case of ``split`` with known criteria, in table order,
    up to ``max_per_case`` different criteria are drawn (with a generator
    seeded by ``seed``), each with a new value that differs from the
    reference's and that some *eligible* gallery case has: one of
    ``gallery_splits``, of the reference's diagnosis group and of another
    patient.  Those eligible cases with the requested value are the relevant
    ones (:func:`modify_search`), so every derived query has at least one.

    Parameters
    ----------
    cases : DataFrame
        A validated case table.
    split : str
        The references' split.
    seed : int
        Same seed, same triplets.
    max_per_case : int
        Triplets per reference at most.
    gallery_splits : strs, optional
        Default: train and val for test references, train for val references.

    Returns
    -------
    DataFrame
        ``reference_case_id, modification_text, criterion, from_value, to_value``
        (the text comes from :func:`~dermretr.data.vocab.modification_text`).

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": list("abc"), "patient_id": list("pqr"),
    ...     "diagnosis_group": ["NEV"] * 3, "split": ["train", "val", "test"],
    ...     "streaks": ["regular", "irregular", "absent"]})
    >>> derive_triplets(cases)[["reference_case_id", "criterion", "from_value", "to_value"]].to_numpy().tolist()
    [['c', 'streaks', 'absent', 'irregular']]
    """
    if isinstance(max_per_case, bool) or not isinstance(max_per_case, (int, np.integer)) or max_per_case < 1:
        raise DermretrError(f"max_per_case must be a positive integer, got {max_per_case!r}")
    columns = ["reference_case_id", "modification_text", "criterion", "from_value", "to_value"]
    crit_cols = [c for c in CRITERIA if c in cases.columns and cases[c].notna().any()]
    if not crit_cols:
        raise DermretrError(
            "the modify protocol needs modification triplets (DermSynth's meta/modifications.csv) or cases with "
            "known 7-point criteria (e.g. derm7pt); this dataset has neither"
        )
    splits = cases["split"].astype(str)
    gallery_splits = _gallery_splits(split, gallery_splits)
    refs = cases[splits == split]
    gal = cases[splits.isin(list(gallery_splits))]
    g_group = gal["diagnosis_group"].astype(str).to_numpy()
    g_patient = gal["patient_id"].astype(str).to_numpy()
    g_values = {c: gal[c].astype(object).to_numpy() for c in crit_cols}
    # values present per (group, criterion): value -> patients having it
    present: dict[tuple[str, str], dict[str, set[str]]] = {}
    for c in crit_cols:
        for grp, val, pat in zip(g_group, g_values[c], g_patient):
            if _known(val):
                present.setdefault((grp, c), {}).setdefault(str(val), set()).add(pat)
    rng = np.random.default_rng(seed)
    rows = []
    for _, ref in refs.iterrows():
        known = criteria_of(ref)
        grp, pat = str(ref["diagnosis_group"]), str(ref["patient_id"])
        options = {}
        for c in crit_cols:
            if c not in known:
                continue
            values = [v for v in CRITERIA[c] if v != known[c]
                      and (present.get((grp, c), {}).get(v, set()) - {pat})]
            if values:
                options[c] = values
        if not options:
            continue
        names = list(options)
        chosen = rng.permutation(len(names))[:max_per_case]
        for j in sorted(chosen):
            c = names[j]
            new = options[c][int(rng.integers(len(options[c])))]
            text_seed = int(rng.integers(2**31))
            after = dict(known, **{c: new})
            rows.append({"reference_case_id": str(ref["case_id"]),
                         "modification_text": modification_text(known, after, seed=text_seed),
                         "criterion": c, "from_value": known[c], "to_value": new})
    return pd.DataFrame(rows, columns=columns)


def modify_search(retriever, cases: pd.DataFrame, triplets=None, split: str = "test",
                  gallery_splits: Sequence[str] | None = None, ks: Sequence[int] = (1, 5, 10),
                  alpha: float | None = None, seed: int = 0, max_per_case: int = 1, batch_size: int = 64,
                  progress: bool = False, ties: str = "pessimistic") -> tuple[pd.DataFrame, dict[str, float]]:
    """The "modify" protocol: reference image + modification text.

    Parameters
    ----------
    retriever : Retriever
        Anything with ``encode_queries``/``encode_targets``.
    cases : DataFrame
        A validated case table.
    triplets : DataFrame, path or None
        DermSynth-style triplets (``reference_case_id``, ``modification_text``,
        ``target_case_id``), or a dataset folder holding
        ``meta/modifications.csv``: relevant = the exact target; gallery =
        every case except the reference.  Triplets without
        ``target_case_id`` (from :func:`derive_triplets`), or None (or a
        folder without the file) to derive them: relevant = gallery cases of
        ``gallery_splits`` with the requested criterion value and the
        reference's diagnosis group; the reference's patient is excluded.
    split : str
        References come from this split.
    gallery_splits : strs, optional
        Gallery of derived triplets (default: train+val for test references).
    seed, max_per_case
        Passed to :func:`derive_triplets`.
    ties : {"pessimistic", "stable", "optimistic"}
        Order of equal scores (see :func:`rank_metrics`).

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (the reference's :data:`QUERY_COLUMNS`, the triplet's
        columns, ``n_relevant`` and the metrics) and their means.

    Examples
    --------
    A stand-in retriever that maps a query straight onto its target:

    >>> class Oracle:
    ...     def encode_targets(self, paths, **_):
    ...         return {"global": np.eye(3)[[int(p) for p in paths]], "local": None, "alpha": 0.0}
    ...     def encode_queries(self, paths, texts, **_):
    ...         return {"global": np.eye(3)[[int(t[-1]) for t in texts]], "local": None, "alpha": 0.0}
    >>> cases = pd.DataFrame({"case_id": list("abc"), "patient_id": ["p", "p", "q"],
    ...     "image_path": ["0", "1", "2"], "diagnosis": "x", "diagnosis_group": "X", "split": "test"})
    >>> mods = pd.DataFrame({"reference_case_id": ["a", "b"], "modification_text": ["to 1", "to 0"],
    ...                      "target_case_id": ["b", "a"]})
    >>> per_query, summary = modify_search(Oracle(), cases, mods, ks=(1,))
    >>> summary["recall@1"], per_query["n_relevant"].tolist()
    (1.0, [1, 1])
    """
    from .models.retriever import convex_score

    _check_split(cases, split)
    if triplets is not None and not isinstance(triplets, pd.DataFrame):
        triplets = load_triplets(triplets)
    exact = triplets is not None and "target_case_id" in triplets.columns
    if triplets is None:
        triplets = derive_triplets(cases, split=split, seed=seed, max_per_case=max_per_case,
                                   gallery_splits=gallery_splits)
    needed = ("reference_case_id", "modification_text") + (() if exact else ("criterion", "to_value"))
    missing = [c for c in needed if c not in triplets.columns]
    if missing:
        raise DermretrError(f"modification triplets lack column(s) {missing}; found {list(triplets.columns)}")
    ids = cases["case_id"].astype(str).to_numpy()
    pos = {cid: i for i, cid in enumerate(ids)}
    splits = cases["split"].astype(str).to_numpy()
    t = triplets.astype({"reference_case_id": str}).reset_index(drop=True)
    keep = t["reference_case_id"].map(lambda c: c in pos and splits[pos[c]] == split).to_numpy(dtype=bool)
    if exact:
        t = t.astype({"target_case_id": str})
        keep = keep & t["target_case_id"].isin(pos).to_numpy()
    t = t[keep].reset_index(drop=True)
    if len(t) == 0:
        what = "modification triplets" if exact else "derivable modification queries (criteria changes)"
        raise DermretrError(f"no {what} with a reference in split {split!r} and their cases in the dataset")
    ref_idx = t["reference_case_id"].map(pos).to_numpy(dtype=int)
    q = cases.iloc[ref_idx].reset_index(drop=True)
    if exact:
        g_idx = np.arange(len(cases))
        rel = np.zeros((len(t), len(g_idx)), dtype=bool)
        rel[np.arange(len(t)), t["target_case_id"].map(pos).to_numpy(dtype=int)] = True
        exclude = np.zeros_like(rel)
        exclude[np.arange(len(t)), ref_idx] = True
    else:
        g_idx = np.flatnonzero(np.isin(splits, list(_gallery_splits(split, gallery_splits))))
        if len(g_idx) == 0:
            raise DermretrError(
                f"the modify protocol needs gallery cases in {list(_gallery_splits(split, gallery_splits))}")
        g = cases.iloc[g_idx]
        rel = _same(q["diagnosis_group"].astype(str).to_numpy(), g["diagnosis_group"].astype(str).to_numpy())
        unknown = sorted(set(t["criterion"].astype(str)) - (set(CRITERIA) & set(cases.columns)))
        if unknown:
            raise DermretrError(f"modification triplets name criteria {unknown} that are not 7-point criteria "
                                f"columns of the case table; use one of {sorted(set(CRITERIA) & set(cases.columns))}")
        for c in t["criterion"].unique():
            rows = (t["criterion"] == c).to_numpy()
            gv = g[c].astype(object).to_numpy()
            gv = np.array([str(v) if _known(v) else "\0" for v in gv], dtype=object)
            rel[rows] &= _same(t.loc[rows, "to_value"].astype(str).to_numpy(), gv)
        exclude = _same(q["patient_id"].astype(str).to_numpy(), g["patient_id"].astype(str).to_numpy()) | _same(
            q["case_id"].astype(str).to_numpy(), g["case_id"].astype(str).to_numpy())
    texts = t["modification_text"].tolist()
    check_query_text(q, texts)
    gallery_paths = cases["image_path"].iloc[g_idx].tolist()
    qe = retriever.encode_queries(q["image_path"].tolist(), texts, batch_size=batch_size, progress=progress)
    ge = retriever.encode_targets(gallery_paths, batch_size=batch_size, progress=progress)
    s, _, _ = convex_score(qe, ge, alpha=alpha)
    extra = [c for c in ("modification_text", "criterion", "from_value", "to_value", "target_case_id")
             if c in t.columns]
    info = pd.concat([_query_columns(q), t[extra]], axis=1)
    per_query = _attach(info, rank_metrics(s, rel, exclude, ks=ks, ties=ties))
    return per_query, summarize_metrics(per_query)


# ----------------------------------------------------------------------------- tone protocol

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
        :func:`dermretr.fairness.estimate_skin_tone`).  A missing column
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
    from .color import ita_category

    if scale not in TONE_SCALES:
        raise DermretrError(f"unknown skin-tone scale {scale!r}; scales: {', '.join(TONE_SCALES)}")
    out = np.full(len(cases), None, dtype=object)
    for column in TONE_COLUMNS[scale]:
        if column not in cases.columns:
            continue
        values = cases[column].astype(object).to_numpy()
        if column == "ita_estimated":
            values = [ita_category(float(v)) if pd.notna(v) and np.isfinite(float(v)) else None for v in values]
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
    from .fairness import estimate_skin_tone

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
    if relevant not in _RELEVANT:
        raise DermretrError(f"relevant must be 'diagnosis_group' or 'diagnosis', got {relevant!r}")
    if style not in TONE_STYLES:
        raise DermretrError(f"unknown tone style {style!r}; styles: {', '.join(TONE_STYLES)}")
    _check_split(cases, split)
    gallery_splits = _gallery_splits(split, gallery_splits)
    q, g, exclude = _case_pairs(cases, split, gallery_splits)
    q_range, g_range = tone_ranges(q, scale), tone_ranges(g, scale)
    _check_tone_labels(cases, np.concatenate([q_range, g_range]), scale)
    names = list(TONE_RANGES[scale])
    base = _case_relevance(q, g, relevant) & ~exclude
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
    info = _query_columns(rows).assign(query_range=q_range[qi], target_range=targets)
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
        :func:`dermretr.fairness.estimate_skin_tone`).
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
    from .models.retriever import convex_score

    tq = queries if queries is not None else tone_queries(cases, split, gallery_splits, scale=scale,
                                                          relevant=relevant, style=style, text_style=text_style)
    if tq.texts is None:
        raise DermretrError("tone queries built with texts=False cannot be searched; build them with texts=True")
    ks = _check_ks(ks)
    qe = retriever.encode_queries(tq.rows["image_path"].tolist(), tq.texts, batch_size=batch_size,
                                  progress=progress)
    ge = retriever.encode_targets(tq.gallery["image_path"].tolist(), batch_size=batch_size, progress=progress)
    s, _, _ = convex_score(qe, ge, alpha=alpha)
    per_query = _attach(tq.info, rank_metrics(s, tq.relevant, tq.exclude, ks=ks, ties=ties))
    per_query.attrs["skipped"] = dict(tq.skipped)
    summary = summarize_metrics(per_query)
    summary.update(n_skipped=tq.skipped["no_relevant"], n_unknown_tone=tq.skipped["unknown_tone"])
    return per_query, summary


# ----------------------------------------------------------------------------- run folders


def run_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The best checkpoint of a run folder, ``RUN_DIR/checkpoints/best.pt``, checked to exist.

    >>> import tempfile
    >>> run_checkpoint(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: run folder ... has no checkpoint: .../checkpoints/best.pt not found ...
    """
    run = Path(run_dir).expanduser()
    if run.is_file():
        folder = run.parent.parent if run.parent.name == "checkpoints" else None
        hint = f" (here {folder})" if folder is not None else ""
        raise DermretrError(f"{run} is a file, not a run folder: pass the folder that `dermretr train --out` "
                            f"wrote, the one holding checkpoints/{hint}")
    if not run.is_dir():
        raise DermretrError(f"run folder {run} not found (train one with `dermretr train --out {run}`)")
    ckpt = run / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        if (run / "checkpoints" / "last.pt").is_file() and not ckpt.exists():
            raise DermretrError(f"run folder {run} has no checkpoint: {ckpt} not found; the training stopped before "
                                "writing it: continue it with `dermretr train --resume` and the same options")
        what = "is not a file" if ckpt.exists() else "not found"
        raise DermretrError(
            f"run folder {run} has no checkpoint: {ckpt} {what} (is it a finished `dermretr train` run?)"
        )
    try:
        empty = ckpt.stat().st_size == 0
    except OSError as exc:
        raise DermretrError(f"cannot read {ckpt}: {exc.strerror or exc}") from None
    if empty:
        raise DermretrError(f"{ckpt} is empty (an interrupted copy?); copy the run again or train it again")
    return ckpt


def _load_data(data) -> tuple[pd.DataFrame, Path | None]:
    if isinstance(data, pd.DataFrame):
        return data, None
    from .data import load, parse_spec

    source, path = parse_spec(str(data))
    root = Path(path).expanduser()
    return load(source, root), root


def evaluate_run(run_dir: str | os.PathLike, data, protocol: str = "case", *, triplets=None,
                 split: str = "test", relevant: str = "diagnosis_group", ks: Sequence[int] = (1, 5, 10),
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0, alpha: float | None = None,
                 batch_size: int = 64, device: str = "auto", progress: bool = False, name: str | None = None,
                 retriever=None, by: str | None = None, tone_scale: str = "fitzpatrick",
                 tone_style: str = "scale") -> tuple[pd.DataFrame, list[dict]]:
    """Evaluate one run folder: per-query metrics and the records of ``metrics.json``.

    Parameters
    ----------
    run_dir : path
        A ``dermretr train`` run; ``RUN_DIR/checkpoints/best.pt`` is loaded.
    data : str or DataFrame
        ``"SOURCE:PATH"`` (triplets are then read from ``PATH/meta/modifications.csv``
        when it exists) or an already loaded case table.
    protocol : {"case", "modify", "tone"}
        See :func:`case_search`, :func:`modify_search` and :func:`tone_search`.
    triplets : DataFrame or path, optional
        Modification triplets for ``protocol="modify"`` (default: the data
        folder's, else derived from the criteria).
    split : str
        The query split (``"test"``; ``"val"`` searches the train gallery).
    relevant : {"diagnosis_group", "diagnosis"}
        Relevance of the case and tone protocols.
    ks, n_boot, level, seed
        Cut-offs and the bootstrap (``seed`` also derives triplets).
    alpha, batch_size, device, progress
        Scoring and encoding options.
    name : str, optional
        The run's name in the records (default: the folder's name).
    retriever : Retriever, optional
        Use this model instead of loading the checkpoint.
    by : str, optional
        Query column whose classes the macro records average over (default:
        ``target_range`` for the tone protocol, ``diagnosis_group`` else).
    tone_scale, tone_style
        ``scale`` and ``style`` of :func:`tone_search`; ``tone_scale="ita"``
        estimates skin tone from the pixels
        (:func:`dermretr.fairness.estimate_skin_tone`) when ``data`` has no
        estimate yet.

    Returns
    -------
    (DataFrame, list of dict)
        Per-query metrics (with ``run``, ``method`` and ``protocol`` columns
        first) and the records of :func:`metric_records` (micro, then macro
        over ``by``).  Equal scores are ranked pessimistically (relevant
        cases last); compare with the non-learned floors of
        :func:`dermretr.floors.evaluate_floors`.

    Examples
    --------
    >>> evaluate_run("no/such/run", "synthetic:/nowhere")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: run folder no/such/run not found (train one with `dermretr train --out no/such/run`)
    """
    if protocol not in PROTOCOLS:
        raise DermretrError(f"unknown protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    if relevant not in _RELEVANT:
        raise DermretrError(f"relevant must be 'diagnosis_group' or 'diagnosis', got {relevant!r}")
    ks = _check_ks(ks)
    _check_boot(n_boot, level)
    _check_seed(seed)
    ckpt = run_checkpoint(run_dir) if retriever is None else None
    cases, root = _load_data(data)
    _check_split(cases, split)
    gallery_splits = _gallery_splits(split, None)
    tq = None
    if protocol == "tone":  # bad data fails before the model is loaded
        cases = with_tone_estimate(cases, tone_scale, progress=progress)
        tq = tone_queries(cases, split, gallery_splits, scale=tone_scale, relevant=relevant, style=tone_style)
    if protocol == "modify" and triplets is None:
        triplets = load_triplets(root) if root is not None else None
        if triplets is None:  # derive now: bad data fails before the model is loaded
            triplets = derive_triplets(cases, split=split, seed=seed, gallery_splits=gallery_splits)
            if len(triplets) == 0:
                raise DermretrError(
                    f"no modification queries can be derived: no {split} case has a known criterion value that "
                    f"differs from a {'/'.join(gallery_splits)} case of its diagnosis group"
                )
    if retriever is None:
        from .models.retriever import Retriever

        retriever = Retriever.load(ckpt, device=device)
    method = str(getattr(retriever, "kind", "unknown"))
    run = name if name is not None else (Path(run_dir).expanduser().name or str(run_dir))
    if protocol == "case":
        per_query, _ = case_search(retriever, cases, query_split=split, gallery_splits=gallery_splits,
                                   relevant=relevant, ks=ks, alpha=alpha, batch_size=batch_size, progress=progress,
                                   ties="pessimistic")
    elif protocol == "tone":
        per_query, _ = tone_search(retriever, cases, split, gallery_splits, scale=tone_scale, relevant=relevant,
                                   ks=ks, alpha=alpha, style=tone_style, batch_size=batch_size, progress=progress,
                                   ties="pessimistic", queries=tq)
    else:
        per_query, _ = modify_search(retriever, cases, triplets, split=split, gallery_splits=gallery_splits, ks=ks,
                                     alpha=alpha, seed=seed, batch_size=batch_size, progress=progress,
                                     ties="pessimistic")
    records = metric_records(per_query, run, method, protocol, n_boot=n_boot, level=level, seed=seed, by=by)
    per_query.insert(0, "protocol", protocol)
    per_query.insert(0, "method", method)
    per_query.insert(0, "run", run)
    return per_query, records
