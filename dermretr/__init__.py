"""dermretr: composed vision-language retrieval of skin-lesion cases.

A reference lesion image plus descriptor text ("atypical pigment network,
blue-whitish veil") retrieves the most relevant biopsy-confirmed cases.

The main names are here, loaded on first use (``import dermretr`` stays quick,
for the command line): :func:`load` (a case table from SOURCE:PATH),
:func:`generate` (a DermSynth dataset), :func:`create` (a backbone),
:class:`Retriever`, :func:`fit` and :class:`TrainConfig`, :class:`CaseIndex`,
:class:`QuerySession` (a query in code) and :class:`QueryBuilder` (the same
in a notebook app), and :class:`DermretrError` (every error caused by input).

Subpackages
-----------
data
    The case table schema, the 7-point vocabulary, DermSynth synthetic
    dermoscopy, dataset loaders and leak-free splits.
models, train, index, evaluate
    Retrievers, their training, search indexes and retrieval metrics.
explain, fairness, viz
    Attribution maps, skin-tone slicing, figures.
session, widgets
    Queries in code and in a notebook app.

See docs/architecture.md for the layers and what each package holds.

Examples
--------
>>> import dermretr
>>> dermretr.TrainConfig(data="synthetic:./ds", out="run").epochs
15
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import DermretrError
from ._lazy import lazy_exports

if TYPE_CHECKING:
    from .data import load
    from .data.synth import generate
    from .index import CaseIndex
    from .models import Retriever, create
    from .session import QuerySession
    from .train import TrainConfig, fit
    from .widgets import QueryBuilder

__version__ = "0.1.0"
__all__ = ["load", "generate", "create", "Retriever", "fit", "TrainConfig", "CaseIndex", "QuerySession",
           "QueryBuilder", "DermretrError", "__version__"]

#: Where each name of the face lives (imported on first use: most of them need torch).
_LAZY = {"load": ".data", "generate": ".data.synth", "create": ".models", "Retriever": ".models", "fit": ".train",
         "TrainConfig": ".train", "CaseIndex": ".index", "QuerySession": ".session", "QueryBuilder": ".widgets"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)
