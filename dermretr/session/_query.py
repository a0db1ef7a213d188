"""The parts of a composed query a session assembles: the query text, the filters' words, the search report.

Module functions behind :class:`~dermretr.session.QuerySession`: the text a
reference plus changed criteria plus a skin-tone modifier make, the 7-point
descriptors recognised in it, the words describing the filters, the empty
result table and :class:`SearchReport` (what a search found and what to say
about it).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DermretrError, VocabularyError
from ..data.vocab import (
    ABSENT,
    CRITERIA,
    case_text,
    criteria_of,
    modification_text,
    normalize_value,
    parse_text,
    tone_query_text,
)
from ..index import filter_mask

__all__ = ["UNKNOWN", "SKIN_TYPES", "SearchReport", "as_index", "check_index", "initial_alpha", "skin_label",
           "check_case_id", "known_criteria", "reference_text", "compose_text", "check_criterion", "read_descriptors",
           "query_filters", "describe_filters", "matching_cases", "no_match_note", "shortfall_note", "no_results",
           "relevance"]

#: Dropdown entry of a criterion whose value is not known.
UNKNOWN = "(unknown)"
#: Fitzpatrick skin types as the skin-type filter shows them: (label, value).
SKIN_TYPES: tuple[tuple[str, int], ...] = (("I", 1), ("II", 2), ("III", 3), ("IV", 4), ("V", 5), ("VI", 6))
_ROMAN = {v: label for label, v in SKIN_TYPES}
_FILTER_NAMES = {"fitzpatrick": "skin type", "skin_tone_group": "skin type", "monk": "Monk tone",
                 "diagnosis_group": "diagnosis group"}


@dataclass
class SearchReport:
    """What one search of a session found, and what to say about it.

    ``results`` is None when nothing was searched (no reference yet); ``level``
    is ``"info"``, ``"warning"`` or ``"error"``; ``notes`` are the sentences
    after the head.  For a search that ran, ``text`` is the text searched and
    ``relevant`` the number of relevant results (None without ground truth).
    """

    results: pd.DataFrame | None
    level: str
    notes: tuple[str, ...] = ()
    text: str | None = None
    relevant: int | None = None
    seconds: float = field(default=0.0)

    def lines(self, seconds: float | None = None) -> list[str]:
        """The message: "6 results for “...” in 0.12 s; 3 relevant (green frame)", then the notes."""
        if self.text is None or self.results is None:
            return list(self.notes)
        n, took = len(self.results), self.seconds if seconds is None else seconds
        head = (f"{n} result{'s' if n != 1 else ''} for "
                f"{('“' + self.text + '”') if self.text else 'the image alone'} in {took:.2f} s")
        if self.relevant is not None:
            head += f"; {self.relevant} relevant (green frame)"
        return [head, *self.notes]


def as_index(index: Any, model: Any, device: str = "auto") -> Any:
    """``index`` as a CaseIndex: a case table (or ``"SOURCE:PATH"``) is indexed with ``model``.

    A CaseIndex is returned as it is; an index folder (``dermretr index``) is opened with the
    model its manifest records; a case table or a dataset spec is encoded with ``model``: a
    :class:`~dermretr.models.retriever.Retriever` or a name that ``Retriever.from_pretrained``
    reads (by default the released ``"dermretr/dermsynth-tiny"``).
    """
    import os
    from pathlib import Path

    from ..data import SOURCES, load
    from ..index import CaseIndex

    if isinstance(index, (str, os.PathLike)):
        text = os.fspath(index)
        if (Path(text).expanduser() / "manifest.json").is_file():
            return CaseIndex.open(text, device=device)
        if text.partition(":")[0].strip().lower() not in SOURCES:  # a path, even one with a colon (C:\...)
            raise DermretrError(f"{text!r} is neither an index folder (no manifest.json there; written by "
                                "CaseIndex.save or `dermretr index`) nor a dataset spec SOURCE:PATH (such as "
                                f"'synthetic:./dermsynth'; sources: {', '.join(SOURCES)})")
        index = load(text)
    if isinstance(index, pd.DataFrame):
        return CaseIndex.build(model, index, device=device)
    return index


def check_index(index: Any, retriever: Any = None, owner: str = "QuerySession") -> Any:
    """The retriever that encodes ``index``'s queries (``retriever`` or the index's own), after checking both.

    ``owner`` names the caller in the messages ("QueryBuilder needs a CaseIndex ...").
    """
    for attr in ("cases", "search_vectors"):
        if not hasattr(index, attr):
            raise DermretrError(f"{owner} needs a CaseIndex (got {type(index).__name__}, which has no "
                                f".{attr}); build one with CaseIndex.build(retriever, cases) or open one with "
                                "CaseIndex.open(dir)")
    retriever = retriever if retriever is not None else getattr(index, "retriever", None)
    if retriever is None and len(index.cases):
        raise DermretrError(f"{owner} needs a retriever to encode queries: open the index with "
                            "CaseIndex.open(dir) (or CaseIndex.load(dir, retriever)), or pass retriever=...")
    manifest = getattr(index, "manifest", {}) or {}
    dim = getattr(getattr(retriever, "backbone", None), "embed_dim", None)
    if dim is not None and manifest.get("dim") is not None and int(dim) != int(manifest["dim"]):
        raise DermretrError(f"the retriever makes {dim}-dimensional vectors but the index holds "
                            f"{manifest['dim']}-dimensional ones: use the model the index was built with")
    return retriever


def initial_alpha(index: Any, alpha: Any) -> float:
    """The starting weight of local evidence: ``alpha``, else the index's (0 when it has none)."""
    if alpha is None:
        try:
            a0 = float(index.alpha)
        except (AttributeError, KeyError, TypeError, ValueError):
            a0 = 0.0
    else:
        try:
            a0 = float(alpha)
        except (TypeError, ValueError):
            raise DermretrError(f"alpha (the weight of local evidence) must be a number, got {alpha!r}") from None
    if not 0.0 <= a0 <= 1.0:
        raise DermretrError(f"alpha (the weight of local evidence) must be in [0, 1], got {alpha}")
    return a0


