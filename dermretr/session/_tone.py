"""The skin-tone modifier's arithmetic: which labels a case table has, how many cases each range holds, its filter.

UI-free helpers behind "show it on: darker (V-VI)" of the query builder and of
:class:`~dermretr.session.QuerySession`: Fitzpatrick types when the cases have
them, else Monk tones; the counts and the sentence saying how many database
cases a range holds; the case filter keeping one range.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .._errors import DermretrError
from ..data.vocab import TONE_RANGES, TONE_WORDS, tone_range, tone_text
from ..evaluate import TONE_COLUMNS, tone_ranges

__all__ = ["ANY_SKIN", "NO_TONE_LABELS", "TONE_LABELS", "tone_labels", "labels_of", "tone_target", "tone_counts",
           "count_ranges", "tone_exposure_text", "tone_filter", "range_filter", "tone_note"]

#: Value of the skin-tone modifier that adds no skin tone to the query.
ANY_SKIN = "any"
#: Columns of skin-tone labels the modifier reads, in order of preference: (scale, column); the tone
#: protocol's columns (:data:`dermretr.evaluate.TONE_COLUMNS`) of the labelled scales.
TONE_LABELS: tuple[tuple[str, str], ...] = tuple((scale, column) for scale in ("fitzpatrick", "monk")
                                                 for column in TONE_COLUMNS[scale])
#: Why the modifier is off for a case table without skin-tone labels.
NO_TONE_LABELS = ("the skin-tone modifier needs Fitzpatrick types or Monk tones, and this index's cases have "
                  "none (DermSynth, Fitzpatrick17k, DDI, PAD-UFES-20 and SCIN have them)")


def tone_labels(cases: pd.DataFrame) -> tuple[str, str] | None:
    """The skin-tone labels of a case table the tone modifier uses: ``(scale, column)``, or None.

    Fitzpatrick types (the ``fitzpatrick`` column, else DDI's pairs in
    ``skin_tone_group``) come first, then Monk tones (``monk``); a column
    counts when at least one case has a label in it.

    Examples
    --------
    >>> tone_labels(pd.DataFrame({"fitzpatrick": pd.array([None, 5], dtype="Int64"), "monk": [1, 2]}))
    ('fitzpatrick', 'fitzpatrick')
    >>> tone_labels(pd.DataFrame({"fitzpatrick": pd.array([None], dtype="Int64"), "monk": [9]}))
    ('monk', 'monk')
    >>> tone_labels(pd.DataFrame({"case_id": ["a"]})) is None
    True
    """
    for scale, column in TONE_LABELS:
        if column in cases.columns and any(r is not None for r in tone_ranges(cases[[column]], scale)):
            return scale, column
    return None


def labels_of(cases: pd.DataFrame) -> tuple[str, str]:
    """:func:`tone_labels`, or an error saying the modifier needs them."""
    labels = tone_labels(cases)
    if labels is None:
        raise DermretrError(NO_TONE_LABELS)
    return labels


def tone_target(target: Any, scale: str) -> str | None:
    """A range name of ``scale`` (None for any skin) from a range, a value of the scale or a plain word.

    >>> tone_target("darker", "fitzpatrick"), tone_target(9, "monk"), tone_target("any", "monk")
    ('V-VI', '8-10', None)
    """
    if target is None or (isinstance(target, str) and target.strip().lower() in (ANY_SKIN, "any skin", "")):
        return None
    if isinstance(target, str) and target.strip().lower() in TONE_WORDS:
        return list(TONE_RANGES[scale])[TONE_WORDS.index(target.strip().lower())]
    return tone_range(target, scale)


def tone_counts(cases: pd.DataFrame) -> pd.Series:
    """How many cases of a case table (an index's database) fall in each skin-tone range.

    Returns
    -------
    Series
        Counts indexed by the ranges of the scale of :func:`tone_labels`
        (lightest first) and ``"unknown"``; ``attrs["scale"]``.

    Raises
    ------
    DermretrError
        When the cases have no Fitzpatrick type or Monk tone.

    Examples
    --------
    >>> tone_counts(pd.DataFrame({"fitzpatrick": pd.array([1, 2, 6, None], dtype="Int64")})).to_dict()
    {'I-II': 2, 'III-IV': 0, 'V-VI': 1, 'unknown': 1}
    """
    scale, column = labels_of(cases)
    return count_ranges(tone_ranges(cases[[column]], scale), scale)


def count_ranges(ranges: np.ndarray, scale: str) -> pd.Series:
    """Counts of the range names of ``scale`` in ``ranges`` (None counts as ``"unknown"``), as :func:`tone_counts`."""
    found = pd.Series(ranges, dtype=object).fillna("unknown").value_counts()
    out = found.reindex([*TONE_RANGES[scale], "unknown"], fill_value=0).astype(int).rename("cases")
    out.index.name = None
    out.attrs["scale"] = scale
    return out


def _share(n: int, total: int) -> str:
    share = n / total if total else 0.0
    return "<1%" if 0 < share < 0.01 else f"{share:.0%}"


def tone_exposure_text(cases: pd.DataFrame | pd.Series, target: Any = None) -> str:
    """How many cases of a skin-tone range the database holds, in words (``target`` None: every range).

    Parameters
    ----------
    cases : DataFrame or Series
        A case table (an index's database), or its :func:`tone_counts`.
    target : str, int or None
        A skin-tone range, a value in it or a plain word ("darker"); None for every range.

    Examples
    --------
    >>> cases = pd.DataFrame({"fitzpatrick": [1] * 24 + [6]})
    >>> tone_exposure_text(cases, "V-VI")
    'the database holds 1 case on Fitzpatrick type V-VI skin, 4% of 25'
    >>> tone_exposure_text(cases)
    'the database holds 25 cases by Fitzpatrick type: I-II 24 (96%), III-IV 0 (0%), V-VI 1 (4%)'
    >>> tone_exposure_text(tone_counts(cases), "darker") == tone_exposure_text(cases, "V-VI")
    True
    """
    counts = cases if isinstance(cases, pd.Series) else tone_counts(cases)
    scale, total = counts.attrs["scale"], int(counts.sum())
    name = tone_target(target, scale)
    if name is not None:
        n = int(counts[name])
        return (f"the database holds {n} case{'s' if n != 1 else ''} {tone_text(name, scale)}, "
                f"{_share(n, total)} of {total}")
    parts = [f"{r} {int(counts[r])} ({_share(int(counts[r]), total)})" for r in TONE_RANGES[scale]]
    if counts["unknown"]:
        parts.append(f"unknown {int(counts['unknown'])} ({_share(int(counts['unknown']), total)})")
    title = "Fitzpatrick type" if scale == "fitzpatrick" else "Monk tone"
    return f"the database holds {total} case{'s' if total != 1 else ''} by {title}: {', '.join(parts)}"


def tone_filter(cases: pd.DataFrame, target: Any) -> dict[str, list]:
    """The case filter (``CaseIndex.search(filters=...)``) keeping one skin-tone range.

    Examples
    --------
    >>> tone_filter(pd.DataFrame({"fitzpatrick": [1, 6]}), "darker")
    {'fitzpatrick': [5, 6]}
    >>> tone_filter(pd.DataFrame({"fitzpatrick": [None, None], "skin_tone_group": ["I-II", "V-VI"]}), "V-VI")
    {'skin_tone_group': ['V-VI']}
    """
    return range_filter(*labels_of(cases), target)


def range_filter(scale: str, column: str, target: Any) -> dict[str, list]:
    """The case filter keeping the range ``target`` of ``scale``, read from ``column`` (``{}`` for any skin)."""
    name = tone_target(target, scale)
    if name is None:
        return {}
    lo, hi = TONE_RANGES[scale][name]
    return {column: [name] if column == "skin_tone_group" else list(range(lo, hi + 1))}


def tone_note(counts: pd.Series | None, tone: str | None, empty: bool = False) -> str:
    """The modifier's note: :func:`tone_exposure_text` of ``counts``, or (None: no labels) why the modifier is off."""
    if counts is None:
        return ("the index holds no case" if empty else NO_TONE_LABELS) + ": the modifier is off"
    return tone_exposure_text(counts, tone)
