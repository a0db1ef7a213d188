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
    "DIAGNOSIS_SYNONYMS",
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
#: Words that tell a diagnosis, its kind or its outcome without being any dataset's
#: label (plurals, spelling variants, benign/malignant).  Query texts must not hold
#: them, nor any label: see :func:`dermretr.evaluate.check_query_text`.
DIAGNOSIS_SYNONYMS: tuple[str, ...] = (
    "nevi", "naevus", "naevi", "mole", "moles", "melanomas", "carcinoma", "carcinomas", "cancer", "cancers",
    "cancerous", "keratosis", "keratoses", "benign", "malignant", "malignancy", "neoplastic", "non-neoplastic",
    "metastasis", "metastatic",
)


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
    "TEXT_VIEWS",
    "VIEW_COLUMNS",
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


#: The text views of a case: leak-free findings (queries, and training's queries) and the caption.
TEXT_VIEWS: tuple[str, ...] = ("findings", "caption")
#: The column each view renders for cases without 7-point criteria.
VIEW_COLUMNS: dict[str, str] = {"findings": "findings", "caption": "descriptors"}


def case_text(case: Mapping, style: str = "terse", seed: int | None = 0, view: str = "findings") -> str:
    """The text of a case of any source: its findings (queries) or its caption.

    Cases with known 7-point criteria (Derm7pt, PH2, DermSynth) are described
    by :func:`render_text` in both views: the criteria are findings, and these
    sources' captions add no diagnosis (Derm7pt's and DermSynth's
    ``descriptors`` are the same criteria; PH2's add asymmetry and colours,
    which the 7-point text leaves out as before).  Other sources describe a
    case through their loader's text columns ("; "-joined phrases), rendered
    in the same three styles:

    * ``view="findings"`` (default; every query path uses it, training's
      composed queries too): the
      ``findings`` column, what is observed or reported before a diagnosis
      (symptoms, site, age, sex, skin type...).  It never falls back to
      ``descriptors``, which may name the diagnosis: a case without a
      ``findings`` column (a case table written before it existed, or a
      hand-made one) gets the no-findings text (:data:`NO_FINDINGS`), so
      reload the dataset to get its findings.
    * ``view="caption"`` (zero-shot text search, captioning): the
      ``descriptors`` column, which may name the diagnosis.

    Parameters
    ----------
    case : mapping
        A case-table row (or a mapping of criteria / text columns).
    style : {"terse", "sentence", "note"}
        See :func:`render_text`.
    seed : int or None
        See :func:`render_text`.
    view : {"findings", "caption"}
        Which text: leak-free findings, or the caption.

    Returns
    -------
    str

    Raises
    ------
    VocabularyError
        An unknown style or view, or unknown criterion values.

    Examples
    --------
    >>> case_text({"streaks": "irregular", "blue_whitish_veil": "present"}, seed=None)
    'irregular streaks, blue-whitish veil'
    >>> case = {"findings": "itching; bleeding; on the face",
    ...         "descriptors": "basal cell carcinoma; itching; bleeding; on the face"}
    >>> case_text(case, style="sentence")
    'Clinical findings: itching, bleeding and on the face.'
    >>> case_text(case, view="caption")
    'basal cell carcinoma, itching, bleeding, on the face'
    >>> case_text({"descriptors": "basal cell carcinoma"})  # no findings column: nothing is known
    'no specific dermoscopic structures'
    """
    if view not in TEXT_VIEWS:
        raise VocabularyError(
            f"unknown text view {view!r}; views: findings (leak-free, for queries), caption (may name the "
            "diagnosis, for training)"
        )
    criteria = criteria_of(case)
    if criteria:
        return render_text(criteria, style=style, seed=seed)
    if style not in TEXT_STYLES:
        raise VocabularyError(f"unknown text style {style!r}; styles: {', '.join(TEXT_STYLES)}")
    raw = case.get(VIEW_COLUMNS[view]) if hasattr(case, "get") else None
    words = [w.strip() for w in str(raw).split(";") if w.strip()] if isinstance(raw, str) else []
    if not words:
        return NO_FINDINGS if style == "terse" else f"{NO_FINDINGS[0].upper()}{NO_FINDINGS[1:]}."
    if style == "terse":
        return ", ".join(words)
    if style == "sentence":
        body = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
        return f"Clinical findings: {body}."
    return "Findings: " + "; ".join(words) + "."


# ----------------------------------------------------------------------------- skin tone

