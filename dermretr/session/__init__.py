"""A composed query without a user interface: :class:`QuerySession` and the skin-tone modifier's helpers.

``QuerySession(index)`` holds what the query builder
(:class:`dermretr.widgets.QueryBuilder`) shows - a reference case or image,
the seven 7-point criteria, the query text they compose, alpha, k, the
skin-type, diagnosis-group and skin-tone filters - and gives the results
(relevant hits marked), their explanations and the UMAP map.  A notebook or a
script drives it directly::

    session = QuerySession(index)
    session.set_reference("ds000002")
    session.set_criterion("blue_whitish_veil", "present")
    session.set_tone("darker")
    session.results()

The builder is a view on one session (``builder.session``).  The helpers
:func:`tone_labels`, :func:`tone_counts`, :func:`tone_exposure_text`,
:func:`tone_filter`, :func:`decode_image`, :func:`png_bytes`, :func:`thumbnail` and
:func:`skin_label` are UI-free too.  They live in
private modules (``_session``, ``_query``, ``_tone``, ``_images``,
``_figures``) and are all imported from here.
"""

from __future__ import annotations

from ._images import decode_image, png_bytes, thumbnail
from ._query import SKIN_TYPES, UNKNOWN, SearchReport, as_index, check_index, skin_label
from ._session import QuerySession
from ._tone import ANY_SKIN, tone_counts, tone_exposure_text, tone_filter, tone_labels

__all__ = ["QuerySession", "SearchReport", "as_index", "check_index", "decode_image", "png_bytes", "thumbnail",
           "skin_label", "UNKNOWN", "SKIN_TYPES", "ANY_SKIN", "tone_labels", "tone_counts", "tone_exposure_text",
           "tone_filter"]
