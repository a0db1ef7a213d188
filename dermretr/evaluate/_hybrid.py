"""Findings fusion: a model's scores plus the agreement of annotated findings, where the database carries them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._errors import DermretrError
from ._case import case_scores, scores_search
from ._floors import criteria_scores, findings_columns
from ._metrics import summarize_metrics
from ._tone import tone_queries, tone_scores, tone_scores_search

__all__ = ["FINDINGS_WEIGHTS", "hybrid_scores", "choose_findings_weight", "check_findings_weight"]

FINDINGS_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""The weights :func:`choose_findings_weight` tries by default: 0 (the model alone) to 8 (one criterion's
agreement, 8/14 for seven criteria, outweighs most differences of cosine scores: findings first, the model
ordering cases with equal findings)."""


def hybrid_scores(q: pd.DataFrame, g: pd.DataFrame, scores: np.ndarray, weight: float) -> np.ndarray:
    """A model's scores ``[Q, G]`` plus ``weight`` times the agreement of annotated findings.

    The agreement is :func:`dermretr.floors.criteria_scores` (in [0, 1]: the
    criteria_match floor's ranking), so ``weight=0`` is the model alone and a
    large weight ranks by findings first, the model breaking their ties.  Only
    for a database whose cases carry annotated 7-point findings (the gallery
    side reads them, not the pixels): report it as its own method, never as the
    model's score.

    >>> q = pd.DataFrame({"streaks": ["irregular"]})
    >>> g = pd.DataFrame({"streaks": ["irregular", "absent"]})
    >>> hybrid_scores(q, g, np.array([[0.2, 0.5]]), weight=1.0).tolist()
    [[1.2, 0.5]]
    """
    weight = _number(weight)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(q), len(g)):
        raise DermretrError(f"scores {scores.shape} do not fit {len(q)} queries and {len(g)} gallery cases")
    return scores if weight == 0 else scores + weight * criteria_scores(q, g)


def choose_findings_weight(retriever, cases: pd.DataFrame, query_split: str = "val",
                           gallery_splits: Sequence[str] = ("train",), relevant: str = "diagnosis_group",
                           weights: Sequence[float] = FINDINGS_WEIGHTS, metric: str = "map@10",
                           alpha: float | None = None, average: str = "macro", protocol: str = "case",
                           tone_scale: str = "fitzpatrick", tone_style: str = "scale") -> tuple[float, pd.Series]:
    """The findings weight of :func:`hybrid_scores` that ranks the validation cases best.

    The ``query_split`` cases (image plus findings text, as in
    :func:`~dermretr.evaluate.case_search`; with ``protocol="tone"``, their
    tone queries of :func:`~dermretr.evaluate.tone_search`, on ``tone_scale``
    in ``tone_style``, macro over target ranges) search the ``gallery_splits``
    cases with each weight; the one with the highest ``average`` of ``metric``
    wins, the lowest weight on a tie (so the model alone unless findings help).
    Never choose it on the cases you report.

    Returns the weight and every weight's value.

    >>> class Blind:  # a model that sees nothing: every score equal, ranked in table order
    ...     def encode(self, paths, *_, **__):
    ...         return {"global": np.ones((len(paths), 2)), "local": None}
    ...     encode_queries = encode_targets = encode
    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("pqrs"), "image_path": list("wxyz"),
    ...     "diagnosis": ["melanoma", "blue nevus", "melanoma", "blue nevus"],
    ...     "diagnosis_group": ["MEL", "NEV", "MEL", "NEV"], "split": ["train", "train", "val", "val"],
    ...     "streaks": ["irregular", "absent", "irregular", "absent"]})
    >>> weight, values = choose_findings_weight(Blind(), cases, weights=(0, 1), metric="recall@1")
    >>> weight, values.tolist()
    (1, [0.5, 1.0])
    """
    weights = [_number(w) for w in weights]
    if not weights:
        raise DermretrError("choose_findings_weight needs at least one weight to try")
    if protocol not in ("case", "tone"):
        raise DermretrError(f"a findings weight is for the case and tone protocols, not {protocol!r}")
    k = _cutoff(metric)
    if protocol == "tone":
        tq = tone_queries(cases, query_split, gallery_splits, scale=tone_scale, relevant=relevant, style=tone_style)
        q, g, s, by = tq.rows, tq.gallery, tone_scores(retriever, tq, alpha=alpha), "target_range"

        def search(scores: np.ndarray) -> pd.DataFrame:
            return tone_scores_search(tq, scores, ks=(k,))
    else:
        q, g, s, exclude = case_scores(retriever, cases, query_split, gallery_splits, alpha=alpha)
        by = None  # summarize_metrics' default classes

        def search(scores: np.ndarray) -> pd.DataFrame:
            return scores_search(q, g, scores, exclude, relevant=relevant, ks=(k,))
    agreement = criteria_scores(q, g)  # once: hybrid_scores(q, g, s, w) is s + w * agreement
    values: dict[float, float] = {}
    for w in weights:
        values[w] = summarize_metrics(search(s + w * agreement), average=average, by=by).get(metric, math.nan)
    if all(math.isnan(v) for v in values.values()):
        raise DermretrError(f"no {query_split!r} query has a relevant case in {list(gallery_splits)}: "
                            "no findings weight can be chosen")
    best = max(weights, key=lambda w: (-math.inf if math.isnan(values[w]) else values[w], -w))
    return best, pd.Series(values, name=f"{metric} ({average})").rename_axis("findings_weight")


