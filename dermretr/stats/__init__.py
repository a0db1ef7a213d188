"""Statistics of per-query metric tables: macro means, bootstrap intervals and paired comparisons.

Macro means over classes, percentile bootstrap intervals (plain and stratified by class), the checks and
pairing of per-query tables, and the paired comparison of two runs (bootstrap interval of the difference and a
sign-flip permutation test), and the resampling statistics of group means used by the fairness slices
(stratified bootstrap, simultaneous gap intervals, permutation tests, Holm's adjustment, and group means
directly standardised to a common mix of strata, with their cell bootstrap and stratified permutation test).

The *macro* mean of per-query values is the mean over classes (diagnosis groups) of each class's mean, so a rare
class weighs as much as a common one; the *micro* mean is the plain mean over queries.  The macro mean is a
weighted mean, ``sum_i w_i x_i`` with ``w_i = 1 / (n_classes * n_class(i))``; its bootstrap resamples queries
*within* each class (a stratified bootstrap), and its sign-flip test flips ``w_i d_i``.

Examples
--------
>>> import numpy as np
>>> codes, labels = class_codes(["NEV", "NEV", "NEV", "MEL"])
>>> codes.tolist(), labels
([1, 1, 1, 0], ['MEL', 'NEV'])
>>> float(macro_mean(np.array([1.0, 1.0, 1.0, 0.0]), codes)[0])  # micro mean: 0.75
0.5
"""

from __future__ import annotations

from ._groups import (
    basic_interval,
    gap_intervals,
    group_bootstrap_means,
    group_gap,
    holm_adjust,
    means_by_group,
    paired_gap_change_p,
    permutation_gap_p,
    simultaneous_halfwidths,
    standardised_bootstrap_means,
    standardised_means,
    stratified_permutation_gap_p,
)
from ._macro import (
    AVERAGES,
    check_average,
    class_codes,
    class_weights,
    column_classes,
    macro_by,
    macro_mean,
    stratified_means,
)
from ._paired import bootstrap_ci, paired_difference, sign_flip_p
from ._tables import as_text, check_metrics, check_per_query, metric_columns, pair_tables

__all__ = [
    "AVERAGES",
    "check_average",
    "macro_by",
    "column_classes",
    "class_codes",
    "class_weights",
    "macro_mean",
    "stratified_means",
    "as_text",
    "metric_columns",
    "check_per_query",
    "check_metrics",
    "pair_tables",
    "bootstrap_ci",
    "sign_flip_p",
    "paired_difference",
    "means_by_group",
    "group_gap",
    "group_bootstrap_means",
    "basic_interval",
    "permutation_gap_p",
    "paired_gap_change_p",
    "simultaneous_halfwidths",
    "gap_intervals",
    "holm_adjust",
    "standardised_means",
    "standardised_bootstrap_means",
    "stratified_permutation_gap_p",
]
