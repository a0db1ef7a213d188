"""The score of query-target pairs as a differentiable function of one input: what Captum calls.

:class:`PairScore` fixes the features of everything but the varying input
(target image, reference image or text tokens) and maps a batch of that
input to one score per row (the final score, ``s_global`` or ``s_local``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_choice
from .._errors import DermretrError
from ._inputs import SIDES, WHICH, as_texts, to_pixels

__all__ = ["PairScore"]


class PairScore(nn.Module):
    """The score of query-target pairs as a differentiable function of one input (what Captum calls).

    The other inputs of each pair are fixed (their features are computed
    once); :meth:`forward` maps a batch of the varying input to one score per
    row.  ``pair_index`` (a long tensor, one entry per row) says which pair
    each row belongs to, so Captum's expanded batches (``n_steps`` copies,
    several occlusions at once) keep the right partner.

    Parameters
    ----------
    retriever : Retriever
        The model; put it in eval mode (``retriever.eval()``) before calling.
    query_images, texts, target_images : sequences
        One entry per pair (images as paths, PIL images, arrays or tensors).
    side : {"target", "reference", "text"}
        What varies: the target image, the reference image, or the text tokens.
    which : {"score", "global", "local"}
        The final score or one of its parts.
    alpha : float, optional
        Override the model's weight of local evidence.

    Attributes
    ----------
    inputs : Tensor
        The varying inputs of the pairs: pixels ``[n, 3, S, S]`` or token ids ``[n, L]``.
    scores : dict
        ``{"score", "global", "local"}`` -> numpy ``[n]`` of the unperturbed pairs.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2).eval()
    >>> f = PairScore(r, [torch.zeros(3, 64, 64)], ["streaks"], [torch.ones(3, 64, 64)], side="target")
    >>> with torch.no_grad():
    ...     s = f(f.inputs)
    >>> s.shape, bool(abs(float(s[0]) - f.scores["score"][0]) < 1e-5)
    (torch.Size([1]), True)
    """

    def __init__(self, retriever, query_images: Sequence, texts: Sequence[str], target_images: Sequence,
                 side: str = "target", which: str = "score", alpha: float | None = None):
        super().__init__()
        check_choice("side", side, (*SIDES, "text"))
        check_choice("which", which, WHICH)
        n = len(texts)
        if n == 0:
            raise DermretrError("no pairs to explain: give at least one (query image, text, target image)")
        if len(query_images) != n or len(target_images) != n:
            raise DermretrError(f"{len(query_images)} query images, {n} texts and {len(target_images)} target "
                                "images: give one of each per pair")
        if which == "local" and not retriever.uses_local:
            raise DermretrError(f"a {retriever.kind!r} retriever has no local score (s_local); explain "
                                "which='score' or 'global', or use a kind='full' retriever")
        if side == "reference" and retriever.kind == "text":
            raise DermretrError("a text-only retriever does not look at the reference image; explain the "
                                "target image or the text")
        if side == "text" and retriever.kind == "image":
            raise DermretrError("an image-only retriever ignores the text; explain an image instead")
        self.retriever = retriever
        self.side, self.which, self.alpha = side, which, alpha
        self.texts = as_texts(texts)
        refs = torch.stack([to_pixels(retriever, im, f"query image {i}") for i, im in enumerate(query_images)])
        tgts = torch.stack([to_pixels(retriever, im, f"target image {i}") for i, im in enumerate(target_images)])
        self.query_pixels, self.target_pixels = refs, tgts
        with torch.no_grad():
            q = retriever.query_features(refs, self.texts)
            t = retriever.target_features(tgts)
            s, sg, sl = (x.float().cpu().numpy() for x in retriever.score(q, t, alpha, paired=True))
        self.scores = {"score": s, "global": sg, "local": sl}
        keep = ("global", "local")
        self._fixed = {k: (None if v is None else v.detach()) for k, v in (t if side != "target" else q).items()
                       if k in keep}
        if side == "target":
            self.inputs = tgts
        elif side == "reference":
            self.inputs = refs
        else:
            tokens = retriever.backbone.tokenize(self.texts)
            self.inputs = tokens

    def _index(self, rows: int, pair_index: torch.Tensor | None) -> torch.Tensor:
        n = len(self.texts)
        if pair_index is None:
            if n == 1:
                return torch.zeros(rows, dtype=torch.long, device=self.query_pixels.device)
            if rows != n:
                raise DermretrError(f"{rows} inputs for {n} pairs: pass pair_index (one pair number per row)")
            return torch.arange(n, device=self.query_pixels.device)
        return pair_index.long().to(self.query_pixels.device)

    def forward(self, inputs: torch.Tensor, pair_index: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B]`` of the pairs ``pair_index`` with ``inputs`` in place of their varying input."""
        r = self.retriever
        if r.training:
            raise DermretrError("the retriever is in training mode (dropout makes scores random): call "
                                "retriever.eval() first")
        idx = self._index(inputs.shape[0], pair_index)
        fixed = {k: (None if v is None else v[idx]) for k, v in self._fixed.items()}
        if self.side == "target":
            q, t = fixed, r.target_features(inputs)
        elif self.side == "reference":
            q, t = r.query_features(inputs, [self.texts[i] for i in idx.tolist()]), fixed
        else:
            q = r.query_features(self.query_pixels[idx], [self.texts[i] for i in idx.tolist()], text_tokens=inputs)
            t = fixed
        s, sg, sl = r.score(q, t, self.alpha, paired=True)
        return {"score": s, "global": sg, "local": sl}[self.which]
