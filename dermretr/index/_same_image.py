"""The cases whose image is the query image itself: the same file, or a file with the same bytes.

A query image taken from the database comes back at rank 1 (its own case); ``dermretr search``
leaves it out.  The index keeps no image hashes, and hashing a whole database at every search
would cost far more than the search: :func:`same_image_cases` looks only at the cases it is given
(a search's hits), compares file sizes first (a ``stat``) and reads (sha256) only the files as
large as the query image, so that a search of k results hashes at most k files and usually none.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ._model import file_sha256

__all__ = ["same_image_cases"]


def same_image_cases(cases: pd.DataFrame, image: Any, case_ids: Iterable[str] | None = None) -> list[str]:
    """The case ids (among ``case_ids``) whose image file is ``image`` or has exactly its bytes.

    Parameters
    ----------
    cases : DataFrame
        A case table with ``case_id`` and ``image_path`` (an index's :attr:`~CaseIndex.cases`).
    image : path or PIL.Image
        The query image.  Only a file can be compared: anything else (an image in memory)
        matches no case.
    case_ids : iterable of str, optional
        The cases to look at, e.g. the ``case_id`` column of a search's results (default:
        every case; on a large database, give the hits).  Ids not in ``cases`` are ignored.

    Returns
    -------
    list of str
        In the order of ``case_ids``.  A case whose image file is missing or unreadable is not
        the query image.

    Examples
    --------
    >>> import pathlib, shutil, tempfile, pandas as pd
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name, data in (("a.jpg", b"first image"), ("b.jpg", b"other image")):
    ...     _ = (folder / name).write_bytes(data)
    >>> cases = pd.DataFrame({"case_id": ["a", "b"], "image_path": [str(folder / "a.jpg"), str(folder / "b.jpg")]})
    >>> copy = shutil.copy(folder / "a.jpg", folder / "my-upload.jpg")  # same bytes, another name
    >>> same_image_cases(cases, copy), same_image_cases(cases, folder / "b.jpg", ["a"])
    (['a'], [])
    """
    if not isinstance(image, (str, os.PathLike)):
        return []
    try:
        query = os.stat(image)
    except (OSError, ValueError):
        return []
    if not os.path.isfile(image):
        return []
    digest: list[str] = []  # the query's sha256, read once, only when a file of its size turns up

    def same(path: Any) -> bool:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            return False
        try:
            other = os.stat(path)
            if (other.st_dev, other.st_ino) == (query.st_dev, query.st_ino):
                return True  # the very file (another spelling of its path, or a link to it)
            if other.st_size != query.st_size:
                return False
            if not digest:
                digest.append(file_sha256(image))
            return file_sha256(path) == digest[0]
        except (OSError, ValueError):
            return False

    known = pd.Index(cases["case_id"].astype(str))
    wanted = list(known) if case_ids is None else list(dict.fromkeys(str(c) for c in case_ids))
    rows = known.get_indexer(wanted)
    paths = cases["image_path"].to_numpy()
    return [c for c, row in zip(wanted, rows) if row >= 0 and same(paths[row])]
