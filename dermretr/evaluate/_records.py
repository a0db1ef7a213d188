"""The records of ``metrics.json`` (mean, bootstrap interval, query count), per-class and results tables."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import DermretrError
from .._io import atomic_path, claim_file
from ..stats import bootstrap_ci, check_average, column_classes, macro_by, macro_mean, metric_columns
from ._metrics import RECORD_METRICS, usable_queries

__all__ = [
    "RECORD_KEYS", "metric_records", "per_class", "results_table", "is_metrics_file", "is_per_query_file",
    "write_metrics",
]

#: The keys of one record, in order.
RECORD_KEYS = ("run", "method", "protocol", "average", "metric", "k", "value", "ci_low", "ci_high", "n_queries",
               "split_source")


def _none_if_nan(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _split_metric(column: str) -> tuple[str, int | None]:
    name, _, k = column.partition("@")
    return name, (int(k) if k else None)


def _metric_order(columns: Sequence[str]) -> list[str]:
    def key(c):
        name, k = _split_metric(c)
        return RECORD_METRICS.index(name), k or 0

    return sorted(columns, key=key)


def _metric_rows(per_query: pd.DataFrame, n_boot: int, level: float, seed: int,
                 by: str | None = None) -> list[dict]:
    """``metric, k, value, ci_low, ci_high, n_queries`` for every metric column (macro over ``by`` if given)."""
    usable = usable_queries(per_query)
    cols = _metric_order(metric_columns(per_query))
    values = usable[cols].to_numpy(dtype=np.float64) if cols else np.zeros((len(usable), 0))
    if by is None:
        low, high = bootstrap_ci(values, n_boot=n_boot, level=level, seed=seed)
        means = values.mean(axis=0) if len(usable) else np.full(len(cols), np.nan)
    else:
        codes = column_classes(usable, by)
        low, high = bootstrap_ci(values, n_boot=n_boot, level=level, seed=seed, groups=codes)
        means = macro_mean(values, codes)
    rows = []
    for j, c in enumerate(cols):
        name, k = _split_metric(c)
        rows.append({"metric": name, "k": k, "value": _none_if_nan(means[j]), "ci_low": _none_if_nan(low[j]),
                     "ci_high": _none_if_nan(high[j]), "n_queries": int(len(usable))})
    return rows


def metric_records(per_query: pd.DataFrame, run: str, method: str, protocol: str, n_boot: int = 1000,
                   level: float = 0.95, seed: int = 0, *, by: str | None = None,
                   average: str | Sequence[str] | None = None, split_source: dict | None = None) -> list[dict]:
    """The records of ``metrics.json`` from per-query metrics: mean, bootstrap CI and query count.

    Parameters
    ----------
    per_query : DataFrame
        From :func:`rank_metrics` (or a protocol); needs ``n_relevant``.
        Queries without a relevant case are left out.
    run, method, protocol : str
        Copied into every record (``method`` is the retriever kind).
    n_boot, level, seed
        See :func:`bootstrap_ci`; ``n_boot=0`` gives null bounds.
    by : str, optional
        Classes of the macro average (a query column; missing values are a class); default
        ``target_range`` for tone-protocol tables, else ``diagnosis_group``.
    average : "micro", "macro", both, or None
        Which averages to record.  None (default): micro, and macro too when
        the table has the column ``by`` (a bare :func:`rank_metrics` table has
        none); naming "macro" requires it.
    split_source : dict, optional
        Where the split of the evaluated data came from
        (:func:`dermretr.data.split_source`), copied into every record (None: not known).

    Returns
    -------
    list of dict
        One record per average, metric and cut-off with the keys
        :data:`RECORD_KEYS` (all micro records first, in the order they always
        had, then the macro ones, whose interval is a stratified bootstrap);
        ``k`` is None for ``mrr``, missing values are None (JSON null).

    Examples
    --------
    >>> from dermretr.evaluate import rank_metrics
    >>> pq = rank_metrics(np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]),
    ...                   np.array([[True, False], [True, False], [False, False]]), ks=(1,))
    >>> recs = metric_records(pq, "run-a", "full", "case", n_boot=200)
    >>> [(r["average"], r["metric"], r["k"], r["value"], r["n_queries"]) for r in recs]
    [('micro', 'recall', 1, 0.5, 2), ('micro', 'precision', 1, 0.5, 2), ('micro', 'map', 1, 0.5, 2),
     ('micro', 'ndcg', 1, 0.5, 2), ('micro', 'mrr', None, 0.75, 2)]
    >>> list(recs[0]) == list(RECORD_KEYS)
    True

    With the query's diagnosis group, the macro records follow (three NEV
    queries hit, the MEL one misses):

    >>> pq = pd.DataFrame({"diagnosis_group": ["NEV", "NEV", "NEV", "MEL"], "n_relevant": 1,
    ...                    "recall@1": [1.0, 1.0, 1.0, 0.0]})
    >>> [(r["average"], r["value"]) for r in metric_records(pq, "run-a", "full", "case", n_boot=0)]
    [('micro', 0.75), ('macro', 0.5)]
    """
    by = macro_by(per_query, by)
    averages: tuple[str, ...]
    if average is None:
        averages = ("micro", "macro") if isinstance(by, str) and by in per_query.columns else ("micro",)
    else:
        averages = (average,) if isinstance(average, str) else tuple(average)
        if not averages:
            raise DermretrError("give at least one average: 'micro', 'macro' or both")
        averages = tuple(dict.fromkeys(check_average(a) for a in averages))
    head = {"run": str(run), "method": str(method), "protocol": str(protocol)}
    tail = {"split_source": dict(split_source) if split_source is not None else None}
    return [{**head, "average": a, **row, **tail} for a in averages
            for row in _metric_rows(per_query, n_boot, level, seed, by=by if a == "macro" else None)]


def per_class(per_query: pd.DataFrame, by: str = "diagnosis_group", n_boot: int = 1000, level: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """Metrics per value of a query column (diagnosis group, skin type ...), as a tidy table.

    Parameters
    ----------
    per_query : DataFrame
        Per-query metrics with the query's columns (from a protocol).
    by : str
        The column to group queries by; missing values form their own class.
    n_boot, level, seed
        Bootstrap CI within each class (see :func:`bootstrap_ci`).

    Returns
    -------
    DataFrame
        Columns ``by, metric, k, value, ci_low, ci_high, n_queries``: one row per
        class, metric and cut-off (``n_queries`` counts queries with a relevant case).

    Examples
    --------
    >>> pq = pd.DataFrame({"diagnosis_group": ["MEL", "NEV", "MEL"], "n_relevant": [2, 1, 1],
    ...                    "recall@1": [1.0, 0.0, 0.0], "mrr": [1.0, 0.5, 0.25]})
    >>> per_class(pq, n_boot=0)[["diagnosis_group", "metric", "k", "value", "n_queries"]]
      diagnosis_group  metric     k  value  n_queries
    0             MEL  recall     1  0.500          2
    1             MEL     mrr  <NA>  0.625          2
    2             NEV  recall     1  0.000          1
    3             NEV     mrr  <NA>  0.500          1
    """
    if by not in per_query.columns:
        raise DermretrError(f"cannot group queries by {by!r}: no such column (columns: {list(per_query.columns)})")
    rows = []
    for value, group in per_query.groupby(by, dropna=False, sort=True, observed=True):
        for row in _metric_rows(group, n_boot, level, seed):
            rows.append({by: value, **row})
    out = pd.DataFrame(rows, columns=[by, "metric", "k", "value", "ci_low", "ci_high", "n_queries"])
    out["k"] = out["k"].astype("Int64")
    for c in ("value", "ci_low", "ci_high"):
        out[c] = out[c].astype(float)
    return out


def results_table(records: Sequence[dict], decimals: int = 3) -> pd.DataFrame:
    """A wide table of records for printing: one row per run, one column per metric.

    Cells read ``"value [ci_low, ci_high]"`` (the value alone without a CI).
    Rows are indexed by run and method (and protocol when records mix
    protocols); a last column gives the number of queries.  Macro records
    (``average="macro"``) get a column ``"METRIC (macro)"`` right after the
    micro one, ``"METRIC"`` (records without ``average`` are micro).

    Examples
    --------
    >>> recs = [{"run": "a", "method": "full", "protocol": "case", "metric": "recall", "k": 1, "value": 0.512,
    ...          "ci_low": 0.44, "ci_high": 0.58, "n_queries": 60},
    ...         {"run": "a", "method": "full", "protocol": "case", "metric": "mrr", "k": None, "value": 0.6,
    ...          "ci_low": None, "ci_high": None, "n_queries": 60}]
    >>> results_table(recs).to_dict("records")
    [{'recall@1': '0.512 [0.44, 0.58]', 'mrr': '0.600', 'queries': 60}]
    >>> macro = dict(recs[0], average="macro", value=0.31, ci_low=0.2, ci_high=0.43)
    >>> list(results_table(recs + [macro]).columns)
    ['recall@1', 'recall@1 (macro)', 'mrr', 'queries']
    """
    if not records:
        raise DermretrError("no evaluation records to tabulate")
    protocols = list(dict.fromkeys(r["protocol"] for r in records))
    index = ["run", "method"] + (["protocol"] if len(protocols) > 1 else [])
    rows: dict[tuple, dict] = {}
    columns: list[str] = []
    for r in records:
        col = r["metric"] if r.get("k") is None else f"{r['metric']}@{r['k']}"
        average = r.get("average") or "micro"
        check_average(average)
        if average == "macro":
            col += " (macro)"
        if col not in columns:
            columns.append(col)
        key = tuple(r[i] for i in index)
        row = rows.setdefault(key, {})
        v, lo, hi = r.get("value"), r.get("ci_low"), r.get("ci_high")
        if v is None:
            cell = "n/a"
        elif lo is None or hi is None:
            cell = f"{v:.{decimals}f}"
        else:
            cell = f"{v:.{decimals}f} [{lo:.{max(decimals - 1, 1)}f}, {hi:.{max(decimals - 1, 1)}f}]"
        row[col] = cell
        row["queries"] = int(r.get("n_queries") or 0)
    frame = pd.DataFrame(list(rows.values()), index=pd.MultiIndex.from_tuples(list(rows), names=index))
    micro = _metric_order(list(dict.fromkeys(c.removesuffix(" (macro)") for c in columns)))
    ordered = [c for m in micro for c in (m, f"{m} (macro)") if c in columns]
    return frame[ordered + ["queries"]].fillna("")


def is_metrics_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a metrics file :func:`write_metrics` wrote (a JSON list of metric records).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> _ = p.write_text('[{"run": "a", "metric": "mrr", "k": null, "value": 0.5}]')
    >>> is_metrics_file(p)
    True
    >>> _ = p.write_text('{"my": "settings"}')
    >>> is_metrics_file(p)
    False
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, list) and all(isinstance(r, dict) and {"metric", "value"} <= set(r) for r in data)


def is_per_query_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a per-query CSV that dermretr wrote (its header has case_id, run, method, protocol)."""
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        return False
    return {"case_id", "run", "method", "protocol"} <= set(header)


def write_metrics(records: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write records to a JSON file (a list of objects) atomically and return its path.

    >>> import tempfile, pathlib
    >>> p = write_metrics([{"run": "a", "metric": "mrr", "k": None, "value": 0.5}],
    ...                   pathlib.Path(tempfile.mkdtemp()) / "metrics.json")
    >>> json.loads(p.read_text())[0]["k"] is None
    True
    """
    path = claim_file(path, recognise=is_metrics_file)
    clean = [{k: _none_if_nan(v) if isinstance(v, float) else v for k, v in r.items()} for r in records]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n")
    return path
