"""Descriptor text: rendering 7-point criteria in words, parsing them back, modification texts and case texts.

One compiled regex finds every phrase of :mod:`._phrases` in a text (longest match wins); :func:`parse_text`
and :func:`mentioned_criteria` read texts with it, :func:`render_text`, :func:`modification_text` and
:func:`case_text` write them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from ..._errors import VocabularyError
from ._criteria import ABSENT, CRITERIA, CaseLike, criteria_of, normalize_criteria, seven_point_score
from ._phrases import (
    ARTICLES,
    CRITERION_NOUNS,
    GLOBAL_NEGATIONS,
    INSTEAD,
    MODIFIERS,
    NEGATIONS,
    NO_FINDINGS,
    PHRASES,
    SEP,
    norm,
    takes_article,
    with_article,
)

__all__ = [
    "TEXT_STYLES",
    "TEXT_VIEWS",
    "VIEW_COLUMNS",
    "render_text",
    "parse_text",
    "mentioned_criteria",
    "modification_text",
    "parse_modification",
    "case_text",
]

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


def _build_parser() -> tuple[re.Pattern[str], dict[str, tuple[str, str | None, str | None]]]:
    """Compile the one regex that finds every mention, and its lookup table.

    Lookup: normalised phrase -> (kind, criterion, value); kind is "value" (a value or a
    negation, value "absent") or "none" (the global "no structures" phrase).
    """
    lookup: dict[str, tuple[str, str | None, str | None]] = {}

    def add(phrase: str, entry: tuple[str, str | None, str | None]) -> None:
        key = norm(phrase)
        if lookup.setdefault(key, entry) != entry:  # pragma: no cover - vocabulary bug
            raise RuntimeError(f"phrase {phrase!r} is ambiguous: {lookup[key]} vs {entry}")

    for c, values in PHRASES.items():
        for v, phrases in values.items():
            for p in phrases:
                add(p, ("value", c, v))
        for p in NEGATIONS[c]:
            add(p, ("value", c, ABSENT))
        for n in CRITERION_NOUNS[c]:
            add(f"without {n}", ("value", c, ABSENT))
    for p in GLOBAL_NEGATIONS:
        add(p, ("none", None, None))
    for c, (noun, mods) in MODIFIERS.items():
        for new, m_new in mods.items():
            for old, m_old in mods.items():
                if new != old:
                    for instead in INSTEAD:
                        for art in ARTICLES:
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
                alts.append(f"{re.escape(word)}(?:{SEP}{to_regex(rest)})?")
            else:
                alts.append(f"{re.escape(word)}{SEP}{to_regex(rest)}")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    old = rf"(?P<old>(?:instead{SEP}of|rather{SEP}than){SEP}(?:(?:an?|the){SEP})?)?"
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
            body = f"{_join([with_article(p) for p in pos])}, with {_join(neg)}"
        elif pos:
            body = _join([with_article(p) for p in pos])
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
        kind, c, v = _LOOKUP[norm(m.group("body"))]
        if kind == "none":
            nothing = True
            continue
        assert c is not None and v is not None  # a "value" entry names its criterion and value
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
            clauses.append("with " + with_article(pick(PHRASES[c][new])))
        else:
            instead = pick(INSTEAD)
            noun, mods = MODIFIERS.get(c, ("", {}))
            if new in mods and old in mods and (rng is None or rng.random() < 0.5):
                m_new, m_old = mods[new], mods[old]
                if takes_article(noun):  # "an atypical instead of a typical pigment network"
                    m_new = with_article(f"{m_new} {noun}")[: -len(noun) - 1]
                    m_old = with_article(f"{m_old} {noun}")[: -len(noun) - 1]
                clauses.append(f"with {m_new} {instead} {m_old} {noun}")
            else:
                p_new = with_article(pick(PHRASES[c][new]))
                p_old = with_article(pick(PHRASES[c][old]))
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


def mentioned_criteria(text: object) -> dict[str, str] | None:
    """The 7-point criteria a (query) text mentions, mapped to their value; None when two mentions conflict.

    The lenient reading of :func:`parse_text` that a search needs: criteria the
    text does not mention are left out (as in :func:`parse_modification`), an
    empty or blank text (or None) mentions nothing (``{}``), and mentions
    that conflict give None instead of an error.  Anything else is read as
    ``str(text)``.

    Examples
    --------
    >>> mentioned_criteria("same lesion but with irregular streaks and without a blue-whitish veil")
    {'streaks': 'irregular', 'blue_whitish_veil': 'absent'}
    >>> mentioned_criteria(""), mentioned_criteria("regular streaks and irregular streaks") is None
    ({}, True)
    """
    if not text or not str(text).strip():
        return {}
    try:
        return parse_modification(str(text))
    except VocabularyError:
        return None


#: The text views of a case: leak-free findings (queries, and training's queries) and the caption.
TEXT_VIEWS: tuple[str, ...] = ("findings", "caption")
#: The column each view renders for cases without 7-point criteria.
VIEW_COLUMNS: dict[str, str] = {"findings": "findings", "caption": "descriptors"}


def case_text(case: CaseLike, style: str = "terse", seed: int | None = 0, view: str = "findings") -> str:
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