__all__ += [
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

#: Skin-tone scales of tone queries ("this condition, on darker skin").
TONE_SCALES: tuple[str, ...] = ("fitzpatrick", "monk", "ita")
#: The ranges of each scale, lightest first: range name -> (lowest, highest) value, both included.
#:
#: * ``fitzpatrick`` - types 1..6 in the pairs DDI publishes (I-II, III-IV, V-VI);
#: * ``monk`` - Monk skin tones 1..10 as 1-3, 4-7 and 8-10 (a convention of this package: the Monk
#:   scale itself defines no groups);
#: * ``ita`` - the ITA categories of :data:`dermretr.color.ITA_CATEGORIES` ranked 1 (very light) .. 6
#:   (dark), paired like the Fitzpatrick types they approximate
#:   (:data:`dermretr.fairness.ITA_FITZPATRICK`).
#:
#: The ranges of the scales correspond by position: the first is "lighter", the second "medium"
#: (intermediate), the third "darker" (:data:`TONE_WORDS`).
TONE_RANGES: dict[str, dict[str, tuple[int, int]]] = {
    "fitzpatrick": {"I-II": (1, 2), "III-IV": (3, 4), "V-VI": (5, 6)},
    "monk": {"1-3": (1, 3), "4-7": (4, 7), "8-10": (8, 10)},
    "ita": {"very light-light": (1, 2), "intermediate-tan": (3, 4), "brown-dark": (5, 6)},
}
#: The plain word of the first, second and third range of every scale.
TONE_WORDS: tuple[str, ...] = ("lighter", "medium", "darker")
#: Styles of :func:`tone_text`: the scale's own range ("on Fitzpatrick type V-VI skin") or the plain word
#: ("on darker skin").
TONE_STYLES: tuple[str, ...] = ("scale", "plain")

_ROMAN = ("I", "II", "III", "IV", "V", "VI")
_ITA_RANKS = ("very light", "light", "intermediate", "tan", "brown", "dark")  # dermretr.color.ITA_CATEGORIES
_SCALE_TITLES = {"fitzpatrick": "Fitzpatrick type", "monk": "Monk skin tone", "ita": "ITA category"}
# words of a tone mention -> position of the range (0 lighter, 1 medium, 2 darker)
_TONE_WORD_POSITION = {"very light": 0, "lighter": 0, "light": 0, "fair": 0, "pale": 0,
                       "medium": 1, "intermediate": 1, "olive": 1, "tan": 1,
                       "darker": 2, "dark": 2, "deep": 2, "brown": 2}


def _check_scale(scale: str) -> dict[str, tuple[int, int]]:
    if scale not in TONE_RANGES:
        raise VocabularyError(f"unknown skin-tone scale {scale!r}; scales: {', '.join(TONE_SCALES)}")
    return TONE_RANGES[scale]


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(value != value)  # NaN
    except TypeError:  # pandas.NA
        return True


def tone_range(value, scale: str = "fitzpatrick") -> str | None:
    """The range of ``scale`` (:data:`TONE_RANGES`) that holds one skin-tone value; None when unknown.

    Parameters
    ----------
    value : int, str or None
        A value of the scale (Fitzpatrick type 1..6 or ``"I"`` .. ``"VI"``,
        Monk tone 1..10, ITA rank 1..6 or an ITA category name such as
        ``"brown"``), or a range name of the scale (returned as it is).
        None, NaN, ``pandas.NA`` and ``""`` are unknown.
    scale : {"fitzpatrick", "monk", "ita"}

    Raises
    ------
    VocabularyError
        A value off the scale.

    Examples
    --------
    >>> tone_range(5), tone_range("ii"), tone_range(9, "monk"), tone_range("brown", "ita"), tone_range(None)
    ('V-VI', 'I-II', '8-10', 'brown-dark', None)
    >>> tone_range("III-IV")
    'III-IV'
    >>> tone_range(7)
    Traceback (most recent call last):
    ...
    dermretr._errors.VocabularyError: 7 is not a Fitzpatrick type: use 1..6 (or I..VI) or a range I-II, III-IV, V-VI
    """
    ranges = _check_scale(scale)
    if _is_missing(value):
        return None
    number = None
    if isinstance(value, str):
        text = value.strip()
        if text in ranges:
            return text
        if scale == "fitzpatrick" and text.upper() in _ROMAN:
            number = _ROMAN.index(text.upper()) + 1
        elif scale == "ita" and _norm(text) in _ITA_RANKS:
            number = _ITA_RANKS.index(_norm(text)) + 1
        elif text.isdigit():
            number = int(text)
    elif not isinstance(value, bool):
        try:
            if float(value) == int(value):
                number = int(value)
        except (TypeError, ValueError, OverflowError):
            number = None
    top = max(hi for _, hi in ranges.values())
    for name, (lo, hi) in ranges.items():
        if number is not None and lo <= number <= hi:
            return name
    extra = {"fitzpatrick": " (or I..VI)", "ita": " (or a category name: very light ... dark)"}.get(scale, "")
    raise VocabularyError(f"{value!r} is not a {_SCALE_TITLES[scale]}: use 1..{top}{extra} or a range "
                          f"{', '.join(ranges)}")


def _tone_position(target, scale: str) -> int:
    """Position (0 lighter, 1 medium, 2 darker) of a range name, a plain tone word or a value of ``scale``."""
    ranges = _check_scale(scale)
    if isinstance(target, str) and _norm(target) in TONE_WORDS:
        return TONE_WORDS.index(_norm(target))
    name = tone_range(target, scale)
    if name is None:
        raise VocabularyError(f"no skin tone given: name a range of the {scale} scale ({', '.join(ranges)}) "
                              f"or one of {', '.join(TONE_WORDS)}")
    return list(ranges).index(name)


def tone_text(target, scale: str = "fitzpatrick", style: str = "scale") -> str:
    """The skin-tone modifier phrase of a tone query ("on darker skin").

    Parameters
    ----------
    target : str or int
        A range of ``scale`` (:data:`TONE_RANGES`), a value of it (its range
        is named) or a word of :data:`TONE_WORDS`.
    scale : {"fitzpatrick", "monk", "ita"}
    style : {"scale", "plain"}
        The scale's own range, or the plain word.

    Returns
    -------
    str
        :func:`parse_tone` reads the range back.

    Examples
    --------
    >>> tone_text("V-VI"), tone_text("V-VI", style="plain"), tone_text(9, "monk")
    ('on Fitzpatrick type V-VI skin', 'on darker skin', 'on Monk tone 8-10 skin')
    >>> tone_text("lighter", "ita")
    'on very light to light skin'
    """
    if style not in TONE_STYLES:
        raise VocabularyError(f"unknown tone style {style!r}; styles: {', '.join(TONE_STYLES)}")
    position = _tone_position(target, scale)
    name = list(TONE_RANGES[scale])[position]
    if style == "plain":
        return f"on {TONE_WORDS[position]} skin"
    if scale == "fitzpatrick":
        return f"on Fitzpatrick type {name} skin"
    if scale == "monk":
        return f"on Monk tone {name} skin"
    return "on " + name.replace("-", " to ") + " skin"


_TONE_SPAN = r"\s*(?:-|to|or|/)\s*"
_FITZ_VALUE = r"(?:vi|iv|v|iii|ii|i|[1-6])"
_MONK_VALUE = r"(?:10|[1-9])"
_TONE_WORD = "|".join(sorted(map(re.escape, _TONE_WORD_POSITION), key=lambda w: (-len(w), w)))
_TONE_RE = re.compile(
    r"\b(?:"
    rf"(?:fitzpatrick(?:\s+skin)?(?:\s+(?:photo)?types?)?|skin\s+(?:photo)?types?|phototypes?)"
    rf"\s*(?P<f1>{_FITZ_VALUE})(?:{_TONE_SPAN}(?P<f2>{_FITZ_VALUE}))?"
    rf"|(?:monk(?:\s+skin)?(?:\s+tones?)?|mst)\s*(?P<m1>{_MONK_VALUE})(?:{_TONE_SPAN}(?P<m2>{_MONK_VALUE}))?"
    rf"|(?P<w1>{_TONE_WORD})(?:{_TONE_SPAN}(?P<w2>{_TONE_WORD}))?(?:[\s-]+(?:toned|colou?red))?\s+skin"
    r")\b"
)


def _mentions(text: str) -> list[tuple[str, int]]:
    """Every skin-tone mention of a text as (the words, position 0 lighter .. 2 darker)."""
    found = []
    text = text.lower().replace("\u2013", "-").replace("\u2014", "-")
    for m in _TONE_RE.finditer(text):
        before = re.findall(r"[a-z]+", text[:m.start()])
        if m.group("w1") and before and before[-1] in _TONE_WORD_POSITION:  # "light brown skin": the match
            raise VocabularyError(f"{before[-1] + ' ' + m.group(0)!r} names two skin tones at once; "  # starts late
                                  f"name one range, e.g. 'on darker skin' or 'on Fitzpatrick type V-VI skin'")
        if m.group("f1"):
            values, scale = [m.group("f1"), m.group("f2")], "fitzpatrick"
            values = [v.upper() for v in values if v]
        elif m.group("m1"):
            values, scale = [v for v in (m.group("m1"), m.group("m2")) if v], "monk"
        else:
            positions = {_TONE_WORD_POSITION[_norm(m.group(g))] for g in ("w1", "w2") if m.group(g)}
            values, scale = [TONE_WORDS[p] for p in sorted(positions)], "fitzpatrick"
        positions = {_tone_position(v, scale) for v in values}
        if len(positions) > 1:
            ranges = ", ".join(TONE_RANGES[scale])
            raise VocabularyError(f"{m.group(0)!r} spans more than one skin-tone range ({ranges}); name one range")
        found.append((m.group(0), positions.pop()))
    return found


def parse_tone(text: str, scale: str = "fitzpatrick") -> str | None:
    """The skin-tone range a text asks for, as a range of ``scale``; None when it names none.

    Recognised (letter case ignored, hyphen or en dash, "to", "or"): a
    Fitzpatrick type or range ("Fitzpatrick type V-VI", "skin type IV",
    "phototype 5"), a Monk tone or range ("Monk tone 8-10", "MST 9") and a
    word before "skin" ("darker skin", "dark-toned skin", "brown to dark
    skin"; the words of :data:`TONE_WORDS` and lighter/light/fair/pale,
    intermediate/olive/tan, dark/deep/brown).  A mention in another scale is
    translated by position (lighter, medium, darker: :data:`TONE_RANGES`).

    Raises
    ------
    VocabularyError
        A mention spanning two ranges ("type III-V"), or mentions of two
        different ranges.

    Examples
    --------
    >>> parse_tone("irregular streaks, on Fitzpatrick type V-VI skin")
    'V-VI'
    >>> parse_tone("what does this look like on darker skin?", "monk"), parse_tone("MST 2", "fitzpatrick")
    ('8-10', 'I-II')
    >>> parse_tone(tone_text("intermediate-tan", "ita"), "ita"), parse_tone("irregular streaks") is None
    ('intermediate-tan', True)
    """
    if not isinstance(text, str):
        raise VocabularyError(f"text must be a string, not {type(text).__name__}")
    ranges = list(_check_scale(scale))
    found = _mentions(text)
    if not found:
        return None
    positions = {p for _, p in found}
    if len(positions) > 1:
        shown = " and ".join(repr(w) for w, _ in found[:2])
        raise VocabularyError(f"the text names two different skin tones ({shown}); name one")
    return ranges[positions.pop()]


def strip_tone(findings: str) -> str:
    """A ``"; "``-joined findings text without its items that name a skin tone.

    Fitzpatrick17k's and DDI's findings state the case's own skin type; a
    tone query asks for another one, so :func:`tone_query_text` is given the
    findings without it.

    >>> strip_tone("itching; Fitzpatrick type IV skin; on the arm")
    'itching; on the arm'
    >>> strip_tone("Fitzpatrick type V-VI skin")
    ''
    """
    if not isinstance(findings, str):
        return findings
    return "; ".join(w.strip() for w in findings.split(";") if w.strip() and not _TONE_RE.search(w.lower()))


def tone_findings(case: Mapping, style: str = "terse", seed: int | None = None) -> str:
    """A case's findings text (:func:`case_text`, ``view="findings"``) without its own skin-tone mention:
    what :func:`tone_query_text` puts after the phrase asking for another tone.

    Examples
    --------
    >>> tone_findings({"findings": "itching; Fitzpatrick type II skin; on the arm"})
    'itching, on the arm'
    >>> tone_query_text(tone_findings({"findings": "Fitzpatrick type II skin"}), "V-VI")
    'on Fitzpatrick type V-VI skin: no specific dermoscopic structures'
    """
    row = dict(case.items())
    if "findings" in row:
        row["findings"] = strip_tone(row["findings"])
    return case_text(row, style=style, seed=seed, view="findings")


def tone_query_text(findings: str, target, scale: str = "fitzpatrick", style: str = "scale") -> str:
    """The text of a tone query: the skin-tone phrase (:func:`tone_text`), then the findings.

    The phrase comes first so that a long findings text, which a text
    encoder may cut (64 tokens for ``dermretr-tiny``), never loses it.

    Parameters
    ----------
    findings : str
        The reference case's findings text (:func:`case_text`, ``view="findings"``),
        without a skin-tone mention of its own (see :func:`strip_tone`).
    target, scale, style
        See :func:`tone_text`.

    Examples
    --------
    >>> text = tone_query_text("irregular streaks, blue-whitish veil", "V-VI")
    >>> text, parse_tone(text)
    ('on Fitzpatrick type V-VI skin: irregular streaks, blue-whitish veil', 'V-VI')
    >>> tone_query_text("", 2, style="plain")
    'on lighter skin'
    """
    phrase = tone_text(target, scale, style)
    body = findings.strip() if isinstance(findings, str) else ""
    return f"{phrase}: {body}" if body else phrase
