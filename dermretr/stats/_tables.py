"""Per-query metric tables: their metric columns, checks, and the pairing of two tables query by query."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._checks import METRIC_RE
from .._errors import DermretrError

__all__ = ["as_text", "metric_columns", "check_per_query", "check_metrics", "pair_tables"]


def as_text(series: pd.Series) -> np.ndarray:
    """The values of a column as strings (object array), a missing value as ``""``.

    >>> as_text(pd.Series(["a", None, 3, float("nan")])).tolist()
    ['a', '', '3', '']
    """
    return np.array(["" if (v is None or (not isinstance(v, str) and pd.isna(v))) else str(v)
                     for v in series.astype(object)], dtype=object)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The metric columns of a per-query table (``recall@K`` ... ``mrr``), in table order.

    >>> metric_columns(pd.DataFrame(columns=["case_id", "n_relevant", "recall@1", "mrr"]))
    ['recall@1', 'mrr']
    """
    return [c for c in frame.columns if isinstance(c, str) and METRIC_RE.match(c)]


def check_per_query(per_query, what: str = "per-query table") -> pd.DataFrame:
    """``per_query`` when it is a non-empty per-query table of one run (with ``case_id`` and ``n_relevant``)."""
    if not isinstance(per_query, pd.DataFrame):
        raise DermretrError(f"the {what} must be a DataFrame (from dermretr.evaluate), got {type(per_query).__name__}")
    missing = [c for c in ("case_id", "n_relevant") if c not in per_query.columns]
    if missing:
        raise DermretrError(f"the {what} lacks column(s) {missing}: use the per-query metrics of "
                            "dermretr.evaluate (case_search, modify_search, evaluate_run)")
    if len(per_query) == 0:
        raise DermretrError(f"the {what} has no queries")
    if "run" in per_query.columns and per_query["run"].nunique(dropna=False) > 1:
        runs = ", ".join(map(str, per_query["run"].unique()[:5]))
        raise DermretrError(f"the {what} mixes several runs ({runs}); slice one run at a time, e.g. "
                            "per_query[per_query['run'] == NAME]")
    return per_query


def check_metrics(per_query: pd.DataFrame, metrics) -> tuple[str, ...]:
    """The metric names ``metrics`` (one name or several, duplicates dropped), each a column of ``per_query``."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise DermretrError("give at least one metric, e.g. metrics=('recall@1', 'map@10')")
    available = metric_columns(per_query)
    missing = [m for m in metrics if m not in available]
    if missing:
        raise DermretrError(f"metric(s) {missing} not in the per-query table; it has {', '.join(available) or 'none'}"
                            " (evaluate with the cut-offs you need, e.g. --k 1 5 10)")
    return tuple(dict.fromkeys(metrics))


def pair_tables(per_query_a: pd.DataFrame, per_query_b: pd.DataFrame) -> np.ndarray:
    """Row of ``per_query_b`` for every row of ``per_query_a`` (same query), refusing unpaired tables."""
    keys = ["case_id"] + [c for c in ("modification_text", "target_case_id", "criterion", "to_value",
                                      "target_range") if c in per_query_a.columns and c in per_query_b.columns]

    def key(t):
        return pd.Series(["\x1f".join(parts) for parts in zip(*(as_text(t[c]) for c in keys))])

    ka, kb = key(per_query_a), key(per_query_b)
    for k, name in ((ka, "first"), (kb, "second")):
        if k.duplicated().any():
            raise DermretrError(f"the {name} per-query table has the same query twice "
                                f"({k[k.duplicated()].iloc[0].split(chr(31))[0]!r}); cannot pair queries")
    only_a, only_b = ~ka.isin(kb).to_numpy(), ~kb.isin(ka).to_numpy()
    if only_a.any() or only_b.any():
        raise DermretrError(
            f"the two per-query tables cover different queries ({int(only_a.sum())} only in the first, "
            f"{int(only_b.sum())} only in the second, of {len(ka)} and {len(kb)}); compare runs evaluated on the "
            "same data, split and protocol"
        )
    rows = pd.Series(np.arange(len(kb)), index=kb.to_numpy()).reindex(ka.to_numpy()).to_numpy()
    na = per_query_a["n_relevant"].to_numpy()
    nb = per_query_b["n_relevant"].to_numpy()[rows]
    if (na != nb).any():
        raise DermretrError(f"the two per-query tables disagree on the relevant cases of {int((na != nb).sum())} "
                            "queries (another relevance, gallery or dataset version?); compare like with like")
    return rows
