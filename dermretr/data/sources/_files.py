"""Finding a dataset's image files: paths relative to its folder, or bare file names found anywhere inside it.

Paths that escape the dataset folder are refused; files found only when letter case is ignored are used, with
one DataWarning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..._errors import DataWarning, DermretrError
from ._reading import Where, describe_values, line_unit

__all__ = [
    "safe_join",
    "FileIndex",
    "resolve_case_insensitive",
    "locate",
    "locate_all",
    "check_image_names",
    "split_suffix",
    "find_by_name",
    "warn_case_mismatches",
]

# -- finding images ----------------------------------------------------------------------------


def safe_join(root: Path, rel: str, path: Where, line: Hashable, unit: str = "line") -> Path:
    """Join ``rel`` (from line ``line`` of ``path``; ``unit``: see :func:`line_unit`) under ``root``.

    Paths that escape ``root`` are refused.
    """
    rel = str(rel).strip().replace("\\", "/")
    candidate = Path(rel)
    if candidate.is_absolute() or os.path.isabs(rel) or ".." in candidate.parts:
        raise DermretrError(
            f"{path}, {unit} {line}: image path {rel!r} escapes the dataset folder {root}; "
            "image paths must be relative and stay inside it"
        )
    return root / candidate


class FileIndex:
    """All files under a folder, found in one walk, looked up by name.

    Public datasets put images in varying sub-folders (``imgs_part_1/``,
    ``HAM10000_images_part_2/``, nested copies...), so loaders look files up
    by name.  Lookups are exact first, then case-insensitive (the official
    releases mix ``.JPG`` and ``.jpg``).  Paths are kept as strings (one
    ``os.path.join`` per file), which keeps indexing tens of thousands of
    files fast.

    >>> import os, tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "part_1").mkdir(); _ = (root / "part_1" / "ISIC_1.JPG").write_bytes(b"x")
    >>> idx = FileIndex(root, suffixes=(".jpg",))
    >>> os.path.basename(idx.find("ISIC_1.jpg")), idx.case_mismatches
    ('ISIC_1.JPG', 1)
    """

    def __init__(self, root: Path, suffixes: Iterable[str] | None = None):
        self.root = Path(root)
        suffixes = tuple(s.lower() for s in suffixes) if suffixes else None
        self.exact: dict[str, str] = {}
        self.folded: dict[str, str] = {}
        self.duplicates: dict[str, list[str]] = {}
        self.case_mismatches = 0
        join = os.path.join
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if suffixes and not name.lower().endswith(suffixes):
                    continue
                path = join(dirpath, name)
                if name in self.exact:
                    self.duplicates.setdefault(name, [self.exact[name]]).append(path)
                    continue
                self.exact[name] = path
                self.folded.setdefault(name.lower(), path)

    def __len__(self) -> int:
        return len(self.exact)

    def find(self, name: str) -> str | None:
        """The path of the file called ``name`` (exact, else case-insensitive), or None."""
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


def locate(root: Path, rels: Sequence[str], path: Where, line: Hashable,
           unit: str = "line") -> tuple[Path, Path | None]:
    """Find an image given by paths relative to ``root`` (on line ``line`` of ``path``).

    Returns where the first of ``rels`` is expected and the file found: the
    first of ``rels`` that exists exactly, else the first that exists when
    letter case is ignored, else None.  Paths escaping ``root`` are refused.
    """
    candidates = [safe_join(root, rel, path, line, unit) for rel in rels]
    for candidate in candidates:
        if candidate.is_file():
            return candidates[0], candidate
    for rel in rels:
        hit = resolve_case_insensitive(root, str(rel).strip().replace("\\", "/"))
        if hit is not None:
            return candidates[0], hit
    return candidates[0], None


def locate_all(root: Path, rels: pd.Series, path: Where) -> tuple[list[str], list[bool], int]:
    """Find the file of every row, given by a path relative to ``root`` (``rels``, indexed by line of ``path``).

    Returns the paths (the file found, else where it was expected), which were
    found, and how many were found only when ignoring letter case (pass that
    count to :func:`warn_case_mismatches`).  Paths escaping ``root`` are
    refused (see :func:`locate`).
    """
    out: list[str] = []
    found: list[bool] = []
    repaired = 0
    unit = line_unit(rels.index)
    for line, rel in rels.items():
        expected, hit = locate(root, [rel], path, line, unit)
        repaired += hit is not None and hit != expected
        found.append(hit is not None)
        out.append(str(hit if hit is not None else expected))
    return out, found, repaired


def check_image_names(names: pd.Series, root: Path, path: Where, column: str) -> None:
    """Refuse image names (from ``column`` of ``path``) that are not bare file names (separators, '..', absolute)."""
    text = names.astype(str)
    escapes = (
        text.str.startswith(("/", "\\"))
        | text.str.match(r"^[A-Za-z]:")
        | text.str.contains(r"(?:^|[/\\])\.\.(?:[/\\]|$)", regex=True)
    )
    nested = text.str.contains(r"[/\\]", regex=True) & ~escapes
    for mask, problem in ((escapes, f"escape the dataset folder {root}"),
                          (nested, "contain a path separator")):
        if mask.any():
            raise DermretrError(
                f"{path}: column {column!r} has image names at {describe_values(text[mask])} that {problem}; "
                "image names must be bare file names, found anywhere inside the dataset folder"
            )


def split_suffix(ids: pd.Series, suffixes: Sequence[str], default: str) -> tuple[pd.Series, pd.Series]:
    """Ids that may carry an image suffix -> (ids without it, file names with it; ``default`` when absent)."""
    has_ext = ids.str.lower().str.endswith(tuple(suffixes))
    if not has_ext.any():
        return ids, ids + default
    names = ids.where(has_ext, ids + default)
    return ids.where(~has_ext, ids.str.replace(r"\.[A-Za-z]+$", "", regex=True)), names


def warn_case_mismatches(count: int, what: str, path: Where, stacklevel: int = 2) -> None:
    """One DataWarning: ``count`` images named in ``path`` were found only ignoring letter case.

    ``stacklevel`` counts from the caller, as if it called :func:`warnings.warn`.
    """
    if count:
        warnings.warn(
            f"{what}: {count} image(s) named in {path} matched files only when ignoring letter case "
            "(e.g. '.JPG' vs '.jpg'); they are used",
            DataWarning, stacklevel=stacklevel + 1,
        )


def find_by_name(root: Path, names: pd.Series, path: Where, what: str,
                 suffixes: Sequence[str], column: str) -> tuple[list[str], np.ndarray]:
    """Find every image by file name with one walk of ``root``.

    Returns the absolute image paths (for images not found: ``root/<name>``)
    and a boolean array of which were found; warns once (DataWarning) about
    names matched only ignoring letter case.  ``column`` is where ``path``
    holds the names (named by errors).
    """
    check_image_names(names, root, path, column)
    index = FileIndex(root, suffixes=suffixes)
    exact = index.exact
    name_list = names.tolist()
    hits = [exact.get(n) or index.find(n) for n in name_list]
    found = np.fromiter((h is not None for h in hits), dtype=bool, count=len(hits))
    image_paths = [h if h is not None else str(root / n) for h, n in zip(hits, name_list)]
    warn_case_mismatches(index.case_mismatches, what, path, stacklevel=3)  # the loader's caller
    return image_paths, found
