"""Contrastive losses for composed retrieval.

* :func:`multi_positive_infonce` - InfoNCE where a query may have several
  positives (every in-batch case of the same diagnosis group for case search;
  the exact target for modification triplets), symmetric, with pairs masked
  out (a query's own case).
* :class:`RetrievalLoss` - applies it to the global, local and combined
  scores with a learnable temperature, plus two optional, ablatable terms:
  a nested patient-level term (SLIMP-style: images of the same patient are
  pulled together) and a word-to-region term (AFLoc-style: every query word
  should find a matching patch in its positive targets).

Examples
--------
>>> import torch
>>> logits = torch.tensor([[5.0, 0.0, 4.0], [0.0, 5.0, 0.0]])
>>> pos = torch.tensor([[True, False, True], [False, True, False]])
>>> float(multi_positive_infonce(logits, pos)) < 0.1
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["multi_positive_infonce", "RetrievalLoss", "group_positives", "word_region_scores"]


def multi_positive_infonce(logits: torch.Tensor, positives: torch.Tensor, valid: torch.Tensor | None = None,
                           symmetric: bool = True) -> torch.Tensor:
    """Mean of ``-log(sum_pos exp(l) / sum_valid exp(l))`` over rows (and columns) with a positive.

    Parameters
    ----------
    logits : Tensor [Q, T]
        Scaled similarities.
    positives : bool Tensor [Q, T]
        Which targets are relevant to each query.
    valid : bool Tensor [Q, T], optional
        Pairs that take part at all (default: all).
    symmetric : bool
        Also average the target-to-query direction.
    """
    if valid is None:
        valid = torch.ones_like(positives, dtype=torch.bool)
    positives = positives & valid

    def one_way(lg: torch.Tensor, pos: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        rows = pos.any(dim=1)
        if not bool(rows.any()):
            return lg.sum() * 0.0
        lg, pos, ok = lg[rows], pos[rows], ok[rows]
        neg_inf = torch.finfo(lg.dtype).min
        num = torch.logsumexp(lg.masked_fill(~pos, neg_inf), dim=1)
        den = torch.logsumexp(lg.masked_fill(~ok, neg_inf), dim=1)
        return (den - num).mean()

    loss = one_way(logits, positives, valid)
    if symmetric:
        loss = 0.5 * (loss + one_way(logits.T, positives.T, valid.T))
    return loss


def group_positives(labels: list, exclude_self: bool = True, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and valid masks for in-batch case search: same label is positive, self is excluded.

    >>> pos, valid = group_positives(["MEL", "NEV", "MEL"])
    >>> pos.int().tolist(), valid.int().tolist()
    ([[0, 0, 1], [0, 0, 0], [1, 0, 0]], [[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    """
    codes = {v: i for i, v in enumerate(dict.fromkeys(labels))}
    ids = torch.tensor([codes[v] for v in labels], device=device)
    same = ids[:, None] == ids[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=device)
    valid = ~eye if exclude_self else torch.ones_like(same)
    return same & valid, valid


def word_region_scores(words: torch.Tensor, word_mask: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """AFLoc-style word-to-region similarity ``[Q, T]``: each word's best patch, averaged over words.

    ``words`` ``[Q, L, D]`` and ``patches`` ``[T, N, D]`` are normalised here;
    ``word_mask`` ``[Q, L]`` marks real words.
    """
    w = F.normalize(words, dim=-1)
    p = F.normalize(patches, dim=-1)
    sim = torch.einsum("qld,tnd->qtln", w, p).amax(dim=-1)  # best patch per word
    m = word_mask.to(sim.dtype)[:, None, :]
    return (sim * m).sum(-1) / m.sum(-1).clamp_min(1.0)


class RetrievalLoss(nn.Module):
    """Weighted sum of InfoNCE terms on the combined, global and local scores (+ optional terms).

    Parameters
    ----------
    combined, global_, local : float
        Weights of the terms on the final score and on each of its parts.
    patient : float
        Weight of the SLIMP-style patient-level term (0 = off).
    word_region : float
        Weight of the AFLoc-style word-to-region term (0 = off).
    """

    def __init__(self, combined: float = 1.0, global_: float = 0.5, local: float = 0.5, patient: float = 0.0,
                 word_region: float = 0.0):
        super().__init__()
        self.weights = {"combined": combined, "global": global_, "local": local, "patient": patient,
                        "word_region": word_region}

    def forward(self, scores: tuple[torch.Tensor, torch.Tensor, torch.Tensor], logit_scale: torch.Tensor,
                positives: torch.Tensor, valid: torch.Tensor | None = None, has_local: bool = True,
                patient_sim: torch.Tensor | None = None, patient_positives: torch.Tensor | None = None,
                word_region: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts (floats, for logging)."""
        scale = logit_scale.clamp(max=4.6052).exp()  # temperature >= 0.01
        s, s_global, s_local = scores
        parts = {"combined": multi_positive_infonce(scale * s, positives, valid)}
        if has_local:
            parts["global"] = multi_positive_infonce(scale * s_global, positives, valid)
            parts["local"] = multi_positive_infonce(scale * s_local, positives, valid)
        if self.weights["patient"] > 0 and patient_sim is not None and patient_positives is not None:
            eye = torch.eye(len(patient_sim), dtype=torch.bool, device=patient_sim.device)
            parts["patient"] = multi_positive_infonce(scale * patient_sim, patient_positives & ~eye, ~eye)
        if self.weights["word_region"] > 0 and word_region is not None:
            parts["word_region"] = multi_positive_infonce(scale * word_region, positives, valid)
        terms = [self.weights[k] * v for k, v in parts.items()]  # "combined" always comes first
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total, {k: float(v.detach()) for k, v in parts.items()}
