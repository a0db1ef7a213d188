"""Evaluation metrics: rank_metrics by hand, ties, metric records, per-class and results tables, metrics.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DermretrError
from dermretr.evaluate import (
    RECORD_KEYS,
    metric_records,
    per_class,
    rank_metrics,
    results_table,
    summarize_metrics,
    write_metrics,
)

L2 = math.log2


# ----------------------------------------------------------------------------- metrics by hand


def test_rank_metrics_match_hand_computed_values():
    scores = np.tile([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], (3, 1))
    relevant = np.array([[0, 1, 0, 1, 0, 1],    # hits at ranks 2, 4, 6
                         [1, 0, 0, 1, 0, 0],    # own case (excluded) at rank 1, a hit at rank 4 -> 3
                         [0, 0, 0, 0, 0, 0]], dtype=bool)
    exclude = np.zeros_like(relevant)
    exclude[1, 0] = True
    pq = rank_metrics(scores, relevant, exclude, ks=(1, 3, 5, 10))
    first, second, third = (pq.iloc[i] for i in range(3))
    assert pq["n_relevant"].tolist() == [3, 1, 0]
    ideal3 = 1 + 1 / L2(3) + 1 / L2(4)
    expected_first = {"recall@1": 0, "recall@3": 1, "recall@5": 1, "precision@1": 0, "precision@3": 1 / 3,
                      "precision@5": 2 / 5, "precision@10": 3 / 10, "map@3": (1 / 2) / 3,
                      "map@5": (1 / 2 + 2 / 4) / 3, "map@10": (1 / 2 + 2 / 4 + 3 / 6) / 3,
                      "ndcg@3": (1 / L2(3)) / ideal3, "ndcg@5": (1 / L2(3) + 1 / L2(5)) / ideal3, "mrr": 1 / 2}
    for k, v in expected_first.items():
        assert first[k] == pytest.approx(v), k
    expected_second = {"recall@1": 0, "recall@3": 1, "precision@3": 1 / 3, "precision@5": 1 / 5, "map@3": 1 / 3,
                       "map@5": 1 / 3, "ndcg@3": (1 / L2(4)) / 1, "mrr": 1 / 3}
    for k, v in expected_second.items():
        assert second[k] == pytest.approx(v), k
    assert (third.drop("n_relevant") == 0).all()
    summary = summarize_metrics(pq)
    assert summary["n_queries"] == 2 and summary["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_ties_are_ordered_as_asked():
    scores = np.array([[0.5, 0.5, 0.5, 0.1]])
    relevant = np.array([[False, True, False, False]])
    mrr = {t: rank_metrics(scores, relevant, ks=(1,), ties=t)["mrr"].item()
           for t in ("stable", "pessimistic", "optimistic")}
    assert mrr == pytest.approx({"stable": 1 / 2, "pessimistic": 1 / 3, "optimistic": 1.0})
    # an excluded case never takes a rank, whatever its score
    excl = np.array([[False, False, True, False]])
    assert rank_metrics(scores, relevant, excl, ks=(1,), ties="pessimistic")["mrr"].item() == pytest.approx(1 / 2)
    with pytest.raises(DermretrError, match="ties must be one of"):
        rank_metrics(scores, relevant, ties="random")
    with pytest.raises(DermretrError, match="cut-offs K must be positive integers"):
        rank_metrics(scores, relevant, ks=(0,))


# ----------------------------------------------------------------------------- records and tables


def _per_query(n=40, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, 12))
    relevant = rng.uniform(size=(n, 12)) < 0.3
    relevant[np.arange(n), rng.integers(0, 12, n)] = True
    relevant[0] = False  # a query without relevant cases
    pq = rank_metrics(scores, relevant, ks=(1, 5))
    pq.insert(0, "diagnosis_group", ["MEL", "NEV", "SK", "NEV"] * (n // 4))
    pq["fitzpatrick"] = pd.array([1, 2, pd.NA, 4] * (n // 4), dtype="Int64")
    return pq


def test_metric_records_keys_values_and_intervals():
    pq = _per_query()
    recs = metric_records(pq, "run-a", "full", "case", n_boot=300)
    assert all(tuple(r) == RECORD_KEYS for r in recs)
    order = [("recall", 1), ("recall", 5), ("precision", 1), ("precision", 5), ("map", 1), ("map", 5), ("ndcg", 1),
             ("ndcg", 5), ("mrr", None)]
    # micro records first (as before averages existed), then macro over diagnosis groups
    assert [(r["average"], r["metric"], r["k"]) for r in recs] == ([("micro", *o) for o in order]
                                                                   + [("macro", *o) for o in order])
    summary = summarize_metrics(pq)
    usable = pq[pq["n_relevant"] > 0]
    for r in recs:
        col = r["metric"] if r["k"] is None else f"{r['metric']}@{r['k']}"
        want = summary[col] if r["average"] == "micro" else usable.groupby("diagnosis_group")[col].mean().mean()
        assert r["value"] == pytest.approx(want)
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["n_queries"] == len(pq) - 1 == summary["n_queries"]
        assert (r["run"], r["method"], r["protocol"]) == ("run-a", "full", "case")
    assert summarize_metrics(pq, average="macro")["recall@1"] == pytest.approx(recs[9]["value"])
    assert metric_records(pq, "r", "m", "case", n_boot=300) == metric_records(pq, "r", "m", "case", n_boot=300)
    none = metric_records(pq, "r", "m", "case", n_boot=0)
    assert none[0]["ci_low"] is None and none[0]["ci_high"] is None


def test_per_class_table_is_tidy_and_matches_group_means():
    pq = _per_query()
    table = per_class(pq, by="diagnosis_group", n_boot=200)
    assert list(table.columns) == ["diagnosis_group", "metric", "k", "value", "ci_low", "ci_high", "n_queries"]
    assert sorted(table["diagnosis_group"].unique()) == ["MEL", "NEV", "SK"]
    usable = pq[pq["n_relevant"] > 0]
    for grp, sub in usable.groupby("diagnosis_group"):
        row = table[(table["diagnosis_group"] == grp) & (table["metric"] == "map") & (table["k"] == 5)].iloc[0]
        assert row["value"] == pytest.approx(sub["map@5"].mean())
        assert row["n_queries"] == len(sub)
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
    # missing skin type is its own class
    by_fitz = per_class(pq, by="fitzpatrick", n_boot=0)
    assert by_fitz["fitzpatrick"].isna().any() and len(by_fitz) == 4 * 9
    with pytest.raises(DermretrError, match="no such column"):
        per_class(pq, by="monk")


def test_results_table_and_metrics_file(tmp_path):
    recs = (metric_records(_per_query(seed=1), "composed", "full", "case", n_boot=100)
            + metric_records(_per_query(seed=2), "image-only", "image", "case", n_boot=100))
    table = results_table(recs)
    assert list(table.index) == [("composed", "full"), ("image-only", "image")]
    assert list(table.columns)[:4] == ["recall@1", "recall@1 (macro)", "recall@5", "recall@5 (macro)"]
    assert "mrr" in table.columns and "mrr (macro)" in table.columns
    r = recs[0]
    assert table.iloc[0]["recall@1"] == f"{r['value']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
    assert table.iloc[0]["queries"] == r["n_queries"]
    path = write_metrics(recs, tmp_path / "m" / "metrics.json")
    assert json.loads(path.read_text()) == recs
    with pytest.raises(DermretrError, match="is a folder"):
        write_metrics(recs, tmp_path)
    with pytest.raises(DermretrError, match="no evaluation records"):
        results_table([])


# ----------------------------------------------------------------------------- macro records


def _grouped(n: int, seed: int = 0) -> pd.DataFrame:
    """90% NEV queries that mostly hit, 10% MEL that mostly miss."""
    rng = np.random.default_rng(seed)
    groups = np.where(np.arange(n) < int(0.9 * n), "NEV", "MEL")
    p = np.where(groups == "NEV", 0.9, 0.2)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "diagnosis_group": groups, "n_relevant": 1,
                         "recall@1": (rng.random(n) < p).astype(float), "map@10": rng.random(n) * p})


def test_metric_records_macro_values_and_intervals():
    pq = _grouped(200, seed=3)
    recs = metric_records(pq, "r", "m", "case", n_boot=500)
    assert all(tuple(r) == RECORD_KEYS for r in recs) and "average" in RECORD_KEYS
    assert [r["average"] for r in recs] == ["micro"] * 2 + ["macro"] * 2
    means = pq.groupby("diagnosis_group")[["recall@1", "map@10"]].mean().mean()
    for r in recs:
        col = r["metric"] if r["k"] is None else f"{r['metric']}@{r['k']}"
        want = means[col] if r["average"] == "macro" else pq[col].mean()
        assert r["value"] == pytest.approx(want) and r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["n_queries"] == 200
    # the grouping column is configurable, and macro can be asked for alone
    pq["site"] = np.where(np.arange(200) % 2 == 0, "a", "b")
    site = metric_records(pq, "r", "m", "case", n_boot=0, by="site", average="macro")
    assert [r["average"] for r in site] == ["macro"] * 2
    assert site[0]["value"] == pytest.approx(pq.groupby("site")["recall@1"].mean().mean())
    assert [r["average"] for r in metric_records(pq, "r", "m", "case", n_boot=0, by="none")] == ["micro"] * 2
    with pytest.raises(DermretrError, match="cannot macro-average over 'none'"):
        metric_records(pq, "r", "m", "case", n_boot=0, by="none", average="macro")
    with pytest.raises(DermretrError, match="average must be 'micro' or 'macro'"):
        metric_records(pq, "r", "m", "case", n_boot=0, average="weighted")


def test_results_table_shows_macro_beside_micro():
    recs = metric_records(_grouped(80), "composed", "full", "case", n_boot=100)
    table = results_table(recs)
    assert list(table.columns) == ["recall@1", "recall@1 (macro)", "map@10", "map@10 (macro)", "queries"]
    macro = next(r for r in recs if r["average"] == "macro" and r["metric"] == "recall")
    assert table.iloc[0]["recall@1 (macro)"].startswith(f"{macro['value']:.3f} [")
    # records written before averages existed still tabulate, as micro
    old = [{k: v for k, v in r.items() if k != "average"} for r in recs if r["average"] == "micro"]
    assert list(results_table(old).columns) == ["recall@1", "map@10", "queries"]
