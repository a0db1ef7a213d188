"""Skin tone from the pixels: the ITA of the healthy skin, its Fitzpatrick type, case tables (dermretr.skin_tone)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairness_helpers import flat_image

from dermretr._errors import DermretrError
from dermretr.color import ita, lab_to_rgb, rgb_to_lab
from dermretr.fairness import GROUPINGS, UNKNOWN, ita_agreement, ita_confusion
from dermretr.skin_tone import estimate_ita, estimate_skin_tone, ita_to_fitzpatrick, skin_mask


def test_ita_to_fitzpatrick_follows_the_categories_and_dermsynth_ranges():
    from dermretr.data.synth.render import ITA_RANGES

    angles = (56, 55, 41.5, 41, 28.5, 10.5, 10, -29, -30.5)
    assert [ita_to_fitzpatrick(a) for a in angles] == [1, 2, 2, 3, 3, 4, 5, 5, 6]
    assert ita_to_fitzpatrick(float("nan")) is None
    for fitz, (lo, hi) in ITA_RANGES.items():  # DermSynth draws each type inside its category
        assert ita_to_fitzpatrick(lo) == ita_to_fitzpatrick(hi) == fitz


@pytest.mark.parametrize("lab", [(70.0, 10.0, 15.0), (45.0, 12.0, 20.0), (30.0, 8.0, 12.0), (85.0, 6.0, 14.0)])
def test_estimate_ita_of_a_flat_colour_is_its_ita(lab):
    img = flat_image(lab)
    L, _, b = rgb_to_lab(img[0, 0])
    assert estimate_ita(img) == pytest.approx(float(ita(L, b)), abs=1e-9)
    assert estimate_ita(img) == pytest.approx(float(ita(lab[0], lab[2])), abs=0.05)
    assert estimate_ita(flat_image(lab, dtype=np.uint8)) == pytest.approx(float(ita(lab[0], lab[2])), abs=1.0)


def _skin_with_lesion_hair_and_corners(size=128):
    rng = np.random.default_rng(0)
    skin_lab = np.array([62.0, 10.0, 17.0])
    img = flat_image(skin_lab, size) * (1 + 0.01 * rng.standard_normal((size, size, 1)))
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    lesion = np.hypot(yy - 0.1, xx + 0.05) < 0.6
    img[lesion] = lab_to_rgb(np.array([35.0, 15.0, 25.0]))
    for x0 in (0.3, -0.6, 0.75):  # three dark hairs
        img[np.abs(xx - x0 - 0.3 * yy) < 0.02] = lab_to_rgb(np.array([15.0, 3.0, 6.0]))
    img[np.hypot(yy, xx) > 1.0] = 0.01  # dark vignette corners
    return np.clip(img, 0, 1), lesion, float(ita(skin_lab[0], skin_lab[2]))


def test_estimate_ita_ignores_lesion_hair_and_dark_corners():
    img, lesion, truth = _skin_with_lesion_hair_and_corners()
    lab = rgb_to_lab(img)
    naive = float(ita(np.median(lab[..., 0]), np.median(lab[..., 2])))
    assert abs(naive - truth) > 5  # the whole image is a poor estimate
    assert estimate_ita(img) == pytest.approx(truth, abs=1.0)  # Otsu finds the lesion
    assert estimate_ita(img, lesion) == pytest.approx(truth, abs=1.0)
    mask = skin_mask(img)
    assert not (mask & lesion).any() and not mask[0, 0] and mask.mean() > 0.3


def test_estimate_ita_bad_input():
    with pytest.raises(DermretrError, match="an RGB image"):
        estimate_ita(np.zeros((32, 32)))
    with pytest.raises(DermretrError, match=r"float image must hold values in \[0, 1\]"):
        estimate_ita(np.full((32, 32, 3), 2.0))
    with pytest.raises(DermretrError, match="the lesion mask is"):
        estimate_ita(flat_image((60, 10, 15), 32), np.zeros((16, 16), bool))
    assert np.isnan(estimate_ita(flat_image((60, 10, 15), 32), np.ones((32, 32), bool)))  # no skin left
    with pytest.raises(DermretrError, match="cannot|not found|No such"):
        estimate_ita("/no/such/image.png")


def test_dermsynth_skin_type_estimated_within_one_type(synth_cases):
    for use_masks in (True, False):
        est = estimate_skin_tone(synth_cases, use_masks=use_masks, progress=False)
        confusion = ita_confusion(est)
        agreement = ita_agreement(est)
        print(f"\nDermSynth (masks={use_masks}): {agreement}\n{confusion}")
        assert agreement["n"] == len(synth_cases) and est["fitzpatrick_estimated"].notna().all()
        assert agreement["within_one"] >= 0.8 and agreement["exact"] >= 0.8
        assert agreement["ita_mae"] < 3.0
        assert int(confusion.to_numpy().sum()) == len(synth_cases)
        assert confusion.index.tolist() == list(GROUPINGS["fitzpatrick"])
    assert est["ita_category_estimated"].dtype == "string" and est["fitzpatrick_estimated"].dtype == "Int64"


def test_estimate_skin_tone_marks_unreadable_images_unknown(tmp_path):
    from PIL import Image

    from dermretr._errors import DataWarning

    good = tmp_path / "good.png"
    Image.fromarray(flat_image((70.0, 10.0, 15.0), 64, np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    cases = pd.DataFrame({"case_id": ["a", "b"], "image_path": [str(good), str(bad)], "fitzpatrick": [2, 5]})
    with pytest.warns(DataWarning, match="1 of 2 cases .1 unreadable"):
        est = estimate_skin_tone(cases, progress=False)
    assert est["ita_category_estimated"].tolist()[0] == "light" and est["fitzpatrick_estimated"].isna().tolist() == [
        False, True]
    m = ita_confusion(est)
    assert UNKNOWN in m.columns and m.attrs["exact"] == 0.5 and int(m.loc["V", UNKNOWN]) == 1


# ----------------------------------------------------------------------------- lesion masks and the package face


def test_mask_bit_default_and_aspect_check():
    from dermretr.skin_tone import check_mask_aspect, default_mask_bit

    assert default_mask_bit("mask") == 0  # DermSynth: the lesion is bit 0
    assert default_mask_bit("lesion_mask") is None  # PH2 and other binary masks: every non-zero pixel
    assert default_mask_bit("mask", 2) == 2 and default_mask_bit("lesion_mask", 0) == 0
    check_mask_aspect((300, 400), (800, 600), "c1", "c1.bmp")  # same aspect at another resolution
    check_mask_aspect((301, 400), (800, 600), "c1", "c1.bmp")  # within 2%
    with pytest.raises(DermretrError, match=r"^case c1: the mask c1\.bmp is 400x400 but its image is 800x600 "
                                            r"\(another aspect ratio\): is it the mask of another image\?$"):
        check_mask_aspect((400, 400), (800, 600), "c1", "c1.bmp")


def test_fairness_re_exports_the_skin_tone_tools():
    import dermretr.fairness as fairness
    import dermretr.skin_tone as skin_tone

    for name in skin_tone.__all__:
        if name in fairness.__all__:
            assert getattr(fairness, name) is getattr(skin_tone, name), name
    assert {"estimate_ita", "skin_mask", "skin_mask_agreement", "ita_to_fitzpatrick", "estimate_skin_tone",
            "ITA_FITZPATRICK"} <= set(fairness.__all__)
