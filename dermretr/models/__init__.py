"""Retrieval models: open_clip backbones, the composers, the losses and the :class:`Retriever` of every kind.

The names below load on first use (they need torch): ``from dermretr.models import Retriever`` imports
:mod:`dermretr.models.retriever` then.

* :func:`create` builds a :class:`~dermretr.models.backbones.Backbone` (open_clip, hf-hub or a local folder).
* :class:`Retriever` composes a reference image with text; :data:`KINDS` are its kinds (the composed model and
  the baselines).
* :class:`Embeddings` is what its encoders return; :func:`convex_score` scores queries against targets.
* :mod:`dermretr.models.hub` shares a retriever the Hugging Face way: :meth:`Retriever.save_pretrained`,
  :meth:`Retriever.from_pretrained` (a folder, ``hf-hub:ORG/NAME`` or ``dermretr/NAME``) and
  :meth:`Retriever.push_to_hub`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .backbones import create
    from .embeddings import Embeddings, convex_score
    from .retriever import KINDS, Retriever

__all__ = ["create", "Retriever", "KINDS", "convex_score", "Embeddings"]

_LAZY = {"create": ".backbones", "Retriever": ".retriever", "KINDS": ".retriever", "convex_score": ".embeddings",
         "Embeddings": ".embeddings"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)
