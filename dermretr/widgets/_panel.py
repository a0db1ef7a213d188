"""The query builder's widgets and their layout, kept in step with its :class:`~dermretr.session.QuerySession`."""

from __future__ import annotations

import contextlib
import html
import logging
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as W
import numpy as np
import pandas as pd

from .._errors import DermretrError
from ..data.vocab import CRITERIA, TONE_RANGES, TONE_WORDS
from ..session import ANY_SKIN, SKIN_TYPES, UNKNOWN, QuerySession, png_bytes, skin_label, thumbnail
from ._grid import ResultGrid
from ._live import Debouncer

__all__ = ["QueryPanel", "SessionAttribute"]

log = logging.getLogger("dermretr.widgets")

#: How each control's widget value is stored in the session.
_CONTROLS: dict[str, Callable[[Any], Any]] = {
    "alpha": float, "k": int, "skin_types": lambda v: tuple(int(x) for x in v),
    "groups": lambda v: tuple(str(x) for x in v), "tone_only": bool}
_COLORS = {"info": "#333333", "warning": "#a15c00", "error": "#b00020"}


class SessionAttribute:
    """A view attribute that reads (and, unless ``readonly``, writes) the same attribute of ``view.session``."""

    def __init__(self, doc: str = "", readonly: bool = False):
        self.__doc__, self.readonly, self.name = doc, readonly, ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj.session, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        if self.readonly:
            raise AttributeError(f"{self.name} is read-only: change it through the app's controls")
        setattr(obj.session, self.name, value)


