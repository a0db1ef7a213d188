"""Leak-free group splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DermretrError
from dermretr.data.splits import group_split


def _cases(n_patients=300, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        group = rng.choice(["MEL", "NEV", "BCC", "SK", "MISC"], p=[0.3, 0.4, 0.1, 0.1, 0.1])
        for _ in range(int(rng.integers(1, 5))):
            rows.append({"patient_id": f"p{p}", "diagnosis_group": group})
    return pd.DataFrame(rows)


def test_no_patient_in_two_splits_and_fractions_respected():
    cases = _cases()
    split = group_split(cases, fractions=(0.6, 0.2, 0.2), seed=1)
    assert (split.groupby(cases["patient_id"]).nunique() == 1).all()
    share = split.value_counts(normalize=True)
    assert abs(share["train"] - 0.6) < 0.03 and abs(share["val"] - 0.2) < 0.03
    # stratified: every group's share is close to its overall share in each split
    overall = cases["diagnosis_group"].value_counts(normalize=True)
    for s in ("train", "val", "test"):
        within = cases.loc[split == s, "diagnosis_group"].value_counts(normalize=True)
        assert (within.reindex(overall.index, fill_value=0) - overall).abs().max() < 0.06


def test_deterministic_by_seed_and_seed_matters():
    cases = _cases()
    a = group_split(cases, seed=3)
    assert a.equals(group_split(cases, seed=3))
    assert not a.equals(group_split(cases, seed=4))


def test_zero_fraction_split_stays_empty():
    split = group_split(_cases(50), fractions=(0.8, 0.0, 0.2))
    assert "val" not in set(split)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fractions": (0.5, 0.5, 0.5)}, "summing to 1"),
        ({"by": "lesion_id"}, "column 'lesion_id' not in the case table"),
        ({"stratify": "dx"}, "column 'dx'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(DermretrError, match=message):
        group_split(_cases(10), **kwargs)


def test_missing_group_ids_are_reported():
    cases = _cases(10)
    cases.loc[3, "patient_id"] = None
    with pytest.raises(DermretrError, match="missing at rows \\[3\\]"):
        group_split(cases)
