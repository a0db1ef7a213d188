"""Non-learned rankings ("floors") of the case, modify and tone protocols: see :mod:`dermretr.evaluate`."""

from __future__ import annotations

from .evaluate._expected import expected_random_metrics, expected_tie_metrics
from .evaluate._floors import (
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

__all__ = ["FLOORS", "MODIFY_FLOORS", "TONE_FLOORS", "FLOOR_TIES", "floor_search", "modify_floor_search",
           "tone_floor_search", "evaluate_floors", "expected_random_metrics", "expected_tie_metrics",
           "criteria_scores", "findings_columns", "available_floors"]