class QueryPanel:
    """The widgets of :class:`~dermretr.widgets.QueryBuilder` (see its attributes), their layout and messages."""

    session: QuerySession
    thumb: int
    _live: Debouncer
    _quiet: int = 0

    index = SessionAttribute("The CaseIndex searched.", readonly=True)
    cases = SessionAttribute("The index's case table.", readonly=True)
    empty = SessionAttribute("True when the index holds no case.", readonly=True)
    retriever = SessionAttribute("The retriever encoding the queries.", readonly=True)
    tone_scale = SessionAttribute("The skin-tone modifier's scale, or None (no labels).", readonly=True)
    reference = SessionAttribute("The reference image (RGB), or None before one is chosen.", readonly=True)
    reference_case = SessionAttribute("The reference's case id (None for an uploaded image).", readonly=True)
    tone = SessionAttribute("The skin-tone range of the modifier (\"V-VI\"), or None for any skin.", readonly=True)
    exclude_reference = SessionAttribute("Leave the reference case itself out of its results.")
    explain_method = SessionAttribute("Attribution method behind the \"why?\" buttons.")
    map_params = SessionAttribute("UMAP parameters of the map.")

    def _build_widgets(self, max_k: int, on_why: Callable[[int], Any]) -> None:
        s, wide = self.session, {"description_width": "initial"}
        self.case_picker = W.Dropdown(options=list(zip(self._case_labels(), s.ids.tolist())), value=None,
                                      description="reference case", style=wide, layout=W.Layout(width="320px"))
        self.case_picker.add_class("dermretr-case-picker")
        self.preview = W.Image(value=png_bytes(np.full((8, 8, 3), 235, np.uint8)), format="png",
                               layout=W.Layout(width=f"{2 * self.thumb}px", height=f"{2 * self.thumb}px"))
        self.preview.add_class("dermretr-preview")
        self.random_button = W.Button(description="random case", icon="random", layout=W.Layout(width="130px"))
        self.random_button.add_class("dermretr-random")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload image",
                                   layout=W.Layout(width="180px"))
        self.criteria: dict[str, W.Dropdown] = {}
        for c, values in CRITERIA.items():
            dd = W.Dropdown(options=[UNKNOWN, *values], value=UNKNOWN, description=c.replace("_", " "),
                            style={"description_width": "150px"}, layout=W.Layout(width="340px"))
            dd.add_class("dermretr-criterion")
            dd.add_class(f"dermretr-criterion-{c}")
            self.criteria[c] = dd
        self.text = W.Textarea(value="", placeholder="descriptor or modification text (empty: cases like this image)",
                               continuous_update=False, layout=W.Layout(width="98%", height="70px"))
        self.text.add_class("dermretr-text")
        self.alpha = W.FloatSlider(value=s.alpha, min=0.0, max=1.0, step=0.05, readout_format=".2f",
                                   description="alpha (local weight)", style=wide, continuous_update=False,
                                   disabled=not s.has_local, layout=W.Layout(width="340px"))
        top = max(1, min(max_k, len(s.cases)))
        self.k = W.IntSlider(value=min(s.k, top), min=1, max=top, description="k", continuous_update=False,
                             layout=W.Layout(width="340px"))
        self.skin_filter = W.SelectMultiple(options=list(SKIN_TYPES), value=(), rows=6, description="skin type",
                                            style=wide, layout=W.Layout(width="160px"))
        groups = []
        if "diagnosis_group" in s.cases.columns:
            groups = sorted({str(g) for g in s.cases["diagnosis_group"].dropna().unique()})
        self.group_filter = W.SelectMultiple(options=groups, value=(), rows=min(6, max(2, len(groups))),
                                             description="diagnosis group", style=wide,
                                             layout=W.Layout(width="200px"))
        tones = [("any skin", ANY_SKIN), *((f"{word} ({name})", name) for word, name
                                           in zip(TONE_WORDS, TONE_RANGES[s.tone_scale or "fitzpatrick"]))]
        self.tone_picker = W.Dropdown(options=tones, value=ANY_SKIN, description="show it on", style=wide,
                                      disabled=s.tone_scale is None, layout=W.Layout(width="240px"))
        self.tone_picker.add_class("dermretr-tone")
        self.tone_only = W.Checkbox(value=False, description="only cases in this range", indent=False,
                                    disabled=s.tone_scale is None, layout=W.Layout(width="170px"))
        self.tone_note = W.HTML(value="")
        self.tone_note.add_class("dermretr-tone-note")
        self.search_button = W.Button(description="Search", button_style="primary", icon="search")
        self.search_button.add_class("dermretr-search")
        self.live = W.Checkbox(value=True, description="live update", indent=False, layout=W.Layout(width="120px"))
        self.map_toggle = W.ToggleButton(value=False, description="show map", icon="map",
                                         tooltip="the query and its results on the UMAP map of the index")
        self.message = W.HTML(value="")
        self.message.add_class("dermretr-message")
        self._grid = ResultGrid(s, self.thumb, on_why)
        self.grid = self._grid.widget
        self.detail = W.Output()
        self.detail.add_class("dermretr-detail")
        self.map_view = W.Output(layout=W.Layout(display="none"))
        self.map_view.add_class("dermretr-map")

        reference = W.VBox([W.HTML("<b>Reference</b>"), self.case_picker,
                            W.HBox([self.random_button, self.upload]), self.preview])
        descriptors = W.VBox([W.HTML("<b>Descriptors</b> (7-point checklist)"), *self.criteria.values()])
        controls = W.VBox([W.HTML("<b>Query text</b>"), self.text, self.alpha, self.k,
                           W.HBox([self.tone_picker, self.tone_only]), self.tone_note,
                           W.HBox([self.skin_filter, self.group_filter]),
                           W.HBox([self.search_button, self.live, self.map_toggle])],
                          layout=W.Layout(width="420px"))
        self.widget = W.VBox([
            W.HTML("<h3 style='margin:4px 0'>dermretr - composed query builder</h3>"),
            W.HBox([reference, descriptors, controls], layout=W.Layout(flex_flow="row wrap", grid_gap="16px")),
            self.message, self.grid, self.detail, self.map_view,
        ])
        self.widget.add_class("dermretr-app")

    def _controls(self) -> list[W.Widget]:
        return [self.case_picker, self.random_button, self.upload, *self.criteria.values(), self.text, self.alpha,
                self.k, self.tone_picker, self.tone_only, self.skin_filter, self.group_filter, self.search_button,
                self.live, self.map_toggle]

    def _case_labels(self) -> list[str]:
        cases, ids = self.session.cases, self.session.ids
        if len(cases) == 0:
            return []
        parts = [pd.Series(ids)]
        if "diagnosis" in cases.columns:
            parts.append(cases["diagnosis"].astype("string").fillna("?").reset_index(drop=True))
        if "fitzpatrick" in cases.columns:
            parts.append(pd.Series(["FST " + skin_label(v) for v in cases["fitzpatrick"].tolist()]))
        labels = parts[0].astype(str)
        for p in parts[1:]:
            labels = labels + " · " + p.astype(str)
        return labels.tolist()

    # ------------------------------------------------------------------ keeping the widgets in step

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        """Change widgets without their observers acting on the change."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _pull(self, reference: bool = False) -> None:
        """Show the session's state: criteria, text and skin-tone modifier (and the reference and its preview)."""
        s = self.session
        with self._quietly():
            if reference:
                self.case_picker.value = s.reference_case
                if s.reference is not None:
                    self.preview.value = png_bytes(thumbnail(s.reference, 2 * self.thumb))
            for c, dd in self.criteria.items():
                dd.value = s.criteria[c]
            self.tone_picker.value = ANY_SKIN if s.tone is None else s.tone
            self.text.value = s.text

    def _show_tone_note(self) -> None:
        self.tone_note.value = f"<div style='font-size:12px;color:#555'>{html.escape(self.session.tone_note())}</div>"

    # ------------------------------------------------------------------ live update (debounced) and observers

    @contextlib.contextmanager
    def _batch(self, schedule: bool = False) -> Iterator[None]:
        """Change several widgets without each change searching; optionally search once at the end."""
        with self._quietly():
            yield
        if schedule:
            self._changed()

    def _changed(self) -> None:
        if not (self._quiet or self.empty or not self.live.value):
            self._live.schedule()

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until a pending live update has run; True when nothing is pending any more."""
        return self._live.wait(timeout)

    def _on_criterion(self, name: str, value: str) -> None:
        if not self._quiet:
            self._guard(lambda: self._criterion_changed(name, value))

    def _criterion_changed(self, name: str, value: str) -> None:
        self.session.set_criterion(name, value)
        self.text.value = self.session.text  # a change searches (the text's observer)

    def _on_text(self, change: dict) -> None:
        self.session.text = str(change["new"] or "")
        self._changed()

    def _on_control(self, name: str, value: Any) -> None:
        setattr(self.session, name, _CONTROLS[name](value))
        self._changed()

    def _on_tone(self, change: dict) -> None:
        if not self._quiet:
            with self._batch(schedule=True):  # the text and (with tone_only) the filters change: one search
                self._guard(lambda: self._tone_changed(change["new"]))
        self._show_tone_note()

    def _tone_changed(self, target: str) -> None:
        self.session.set_tone(target)
        self.text.value = self.session.text

    def _on_live(self, change: dict) -> None:
        if change["new"]:
            self._changed()
        else:
            self._live.cancel()

    # ------------------------------------------------------------------ messages and guards

    def _say(self, level: str, *lines: str) -> None:
        shown = [line for line in lines if line]
        self.last_message = (level, " ".join(shown))
        body = "<br>".join(html.escape(line) for line in shown)
        self.message.value = (f"<div class='dermretr-msg dermretr-msg-{level}' "
                              f"style='color:{_COLORS.get(level, '#333')};font-size:13px'>{body}</div>")

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run a widget callback: errors become a message, the app keeps working."""
        try:
            return fn()
        except DermretrError as exc:
            self._say("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - a widget callback must never take the app down
            log.exception("query builder callback failed")
            self._say("error", f"unexpected error ({type(exc).__name__}: {exc}); the app keeps working")
        return None

    # ------------------------------------------------------------------ display and closing

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        s = self.session
        ref = s.reference_case or ("upload" if s.reference is not None else None)
        return (f"{type(self).__name__}(cases={len(s.cases)}, reference={ref!r}, k={self.k.value}, "
                f"alpha={self.alpha.value:.2f}, results={len(s.last_results)})")

    def close(self) -> None:
        """Cancel a pending live update and close the app's widgets (and only those)."""
        self._live.cancel()
        seen: set[int] = set()

        def close(w: W.Widget) -> None:
            if id(w) in seen:
                return
            seen.add(id(w))
            for child in getattr(w, "children", ()):
                close(child)
            w.close()

        for tile in self._grid.tiles:
            close(tile.box)
        close(self.widget)
