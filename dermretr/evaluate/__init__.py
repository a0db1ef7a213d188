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
micro one.  Non-learned floors (random, majority first, criteria match; for
every protocol) have the same per-query tables: see :mod:`dermretr.floors`.

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
"average", "metric", "k", "value", "ci_low", "ci_high", "n_queries", "split_source"}``
with percentile bootstrap intervals (:func:`bootstrap_ci`; ``split_source`` says where
the data's split came from, :func:`dermretr.data.split_source`); :func:`results_table`
prints them, :func:`write_metrics` writes them as ``metrics.json``.  A ``"SOURCE:PATH"``
is loaded with the loader options the run was trained with (:func:`data_options_for`).

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

from ..stats import AVERAGES, bootstrap_ci, paired_difference
from ._case import case_scores, case_search, scores_search
from ._common import PROTOCOLS, QUERY_COLUMNS, data_options_for, load_data
from ._expected import expected_random_metrics, expected_tie_metrics
from ._floors import (
    FLOOR_TIES,
    FLOORS,
    MODIFY_FLOORS,
    TONE_FLOORS,
    available_floors,
    criteria_scores,
    evaluate_floors,
    findings_columns,
    floor_search,
    modify_floor_search,
    tone_floor_search,
)
from ._hybrid import FINDINGS_WEIGHTS, check_findings_weight, choose_findings_weight, hybrid_scores
from ._leak import check_query_text
from ._metrics import METRICS, RECORD_METRICS, TIES, rank_metrics, summarize_metrics
from ._modify import ModifyQueries, derive_triplets, load_triplets, modify_queries, modify_search
from ._records import (
    RECORD_KEYS,
    is_metrics_file,
    is_per_query_file,
    metric_records,
    per_class,
    results_table,
    write_metrics,
)
from ._runs import evaluate_run, run_checkpoint
from ._tone import (
    TONE_COLUMNS,
    ToneQueries,
    tone_queries,
    tone_ranges,
    tone_scores,
    tone_scores_search,
    tone_search,
    with_tone_estimate,
)

__all__ = [
    "rank_metrics",
    "summarize_metrics",
    "bootstrap_ci",
    "paired_difference",
    "case_search",
    "case_scores",
    "check_query_text",
    "scores_search",
    "hybrid_scores",
    "choose_findings_weight",
    "check_findings_weight",
    "FINDINGS_WEIGHTS",
    "modify_search",
    "modify_queries",
    "ModifyQueries",
    "derive_triplets",
    "load_triplets",
    "tone_search",
    "tone_scores",
    "tone_scores_search",
    "tone_queries",
    "tone_ranges",
    "with_tone_estimate",
    "ToneQueries",
    "TONE_COLUMNS",
    "evaluate_run",
    "run_checkpoint",
    "load_data",
    "data_options_for",
    "metric_records",
    "per_class",
    "results_table",
    "write_metrics",
    "is_metrics_file",
    "is_per_query_file",
    "METRICS",
    "RECORD_METRICS",
    "RECORD_KEYS",
    "AVERAGES",
    "PROTOCOLS",
    "TIES",
    "QUERY_COLUMNS",
    # the non-learned floors (also at dermretr.floors)
    "FLOORS",
    "MODIFY_FLOORS",
    "TONE_FLOORS",
    "FLOOR_TIES",
    "floor_search",
    "modify_floor_search",
    "tone_floor_search",
    "evaluate_floors",
    "expected_random_metrics",
    "expected_tie_metrics",
    "criteria_scores",
    "findings_columns",
    "available_floors",
]
