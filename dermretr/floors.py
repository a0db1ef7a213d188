"""Non-learned rankings ("floors") of the case and tone protocols: see :mod:`dermretr.evaluate` (``_floors``)."""

from __future__ import annotations

from .evaluate._floors import (
    FLOOR_TIES,
    FLOORS,
    TONE_FLOORS,
    available_floors,
    criteria_scores,
    evaluate_floors,
    expected_random_metrics,
    expected_tie_metrics,
    findings_columns,
    floor_search,
    tone_floor_search,
)

__all__ = ["FLOORS", "TONE_FLOORS", "FLOOR_TIES", "floor_search", "tone_floor_search", "evaluate_floors",
           "expected_random_metrics", "expected_tie_metrics", "criteria_scores", "findings_columns",
           "available_floors"]
