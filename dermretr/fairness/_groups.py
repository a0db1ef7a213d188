"""Skin-tone groups of cases and queries: Fitzpatrick, its pairs, Monk, ITA categories, labelled or estimated.

:func:`skin_tone_groups` labels each case with its group (``"unknown"`` when
the tone is not known); :func:`ita_confusion` and :func:`ita_agreement`
compare an estimated grouping with a labelled one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DermretrError
from ..color import ITA_CATEGORIES, ita_category
from ..data.vocab import TONE_RANGES
from ..skin_tone import ITA_FITZPATRICK
from ..stats import as_text

__all__ = [
    "UNKNOWN",
    "GROUPINGS",
    "GROUPING_TITLES",
    "HINTS",
    "MissingColumn",
    "check_by",
    "skin_tone_groups",
    "query_groups",
    "select_groups",
    "query_cases",
    "gap_groups",
    "is_estimated",
    "estimate_note",
    "ita_agreement",
    "ita_confusion",
]

#: The group of cases whose skin tone is not known (reported, never part of a gap).
UNKNOWN = "unknown"
_FITZ = ("I", "II", "III", "IV", "V", "VI")
_ITA_NAMES = tuple(name for name, _, _ in ITA_CATEGORIES)

#: Skin-tone groupings and their groups, lightest first (``"unknown"`` comes after them).
GROUPINGS: dict[str, tuple[str, ...]] = {
    "fitzpatrick": _FITZ,
    "fitzpatrick_pairs": tuple(TONE_RANGES["fitzpatrick"]),  # the tone protocol's ranges
    "monk": tuple(str(i) for i in range(1, 11)),
    "ita_category": _ITA_NAMES,
    "ita_category_estimated": _ITA_NAMES,
    "fitzpatrick_estimated": _FITZ,
}
#: What each grouping is called in tables and figures.
GROUPING_TITLES: dict[str, str] = {
    "fitzpatrick": "Fitzpatrick skin type",
    "fitzpatrick_pairs": "Fitzpatrick skin type (pairs)",
    "monk": "Monk skin tone",
    "ita_category": "ITA category (labelled)",
    "ita_category_estimated": "ITA category (estimated from pixels)",
    "fitzpatrick_estimated": "Fitzpatrick type (estimated from ITA)",
}

_PAIR_OF = {v: name for name, (lo, hi) in TONE_RANGES["fitzpatrick"].items() for v in range(lo, hi + 1)}
_ESTIMATE_HINT = ("estimate skin tone from the pixels first: dermretr.fairness.estimate_skin_tone(cases), "
                  "or `dermretr fairness --estimate-ita`")
#: What to do instead when a grouping's column is missing or unknown everywhere.
HINTS: dict[str, str] = {
    "fitzpatrick": "group by 'fitzpatrick_estimated' (from the pixels) instead",
    "fitzpatrick_pairs": "group by 'fitzpatrick_estimated' (from the pixels) instead",
    "monk": "few datasets have Monk labels (SCIN does); group by 'fitzpatrick' or an estimated grouping",
    "ita_category": "only DermSynth has a labelled 'ita'; group by 'ita_category_estimated' instead",
    "ita_category_estimated": _ESTIMATE_HINT,
    "fitzpatrick_estimated": _ESTIMATE_HINT,
}


# ----------------------------------------------------------------------------- groupings


def check_by(by: str) -> str:
    """``by`` when it is a grouping of :data:`GROUPINGS`."""
    if by not in GROUPINGS:
        raise DermretrError(f"unknown skin-tone grouping {by!r}; choose one of {', '.join(GROUPINGS)}")
    return by


def _scale(table: pd.DataFrame, column: str, lo: int, hi: int) -> np.ndarray:
    """Values of an integer scale column as floats (NaN unknown), refusing values off the scale."""
    raw = table[column]
    num = pd.to_numeric(raw.astype(object).where(raw.notna(), np.nan), errors="coerce").astype(float)
    num = num.to_numpy()
    bad = (raw.notna().to_numpy() & np.isnan(num)) | (~np.isnan(num) & ((num % 1 != 0) | (num < lo) | (num > hi)))
    if bad.any():
        shown = ", ".join(repr(v) for v in pd.unique(raw[bad].astype(object))[:5])
        raise DermretrError(f"column {column!r} has values off the {lo}..{hi} scale ({shown}); "
                            f"use {lo}..{hi}, empty when unknown")
    return num


def _from_ita(values: Any) -> np.ndarray:
    num = pd.to_numeric(pd.Series(values).astype(object), errors="coerce").astype(float).to_numpy()
    return np.array([ita_category(v) if np.isfinite(v) else UNKNOWN for v in num], dtype=object)


def _labels(table: pd.DataFrame, column: str, allowed: Sequence[str]) -> np.ndarray:
    raw = table[column].astype(object)
    known = raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    out = np.where(known, raw.astype(str).str.strip().to_numpy(), UNKNOWN).astype(object)
    bad = known & ~np.isin(out, list(allowed))
    if bad.any():
        shown = ", ".join(repr(v) for v in pd.unique(out[bad])[:5])
        raise DermretrError(f"column {column!r} has unknown skin-tone labels ({shown}); "
                            f"expected one of {', '.join(allowed)}")
    return out


class MissingColumn(DermretrError):
    """The grouping's column is not in the table."""


