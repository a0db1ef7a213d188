"""Faithfulness of attributions, measured rather than assumed: deletion curves and model randomisation.

The localisation checks against ground-truth masks live in
:mod:`dermretr.explain` (:func:`~dermretr.explain.localisation_score` and
friends); every name here is also available from :mod:`dermretr.explain`.
"""

from __future__ import annotations

from ._deletion import DeletionCurve, deletion_curve, pair_deletion_curve
from ._randomisation import RandomisationCheck, compare_attributions, randomisation_check

__all__ = [
    "DeletionCurve",
    "RandomisationCheck",
    "deletion_curve",
    "pair_deletion_curve",
    "compare_attributions",
    "randomisation_check",
]