def skin_label(value: Any) -> str:
    """A Fitzpatrick type as its roman numeral ("V"), ``"?"`` when unknown.

    >>> skin_label(5), skin_label(None), skin_label("V-VI")
    ('V', '?', 'V-VI')
    """
    try:
        if value is None or pd.isna(value):
            return "?"
        return _ROMAN.get(int(value), str(value))
    except (TypeError, ValueError):
        return str(value)


def check_case_id(case_id: Any, row_of: Mapping[str, int], ids: Any) -> str:
    """``case_id`` as a str when it is one of ``row_of``'s; otherwise an error suggesting close ids."""
    cid = str(case_id)
    if cid not in row_of:
        close = difflib.get_close_matches(cid, list(ids[:5000]), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DermretrError(f"case id {cid!r} is not in this index ({len(ids)} cases){hint}")
    return cid


def known_criteria(row: pd.Series) -> dict[str, str]:
    """The 7-point criteria known of a case (``{}`` when its values do not read as criteria)."""
    try:
        return criteria_of(row)
    except VocabularyError:
        return {}


def reference_text(row: pd.Series, known: Mapping[str, str]) -> str:
    """The case's own findings text (empty when nothing about it is known); never its caption."""
    if known:
        return case_text(known, seed=None)
    raw = row.get("findings") if hasattr(row, "get") else None
    if isinstance(raw, str) and raw.strip():
        return case_text(row, seed=None, view="findings")
    return ""


def compose_text(reference: Mapping[str, str], wanted: Mapping[str, str], base_text: str, tone_base: str,
                 tone: str | None, scale: str | None) -> str:
    """The query text: the reference's (or the modification's), after the skin-tone phrase if one is set.

    ``reference`` holds the reference's known criteria, ``wanted`` the changed
    ones; ``base_text`` is the reference's own text and ``tone_base`` the same
    without its own skin type (what follows a skin-tone phrase).

    >>> compose_text({"streaks": "absent"}, {"streaks": "irregular"}, "", "", None, None)
    'same lesion but with irregular streaks'
    """
    if not wanted:
        body = base_text if tone is None else tone_base
    else:
        before = {}
        for c, new in wanted.items():
            old = reference.get(c)
            if old is None:  # unknown in the reference: "with X" for a value, "without X" for absent
                old = CRITERIA[c][1] if new == ABSENT else ABSENT
            before[c] = old
        body = modification_text(before, wanted, seed=None)
    return body if tone is None else tone_query_text(body, tone, scale or "fitzpatrick")


def read_descriptors(text: str) -> tuple[dict | None, list[str]]:
    """The 7-point descriptors recognised in ``text`` (None when contradictory) and notes about them."""
    notes = []
    descriptors: dict | None
    try:
        descriptors = {c: v for c, v in parse_text(text, default=None).items() if v is not None}
    except VocabularyError as exc:
        descriptors = None
        notes.append(f"the text mentions a criterion twice with different values ({exc}); it is searched "
                     "as free text")
    if text and descriptors == {}:
        notes.append("no 7-point descriptor recognised in the text: it is searched as free text")
    return descriptors, notes


def check_criterion(name: str, value: str) -> str:
    """``value`` of criterion ``name`` as a session stores it (a Derm7pt value or ``"(unknown)"``).

    Raises :class:`~dermretr._errors.VocabularyError` for an unknown criterion or value.

    >>> check_criterion("streaks", "Irregular"), check_criterion("streaks", UNKNOWN)
    ('irregular', '(unknown)')
    """
    if name not in CRITERIA:
        raise VocabularyError(f"unknown criterion {name!r}; the 7-point criteria are: {', '.join(CRITERIA)}")
    return value if value == UNKNOWN else normalize_value(name, value)


def query_filters(skin_types: Sequence[Any], groups: Sequence[Any], in_range: Mapping[str, list]) -> dict[str, list]:
    """The case filters of the skin-type and diagnosis-group choices, intersected with a skin-tone range's filter.

    >>> query_filters((4, 5), (), {"fitzpatrick": [5, 6]})
    {'fitzpatrick': [5]}
    """
    out: dict[str, list] = {}
    if skin_types:
        out["fitzpatrick"] = [int(v) for v in skin_types]
    if groups:
        out["diagnosis_group"] = [str(v) for v in groups]
    for column, values in in_range.items():
        out[column] = [v for v in out[column] if v in values] if column in out else list(values)
    return out


def matching_cases(cases: pd.DataFrame, filters: Mapping[str, list]) -> np.ndarray:
    """Boolean mask of the cases passing ``filters`` (:func:`dermretr.index.filter_mask`'s rules).

    A column whose list of allowed values is empty (two choices that do not
    intersect, e.g. skin type I with a V-VI range) matches no case.

    >>> matching_cases(pd.DataFrame({"g": ["MEL", "NEV"]}), {"g": ["mel"]}).tolist()
    [True, False]
    >>> matching_cases(pd.DataFrame({"g": ["MEL", "NEV"]}), {"g": []}).tolist()
    [False, False]
    """
    mask = filter_mask(cases, {c: v for c, v in filters.items() if len(v)})
    if any(not len(v) for v in filters.values()):
        return np.zeros(len(cases), dtype=bool)
    return np.ones(len(cases), dtype=bool) if mask is None else mask


def no_match_note(filters: Mapping[str, list], others: bool) -> str:
    """What to say when no case (``others``: other than the reference) passes the filters."""
    return (f"no case{' other than the reference' if others else ''} matches the filters "
            f"({describe_filters(filters)}): nothing to show; widen the filters")


def shortfall_note(n_ok: int, k: int, shown: int, filters: Mapping[str, list], besides_reference: bool) -> str:
    """What to say when fewer than ``k`` cases may be shown.

    >>> shortfall_note(2, 5, 2, {}, True)
    'only 2 cases in the index besides the reference: showing 2, not k=5'
    """
    where = f" the filters ({describe_filters(filters)})" if filters else " the index"
    return (f"only {n_ok} case{'s' if n_ok != 1 else ''} in{where}"
            f"{' besides the reference' if besides_reference else ''}: showing {shown}, not k={k}")


def describe_filters(filters: Mapping[str, list]) -> str:
    """The filters in words: "skin type V, VI and diagnosis group MEL".

    >>> describe_filters({"fitzpatrick": [5, 6], "diagnosis_group": ["MEL"]})
    'skin type V, VI and diagnosis group MEL'
    """
    parts = []
    for column, values in filters.items():
        shown = [skin_label(v) if column == "fitzpatrick" else str(v) for v in values]
        parts.append(f"{_FILTER_NAMES.get(column, column)} {', '.join(shown) or 'none'}")
    return " and ".join(parts)


def no_results(cases: pd.DataFrame) -> pd.DataFrame:
    """An empty result table with the columns a search of ``cases`` gives."""
    columns = ["rank", "case_id", "score", "s_global", "s_local", "relevant"]
    columns += [c for c in cases.columns if c not in columns]
    out = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    out.attrs["descriptors"] = {}
    return out


def relevance(res: pd.DataFrame, reference: pd.Series, wanted: Mapping[str, str], tone: str | None = None,
              ranges: Any = None) -> np.ndarray | None:
    """Which results are relevant to a reference case: same diagnosis group, wanted values, skin tone in range.

    ``reference`` is the reference case's row, ``wanted`` the changed criteria
    (criterion -> wanted value); with a skin-tone modifier ``tone``, ``ranges``
    holds each result's skin-tone range.  None when the reference's diagnosis
    group is unknown (no ground truth).

    >>> res = pd.DataFrame({"diagnosis_group": ["MEL", "NEV", "MEL"], "streaks": ["absent", "absent", "irregular"]})
    >>> relevance(res, pd.Series({"diagnosis_group": "MEL"}), {"streaks": "irregular"}).tolist()
    [False, False, True]
    """
    if "diagnosis_group" not in res.columns:
        return None
    group = reference["diagnosis_group"]
    if group is None or pd.isna(group):
        return None
    rel = (res["diagnosis_group"].astype("string") == str(group)).fillna(False).to_numpy(dtype=bool)
    for c, v in wanted.items():
        if c in res.columns:
            rel &= (res[c].astype("string") == v).fillna(False).to_numpy(dtype=bool)
    if tone is not None and ranges is not None:  # the tone protocol: a skin tone in the wanted range too
        rel &= np.array([r == tone for r in ranges], dtype=bool)
    return rel