def check_findings_weight(weight, protocol: str = "case", cases: pd.DataFrame | None = None,
                          split: str = "test", *, relevant: str = "diagnosis_group", tone_scale: str | None = None):
    """``weight`` (a number >= 0, ``"val"`` or None) checked against the protocol and the data; else a clear error.

    With ``tone_scale`` (the tone protocol, ``cases`` already carrying any
    skin-tone estimate the scale needs), ``"val"`` also needs tone queries
    among the val cases, against the train cases.

    >>> check_findings_weight(0.5), check_findings_weight(None), check_findings_weight("val")
    (0.5, None, 'val')
    >>> check_findings_weight(-1)
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: a findings weight must be a finite number >= 0, got -1
    """
    if weight is None:
        return None
    if isinstance(weight, str):
        if weight != "val":
            raise DermretrError(f"a findings weight is a number >= 0 or 'val', got {weight!r}")
    elif isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)) \
            or not math.isfinite(weight) or weight < 0:
        raise DermretrError(f"a findings weight must be a finite number >= 0, got {weight!r}")
    if protocol not in ("case", "tone"):
        raise DermretrError(f"a findings weight is for the case and tone protocols, not {protocol!r}")
    if cases is not None and not findings_columns(cases):
        raise DermretrError("a findings weight needs cases with annotated 7-point findings (derm7pt, ph2 and "
                            "DermSynth have them); evaluate without it")
    if weight == "val" and cases is not None:
        if split != "test":
            raise DermretrError(f"the findings weight is chosen on the val cases, so the queries cannot be "
                                f"{split!r}; query the test split or give a number")
        if not (cases["split"].astype(str) == "val").any():
            raise DermretrError("the findings weight is chosen on the val cases and this data has none; "
                                "give a number")
        if protocol == "tone" and tone_scale is not None:
            try:
                tone_queries(cases, "val", ("train",), scale=tone_scale, relevant=relevant, texts=False)
            except DermretrError:
                raise DermretrError(
                    "the findings weight is chosen on the val cases' tone queries and this data has none (no val "
                    f"case with a known {tone_scale} skin tone has a train case of its {relevant} in another "
                    "range); give a number") from None
    return weight


def _number(weight) -> float:
    if weight is None or isinstance(weight, str):
        raise DermretrError(f"a findings weight must be a finite number >= 0, got {weight!r}")
    return check_findings_weight(weight)


def _cutoff(metric: str) -> int:
    name, _, k = metric.partition("@")
    if name not in ("recall", "precision", "map", "ndcg") or not k.isdigit() or int(k) < 1:
        raise DermretrError(f"unknown metric {metric!r} to choose a findings weight by; use e.g. 'map@10'")
    return int(k)
