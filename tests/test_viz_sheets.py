"""Contact sheets, thumbnails and caption numbers: basic properties (axes, image sizes, not blank), not pixels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from dermretr._errors import DermretrError
from dermretr.viz import contact_sheet, format_value, load_thumbnail


def test_contact_sheet_has_one_row_per_group(synth_cases):
    fig = contact_sheet(synth_cases, by="diagnosis_group", per_group=4, thumb=48)
    assert isinstance(fig, Figure)
    groups = synth_cases["diagnosis_group"].nunique()
    assert len(fig.axes) == groups * 4
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) >= groups
    for ax in shown:
        arr = ax.images[0].get_array()
        assert arr.shape[:2] == (48, 48) and np.asarray(arr).std() > 5  # a real image, not blank
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert {label.split("\n")[0] for label in labels} == set(synth_cases["diagnosis_group"])


def test_contact_sheet_by_criterion_and_unknown_values(synth_cases):
    cases = synth_cases.copy()
    cases.loc[:4, "blue_whitish_veil"] = None
    fig = contact_sheet(cases, by="blue_whitish_veil", per_group=2)
    labels = {ax.get_ylabel().split("\n")[0] for ax in fig.axes if ax.get_ylabel()}
    assert labels == {"absent", "present", "unknown"}


def test_contact_sheet_bad_input(synth_cases):
    with pytest.raises(DermretrError, match="cannot group by 'colour'"):
        contact_sheet(synth_cases, by="colour")
    with pytest.raises(DermretrError, match="empty"):
        contact_sheet(synth_cases.iloc[:0])


def test_unreadable_image_becomes_a_marked_tile(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    tile = load_thumbnail(str(bad), size=32)
    assert tile.shape == (32, 32, 3) and tuple(tile[0, 0]) == (200, 0, 0)


def test_format_value_reads_like_the_captions():
    assert format_value(0.91234) == "0.912" and format_value(2.0, ".0f") == "2"
    assert format_value(None) == format_value(float("nan")) == "?"
    assert format_value("n/a") == "n/a"  # not a number: shown as it is
