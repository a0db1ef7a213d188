"""Shared helpers of the fairness tests: hand-made per-query tables, exposure results, flat skin images."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from dermretr.color import lab_to_rgb


def make_per_query(groups: dict, metric: str = "recall@1") -> pd.DataFrame:
    """One query per value: ``{fitzpatrick (or None): [metric values]}``; map@10 = half the metric."""
    rows, i = [], 0
    for fitz, values in groups.items():
        for v in values:
            rows.append({"case_id": f"q{i}", "patient_id": f"p{i}", "fitzpatrick": fitz, "n_relevant": 1,
                         metric: float(v), "map@10": float(v) / 2})
            i += 1
    out = pd.DataFrame(rows)
    out["fitzpatrick"] = out["fitzpatrick"].astype("Int64")
    return out


def row_of(table: pd.DataFrame, group: str, metric: str = "recall@1") -> pd.Series:
    sel = table[(table["group"] == group) & (table["metric"] == metric)]
    assert len(sel) == 1, (group, metric, table)
    return sel.iloc[0]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dermretr: error: ") and err.count("\n") == 1, err
    return err


def flat_image(lab, size=64, dtype=float) -> np.ndarray:
    rgb = np.broadcast_to(lab_to_rgb(np.asarray(lab, dtype=float)), (size, size, 3)).copy()
    return (rgb * 255 + 0.5).astype(np.uint8) if dtype == np.uint8 else rgb


class RandomRetriever:
    """Deterministic random embeddings per image path (texts ignored)."""

    kind = "random"

    def _vectors(self, paths):
        out = np.stack([np.random.default_rng(zlib.crc32(str(p).encode())).standard_normal(16) for p in paths])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_targets(self, paths, **_):
        return {"global": self._vectors(paths), "local": None, "alpha": 0.0}

    def encode_queries(self, paths, texts, **_):
        return {"global": self._vectors(paths), "local": None, "alpha": 0.0}


HAND = {1: [1] * 20 + [0] * 5, 6: [1] * 10 + [0] * 15, 3: [1] * 5, None: [1, 0, 1]}


def exposure_cases():
    return pd.DataFrame({"case_id": ["a", "b", "c", "d", "e", "q1", "q2"],
                         "fitzpatrick": pd.array([1, 1, 2, 6, pd.NA, 1, 6], dtype="Int64"),
                         "split": ["train"] * 5 + ["test"] * 2})


RESULTS = pd.DataFrame({"query_case_id": ["q1"] * 3 + ["q2"] * 3, "rank": [1, 2, 3] * 2,
                        "case_id": ["a", "b", "c", "a", "d", "e"]})
