"""The composed query builder app, :class:`QueryBuilder`: a view on a :class:`~dermretr.session.QuerySession`."""

from __future__ import annotations

import contextlib
import html
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .._checks import check_int
from .._errors import DermretrError
from ..data.images import ImageReadError
from ..models._released import RELEASED
from ..session import QuerySession, as_index, check_index
from ._grid import figure_output, html_output
from ._live import Debouncer
from ._panel import QueryPanel

__all__ = ["QueryBuilder"]


def _check_debounce(debounce: Any) -> float:
    try:
        seconds = float(debounce)
    except (TypeError, ValueError):
        raise DermretrError(f"debounce must be a number of seconds, got {debounce!r}") from None
    if not seconds >= 0:
        raise DermretrError(f"debounce must be >= 0 seconds, got {seconds}")
    return seconds


class QueryBuilder(QueryPanel):
    """An ipywidgets app: build a composed query (reference image + descriptor text), browse the results.

    Every change goes to :attr:`session`, a :class:`~dermretr.session.QuerySession`
    that holds the query and gives the results; the app shows it.

    Parameters
    ----------
    index : CaseIndex, index folder, case table or "SOURCE:PATH"
        The database; a table or spec is indexed with ``model`` first (see
        :func:`~dermretr.session.as_index`).  An empty index disables the app.
    retriever : Retriever, optional
        Encodes the queries; default ``index.retriever`` (set by
        :meth:`CaseIndex.build`, :meth:`CaseIndex.open` or
        ``CaseIndex.load(dir, retriever)``).
    k : int
        Results shown at first (the k slider goes up to ``max_k``).
    alpha : float, optional
        Initial weight of local evidence (default the index's alpha).
    debounce : float
        Seconds of quiet before a live update searches; ``0`` searches at once,
        synchronously (what scripts and tests want).
    thumb : int
        Side of the result thumbnails in pixels.
    exclude_reference : bool
        Leave the reference case itself out of its results (default True).
    explain_method : {"gradcam", "ig", "occlusion"}
        Attribution method behind the "why?" buttons.
    map_params : dict, optional
        UMAP parameters for the map (``n_neighbors``, ``min_dist``, ``metric``,
        ``n_epochs``, ``seed``); the map is fitted once per index and cached.
    max_k : int
        Largest k the slider offers.
    model : Retriever or str
        Indexes a case table given as ``index`` (unless ``retriever`` is given);
        default the released DermSynth model ``"dermretr/dermsynth-tiny"``.
    seed : int, optional
        Seed of the "random case" button.

    Attributes
    ----------
    session : QuerySession
        The query and its results, without the widgets (drive it from code too).
    case_picker : ipywidgets.Dropdown
        Reference case (``None`` when the reference is an uploaded image).
    preview : ipywidgets.Image
        Thumbnail of the reference.
    random_button, upload : ipywidgets.Button, ipywidgets.FileUpload
        Pick a random reference case; upload a reference image.
    criteria : dict of str -> ipywidgets.Dropdown
        The seven 7-point criteria, ``"(unknown)"`` or a Derm7pt value.
    text : ipywidgets.Textarea
        The query text searched (free text; the dropdowns write into it).
    alpha, k : ipywidgets.FloatSlider, ipywidgets.IntSlider
        Weight of local evidence (disabled for an index without local vectors); results per search.
    skin_filter, group_filter : ipywidgets.SelectMultiple
        Fitzpatrick skin types and diagnosis groups kept (none selected = all).
    tone_picker : ipywidgets.Dropdown
        Skin-tone modifier: :data:`ANY_SKIN` or a range ("V-VI"); see :meth:`set_tone`.
    tone_only : ipywidgets.Checkbox
        Keep the results to the modifier's range (default off).
    tone_note : ipywidgets.HTML
        How many database cases the chosen range holds, or why the modifier is off.
    tone_scale : str or None
        ``"fitzpatrick"``, ``"monk"`` or None (no skin-tone labels: the modifier is disabled).
    search_button, live : ipywidgets.Button, ipywidgets.Checkbox
        Searches now; search (debounced) whenever the query or a control changes.
    grid : ipywidgets.GridBox
        One tile per result: thumbnail, caption and a "why?" button.
    detail : ipywidgets.Output
        Attribution overlay and mask maps of the result whose "why?" was pressed.
    map_toggle, map_view : ipywidgets.ToggleButton, ipywidgets.Output
        Shows the UMAP map of the index with the query and its results; the map.
    message : ipywidgets.HTML
        Errors, warnings and notes.
    widget : ipywidgets.VBox
        The whole app (displayed by ``display(app)`` or as a cell's last value).
    search_count : int
        Searches run so far (each live update, button press or call counts once).
    """

    def __init__(self, index, retriever=None, *, k: int = 8, alpha: float | None = None, debounce: float = 0.3,
                 thumb: int = 96, exclude_reference: bool = True, explain_method: str = "gradcam",
                 map_params: Mapping[str, Any] | None = None, max_k: int = 50, seed: int | None = None,
                 model: Any = RELEASED):
        index = as_index(index, model if retriever is None else retriever)
        retriever = check_index(index, retriever, owner="QueryBuilder")
        check_int(k, "k")
        top = check_int(max_k, "max_k")
        debounce = _check_debounce(debounce)
        side = check_int(thumb, "thumb", 16, what="an integer of at least 16 pixels")
        assert top is not None and side is not None  # check_int returns None only with allow_none
        self.thumb = side
        self.session = QuerySession(index, retriever, k=k, alpha=alpha, exclude_reference=exclude_reference,
                                    explain_method=explain_method, map_params=map_params, seed=seed)
        self.debounce, self.search_count, self._quiet = debounce, 0, 0
        self._live = Debouncer(debounce, lambda: self._guard(self._search_now))
        self._build_widgets(top, on_why=lambda rank: self._guard(lambda: self.explain(rank)))
        self.session.k = int(self.k.value)
        self._connect()
        if self.empty:
            for w in self._controls():
                w.disabled = True
            self._say("error", "the index holds no case: there is nothing to search. Build one with "
                               "CaseIndex.build(retriever, cases) or `dermretr index`, then open it here.")
        else:
            self._say("info", "pick a reference case (or upload an image), set descriptors, then search")

    def _connect(self) -> None:
        self.case_picker.observe(self._on_case_picked, names="value")
        self.random_button.on_click(lambda _: self._guard(self.random_case))
        self.upload.observe(self._on_upload, names="value")
        for c, dd in self.criteria.items():
            dd.observe(lambda change, c=c: self._on_criterion(c, change["new"]), names="value")
        self.text.observe(self._on_text, names="value")
        for name, w in (("alpha", self.alpha), ("k", self.k), ("skin_types", self.skin_filter),
                        ("groups", self.group_filter), ("tone_only", self.tone_only)):
            w.observe(lambda change, name=name: self._on_control(name, change["new"]), names="value")
        self.tone_picker.observe(self._on_tone, names="value")
        self._show_tone_note()
        self.live.observe(self._on_live, names="value")
        self.search_button.on_click(lambda _: self._guard(self.search))
        self.map_toggle.observe(self._on_map_toggle, names="value")

    # ------------------------------------------------------------------ observers

    def _on_case_picked(self, change: dict) -> None:
        if not self._quiet and change["new"] is not None:
            self._guard(lambda: self.select_case(change["new"]))

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if self._quiet or not files:
            return
        item = files[-1]
        data = item.get("content", b"") if isinstance(item, Mapping) else b""
        name = item.get("name", "upload") if isinstance(item, Mapping) else "upload"
        self._guard(lambda: self.upload_bytes(bytes(data), name))
        with self._batch(), contextlib.suppress(Exception):
            self.upload.value = ()  # so that the same file can be uploaded again

    def _on_map_toggle(self, change: dict) -> None:
        if change["new"]:
            self.map_view.layout.display = None
            self._guard(self.show_map)
        else:
            self.map_view.outputs = ()
            self.map_view.layout.display = "none"

    # ------------------------------------------------------------------ the reference and the query

    def select_case(self, case_id: Any) -> None:
        """Make an indexed case the reference: preview, criteria dropdowns and query text follow.

        Raises
        ------
        DermretrError
            When ``case_id`` is not in the index.  An unreadable case image is
            reported in :attr:`message` instead (the reference stays as it was).
        """
        if self.empty:
            self._say("error", "the index holds no case: there is no case to pick")
            return
        try:
            row = self.session.select_case(case_id)
        except ImageReadError as exc:
            with self._batch():
                self.case_picker.value = self.session.reference_case
            self._say("error", f"case {case_id}: {exc}; the reference is unchanged")
            return
        with self._batch(schedule=True):
            self._pull(reference=True)
            self._say("info", f"reference: case {case_id}" + (f" ({row['diagnosis']})" if "diagnosis" in row else ""))

    def random_case(self, seed: int | None = None) -> str | None:
        """Pick a random reference case (reproducible with ``seed``); returns its id."""
        if self.empty:
            self._say("error", "the index holds no case: there is no case to pick")
            return None
        cid = self.session.random_case_id(seed)
        self.select_case(cid)
        return cid

    def upload_bytes(self, data: bytes, name: str = "upload") -> bool:
        """Make an uploaded image the reference (what the upload button does).

        Returns False - and says why in :attr:`message`, keeping the previous
        reference - when ``data`` is not an image that can be read.
        """
        if self.empty:
            self._say("error", "the index holds no case: there is nothing to search")
            return False
        name = str(name or "upload")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            self._say("error", f"{name}: the upload is not file content; the reference is unchanged")
            return False
        try:
            image = self.session.upload(bytes(data), name)
        except ImageReadError as exc:
            self._say("error", f"{exc}; upload a JPEG or PNG image. The reference is unchanged")
            return False
        with self._batch(schedule=True):
            self._pull(reference=True)
            self._say("info", f"reference: uploaded image {name} ({image.width}x{image.height} px); its "
                              "criteria are unknown")
        return True

    def set_criterion(self, name: str, value: str) -> None:
        """Set one criterion dropdown (a Derm7pt value or ``"(unknown)"``), as a user would.

        Raises :class:`~dermretr._errors.VocabularyError` for an unknown criterion or value.
        """
        self.criteria[name].value = self.session.check_criterion(name, value)

    def wanted(self) -> dict[str, str]:
        """Criteria whose dropdown differs from the reference: criterion -> wanted value."""
        return self.session.wanted()

    def set_tone(self, target: Any) -> None:
        """Show the reference on another skin tone, as the "show it on" dropdown does.

        The query text becomes the tone phrase and the reference's findings
        without its own skin type ("on Fitzpatrick type V-VI skin: irregular
        streaks"), :attr:`tone_note` says how many database cases that range
        holds, and the results search again (debounced, as the other controls).
        ``target``: a range of :attr:`tone_scale` ("V-VI"; Monk: "8-10"), a
        value in it (5), a plain word ("lighter", "medium", "darker"), or None
        / ``"any"`` for no skin tone.  Raises :class:`DermretrError` when the
        cases have no skin-tone labels (the modifier is off) and
        :class:`VocabularyError` for a value off the scale.
        """
        before = self.session.tone
        self.session.set_tone(target)
        if self.session.tone != before:
            with self._batch(schedule=True):
                self._pull()

    def filters(self) -> dict[str, list]:
        """The case filters the controls set, as :meth:`CaseIndex.search` takes them.

        With "only cases in this range" ticked, the skin-tone modifier's range
        (:func:`tone_filter`) is kept too, intersected with the skin-type filter.
        """
        return self.session.filters()

    # ------------------------------------------------------------------ searching, explanations, the map

    @property
    def results(self) -> pd.DataFrame:
        """The last search's results (:attr:`QuerySession.last_results`): ``rank, case_id, score, ..., relevant``."""
        return self.session.last_results

    def search(self) -> pd.DataFrame:
        """Search now with the current reference, text and controls; update the grid (and the map).

        Problems (no reference yet, filters matching nothing, an empty index,
        a text the model cannot encode...) are reported in :attr:`message`,
        never raised.  Returns :attr:`results`.
        """
        self._live.cancel()
        self._guard(self._search_now)
        return self.results

    def _search_now(self) -> None:
        with self._live.lock:
            self.search_count += 1
            start = time.perf_counter()
            report = self.session.search()
            if report.results is not None:
                self._grid.show(report.results)
                self.detail.outputs = ()
                if self.map_toggle.value:
                    self._guard(self.show_map)
            self._say(report.level, *report.lines(time.perf_counter() - start))

    def explain(self, rank: int) -> list[Figure]:
        """Show why the result at ``rank`` (1-based) matched: attribution overlay and mask maps in :attr:`detail`.

        Returns the attribution overlay, then (for retrievers with local vectors) the mask maps.
        """
        cid, method = html.escape(str(self.session.result_row(rank)["case_id"])), self.session.explain_method
        self.detail.outputs = (html_output(f"<i>explaining #{int(rank)} {cid}...</i>"),)
        figs = self.session.explain(rank)
        head = (f"<b>#{int(rank)} {cid}</b>: attribution of the score to the result image "
                f"({method}); below, the regions each spatial mask pooled (query and result)")
        self.detail.outputs = (html_output(head), *(figure_output(f) for f in figs))
        return figs

    def show_map(self) -> Figure | None:
        """Draw the index's UMAP map with the last query (star) and its results in :attr:`map_view`.

        The map is fitted once per index (cached); on a large index the first
        fit takes a while.  Returns the Figure (None for an empty index).
        """
        if self.empty:
            self._say("error", "the index holds no case: there is no map to draw")
            return None
        fig = self.session.map_figure()
        self.map_view.outputs = (figure_output(fig, dpi=80),)
        return fig
