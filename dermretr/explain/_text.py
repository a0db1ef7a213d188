"""Text attributions: Layer Integrated Gradients of a pair's score over the query's text tokens.

:func:`explain_texts` attributes each pair's score to the tokens of its
query text, against a baseline that keeps the start and end tokens and pads
every word; :class:`TextAttribution` merges sub-word pieces into words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .._checks import check_choice
from .._errors import DermretrError
from ._inputs import WHICH, check_batch_size, explaining
from ._pair_score import PairScore

__all__ = ["TextAttribution", "explain_texts", "explain_text"]


@dataclass
class TextAttribution:
    """Attribution of one pair's score to the query's text tokens (Layer Integrated Gradients).

    Attributes
    ----------
    text : str
        The query text.
    tokens : list of str
        The text's tokens (start/end/padding left out), as the tokenizer spells them.
    token_scores : ndarray
        Attribution per token (sums, with the other tokens', to the score
        difference to the all-padding baseline).
    words, word_scores : list of str, ndarray
        Tokens merged into words (sub-word pieces summed).
    which : str
        The explained score.
    score : float
        Its value for the pair.
    scores : dict
        ``{"score", "global", "local"}`` of the pair.
    delta : float
        Captum's convergence delta (completeness error).
    """

    text: str
    tokens: list[str]
    token_scores: np.ndarray
    words: list[str]
    word_scores: np.ndarray
    which: str
    score: float
    scores: dict = field(default_factory=dict)
    delta: float | None = None
    method: str = "ig"

    def plot(self, title: str | None = None) -> Figure:
        """A bar chart of the per-word attributions (red: for the match, blue: against)."""
        from ..viz import text_bars

        names = {"score": "s", "global": "s_global", "local": "s_local"}
        return text_bars(self.words, self.word_scores.tolist(),
                         title=title or f"text attribution of {names[self.which]}={self.score:.3f}\n{self.text!r}")


def _token_pieces(backbone, ids: Sequence[int]) -> list[str]:
    tok = backbone.tokenizer
    inner = getattr(tok, "tokenizer", None)
    if hasattr(tok, "decode"):
        try:
            return [tok.decode([int(i)]) for i in ids]
        except Exception:  # noqa: BLE001 - tokenizers differ; fall back to ids
            pass
    if inner is not None and hasattr(inner, "convert_ids_to_tokens"):
        return [str(t) for t in inner.convert_ids_to_tokens([int(i) for i in ids])]
    return [str(int(i)) for i in ids]


def _merge_words(pieces: list[str], scores: np.ndarray) -> tuple[list[str], np.ndarray]:
    words, word_scores, cur, acc = [], [], "", 0.0
    for piece, s in zip(pieces, scores):
        start_new = piece.startswith(("Ġ", "▁")) and cur  # HF byte-level / sentencepiece word starts
        if start_new:
            words.append(cur.strip("Ġ▁ "))
            word_scores.append(acc)
            cur, acc = "", 0.0
        cur += piece
        acc += float(s)
        if piece.endswith(" "):  # open_clip's SimpleTokenizer marks word ends with a space
            words.append(cur.strip("Ġ▁ "))
            word_scores.append(acc)
            cur, acc = "", 0.0
    if cur.strip("Ġ▁ "):
        words.append(cur.strip("Ġ▁ "))
        word_scores.append(acc)
    return words, np.asarray(word_scores, dtype=np.float32)


def _token_layer(retriever) -> nn.Module:
    model = retriever.backbone.model
    for owner in (model, getattr(model, "text", None)):
        layer = getattr(owner, "token_embedding", None) if owner is not None else None
        if isinstance(layer, nn.Module):
            return layer
    raise DermretrError(f"cannot find the token-embedding layer of {retriever.backbone.name!r}'s text tower, so "
                        "its text cannot be attributed")


def explain_texts(retriever, pairs: Sequence[tuple[Any, str, Any]], which: str = "score", n_steps: int = 32,
                  batch_size: int = 8, alpha: float | None = None) -> list[TextAttribution]:
    """Attribute the scores of several pairs to their query text tokens (Layer Integrated Gradients).

    The baseline keeps the start and end tokens and replaces every word
    token by padding, so the attributions of the words sum to the score
    difference between the text and an empty one.

    Parameters
    ----------
    retriever : Retriever
        The model.
    pairs : sequence of (query_image, text, target_image)
        A text with no tokens (empty or blank) raises :class:`~dermretr.DermretrError`.
    which : {"score", "global", "local"}
        The explained score.
    n_steps : int
        Integration steps.
    batch_size : int
        Pairs at once.
    alpha : float, optional
        Override the weight of local evidence.

    Returns
    -------
    list of TextAttribution

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> a, b = explain_texts(r, [(torch.zeros(3, 64, 64), "irregular streaks", torch.ones(3, 64, 64)),
    ...                          (torch.zeros(3, 64, 64), "blue veil", torch.ones(3, 64, 64))])
    >>> a.words, len(b.token_scores)
    (['irregular', 'streaks'], 2)
    """
    from captum.attr import LayerIntegratedGradients

    check_choice("which", which, WHICH)
    if int(n_steps) < 2:
        raise DermretrError(f"n_steps must be at least 2, got {n_steps}")
    batch_size = check_batch_size(batch_size)
    pairs = list(pairs)
    if not pairs:
        raise DermretrError("no pairs to explain: give at least one (query image, text, target image)")
    bb = retriever.backbone
    special = {int(t) for t in bb.tokenize([""])[0].tolist() if int(t) != 0}
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 3:
            raise DermretrError(f"pair {i} must be (query_image, text, target_image), got {type(p).__name__}")
        text = "" if p[1] is None else str(p[1])
        ids = bb.tokenize([text])[0].tolist()
        if not any(int(t) != 0 and int(t) not in special for t in ids):
            raise DermretrError(f"text {text!r} of pair {i} has no tokens to attribute (empty or blank); give a "
                                "descriptor text such as 'blue-whitish veil', or explain the images instead")
    layer = _token_layer(retriever)
    out: list[TextAttribution] = []
    with explaining(retriever):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            f = PairScore(retriever, [p[0] for p in chunk], [p[1] for p in chunk], [p[2] for p in chunk],
                          side="text", which=which, alpha=alpha)
            tokens = f.inputs
            words_mask = (tokens != 0) & ~torch.isin(tokens, torch.tensor(sorted(special), device=tokens.device))
            baseline = torch.where(words_mask, torch.zeros_like(tokens), tokens)
            index = torch.arange(len(chunk), device=tokens.device)
            attr, delta = LayerIntegratedGradients(f, layer).attribute(
                tokens, baselines=baseline, additional_forward_args=(index,), n_steps=int(n_steps),
                internal_batch_size=max(2 * len(chunk), min(len(chunk) * int(n_steps), 64)),
                return_convergence_delta=True)
            per_token = attr.sum(-1).detach().float().cpu().numpy()
            for j in range(len(chunk)):
                pos = words_mask[j].cpu().numpy()
                ids = tokens[j].cpu().numpy()[pos]
                pieces = _token_pieces(bb, ids)
                scores = per_token[j][pos].astype(np.float32)
                words, word_scores = _merge_words(pieces, scores)
                out.append(TextAttribution(
                    text=f.texts[j], tokens=[p.strip() for p in pieces], token_scores=scores, words=words,
                    word_scores=word_scores, which=which, score=float(f.scores[which][j]),
                    scores={k: float(v[j]) for k, v in f.scores.items()}, delta=float(delta[j])))
    return out


def explain_text(retriever, query_image: Any, text: str, target_image: Any, which: str = "score",
                 n_steps: int = 32, alpha: float | None = None) -> TextAttribution:
    """Attribute one pair's score to its query text tokens; see :func:`explain_texts`.

    Examples
    --------
    >>> import torch
    >>> from dermretr.models.backbones import create
    >>> from dermretr.models.retriever import Retriever
    >>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="full", n_masks=2)
    >>> explain_text(r, torch.zeros(3, 64, 64), "   ", torch.ones(3, 64, 64))
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: text '   ' of pair 0 has no tokens to attribute (empty or blank); ...
    """
    return explain_texts(retriever, [(query_image, text, target_image)], which=which, n_steps=n_steps,
                         alpha=alpha)[0]
