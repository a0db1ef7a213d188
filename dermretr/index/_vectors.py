"""What an index is built from: the target vectors and the case table, checked before anything is indexed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._checks import check_alpha
from .._errors import DermretrError
from ..data.cases import validate_cases
from ..models.embeddings import Embeddings
from ._common import as_array, check_result_columns

__all__ = ["check_targets", "image_cases"]


def check_targets(targets: Any, n_cases: int, alpha: Any) -> tuple[np.ndarray, np.ndarray | None, float]:
    """``(global float32 [n, D], local float16 [n, M, D] or None, alpha)`` of target vectors, checked.

    ``targets`` is an :class:`~dermretr.models.embeddings.Embeddings` or a dict with ``"global"``
    (and optionally ``"local"``, ``"alpha"``); ``alpha`` overrides theirs (0 without locals).
    """
    if isinstance(targets, Embeddings):
        raw_g, raw_l, raw_alpha = targets.global_vectors, targets.local_vectors, targets.alpha
    elif isinstance(targets, Mapping) and "global" in targets:
        raw_g, raw_l, raw_alpha = targets["global"], targets.get("local"), targets.get("alpha", 0.0)
    else:
        raise DermretrError("targets must be a dict with a 'global' array (as Retriever.encode_targets returns)")
    g = np.ascontiguousarray(as_array(raw_g, "targets['global']"))
    if g.ndim != 2 or g.shape[0] == 0 or g.shape[1] == 0:
        raise DermretrError(f"targets['global'] must be a non-empty [n, D] array, got shape {g.shape}")
    n, d = g.shape
    if n_cases != n:
        raise DermretrError(f"{n} target vectors but {n_cases} cases: give one case-table row per vector")
    if not np.isfinite(g).all():
        raise DermretrError("targets['global'] holds NaN or infinite values")
    local = None
    if raw_l is not None:
        local = as_array(raw_l, "targets['local']")
        if local.ndim != 3 or local.shape[0] != n or local.shape[2] != d or local.shape[1] == 0:
            raise DermretrError(f"targets['local'] must be [n={n}, M>0, D={d}], got shape {local.shape}")
        if not np.isfinite(local).all():
            raise DermretrError("targets['local'] holds NaN or infinite values")
        with np.errstate(over="ignore"):
            local = np.ascontiguousarray(local, dtype=np.float16)
        if not np.isfinite(local).all():
            raise DermretrError("targets['local'] holds values too large for float16 storage (|x| > 65504); "
                                "give normalised vectors")
    if alpha is None:
        alpha = raw_alpha if local is not None else 0.0
        alpha = 0.0 if alpha is None else alpha
    return g, local, check_alpha(alpha) if local is not None else 0.0


def image_cases(cases: Any) -> pd.DataFrame:
    """A case table to encode: validated, not empty, ``image_path`` absolute and no folder among the images."""
    cases = validate_cases(cases)
    if len(cases) == 0:
        raise DermretrError("the case table is empty: nothing to index")
    check_result_columns(cases, "the case table")
    # stored absolute, so that results point at the images from any working directory
    cases["image_path"] = cases["image_path"].map(lambda p: str(Path(p).expanduser().absolute())).astype("string")
    folders = cases["image_path"][cases["image_path"].map(os.path.isdir)]
    if len(folders):
        raise DermretrError(f"case table column 'image_path': {folders.iloc[0]} (case "
                            f"{cases['case_id'][folders.index[0]]!r}) is a folder, not an image file"
                            + (f"; {len(folders) - 1} more like it" if len(folders) > 1 else ""))
    return cases
