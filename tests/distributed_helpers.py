"""Processes for the data-parallel training tests: spawned with torch.multiprocessing, joined by gloo on CPU.

The functions here run in the spawned children (which import this module by name), so they take plain
arguments and report through files.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(fn, world: int, *args) -> None:
    """Run ``fn(rank, world, port, *args)`` in ``world`` processes that can join a gloo process group."""
    mp.spawn(fn, args=(world, free_port(), *args), nprocs=world, join=True)


def _environment(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # two processes on two cores


def without_dropout() -> None:
    """Make dropout the identity, so that a run draws nothing at random but its batches (no augmentation either)."""
    import torch.nn.modules.dropout as dropout_module

    class _NoDropout:
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def dropout(x, *args, **kwargs):
            return x

    dropout_module.F = _NoDropout()  # type: ignore[assignment]


def _spy_writes(run: Path, log: list[str]) -> None:
    """Record every file-system change this process makes in ``run`` or beside it (its lock, its temporaries)."""
    run = run.absolute()

    def ours(path) -> bool:
        p = Path(os.fspath(path)).absolute()
        return p == run or run in p.parents or (p.parent == run.parent and run.name in p.name)

    def wrap(owner, attr: str, writes_only: bool = False) -> None:
        original = getattr(owner, attr)

        def spy(*args, **kwargs):
            paths = [a for a in (*args[:2], kwargs.get("dir"), kwargs.get("file")) if isinstance(a, (str, os.PathLike))]
            mode = kwargs.get("mode", args[1] if len(args) > 1 else "r")
            if isinstance(mode, int):  # os.open's flags
                mode = "w" if mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) else "r"
            if any(ours(p) for p in paths) and (not writes_only or any(c in mode for c in "wax+")):
                log.append(f"{attr} {paths[0]}")
            return original(*args, **kwargs)
        setattr(owner, attr, spy)

    for owner in (builtins, io, os):  # pathlib opens with io.open, locks with os.open
        wrap(owner, "open", writes_only=True)
    for attr in ("replace", "rename", "mkdir", "makedirs", "unlink", "remove", "rmdir"):
        wrap(os, attr)
    wrap(tempfile, "mkstemp")


class Stop(Exception):
    """Raised after an epoch to interrupt a run as a kill would (the run continues with resume=True)."""


def stop_after(epoch: int):
    def on_epoch_end(record: dict) -> None:
        if record["epoch"] == epoch:
            raise Stop(epoch)
    return on_epoch_end


def train(rank: int, world: int, port: int, config_values: dict, report: str, no_dropout: bool,
          stop: int | None = None) -> None:
    """Train ``config_values`` as process ``rank`` of ``world`` (interrupted after epoch ``stop``); write its
    history and the writes it made."""
    _environment(rank, world, port)
    if no_dropout:
        without_dropout()
    from dermretr.train import TrainConfig, fit

    writes: list[str] = []
    _spy_writes(Path(config_values["out"]), writes)
    try:
        result = fit(TrainConfig(**config_values), None if stop is None else stop_after(stop))
    except Stop:
        Path(f"{report}.rank{rank}.json").write_text(json.dumps({"history": None, "writes": writes}))
        return
    state = {k: v.detach().float().cpu() for k, v in result.retriever.state_dict().items()}
    torch.save(state, f"{report}.rank{rank}.pt")
    Path(f"{report}.rank{rank}.json").write_text(json.dumps({"history": result.history, "writes": writes}))


def gather_gradients(rank: int, world: int, port: int, sizes: list[int], report: str) -> None:
    """One DDP backward pass of a contrastive loss over gathered features, in float64: its gradients."""
    _environment(rank, world, port)
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from dermretr.train._distributed import Cluster

    dist.init_process_group("gloo")
    try:
        cluster = Cluster(world=world, rank=rank, local_rank=rank, started=True)
        model = _ToyModel(sizes, cluster)
        ddp = DistributedDataParallel(model, device_ids=None)
        x, labels = toy_batch(sum(sizes))
        lo = sum(sizes[:rank])
        loss = ddp(x[lo:lo + sizes[rank]], labels)
        loss.backward()
        grads = {n: p.grad.tolist() for n, p in model.named_parameters()}
        Path(f"{report}.rank{rank}.json").write_text(json.dumps({"loss": float(loss.detach()), "grads": grads}))
    finally:
        dist.destroy_process_group()


def toy_batch(n: int) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), ["a", "b", "a", "c", "b", "a", "c"][:n]


class _ToyModel(torch.nn.Module):
    """Features of a linear map, gathered over the processes; the loss of the whole batch with a temperature."""

    def __init__(self, sizes: list[int], cluster):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(6, 4, dtype=torch.float64)
        self.logit_scale = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
        self.sizes, self.cluster = sizes, cluster

    def forward(self, x: torch.Tensor, labels: list[str]) -> torch.Tensor:
        from dermretr.models.losses import group_positives, multi_positive_infonce
        from dermretr.train._distributed import gather

        f = torch.nn.functional.normalize(self.proj(x), dim=-1)
        f = gather(f, self.sizes, self.cluster)
        pos, valid = group_positives(labels)
        return multi_positive_infonce(self.logit_scale.exp() * (f @ f.T), pos, valid)


def toy_model(sizes: list[int]):
    from dermretr.train._distributed import Cluster

    return _ToyModel(sizes, Cluster())
