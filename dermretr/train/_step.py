"""One training step's loss as one module call, so that DistributedDataParallel sees every use of a parameter.

:class:`Step` computes, for a batch of cases (and of modification or tone triplets), the features of this
process's rows, gathers every process's features (:func:`~dermretr.train._distributed.gather`), and the
loss over the global batch.  With one process it is exactly the computation of the one-process loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models.composer import SpatialMasks
from ..models.losses import RetrievalLoss, group_positives, word_region_scores
from ..models.retriever import Retriever
from ._config import TrainConfig
from ._distributed import Cluster, gather, gather_features, split_sizes
from ._triplets import triplet_positives

__all__ = ["Step", "StepBatch", "word_features", "word_region"]


@dataclass
class StepBatch:
    """What a step needs beside this process's images: the global batch's texts, labels and triplets."""

    texts: list[str]
    groups: list[str]
    patient_ids: np.ndarray | None
    triplets: pd.DataFrame | None  # the global batch's triplets (ref, tgt, text, ...), or None
    views: Callable[[list[int]], torch.Tensor]  # augmented views of training images, on the device


class Step(nn.Module):
    """The loss of one global batch: ``forward(q_img, t_img, batch) -> (loss, parts, mask statistics)``.

    ``q_img``/``t_img`` hold this process's rows of the global batch (all of them with one process).
    """

    def __init__(self, model: Retriever, loss_fn: RetrievalLoss, config: TrainConfig, cluster: Cluster):
        super().__init__()
        self.model, self.loss_fn, self.config, self.cluster = model, loss_fn, config, cluster

    def _sizes(self, n: int) -> list[int]:
        return split_sizes(n, self.cluster.world)

    def _mine(self, items: list, sizes: list[int]) -> list:
        lo = sum(sizes[:self.cluster.rank])
        return items[lo:lo + sizes[self.cluster.rank]]

    def forward(self, q_img: torch.Tensor, t_img: torch.Tensor,
                batch: StepBatch) -> tuple[torch.Tensor, dict[str, float], dict[str, float]]:
        model, config, cluster = self.model, self.config, self.cluster
        sizes = self._sizes(len(batch.texts))
        texts = self._mine(batch.texts, sizes)
        q = gather_features(model.query_features(q_img, texts), sizes, cluster)
        wanted = ("global", "local", "attn", "tokens") if config.word_region_weight > 0 else ("global", "local",
                                                                                               "attn")
        t = gather_features(model.target_features(t_img), sizes, cluster, keys=wanted)
        device = q_img.device
        pos, valid = group_positives(batch.groups, device=device)
        patient_sim = patient_pos = None
        if config.patient_weight > 0 and batch.patient_ids is not None:
            target_global = t["global"]
            assert target_global is not None  # every retriever kind has global target vectors
            patient_sim = target_global @ target_global.T
            pids = batch.patient_ids
            patient_pos = torch.tensor(pids[:, None] == pids[None, :], device=device)
        scores = model.score(q, t)
        loss, parts = self.loss_fn(scores, model.logit_scale, pos, valid, model.uses_local, patient_sim,
                                   patient_pos, word_region(model, q, t, texts, config, sizes, cluster))
        if batch.triplets is not None and len(batch.triplets):
            tb = batch.triplets
            tsizes = self._sizes(len(tb))
            mine = tb.iloc[sum(tsizes[:cluster.rank]):sum(tsizes[:cluster.rank + 1])]
            qm = gather_features(model.query_features(batch.views(mine["ref"].tolist()), mine["text"].tolist()),
                                 tsizes, cluster)
            tm = gather_features(model.target_features(batch.views(mine["tgt"].tolist())), tsizes, cluster)
            mpos = torch.tensor(triplet_positives(tb), device=device)
            mloss, mparts = self.loss_fn(model.score(qm, tm), model.logit_scale, mpos, None, model.uses_local)
            loss = loss + mloss
            parts["modification"] = mparts["combined"]
        stats: dict[str, float] = {}
        attn = t.get("attn")
        if attn is not None:  # are the target masks distinct and focused? (collapse check)
            s = SpatialMasks.statistics(attn.detach())
            stats = {"mask_entropy": s["entropy_fraction"], "mask_overlap": s["overlap"]}
        return loss, parts, stats


def word_features(model: Retriever, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected word features ``[B, L, D]`` of ``texts`` and the mask of their real words (no start/end token)."""
    tokens = model.backbone.tokenize(texts)
    _, feats, mask = model.backbone.encode_text(tokens)
    proj = getattr(model.encoder, "text_projection", None)
    words = feats @ proj if isinstance(proj, torch.Tensor) else feats
    mask = mask & (tokens != tokens.max(dim=1, keepdim=True).values)  # drop the end-of-text token
    mask[:, 0] = False  # and the start token
    return words, mask


def word_region(model: Retriever, q: dict, t: dict, texts: list[str], config: TrainConfig,
                sizes: list[int] | None = None, cluster: Cluster | None = None) -> torch.Tensor | None:
    """AFLoc-style word-to-region scores between query texts and target patches, when enabled.

    ``texts`` are this process's; with several processes (``cluster``) their word features are gathered, and
    ``t`` holds the gathered patch tokens.
    """
    if config.word_region_weight <= 0 or t.get("tokens") is None:
        return None
    vproj = model.backbone.project_tokens()
    patches = t["tokens"] @ vproj if vproj is not None else t["tokens"]
    words, mask = word_features(model, texts)
    if words.shape[-1] != patches.shape[-1]:
        return None
    if cluster is not None and sizes is not None:
        words, mask = gather(words, sizes, cluster), gather(mask, sizes, cluster)
    return word_region_scores(words, mask, patches)
