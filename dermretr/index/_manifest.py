"""The index manifest: what a new index records, and reading one back with every field checked."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from .._checks import is_int, is_real, show
from .._errors import DermretrError
from ._common import FAISS_FILE, INDEX_FORMAT, INDEX_KINDS, MANIFEST, PARAMS, check_path, exists

__all__ = ["new_manifest", "read_manifest", "check_manifest", "case_ids_sha256", "read_error"]


def new_manifest(kind: str, n: int, d: int, n_masks: int, alpha: float, params: dict[str, Any],
                 model_info: Mapping | None) -> dict[str, Any]:
    """The manifest of an index just built (the columns, case-id hash and file sizes are added on save)."""
    return {
        "format": INDEX_FORMAT,
        "kind": kind,
        "count": n,
        "dim": d,
        "n_masks": n_masks,
        "alpha": alpha,
        "metric": "inner_product",
        "local_dtype": "float16" if n_masks else None,
        "params": params,
        "model": dict(model_info) if model_info is not None else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dermretr_version": __version__,
    }


def case_ids_sha256(case_ids: Iterable) -> str:
    h = hashlib.sha256()
    for case_id in case_ids:
        h.update(str(case_id).encode())
        h.update(b"\n")
    return h.hexdigest()


def read_error(file: Path, exc: OSError) -> DermretrError:
    """A file of an index that exists but cannot be read (permissions, disk)."""
    return DermretrError(f"cannot read {file}: {exc.strerror or exc}; check that it is readable (permissions, "
                         "disk)")


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of an index folder, checked for a format this version reads and for its fields' values."""
    path = check_path(path, "index folder")
    rebuild = f"rebuild it with `dermretr index --run RUN_DIR --data SPEC --out {path} --overwrite`"
    if not exists(path):
        raise DermretrError(f"index folder not found: {path}")
    if not path.is_dir():
        raise DermretrError(f"{path} is a file, not an index folder: give the folder `dermretr index` wrote")
    file = path / MANIFEST
    try:
        if file.stat().st_size > 16 << 20:
            raise DermretrError(f"index {path} is damaged: {MANIFEST} is too large to be an index manifest "
                                f"({file.stat().st_size} bytes); {rebuild}")
        text = file.read_bytes()
    except FileNotFoundError:
        if (path / FAISS_FILE).is_file():
            raise DermretrError(f"{path} has no {MANIFEST}: it is an index from an older dermretr format; "
                                f"{rebuild}") from None
        raise DermretrError(f"{path} is not a dermretr index (no {MANIFEST}); give the folder that "
                            "`dermretr index --out` wrote") from None
    except IsADirectoryError:
        raise DermretrError(f"index {path} is damaged: {MANIFEST} is a folder; {rebuild}") from None
    except OSError as exc:
        raise read_error(file, exc) from None
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DermretrError(f"index {path} is damaged: {MANIFEST} is not valid JSON ({reason}); "
                            f"{rebuild}") from None
    if not isinstance(manifest, dict):
        raise DermretrError(f"index {path} is damaged: {MANIFEST} holds {show(manifest, 30)} instead of a "
                            f"JSON object; {rebuild}")
    fmt = manifest.get("format")
    if not is_int(fmt):
        raise DermretrError(f"{file} has no format version: it is from an older dermretr format; {rebuild}")
    if fmt > INDEX_FORMAT:
        raise DermretrError(f"{path} was written by a newer dermretr (index format {fmt}; this version reads "
                            f"format {INDEX_FORMAT}); upgrade dermretr")
    if fmt < INDEX_FORMAT:
        raise DermretrError(f"{path} is an index of an older format ({fmt}; this version reads format "
                            f"{INDEX_FORMAT}); {rebuild}")
    missing = [key for key in ("kind", "count", "dim", "n_masks", "alpha") if key not in manifest]
    if missing:
        raise DermretrError(f"{file} is incomplete (missing {missing}); {rebuild}")
    check_manifest(manifest, path, rebuild)
    return manifest


def check_manifest(manifest: dict, path: Path, rebuild: str) -> None:
    """Types and ranges of a manifest's fields (a hand-edited or damaged one is a clear error, not a traceback)."""

    def bad(field: str, value: Any, expected: str) -> DermretrError:
        return DermretrError(f"index {path} is damaged: {MANIFEST} field {field!r} is {show(value)} (expected "
                             f"{expected}); {rebuild}")

    def optional_str(value: Any) -> bool:
        return value is None or isinstance(value, str)

    kind = manifest["kind"]
    if not isinstance(kind, str) or kind not in INDEX_KINDS:
        raise bad("kind", kind, f"one of {', '.join(INDEX_KINDS)}")
    for field, low in (("count", 1), ("dim", 1), ("n_masks", 0)):
        value = manifest[field]
        if not is_int(value) or value < low:
            raise bad(field, value, "a positive integer" if low else "an integer >= 0")
    alpha = manifest["alpha"]
    if not is_real(alpha) or not 0.0 <= alpha <= 1.0:
        raise bad("alpha", alpha, "a number in [0, 1]")
    params = manifest.get("params", {})
    if not isinstance(params, dict):
        raise bad("params", params, "a JSON object")
    for key in PARAMS:
        if key in params and (not is_int(params[key]) or params[key] < 1):
            raise bad(f"params.{key}", params[key], "a positive integer")
    columns = manifest.get("columns", {})
    if not isinstance(columns, dict):
        raise bad("columns", columns, "a JSON object of column name -> dtype name")
    for column, dtype in columns.items():
        if not isinstance(dtype, str):
            raise bad(f"columns.{column}", dtype, "a dtype name")
    model = manifest.get("model")
    if model is not None:
        if not isinstance(model, dict):
            raise bad("model", model, "a JSON object or null")
        for key in ("config_hash", "weights_sha256", "checkpoint_path", "checkpoint_sha256", "pretrained"):
            if not optional_str(model.get(key)):
                raise bad(f"model.{key}", model.get(key), "a string or null")
        if model.get("config") is not None and not isinstance(model["config"], dict):
            raise bad("model.config", model["config"], "a JSON object or null")
    files = manifest.get("files")
    if files is not None:
        if not isinstance(files, dict):
            raise bad("files", files, "a JSON object of file name -> size in bytes")
        for name, size in files.items():
            if not is_int(size) or size < 0:
                raise bad(f"files.{name}", size, "a size in bytes")
    if not optional_str(manifest.get("case_ids_sha256")):
        raise bad("case_ids_sha256", manifest["case_ids_sha256"], "a string")
