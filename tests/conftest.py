"""Shared fixtures: a small DermSynth dataset generated once per test session; a tiny retriever and its index."""

from __future__ import annotations

import os
import sys

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


def _share_the_cores() -> None:
    """Under pytest-xdist, each worker takes its share of the cores for torch (and the processes its tests start).

    Two workers on two cores, each with torch's default of one thread per core, would run four busy threads on
    two cores: slower than one worker.  Set before any test module imports torch; a worker that already has it
    (a plugin imported it) is told directly.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers <= 1:
        return
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores()


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
