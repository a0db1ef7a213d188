"""The run folder: what it holds (a finished epoch, a config to resume), and whether it can be written."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from .._errors import DermretrError, OutputError
from .._io import claim_dir, clean_stale, os_error
from ._config import RESUME_KEYS_FREE, TrainConfig, read_run_config

__all__ = ["check_resume", "is_run_folder", "completed", "check_writable", "prepare_run", "run_data"]


def check_resume(run: Path, cfg: TrainConfig) -> dict:
    saved_file = run / "config.json"
    if not saved_file.is_file():
        raise DermretrError(f"cannot resume: {saved_file} not found (start the run without --resume)")
    saved = asdict(read_run_config(saved_file))
    now = asdict(cfg)
    diff = sorted(k for k in now if k not in RESUME_KEYS_FREE and saved.get(k) != now.get(k))
    if diff:
        details = ", ".join(f"{k}: run has {saved.get(k)!r}, you asked {now.get(k)!r}" for k in diff)
        hint = (" (a run of an older dermretr: resume it with --no-text-skip)"
                if "text_skip" in diff and not saved["text_skip"] else "")
        raise DermretrError(f"cannot resume {run}: the config differs ({details}); use the same settings "
                            f"or another --out{hint}")
    return saved


def is_run_folder(path: Path) -> bool:
    """A run folder of an older dermretr (no ownership marker): its config.json names a model and a backbone."""
    try:
        values = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(values, dict) and "model" in values and "backbone" in values


def run_data(run_dir: str | os.PathLike) -> dict | None:
    """The data a run was trained on, from its ``config.json``: ``data``, ``data_options`` and ``data_split``.

    ``data_options`` is None for a run of an older dermretr (it loaded the data with the loader's
    defaults, but nothing says so), ``data_split`` None when not recorded (see
    :func:`dermretr.data.split_source`).  None when the folder has no readable config.json with a
    ``data`` spec: evaluating a run needs only its checkpoint, so this is never an error.

    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (run / "config.json").write_text('{"data": "derm7pt:/d", "data_options": {"image": "clinic"}}')
    >>> run_data(run)
    {'data': 'derm7pt:/d', 'data_options': {'image': 'clinic'}, 'data_split': None}
    >>> run_data(run / "nothing") is None
    True
    """
    try:
        values = json.loads((Path(run_dir).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict) or not isinstance(values.get("data"), str):
        return None
    options, split = values.get("data_options"), values.get("data_split")
    return {"data": values["data"], "data_options": options if isinstance(options, dict) else None,
            "data_split": split if isinstance(split, dict) else None}


def completed(run: Path) -> str | None:
    """What in ``run`` shows that an epoch was completed (None when nothing does)."""
    for rel in ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl"):
        file = run / rel
        try:
            if file.exists() and (rel != "metrics.jsonl" or file.stat().st_size > 0):
                return rel
        except OSError:
            return rel
    return None


def check_writable(folder: Path) -> None:
    """Create and remove a temporary file in ``folder``: an OutputError now rather than after the first epoch."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".write-check.dermretr-{os.getpid()}-", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise os_error(exc, folder) from None


def prepare_run(run: Path, config: TrainConfig) -> Path:
    """Check (and mark) the run folder ``run`` before anything is loaded; its ``checkpoints`` folder.

    A folder of the user's, a file, an unwritable place, a run to resume
    whose config differs, or a finished run without ``resume`` are refused
    here, before the slow part; temporaries of a killed run are removed.
    """
    claim_dir(run, "run", option="--out", recognise=is_run_folder)
    check_writable(run)
    ckpt_dir = run / "checkpoints"
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise OutputError(f"{ckpt_dir} is a file, not a folder; choose another --out")
    if ckpt_dir.is_dir():
        check_writable(ckpt_dir)
    clean_stale(run)
    clean_stale(ckpt_dir)
    if config.resume:
        check_resume(run, config)
        if not (ckpt_dir / "last.pt").exists() and (ckpt_dir / "best.pt").exists():
            raise DermretrError(f"cannot resume {run}: checkpoints/last.pt is missing (only best.pt is there), so "
                                "training cannot continue; choose another --out (best.pt is kept)")
    else:
        done = completed(run)
        if done is not None:
            raise DermretrError(f"{run} already holds a run; pass --resume to continue it or choose another --out "
                                f"(it has {done})")
    return ckpt_dir
