"""Tests of the 7-point vocabulary: the checklist score, the Derm7pt diagnoses and the doctests of dermretr.data.vocab.

The descriptor text (rendering, parsing, modifications, text views) is tested in test_vocab_text.py, skin tone
in test_tone.py.
"""

from __future__ import annotations

import doctest

import pytest

from dermretr._errors import VocabularyError
from dermretr.data import vocab
from dermretr.data.vocab import (
    _criteria,
    _diagnoses,
    _phrases,
    _text,
    _tone,
    diagnosis_group,
    is_malignant,
    render_text,
    seven_point_score,
)

# --------------------------------------------------------------------------- scores, diagnoses


@pytest.mark.parametrize(
    "criteria, score",
    [
        ({}, 0),
        ({"pigment_network": "atypical"}, 2),
        ({"pigment_network": "typical"}, 0),
        ({"blue_whitish_veil": "present"}, 2),
        ({"vascular_structures": "dotted"}, 2),
        ({"vascular_structures": "linear_irregular"}, 2),
        ({"vascular_structures": "arborizing"}, 0),
        ({"streaks": "irregular"}, 1),
        ({"streaks": "regular"}, 0),
        ({"pigmentation": "diffuse irregular"}, 1),
        ({"pigmentation": "localized irregular"}, 1),
        ({"pigmentation": "localized regular"}, 0),
        ({"dots_and_globules": "irregular"}, 1),
        ({"dots_and_globules": "regular"}, 0),
        ({"regression_structures": "blue areas"}, 1),
        ({"regression_structures": "white areas"}, 1),
        ({"regression_structures": "combinations"}, 1),
        ({"pigment_network": "atypical", "blue_whitish_veil": "present"}, 4),
        ({"streaks": "irregular", "dots_and_globules": "irregular",
          "pigment_network": "typical"}, 2),
        (
            {
                "pigment_network": "atypical",
                "streaks": "irregular",
                "pigmentation": "localized irregular",
                "regression_structures": "combinations",
                "dots_and_globules": "irregular",
                "blue_whitish_veil": "present",
                "vascular_structures": "dotted",
            },
            10,
        ),
    ],
)
def test_seven_point_score(criteria, score):
    assert seven_point_score(criteria) == score


def test_seven_point_score_in_note_text():
    case = {"pigment_network": "atypical", "streaks": "irregular", "vascular_structures": "dotted"}
    assert render_text(case, "note", None).endswith("7-point score 5.")


DIAGNOSIS_TABLE = {
    "basal cell carcinoma": "BCC",
    "blue nevus": "NEV",
    "clark nevus": "NEV",
    "combined nevus": "NEV",
    "congenital nevus": "NEV",
    "dermal nevus": "NEV",
    "recurrent nevus": "NEV",
    "reed or spitz nevus": "NEV",
    "melanoma": "MEL",
    "melanoma (in situ)": "MEL",
    "melanoma (less than 0.76 mm)": "MEL",
    "melanoma (0.76 to 1.5 mm)": "MEL",
    "melanoma (more than 1.5 mm)": "MEL",
    "melanoma metastasis": "MEL",
    "dermatofibroma": "MISC",
    "lentigo": "MISC",
    "melanosis": "MISC",
    "miscellaneous": "MISC",
    "vascular lesion": "MISC",
    "seborrheic keratosis": "SK",
}


def test_diagnosis_groups_of_all_20():
    assert len(DIAGNOSIS_TABLE) == 20
    assert set(vocab.DIAGNOSES) == set(DIAGNOSIS_TABLE)
    for dx, group in DIAGNOSIS_TABLE.items():
        assert diagnosis_group(dx) == group
        assert diagnosis_group(dx.upper().replace(" ", "_")) == group
        assert is_malignant(dx) == (group in ("MEL", "BCC"))
    with pytest.raises(VocabularyError) as err:
        diagnosis_group("nevus of ota")
    assert "nevus of ota" in str(err.value) and "clark nevus" in str(err.value)


def test_doctests_of_vocab_pass():
    results = [doctest.testmod(module) for module in (vocab, _criteria, _diagnoses, _phrases, _text, _tone)]
    assert sum(r.attempted for r in results) >= 10
    assert sum(r.failed for r in results) == 0


def test_vocab_is_one_flat_namespace():
    for name in vocab.__all__:
        assert getattr(vocab, name) is not None
    for module in (_criteria, _diagnoses, _text, _tone):
        assert set(module.__all__) <= set(vocab.__all__)
