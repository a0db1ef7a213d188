"""Shared fixtures: small DermSynth datasets generated once per test session."""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small DermSynth dataset (clinical priors, all artifacts)."""
    from dermretr.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "ds", n_cases=160, seed=11, image_size=64,
                    modification_rate=0.4, workers=2, progress=False)


@pytest.fixture(scope="session")
def synth_cases(synth_root):
    from dermretr.data import load

    return load("synthetic", synth_root)


# Internal errors propagate with their traceback inside the test suite (the CLI's one-line
# "internal error" wrapper must never hide a bug from a test); tests of the wrapper unset it.
os.environ["DERMRETR_DEBUG"] = "1"
