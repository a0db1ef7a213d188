"""The run's files after each epoch, read back on resume and repaired after a kill.

The files are ``last.pt``, ``metrics.jsonl``, ``best.pt`` and the training curve (see :mod:`dermretr.train`
for their write order and the invariant a kill leaves).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .._errors import DermretrError
from .._io import atomic_path, save_figure
from ..models.backbones import read_weights, weights_mismatch
from ..models.retriever import CHECKPOINT_FORMAT, Retriever, save_checkpoint

__all__ = ["write_state", "metrics_text", "write_metrics", "write_best", "write_curve", "curve", "read_state",
           "best_epoch", "repair", "STATE_KEYS"]


def write_state(path: Path, model, optimizer, scheduler, scaler, epoch: int, history: list, best: dict) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,  # so that Retriever.load reads last.pt too
        "state_dict": model.state_dict(),
        "config": model.config(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "history": json.dumps(history),
        "best": json.dumps(best),
    }
    save_checkpoint(state, path)


def metrics_text(history: list[dict]) -> str:
    return "".join(json.dumps(h) + "\n" for h in history)


def write_metrics(run: Path, history: list[dict]) -> None:
    with atomic_path(run / "metrics.jsonl") as tmp:
        tmp.write_text(metrics_text(history))


def write_best(model: Retriever, path: Path, best: dict) -> None:
    model.save(path, extra={"epoch": best["epoch"], "metric": best["metric"], "value": best["value"]})


def write_curve(run: Path, history: list[dict], metric: str) -> None:
    save_figure(curve(history, metric), run / "training_curve.png")


STATE_KEYS = ("state_dict", "optimizer", "scheduler", "scaler", "epoch", "history", "best")


def read_state(path: Path, model, optimizer, scheduler, scaler) -> tuple[int, list[dict], dict]:
    """Load ``last.pt`` into the model and the optimiser etc.; its epoch, history and best record."""
    expected = "a training checkpoint (checkpoints/last.pt written by `dermretr train`)"

    def fail(reason: str) -> DermretrError:
        return DermretrError(f"cannot resume from {path}: {reason}; expected {expected} (use another --out to start "
                             "a new run)")

    state = read_weights(path, expected)
    if not isinstance(state, dict):
        raise fail(f"it holds a {type(state).__name__}")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise fail(f"it lacks {', '.join(missing)}")
    if not isinstance(state["state_dict"], dict):
        raise fail("its state_dict is not a dict of weights")
    problem = weights_mismatch(model, state["state_dict"])
    if problem:
        raise fail(f"its weights do not fit this run's model: {problem}")
    try:
        epoch = int(state["epoch"])
        history = json.loads(state["history"])
        best = json.loads(state["best"])
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history) \
                or not isinstance(best, dict) or epoch < 1 or [h.get("epoch") for h in history] != list(
                    range(1, epoch + 1)):
            raise ValueError("history and epoch do not agree")
    except (TypeError, ValueError) as exc:
        raise fail(f"its epoch, history or best record is damaged ({exc})") from None
    model.load_state_dict(state["state_dict"], strict=True)
    for name, part in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        try:
            part.load_state_dict(state[name])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            raise fail(f"its {name} state does not fit this run ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:150] if str(exc) else ''})") from None
    return epoch, history, best


def best_epoch(path: Path) -> int | None:
    """The epoch a ``best.pt`` holds (None when it is missing or unreadable)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return int(payload["extra"]["epoch"])
    except Exception:  # missing, damaged or foreign: treated as not holding the best epoch
        return None


def repair(run: Path, model: Retriever, epoch: int, history: list[dict], best: dict, metric: str) -> None:
    """Bring ``metrics.jsonl`` and ``best.pt`` up to ``last.pt`` after a run was killed between its writes.

    ``last.pt`` gives ``epoch``, ``history`` and ``best`` (see :mod:`dermretr.train`).
    """
    file = run / "metrics.jsonl"
    try:
        current = file.read_text(encoding="utf-8") if file.is_file() else None
    except (OSError, UnicodeDecodeError):
        current = None
    stale = current != metrics_text(history)
    if stale:
        write_metrics(run, history)
    curve = run / "training_curve.png"
    try:
        old_curve = curve.stat().st_mtime_ns < (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    except OSError:
        old_curve = True
    if history and (stale or old_curve):
        write_curve(run, history, metric)
    best_file = run / "checkpoints" / "best.pt"
    if best and best_epoch(best_file) != best.get("epoch"):
        if best.get("epoch") == epoch:
            write_best(model, best_file, best)
        else:
            warnings.warn(f"{best_file} does not hold epoch {best.get('epoch')}, the best one recorded in last.pt "
                          "(was it removed or replaced?); it is written again when an epoch improves on "
                          f"{best.get('metric')} = {best.get('value')}", UserWarning, stacklevel=3)



def curve(history: list[dict], metric: str) -> Figure:
    # fixed margins, not a layout engine: the curve is drawn after every epoch, and this is a third cheaper
    fig = Figure(figsize=(8, 3.2))
    fig.subplots_adjust(left=0.075, right=0.985, bottom=0.15, top=0.91, wspace=0.22)
    ax1, ax2 = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h["loss"] for h in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", title="Loss")
    for key in (metric, "recall@1", "recall@10"):
        if key in history[0]:
            ax2.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax2.set(xlabel="epoch", ylabel="validation", title="Validation (case search)", ylim=(0, 1))
    if ax2.get_legend_handles_labels()[0]:  # a run without validation cases has no curve to name
        ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    return fig
