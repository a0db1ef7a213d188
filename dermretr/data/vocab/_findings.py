"""The findings a query text names, and how a case compares with them.

:func:`query_findings` reads a query text with the vocabulary's own parsers (the 7-point phrases of
:func:`parse_modification` and the skin-tone phrases of :func:`parse_tone`);
:func:`compare_findings` says which of those findings a case shows and which of its findings
contradict them (:func:`shown_findings`: per finding, shown, not shown or unknown);
:func:`finding_phrase` writes one criterion value in words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..._errors import VocabularyError
from ._criteria import ABSENT, CRITERIA, CaseLike, criteria_of, normalize_value
from ._phrases import NEGATIONS, PHRASES
from ._text import parse_modification
from ._tone import parse_tone, tone_range

__all__ = ["QueryFindings", "query_findings", "compare_findings", "shown_findings", "finding_phrase"]


def finding_phrase(criterion: str, value: str) -> str:
    """One criterion value in words: its canonical phrase, or the canonical negation for ``"absent"``.

    Examples
    --------
    >>> finding_phrase("blue_whitish_veil", "present"), finding_phrase("streaks", "absent")
    ('blue-whitish veil', 'no streaks')
    >>> finding_phrase("pigment_network", "atypical")
    'atypical pigment network'
    """
    value = normalize_value(criterion, value)
    if value == ABSENT:
        return next(p for p in NEGATIONS[criterion] if p.startswith("no "))
    return PHRASES[criterion][value][0]


@dataclass(frozen=True)
class QueryFindings:
    """What a query text names: 7-point criteria, a Fitzpatrick range, and what could not be read.

    Attributes
    ----------
    criteria : dict
        Criterion -> value the text names, in :data:`CRITERIA` order (``{}`` when none).
    skin_type : str or None
        The Fitzpatrick range the text asks for ("V-VI"; "on darker skin" reads as "V-VI").
    problems : tuple of str
        Why part of the text could not be read (one criterion named with two values, two skin
        tones); that part is then not compared.
    """

    criteria: dict[str, str] = field(default_factory=dict)
    skin_type: str | None = None
    problems: tuple[str, ...] = ()

    def phrases(self) -> list[str]:
        """The findings in words, criteria first ("blue-whitish veil", "skin type V-VI")."""
        out = [finding_phrase(c, v) for c, v in self.criteria.items()]
        return out + ([f"skin type {self.skin_type}"] if self.skin_type else [])

    def __bool__(self) -> bool:
        return bool(self.criteria) or self.skin_type is not None


def query_findings(text: str | None) -> QueryFindings:
    """The 7-point findings and the skin type a query text names (nothing is ever raised for a text).

    Examples
    --------
    >>> found = query_findings("blue-white veil and an atypical network, on darker skin")
    >>> found.criteria, found.skin_type, found.phrases()
    ({'pigment_network': 'atypical', 'blue_whitish_veil': 'present'}, 'V-VI', ['atypical pigment network', \
'blue-whitish veil', 'skin type V-VI'])
    >>> bool(query_findings("the quick brown fox")), query_findings("").phrases()
    (False, [])
    >>> query_findings("regular streaks and irregular streaks").problems
    ("streaks: conflicting mentions 'regular streaks' (regular) and 'irregular streaks' (irregular)",)
    """
    if text is None or not str(text).strip():
        return QueryFindings()
    text = str(text)
    problems = []
    try:
        found = parse_modification(text)
        problems = _named_without_value(text, found)
    except VocabularyError as exc:  # conflicting values: that problem is the one to say
        found, problems = {}, [str(exc)]
    try:
        skin = parse_tone(text, "fitzpatrick")
    except VocabularyError as exc:
        skin = None
        problems.append(str(exc))
    return QueryFindings({c: found[c] for c in CRITERIA if c in found}, skin, tuple(problems))


# A criterion's bare name, for a text that names it without one of its values ("with streaks": regular or
# irregular?).  The blue-whitish veil has one value besides absent, so its name is its value's phrase.
_BARE_NAMES = {
    "pigment_network": r"\b(?:pigment )?network\b",
    "streaks": r"\bstreaks?\b|\bradial streaming\b|\bpseudopods?\b",
    "pigmentation": r"\bpigmentation\b|\bblotch(?:es)?\b",
    "regression_structures": r"\bregression\b",
    "dots_and_globules": r"\bdots?\b|\bglobules?\b",
    "vascular_structures": r"\bvessels?\b|\bvascular\b",
}


def _named_without_value(text: str, found: dict) -> list[str]:
    """Problems for the criteria that ``text`` names without a value the vocabulary knows, with phrases that do.

    >>> _named_without_value("with streaks", {})
    ["'streaks' names streaks without its kind; say e.g. 'regular streaks' or 'irregular streaks'"]
    >>> _named_without_value("irregular streaks", {"streaks": "irregular"})
    []
    >>> _named_without_value("vessels within regression", {"vascular_structures": "within regression"})
    []
    """
    for criterion, value in found.items():  # "vessels within regression" names a vessel, not regression
        for phrase in PHRASES.get(criterion, {}).get(value, ()):
            text = re.sub(re.escape(phrase), " ", text, flags=re.IGNORECASE)
    out = []
    for criterion, pattern in _BARE_NAMES.items():
        match = None if criterion in found else re.search(pattern, text, flags=re.IGNORECASE)
        if match is not None:
            examples = [phrases[0] for phrases in PHRASES[criterion].values()]
            shown = " or ".join(f"'{e}'" for e in examples[:3]) + (" ..." if len(examples) > 3 else "")
            out.append(f"'{match.group(0)}' names {criterion.replace('_', ' ')} without its kind; say e.g. {shown}")
    return out


def _case_values(findings: QueryFindings, case: CaseLike) -> list[tuple[str, str | None]]:
    """Per finding of the query (in words), the case's own value of it in words (None: unknown)."""
    try:
        known = criteria_of(case)
    except VocabularyError:  # values this vocabulary does not know: nothing to compare
        known = {}
    out: list[tuple[str, str | None]] = [(finding_phrase(c, v), finding_phrase(c, known[c]) if c in known else None)
                                         for c, v in findings.criteria.items()]
    if findings.skin_type is not None:
        own = None
        if "fitzpatrick" in case.keys():
            try:
                own = tone_range(case["fitzpatrick"], "fitzpatrick")
            except VocabularyError:
                own = None
        out.append((f"skin type {findings.skin_type}", None if own is None else f"skin type {own}"))
    return out


