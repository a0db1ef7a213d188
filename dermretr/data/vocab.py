"""The 7-point checklist vocabulary, Derm7pt diagnoses, and text rendering.

The criteria and their values are written exactly as the Derm7pt release
writes them (``meta/meta.csv``).  Input may use underscores instead of spaces
("diffuse_irregular"); :func:`normalize_value` maps them back.

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

import random
import re
from collections.abc import Mapping

from .._errors import VocabularyError

__all__ = [
    "CRITERIA",
    "CRITERION_NAMES",
    "ABSENT",
    "DIAGNOSES",
    "DIAGNOSIS_GROUPS",
    "GROUP_OF_DIAGNOSIS",
    "GROUP_NAMES",
    "MALIGNANT_GROUPS",
    "MAJOR_CRITERIA",
    "MINOR_CRITERIA",
    "normalize_value",
    "normalize_criteria",
    "criteria_of",
    "case_text",
    "diagnosis_group",
    "is_malignant",
    "criterion_points",
    "seven_point_score",
]

ABSENT = "absent"

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

#: The five Derm7pt diagnosis groups and their member diagnoses, as the
#: official derm7pt code groups them.
DIAGNOSIS_GROUPS: dict[str, tuple[str, ...]] = {
    "BCC": ("basal cell carcinoma",),
    "NEV": (
        "blue nevus",
        "clark nevus",
        "combined nevus",
        "congenital nevus",
        "dermal nevus",
        "recurrent nevus",
        "reed or spitz nevus",
    ),
    "MEL": (
        "melanoma",
        "melanoma (in situ)",
        "melanoma (less than 0.76 mm)",
        "melanoma (0.76 to 1.5 mm)",
        "melanoma (more than 1.5 mm)",
        "melanoma metastasis",
    ),
    "MISC": ("dermatofibroma", "lentigo", "melanosis", "miscellaneous", "vascular lesion"),
    "SK": ("seborrheic keratosis",),
}
GROUP_NAMES: tuple[str, ...] = tuple(DIAGNOSIS_GROUPS)
#: The 20 Derm7pt diagnosis strings, sorted.
DIAGNOSES: tuple[str, ...] = tuple(sorted(d for ds in DIAGNOSIS_GROUPS.values() for d in ds))
GROUP_OF_DIAGNOSIS: dict[str, str] = {d: g for g, ds in DIAGNOSIS_GROUPS.items() for d in ds}
#: Groups whose members are malignant (melanoma and basal cell carcinoma).
MALIGNANT_GROUPS: frozenset[str] = frozenset({"MEL", "BCC"})


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


def criteria_of(case: Mapping) -> dict[str, str]:
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


def diagnosis_group(diagnosis: str) -> str:
    """Return the Derm7pt group (BCC, NEV, MEL, MISC, SK) of a Derm7pt diagnosis.

    >>> diagnosis_group("Clark_nevus")
    'NEV'
    """
    key = " ".join(str(diagnosis).replace("_", " ").strip().lower().split())
    try:
        return GROUP_OF_DIAGNOSIS[key]
    except KeyError:
        raise VocabularyError(
            f"unknown diagnosis {diagnosis!r}; Derm7pt diagnoses are: {', '.join(DIAGNOSES)}"
        ) from None


def is_malignant(diagnosis: str) -> bool:
    """Whether a Derm7pt diagnosis is malignant (its group is MEL or BCC).

    >>> is_malignant("basal cell carcinoma"), is_malignant("lentigo")
    (True, False)
    """
    return diagnosis_group(diagnosis) in MALIGNANT_GROUPS


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


# ---------------------------------------------------------------------------
# Text rendering and parsing
# ---------------------------------------------------------------------------

__all__ += [
    "PHRASES",
    "NEGATIONS",
    "NO_FINDINGS",
    "TEXT_STYLES",
    "render_text",
    "parse_text",
    "modification_text",
    "parse_modification",
]

#: Dermoscopic phrasings of every non-absent criterion value; the first one is canonical.
#: No phrase of one (criterion, value) is contained, word for word, in a phrase of another
#: one unless the longer phrase is the one that must win (longest match wins).
PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "pigment_network": {
        "typical": (
            "typical pigment network",
            "regular pigment network",
            "regular network with thin lines",
            "typical network",
        ),
        "atypical": (
            "atypical pigment network",
            "irregular pigment network",
            "irregular network with thick lines",
            "atypical network",
        ),
    },
    "streaks": {
        "regular": (
            "regular streaks",
            "regular radial streaming",
            "symmetrical streaks",
            "regular pseudopods",
        ),
        "irregular": (
            "irregular streaks",
            "irregular radial streaming",
            "asymmetrical streaks",
            "irregular pseudopods",
        ),
    },
    "pigmentation": {
        "diffuse regular": (
            "diffuse regular pigmentation",
            "diffuse homogeneous pigmentation",
            "diffuse regular blotch",
        ),
        "localized regular": (
            "localized regular pigmentation",
            "localised regular pigmentation",
            "focal regular pigmentation",
            "localized regular blotch",
        ),
        "diffuse irregular": (
            "diffuse irregular pigmentation",
            "diffuse irregular blotches",
            "diffuse irregular blotch",
        ),
        "localized irregular": (
            "localized irregular pigmentation",
            "localised irregular pigmentation",
            "focal irregular pigmentation",
            "localized irregular blotch",
        ),
    },
    "regression_structures": {
        "blue areas": (
            "blue-grey regression areas",
            "blue-gray regression areas",
            "blue regression areas",
            "peppering",
            "grey-blue peppering",
        ),
        "white areas": (
            "white scar-like regression areas",
            "white regression areas",
            "white scar-like areas",
            "scar-like depigmentation",
        ),
        "combinations": (
            "blue-grey and white regression areas",
            "blue-gray and white regression areas",
            "combined blue and white regression",
            "mixed blue and white regression areas",
            "peppering and white scar-like areas",
        ),
    },
    "dots_and_globules": {
        "regular": (
            "regular dots and globules",
            "regular dots/globules",
            "regularly distributed dots and globules",
            "regular globules",
            "regular dots",
        ),
        "irregular": (
            "irregular dots and globules",
            "irregular dots/globules",
            "irregularly distributed dots and globules",
            "irregular globules",
            "irregular dots",
        ),
    },
    "blue_whitish_veil": {
        "present": (
            "blue-whitish veil",
            "blue-white veil",
            "bluish-white veil",
            "blue-white structures",
            "veil",  # in dermoscopy a veil is always the blue-whitish one
        ),
    },
    "vascular_structures": {
        "arborizing": (
            "arborizing vessels",
            "arborising vessels",
            "arborizing telangiectasias",
            "branching vessels",
        ),
        "comma": ("comma vessels", "comma-shaped vessels", "comma-like vessels"),
        "hairpin": ("hairpin vessels", "hairpin-like vessels", "hairpin loops"),
        "within regression": (
            "vessels within regression",
            "vessels within regression areas",
            "vessels within areas of regression",
            "vessels in regression areas",
        ),
        "wreath": ("wreath vessels", "wreath-like vessels", "crown vessels"),
        "dotted": ("dotted vessels", "pinpoint vessels", "dot-like vessels"),
        "linear irregular": (
            "linear irregular vessels",
            "irregular linear vessels",
            "linear irregular vascular pattern",
        ),
    },
}

# Nouns naming each criterion as a whole (for negations); singular ones take "a".
_CRITERION_NOUNS: dict[str, tuple[str, ...]] = {
    "pigment_network": ("pigment network", "network"),
    "streaks": ("streaks", "radial streaming", "pseudopods"),
    "pigmentation": ("blotches", "pigmentation", "pigmented blotches"),
    "regression_structures": ("regression structures", "regression", "regression areas"),
    "dots_and_globules": ("dots and globules", "dots or globules", "dots/globules", "globules"),
    "blue_whitish_veil": ("blue-whitish veil", "blue-white veil", "bluish-white veil", "veil"),
    "vascular_structures": ("vascular structures", "vessels", "visible vessels"),
}
_SINGULAR_HEADS = frozenset({"network", "veil", "blotch", "pattern"})


def _takes_article(phrase: str) -> bool:
    words = phrase.replace("-", " ").replace("/", " ").split()
    for i, w in enumerate(words):
        if w in ("with", "within", "in", "of") and i > 0:
            words = words[:i]
            break
    return words[-1] in _SINGULAR_HEADS


def _with_article(phrase: str) -> str:
    if not _takes_article(phrase):
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


#: Phrases stating that a criterion is absent; the first one is canonical.  The forms
#: starting with "no " are used in descriptions, the "without " forms in modifications.
NEGATIONS: dict[str, tuple[str, ...]] = {
    c: tuple(f"no {n}" for n in nouns) + tuple(f"without {_with_article(n)}" for n in nouns)
    for c, nouns in _CRITERION_NOUNS.items()
}

#: What a description says when nothing is present; parses back to all-absent.
NO_FINDINGS = "no specific dermoscopic structures"
_GLOBAL_NEGATIONS = (NO_FINDINGS, "no dermoscopic structures", "no specific structures")

#: Compressed "X instead of Y <noun>" forms of a value change:
#: criterion -> (noun, value -> modifier).
_MODIFIERS: dict[str, tuple[str, dict[str, str]]] = {
    "pigment_network": ("pigment network", {"typical": "typical", "atypical": "atypical"}),
    "streaks": ("streaks", {"regular": "regular", "irregular": "irregular"}),
    "pigmentation": ("pigmentation", {v: v for v in CRITERIA["pigmentation"][1:]}),
    "regression_structures": (
        "regression areas",
        {"blue areas": "blue-grey", "white areas": "white", "combinations": "blue-grey and white"},
    ),
    "dots_and_globules": ("dots and globules", {"regular": "regular", "irregular": "irregular"}),
    "vascular_structures": (
        "vessels",
        {v: v for v in CRITERIA["vascular_structures"][1:] if v != "within regression"},
    ),
}

TEXT_STYLES: tuple[str, ...] = ("terse", "sentence", "note")

_SENTENCE_INTROS = (
    "Dermoscopy shows",
    "Dermoscopic examination reveals",
    "On dermoscopy the lesion shows",
    "Dermoscopy of the lesion demonstrates",
)
_NOTE_HEADERS = ("Dermoscopic findings: ", "Dermoscopy: ", "Findings on dermoscopy: ")
_NOTE_SCORES = (
    "7-point score {}.",
    "7-point checklist score: {}.",
    "7-point checklist: {} points.",
)
_MOD_TEMPLATES = (
    "same lesion but {}",
    "the same lesion, but {}",
    "a similar lesion {}",
    "like this lesion but {}",
)
_INSTEAD = ("instead of", "rather than")
_ARTICLES = ("", "a ", "an ", "the ")

_SEP = r"[\s_\-/]+"
_SEP_RE = re.compile(_SEP)


def _norm(text: str) -> str:
    return _SEP_RE.sub(" ", text.lower()).strip()


def _build_parser() -> tuple[re.Pattern[str], dict[str, tuple[str, str | None, str | None]]]:
    """Compile the one regex that finds every mention, and its lookup table.

    Lookup: normalised phrase -> (kind, criterion, value); kind is "value" (a value or a
    negation, value "absent") or "none" (the global "no structures" phrase).
    """
    lookup: dict[str, tuple[str, str | None, str | None]] = {}

    def add(phrase: str, entry: tuple[str, str | None, str | None]) -> None:
        key = _norm(phrase)
        if lookup.setdefault(key, entry) != entry:  # pragma: no cover - vocabulary bug
            raise RuntimeError(f"phrase {phrase!r} is ambiguous: {lookup[key]} vs {entry}")

    for c, values in PHRASES.items():
        for v, phrases in values.items():
            for p in phrases:
                add(p, ("value", c, v))
        for p in NEGATIONS[c]:
            add(p, ("value", c, ABSENT))
        for n in _CRITERION_NOUNS[c]:
            add(f"without {n}", ("value", c, ABSENT))
    for p in _GLOBAL_NEGATIONS:
        add(p, ("none", None, None))
    for c, (noun, mods) in _MODIFIERS.items():
        for new, m_new in mods.items():
            for old, m_old in mods.items():
                if new != old:
                    for instead in _INSTEAD:
                        for art in _ARTICLES:
                            add(f"{m_new} {instead} {art}{m_old} {noun}", ("value", c, new))

    # A word trie over all phrases, turned into a regex with shared prefixes (fast), in
    # which a longer continuation is always tried before a shorter one (longest match).
    trie: dict = {}
    for key in lookup:
        node = trie
        for word in key.split(" "):
            node = node.setdefault(word, {})
        node[""] = {}

    def to_regex(node: dict) -> str:
        alts = []
        for word in sorted((w for w in node if w), key=lambda w: (-len(w), w)):
            child = node[word]
            rest = {w: n for w, n in child.items() if w}
            if not rest:
                alts.append(re.escape(word))
            elif "" in child:
                alts.append(f"{re.escape(word)}(?:{_SEP}{to_regex(rest)})?")
            else:
                alts.append(f"{re.escape(word)}{_SEP}{to_regex(rest)}")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    old = rf"(?P<old>(?:instead{_SEP}of|rather{_SEP}than){_SEP}(?:(?:an?|the){_SEP})?)?"
    pattern = rf"(?<![^\W_]){old}(?P<body>{to_regex(trie)})(?![^\W_])"
    return re.compile(pattern, re.IGNORECASE), lookup


_MENTION_RE, _LOOKUP = _build_parser()


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def render_text(
    criteria: Mapping[str, str],
    style: str = "terse",
    seed: int | None = 0,
    mention_absent: bool = False,
) -> str:
    """Describe a case's 7-point criteria in words.

    Parameters
    ----------
    criteria : mapping
        Criterion -> value (Derm7pt spelling, underscores accepted); missing ones are absent.
    style : {"terse", "sentence", "note"}
        A comma-separated descriptor list, a natural sentence, or a clinician note with
        the 7-point score.
    seed : int or None
        Chooses synonyms, the order of findings and the template (``random.Random(seed)``);
        ``None`` gives canonical phrases in :data:`CRITERIA` order.
    mention_absent : bool
        Also state absent criteria with a negation ("no streaks").

    Returns
    -------
    str
        Text that :func:`parse_text` maps back to ``criteria``.

    Examples
    --------
    >>> case = {"pigment_network": "atypical", "blue_whitish_veil": "present"}
    >>> render_text(case, seed=None)
    'atypical pigment network, blue-whitish veil'
    >>> render_text(case, "sentence", seed=None)
    'Dermoscopy shows an atypical pigment network and a blue-whitish veil.'
    >>> render_text(case, "note", seed=None)
    'Dermoscopic findings: atypical pigment network; blue-whitish veil. 7-point score 4.'
    >>> render_text({}, seed=None)
    'no specific dermoscopic structures'
    """
    crit = normalize_criteria(criteria)
    if style not in TEXT_STYLES:
        raise VocabularyError(
            f"unknown text style {style!r}; allowed styles: {', '.join(TEXT_STYLES)}"
        )
    rng = random.Random(seed) if seed is not None else None
    present = [(c, v) for c, v in crit.items() if v != ABSENT]
    absent = [c for c, v in crit.items() if v == ABSENT] if mention_absent else []
    if rng is not None:
        rng.shuffle(present)
        rng.shuffle(absent)

    def pick(options: tuple[str, ...] | list[str]) -> str:
        return options[0] if rng is None else rng.choice(options)

    pos = [pick(PHRASES[c][v]) for c, v in present]
    neg = [pick([p for p in NEGATIONS[c] if p.startswith("no ")]) for c in absent]

    if style == "terse":
        return ", ".join(pos + neg) if pos or neg else NO_FINDINGS
    if style == "sentence":
        intro = pick(_SENTENCE_INTROS)
        if pos and neg:
            body = f"{_join([_with_article(p) for p in pos])}, with {_join(neg)}"
        elif pos:
            body = _join([_with_article(p) for p in pos])
        else:
            body = _join(neg) if neg else NO_FINDINGS
        return f"{intro} {body}."
    header = pick(_NOTE_HEADERS)
    score = pick(_NOTE_SCORES).format(seven_point_score(crit))
    return f"{header}{'; '.join(pos + neg) if pos or neg else NO_FINDINGS}. {score}"


def parse_text(text: str, default: str | None = ABSENT) -> dict[str, str | None]:
    """Read the 7-point criteria mentioned in a text.

    Any phrasing in :data:`PHRASES` or :data:`NEGATIONS` is recognised (case, hyphens,
    underscores and extra whitespace forgiven); the longest phrase wins and each word is
    read once.  Negations give ``"absent"``; a phrase after "instead of"/"rather than" is
    the value being replaced and is ignored.  "no specific dermoscopic structures" makes
    every criterion not otherwise mentioned absent.

    Parameters
    ----------
    text : str
        The description.
    default : str or None
        Value of criteria the text does not mention (``None`` = unknown).

    Returns
    -------
    dict
        Criterion -> value, for all seven criteria in :data:`CRITERIA` order.

    Raises
    ------
    VocabularyError
        If one criterion is mentioned with two different values.

    Examples
    --------
    >>> parse_text("Irregular streaks, BLUE-WHITE_VEIL; no  pigment network")["blue_whitish_veil"]
    'present'
    >>> found = parse_text("irregular streaks", default=None)
    >>> found["streaks"], found["pigmentation"]
    ('irregular', None)
    """
    if not isinstance(text, str):
        raise VocabularyError(f"text must be a string, not {type(text).__name__}")
    found: dict[str, tuple[str, str]] = {}
    nothing = False
    for m in _MENTION_RE.finditer(text):
        if m.group("old") is not None:
            continue
        kind, c, v = _LOOKUP[_norm(m.group("body"))]
        if kind == "none":
            nothing = True
            continue
        phrase = m.group("body")
        if c in found and found[c][0] != v:
            raise VocabularyError(
                f"{c}: conflicting mentions {found[c][1]!r} ({found[c][0]}) and {phrase!r} ({v})"
            )
        found.setdefault(c, (v, phrase))
    fill = ABSENT if nothing else default
    return {c: found[c][0] if c in found else fill for c in CRITERIA}


def modification_text(
    before: Mapping[str, str], after: Mapping[str, str], seed: int | None = 0
) -> str:
    """Phrase the change from ``before`` to ``after`` as a composed-retrieval query.

    Parameters
    ----------
    before, after : mapping
        Criteria of the reference case and of the wanted case (missing = absent).
    seed : int or None
        Chooses the template, synonyms and order of the changes; ``None`` is canonical.

    Returns
    -------
    str
        E.g. "same lesion but with a blue-whitish veil"; :func:`parse_modification`
        recovers exactly the changed criteria.

    Raises
    ------
    VocabularyError
        If nothing changes.

    Examples
    --------
    >>> modification_text({}, {"blue_whitish_veil": "present"}, seed=None)
    'same lesion but with a blue-whitish veil'
    >>> modification_text({"pigment_network": "typical"}, {"pigment_network": "atypical"},
    ...                   seed=None)
    'same lesion but with an atypical instead of a typical pigment network'
    >>> modification_text({"blue_whitish_veil": "present"}, {"streaks": "irregular"}, seed=None)
    'same lesion but with irregular streaks and without a blue-whitish veil'
    """
    b = normalize_criteria(before)
    a = normalize_criteria(after)
    changed = [c for c in CRITERIA if b[c] != a[c]]
    if not changed:
        raise VocabularyError("before and after have the same criteria: nothing to describe")
    rng = random.Random(seed) if seed is not None else None
    if rng is not None:
        rng.shuffle(changed)

    def pick(options: tuple[str, ...] | list[str]) -> str:
        return options[0] if rng is None else rng.choice(options)

    clauses: list[str] = []
    for c in changed:
        old, new = b[c], a[c]
        if new == ABSENT:
            clauses.append(pick([p for p in NEGATIONS[c] if p.startswith("without ")]))
        elif old == ABSENT:
            clauses.append("with " + _with_article(pick(PHRASES[c][new])))
        else:
            instead = pick(_INSTEAD)
            noun, mods = _MODIFIERS.get(c, ("", {}))
            if new in mods and old in mods and (rng is None or rng.random() < 0.5):
                m_new, m_old = mods[new], mods[old]
                if _takes_article(noun):  # "an atypical instead of a typical pigment network"
                    m_new = _with_article(f"{m_new} {noun}")[: -len(noun) - 1]
                    m_old = _with_article(f"{m_old} {noun}")[: -len(noun) - 1]
                clauses.append(f"with {m_new} {instead} {m_old} {noun}")
            else:
                p_new = _with_article(pick(PHRASES[c][new]))
                p_old = _with_article(pick(PHRASES[c][old]))
                clauses.append(f"with {p_new} {instead} {p_old}")
    return pick(_MOD_TEMPLATES).format(_join(clauses))


def parse_modification(text: str) -> dict[str, str]:
    """The criteria a modification text changes, mapped to their new value.

    Values after "instead of"/"rather than" (the ones being replaced) are ignored;
    criteria the text does not mention are left out (an empty dict if none is).

    Examples
    --------
    >>> parse_modification("same lesion but with an atypical instead of a typical pigment network")
    {'pigment_network': 'atypical'}
    >>> parse_modification("same lesion but with irregular streaks and without a blue-whitish veil")
    {'streaks': 'irregular', 'blue_whitish_veil': 'absent'}
    """
    return {c: v for c, v in parse_text(text, default=None).items() if v is not None}


# ----------------------------------------------------------------------------- any source


def case_text(case: Mapping, style: str = "terse", seed: int | None = 0) -> str:
    """The text a composed query uses for a case of any source.

    Cases with known 7-point criteria (Derm7pt, DermSynth) are described by
    :func:`render_text`.  Other sources describe cases through their loader's
    ``descriptors`` column ("; "-joined phrases such as clinical history or
    condition words), rendered in the same three styles.

    Examples
    --------
    >>> case_text({"streaks": "irregular", "blue_whitish_veil": "present"}, seed=None)
    'irregular streaks, blue-whitish veil'
    >>> case_text({"descriptors": "itching; bleeding; on the face"}, style="sentence")
    'Clinical findings: itching, bleeding and on the face.'
    """
    criteria = criteria_of(case)
    if criteria:
        return render_text(criteria, style=style, seed=seed)
    if style not in TEXT_STYLES:
        raise VocabularyError(f"unknown text style {style!r}; styles: {', '.join(TEXT_STYLES)}")
    raw = case.get("descriptors") if hasattr(case, "get") else None
    words = [w.strip() for w in str(raw).split(";") if w.strip()] if isinstance(raw, str) else []
    if not words:
        return NO_FINDINGS if style == "terse" else f"{NO_FINDINGS[0].upper()}{NO_FINDINGS[1:]}."
    if style == "terse":
        return ", ".join(words)
    if style == "sentence":
        body = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
        return f"Clinical findings: {body}."
    return "Findings: " + "; ".join(words) + "."
