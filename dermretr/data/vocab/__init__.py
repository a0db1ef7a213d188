"""The 7-point checklist vocabulary, Derm7pt diagnoses, and text rendering.

The criteria and their values are written exactly as the Derm7pt release
writes them (``meta/meta.csv``).  Input may use underscores instead of spaces
("diffuse_irregular"); :func:`normalize_value` maps them back.

The package is flat: every name lives in a private module (criteria and the
checklist score, diagnoses, the phrase tables, descriptor text, skin tone,
the findings a query text names) and is imported from here.

Examples
--------
>>> from dermretr.data import vocab
>>> vocab.CRITERIA["blue_whitish_veil"]
('absent', 'present')
>>> vocab.seven_point_score({"pigment_network": "atypical", "blue_whitish_veil": "present"})
4
>>> vocab.diagnosis_group("melanoma (in situ)")
'MEL'
"""

from __future__ import annotations

from ._criteria import (
    ABSENT,
    CRITERIA,
    CRITERION_NAMES,
    MAJOR_CRITERIA,
    MINOR_CRITERIA,
    criteria_of,
    criterion_points,
    normalize_criteria,
    normalize_value,
    seven_point_score,
)
from ._diagnoses import (
    DIAGNOSES,
    DIAGNOSIS_GROUPS,
    DIAGNOSIS_SYNONYMS,
    GROUP_NAMES,
    GROUP_OF_DIAGNOSIS,
    MALIGNANT_GROUPS,
    diagnosis_group,
    is_malignant,
)
from ._findings import QueryFindings, compare_findings, finding_phrase, query_findings, shown_findings
from ._phrases import NEGATIONS, NO_FINDINGS, PHRASES
from ._text import (
    TEXT_STYLES,
    TEXT_VIEWS,
    VIEW_COLUMNS,
    case_text,
    mentioned_criteria,
    modification_text,
    parse_modification,
    parse_text,
    render_text,
)
from ._tone import (
    TONE_RANGES,
    TONE_SCALES,
    TONE_STYLES,
    TONE_WORDS,
    parse_tone,
    strip_tone,
    tone_findings,
    tone_query_text,
    tone_range,
    tone_text,
)

__all__ = [
    # criteria and the 7-point score
    "CRITERIA",
    "CRITERION_NAMES",
    "ABSENT",
    "MAJOR_CRITERIA",
    "MINOR_CRITERIA",
    "normalize_value",
    "normalize_criteria",
    "criteria_of",
    "criterion_points",
    "seven_point_score",
    # diagnoses
    "DIAGNOSES",
    "DIAGNOSIS_GROUPS",
    "GROUP_OF_DIAGNOSIS",
    "GROUP_NAMES",
    "MALIGNANT_GROUPS",
    "DIAGNOSIS_SYNONYMS",
    "diagnosis_group",
    "is_malignant",
    # descriptor text
    "PHRASES",
    "NEGATIONS",
    "NO_FINDINGS",
    "TEXT_STYLES",
    "TEXT_VIEWS",
    "VIEW_COLUMNS",
    "render_text",
    "parse_text",
    "mentioned_criteria",
    "modification_text",
    "parse_modification",
    "case_text",
    # the findings of a query text, compared with a case
    "QueryFindings",
    "query_findings",
    "compare_findings",
    "shown_findings",
    "finding_phrase",
    # skin tone
    "TONE_SCALES",
    "TONE_RANGES",
    "TONE_WORDS",
    "TONE_STYLES",
    "tone_range",
    "tone_text",
    "parse_tone",
    "strip_tone",
    "tone_findings",
    "tone_query_text",
]
