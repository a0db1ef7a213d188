"""Composed query builder: an ipywidgets app to build image + text queries and browse the results.

``QueryBuilder(index)`` is the classroom version of "this lesion, but with a
blue-whitish veil": pick a reference case from a :class:`~dermretr.index.CaseIndex`
(or upload an image), set the seven 7-point criteria, and look at what comes
back.

* **Reference** - a case of the index (dropdown with a thumbnail preview, a
  "random case" button) or an uploaded image.
* **Descriptors** - one dropdown per 7-point criterion, pre-filled from the
  reference case when its criteria are known ("(unknown)" otherwise).
  Changing one writes the matching modification text
  (:func:`~dermretr.data.vocab.modification_text`, all changes combined) into
  the free-text box; the box can be edited, and its content is the query text.
* **Controls** - alpha (weight of local evidence), k, skin-type and
  diagnosis-group filters, a Search button and live (debounced) update.
* **Skin-tone modifier** - "show it on: any skin / lighter (I-II) / medium
  (III-IV) / darker (V-VI)" puts the tone phrase before the query text
  (:func:`~dermretr.data.vocab.tone_query_text`, the reference's own skin
  type removed: the "tone" protocol of :mod:`dermretr.evaluate`), says how
  many database cases that range holds (:func:`tone_exposure_text`), and can
  keep the results to that range.  Fitzpatrick types when the cases have
  them, else Monk tones, else the control is off and says why.
* **Results** - a grid of thumbnails captioned with case id, diagnosis, skin
  type, ``s_global``, ``s_local`` and the score.  When the reference is a case
  of the index, relevant hits are framed in green (same diagnosis group as
  the reference and, for changed criteria, the wanted values or, with a
  skin-tone modifier, a skin tone in its range, as in :mod:`dermretr.evaluate`).
  "why?" under a result shows its GradCAM attribution overlay and the spatial
  mask maps; "show map" places the query and its results on the UMAP map of
  the index.

Bad input never breaks the app: an unreadable upload, a case whose image is
missing, filters that match nothing, a text without a known descriptor or an
empty index give a message in :attr:`QueryBuilder.message` and the app keeps
working.  Everything can be driven from Python (``select_case``,
``set_criterion``, ``set_tone``, ``search``, ``explain``...), which is how the
tests use it.

Runs in JupyterLab 4, Voila (``voila notebooks/03_composed_queries.ipynb``) and
Google Colab (run ``from google.colab import output;
output.enable_custom_widget_manager()`` first).

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
>>> app = QueryBuilder(CaseIndex.build(r, load("synthetic", root)), k=3, debounce=0)
>>> app.select_case("ds000002")
>>> len(app.results), len(app.grid.children), "ds000002" in set(app.results["case_id"])
(3, 3, False)
>>> app.set_criterion("blue_whitish_veil", "absent" if app.criteria["blue_whitish_veil"].value == "present"
...                   else "present")
>>> app.text.value.startswith("same lesion but with")
True
>>> app.set_tone("darker")
>>> app.tone, app.text.value.startswith("on Fitzpatrick type V-VI skin: same lesion but with")
('V-VI', True)
>>> app.tone_note.value.count("the database holds")
1
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import hashlib
import html
import io
import logging
import re
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ._errors import DermretrError, VocabularyError
from .data.images import ImageReadError, load_rgb
from .data.vocab import (ABSENT, CRITERIA, TONE_RANGES, TONE_WORDS, case_text, criteria_of, modification_text,
                         normalize_value, parse_text, tone_findings, tone_query_text, tone_range, tone_text)
from .evaluate import tone_ranges
from .viz import _fmt  # the captions read like the gallery's

__all__ = ["QueryBuilder", "decode_image", "UNKNOWN", "SKIN_TYPES", "ANY_SKIN", "tone_labels", "tone_counts",
           "tone_exposure_text", "tone_filter", "tone_findings"]

log = logging.getLogger(__name__)

#: Dropdown entry of a criterion whose value is not known.
UNKNOWN = "(unknown)"
#: Fitzpatrick skin types as the skin-type filter shows them: (label, value).
SKIN_TYPES: tuple[tuple[str, int], ...] = (("I", 1), ("II", 2), ("III", 3), ("IV", 4), ("V", 5), ("VI", 6))
_ROMAN = {v: label for label, v in SKIN_TYPES}
#: Value of the skin-tone modifier that adds no skin tone to the query.
ANY_SKIN = "any"
#: Columns of skin-tone labels the modifier reads, in order of preference: (scale, column).
_TONE_LABELS = (("fitzpatrick", "fitzpatrick"), ("fitzpatrick", "skin_tone_group"), ("monk", "monk"))
_NO_TONE_LABELS = ("the skin-tone modifier needs Fitzpatrick types or Monk tones, and this index's cases have "
                   "none (DermSynth, Fitzpatrick17k, DDI, PAD-UFES-20 and SCIN have them)")
_COLORS = {"info": "#333333", "warning": "#a15c00", "error": "#b00020"}
_RELEVANT_BORDER = "3px solid #2ca02c"
_OTHER_BORDER = "1px solid #cccccc"
_NO_TRUTH_BORDER = "1px solid transparent"


@dataclass
class _Tile:
    box: W.VBox
    image: W.Image
    caption: W.HTML
    button: W.Button


def _png(array_or_image: Any) -> bytes:
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(np.asarray(array_or_image))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _figure_output(fig, dpi: int = 90) -> dict:
    """A matplotlib Figure as an Output-widget display_data entry (image/png)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": repr(fig)}}


def _html_output(text: str) -> dict:
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": text, "text/plain": text}}


def _skin(value: Any) -> str:
    try:
        if value is None or pd.isna(value):
            return "?"
        return _ROMAN.get(int(value), str(value))
    except (TypeError, ValueError):
        return str(value)


