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
tests use it.  The app is a view: the query and its results live in
``app.session``, a :class:`~dermretr.session.QuerySession` (no widgets) that a
notebook can also drive on its own.  The app lives in private modules
(``_builder``: the app; ``_panel``: its widgets and layout; ``_grid``: the
result tiles; ``_live``: the debounced live update), imported from here.

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

from ..data.vocab import tone_findings
from ..session import (
    ANY_SKIN,
    SKIN_TYPES,
    UNKNOWN,
    QuerySession,
    decode_image,
    tone_counts,
    tone_exposure_text,
    tone_filter,
    tone_labels,
)
from ._builder import QueryBuilder
from ._panel import log as log  # the "dermretr.widgets" logger (errors in callbacks go there), as before

__all__ = ["QueryBuilder", "QuerySession", "decode_image", "UNKNOWN", "SKIN_TYPES", "ANY_SKIN", "tone_labels",
           "tone_counts", "tone_exposure_text", "tone_filter", "tone_findings"]