def shown_findings(findings: QueryFindings, case: CaseLike) -> dict[str, bool | None]:
    """Per finding of the query (in words, as :meth:`QueryFindings.phrases` gives them): does the case show it.

    True when the case has that value, False when it has another one, None when it is unknown.

    >>> shown_findings(query_findings("blue-whitish veil, on darker skin"), {"blue_whitish_veil": "absent"})
    {'blue-whitish veil': False, 'skin type V-VI': None}
    """
    return {wanted: None if own is None else own == wanted for wanted, own in _case_values(findings, case)}


def compare_findings(findings: QueryFindings, case: CaseLike) -> tuple[list[str], list[str]]:
    """Which findings of a query a case shows, and which of its own findings contradict them.

    Both lists hold the case's own findings in words: a criterion the query names is a match
    when the case has the same value, a contradiction when it has another one ("no blue-whitish
    veil" for a query asking for a veil); the skin type likewise, by Fitzpatrick range.  What is
    unknown of the case (a missing criterion, no ``fitzpatrick``) is in neither list.

    Examples
    --------
    >>> query = query_findings("blue-whitish veil, atypical pigment network, on darker skin")
    >>> compare_findings(query, {"blue_whitish_veil": "absent", "pigment_network": "atypical", "fitzpatrick": 5})
    (['atypical pigment network', 'skin type V-VI'], ['no blue-whitish veil'])
    >>> compare_findings(query, {"case_id": "c1"})
    ([], [])
    """
    pairs = [(wanted, own) for wanted, own in _case_values(findings, case) if own is not None]
    return [own for wanted, own in pairs if own == wanted], [own for wanted, own in pairs if own != wanted]
