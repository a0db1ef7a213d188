"""Fairness slicing by skin tone: per-group metrics with CIs, gaps, exposure and skin tone from pixels.

Retrieval quality is compared across skin tones with honest uncertainty:

* :func:`skin_tone_groups` - one skin-tone group per case: Fitzpatrick I-VI,
  the pairs I-II / III-IV / V-VI (as DDI labels them), Monk 1-10, the ITA
  category of a labelled ``ita`` (DermSynth's ground truth) or of the
  *estimated* ITA.  Missing values form the group ``"unknown"``.
* :func:`slice_metrics` - for a per-query table of :mod:`dermretr.evaluate`,
  each group's mean metric with a percentile bootstrap CI, the overall value,
  the difference (max - min) and ratio (min / max) across groups with a
  stratified bootstrap CI and a permutation p-value; small groups are flagged.
  :func:`format_slices` prints it.
* :func:`case_mix` and :func:`adjusted_gap` - each group's diagnosis mix
  (:func:`format_case_mix` prints it), and the gap after direct
  standardisation to the gap groups' pooled diagnosis mix, with its own CI and
  a stratified permutation p-value: a gap between groups whose case mixes
  differ can be a gap between diagnoses, not skin tones (``slice_metrics``
  warns when a gap group's mix is further than :data:`MIX_THRESHOLD` from the
  pooled one).
* :func:`compare_runs` - two models on the same queries (before / after a
  mitigation): the paired difference per group with CI and p-value, and the
  change of the gap.
* :func:`retrieve_topk` and :func:`exposure` - the skin-tone mix of the
  retrieved top-k per group of queries against the gallery's mix (does
  retrieval drift towards light skin?).
* :func:`gap_uncertainty` - for groups *estimated* from the pixels, how sure
  the gap is: its queries-only interval, an interval that also carries the
  estimate's uncertainty (multiple imputation of each query's group from its
  confidence and patch spread), and sensitivity scenarios that put the
  unknown or doubtful estimates into one group at a time.  ``slice_metrics``
  and ``exposure`` warn (:class:`~dermretr._errors.DataWarning`) when their
  groups are estimated, with the share of unknowns.
* :func:`estimate_ita`, :func:`estimate_skin_tone` - the Individual Typology
  Angle of the non-lesion skin, for datasets without skin-tone labels, mapped
  to an ITA category and an approximate Fitzpatrick type, always labelled
  *estimated*; :func:`ita_confusion` validates it against labels, and
  :func:`skin_mask_agreement` checks its lesion/skin separation against true
  lesion masks (PH2's, DermSynth's).  These pixel tools live in
  :mod:`dermretr.skin_tone` and are re-exported here.
* :func:`plot_slices`, :func:`plot_exposure`, :func:`plot_ita_confusion`,
  :func:`plot_comparison`, :func:`plot_gap_uncertainty` - figures (matplotlib Figures).
* :func:`run_fairness` - all of it for a run folder (``dermretr fairness``).

Queries without any relevant case are left out of every mean, as in
:mod:`dermretr.evaluate`.

Examples
--------
>>> import numpy as np, pandas as pd
>>> pq = pd.DataFrame({"case_id": [f"c{i}" for i in range(8)], "n_relevant": 1,
...                    "fitzpatrick": [1, 1, 2, 2, 5, 5, 6, pd.NA],
...                    "recall@1": [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]})
>>> table = slice_metrics(pq, by="fitzpatrick_pairs", metrics=("recall@1",), n_boot=0, min_group=2)
>>> table.set_index("group")["value"].round(3).to_dict()  # doctest: +NORMALIZE_WHITESPACE
{'I-II': 0.75, 'III-IV': nan, 'V-VI': 0.333, 'unknown': 1.0, 'overall': 0.625,
 'difference (max - min)': 0.417, 'ratio (min / max)': 0.444}
"""

from __future__ import annotations

from ..skin_tone import (
                         ITA_FITZPATRICK,
                         estimate_ita,
                         estimate_skin_tone,
                         ita_to_fitzpatrick,
                         skin_mask,
                         skin_mask_agreement,
)
from ._casemix import MIX_THRESHOLD, adjusted_gap, case_mix, format_case_mix
from ._exposure import exposure, retrieve_topk
from ._groups import GROUPING_TITLES, GROUPINGS, UNKNOWN, ita_agreement, ita_confusion, skin_tone_groups
from ._plots import plot_comparison, plot_exposure, plot_gap_uncertainty, plot_ita_confusion, plot_slices
from ._report import FairnessReport, is_fairness_folder, run_fairness
from ._slicing import compare_runs, format_slices, slice_metrics
from ._uncertainty import LOW_CONFIDENCE, gap_uncertainty

__all__ = [
    "GROUPINGS",
    "GROUPING_TITLES",
    "UNKNOWN",
    "ITA_FITZPATRICK",
    "skin_tone_groups",
    "is_fairness_folder",
    "slice_metrics",
    "format_slices",
    "compare_runs",
    "case_mix",
    "format_case_mix",
    "adjusted_gap",
    "MIX_THRESHOLD",
    "gap_uncertainty",
    "LOW_CONFIDENCE",
    "retrieve_topk",
    "exposure",
    "estimate_ita",
    "skin_mask",
    "skin_mask_agreement",
    "ita_to_fitzpatrick",
    "estimate_skin_tone",
    "ita_confusion",
    "ita_agreement",
    "plot_slices",
    "plot_exposure",
    "plot_ita_confusion",
    "plot_comparison",
    "plot_gap_uncertainty",
    "run_fairness",
    "FairnessReport",
]