def _missing_column(by: str, columns: Sequence[str], table: pd.DataFrame) -> DermretrError:
    return MissingColumn(f"cannot group by {by!r}: the table has no {' or '.join(repr(c) for c in columns)} "
                         f"column ({len(table.columns)} columns: {', '.join(map(str, list(table.columns)[:12]))}"
                         f"{' ...' if len(table.columns) > 12 else ''}); {HINTS[by]}")


def skin_tone_groups(cases: pd.DataFrame, by: str = "fitzpatrick", *, _noun: str = "case") -> pd.Series:
    """The skin-tone group of every case (or query) as an ordered categorical.

    Parameters
    ----------
    cases : DataFrame
        A case table or a per-query table with the grouping's column:

        * ``fitzpatrick`` - ``fitzpatrick`` (1..6) as ``"I"`` .. ``"VI"``;
        * ``fitzpatrick_pairs`` - ``"I-II"``, ``"III-IV"``, ``"V-VI"`` from
          ``fitzpatrick``, or from ``skin_tone_group`` where the type is
          unknown (DDI publishes only the pairs);
        * ``monk`` - ``monk`` (1..10) as ``"1"`` .. ``"10"``;
        * ``ita_category`` - the ITA category (:data:`dermretr.color.ITA_CATEGORIES`)
          of a labelled ``ita`` column (DermSynth's ground truth), or an
          ``ita_category`` column;
        * ``ita_category_estimated``, ``fitzpatrick_estimated`` - the columns
          of :func:`dermretr.skin_tone.estimate_skin_tone` (or derived from ``ita_estimated``).
    by : str
        One of :data:`GROUPINGS`.

    Returns
    -------
    Series
        Categorical with the groups of :data:`GROUPINGS` ``[by]`` (lightest
        first) and ``"unknown"`` last; same index as ``cases``, named ``by``.

    Raises
    ------
    DermretrError
        For an unknown grouping, a missing column, values off the scale, or
        when no case has a known skin tone.

    Examples
    --------
    >>> cases = pd.DataFrame({"fitzpatrick": [1, 4, pd.NA], "skin_tone_group": [None, None, "V-VI"]})
    >>> skin_tone_groups(cases, "fitzpatrick").tolist()
    ['I', 'IV', 'unknown']
    >>> skin_tone_groups(cases, "fitzpatrick_pairs").tolist()
    ['I-II', 'III-IV', 'V-VI']
    """
    check_by(by)
    if not isinstance(cases, pd.DataFrame):
        raise DermretrError(f"skin-tone groups need a DataFrame, got {type(cases).__name__}")
    levels = GROUPINGS[by]
    if by in ("fitzpatrick", "monk"):
        if by not in cases.columns:
            raise _missing_column(by, [by], cases)
        num = _scale(cases, by, 1, 6 if by == "fitzpatrick" else 10)
        out = np.array([levels[int(v) - 1] if np.isfinite(v) else UNKNOWN for v in num], dtype=object)
    elif by == "fitzpatrick_pairs":
        have = [c for c in ("fitzpatrick", "skin_tone_group") if c in cases.columns]
        if not have:
            raise _missing_column(by, ["fitzpatrick", "skin_tone_group"], cases)
        out = np.full(len(cases), UNKNOWN, dtype=object)
        if "skin_tone_group" in cases.columns:
            out = _labels(cases, "skin_tone_group", levels)
        if "fitzpatrick" in cases.columns:
            num = _scale(cases, "fitzpatrick", 1, 6)
            out = np.array([_PAIR_OF[int(v)] if np.isfinite(v) else o for v, o in zip(num, out)], dtype=object)
    elif by == "fitzpatrick_estimated":
        if "fitzpatrick_estimated" in cases.columns:
            num = _scale(cases, "fitzpatrick_estimated", 1, 6)
            out = np.array([levels[int(v) - 1] if np.isfinite(v) else UNKNOWN for v in num], dtype=object)
        elif "ita_estimated" in cases.columns:
            out = np.array([_FITZ[ITA_FITZPATRICK[c] - 1] if c != UNKNOWN else UNKNOWN
                            for c in _from_ita(cases["ita_estimated"])], dtype=object)
        else:
            raise _missing_column(by, ["fitzpatrick_estimated", "ita_estimated"], cases)
    else:  # ita_category, ita_category_estimated
        column, source = (by, "ita") if by == "ita_category" else (by, "ita_estimated")
        if column in cases.columns:
            out = _labels(cases, column, levels)
        elif source in cases.columns:
            out = _from_ita(cases[source])
        else:
            raise _missing_column(by, [source, column], cases)
    if len(out) and (out == UNKNOWN).all():
        raise DermretrError(f"no {_noun} has a known {GROUPING_TITLES[by]} (all {len(out)} are unknown); "
                            f"{HINTS[by]}")
    cat = pd.Categorical(out, categories=[*levels, UNKNOWN], ordered=True)
    return pd.Series(cat, index=cases.index, name=by)


