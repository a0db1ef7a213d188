"""Every data source has its licence recorded once, repeated in docs/datasets.md and in its loader's docstring."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from dermretr._errors import DermretrError
from dermretr.data import SOURCES
from dermretr.data.sources._terms import LICENCES, TERMS_DOC, licence_line

ROOT = Path(__file__).resolve().parents[1]


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_every_source_has_a_licence_and_no_stray_entries():
    assert set(LICENCES) == set(SOURCES)
    assert all(text.strip() and "\n" not in text for text in LICENCES.values())


def test_the_doc_states_every_licence_word_for_word():
    doc = _flat((ROOT / TERMS_DOC).read_text(encoding="utf-8"))
    missing = [source for source, text in LICENCES.items() if _flat(text) not in doc]
    assert not missing, f"{TERMS_DOC} does not state the licence of {missing} as LICENCES does"
    assert all(f"`{source}`" in doc for source in SOURCES)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_each_loader_docstring_states_its_licence(source):
    module = importlib.import_module(f"dermretr.data.sources.{SOURCES[source].split(':')[0]}")
    doc = _flat(module.__doc__ or "")
    assert f"Licence: {_flat(LICENCES[source])}" in doc and TERMS_DOC in doc


def test_licence_line_is_one_line_and_refuses_unknown_sources():
    assert licence_line(" PH2 ") == f"Licence: {LICENCES['ph2']}; terms: {TERMS_DOC}"
    assert all("\n" not in licence_line(source) for source in SOURCES)
    with pytest.raises(DermretrError, match="no licence recorded"):
        licence_line("imagenet")
