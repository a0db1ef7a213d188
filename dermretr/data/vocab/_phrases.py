"""The phrase tables of descriptor text: how each criterion value, its absence and a change of value are worded.

:mod:`._text` renders and parses descriptions with these tables; the table entries are matched with separators
(spaces, underscores, hyphens, slashes) and letter case forgiven (:func:`norm`).
"""

from __future__ import annotations

import re

from ._criteria import CRITERIA

__all__ = [
    "PHRASES",
    "CRITERION_NOUNS",
    "NEGATIONS",
    "NO_FINDINGS",
    "GLOBAL_NEGATIONS",
    "MODIFIERS",
    "INSTEAD",
    "ARTICLES",
    "SEP",
    "norm",
    "takes_article",
    "with_article",
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

#: Nouns naming each criterion as a whole (for negations); singular ones take "a".
CRITERION_NOUNS: dict[str, tuple[str, ...]] = {
    "pigment_network": ("pigment network", "network"),
    "streaks": ("streaks", "radial streaming", "pseudopods"),
    "pigmentation": ("blotches", "pigmentation", "pigmented blotches"),
    "regression_structures": ("regression structures", "regression", "regression areas"),
    "dots_and_globules": ("dots and globules", "dots or globules", "dots/globules", "globules"),
    "blue_whitish_veil": ("blue-whitish veil", "blue-white veil", "bluish-white veil", "veil"),
    "vascular_structures": ("vascular structures", "vessels", "visible vessels"),
}
_SINGULAR_HEADS = frozenset({"network", "veil", "blotch", "pattern"})


def takes_article(phrase: str) -> bool:
    """Whether a phrase's head noun is singular, so that it takes "a"/"an" ("a blue-whitish veil")."""
    words = phrase.replace("-", " ").replace("/", " ").split()
    for i, w in enumerate(words):
        if w in ("with", "within", "in", "of") and i > 0:
            words = words[:i]
            break
    return words[-1] in _SINGULAR_HEADS


def with_article(phrase: str) -> str:
    """The phrase with "a"/"an" before it when it takes an article (:func:`takes_article`)."""
    if not takes_article(phrase):
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


#: Phrases stating that a criterion is absent; the first one is canonical.  The forms
#: starting with "no " are used in descriptions, the "without " forms in modifications.
NEGATIONS: dict[str, tuple[str, ...]] = {
    c: tuple(f"no {n}" for n in nouns) + tuple(f"without {with_article(n)}" for n in nouns)
    for c, nouns in CRITERION_NOUNS.items()
}

#: What a description says when nothing is present; parses back to all-absent.
NO_FINDINGS = "no specific dermoscopic structures"
#: Phrases stating that nothing is present (all parse to "every criterion absent").
GLOBAL_NEGATIONS = (NO_FINDINGS, "no dermoscopic structures", "no specific structures")

#: Compressed "X instead of Y <noun>" forms of a value change:
#: criterion -> (noun, value -> modifier).
MODIFIERS: dict[str, tuple[str, dict[str, str]]] = {
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

#: The words of a value change ("atypical instead of typical"); what follows them is the value replaced.
INSTEAD = ("instead of", "rather than")
#: The articles a replaced value may take ("instead of a typical pigment network").
ARTICLES = ("", "a ", "an ", "the ")

#: What separates words in a phrase: spaces, underscores, hyphens and slashes alike.
SEP = r"[\s_\-/]+"
_SEP_RE = re.compile(SEP)


def norm(text: str) -> str:
    """Lower-case text with every run of separators (:data:`SEP`) as one space.

    >>> norm("Blue-White_Veil")
    'blue white veil'
    """
    return _SEP_RE.sub(" ", text.lower()).strip()
