"""Shared data of the index tests: case tables, target and query vectors, brute-force search, error checks."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermretr._errors import DermretrError
from dermretr.index import CaseIndex, IndexWarning
from dermretr.models.retriever import convex_score

# ---------------------------------------------------------------------------- clustered vectors (search, save/load)

GROUPS = np.array(["MEL", "NEV", "BCC", "SK", "MISC"])


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def targets(n: int, d: int = 24, m: int = 3, seed: int = 0, local: bool = True) -> dict:
    """Clustered unit vectors; locals near the global vector of their case, with their own noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, d))
    g = unit(centers[rng.integers(0, 12, n)] + 0.7 * rng.normal(size=(n, d)))
    out = {"global": g, "local": None, "alpha": 0.6}
    if local:
        out["local"] = unit(g[:, None, :] + 0.9 * rng.normal(size=(n, m, d)))
    return out


def queries(targets: dict, q: int = 12, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(targets["global"]), q)
    g = targets["global"]
    out = {"global": unit(g[rows] + 0.3 * rng.normal(size=(q, g.shape[1]))), "local": None}
    if targets["local"] is not None:
        out["local"] = unit(targets["local"][rows] + 0.5 * rng.normal(size=targets["local"][rows].shape))
    return out


def cases(n: int) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({
        "case_id": [f"c{j:05d}" for j in i], "patient_id": [f"p{j // 2}" for j in i],
        "image_path": [f"/nowhere/{j}.jpg" for j in i], "diagnosis": "lesion",
        "diagnosis_group": GROUPS[i % 5], "fitzpatrick": i % 6 + 1,
        "malignant": (i % 5 == 0), "split": "train", "source": "demo",
        "ita": np.round(np.linspace(-40, 60, n), 3),  # extra columns survive save/load with their dtypes
        "note": np.where(i % 3 == 0, "", "seen twice"),
        "age": (20 + i % 60).astype(np.int64),
    })


def brute_force(index: CaseIndex, queries: dict, k: int, alpha=None, allowed=None) -> tuple[np.ndarray, np.ndarray]:
    """Full convex score of every case, best k ids per query (ties by row)."""
    s, _, _ = convex_score(queries, index.targets(), alpha=index.alpha if alpha is None else alpha)
    if allowed is not None:
        s = np.where(allowed[None, :], s, -np.inf)
    rows = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    order = np.lexsort((rows, -s), axis=-1)[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def ids(hits: pd.DataFrame, q: int) -> np.ndarray:
    return hits["case_id"].str[1:].astype(int).to_numpy().reshape(q, -1)


def build(kind: str, targets: dict, n: int, **kw) -> CaseIndex:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IndexWarning)
        return CaseIndex.from_embeddings(targets, cases(n), kind=kind, **kw)


# ---------------------------------------------------------------------------- a small index (faults, arguments)

N, D, M = 30, 8, 2


def small_targets(n: int = N, seed: int = 0, local: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    return {"global": unit(rng.normal(size=(n, D))),
            "local": unit(rng.normal(size=(n, M, D))) if local else None, "alpha": 0.4}


def small_cases(n: int = N) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({"case_id": [f"c{j:03d}" for j in i], "patient_id": "p", "image_path": "/nowhere/x.jpg",
                         "diagnosis": "lesion", "diagnosis_group": np.array(["MEL", "NEV", "BCC"])[i % 3],
                         "fitzpatrick": i % 6 + 1, "split": "train", "source": "demo"})


def small_index(n: int = N, kind: str = "flat", seed: int = 0, local: bool = True) -> CaseIndex:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IndexWarning)
        return CaseIndex.from_embeddings(small_targets(n, seed, local), small_cases(n), kind=kind)


def first_query(index: CaseIndex) -> dict:
    t = index.targets()
    return {"global": t["global"][:1], "local": None if t["local"] is None else t["local"][:1]}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_line_error(call, *parts: str, error=DermretrError) -> str:
    """``call()`` raises ``error`` with a one-line message holding every one of ``parts``."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    missing = [p for p in parts if p not in message]
    assert not missing, f"{missing} not in {message!r}"
    return message


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
