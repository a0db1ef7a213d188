"""Argument validation shared by every layer: the one home of the small checks.

Every check raises :class:`~dermretr._errors.DermretrError` with a one-line
message that names the argument, what it must be and the value it got, so the
command line can print it without a traceback.

Examples
--------
>>> check_int(5, "k")
5
>>> check_int(True, "k")
Traceback (most recent call last):
    ...
dermretr._errors.DermretrError: k must be a positive integer, got True
>>> check_alpha(0.25)
0.25
>>> check_choice("average", "macro", ("micro", "macro"))
'macro'
>>> parse_metric("map@10"), parse_metric("mrr")
(('map', 10), ('mrr', None))
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import Any, TypeGuard

import numpy as np

from ._errors import DermretrError

__all__ = [
    "METRIC_RE",
    "RANK_METRICS",
    "is_int",
    "is_real",
    "show",
    "check_int",
    "check_seed",
    "check_alpha",
    "check_choice",
    "check_boot",
    "check_level",
    "parse_metric",
    "metric_cutoffs",
]

#: The ranked-retrieval metrics that take a cut-off K (``recall@10``); ``mrr`` takes none.
RANK_METRICS: tuple[str, ...] = ("recall", "precision", "map", "ndcg")

#: The metric-name grammar: ``recall@K``, ``precision@K``, ``map@K``, ``ndcg@K`` (K >= 1) or ``mrr``.
METRIC_RE = re.compile(r"^(recall|precision|map|ndcg)@([1-9][0-9]*)$|^mrr$")


def is_int(value: Any) -> TypeGuard[int | np.integer]:
    """True for a Python or NumPy integer, False for a bool (``True`` is not a count).

    >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
    (True, True, False, False)
    """
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """True for a real number (int, float, NumPy scalar or 0-d array), False for a bool.

    >>> is_real(0.5), is_real(np.float32(1)), is_real(True), is_real("0.5")
    (True, True, False, False)
    """
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "fiu"
    return isinstance(value, numbers.Real)


def show(value: Any, limit: int = 60) -> str:
    """``repr`` of a value for an error message, with its type when that helps, cut to ``limit`` characters.

    >>> show("x" * 100, limit=10)
    "'xxxxxx..."
    """
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if not isinstance(value, (str, int, float, bool, type(None), list, dict, tuple)):
        text = f"{text} ({type(value).__name__})"
    return text


def _int_phrase(minimum: int | None, maximum: int | None) -> str:
    if maximum is not None:
        low = "" if minimum is None else f"{minimum} "
        return f"an integer from {low}to {maximum}" if minimum is not None else f"an integer of at most {maximum}"
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    if minimum is None:
        return "an integer"
    return f"an integer of at least {minimum}"


def check_int(value: Any, name: str, minimum: int | None = 1, maximum: int | None = None, *,
              what: str | None = None, allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` when it is an integer (not a bool) in ``[minimum, maximum]``.

    ``what`` overrides the description in the message ("an integer of at least
    16 pixels"); ``allow_none`` lets ``None`` through (returned as is).

    >>> check_int(np.int32(3), "n", minimum=0)
    3
    >>> check_int(None, "max_side", allow_none=True) is None
    True
    >>> check_int(8, "thumb", minimum=16)
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: thumb must be an integer of at least 16, got 8
    """
    if value is None and allow_none:
        return None
    if (not is_int(value) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        phrase = what or _int_phrase(minimum, maximum)
        if allow_none and what is None:
            phrase += " or None"
        raise DermretrError(f"{name} must be {phrase}, got {value!r}")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A random seed: a whole number >= 0.

    >>> check_seed(0)
    0
    """
    if not is_int(seed) or seed < 0:
        raise DermretrError(f"{name} must be a whole number >= 0, got {seed!r}")
    return int(seed)


def check_alpha(alpha: Any) -> float:
    """The weight of local evidence in the convex score, a number in [0, 1].

    >>> check_alpha(1)
    1.0
    >>> check_alpha(1.5)
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: alpha (the weight of local evidence) must be in [0, 1], got 1.5
    """
    if not is_real(alpha):
        raise DermretrError(f"alpha (the weight of local evidence) must be a number in [0, 1], got {show(alpha)}")
    a = float(alpha)
    if not 0.0 <= a <= 1.0 or math.isnan(a):
        raise DermretrError(f"alpha (the weight of local evidence) must be in [0, 1], got {alpha}")
    return a


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices``; otherwise an error listing them.

    >>> check_choice("side", "left", ("query", "target"))
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: unknown side 'left'; choose one of: query, target
    """
    try:
        known = value in choices
    except TypeError:  # an unhashable value asked of a set
        known = False
    if not known:
        raise DermretrError(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, choices))}")
    return value


def check_level(level: Any) -> float:
    """A confidence level strictly between 0 and 1.

    >>> check_level(0.95)
    0.95
    """
    try:
        out = float(level)
    except (TypeError, ValueError):
        out = math.nan
    if isinstance(level, (bool, np.bool_)) or not 0.0 < out < 1.0:
        raise DermretrError(f"the confidence level must be between 0 and 1 (e.g. 0.95), got {level!r}")
    return out


def check_boot(n_boot: Any, level: Any = 0.95) -> tuple[int, float]:
    """The size of a bootstrap (a whole number >= 0; 0 means no intervals) and its confidence level.

    >>> check_boot(1000, 0.9)
    (1000, 0.9)
    """
    if not is_int(n_boot) or n_boot < 0:
        raise DermretrError(f"the number of bootstrap resamples must be a non-negative integer, got {n_boot!r}")
    return int(n_boot), check_level(level)


def parse_metric(name: Any) -> tuple[str, int | None]:
    """``(metric, K)`` of a metric name of the grammar :data:`METRIC_RE`; ``K`` is None for ``mrr``.

    >>> parse_metric("ndcg@5")
    ('ndcg', 5)
    >>> parse_metric("recall@0")
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: unknown metric 'recall@0'; use recall@K, precision@K, map@K, ndcg@K or mrr
    """
    match = METRIC_RE.match(name) if isinstance(name, str) else None
    if not match:
        raise DermretrError(f"unknown metric {name!r}; use recall@K, precision@K, map@K, ndcg@K or mrr")
    if match.group(1):
        return match.group(1), int(match.group(2))
    return "mrr", None


def metric_cutoffs(metrics: Sequence[Any]) -> tuple[int, ...]:
    """The sorted cut-offs K named by ``metrics`` (``(1,)`` when only ``mrr`` is asked).

    >>> metric_cutoffs(["map@10", "recall@1", "mrr", "recall@10"])
    (1, 10)
    """
    ks = {k for k in (parse_metric(m)[1] for m in metrics) if k is not None}
    return tuple(sorted(ks)) or (1,)
