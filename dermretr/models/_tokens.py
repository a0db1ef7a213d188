"""A closed vocabulary: keep only the token-embedding rows that a model's texts use.

A tiny model trained on DermSynth reads a few hundred of the 49,408 tokens of the CLIP
tokenizer; the other rows of its token embedding never received a gradient, yet they are two
thirds of the tiny backbone's weights.  :func:`prune_tokens` keeps the rows of the tokens that a
list of texts uses (split into words, so no text is cut at the context length) and replaces the
rest by one shared row, their mean; :func:`restore_tokens` rebuilds the full table when the
model is loaded.  Texts made of the kept words encode exactly as before; any other word reads as
that shared row, an "unknown word".

Examples
--------
>>> import torch
>>> from dermretr.models import Retriever, create
>>> r = Retriever(create("dermretr-tiny", device="cpu", image_size=64), kind="text")
>>> state = {k: v.clone() for k, v in r.state_dict().items()}
>>> small, info = prune_tokens(r, state, ["blue-whitish veil"])
>>> info["kept"] < 20, info["vocab_size"]
(True, 49408)
>>> full = restore_tokens(small, info)
>>> ids = r.backbone.tokenize(["blue-whitish veil"])[0]
>>> bool(torch.equal(full[info["key"]][ids], state[info["key"]][ids]))
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .._checks import show
from .._errors import DermretrError

__all__ = ["prune_tokens", "restore_tokens", "ROWS", "IDS", "FILL"]

#: Suffixes of the three tensors that replace a pruned ``...token_embedding.weight``.
ROWS, IDS, FILL = ".kept_rows", ".kept_ids", ".other_row"
_KEY_END = "token_embedding.weight"


def _embedding_key(state: Mapping[str, torch.Tensor]) -> str:
    keys = [k for k, v in state.items() if k.endswith(_KEY_END) and v.dim() == 2]
    if len(keys) != 1:
        raise DermretrError("this model's text tower has no single token-embedding table (found "
                            f"{len(keys)}); save it without vocabulary=")
    return keys[0]


def _words(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Iterable):
        raise DermretrError(f"vocabulary must be a list of texts, got {show(texts)}")
    words: set[str] = set()
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DermretrError(f"vocabulary[{i}] must be a string, got {show(text)}")
        words.update(text.split())
    if not words:
        raise DermretrError("vocabulary holds no word; give the texts the model was trained on")
    return sorted(words)


def prune_tokens(model: Any, state: dict[str, torch.Tensor], texts: Iterable[str], batch: int = 512
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    """``state`` with its token embedding cut to the tokens of ``texts``, and what :func:`restore_tokens` needs.

    Returns the new state dict (the table replaced by :data:`ROWS`, :data:`IDS` and
    :data:`FILL` tensors) and ``{"key", "vocab_size", "kept"}``, stored in ``config.json``.
    """
    key = _embedding_key(state)
    table = state[key]
    words = _words(texts)
    ids: set[int] = set()
    for start in range(0, len(words), batch):  # one word a row: nothing is truncated
        ids.update(model.backbone.tokenize(words[start:start + batch]).reshape(-1).cpu().tolist())
    kept = torch.tensor(sorted(ids), dtype=torch.int64)
    if int(kept.max()) >= table.shape[0]:
        raise DermretrError(f"the tokenizer gives token {int(kept.max())} but the embedding has {table.shape[0]} rows")
    dropped = torch.ones(table.shape[0], dtype=torch.bool)
    dropped[kept] = False
    fill = table[dropped].float().mean(0).to(table.dtype) if bool(dropped.any()) else torch.zeros_like(table[0])
    out = {k: v for k, v in state.items() if k != key}
    out.update({key + ROWS: table[kept].contiguous(), key + IDS: kept, key + FILL: fill.contiguous()})
    return out, {"key": key, "vocab_size": int(table.shape[0]), "kept": len(kept)}


def restore_tokens(state: dict[str, torch.Tensor], info: Any) -> dict[str, torch.Tensor]:
    """The full token-embedding table rebuilt from :func:`prune_tokens`' output; other words read as the shared row."""
    try:
        key, size = str(info["key"]), int(info["vocab_size"])
        rows, ids, fill = state[key + ROWS], state[key + IDS], state[key + FILL]
    except (KeyError, TypeError, ValueError):
        raise DermretrError("the model's token-embedding rows are incomplete (config.json's token_rows and the "
                            "weights disagree); copy or download the model folder again") from None
    if rows.dim() != 2 or ids.shape != (rows.shape[0],) or fill.shape != (rows.shape[1],) or \
            ids.dtype != torch.int64 or int(ids.min()) < 0 or int(ids.max()) >= size:
        raise DermretrError("the model's token-embedding rows are inconsistent; copy or download the model folder "
                            "again")
    table = fill.expand(size, rows.shape[1]).clone()
    table[ids] = rows
    out = {k: v for k, v in state.items() if k not in (key + ROWS, key + IDS, key + FILL)}
    out[key] = table
    return out
