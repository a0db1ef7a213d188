"""Figures: every function returns a matplotlib Figure (never only shows it).

* :func:`contact_sheet` - example cases grouped by a column;
* :func:`umap_map` - the whole database at a glance (UMAP of the embeddings),
  coloured by diagnosis, diagnosis group, skin type or split, with queries and
  their results placed on the same map by a fitted, cached :class:`MapReducer`
  (:func:`fit_map`);
* :func:`gallery` - a query (image and text) and its top-k results with their
  scores, relevant hits framed, optionally a row of attribution overlays;
* :func:`overlay` and :func:`text_bars` - one attribution heatmap over its image,
  per-word text attributions (used by :mod:`dermretr.explain`);
* :func:`load_thumbnail` and :func:`format_value` - the thumbnails and caption
  numbers every figure (and the notebook widgets) shows.

The functions live in private modules (``_sheets``, ``_overlays``, ``_umap``,
``_gallery``, ``_common``) and are all imported from here.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> from dermretr.data.synth import generate
>>> from dermretr.viz import contact_sheet
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=10, image_size=64,
...                 workers=1, progress=False)
>>> fig = contact_sheet(load("synthetic", root), by="diagnosis_group", per_group=2)
>>> len(fig.axes) > 0
True
"""

from __future__ import annotations

from ._common import format_value, load_thumbnail
from ._gallery import gallery
from ._overlays import overlay, text_bars
from ._sheets import contact_sheet
from ._umap import COLOR_BY, MapReducer, clear_map_cache, fit_map, umap_map

__all__ = ["contact_sheet", "load_thumbnail", "overlay", "text_bars", "MapReducer", "fit_map", "clear_map_cache",
           "umap_map", "gallery", "COLOR_BY", "format_value"]
