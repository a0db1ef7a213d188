"""Why did it match?  Attributions of retrieval scores, the model's own masks, and faithfulness checks.

A composed query (reference image + descriptor text) matches a database
image with ``s = a * s_local + (1 - a) * s_global``.  This module attributes
that score - or separately ``s_global`` and ``s_local`` (``which``) - to

* the retrieved **target** image (``side="target"``),
* the **reference** image of the query (``side="reference"``),
* the query's **text tokens** (:func:`explain_text`),

with Captum: :class:`~captum.attr.IntegratedGradients` (``method="ig"``),
:class:`~captum.attr.Occlusion` (``"occlusion"``) and
:class:`~captum.attr.LayerGradCam` (``"gradcam"``) on the patch tokens
entering the last transformer block of the ViT image tower, reshaped to
their grid (the class token is dropped; the tokens *entering* the block are
used because the tokens it *outputs* carry no gradient of the pooled global
embedding).  Text uses :class:`~captum.attr.LayerIntegratedGradients` on the
token-embedding layer of the open_clip text tower with a baseline that keeps
the start/end tokens and pads every word.

Every image attribution is an :class:`Attribution` holding a heatmap at the
model's input resolution and the image as the model saw it;
:meth:`Attribution.overlay` draws it.  :func:`mask_maps` shows which regions
each of the M spatial masks pooled, query and target side by side.

Faithfulness is measured, not assumed (deletion and randomisation live in
:mod:`dermretr.explain.faithfulness`):

* :func:`deletion_curve` - removing the most-attributed patches first should
  lower the score faster than removing random ones (lower area under the curve);
* :func:`randomisation_check` - attributions of a copy whose vision tower is
  re-drawn at random (cascading from the top or one stage at a time) should
  rank pixels differently from the trained model (low Spearman correlation);
* :func:`localisation_score` / :func:`dermsynth_localisation` - on DermSynth,
  attribution should fall on the rendered structure of the queried criterion
  (pointing game, IoU of the top attributed area, attribution energy inside
  the ground-truth mask), each against a uniform-map baseline;
  :func:`mask_localisation` scores the same against any binary mask column
  of a case table (e.g. PH2's ``lesion_mask``).

Images may be file paths, PIL images, uint8 arrays ``[H, W, 3]`` or tensors
already normalised by the backbone's preprocess (``[3, H, W]``).  Files and
PIL images go through the backbone's preprocess (a very large image is first
shrunk to four times the model's input side); tensors of another size are
resized.

Examples
--------
>>> import numpy as np
>>> from PIL import Image
>>> from dermretr.models.backbones import create
>>> from dermretr.models.retriever import Retriever
>>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
>>> ref = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
>>> tgt = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
>>> a = explain_pair(r, ref, "blue-whitish veil", tgt, method="gradcam", which="local")
>>> a.heatmap.shape, a.method, a.which, a.side
((64, 64), 'gradcam', 'local', 'target')
>>> t = explain_text(r, ref, "blue-whitish veil", tgt)
>>> t.words
['blue', '-', 'whitish', 'veil']
"""

from __future__ import annotations

from ._image import Attribution, explain_pair, explain_pairs, explain_result, explain_results
from ._inputs import BASELINES, METHODS, SIDES, WHICH
from ._localisation import (
    align_mask,
    dermsynth_localisation,
    localisation_score,
    localisation_summary,
    mask_localisation,
)
from ._masks import mask_arrays, mask_maps
from ._pair_score import PairScore
from ._text import TextAttribution, explain_text, explain_texts
from .faithfulness import (
    DeletionCurve,
    RandomisationCheck,
    compare_attributions,
    deletion_curve,
    pair_deletion_curve,
    randomisation_check,
)

__all__ = [
    "METHODS",
    "WHICH",
    "SIDES",
    "BASELINES",
    "Attribution",
    "TextAttribution",
    "PairScore",
    "DeletionCurve",
    "RandomisationCheck",
    "explain_pair",
    "explain_pairs",
    "explain_text",
    "explain_texts",
    "explain_result",
    "explain_results",
    "mask_arrays",
    "mask_maps",
    "deletion_curve",
    "pair_deletion_curve",
    "randomisation_check",
    "compare_attributions",
    "localisation_score",
    "align_mask",
    "dermsynth_localisation",
    "mask_localisation",
    "localisation_summary",
]
