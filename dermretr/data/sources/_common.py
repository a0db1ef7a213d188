"""Helpers shared by the dataset loaders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..._errors import DermretrError

__all__ = ["read_table", "require_columns", "safe_join", "describe_rows"]


def describe_rows(rows: Iterable, limit: int = 8) -> str:
    rows = list(rows)
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def read_table(path: Path, what: str, layout: str) -> pd.DataFrame:
    """Read a metadata CSV (BOM, Windows line endings and blank lines tolerated).

    Every cell is read as text (``dtype=str``) so that nothing is guessed or
    evaluated; callers convert the columns they need.
    """
    if not path.is_file():
        raise DermretrError(f"{what}: metadata file not found: looked for {path}. Expected layout: {layout}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig",
                         skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DermretrError(f"{what}: cannot parse {path}: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df.dropna(how="all").reset_index(drop=True)


def require_columns(df: pd.DataFrame, required: Iterable[str], path: Path, layout: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DermretrError(
            f"{path}: missing required column(s) {missing}; found columns {list(df.columns)}. "
            f"Expected layout: {layout}"
        )


def safe_join(root: Path, rel: str, path: Path, row: int) -> Path:
    """Join ``rel`` under ``root``, refusing paths that escape it."""
    rel = str(rel).strip().replace("\\", "/")
    candidate = Path(rel)
    if candidate.is_absolute() or os.path.isabs(rel) or ".." in candidate.parts:
        raise DermretrError(
            f"{path}, row {row}: image path {rel!r} escapes the dataset folder {root}; "
            "image paths must be relative and stay inside it"
        )
    return root / candidate