# ----------------------------------------------------------------------------- queries


def _check_same_data(per_query: pd.DataFrame, cases: pd.DataFrame) -> pd.Series:
    """Map each query to its row of ``cases``, refusing a per-query table of other data."""
    if "case_id" not in cases.columns:
        raise DermretrError("the case table has no 'case_id' column")
    ids = pd.Series(as_text(cases["case_id"]))
    if ids.duplicated().any():
        raise DermretrError(f"the case table has duplicate case ids (e.g. {ids[ids.duplicated()].iloc[0]!r})")
    pos = pd.Series(np.arange(len(cases)), index=ids.to_numpy())
    qids = as_text(per_query["case_id"])
    found = np.isin(qids, ids.to_numpy())
    if not found.all():
        shown = ", ".join(repr(v) for v in pd.unique(qids[~found])[:3])
        raise DermretrError(
            f"the per-query table does not come from this case table: {int((~found).sum())} of {len(qids)} query "
            f"case ids are not in it (e.g. {shown}); slice it with the dataset (and index) it was evaluated on"
        )
    rows = pos.reindex(qids).to_numpy()
    for col in ("patient_id", "diagnosis_group", "fitzpatrick", "monk"):
        if col not in per_query.columns or col not in cases.columns:
            continue
        a, b = per_query[col], cases[col].iloc[rows]
        if col in ("fitzpatrick", "monk"):
            x = pd.to_numeric(a.astype(object), errors="coerce").astype(float).to_numpy()
            y = pd.to_numeric(b.astype(object), errors="coerce").astype(float).to_numpy()
            same = (x == y) | (np.isnan(x) & np.isnan(y))
        else:
            same = as_text(a) == as_text(b)
        if not same.all():
            raise DermretrError(
                f"the per-query table does not match the case table: {int((~same).sum())} queries have another "
                f"{col!r} there (e.g. case {qids[~same][0]!r}); was it evaluated on another version of the data?"
            )
    return pd.Series(rows, index=per_query.index)


def query_cases(per_query: pd.DataFrame, cases: pd.DataFrame | None) -> pd.DataFrame:
    """Each query's row of ``cases`` (index and order of ``per_query``), or ``per_query`` itself without cases.

    ``cases`` must be the data the queries were evaluated on, as in :func:`query_groups`.
    """
    if cases is None:
        return per_query
    rows = _check_same_data(per_query, cases)
    return cases.iloc[rows.to_numpy()].set_axis(per_query.index)


