"""The shards of an archive being encoded: a work folder beside the index, one restartable shard per row range.

``dermretr index --engine ray`` encodes the case table in fixed ranges of rows (shard ``i`` holds
rows ``i * shard_size`` up to the next shard's first row) and writes each shard, as soon as its vectors
arrive, into ``INDEX_DIR.shards/``:

* ``shard-000000.npz`` -- ``global`` ``[r, D]`` and, for retrievers with local vectors, ``local``
  ``[r, M, D]``, both float32 exactly as :meth:`~dermretr.models.retriever.Retriever.encode_targets`
  returns them;
* ``shard-000000.json`` -- the shard's key, its rows and shapes (written after the ``.npz``, so a
  shard counts as written only when both are there);
* ``.dermretr.json`` -- the owner marker of :func:`dermretr._io.claim_dir` (kind ``index-shards``).

The key is a sha256 over the model's identity (:func:`model_identity`: config hash, weights sha256,
image size, the dermretr version and the shard format) and, per row, the case id, the image path and
the sha256 of the image file's bytes (:func:`shard_key`).  A rerun recomputes the keys and keeps every
shard whose stored key is the same and whose file has the size written and the right shapes; a changed
image, model or case list re-encodes only the shards it touches.  Every file is written atomically; the
folder is removed once the index is saved.

>>> import tempfile, pathlib, numpy as np
>>> store = ShardStore(pathlib.Path(tempfile.mkdtemp()) / "idx.shards").claim()
>>> key = shard_key("model", 0, 2, ["c0", "c1"], ["/a.jpg", "/b.jpg"], ["0" * 64, "1" * 64])
>>> store.write(0, key, 0, 2, np.ones((2, 4), np.float32), None)
>>> store.fresh(0, key, 2, 4, 0), store.fresh(0, "another key", 2, 4, 0)
(True, False)
>>> store.remove()
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, _io
from .._errors import DermretrError, OutputError
from ._common import IndexWarning, all_finite
from ._model import file_sha256

__all__ = ["SHARD_FORMAT", "SHARDS_KIND", "shards_dir", "model_identity", "shard_key", "hash_shard", "shard_ranges",
           "ShardStore"]

#: Version of the shard files; part of every key, so a new layout re-encodes instead of misreading.
SHARD_FORMAT = 1
#: The owner kind of a shards folder (:func:`dermretr._io.claim_dir`).
SHARDS_KIND = "index-shards"
_SHARD_FILE = re.compile(r"^shard-\d{6,}\.(?:npz|json)$")


def shards_dir(out: Path) -> Path:
    """The shards folder of the index folder ``out``: ``out`` with ``.shards`` added, beside it.

    >>> shards_dir(Path("/data/idx")).as_posix()
    '/data/idx.shards'
    """
    return out.with_name(out.name + ".shards")


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` rows of each shard of ``n`` cases.

    >>> shard_ranges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    return [(start, min(n, start + shard_size)) for start in range(0, n, shard_size)]


def model_identity(info: Mapping) -> str:
    """sha256 of what makes a model's vectors (from :func:`~dermretr.index.model_info`), for shard keys.

    The config hash (architecture and image size), the weights sha256, the dermretr version and the
    shard format; where the checkpoint file lies is left out (a moved checkpoint encodes the same).

    >>> a = {"config": {"image_size": 64}, "config_hash": "c", "weights_sha256": "w"}
    >>> model_identity(a) == model_identity(dict(a, checkpoint_path="/elsewhere.pt"))
    True
    >>> model_identity(a) == model_identity(dict(a, weights_sha256="v"))
    False
    """
    config = info.get("config") or {}
    parts = {"format": SHARD_FORMAT, "dermretr": __version__, "config_hash": info.get("config_hash"),
             "weights_sha256": info.get("weights_sha256"), "image_size": config.get("image_size")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def shard_key(model_id: str, start: int, stop: int, case_ids: Sequence[str], paths: Sequence[str],
              digests: Sequence[str]) -> str:
    """sha256 of a shard's inputs: the model identity, its rows, and per row the case id, path and image sha256.

    >>> k = shard_key("m", 0, 1, ["c0"], ["/a.jpg"], ["ab" * 32])
    >>> k == shard_key("m", 0, 1, ["c0"], ["/a.jpg"], ["cd" * 32]), len(k)
    (False, 64)
    """
    h = hashlib.sha256(f"dermretr-shard {SHARD_FORMAT}\n{model_id}\n{start} {stop}\n".encode())
    for case_id, path, digest in zip(case_ids, paths, digests, strict=True):
        h.update(f"{case_id}\t{path}\t{digest}\n".encode())
    return h.hexdigest()


def hash_shard(model_id: str, start: int, stop: int, case_ids: Sequence[str], paths: Sequence[str]
               ) -> tuple[str, str]:
    """``(key, error)`` of one shard: its :func:`shard_key` after reading every image's bytes once.

    ``error`` is ``""``, or the one-line message of an unreadable image (naming it and its case; the
    key is then ``""``).  Errors come back as data, not raised, so that a Ray worker hands the driver
    the message as it was and not inside Ray's wrapping.

    >>> import tempfile, pathlib
    >>> img = pathlib.Path(tempfile.mkdtemp()) / "a.jpg"
    >>> _ = img.write_bytes(b"not really a jpeg")
    >>> key, error = hash_shard("m", 0, 1, ["c0"], [str(img)])
    >>> len(key), error
    (64, '')
    >>> hash_shard("m", 1, 2, ["c1"], [str(img.with_name("gone.jpg"))])[1].startswith("case image: cannot read")
    True
    """
    case_ids, paths = [str(c) for c in case_ids], [str(p) for p in paths]
    digests = []
    for case_id, path in zip(case_ids, paths, strict=True):
        try:
            digests.append(file_sha256(path))
        except DermretrError as exc:
            return "", f"case image: {exc} (case {case_id!r})"
    return shard_key(model_id, int(start), int(stop), case_ids, paths, digests), ""


def _npz_shapes(npz: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The shape and dtype of each array in an ``.npz`` file, read from the headers only (no data is read)."""
    out = {}
    with zipfile.ZipFile(npz) as z:
        for name in z.namelist():
            with z.open(name) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
                out[name] = (tuple(shape), np.dtype(dtype))
    return out


