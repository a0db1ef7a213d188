"""Localisation of attributions against ground-truth masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from explain_helpers import SIZE, random_images, tiny_retriever

from dermretr._errors import DermretrError
from dermretr.data.synth import load_masks
from dermretr.explain import align_mask, dermsynth_localisation, localisation_score


@pytest.fixture(scope="module")
def tiny():
    return tiny_retriever()


@pytest.fixture(scope="module")
def images():
    return random_images()


def test_localisation_score_on_hand_made_maps():
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    heat = np.zeros((40, 40))
    heat[15, 15] = 1
    s = localisation_score(heat, mask)
    assert s["hit"] == 1.0 and s["hit_baseline"] == pytest.approx(100 / 1600) and s["energy"] == 1.0
    heat = np.zeros((40, 40))
    heat[22, 15] = 1  # two pixels below the mask
    assert localisation_score(heat, mask)["hit"] == 0.0
    tol = localisation_score(heat, mask, tolerance=3)
    assert tol["hit"] == 1.0 and tol["hit_baseline"] > 100 / 1600
    exact = localisation_score(mask.astype(float), mask)
    assert exact["iou"] == 1.0 and exact["iou_baseline"] < 0.1
    inverse = localisation_score(1 - mask.astype(float), mask)
    assert inverse["iou"] == 0.0 and inverse["hit"] == 0.0 and inverse["energy"] == 0.0
    flat = localisation_score(np.ones((40, 40)), mask)  # a uniform map scores its baseline
    assert flat["hit"] == flat["hit_baseline"] and flat["iou"] == pytest.approx(flat["iou_baseline"])
    assert align_mask(np.ones((64, 96), bool), 32).shape == (32, 32)
    with pytest.raises(DermretrError, match="align_mask"):
        localisation_score(np.zeros((10, 10)), mask)
    with pytest.raises(DermretrError, match="empty"):
        localisation_score(heat, np.zeros((40, 40), bool))


def test_dermsynth_localisation_uses_the_ground_truth(tiny, synth_root):
    table = dermsynth_localisation(tiny, synth_root, method="gradcam", n=4, seed=0)
    mods = pd.read_csv(synth_root / "meta" / "modifications.csv", dtype=str, keep_default_na=False)
    assert len(table) == min(4, int((mods["to_value"] != "absent").sum())) > 0  # n triplets that add a structure
    assert (table["to_value"] != "absent").all()
    for col in ("hit", "hit_baseline", "iou", "iou_baseline", "energy", "energy_baseline"):
        assert table[col].between(0, 1).all(), col
    summary = table.attrs["summary"]
    assert summary["pairs"] == len(table) and summary["pointing"] == pytest.approx(table["hit"].mean())
    row = table.iloc[0]
    meta = pd.read_csv(synth_root / "meta" / "meta.csv", dtype=str).set_index("case_id")
    gt = load_masks(synth_root / meta.loc[row["target_case_id"], "mask"])[row["criterion"]]
    assert row["energy_baseline"] == pytest.approx(align_mask(gt, SIZE).mean())