def query_groups(per_query: pd.DataFrame, cases: pd.DataFrame | None, by: str) -> np.ndarray:
    """The skin-tone group of every query (object array), from ``cases`` when given, else the per-query table.

    ``cases`` must be the data the queries were evaluated on (same case ids,
    patients, diagnosis groups and skin types), else it is refused.
    """
    if cases is None:
        try:
            return skin_tone_groups(per_query, by, _noun="query").astype(object).to_numpy()
        except MissingColumn as exc:
            raise DermretrError(f"{exc} (or pass the case table: cases=...)") from None
    rows = _check_same_data(per_query, cases)
    tones = skin_tone_groups(cases, by).astype(object).to_numpy()
    return tones[rows.to_numpy()]


def gap_groups(levels: Sequence[str], counts: Sequence[int] | np.ndarray, min_group: int) -> tuple[list[int], str]:
    """Indices of the groups a gap is taken over, and a note when it falls back to small groups.

    The known groups with at least ``min_group`` queries; when fewer than two
    are that large, every known group with queries (noted); ``"unknown"`` never.

    >>> gap_groups(["I", "II", "VI", UNKNOWN], [30, 5, 25, 40], 20)
    ([0, 2], '')
    >>> gap_groups(["I", "II", "VI", UNKNOWN], [30, 5, 0, 40], 20)
    ([0, 1], 'includes groups with fewer than 20 queries')
    """
    known = [i for i, g in enumerate(levels) if g != UNKNOWN and counts[i] > 0]
    large = [i for i in known if counts[i] >= min_group]
    if len(large) >= 2:
        return large, ""
    if len(known) >= 2:
        return known, f"includes groups with fewer than {min_group} queries"
    return [], "fewer than two skin-tone groups with queries: no gap"


# ----------------------------------------------------------------------------- estimated groups


def is_estimated(by: str) -> bool:
    """Whether the grouping ``by`` comes from the pixels (estimated), not from labels."""
    return by.endswith("_estimated")


#: What an estimated grouping estimates, for sentences that already say "estimated from the pixels".
_ESTIMATED_NAMES = {"ita_category_estimated": "ITA category", "fitzpatrick_estimated": "Fitzpatrick type, via the ITA"}
_GAP_CONSEQUENCE = ("not part of the gap; intervals that resample queries leave out the estimate's own uncertainty "
                    "(dermretr.fairness.gap_uncertainty adds it)")


def estimate_note(by: str, n_unknown: int, n: int, noun: str = "queries", consequence: str = _GAP_CONSEQUENCE) -> str:
    """The warning that groups are estimated, with the share of unknowns (one line).

    >>> print(estimate_note("fitzpatrick_estimated", 3, 40))  # doctest: +NORMALIZE_WHITESPACE
    skin-tone groups are estimated from the pixels (Fitzpatrick type, via the ITA), not labelled: 3 of 40
    queries (7.5%) are unknown and not part of the gap; intervals that resample queries leave out the estimate's
    own uncertainty (dermretr.fairness.gap_uncertainty adds it)
    """
    share = n_unknown / n if n else float("nan")
    return (f"skin-tone groups are estimated from the pixels ({_ESTIMATED_NAMES.get(by, by)}), not labelled: "
            f"{n_unknown} of {n} {noun} ({share:.1%}) are unknown and {consequence}")


# ----------------------------------------------------------------------------- estimated against labelled


def ita_agreement(cases: pd.DataFrame, truth: str = "fitzpatrick",
                  estimate: str = "fitzpatrick_estimated") -> dict[str, Any]:
    """Agreement of an estimated skin-tone grouping with a labelled one.

    Returns ``{"n", "exact", "within_one", "ita_mae"}``: cases with a known
    label, the share estimated in the same group, within one group, and the
    mean absolute error of ``ita_estimated`` against a labelled ``ita``
    (DermSynth; NaN otherwise).  Cases whose estimate is unknown count as wrong.

    >>> cases = pd.DataFrame({"fitzpatrick": [1, 2, 3, 6], "fitzpatrick_estimated": [1, 3, 5, pd.NA]})
    >>> ita_agreement(cases)
    {'n': 4, 'exact': 0.25, 'within_one': 0.5, 'ita_mae': nan}
    """
    table = ita_confusion(cases, truth, estimate)
    return {k: table.attrs[k] for k in ("n", "exact", "within_one", "ita_mae")}