class ShardStore:
    """The shards folder of one index being encoded (see the module docstring for its layout).

    Parameters
    ----------
    folder : Path
        The folder, normally :func:`shards_dir` of the index folder.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"ShardStore({str(self.folder)!r})"

    def claim(self) -> ShardStore:
        """Create the folder (or take it back from an earlier run) and remove dead runs' temporaries.

        A folder dermretr did not mark as a shards folder is refused with an
        :class:`~dermretr.OutputError` (nothing in it is touched).
        """
        try:
            _io.claim_dir(self.folder, SHARDS_KIND, option="--out")
        except OutputError as exc:
            raise OutputError(f"the shards folder beside the index: {exc}") from None
        _io.clean_stale(self.folder)
        return self

    def _files(self, i: int) -> tuple[Path, Path]:
        return self.folder / f"shard-{i:06d}.npz", self.folder / f"shard-{i:06d}.json"

    def read(self, i: int, rows: int, dim: int, n_masks: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The float32 ``(global [rows, dim], local [rows, n_masks, dim] or None)`` of shard ``i``, checked."""
        npz, _ = self._files(i)
        try:
            with np.load(npz, allow_pickle=False) as f:
                g = np.asarray(f["global"])
                local = np.asarray(f["local"]) if n_masks else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DermretrError(f"shard {npz} cannot be read ({exc}); delete it and run again to re-encode "
                                "its cases") from None
        if g.shape != (rows, dim) or g.dtype != np.float32 or (
                local is not None and (local.shape != (rows, n_masks, dim) or local.dtype != np.float32)):
            raise DermretrError(f"shard {npz} holds arrays of other shapes than its {rows} cases need; delete it "
                                "and run again to re-encode its cases")
        if not all_finite(g) or (local is not None and not all_finite(local)):
            raise DermretrError(f"shard {npz} holds NaN or infinite values; check the model (or delete the shard "
                                "and run again)")
        return g, local

    def stored_key(self, i: int, rows: int, dim: int, n_masks: int) -> str:
        """The key shard ``i`` was written with, when it is there whole with the shapes ``rows`` need (else ``""``).

        A run hands it to the worker of the shard, which encodes the shard only when the key of its
        inputs now is another (:meth:`fresh` is the same check against a known key).
        """
        _, meta_file = self._files(i)
        try:
            key = json.loads(meta_file.read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            return ""
        return key if isinstance(key, str) and key and self.fresh(i, key, rows, dim, n_masks) else ""

    def fresh(self, i: int, key: str, rows: int, dim: int, n_masks: int) -> bool:
        """Shard ``i`` is written, its key is ``key``, and its file has the size written and the shapes ``rows`` need.

        Only the headers are read here; :meth:`read` checks the values when the index is written.
        """
        npz, meta_file = self._files(i)
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT or meta.get("key") != key:
            return False
        want = {"global.npy": (rows, dim)} | ({"local.npy": (rows, n_masks, dim)} if n_masks else {})
        try:
            if npz.stat().st_size != meta.get("npz_bytes"):
                return False
            return _npz_shapes(npz) == {name: (shape, np.dtype(np.float32)) for name, shape in want.items()}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return False

    def write(self, i: int, key: str, start: int, stop: int, g: np.ndarray, local: np.ndarray | None) -> None:
        """Write shard ``i`` (rows ``start:stop``) atomically: the arrays, then the JSON with its key."""
        npz, meta_file = self._files(i)
        arrays: dict[str, Any] = {"global": np.ascontiguousarray(g, dtype=np.float32)}
        if local is not None:
            arrays["local"] = np.ascontiguousarray(local, dtype=np.float32)
        with _io.atomic_path(npz) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no suffix
            np.savez(f, **arrays)
        meta = {"format": SHARD_FORMAT, "key": key, "start": int(start), "stop": int(stop),
                "shape": list(arrays["global"].shape), "n_masks": 0 if local is None else int(local.shape[1]),
                "npz_bytes": npz.stat().st_size, "written_by": f"dermretr {__version__}"}
        with _io.atomic_path(meta_file) as tmp:
            tmp.write_text(json.dumps(meta, indent=1) + "\n")

    def shard_files(self) -> list[Path]:
        """The shard files in the folder (``[]`` when it is missing)."""
        try:
            return sorted(p for p in self.folder.iterdir() if _SHARD_FILE.match(p.name))
        except OSError:
            return []

    def remove(self) -> bool:
        """Delete the shard files, the marker and the folder; True when it is gone.

        Only what dermretr writes here is deleted, and only in a folder marked as a shards folder; a
        folder still holding anything else is left (with an :class:`~dermretr.index.IndexWarning`).
        """
        if _io.owner_kind(self.folder) != SHARDS_KIND:
            return False
        _io.clean_stale(self.folder, warn=False)
        with contextlib.suppress(OSError):
            for entry in self.shard_files():
                if entry.is_file() and not entry.is_symlink():
                    entry.unlink()
        try:
            left = sorted(p.name for p in self.folder.iterdir() if p.name != _io.OWNER_FILE)
        except OSError:
            left = []
        if left:
            warnings.warn(f"left the shards folder {self.folder} in place: it holds files dermretr did not write "
                          f"({', '.join(left[:3])}{' ...' if len(left) > 3 else ''})", IndexWarning, stacklevel=3)
            return False
        try:
            (self.folder / _io.OWNER_FILE).unlink(missing_ok=True)
            self.folder.rmdir()
        except OSError:
            return False
        return True