def _safe_name(name: str) -> str:
    base = Path(str(name or "upload")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return base[:80]


def decode_image(data: bytes, name: str = "upload") -> Image.Image:
    """Decode image bytes exactly as :func:`~dermretr.data.images.load_rgb` reads a file.

    Raises
    ------
    ImageReadError
        When the bytes are empty, truncated or not an image (the message names ``name``).

    Examples
    --------
    >>> decode_image(b"hello", "notes.txt")
    Traceback (most recent call last):
    ...
    dermretr.data.images.ImageReadError: notes.txt is not an image file PIL can read
    """
    name = str(name or "upload")
    with tempfile.TemporaryDirectory(prefix="dermretr-upload-") as tmp:
        path = Path(tmp) / _safe_name(name)
        path.write_bytes(bytes(data))
        try:
            img = load_rgb(path)
            img.load()
            return img.copy()
        except ImageReadError as exc:
            raise ImageReadError(str(exc).replace(str(path), name)) from None
        except Exception as exc:  # e.g. PIL's DecompressionBombError
            raise ImageReadError(f"cannot decode image {name}: {exc}") from None


# ----------------------------------------------------------------------------- skin-tone modifier


def tone_labels(cases: pd.DataFrame) -> tuple[str, str] | None:
    """The skin-tone labels of a case table the tone modifier uses: ``(scale, column)``, or None.

    Fitzpatrick types (the ``fitzpatrick`` column, else DDI's pairs in
    ``skin_tone_group``) come first, then Monk tones (``monk``); a column
    counts when at least one case has a label in it.

    Examples
    --------
    >>> tone_labels(pd.DataFrame({"fitzpatrick": pd.array([None, 5], dtype="Int64"), "monk": [1, 2]}))
    ('fitzpatrick', 'fitzpatrick')
    >>> tone_labels(pd.DataFrame({"fitzpatrick": pd.array([None], dtype="Int64"), "monk": [9]}))
    ('monk', 'monk')
    >>> tone_labels(pd.DataFrame({"case_id": ["a"]})) is None
    True
    """
    for scale, column in _TONE_LABELS:
        if column in cases.columns and any(r is not None for r in tone_ranges(cases[[column]], scale)):
            return scale, column
    return None


def _labels_of(cases: pd.DataFrame) -> tuple[str, str]:
    labels = tone_labels(cases)
    if labels is None:
        raise DermretrError(_NO_TONE_LABELS)
    return labels


def _tone_target(target: Any, scale: str) -> str | None:
    """A range name of ``scale`` (None for any skin) from a range, a value of the scale or a plain word."""
    if target is None or (isinstance(target, str) and target.strip().lower() in (ANY_SKIN, "any skin", "")):
        return None
    if isinstance(target, str) and target.strip().lower() in TONE_WORDS:
        return list(TONE_RANGES[scale])[TONE_WORDS.index(target.strip().lower())]
    return tone_range(target, scale)


def tone_counts(cases: pd.DataFrame) -> pd.Series:
    """How many cases of a case table (an index's database) fall in each skin-tone range.

    Returns
    -------
    Series
        Counts indexed by the ranges of the scale of :func:`tone_labels`
        (lightest first) and ``"unknown"``; ``attrs["scale"]``.

    Raises
    ------
    DermretrError
        When the cases have no Fitzpatrick type or Monk tone.

    Examples
    --------
    >>> tone_counts(pd.DataFrame({"fitzpatrick": pd.array([1, 2, 6, None], dtype="Int64")})).to_dict()
    {'I-II': 2, 'III-IV': 0, 'V-VI': 1, 'unknown': 1}
    """
    scale, column = _labels_of(cases)
    return _count_ranges(tone_ranges(cases[[column]], scale), scale)


def _count_ranges(ranges: np.ndarray, scale: str) -> pd.Series:
    found = pd.Series(ranges, dtype=object).fillna("unknown").value_counts()
    out = found.reindex([*TONE_RANGES[scale], "unknown"], fill_value=0).astype(int).rename("cases")
    out.index.name = None
    out.attrs["scale"] = scale
    return out


def _share(n: int, total: int) -> str:
    share = n / total if total else 0.0
    return "<1%" if 0 < share < 0.01 else f"{share:.0%}"


def tone_exposure_text(cases: pd.DataFrame | pd.Series, target: Any = None) -> str:
    """How many cases of a skin-tone range the database holds, in words (``target`` None: every range).

    Parameters
    ----------
    cases : DataFrame or Series
        A case table (an index's database), or its :func:`tone_counts`.
    target : str, int or None
        A skin-tone range, a value in it or a plain word ("darker"); None for every range.

    Examples
    --------
    >>> cases = pd.DataFrame({"fitzpatrick": [1] * 24 + [6]})
    >>> tone_exposure_text(cases, "V-VI")
    'the database holds 1 case on Fitzpatrick type V-VI skin, 4% of 25'
    >>> tone_exposure_text(cases)
    'the database holds 25 cases by Fitzpatrick type: I-II 24 (96%), III-IV 0 (0%), V-VI 1 (4%)'
    >>> tone_exposure_text(tone_counts(cases), "darker") == tone_exposure_text(cases, "V-VI")
    True
    """
    counts = cases if isinstance(cases, pd.Series) else tone_counts(cases)
    scale, total = counts.attrs["scale"], int(counts.sum())
    name = _tone_target(target, scale)
    if name is not None:
        n = int(counts[name])
        return (f"the database holds {n} case{'s' if n != 1 else ''} {tone_text(name, scale)}, "
                f"{_share(n, total)} of {total}")
    parts = [f"{r} {int(counts[r])} ({_share(int(counts[r]), total)})" for r in TONE_RANGES[scale]]
    if counts["unknown"]:
        parts.append(f"unknown {int(counts['unknown'])} ({_share(int(counts['unknown']), total)})")
    title = "Fitzpatrick type" if scale == "fitzpatrick" else "Monk tone"
    return f"the database holds {total} case{'s' if total != 1 else ''} by {title}: {', '.join(parts)}"


def tone_filter(cases: pd.DataFrame, target: Any) -> dict[str, list]:
    """The case filter (``CaseIndex.search(filters=...)``) keeping one skin-tone range.

    Examples
    --------
    >>> tone_filter(pd.DataFrame({"fitzpatrick": [1, 6]}), "darker")
    {'fitzpatrick': [5, 6]}
    >>> tone_filter(pd.DataFrame({"fitzpatrick": [None, None], "skin_tone_group": ["I-II", "V-VI"]}), "V-VI")
    {'skin_tone_group': ['V-VI']}
    """
    return _range_filter(*_labels_of(cases), target)


def _range_filter(scale: str, column: str, target: Any) -> dict[str, list]:
    name = _tone_target(target, scale)
    if name is None:
        return {}
    lo, hi = TONE_RANGES[scale][name]
    return {column: [name] if column == "skin_tone_group" else list(range(lo, hi + 1))}


class QueryBuilder:
    """An ipywidgets app: build a composed query (reference image + descriptor text), browse the results.

    Parameters
    ----------
    index : CaseIndex
        The database to search.  An index with no case is accepted: the app
        then says so and every control is disabled.
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
    seed : int, optional
        Seed of the "random case" button.

    Attributes
    ----------
    case_picker : ipywidgets.Dropdown
        Reference case (``None`` when the reference is an uploaded image).
    preview : ipywidgets.Image
        Thumbnail of the reference.
    random_button : ipywidgets.Button
        Picks a random reference case.
    upload : ipywidgets.FileUpload
        Upload a reference image.
    criteria : dict of str -> ipywidgets.Dropdown
        The seven 7-point criteria, ``"(unknown)"`` or a Derm7pt value.
    text : ipywidgets.Textarea
        The query text searched (free text; the dropdowns write into it).
    alpha : ipywidgets.FloatSlider
        Weight of local evidence (disabled for an index without local vectors).
    k : ipywidgets.IntSlider
        Results per search.
    skin_filter : ipywidgets.SelectMultiple
        Fitzpatrick skin types kept (none selected = all).
    group_filter : ipywidgets.SelectMultiple
        Diagnosis groups kept (none selected = all).
    tone_picker : ipywidgets.Dropdown
        Skin-tone modifier: :data:`ANY_SKIN` or a range ("V-VI"); see :meth:`set_tone`.
    tone_only : ipywidgets.Checkbox
        Keep the results to the modifier's range (default off).
    tone_note : ipywidgets.HTML
        How many database cases the chosen range holds, or why the modifier is off.
    tone_scale : str or None
        ``"fitzpatrick"``, ``"monk"`` or None (no skin-tone labels: the modifier is disabled).
    search_button : ipywidgets.Button
        Searches now.
    live : ipywidgets.Checkbox
        Search (debounced) whenever the query or a control changes.
    grid : ipywidgets.GridBox
        One tile per result: thumbnail, caption and a "why?" button.
    detail : ipywidgets.Output
        Attribution overlay and mask maps of the result whose "why?" was pressed.
    map_toggle : ipywidgets.ToggleButton
        Shows the UMAP map of the index with the query and its results.
    map_view : ipywidgets.Output
        The map.
    message : ipywidgets.HTML
        Errors, warnings and notes.
    widget : ipywidgets.VBox
        The whole app (displayed by ``display(app)`` or as a cell's last value).
    search_count : int
        Searches run so far (each live update, button press or call counts once).
    """

    def __init__(self, index, retriever=None, *, k: int = 8, alpha: float | None = None, debounce: float = 0.3,
                 thumb: int = 96, exclude_reference: bool = True, explain_method: str = "gradcam",
                 map_params: Mapping[str, Any] | None = None, max_k: int = 50, seed: int | None = None):
        for attr in ("cases", "search_vectors"):
            if not hasattr(index, attr):
                raise DermretrError(f"QueryBuilder needs a CaseIndex (got {type(index).__name__}, which has no "
                                    f".{attr}); build one with CaseIndex.build(retriever, cases) or open one with "
                                    "CaseIndex.open(dir)")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DermretrError(f"k must be a positive integer, got {k!r}")
        if isinstance(max_k, bool) or not isinstance(max_k, (int, np.integer)) or max_k < 1:
            raise DermretrError(f"max_k must be a positive integer, got {max_k!r}")
        try:
            debounce = float(debounce)
        except (TypeError, ValueError):
            raise DermretrError(f"debounce must be a number of seconds, got {debounce!r}") from None
        if not debounce >= 0:
            raise DermretrError(f"debounce must be >= 0 seconds, got {debounce}")
        if isinstance(thumb, bool) or not isinstance(thumb, (int, np.integer)) or thumb < 16:
            raise DermretrError(f"thumb must be an integer of at least 16 pixels, got {thumb!r}")
        from .explain import METHODS

        if explain_method not in METHODS:
            raise DermretrError(f"unknown explain_method {explain_method!r}; methods: {', '.join(METHODS)}")

        self.index = index
        self.cases: pd.DataFrame = index.cases
        self.empty = len(self.cases) == 0
        self.retriever = retriever if retriever is not None else getattr(index, "retriever", None)
        if self.retriever is None and not self.empty:
            raise DermretrError("QueryBuilder needs a retriever to encode queries: open the index with "
                                "CaseIndex.open(dir) (or CaseIndex.load(dir, retriever)), or pass retriever=...")
        manifest = getattr(index, "manifest", {}) or {}
        dim = getattr(getattr(self.retriever, "backbone", None), "embed_dim", None)
        if dim is not None and manifest.get("dim") is not None and int(dim) != int(manifest["dim"]):
            raise DermretrError(f"the retriever makes {dim}-dimensional vectors but the index holds "
                                f"{manifest['dim']}-dimensional ones: use the model the index was built with")
        self.debounce = debounce
        self.thumb = int(thumb)
        self.exclude_reference = bool(exclude_reference)
        self.explain_method = explain_method
        self.map_params = dict(map_params or {})
        self.search_count = 0
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._quiet = 0
        self._thumbs: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._queries: OrderedDict[tuple, dict] = OrderedDict()
        self._tiles: list[_Tile] = []
        self._ids = self.cases["case_id"].astype(str).to_numpy() if "case_id" in self.cases.columns else np.array([])
        self._row_of = {cid: i for i, cid in enumerate(self._ids)}
        # the reference
        self._ref_image: Image.Image | None = None
        self._ref_key: tuple | None = None
        self._ref_case: str | None = None
        self._ref_criteria: dict[str, str] = {}
        self._base_text = ""
        # the last search
        self._results = self._no_results()
        self._last: dict[str, Any] = {}
        self._has_local = (getattr(index, "local_vectors", None) is not None
                           and bool(getattr(self.retriever, "uses_local", True)))
        # the skin-tone modifier: the scale of the cases' labels and every case's range
        labels = tone_labels(self.cases) if not self.empty else None
        self.tone_scale: str | None = labels[0] if labels else None
        self._tone_labels = labels  # (scale, column), found once: every search's filter reuses it
        self._tone_of = tone_ranges(self.cases[[labels[1]]], labels[0]) if labels else None
        self._tone_counts = _count_ranges(self._tone_of, labels[0]) if labels else None
        self._tone_base = ""  # the reference's text without its own skin tone

        self._build_widgets(int(k), alpha, int(max_k))
        if self.empty:
            for w in self._controls():
                w.disabled = True
            self._say("error", "the index holds no case: there is nothing to search. Build one with "
                               "CaseIndex.build(retriever, cases) or `dermretr index`, then open it here.")
        else:
            self._say("info", "pick a reference case (or upload an image), set descriptors, then search")

    # ------------------------------------------------------------------ widgets

    def _build_widgets(self, k: int, alpha: float | None, max_k: int) -> None:
        cases = self.cases
        wide = {"description_width": "initial"}
        labels = self._case_labels()
        self.case_picker = W.Dropdown(options=list(zip(labels, self._ids.tolist())), value=None,
                                      description="reference case", style=wide, layout=W.Layout(width="320px"))
        self.preview = W.Image(value=_png(np.full((8, 8, 3), 235, np.uint8)), format="png",
                               layout=W.Layout(width=f"{2 * self.thumb}px", height=f"{2 * self.thumb}px"))
        self.preview.add_class("dermretr-preview")
        self.random_button = W.Button(description="random case", icon="random", layout=W.Layout(width="130px"))
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload image",
                                   layout=W.Layout(width="180px"))
        self.criteria = {}
        for c, values in CRITERIA.items():
            dd = W.Dropdown(options=[UNKNOWN, *values], value=UNKNOWN, description=c.replace("_", " "),
                            style={"description_width": "150px"}, layout=W.Layout(width="340px"))
            dd.add_class("dermretr-criterion")
            dd.add_class(f"dermretr-criterion-{c}")
            self.criteria[c] = dd
        self.text = W.Textarea(value="", placeholder="descriptor or modification text (empty: cases like this image)",
                               continuous_update=False, layout=W.Layout(width="98%", height="70px"))
        self.text.add_class("dermretr-text")
        if alpha is None:
            try:
                a0 = float(self.index.alpha)
            except (AttributeError, KeyError, TypeError, ValueError):
                a0 = 0.0
        else:
            try:
                a0 = float(alpha)
            except (TypeError, ValueError):
                raise DermretrError(f"alpha (the weight of local evidence) must be a number, got {alpha!r}") from None
        if not 0.0 <= a0 <= 1.0:
            raise DermretrError(f"alpha (the weight of local evidence) must be in [0, 1], got {alpha}")
        self.alpha = W.FloatSlider(value=a0, min=0.0, max=1.0, step=0.05, readout_format=".2f",
                                   description="alpha (local weight)", style=wide, continuous_update=False,
                                   disabled=not self._has_local, layout=W.Layout(width="340px"))
        top = max(1, min(max_k, len(cases)))
        self.k = W.IntSlider(value=min(k, top), min=1, max=top, description="k", continuous_update=False,
                             layout=W.Layout(width="340px"))
        self.skin_filter = W.SelectMultiple(options=list(SKIN_TYPES), value=(), rows=6, description="skin type",
                                            style=wide, layout=W.Layout(width="160px"))
        groups = []
        if "diagnosis_group" in cases.columns:
            groups = sorted({str(g) for g in cases["diagnosis_group"].dropna().unique()})
        self.group_filter = W.SelectMultiple(options=groups, value=(), rows=min(6, max(2, len(groups))),
                                             description="diagnosis group", style=wide,
                                             layout=W.Layout(width="200px"))
        scale = self.tone_scale or "fitzpatrick"
        tones = [("any skin", ANY_SKIN), *((f"{word} ({name})", name)
                                           for word, name in zip(TONE_WORDS, TONE_RANGES[scale]))]
        self.tone_picker = W.Dropdown(options=tones, value=ANY_SKIN, description="show it on", style=wide,
                                      disabled=self.tone_scale is None, layout=W.Layout(width="240px"))
        self.tone_picker.add_class("dermretr-tone")
        self.tone_only = W.Checkbox(value=False, description="only cases in this range", indent=False,
                                    disabled=self.tone_scale is None, layout=W.Layout(width="170px"))
        self.tone_note = W.HTML(value="")
        self.tone_note.add_class("dermretr-tone-note")
        self.search_button = W.Button(description="Search", button_style="primary", icon="search")
        self.search_button.add_class("dermretr-search")
        self.live = W.Checkbox(value=True, description="live update", indent=False, layout=W.Layout(width="120px"))
        self.map_toggle = W.ToggleButton(value=False, description="show map", icon="map",
                                         tooltip="the query and its results on the UMAP map of the index")
        self.message = W.HTML(value="")
        self.message.add_class("dermretr-message")
        self.grid = W.GridBox(children=(), layout=W.Layout(
            grid_template_columns=f"repeat(auto-fill, minmax({self.thumb + 60}px, 1fr))", grid_gap="8px",
            overflow="visible"))
        self.grid.add_class("dermretr-grid")
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

        self.case_picker.observe(self._on_case_picked, names="value")
        self.random_button.on_click(lambda _: self._guard(self.random_case))
        self.upload.observe(self._on_upload, names="value")
        for dd in self.criteria.values():
            dd.observe(self._on_criterion, names="value")
        for w in (self.text, self.alpha, self.k, self.skin_filter, self.group_filter, self.tone_only):
            w.observe(self._on_control, names="value")
        self.tone_picker.observe(self._on_tone, names="value")
        self._show_tone_note()
        self.live.observe(self._on_live, names="value")
        self.search_button.on_click(lambda _: self._guard(self.search))
        self.map_toggle.observe(self._on_map_toggle, names="value")

    def _controls(self) -> list[W.Widget]:
        return [self.case_picker, self.random_button, self.upload, *self.criteria.values(), self.text, self.alpha,
                self.k, self.tone_picker, self.tone_only, self.skin_filter, self.group_filter, self.search_button,
                self.live, self.map_toggle]

    def _case_labels(self) -> list[str]:
        cases = self.cases
        if len(cases) == 0:
            return []
        parts = [pd.Series(self._ids)]
        if "diagnosis" in cases.columns:
            parts.append(cases["diagnosis"].astype("string").fillna("?").reset_index(drop=True))
        if "fitzpatrick" in cases.columns:
            parts.append(pd.Series(["FST " + _skin(v) for v in cases["fitzpatrick"].tolist()]))
        labels = parts[0].astype(str)
        for p in parts[1:]:
            labels = labels + " · " + p.astype(str)
        return labels.tolist()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        ref = self._ref_case or ("upload" if self._ref_image is not None else None)
        return (f"QueryBuilder(cases={len(self.cases)}, reference={ref!r}, k={self.k.value}, "
                f"alpha={self.alpha.value:.2f}, results={len(self._results)})")

    def close(self) -> None:
        """Cancel a pending live update and close the app's widgets (and only those)."""
        self._cancel_timer()
        seen: set[int] = set()

        def close(w: W.Widget) -> None:
            if id(w) in seen:
                return
            seen.add(id(w))
            for child in getattr(w, "children", ()):
                close(child)
            w.close()

        for tile in self._tiles:
            close(tile.box)
        close(self.widget)

    # ------------------------------------------------------------------ messages and guards

    def _say(self, level: str, *lines: str) -> None:
        lines = [line for line in lines if line]
        self.last_message = (level, " ".join(lines))
        body = "<br>".join(html.escape(line) for line in lines)
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

    @contextlib.contextmanager
    def _batch(self, schedule: bool = False) -> Iterator[None]:
        """Change several widgets without each change searching; optionally search once at the end."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1
        if schedule:
            self._changed()

    # ------------------------------------------------------------------ live update (debounced)

    def _changed(self) -> None:
        if self._quiet or self.empty or not self.live.value:
            return
        if self.debounce <= 0:
            self._guard(self._search_now)
            return
        with self._lock:
            self._cancel_timer()
            timer = threading.Timer(self.debounce, self._fire)
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # superseded by a later change
            self._timer = None
            self._guard(self._search_now)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until a pending live update has run; True when nothing is pending any more."""
        deadline = time.monotonic() + timeout
        while True:
            timer = self._timer
            if timer is None:
                with self._lock:  # a running search holds the lock
                    return self._timer is None
            timer.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return self._timer is None

    # ------------------------------------------------------------------ observers

    def _on_case_picked(self, change: dict) -> None:
        if self._quiet or change["new"] is None:
            return
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

    def _on_criterion(self, change: dict) -> None:
        if self._quiet:
            return
        self._guard(self._compose_text)

    def _on_control(self, change: dict) -> None:
        self._changed()

    def _on_tone(self, change: dict) -> None:
        self._show_tone_note()
        if self._quiet:
            return
        with self._batch(schedule=True):  # the text and (with tone_only) the filters change: one search
            self._guard(self._compose_text)

    def _on_live(self, change: dict) -> None:
        if change["new"]:
            self._changed()
        else:
            self._cancel_timer()

    def _on_map_toggle(self, change: dict) -> None:
        if change["new"]:
            self.map_view.layout.display = None
            self._guard(self.show_map)
        else:
            self.map_view.outputs = ()
            self.map_view.layout.display = "none"

    # ------------------------------------------------------------------ the reference

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
        cid = str(case_id)
        if cid not in self._row_of:
            close = difflib.get_close_matches(cid, self._ids[:5000].tolist(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise DermretrError(f"case id {cid!r} is not in this index ({len(self._ids)} cases){hint}")
        row = self.cases.iloc[self._row_of[cid]]
        try:
            image = load_rgb(row["image_path"])
        except ImageReadError as exc:
            with self._batch():
                self.case_picker.value = self._ref_case
            self._say("error", f"case {cid}: {exc}; the reference is unchanged")
            return
        try:
            known = criteria_of(row)
        except VocabularyError:
            known = {}
        with self._batch(schedule=True):
            self._ref_image = image
            self._ref_key = ("case", cid)
            self._ref_case = cid
            self._ref_criteria = known
            self.case_picker.value = cid
            self.preview.value = _png(self._thumbnail(image, 2 * self.thumb))
            for c, dd in self.criteria.items():
                dd.value = known.get(c, UNKNOWN)
            self._base_text = self._reference_text(row, known)
            self._tone_base = tone_findings(row)
            self._compose_text()
            self._say("info", f"reference: case {cid}" + (f" ({row['diagnosis']})" if "diagnosis" in row else ""))

    @staticmethod
    def _reference_text(row: pd.Series, known: Mapping[str, str]) -> str:
        """The case's own findings text (empty when nothing about it is known); never its caption."""
        if known:
            return case_text(known, seed=None)
        raw = row.get("findings") if hasattr(row, "get") else None
        if isinstance(raw, str) and raw.strip():
            return case_text(row, seed=None, view="findings")
        return ""

    def random_case(self, seed: int | None = None) -> str | None:
        """Pick a random reference case (reproducible with ``seed``); returns its id."""
        if self.empty:
            self._say("error", "the index holds no case: there is no case to pick")
            return None
        rng = self._rng if seed is None else np.random.default_rng(seed)
        cid = str(self._ids[int(rng.integers(len(self._ids)))])
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
            image = decode_image(bytes(data), name)
        except ImageReadError as exc:
            self._say("error", f"{exc}; upload a JPEG or PNG image. The reference is unchanged")
            return False
        with self._batch(schedule=True):
            self._ref_image = image
            self._ref_key = ("upload", hashlib.sha1(bytes(data)).hexdigest())
            self._ref_case = None
            self._ref_criteria = {}
            self.case_picker.value = None
            self.preview.value = _png(self._thumbnail(image, 2 * self.thumb))
            for dd in self.criteria.values():
                dd.value = UNKNOWN
            self._base_text = ""
            self._tone_base = ""
            self._compose_text()
            self._say("info", f"reference: uploaded image {name} ({image.width}x{image.height} px); its "
                              "criteria are unknown")
        return True

    @property
    def reference(self) -> Image.Image | None:
        """The reference image (RGB), or None before one is chosen."""
        return self._ref_image

    @property
    def reference_case(self) -> str | None:
        """The reference's case id (None for an uploaded image)."""
        return self._ref_case

    # ------------------------------------------------------------------ descriptors

    def set_criterion(self, name: str, value: str) -> None:
        """Set one criterion dropdown (a Derm7pt value or ``"(unknown)"``), as a user would.

        Raises :class:`~dermretr._errors.VocabularyError` for an unknown criterion or value.
        """
        if name not in self.criteria:
            raise VocabularyError(f"unknown criterion {name!r}; the 7-point criteria are: {', '.join(CRITERIA)}")
        self.criteria[name].value = value if value == UNKNOWN else normalize_value(name, value)

    def wanted(self) -> dict[str, str]:
        """Criteria whose dropdown differs from the reference: criterion -> wanted value."""
        out = {}
        for c, dd in self.criteria.items():
            if dd.value != UNKNOWN and dd.value != self._ref_criteria.get(c, UNKNOWN):
                out[c] = dd.value
        return out

    def _compose_text(self) -> None:
        """Write the query text: the reference's (or the modification's), after the skin-tone phrase if one is set."""
        after, tone = self.wanted(), self.tone
        if not after:
            body = self._base_text if tone is None else self._tone_base
        else:
            before = {}
            for c, new in after.items():
                old = self._ref_criteria.get(c)
                if old is None:  # unknown in the reference: "with X" for a value, "without X" for absent
                    old = CRITERIA[c][1] if new == ABSENT else ABSENT
                before[c] = old
            body = modification_text(before, after, seed=None)
        self.text.value = body if tone is None else tone_query_text(body, tone, self.tone_scale)

    # ------------------------------------------------------------------ skin-tone modifier

    @property
    def tone(self) -> str | None:
        """The skin-tone range of the modifier ("V-VI"), or None for any skin."""
        value = self.tone_picker.value
        return None if value == ANY_SKIN else value

    def set_tone(self, target: Any) -> None:
        """Show the reference on another skin tone, as the "show it on" dropdown does.

        The query text becomes the tone phrase and the reference's findings
        without its own skin type ("on Fitzpatrick type V-VI skin: irregular
        streaks"), :attr:`tone_note` says how many database cases that range
        holds, and the results search again (debounced, as the other controls).

        Parameters
        ----------
        target : str, int or None
            A range of :attr:`tone_scale` ("V-VI"; Monk: "8-10"), a value in
            it (5), a plain word ("lighter", "medium", "darker"), or None /
            ``"any"`` for no skin tone.

        Raises
        ------
        DermretrError
            When the index's cases have no skin-tone labels (the modifier is off).
        VocabularyError
            A value off the scale.

        Examples
        --------
        See the module's example: ``app.set_tone("darker")``, then
        ``app.text.value`` starts with "on Fitzpatrick type V-VI skin: ".
        """
        if self.tone_scale is None:
            raise DermretrError(_NO_TONE_LABELS)
        name = _tone_target(target, self.tone_scale)
        self.tone_picker.value = ANY_SKIN if name is None else name

    def _show_tone_note(self) -> None:
        if self.tone_scale is None:
            note = ("the index holds no case" if self.empty else _NO_TONE_LABELS) + ": the modifier is off"
        else:
            note = tone_exposure_text(self._tone_counts, self.tone)
        self.tone_note.value = f"<div style='font-size:12px;color:#555'>{html.escape(note)}</div>"

    # ------------------------------------------------------------------ searching

    def _no_results(self) -> pd.DataFrame:
        columns = ["rank", "case_id", "score", "s_global", "s_local", "relevant"]
        columns += [c for c in self.cases.columns if c not in columns]
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        out.attrs["descriptors"] = {}
        return out

    @property
    def results(self) -> pd.DataFrame:
        """The last search's results: ``rank, case_id, score, s_global, s_local, relevant`` + case columns.

        ``relevant`` is True/False when the reference is an indexed case (same
        diagnosis group and, for changed criteria, the wanted values and, with
        a skin-tone modifier, a skin tone in its range) and NA
        for an uploaded image; ``attrs["descriptors"]`` holds the criteria
        recognised in the text and ``attrs["text"]`` the text searched.
        """
        out = self._results.copy()
        out.attrs = dict(self._results.attrs)
        return out

    def filters(self) -> dict[str, list]:
        """The case filters the controls set, as :meth:`CaseIndex.search` takes them.

        With "only cases in this range" ticked, the skin-tone modifier's range
        (:func:`tone_filter`) is kept too, intersected with the skin-type filter.
        """
        out: dict[str, list] = {}
        if self.skin_filter.value:
            out["fitzpatrick"] = [int(v) for v in self.skin_filter.value]
        if self.group_filter.value:
            out["diagnosis_group"] = [str(v) for v in self.group_filter.value]
        if self.tone_only.value and self.tone is not None:
            for column, values in _range_filter(*self._tone_labels, self.tone).items():
                out[column] = [v for v in out[column] if v in values] if column in out else values
        return out

    def _filter_mask(self, filters: Mapping[str, list]) -> np.ndarray:
        mask = np.ones(len(self.cases), dtype=bool)
        for column, values in filters.items():
            if column not in self.cases.columns:
                return np.zeros(len(self.cases), dtype=bool)
            col = self.cases[column]
            if pd.api.types.is_numeric_dtype(col.dtype):
                mask &= col.isin(values).fillna(False).to_numpy(dtype=bool)
            else:
                mask &= col.astype("string").isin([str(v) for v in values]).fillna(False).to_numpy(dtype=bool)
        return mask

    def _describe_filters(self, filters: Mapping[str, list]) -> str:
        names = {"fitzpatrick": "skin type", "skin_tone_group": "skin type", "monk": "Monk tone",
                 "diagnosis_group": "diagnosis group"}
        parts = []
        for column, values in filters.items():
            shown = [_skin(v) if column == "fitzpatrick" else str(v) for v in values]
            parts.append(f"{names.get(column, column)} {', '.join(shown) or 'none'}")
        return " and ".join(parts)

    def _encode(self, text: str) -> dict:
        key = (self._ref_key, text)
        hit = self._queries.get(key)
        if hit is not None:
            self._queries.move_to_end(key)
            return hit
        q = self.retriever.encode_queries([self._ref_image], [text])
        q = {"global": q["global"], "local": q.get("local")}
        self._queries[key] = q
        while len(self._queries) > 32:
            self._queries.popitem(last=False)
        return q

    def search(self) -> pd.DataFrame:
        """Search now with the current reference, text and controls; update the grid (and the map).

        Problems (no reference yet, filters matching nothing, an empty index,
        a text the model cannot encode...) are reported in :attr:`message`,
        never raised.

        Returns
        -------
        DataFrame
            :attr:`results`.
        """
        self._cancel_timer()
        self._guard(self._search_now)
        return self.results

    def _search_now(self) -> None:
        with self._lock:
            self.search_count += 1
            if self.empty:
                self._say("error", "the index holds no case: there is nothing to search")
                self._show(self._no_results())
                return
            if self._ref_image is None:
                self._say("warning", "pick a reference case (or upload an image) first")
                return
            start = time.perf_counter()
            text = str(self.text.value or "").strip()
            notes = []
            descriptors: dict | None
            try:
                descriptors = {c: v for c, v in parse_text(text, default=None).items() if v is not None}
            except VocabularyError as exc:
                descriptors = None
                notes.append(f"the text mentions a criterion twice with different values ({exc}); it is searched "
                             "as free text")
            if text and descriptors == {}:
                notes.append("no 7-point descriptor recognised in the text: it is searched as free text")
            filters = self.filters()
            allowed = self._filter_mask(filters)
            exclude = self._ref_case if self.exclude_reference else None
            if exclude is not None:
                allowed[self._row_of[exclude]] = False
            k = int(self.k.value)
            if filters and not allowed.any():
                self._last = {"image": self._ref_image, "text": text, "query": None}
                self._show(self._no_results(), text, descriptors)
                others = " other than the reference" if exclude is not None and self._filter_mask(filters).any() else ""
                self._say("warning", f"no case{others} matches the filters ({self._describe_filters(filters)}): "
                                     "nothing to show; widen the filters", *notes)
                return
            q = self._encode(text)
            k_ask = min(k + (exclude is not None), len(self.cases))
            alpha = float(self.alpha.value) if self._has_local else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fewer matches than k is said below, in the app's words
                res = self.index.search_vectors(q, k=k_ask, alpha=alpha, filters=filters or None)
            res = res.drop(columns="query", errors="ignore")
            if exclude is not None:
                res = res[res["case_id"].astype(str) != exclude]
            res = res.iloc[:k].reset_index(drop=True)
            res["rank"] = np.arange(1, len(res) + 1)
            rel = self._relevance(res)
            res = res.drop(columns="relevant", errors="ignore")
            res.insert(5, "relevant", pd.array([pd.NA] * len(res) if rel is None else rel, dtype="boolean"))
            n_ok = int(allowed.sum())
            if n_ok < k:
                where = f" the filters ({self._describe_filters(filters)})" if filters else " the index"
                notes.insert(0, f"only {n_ok} case{'s' if n_ok != 1 else ''} in{where}"
                                f"{' besides the reference' if exclude is not None else ''}: showing {len(res)}, "
                                f"not k={k}")
            self._last = {"image": self._ref_image, "text": text, "query": q}
            self._show(res, text, descriptors)
            took = time.perf_counter() - start
            head = (f"{len(res)} result{'s' if len(res) != 1 else ''} for "
                    f"{('“' + text + '”') if text else 'the image alone'} in {took:.2f} s")
            if rel is not None:
                head += f"; {int(np.sum(rel))} relevant (green frame)"
            self._say("warning" if notes else "info", head, *notes)

    def _relevance(self, res: pd.DataFrame) -> np.ndarray | None:
        if self._ref_case is None or "diagnosis_group" not in res.columns:
            return None
        group = self.cases.iloc[self._row_of[self._ref_case]]["diagnosis_group"]
        if group is None or pd.isna(group):
            return None
        rel = (res["diagnosis_group"].astype("string") == str(group)).fillna(False).to_numpy(dtype=bool)
        for c, v in self.wanted().items():
            if c in res.columns:
                rel &= (res[c].astype("string") == v).fillna(False).to_numpy(dtype=bool)
        if self.tone is not None:  # the tone protocol: a skin tone in the wanted range too
            rows = [self._row_of[cid] for cid in res["case_id"].astype(str)]
            rel &= np.array([self._tone_of[i] == self.tone for i in rows], dtype=bool)
        return rel

    # ------------------------------------------------------------------ the grid

    def _thumbnail(self, image: Image.Image, size: int) -> Image.Image:
        img = image.copy()
        img.thumbnail((size, size))
        return img

    def _thumb_png(self, path: str) -> bytes:
        from .viz import load_thumbnail

        key = (str(path), self.thumb)
        hit = self._thumbs.get(key)
        if hit is None:
            hit = _png(load_thumbnail(str(path), self.thumb))  # unreadable files give a crossed tile
            self._thumbs[key] = hit
            while len(self._thumbs) > 4096:
                self._thumbs.popitem(last=False)
        else:
            self._thumbs.move_to_end(key)
        return hit

    def _tile(self, position: int) -> _Tile:
        while len(self._tiles) <= position:
            i = len(self._tiles)
            image = W.Image(format="png", layout=W.Layout(width=f"{self.thumb}px", height=f"{self.thumb}px"))
            image.add_class("dermretr-result")
            caption = W.HTML()
            caption.add_class("dermretr-caption")
            button = W.Button(description="why?", tooltip="attribution overlay and mask maps of this result",
                              layout=W.Layout(width=f"{self.thumb}px"))
            button.add_class("dermretr-why")
            button.on_click(lambda _, rank=i + 1: self._guard(lambda: self.explain(rank)))
            box = W.VBox([image, caption, button], layout=W.Layout(padding="4px", border=_NO_TRUTH_BORDER,
                                                                  align_items="center"))
            box.add_class("dermretr-tile")
            self._tiles.append(_Tile(box, image, caption, button))
        return self._tiles[position]

    def _caption(self, row: pd.Series) -> str:
        e = html.escape
        mark = ""
        if "relevant" in row and not pd.isna(row["relevant"]):
            mark = " <span title='relevant'>&#10003;</span>" if bool(row["relevant"]) else ""
        lines = [f"<b>#{int(row['rank'])} {e(str(row['case_id']))}</b>{mark}"]
        if "diagnosis" in row:
            group = f" ({e(str(row['diagnosis_group']))})" if "diagnosis_group" in row else ""
            lines.append(f"{e(str(row['diagnosis']))}{group}")
        if "fitzpatrick" in row:
            lines.append(f"skin type {_skin(row['fitzpatrick'])}")
        lines.append(f"s_global {_fmt(row['s_global'])} &middot; s_local {_fmt(row['s_local'])}")
        lines.append(f"<b>score {_fmt(row['score'])}</b>")
        return f"<div style='font-size:11px;line-height:1.3;text-align:center'>{'<br>'.join(lines)}</div>"

    def _show(self, res: pd.DataFrame, text: str = "", descriptors: dict | None = None) -> None:
        res.attrs["descriptors"] = {} if descriptors is None else descriptors
        res.attrs["text"] = text
        tiles = []
        for i in range(len(res)):
            row = res.iloc[i]
            tile = self._tile(i)
            tile.image.value = self._thumb_png(row["image_path"])
            tile.caption.value = self._caption(row)
            rel = row.get("relevant", pd.NA)
            if pd.isna(rel):
                tile.box.layout.border = _NO_TRUTH_BORDER
                tile.box.remove_class("dermretr-relevant")
            elif bool(rel):
                tile.box.layout.border = _RELEVANT_BORDER
                tile.box.add_class("dermretr-relevant")
            else:
                tile.box.layout.border = _OTHER_BORDER
                tile.box.remove_class("dermretr-relevant")
            tiles.append(tile.box)
        self._results = res
        self.grid.children = tuple(tiles)
        self.detail.outputs = ()
        if self.map_toggle.value:
            self._guard(self.show_map)

    # ------------------------------------------------------------------ explanations and the map

    def explain(self, rank: int) -> list[Figure]:
        """Show why the result at ``rank`` (1-based) matched: attribution overlay and mask maps in :attr:`detail`.

        Returns
        -------
        list of matplotlib.figure.Figure
            The attribution overlay, then (for retrievers with local vectors) the mask maps.
        """
        from .explain import explain_result, mask_maps

        res = self._results
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= len(res):
            raise DermretrError(f"rank must be between 1 and {len(res)} (the results shown), got {rank!r}"
                                if len(res) else "no results to explain yet: search first")
        row = res.iloc[int(rank) - 1]
        image, text = self._last["image"], self._last["text"]
        cid = str(row["case_id"])
        self.detail.outputs = (_html_output(f"<i>explaining #{int(rank)} {html.escape(cid)}...</i>"),)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            att = explain_result(self.index, self.retriever, image, text, cid, method=self.explain_method)
            figs = [att.overlay(title=f"why #{int(rank)} {cid} matched ({self.explain_method}, "
                                      f"s={float(row['score']):.3f})")]
            if getattr(self.retriever, "uses_local", False):
                figs.append(mask_maps(self.retriever, image, text, row["image_path"]))
        head = (f"<b>#{int(rank)} {html.escape(cid)}</b>: attribution of the score to the result image "
                f"({self.explain_method}); below, the regions each spatial mask pooled (query and result)")
        self.detail.outputs = (_html_output(head), *(_figure_output(f) for f in figs))
        return figs

    def show_map(self) -> Figure | None:
        """Draw the index's UMAP map with the last query (star) and its results in :attr:`map_view`.

        The map is fitted once per index (cached); on a large index the first
        fit takes a while.  Returns the Figure (None for an empty index).
        """
        from .viz import fit_map, umap_map

        if self.empty:
            self._say("error", "the index holds no case: there is no map to draw")
            return None
        if len(self.cases) < 4:
            raise DermretrError(f"a map needs at least 4 cases; this index has {len(self.cases)}")
        params = dict(self.map_params)
        seed = int(params.pop("seed", 0))
        color_by = str(params.pop("color_by", "diagnosis_group"))
        reducer = fit_map(self.index, seed=seed, **params)
        q = self._last.get("query")
        kwargs = {}
        if q is not None:
            kwargs = {"queries": q["global"], "results": [self._results["case_id"].astype(str).tolist()]}
        if color_by not in self.cases.columns:
            color_by = "diagnosis" if "diagnosis" in self.cases.columns else str(self.cases.columns[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = umap_map(self.index, color_by=color_by, reducer=reducer, seed=seed,
                           title="query (star) and its results on the map of the index" if q is not None else None,
                           **kwargs)
        self.map_view.outputs = (_figure_output(fig, dpi=80),)
        return fig

