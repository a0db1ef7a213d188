"""dermretr.stats: bootstrap intervals, macro means and the paired comparison of two runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DermretrError
from dermretr.evaluate import bootstrap_ci, paired_difference, summarize_metrics
from dermretr.stats import (
    as_text,
    check_metrics,
    check_per_query,
    class_codes,
    class_weights,
    macro_mean,
    pair_tables,
    sign_flip_p,
    stratified_means,
)


def test_bootstrap_ci_contains_the_mean_narrows_and_is_deterministic():
    rng = np.random.default_rng(3)
    small = rng.integers(0, 2, 30).astype(float)
    big = rng.integers(0, 2, 3000).astype(float)
    lo, hi = bootstrap_ci(small, n_boot=2000, seed=0)
    assert lo < small.mean() < hi
    blo, bhi = bootstrap_ci(big, n_boot=2000, seed=0)
    assert blo < big.mean() < bhi
    assert bhi - blo < (hi - lo) / 5
    # close to the normal approximation of a mean's 95% interval
    se = big.std() / math.sqrt(len(big))
    assert bhi - blo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci(small, n_boot=500, seed=7) == bootstrap_ci(small, n_boot=500, seed=7)
    assert bootstrap_ci(small, n_boot=500, seed=7) != bootstrap_ci(small, n_boot=500, seed=8)
    # columns of a 2-D input share the resamples and match 1-D calls
    two = np.stack([small, 1 - small], axis=1)
    lows, highs = bootstrap_ci(two, n_boot=500, seed=7)
    assert (lows[0], highs[0]) == pytest.approx(bootstrap_ci(small, n_boot=500, seed=7))
    assert lows[1] == pytest.approx(1 - highs[0]) and highs[1] == pytest.approx(1 - lows[0])
    assert all(math.isnan(x) for x in bootstrap_ci(small, n_boot=0))
    with pytest.raises(DermretrError, match="confidence level"):
        bootstrap_ci(small, level=95)
    with pytest.raises(DermretrError, match="resamples"):
        bootstrap_ci(small, n_boot=-1)


def test_paired_difference_pairs_queries_and_tests_the_gap():
    rng = np.random.default_rng(0)
    n = 80
    a = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "n_relevant": 1,
                      "recall@1": (rng.random(n) < 0.7).astype(float), "map@10": rng.random(n)})
    a.loc[0, "n_relevant"] = 0  # no relevant case: left out
    b = a.assign(**{"recall@1": np.where(np.arange(n) % 3 == 0, 0.0, a["recall@1"]),
                    "map@10": a["map@10"] - 0.1 + rng.normal(0, 0.05, n)})
    shuffled = b.sample(frac=1.0, random_state=1)  # pairing is by query, not by row
    t = paired_difference(a, shuffled, n_boot=2000, seed=3)
    keep = a["n_relevant"] > 0
    want = (a.loc[keep, ["recall@1", "map@10"]] - b.loc[keep, ["recall@1", "map@10"]]).mean()
    assert t["n_queries"].tolist() == [n - 1, n - 1]
    assert np.allclose(t["difference"], want.to_numpy())
    assert np.allclose(t["mean_a"] - t["mean_b"], t["difference"])
    assert (t["ci_low"] <= t["difference"]).all() and (t["difference"] <= t["ci_high"]).all()
    assert t.loc["map@10", "p_value"] < 0.01 and t.loc["map@10", "ci_low"] > 0.05
    same = paired_difference(a, a, n_boot=500)
    assert (same["difference"] == 0).all() and (same["p_value"] == 1.0).all()
    assert paired_difference(a, b, n_boot=0)["p_value"].isna().all()
    with pytest.raises(DermretrError, match="cover different queries"):
        paired_difference(a, b.iloc[1:])
    with pytest.raises(DermretrError, match=r"metric\(s\) \['mrr'\] not in the per-query table"):
        paired_difference(a, b, metrics=["mrr"])
    with pytest.raises(DermretrError, match="must be a DataFrame"):
        paired_difference(a.to_numpy(), b)


def test_the_old_import_paths_are_the_stats_functions():
    import dermretr.evaluate as ev
    import dermretr.stats as st

    assert ev.bootstrap_ci is st.bootstrap_ci and ev.paired_difference is st.paired_difference
    assert ev.AVERAGES == st.AVERAGES == ("micro", "macro")


def test_macro_mean_is_the_class_weighted_sum_and_its_bootstrap_is_stratified():
    codes, names = class_codes(["b", None, "a", "b", "b"])
    assert codes.tolist() == [1, 2, 0, 1, 1] and names == ["a", "b", None]
    values = np.array([1.0, 0.0, 0.5, 0.0, 0.5])
    w = class_weights(codes)
    assert w.sum() == pytest.approx(1.0)
    assert macro_mean(values, codes)[0] == pytest.approx((w * values).sum())
    assert macro_mean(values, codes)[0] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    # classes with one query add no spread; every resample keeps the class sizes
    means = stratified_means(values[:, None], codes, n_boot=300, seed=0)
    assert means.shape == (300, 1) and means.min() >= (0.5 + 0 + 0) / 3 - 1e-12 and means.max() <= 1.5 / 3 + 1e-12
    assert (stratified_means(values[:, None], codes, 50, 4) == stratified_means(values[:, None], codes, 50, 4)).all()
    with pytest.raises(DermretrError, match="class labels for values"):
        stratified_means(values[:, None], codes[:2], 10, 0)


def test_per_query_checks_and_pairing():
    a = pd.DataFrame({"case_id": ["x", "y", None], "n_relevant": [1, 2, 1], "recall@1": [1.0, 0.0, 1.0]})
    assert check_per_query(a) is a
    with pytest.raises(DermretrError, match="the second table lacks column\\(s\\) \\['n_relevant'\\]"):
        check_per_query(a[["case_id"]], what="second table")
    with pytest.raises(DermretrError, match="has no queries"):
        check_per_query(a.iloc[:0])
    with pytest.raises(DermretrError, match="mixes several runs"):
        check_per_query(a.assign(run=["r1", "r2", "r1"]))
    assert check_metrics(a, "recall@1") == ("recall@1",)
    assert check_metrics(a, ["recall@1", "recall@1"]) == ("recall@1",)
    with pytest.raises(DermretrError, match="give at least one metric"):
        check_metrics(a, [])
    assert as_text(a["case_id"]).tolist() == ["x", "y", ""]
    b = a.iloc[[2, 0, 1]]
    assert pair_tables(a, b).tolist() == [1, 2, 0]
    with pytest.raises(DermretrError, match="disagree on the relevant cases of 1 queries"):
        pair_tables(a, b.assign(n_relevant=[1, 1, 1]))
    with pytest.raises(DermretrError, match="the first per-query table has the same query twice"):
        pair_tables(pd.concat([a, a]), b)


def test_sign_flip_p_is_one_for_no_difference_and_small_for_a_consistent_one():
    rng = np.random.default_rng(0)
    assert sign_flip_p(np.zeros((20, 2)), 200, rng).tolist() == [1.0, 1.0]
    p = sign_flip_p(np.ones((20, 1)), 999, np.random.default_rng(1))
    assert p[0] == pytest.approx(1 / 1000, abs=2e-3)
    assert 0 < p[0] <= 0.01
    weights = np.full(20, 1 / 20)  # equal weights: the plain mean
    assert (sign_flip_p(np.ones((20, 1)), 99, np.random.default_rng(2), weights=weights)
            == sign_flip_p(np.ones((20, 1)), 99, np.random.default_rng(2))).all()
    assert math.isclose(float(sign_flip_p(np.ones((1, 1)), 999, np.random.default_rng(3))[0]), 1.0, abs_tol=0.1)


# ----------------------------------------------------------------------------- macro averages


def _grouped(n: int, seed: int = 0) -> pd.DataFrame:
    """90% NEV queries that mostly hit, 10% MEL that mostly miss."""
    rng = np.random.default_rng(seed)
    groups = np.where(np.arange(n) < int(0.9 * n), "NEV", "MEL")
    p = np.where(groups == "NEV", 0.9, 0.2)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "diagnosis_group": groups, "n_relevant": 1,
                         "recall@1": (rng.random(n) < p).astype(float), "map@10": rng.random(n) * p})


def test_stratified_macro_ci_contains_the_estimate_matches_theory_and_shrinks():
    small, big = _grouped(60), _grouped(6000)
    widths = []
    for pq in (small, big):
        macro = pq.groupby("diagnosis_group")["recall@1"].mean().mean()
        lo, hi = bootstrap_ci(pq["recall@1"], n_boot=2000, seed=0, groups=pq["diagnosis_group"])
        assert lo <= macro <= hi
        assert not (lo <= pq["recall@1"].mean() <= hi) or len(pq) < 100  # the big set separates micro and macro
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 5
    # independent check: the normal approximation of a mean of group means, sqrt(sum var_g / n_g) / G
    g = big.groupby("diagnosis_group")["recall@1"]
    se = math.sqrt((g.var(ddof=0) / g.count()).sum()) / g.ngroups
    assert widths[1] == pytest.approx(2 * 1.96 * se, rel=0.15)
    # deterministic, and a class of one query adds no spread
    args = dict(n_boot=300, seed=4, groups=small["diagnosis_group"])
    assert bootstrap_ci(small["recall@1"], **args) == bootstrap_ci(small["recall@1"], **args)
    lo, hi = bootstrap_ci([1.0, 0.0, 1.0], groups=["A", "B", "B"], n_boot=500)
    assert 0.5 <= lo <= hi <= 1.0
    with pytest.raises(DermretrError, match="one label per query"):
        bootstrap_ci([1.0, 0.0], groups=["A"])


def test_paired_macro_difference():
    a = _grouped(300, seed=5)
    same = paired_difference(a, a, n_boot=500, average="macro")
    assert (same["difference"] == 0).all() and (same["ci_low"] == 0).all() and (same["ci_high"] == 0).all()
    assert (same["p_value"] == 1.0).all() and same.attrs["average"] == "macro"
    # a method that only improves MEL queries: small micro gain, large macro gain
    b = a.assign(**{"recall@1": np.where(a["diagnosis_group"] == "MEL", 1.0, a["recall@1"])})
    micro = paired_difference(b, a, metrics=["recall@1"], n_boot=1000, seed=1)
    macro = paired_difference(b, a, metrics=["recall@1"], n_boot=1000, seed=1, average="macro")
    gain = 1.0 - a.loc[a["diagnosis_group"] == "MEL", "recall@1"].mean()
    assert macro.loc["recall@1", "difference"] == pytest.approx(gain / 2)
    assert micro.loc["recall@1", "difference"] == pytest.approx(gain * 0.1)
    assert macro.loc["recall@1", "mean_a"] == pytest.approx(summarize_metrics(b, average="macro")["recall@1"])
    row = macro.loc["recall@1"]
    assert row["ci_low"] <= row["difference"] <= row["ci_high"] and row["ci_low"] > 0 and row["p_value"] < 0.01
    with pytest.raises(DermretrError, match="cannot macro-average over 'fitzpatrick'"):
        paired_difference(a, a, average="macro", by="fitzpatrick")
