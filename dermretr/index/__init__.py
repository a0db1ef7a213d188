"""Case search at scale: a FAISS index of the database plus exact re-ranking.

:class:`CaseIndex` holds a case table and, for every case, the target vectors
of :meth:`~dermretr.models.retriever.Retriever.encode_targets`: the
L2-normalised global vector (``[n, D]`` float32) and, for ``kind="full"``
retrievers, the M local vectors (``[n, M, D]``, stored as float16).

Search is two-stage:

1. FAISS returns the ``N = max(rerank, k)`` best cases by inner product of the
   composed query's global vector with the stored global vectors
   (``"flat"``: exact ``IndexFlatIP``; ``"hnsw"``: ``IndexHNSWFlat``;
   ``"ivf"``: ``IndexIVFFlat``; ``"ivfpq"``: ``IndexIVFPQ``, compressed).
2. Those N candidates are re-scored exactly with the retriever's convex score
   ``s = a * s_local + (1 - a) * s_global`` (:func:`~dermretr.models.retriever.convex_score`)
   and the best k are returned.

When N covers the database the result equals brute-force scoring of every
case; shrinking N trades a little recall for speed (``benchmarks/search_scale.py``
measures how much).  Filters on case-table columns
(``{"fitzpatrick": [5, 6], "diagnosis_group": ["MEL"]}``) restrict both stages
to the matching cases, so k results come back whenever at least k cases match
(:func:`filter_mask` is that rule, for any case table); ``exclude=`` leaves given
case ids out of the results (e.g. each reference case out of its own search), and
:func:`same_image_cases` finds the cases whose image is a query image itself (the same file or
the same bytes), looking only at the hits it is given.

On disk an index is a folder: ``manifest.json`` (format version, the model's
config hash, weights and checkpoint sha256, dimensions, alpha, count, creation
time), ``index.faiss``, ``global.npy`` (float32), ``local.npy`` (float16; both
memory-mapped on load) and ``cases.csv``.  :meth:`CaseIndex.save` writes a new
folder beside the target and swaps it in, so an interrupted save leaves the
previous index intact.  The command line: ``dermretr index --run RUN_DIR --data
SPEC --out INDEX_DIR`` and ``dermretr search --index INDEX_DIR --image PATH
--text "..."``; in Python, :meth:`CaseIndex.search` takes an image and a text.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> g = rng.normal(size=(50, 16)).astype(np.float32)
>>> g /= np.linalg.norm(g, axis=1, keepdims=True)
>>> cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(50)], "patient_id": "p",
...     "image_path": "x.jpg", "diagnosis": "nevus", "diagnosis_group": ["MEL", "NEV"] * 25,
...     "fitzpatrick": [1, 2, 3, 4, 5] * 10, "split": "train", "source": "demo"})
>>> index = CaseIndex.from_embeddings({"global": g, "local": None}, cases, kind="hnsw")
>>> index
CaseIndex(kind='hnsw', count=50, dim=16, n_masks=0, alpha=0.0, rerank=100, model=None)
>>> hits = index.search_vectors({"global": g[:1]}, k=3, filters={"diagnosis_group": ["MEL"]})
>>> hits["case_id"].iloc[0], len(hits), set(hits["diagnosis_group"])
('c0', 3, {'MEL'})
>>> index.search_vectors({"global": g[:1]}, k=3, exclude=["c0"])["case_id"].iloc[0] != "c0"
True

Archives too large for one process are encoded with Ray Data (the optional ``scale`` extra):
:func:`encode_archive` (``dermretr index --engine ray``) encodes the cases on a pool of Ray actors in
shards kept beside the index folder until it is saved, so that a rerun after a crash encodes only
the shards still missing, and writes the same folder as :meth:`CaseIndex.save`.  Ray is imported
only when such a run starts.

The package's modules: ``_case_index`` (the class), ``_faiss`` (index kinds, options, FAISS
files), ``_filters`` (:func:`filter_mask`), ``_search`` (the two stages and exclusions),
``_same_image`` (:func:`same_image_cases`),
``_store`` and ``_manifest`` (the folder on disk), ``_model`` (model identity), ``_vectors``
(build inputs), ``_common`` (constants and small checks), and for the Ray engine ``_ray`` (the
runs and the actors), ``_shards`` (the shards folder and keys) and ``_stream`` (an index folder
written from shards).
"""

from __future__ import annotations

from ._case_index import CaseIndex
from ._common import INDEX_FORMAT, INDEX_KINDS, RESULT_COLUMNS, IndexWarning
from ._filters import filter_mask
from ._model import config_hash, file_sha256, model_info
from ._ray import INSTALL_RAY, ArchiveRun, encode_archive
from ._same_image import same_image_cases

__all__ = ["CaseIndex", "IndexWarning", "INDEX_FORMAT", "INDEX_KINDS", "model_info", "config_hash",
           "file_sha256", "RESULT_COLUMNS", "filter_mask", "same_image_cases", "encode_archive", "ArchiveRun",
           "INSTALL_RAY"]
