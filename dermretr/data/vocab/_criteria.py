"""The seven criteria of the 7-point checklist, their values in Derm7pt's spelling, and the checklist score.

Input may use underscores instead of spaces ("diffuse_irregular"); :func:`normalize_value` maps them back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

from ..._errors import VocabularyError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ABSENT",
    "CRITERIA",
    "CRITERION_NAMES",
    "MAJOR_CRITERIA",
    "MINOR_CRITERIA",
    "normalize_value",
    "normalize_criteria",
    "criteria_of",
    "criterion_points",
    "seven_point_score",
]

ABSENT = "absent"
#: A case: a case-table row (a pandas Series) or a mapping of its columns.
CaseLike: TypeAlias = "Mapping | pd.Series"

#: The seven criteria and their allowed values, in Derm7pt's spelling and order.
CRITERIA: dict[str, tuple[str, ...]] = {
    "pigment_network": ("absent", "typical", "atypical"),
    "streaks": ("absent", "regular", "irregular"),
    "pigmentation": (
        "absent",
        "diffuse regular",
        "localized regular",
        "diffuse irregular",
        "localized irregular",
    ),
    "regression_structures": ("absent", "blue areas", "white areas", "combinations"),
    "dots_and_globules": ("absent", "regular", "irregular"),
    "blue_whitish_veil": ("absent", "present"),
    "vascular_structures": (
        "absent",
        "arborizing",
        "comma",
        "hairpin",
        "within regression",
        "wreath",
        "dotted",
        "linear irregular",
    ),
}
CRITERION_NAMES: tuple[str, ...] = tuple(CRITERIA)

#: Major criteria (2 points each) of the 7-point checklist: criterion -> values that score.
MAJOR_CRITERIA: dict[str, tuple[str, ...]] = {
    "pigment_network": ("atypical",),
    "blue_whitish_veil": ("present",),
    "vascular_structures": ("dotted", "linear irregular"),
}
#: Minor criteria (1 point each) of the 7-point checklist: criterion -> values that score.
MINOR_CRITERIA: dict[str, tuple[str, ...]] = {
    "streaks": ("irregular",),
    "pigmentation": ("diffuse irregular", "localized irregular"),
    "dots_and_globules": ("irregular",),
    "regression_structures": ("blue areas", "white areas", "combinations"),
}


def normalize_value(criterion: str, value: str) -> str:
    """Return the Derm7pt spelling of ``value`` for ``criterion``.

    Underscores, repeated spaces and letter case are forgiven.

    >>> normalize_value("pigmentation", "Diffuse_Irregular")
    'diffuse irregular'
    """
    if criterion not in CRITERIA:
        raise VocabularyError(
            f"unknown criterion {criterion!r}; the 7-point criteria are: {', '.join(CRITERIA)}"
        )
    if not isinstance(value, str):
        raise VocabularyError(
            f"{criterion}: value {value!r} is not text; allowed values: {', '.join(CRITERIA[criterion])}"
        )
    clean = " ".join(value.replace("_", " ").strip().lower().split())
    if clean not in CRITERIA[criterion]:
        raise VocabularyError(
            f"{criterion}: unknown value {value!r}; allowed values: {', '.join(CRITERIA[criterion])}"
        )
    return clean


def normalize_criteria(criteria: Mapping[str, str], fill_absent: bool = True) -> dict[str, str]:
    """Validate and normalise a mapping of criteria; missing ones become ``"absent"``.

    >>> normalize_criteria({"streaks": "irregular"})["pigment_network"]
    'absent'
    """
    if _is_case_row(criteria):
        criteria = criteria_of(criteria)
    unknown = [k for k in criteria.keys() if k not in CRITERIA]
    if unknown:
        raise VocabularyError(
            f"unknown criteria {unknown}; the 7-point criteria are: {', '.join(CRITERIA)}"
        )
    out = {k: normalize_value(k, v) for k, v in criteria.items()}
    if fill_absent:
        out = {k: out.get(k, ABSENT) for k in CRITERIA}
    return out


def _is_case_row(obj) -> bool:
    """A pandas Series (a row of a case table) rather than a plain mapping."""
    return hasattr(obj, "index") and hasattr(obj, "to_dict") and not isinstance(obj, dict)


def criteria_of(case: CaseLike) -> dict[str, str]:
    """The known 7-point criteria of a case (a case-table row or a mapping).

    Other columns are ignored, and so are criteria that are missing or NA
    (unknown), so the result can be passed to :func:`render_text`.

    >>> import pandas as pd
    >>> row = pd.Series({"case_id": "c1", "streaks": "irregular", "blue_whitish_veil": pd.NA})
    >>> criteria_of(row)
    {'streaks': 'irregular'}
    """
    out = {}
    for c in CRITERIA:
        if c not in case.keys():
            continue
        v = case[c]
        if v is None or (not isinstance(v, str) and v != v) or str(v) in ("<NA>", "nan", "NaN", ""):
            continue
        out[c] = normalize_value(c, str(v))
    return out


def criterion_points(criterion: str, value: str) -> int:
    """Points one criterion value adds to the 7-point checklist score (0, 1 or 2).

    >>> criterion_points("vascular_structures", "dotted")
    2
    """
    value = normalize_value(criterion, value)
    if value in MAJOR_CRITERIA.get(criterion, ()):
        return 2
    if value in MINOR_CRITERIA.get(criterion, ()):
        return 1
    return 0


def seven_point_score(criteria: Mapping[str, str]) -> int:
    """The 7-point checklist score of a case (missing criteria count as absent).

    A score of 3 or more is the usual threshold for suspicion of melanoma.

    >>> seven_point_score({"streaks": "irregular", "regression_structures": "blue areas"})
    2
    """
    return sum(criterion_points(k, v) for k, v in normalize_criteria(criteria, False).items())
