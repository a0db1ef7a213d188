"""Shared fixtures: a small DermSynth dataset generated once per test session; a tiny retriever and its index."""

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


@pytest.fixture(scope="module")
def model():
    """An untrained tiny ``full`` retriever at 64 px (seeded), for tests of search and the query app."""
    import torch

    from dermretr.models.backbones import create
    from dermretr.models.retriever import Retriever

    torch.manual_seed(0)
    return Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)


@pytest.fixture(scope="module")
def index(model, synth_cases):
    """A flat CaseIndex of :func:`synth_cases` encoded by :func:`model`."""
    from dermretr.index import CaseIndex

    return CaseIndex.build(model, synth_cases, batch_size=64)