def ita_confusion(cases: pd.DataFrame, truth: str = "fitzpatrick",
                  estimate: str = "fitzpatrick_estimated") -> pd.DataFrame:
    """Confusion matrix of an estimated skin-tone grouping against a labelled one.

    Parameters
    ----------
    cases : DataFrame
        With both groupings' columns (see :func:`skin_tone_groups`), e.g.
        from :func:`dermretr.skin_tone.estimate_skin_tone` on DermSynth.
    truth, estimate : str
        Groupings of :data:`GROUPINGS` with scales of the same length.

    Returns
    -------
    DataFrame
        Counts: rows = labelled groups, columns = estimated groups (plus
        ``unknown`` when some estimates are missing); cases without a label
        are left out.  ``attrs``: ``n``, ``exact``, ``within_one``,
        ``ita_mae`` (see :func:`ita_agreement`), ``truth``, ``estimate``.

    Examples
    --------
    >>> cases = pd.DataFrame({"fitzpatrick": [1, 1, 2, 6], "fitzpatrick_estimated": [1, 2, 2, 5]})
    >>> m = ita_confusion(cases)
    >>> int(m.loc["I", "II"]), m.attrs["exact"], m.attrs["within_one"]
    (1, 0.5, 1.0)
    """
    t = skin_tone_groups(cases, truth).astype(object).to_numpy()
    e = skin_tone_groups(cases, estimate).astype(object).to_numpy()
    lt, le = GROUPINGS[truth], GROUPINGS[estimate]
    if len(lt) != len(le):
        raise DermretrError(f"{truth!r} ({len(lt)} groups) and {estimate!r} ({len(le)} groups) are not on one scale")
    known = t != UNKNOWN
    t, e = t[known], e[known]
    cols = [*le, UNKNOWN] if (e == UNKNOWN).any() else list(le)
    table = pd.crosstab(pd.Categorical(t, categories=lt), pd.Categorical(e, categories=cols), dropna=False)
    table.index.name, table.columns.name = GROUPING_TITLES[truth], GROUPING_TITLES[estimate]
    pos_t = np.array([lt.index(x) for x in t])
    pos_e = np.array([le.index(x) if x != UNKNOWN else -100 for x in e])
    mae = np.nan
    if "ita" in cases.columns and "ita_estimated" in cases.columns:
        diff = pd.to_numeric(cases["ita_estimated"], errors="coerce") - pd.to_numeric(cases["ita"], errors="coerce")
        err = diff.to_numpy(dtype=float)
        mae = float(np.nanmean(np.abs(err))) if np.isfinite(err).any() else np.nan
    table.attrs.update({"n": len(t), "exact": float(np.mean(pos_t == pos_e)),
                        "within_one": float(np.mean(np.abs(pos_t - pos_e) <= 1)), "ita_mae": mae,
                        "truth": truth, "estimate": estimate})
    return table


def select_groups(tones: np.ndarray, by: str, groups: Sequence[str] | str | None
                  ) -> tuple[np.ndarray | None, list[str]]:
    """``(keep, levels)``: the queries of the chosen ``groups`` (None: all) and the groups reported, in scale order.

    Every chosen group must be a group of ``by`` and have queries; without a choice, some query
    must have a known skin tone.  Errors name the groups and the queries each has.

    >>> tones = np.array(["I", "VI", "unknown", "I"], dtype=object)
    >>> keep, levels = select_groups(tones, "fitzpatrick", ["VI", "I"])
    >>> keep.tolist(), levels
    ([True, True, False, True], ['I', 'VI'])
    >>> select_groups(tones, "fitzpatrick", None)[1][-1]
    'unknown'
    """
    levels = [*GROUPINGS[by], UNKNOWN]
    if groups is None:
        if not (tones != UNKNOWN).any():
            raise DermretrError(f"no query has a known {GROUPING_TITLES[by]} ({len(tones)} queries, all unknown); "
                                f"{HINTS[by]}")
        return None, levels
    chosen = [str(g) for g in ([groups] if isinstance(groups, str) else groups)]
    odd = [g for g in chosen if g not in levels]
    if odd:
        raise DermretrError(f"no group {odd[0]!r} in {by!r}; groups: {', '.join(levels)}")
    per_group = {g: int((tones == g).sum()) for g in levels}
    empty = [g for g in chosen if per_group[g] == 0]
    if empty:
        have = ", ".join(f"{g} {n}" for g, n in per_group.items() if n)
        raise DermretrError(f"group(s) {', '.join(map(repr, empty))} of {by!r} have no queries (queries per "
                            f"group: {have})")
    return np.isin(tones, chosen), [g for g in levels if g in chosen]
