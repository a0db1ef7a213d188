"""CIELAB and ITA cross-tested against an independent implementation (scikit-image) and reference values."""

import numpy as np
import pytest
from skimage.color import rgb2lab

from dermretr.color import ita, ita_category, lab_to_rgb, rgb_to_lab


def test_rgb_to_lab_matches_scikit_image_on_random_colours():
    rng = np.random.default_rng(0)
    rgb = rng.random((5000, 3))
    rgb[:10] = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5], [0.01, 0.02, 0.03],
                [0.8, 0.6, 0.5], [0.3, 0.2, 0.15], [0.04, 0.04, 0.04]]  # corners, greys, skin, the linear segment
    ours = rgb_to_lab(rgb)
    theirs = rgb2lab(rgb[None], illuminant="D65", observer="2")[0]
    # within 0.01 (a just-noticeable difference is about 1): the two differ only in the precision of the D65
    # white and the sRGB matrix (ours maps white to exactly (100, 0, 0), scikit-image's to a* = -0.002)
    np.testing.assert_allclose(ours, theirs, atol=1e-2)
    np.testing.assert_allclose(lab_to_rgb(ours), rgb, atol=1e-6)  # and back


@pytest.mark.parametrize("rgb, lab", [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),  # D65 white
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),  # sRGB primaries, the published CIELAB (D65) values
    ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),
    ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
])
def test_rgb_to_lab_reference_values(rgb, lab):
    np.testing.assert_allclose(rgb_to_lab(np.array(rgb)), lab, atol=0.02)


def test_ita_is_the_arctangent_of_its_definition_within_minus_90_and_90():
    rng = np.random.default_rng(1)
    lab = rgb2lab(rng.random((1, 5000, 3)))[0]
    L, b = lab[:, 0], lab[:, 2]
    assert (b < 0).sum() > 500  # bluish colours are where arctan2 went wrong
    expected = np.degrees(np.arctan((L - 50.0) / b))
    got = ita(L, b)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert got.min() >= -90 and got.max() <= 90
    # the case that was wrong: a light bluish-grey pixel is near +-90 by the definition, not 104 degrees
    assert float(ita(70.0, -5.0)) == pytest.approx(-75.96, abs=0.01)
    # b* = 0: the limit from b* > 0
    assert ita(np.array([80.0, 20.0, 50.0]), np.zeros(3)).tolist() == [90.0, -90.0, 0.0]
    assert ita_category(float(ita(70.0, 1e-9))) == "very light"


def test_ita_of_skin_colours_from_scikit_image_lab():
    """Skin-like colours: our ITA of our Lab equals the definition applied to scikit-image's Lab."""
    skin = np.array([[0.95, 0.80, 0.70], [0.85, 0.65, 0.50], [0.60, 0.40, 0.30], [0.35, 0.22, 0.15]])
    ours = rgb_to_lab(skin)
    theirs = rgb2lab(skin[None])[0]
    np.testing.assert_allclose(ita(ours[:, 0], ours[:, 2]),
                               np.degrees(np.arctan((theirs[:, 0] - 50) / theirs[:, 2])), atol=0.02)
    assert [ita_category(float(a)) for a in ita(ours[:, 0], ours[:, 2])] == sorted(
        [ita_category(float(a)) for a in ita(ours[:, 0], ours[:, 2])],
        key=["very light", "light", "intermediate", "tan", "brown", "dark"].index)
