"""The state of one composed query and its results, without any user interface: :class:`QuerySession`."""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from .._checks import check_int
from .._errors import DermretrError
from ..data.images import load_rgb
from ..data.vocab import CRITERIA, tone_findings
from ..evaluate import tone_ranges
from ..models._released import RELEASED
from ..models.embeddings import Embeddings
from ._figures import check_method, explain_figures, map_figure
from ._images import LRUCache, decode_image, png_bytes
from ._query import (
    UNKNOWN,
    SearchReport,
    as_index,
    check_case_id,
    check_criterion,
    check_index,
    compose_text,
    initial_alpha,
    known_criteria,
    matching_cases,
    no_match_note,
    no_results,
    query_filters,
    read_descriptors,
    reference_text,
    relevance,
    shortfall_note,
)
from ._tone import NO_TONE_LABELS, count_ranges, range_filter, tone_labels, tone_note, tone_target

__all__ = ["QuerySession"]


class QuerySession:
    """One composed query (reference + criteria + text + controls) on a :class:`~dermretr.index.CaseIndex`, UI-free.

    What :class:`~dermretr.widgets.QueryBuilder` shows, as plain Python state
    a notebook or a script can drive: set a reference (:meth:`set_reference`,
    :meth:`select_case`), change criteria (:meth:`set_criterion`, which writes
    the modification text into :attr:`text`) or the text itself, a skin-tone
    modifier (:meth:`set_tone`), ``k``, ``alpha`` and the filters
    (:attr:`skin_types`, :attr:`groups`, :attr:`tone_only`), then
    :meth:`results`.  Encoded queries (32) and thumbnails (4096) are cached.

    Parameters are those of the builder: ``index`` (a CaseIndex, an index
    folder, or a case table or ``"SOURCE:PATH"`` that is indexed with ``model``,
    by default the released ``"dermretr/dermsynth-tiny"``; see :func:`as_index`),
    ``retriever`` (default ``index.retriever``), ``k``, ``alpha`` (default the index's),
    ``exclude_reference`` (leave the reference case out of its results),
    ``explain_method`` (behind :meth:`explain`), ``map_params`` (UMAP
    parameters of :meth:`map_figure`) and ``seed`` (of :meth:`random_case_id`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.data import load
    >>> from dermretr.data.synth import generate
    >>> from dermretr.index import CaseIndex
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=8, image_size=64,
    ...                 workers=1, progress=False)
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> session = QuerySession(CaseIndex.build(r, load("synthetic", root)), k=3)
    >>> session.set_reference("ds000002")
    >>> session.set_criterion("streaks", "irregular" if session.criteria["streaks"] != "irregular" else "absent")
    >>> session.text.startswith("same lesion but with")
    True
    >>> res = session.results()
    >>> len(res), "ds000002" in set(res["case_id"]), res.attrs["text"] == session.text
    (3, False, True)
    """

    def __init__(self, index, retriever=None, *, k: int = 8, alpha: float | None = None,
                 exclude_reference: bool = True, explain_method: str = "gradcam",
                 map_params: Mapping[str, Any] | None = None, seed: int | None = None, model: Any = RELEASED):
        index = as_index(index, model if retriever is None else retriever)
        self.retriever = check_index(index, retriever)
        k_ok = check_int(k, "k")
        assert k_ok is not None  # check_int returns None only with allow_none
        self.k: int = k_ok
        self.explain_method = check_method(explain_method)
        self.index = index
        self.cases: pd.DataFrame = index.cases
        self.empty = len(self.cases) == 0
        self.alpha = initial_alpha(index, alpha)
        self.exclude_reference = bool(exclude_reference)
        self.map_params = dict(map_params or {})
        self.has_local = (getattr(index, "local_vectors", None) is not None
                          and bool(getattr(self.retriever, "uses_local", True)))
        self.ids = self.cases["case_id"].astype(str).to_numpy() if "case_id" in self.cases.columns else np.array([])
        self.row_of = {cid: i for i, cid in enumerate(self.ids)}
        self._rng = np.random.default_rng(seed)
        # the reference and the query
        self.reference: Image.Image | None = None
        self.reference_case: str | None = None
        self.reference_criteria: dict[str, str] = {}
        self.base_text = self.tone_base = ""  # the reference's own text, and the same without its skin tone
        self._ref_key: tuple | None = None
        self.criteria: dict[str, str] = {c: UNKNOWN for c in CRITERIA}
        self.text = ""
        self.skin_types: tuple[int, ...] = ()
        self.groups: tuple[str, ...] = ()
        self.tone: str | None = None
        self.tone_only = False
        # the skin-tone modifier: the scale of the cases' labels and every case's range, found once
        labels = tone_labels(self.cases) if not self.empty else None
        self.tone_scale: str | None = labels[0] if labels else None
        self.tone_column: str | None = labels[1] if labels else None
        self.case_ranges: np.ndarray | None = None
        self.range_counts: pd.Series | None = None
        if labels:
            self.case_ranges = tone_ranges(self.cases[[labels[1]]], labels[0])
            self.range_counts = count_ranges(self.case_ranges, labels[0])
        # the last search and the caches
        self.last: dict[str, Any] = {}
        self._results = no_results(self.cases)
        self._queries: LRUCache[Embeddings] = LRUCache(32)
        self._thumbs: LRUCache[bytes] = LRUCache(4096)

    def __repr__(self) -> str:
        ref = self.reference_case or ("image" if self.reference is not None else None)
        return (f"QuerySession(cases={len(self.cases)}, reference={ref!r}, k={self.k}, alpha={self.alpha:.2f}, "
                f"text={self.text!r})")

    # ------------------------------------------------------------------ the reference

    def set_reference(self, reference: Any, name: str = "upload") -> None:
        """Make ``reference`` the reference: a case id of the index, an image file, a PIL image or image bytes."""
        if isinstance(reference, (bytes, bytearray, memoryview)):
            self.upload(bytes(reference), name)
        elif isinstance(reference, Image.Image):
            image = reference.convert("RGB")
            self._set(image, ("image", hashlib.sha1(image.tobytes()).hexdigest(), image.size), None, {}, "", "")
        elif (isinstance(reference, (str, os.PathLike)) and str(reference) not in self.row_of
              and Path(reference).is_file()):
            self._set(load_rgb(reference), ("path", str(Path(reference).resolve())), None, {}, "", "")
        else:
            self.select_case(reference)

    def select_case(self, case_id: Any) -> pd.Series:
        """Make an indexed case the reference (its criteria and text follow); returns its row.

        Raises :class:`~dermretr._errors.DermretrError` when ``case_id`` is not in
        the index and :class:`~dermretr.data.images.ImageReadError` when its
        image cannot be read (the reference then stays as it was).
        """
        if self.empty:
            raise DermretrError("the index holds no case: there is no case to pick")
        cid = check_case_id(case_id, self.row_of, self.ids)
        row = self.cases.iloc[self.row_of[cid]]
        image, known = load_rgb(row["image_path"]), known_criteria(row)
        self._set(image, ("case", cid), cid, known, reference_text(row, known), tone_findings(row))
        return row

    def upload(self, data: bytes, name: str = "upload") -> Image.Image:
        """Make uploaded image bytes the reference (criteria unknown); :class:`ImageReadError` when unreadable."""
        if self.empty:
            raise DermretrError("the index holds no case: there is nothing to search")
        image = decode_image(bytes(data), name)
        self._set(image, ("upload", hashlib.sha1(bytes(data)).hexdigest()), None, {}, "", "")
        return image

    def _set(self, image: Image.Image, key: tuple, case: str | None, known: Mapping[str, str], base: str,
             tone_base: str) -> None:
        self.reference, self._ref_key, self.reference_case = image, key, case
        self.reference_criteria = dict(known)
        self.criteria = {c: known.get(c, UNKNOWN) for c in CRITERIA}
        self.base_text, self.tone_base = base, tone_base
        self.compose_text()

    def random_case_id(self, seed: int | None = None) -> str:
        """A random case id of the index (reproducible with ``seed``)."""
        if self.empty:
            raise DermretrError("the index holds no case: there is no case to pick")
        rng = self._rng if seed is None else np.random.default_rng(seed)
        return str(self.ids[int(rng.integers(len(self.ids)))])

    # ------------------------------------------------------------------ the query text

    check_criterion = staticmethod(check_criterion)

    def set_criterion(self, name: str, value: str) -> None:
        """Set one criterion (a Derm7pt value or ``"(unknown)"``); :attr:`text` becomes the composed text."""
        self.criteria[name] = self.check_criterion(name, value)
        self.compose_text()

    def wanted(self) -> dict[str, str]:
        """Criteria that differ from the reference: criterion -> wanted value."""
        return {c: v for c, v in self.criteria.items()
                if v != UNKNOWN and v != self.reference_criteria.get(c, UNKNOWN)}

    def compose_text(self) -> str:
        """Write :attr:`text` from the reference, the changed criteria and the skin-tone modifier; returns it."""
        self.text = compose_text(self.reference_criteria, self.wanted(), self.base_text, self.tone_base, self.tone,
                                 self.tone_scale)
        return self.text

    def set_tone(self, target: Any) -> None:
        """Show the reference on another skin tone: a range ("V-VI"), a value in it, a word ("darker") or None.

        :attr:`text` is composed again when the tone changes.  Raises :class:`DermretrError` when the cases
        have no skin-tone labels, :class:`VocabularyError` for a value off the scale.
        """
        if self.tone_scale is None:
            raise DermretrError(NO_TONE_LABELS)
        name = tone_target(target, self.tone_scale)
        if name != self.tone:
            self.tone = name
            self.compose_text()

    def tone_note(self) -> str:
        """How many database cases the modifier's range (every range for any skin) holds, or why it is off."""
        return tone_note(self.range_counts, self.tone, self.empty)

    # ------------------------------------------------------------------ searching

    def filters(self) -> dict[str, list]:
        """The case filters as :meth:`CaseIndex.search` takes them (the modifier's range with :attr:`tone_only`)."""
        in_range = (range_filter(self.tone_scale, self.tone_column, self.tone)
                    if self.tone_only and self.tone is not None and self.tone_scale and self.tone_column else {})
        return query_filters(self.skin_types, self.groups, in_range)

    def encode(self, text: str) -> Embeddings:
        """The reference and ``text`` encoded as a query (cached per reference and text)."""
        def make() -> Embeddings:
            return Embeddings.from_mapping(self.retriever.encode_queries([self.reference], [text]))

        return self._queries.get_or_make((self._ref_key, text), make)

    def search(self) -> SearchReport:
        """Search with the current state; the report holds the results and what to say about them."""
        if self.empty:
            return SearchReport(self._keep(no_results(self.cases)), "error",
                                ("the index holds no case: there is nothing to search",))
        if self.reference is None:
            return SearchReport(None, "warning", ("pick a reference case (or upload an image) first",))
        start = time.perf_counter()
        text = str(self.text or "").strip()
        descriptors, notes = read_descriptors(text)
        filters = self.filters()
        matching = matching_cases(self.cases, filters)
        allowed = matching.copy()
        exclude = self.reference_case if self.exclude_reference else None
        if exclude is not None:
            allowed[self.row_of[exclude]] = False
        k = min(int(self.k), len(self.cases))
        if filters and not allowed.any():
            self.last = {"image": self.reference, "text": text, "query": None}
            return SearchReport(self._keep(no_results(self.cases), text, descriptors), "warning",
                                (no_match_note(filters, exclude is not None and bool(matching.any())), *notes))
        q = self.encode(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fewer matches than k is said below, in the session's words
            res = self.index.search_vectors(q, k=k, alpha=self.alpha if self.has_local else None,
                                            filters=filters or None, exclude=None if exclude is None else [exclude])
        res = res.drop(columns="query", errors="ignore").iloc[:k].reset_index(drop=True)
        res["rank"] = np.arange(1, len(res) + 1)
        rel = self.relevance(res)
        res = res.drop(columns="relevant", errors="ignore")
        res.insert(5, "relevant", pd.array([pd.NA] * len(res) if rel is None else rel, dtype="boolean"))
        if int(allowed.sum()) < k:
            notes.insert(0, shortfall_note(int(allowed.sum()), k, len(res), filters, exclude is not None))
        self.last = {"image": self.reference, "text": text, "query": q}
        return SearchReport(self._keep(res, text, descriptors), "warning" if notes else "info", tuple(notes), text,
                            None if rel is None else int(np.sum(rel)), time.perf_counter() - start)

    def _keep(self, res: pd.DataFrame, text: str = "", descriptors: dict | None = None) -> pd.DataFrame:
        res.attrs["descriptors"] = {} if descriptors is None else descriptors
        res.attrs["text"] = text
        self._results = res
        return self.last_results

    def results(self) -> pd.DataFrame:
        """Search now and return the results (:attr:`last_results`); an error when there is no reference yet."""
        report = self.search()
        if report.results is None:
            raise DermretrError(" ".join(report.lines()))
        return report.results

    @property
    def last_results(self) -> pd.DataFrame:
        """The last search's results: ``rank, case_id, score, s_global, s_local, relevant`` + case columns.

        ``relevant`` is True/False when the reference is an indexed case (see
        :meth:`relevance`) and NA for another image; ``attrs["descriptors"]``
        holds the criteria recognised in the text and ``attrs["text"]`` the text searched.
        """
        out = self._results.copy()
        out.attrs = dict(self._results.attrs)
        return out

    def relevance(self, res: pd.DataFrame) -> np.ndarray | None:
        """Which results are relevant to the reference case (None without one, or without its diagnosis group).

        Relevant: the same diagnosis group, the wanted values of changed
        criteria and, with a skin-tone modifier, a skin tone in its range (the
        "tone" protocol of :mod:`dermretr.evaluate`).
        """
        if self.reference_case is None:
            return None
        ranges = None
        if self.tone is not None and self.case_ranges is not None:
            ranges = self.case_ranges[[self.row_of[cid] for cid in res["case_id"].astype(str)]]
        return relevance(res, self.cases.iloc[self.row_of[self.reference_case]], self.wanted(), self.tone, ranges)

    def thumbnail_png(self, path: str, size: int) -> bytes:
        """PNG bytes of a case image's thumbnail (cached; an unreadable file gives a crossed tile)."""
        from ..viz import load_thumbnail

        return self._thumbs.get_or_make((str(path), int(size)), lambda: png_bytes(load_thumbnail(str(path), size)))

    # ------------------------------------------------------------------ explanations and the map

    def result_row(self, rank: Any) -> pd.Series:
        """The last results' row at ``rank`` (1-based)."""
        res = self._results
        if not len(res):
            raise DermretrError("no results to explain yet: search first")
        check_int(rank, "rank", 1, len(res), what=f"between 1 and {len(res)} (the results shown)")
        return res.iloc[int(rank) - 1]

    def explain(self, rank: Any) -> list[Figure]:
        """Why the result at ``rank`` matched: its attribution overlay, then (local vectors) the mask maps."""
        row = self.result_row(rank)
        return explain_figures(self.index, self.retriever, self.last["image"], self.last["text"], row, int(rank),
                               self.explain_method)

    def map_figure(self) -> Figure:
        """The index's UMAP map with the last query (star) and its results; fitted once per index (cached)."""
        q = self.last.get("query")
        return map_figure(self.index, self.map_params, None if q is None else q.global_vectors,
                          self._results["case_id"].astype(str).tolist())
