"""The leak guard of every protocol: a query text must not name the answer (a diagnosis, its group or a synonym)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import pandas as pd

from .._errors import DermretrError
from ..data.vocab import DIAGNOSES, DIAGNOSIS_SYNONYMS, GROUP_NAMES, case_text
from ._common import RELEVANT

__all__ = ["check_query_text"]

_WORD_RE = re.compile(r"[^\W_]+")
_SHOWN_TEXT = 80


def _words(text: object) -> str:
    """Lower-case words separated by single spaces (hyphens, brackets, apostrophes... as spaces)."""
    return " ".join(_WORD_RE.findall(str(text).lower()))


@functools.lru_cache(maxsize=1)
def _known_labels() -> frozenset[str]:
    """Every diagnosis and group name the vocabulary and the loaders know, and their synonyms (as words)."""
    from ..data.sources import fitzpatrick17k, ham10000, isic2020, pad_ufes20, ph2

    names = [*DIAGNOSES, *GROUP_NAMES, *DIAGNOSIS_SYNONYMS, *fitzpatrick17k.NINE_PARTITION,
             *fitzpatrick17k.THREE_PARTITION, *ph2.DIAGNOSES, *ph2.GROUPS.values()]
    for module in (pad_ufes20, ham10000, isic2020):
        names += [*module.GROUPS, *module.GROUPS.values(), *getattr(module, "DIAGNOSIS_NAMES", {}).values()]
    return frozenset(map(_words, names))


def check_query_text(cases: pd.DataFrame, texts: Sequence[str] | None = None,
                     relevant: str = "diagnosis_group", style: str = "terse") -> None:
    """Refuse query texts that name the answer: a label, a diagnosis group or a synonym.

    A query whose text names what counts as relevant scores by reading the
    question.  Refused are, as whole words or phrases (letter case, hyphens and
    punctuation ignored; terms of two characters or fewer, such as ``SK``, are
    not checked): every value of the table's ``diagnosis``, ``diagnosis_group``
    and ``relevant`` columns, every diagnosis and group name the vocabulary
    and the loaders know (Derm7pt's 20 diagnoses, HAM10000's ``mel``, ``bkl``,
    PAD-UFES-20's ``ACK``...) and :data:`~dermretr.data.vocab.DIAGNOSIS_SYNONYMS`
    (``nevi``, ``benign``, ``malignant``...).  Whole words only:
    ``melanocytic`` does not trip on ``mel``.

    Parameters
    ----------
    cases : DataFrame
        The query cases, one row per text (its ``case_id`` and ``source``
        name the culprit).
    texts : sequence of str, optional
        The query texts; default: each case's
        :func:`~dermretr.data.vocab.case_text` (``view="findings"``) in
        ``style``.
    relevant : str
        The column whose equal values count as relevant; its values are
        refused besides the diagnoses and groups.
    style : {"terse", "sentence", "note"}
        Style of the default texts.

    Raises
    ------
    DermretrError
        Naming the source, the case, the word and the text of the first
        leaking query, and how many more leak.

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": ["a", "b"], "source": "demo", "diagnosis": ["psoriasis", "acne"],
    ...                       "diagnosis_group": ["inflammatory", "inflammatory"]})
    >>> check_query_text(cases, ["itching; on the arm", "Fitzpatrick type IV skin"])
    >>> check_query_text(cases, ["itching", "acne; on the face"])
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: query text names the answer: source 'demo', case 'b': 'acne' in ...
    """
    if texts is None:
        texts = [case_text(row, style=style, seed=None) for _, row in cases.iterrows()]
    texts = list(texts)
    if len(texts) != len(cases):
        raise DermretrError(f"{len(texts)} query texts for {len(cases)} query cases: give one text per case")
    if relevant not in cases.columns and relevant not in RELEVANT:
        raise DermretrError(f"relevant column {relevant!r} is not in the case table; columns: {list(cases.columns)}")
    terms = set(_known_labels())
    for column in dict.fromkeys(("diagnosis", "diagnosis_group", relevant)):
        if column in cases.columns:
            terms.update(_words(v) for v in pd.unique(cases[column].dropna().astype(str)))
    ordered = sorted((t for t in terms if len(t) > 2), key=lambda t: (-len(t), t))  # the longest phrase is named
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, ordered)) + r")\b")
    leaks = [(i, m.group(0)) for i, text in enumerate(texts) if (m := pattern.search(_words(text)))]
    if not leaks:
        return
    i, word = leaks[0]
    row = cases.iloc[i]
    source = f"source {str(row['source'])!r}, " if "source" in cases.columns else ""
    case = str(row["case_id"]) if "case_id" in cases.columns else f"row {i}"
    text = str(texts[i])
    shown = text if len(text) <= _SHOWN_TEXT else text[:_SHOWN_TEXT - 3] + "..."
    more = f" (and {len(leaks) - 1} more of {len(texts)} queries)" if len(leaks) > 1 else ""
    raise DermretrError(
        f"query text names the answer: {source}case {case!r}: {word!r} in {shown!r}{more}; queries must hold "
        "findings only, never a diagnosis, its group or a synonym (case_text(..., view='findings'))"
    )
