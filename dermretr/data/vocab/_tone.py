"""Skin-tone words of tone queries: the Fitzpatrick, Monk and ITA ranges, tone phrases and parsing them back."""

from __future__ import annotations

import re

from ..._errors import VocabularyError
from ._criteria import CaseLike
from ._phrases import norm
from ._text import case_text

__all__ = [
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
        elif scale == "ita" and norm(text) in _ITA_RANKS:
            number = _ITA_RANKS.index(norm(text)) + 1
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
    if isinstance(target, str) and norm(target) in TONE_WORDS:
        return TONE_WORDS.index(norm(target))
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
            positions = {_TONE_WORD_POSITION[norm(m.group(g))] for g in ("w1", "w2") if m.group(g)}
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


def tone_findings(case: CaseLike, style: str = "terse", seed: int | None = None) -> str:
    """A case's findings text (:func:`case_text`, ``view="findings"``) without its own skin-tone mention.

    It is what :func:`tone_query_text` puts after the phrase asking for another tone.

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
