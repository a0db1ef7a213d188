"""Helpers shared by the dataset loaders."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..._errors import DataWarning, DermretrError

__all__ = [
    "read_table",
    "require_columns",
    "safe_join",
    "describe_rows",
    "FileIndex",
    "resolve_case_insensitive",
    "drop_missing_images",
    "MISSING",
]

#: Policies for cases whose image file is missing.
MISSING = ("warn", "raise", "keep")


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


class FileIndex:
    """All files under a folder, found in one walk, looked up by name.

    Public datasets put images in varying sub-folders (``imgs_part_1/``,
    ``HAM10000_images_part_2/``, nested copies...), so loaders look files up
    by name.  Lookups are exact first, then case-insensitive (the official
    releases mix ``.JPG`` and ``.jpg``).

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "part_1").mkdir(); _ = (root / "part_1" / "ISIC_1.JPG").write_bytes(b"x")
    >>> idx = FileIndex(root, suffixes=(".jpg",))
    >>> idx.find("ISIC_1.jpg").name, idx.case_mismatches
    ('ISIC_1.JPG', 1)
    """

    def __init__(self, root: Path, suffixes: Iterable[str] | None = None):
        self.root = Path(root)
        suffixes = tuple(s.lower() for s in suffixes) if suffixes else None
        self.exact: dict[str, Path] = {}
        self.folded: dict[str, Path] = {}
        self.duplicates: dict[str, list[Path]] = {}
        self.case_mismatches = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if suffixes and not name.lower().endswith(suffixes):
                    continue
                path = Path(dirpath) / name
                if name in self.exact:
                    self.duplicates.setdefault(name, [self.exact[name]]).append(path)
                    continue
                self.exact[name] = path
                self.folded.setdefault(name.lower(), path)

    def __len__(self) -> int:
        return len(self.exact)

    def find(self, name: str) -> Path | None:
        """The file called ``name`` (exact, else case-insensitive), or None."""
        path = self.exact.get(name)
        if path is None:
            path = self.folded.get(name.lower())
            if path is not None:
                self.case_mismatches += 1
        return path


def resolve_case_insensitive(root: Path, rel: str) -> Path | None:
    """Find ``root/rel`` when the file exists with other letter case in any part."""
    current = root
    for part in Path(rel).parts:
        try:
            entries = {p.name.lower(): p for p in current.iterdir()}
        except OSError:
            return None
        match = entries.get(part.lower())
        if match is None:
            return None
        current = match
    return current if current.is_file() else None


def drop_missing_images(cases: pd.DataFrame, missing: str, meta_path: Path) -> pd.DataFrame:
    """Apply the ``missing`` policy to rows whose ``image_path`` is not a file.

    "warn" drops them with one :class:`DataWarning` (count and examples),
    "raise" raises, "keep" keeps them.
    """
    if missing not in MISSING:
        raise DermretrError(f"missing must be one of {MISSING}, got {missing!r}")
    if missing == "keep" or len(cases) == 0:
        return cases
    exists = cases["image_path"].map(os.path.isfile)
    if exists.all():
        return cases
    gone = cases.loc[~exists, "image_path"].tolist()
    examples = ", ".join(gone[:5]) + (" ..." if len(gone) > 5 else "")
    msg = f"{meta_path}: {len(gone)} of {len(cases)} image file(s) not found, e.g. {examples}"
    if missing == "raise":
        raise DermretrError(msg + "; fix the folder, or pass missing='warn' to drop those cases")
    warnings.warn(msg + "; those cases were dropped", DataWarning, stacklevel=3)
    return cases.loc[exists.to_numpy()].reset_index(drop=True)
