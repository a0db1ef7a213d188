"""Skin-tone groupings of cases and queries (dermretr.fairness._groups)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DermretrError
from dermretr.fairness import GROUPINGS, UNKNOWN, skin_tone_groups


def test_every_grouping_labels_cases_and_keeps_unknown():
    cases = pd.DataFrame({
        "fitzpatrick": pd.array([1, 3, 6, pd.NA, pd.NA], dtype="Int64"),
        "skin_tone_group": [None, None, None, "V-VI", None],
        "monk": pd.array([1, 10, pd.NA, 5, 7], dtype="Int64"),
        "ita": [60.0, 30.0, -40.0, np.nan, 12.0],
        "ita_estimated": [56.0, 41.5, -31.0, 9.0, np.nan],
    })
    assert skin_tone_groups(cases, "fitzpatrick").tolist() == ["I", "III", "VI", UNKNOWN, UNKNOWN]
    assert skin_tone_groups(cases, "fitzpatrick_pairs").tolist() == ["I-II", "III-IV", "V-VI", "V-VI", UNKNOWN]
    assert skin_tone_groups(cases, "monk").tolist() == ["1", "10", UNKNOWN, "5", "7"]
    assert skin_tone_groups(cases, "ita_category").tolist() == ["very light", "intermediate", "dark", UNKNOWN, "tan"]
    assert skin_tone_groups(cases, "ita_category_estimated").tolist() == [
        "very light", "light", "dark", "brown", UNKNOWN]
    assert skin_tone_groups(cases, "fitzpatrick_estimated").tolist() == ["I", "II", "VI", "V", UNKNOWN]
    groups = skin_tone_groups(cases, "fitzpatrick")
    assert list(groups.cat.categories) == [*GROUPINGS["fitzpatrick"], UNKNOWN] and groups.cat.ordered
    assert groups.index.equals(cases.index) and groups.name == "fitzpatrick"
    # estimate_skin_tone's own columns win over ita_estimated
    cases["fitzpatrick_estimated"] = pd.array([2, 2, 2, 2, pd.NA], dtype="Int64")
    assert skin_tone_groups(cases, "fitzpatrick_estimated").tolist() == ["II"] * 4 + [UNKNOWN]


def test_groupings_refuse_absent_unknown_or_off_scale_columns():
    cases = pd.DataFrame({"case_id": ["a", "b"], "fitzpatrick": pd.array([pd.NA, pd.NA], dtype="Int64")})
    with pytest.raises(DermretrError, match="no case has a known Fitzpatrick skin type .all 2 are unknown"):
        skin_tone_groups(cases, "fitzpatrick")
    with pytest.raises(DermretrError, match="no 'monk' column.*Monk labels"):
        skin_tone_groups(cases, "monk")
    with pytest.raises(DermretrError, match="estimate skin tone from the pixels first"):
        skin_tone_groups(cases, "fitzpatrick_estimated")
    with pytest.raises(DermretrError, match="only DermSynth has a labelled 'ita'"):
        skin_tone_groups(cases, "ita_category")
    with pytest.raises(DermretrError, match="unknown skin-tone grouping 'skin'; choose one of fitzpatrick"):
        skin_tone_groups(cases, "skin")
    with pytest.raises(DermretrError, match=r"values off the 1\.\.6 scale \(7\)"):
        skin_tone_groups(pd.DataFrame({"fitzpatrick": [1, 7]}), "fitzpatrick")
