"""The entry points: :func:`fit` trains into a locked run folder; :func:`fit_or_load` trains, resumes or reuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from .._errors import DermretrError
from .._io import OWNER_FILE, claim_dir, exclusive
from ..models.backbones import read_weights
from ..models.retriever import Retriever
from ._checkpoints import best_epoch, metrics_text
from ._config import RESUME_KEYS_FREE, TrainConfig, read_run_config
from ._distributed import join, leave, main_only
from ._loop import TrainResult, train_run
from ._runs import is_run_folder

__all__ = ["fit", "fit_or_load"]


def fit(config: TrainConfig, on_epoch_end: Callable[[dict], None] | None = None, *,
        cases: pd.DataFrame | None = None) -> TrainResult:
    """Train a retriever as described by ``config``; see :mod:`dermretr.train`.

    ``on_epoch_end(record)`` is called after each epoch's checkpoint is written
    (it may raise, e.g. to stop a run early; the run resumes from there).
    ``cases`` replaces the table loaded from ``config.data`` (validated here), for
    splits that a benchmark makes itself, such as the folds of a cross-validation;
    ``config.data`` still names where the cases come from (and DermSynth's
    modification triplets).  ``config.data_options`` are the loader's options
    (``-o KEY=VALUE``).  config.json records where the split came from as
    ``data_split`` (:func:`dermretr.data.split_source`; ``{"kind": "caller"}``
    with ``cases``).
    """
    config.check()
    if cases is not None:
        from ..data.cases import validate_cases

        if not isinstance(cases, pd.DataFrame):
            raise DermretrError(f"cases must be a case table (pandas DataFrame), got {type(cases).__name__}")
        cases = validate_cases(cases)
    run = Path(config.out).expanduser().absolute()
    cluster, device = join(config.device, config.batch_size)  # under torchrun: the processes of the run
    try:
        with ExitStack() as stack:
            created = main_only(cluster, _claim, run, stack)
            try:
                return train_run(config, run, on_epoch_end, cases, cluster, device)
            except BaseException:
                if created and cluster.main:  # nothing of the run was written: leave no empty folder behind
                    try:
                        if {p.name for p in run.iterdir()} <= {OWNER_FILE}:
                            (run / OWNER_FILE).unlink(missing_ok=True)
                            run.rmdir()
                    except OSError:
                        pass
                raise
    finally:
        leave(cluster)


def _claim(run: Path, stack: ExitStack) -> bool:
    """Rank 0 checks and locks the run folder (a file, a user's folder: refused); whether it is new."""
    claim_dir(run, "run", option="--out", recognise=is_run_folder, create=False)
    stack.enter_context(exclusive(run, "--out"))
    return not run.exists()


def fit_or_load(config: TrainConfig, on_epoch_end: Callable[[dict], None] | None = None, *,
                cases: pd.DataFrame | None = None) -> TrainResult:
    """Train ``config`` into ``config.out``, or reuse (or continue) the run with the same settings already there.

    * No run in ``config.out`` (a missing or empty folder): :func:`fit` trains one.
    * A run with the same settings (all but ``epochs``, ``resume``, ``progress``,
      ``device``, ``num_workers`` and ``out``) that has completed ``config.epochs``
      epochs: reused as it is, without loading the data; the result holds the
      weights :func:`fit` would return (``checkpoints/last.pt``) and the run's
      history and best record.
    * The same settings, fewer epochs done (an interrupted run, or more epochs
      asked): resumed, as ``fit`` with ``resume=True``.
    * A run with other settings: a :class:`~dermretr.DermretrError` naming the
      differences; nothing is changed.  A folder that is not a run is refused
      as :func:`fit` refuses it.

    ``config.resume`` is ignored (it is decided here).  Notebooks call this
    to train a model once and reuse it on every later run of the notebook.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.data.synth import generate
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> root = generate(tmp / "ds", n_cases=40, image_size=64, workers=1, progress=False)
    >>> cfg = TrainConfig(data=f"synthetic:{root}", out=str(tmp / "run"), epochs=1, batch_size=8, image_size=64,
    ...                   progress=False)
    >>> first = fit_or_load(cfg)  # trains
    >>> again = fit_or_load(cfg)  # reuses: nothing is trained
    >>> again.history == first.history
    True
    """
    run = Path(config.out).expanduser().absolute() if isinstance(config.out, str) else None
    if run is None or not (run / "config.json").is_file():
        return fit(replace(config, resume=False), on_epoch_end, cases=cases)
    config.check()
    saved = asdict(read_run_config(run / "config.json"))
    now = asdict(config)
    diff = sorted(k for k in now if k not in RESUME_KEYS_FREE and saved.get(k) != now.get(k))
    if diff:
        details = ", ".join(f"{k}: run has {saved.get(k)!r}, asked {now.get(k)!r}" for k in diff)
        raise DermretrError(f"{run} holds a run trained with other settings ({details}); choose another out "
                            "folder, or the run's settings to reuse it (nothing was changed)")
    finished = _finished_run(run, config.epochs)
    if finished is None:
        return fit(replace(config, resume=True), on_epoch_end, cases=cases)
    history, best = finished
    retriever = Retriever.load(run / "checkpoints" / "last.pt", device=config.device)
    return TrainResult(retriever=retriever, history=history, best=best, run_dir=Path(config.out).expanduser())


def _finished_run(run: Path, epochs: int) -> tuple[list[dict], dict] | None:
    """History and best record of a run that completed ``epochs`` epochs and whose files agree with ``last.pt``.

    None otherwise: :func:`fit` continues or repairs it.
    """
    last = run / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    state = read_weights(last, "a training checkpoint (checkpoints/last.pt written by `dermretr train`)")
    if not isinstance(state, dict):
        return None  # fit says what is wrong with it
    try:
        done, history, best = int(state["epoch"]), json.loads(state["history"]), json.loads(state["best"])
        metrics = (run / "metrics.jsonl").read_text(encoding="utf-8")
    except (KeyError, TypeError, ValueError, OSError):
        return None
    if not isinstance(history, list) or not isinstance(best, dict):
        return None
    if done < epochs or metrics != metrics_text(history) or best_epoch(run / "checkpoints" / "best.pt") != best.get(
            "epoch") or not (run / "training_curve.png").is_file():
        return None
    return history, best
