"""Data-parallel training with :mod:`torch.distributed`: the processes of a run, their batches and their gathers.

``dermretr train`` (or :func:`~dermretr.train.fit`) started by ``torchrun --nproc_per_node N`` finds
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment and trains data-parallel:

* :func:`join` starts the process group (NCCL on CUDA, gloo on CPU; each process takes the GPU of its
  ``LOCAL_RANK``) unless the caller already started one, and :func:`leave` ends what it started.
* ``batch_size`` stays the **global** batch: :class:`GlobalBatches` draws the epoch's order from the same
  seeded sampler on every process (class-balanced or not, as in one process) and gives each process its slice
  of each global batch, so the global batches are those of a one-process run and a run can be resumed with
  another number of processes.  ``torch.utils.data.DistributedSampler`` cannot do this: it has no weights, and
  it splits the data, not each batch.
* :func:`gather` concatenates the processes' features of a batch in rank order with gradients (the backward
  pass sums every process's gradient of the slice, as ``torch.distributed.nn.all_gather`` does), so every
  process computes the contrastive loss over the whole global batch, all of its negatives included, and
  DistributedDataParallel's averaging gives exactly the gradient of one process on the global batch.
* :func:`main_only` runs what writes (the run folder, checkpoints, metrics, the figure) and the validation on
  rank 0 only, and gives every process its result, or stops every process with rank 0's error.

Examples
--------
>>> cluster = Cluster()  # a plain, one-process run
>>> cluster.world, cluster.main
(1, True)
>>> split_sizes(10, 3)  # a global batch of 10 over 3 processes
[4, 3, 3]
>>> main_only(cluster, lambda: "written")
'written'
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .._device import resolve_device
from .._errors import DermretrError

__all__ = ["Cluster", "RankStopped", "join", "leave", "main_only", "split_sizes", "gather", "gather_features",
           "GlobalBatches", "check_batch", "environment_world"]

T = TypeVar("T")

#: How long a process waits for the others at one exchange (rank 0 validates and writes while they wait).
TIMEOUT = datetime.timedelta(hours=2)


class RankStopped(DermretrError):
    """Raised on the other processes when rank 0 failed (rank 0 says why; the command line prints nothing more)."""


@dataclass(frozen=True)
class Cluster:
    """The processes of a run: how many (``world``), which one this is, and whether :func:`join` started them."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    started: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise DermretrError(f"environment variable {name}={value!r} is not an integer; torchrun sets it "
                            "(unset it to train in one process)") from None


def environment_world() -> tuple[int, int, int]:
    """``(WORLD_SIZE, RANK, LOCAL_RANK)`` as torchrun sets them (``(1, 0, 0)`` when it did not), checked."""
    world, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DermretrError(f"WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local} do not describe a process of a "
                            "run; start the processes with torchrun (or unset them to train in one process)")
    return world, rank, local


def check_batch(batch_size: int, world: int) -> None:
    """Every process needs cases and modification triplets in each batch: at least 2 per process."""
    if world > 1 and batch_size < 2 * world:
        raise DermretrError(f"batch size {batch_size} is split over {world} processes: use --batch-size "
                            f"{2 * world} or more (at least 2 cases per process), or fewer processes")


def join(device: str, batch_size: int) -> tuple[Cluster, torch.device]:
    """The run's processes and this process's device; starts the process group when torchrun asked for one.

    ``device`` is TrainConfig's: with several processes ``auto`` and ``cuda`` mean the GPU of this process's
    ``LOCAL_RANK`` (``cuda:N`` is refused: torchrun gives each process its GPU), ``cpu`` trains on CPU with gloo.
    """
    if dist.is_available() and dist.is_initialized():  # the caller's own process group
        world, rank = dist.get_world_size(), dist.get_rank()
        local = _env_int("LOCAL_RANK", rank)
        started = False
    else:
        world, rank, local = environment_world()
        started = world > 1
    target = resolve_device(device)
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        raise DermretrError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA GPU(s) "
                            f"here (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if target.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DermretrError(f"device {device!r} asked for, but MPS is not available here; use 'auto' or 'cpu'")
    cluster = Cluster(world=world, rank=rank, local_rank=local, started=False)
    if world == 1:
        return cluster, target
    check_batch(batch_size, world)
    if target.type == "mps":
        raise DermretrError("training with several processes runs on CUDA (NCCL) or CPU (gloo), not MPS; "
                            "use --device cpu")
    if target.type == "cuda":
        if target.index is not None:
            raise DermretrError(f"device {device!r}: with several processes each one takes the GPU of its "
                                "LOCAL_RANK; use --device cuda or auto")
        if local >= torch.cuda.device_count():
            raise DermretrError(f"LOCAL_RANK {local} has no GPU: this machine has {torch.cuda.device_count()}; "
                                "start at most that many processes per node (torchrun --nproc_per_node)")
        target = torch.device("cuda", local)
        torch.cuda.set_device(target)
    if started:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise DermretrError(f"WORLD_SIZE={world} but {' and '.join(missing)} not set: start the processes with "
                                "torchrun --nproc_per_node N (it sets them)")
        try:
            dist.init_process_group("nccl" if target.type == "cuda" else "gloo", timeout=TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise DermretrError(f"cannot join the other {world - 1} process(es) at "
                                f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return Cluster(world=world, rank=rank, local_rank=local, started=started), target


def leave(cluster: Cluster) -> None:
    """End the process group :func:`join` started (one the caller started is left to the caller)."""
    if cluster.started and dist.is_initialized():
        dist.destroy_process_group()


def main_only(cluster: Cluster, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on rank 0 only; every process gets its result (picklable), or stops with its error.

    On rank 0 the error is raised as it is; the others raise :class:`RankStopped` saying so.
    """
    result: Any = None
    error: BaseException | None = None
    if cluster.main:
        try:
            result = fn(*args)
        except BaseException as exc:  # every process must hear of it, then it is raised again
            error = exc
    if cluster.distributed:
        said = None if error is None else (str(error) or type(error).__name__)
        box = [result if error is None else None, said]
        dist.broadcast_object_list(box, src=0)
        if not cluster.main:
            if box[1] is not None:
                raise RankStopped(f"rank 0 stopped: {box[1]}")
            result = box[0]
    if error is not None:
        raise error
    return result


def split_sizes(n: int, world: int) -> list[int]:
    """How many of ``n`` items each process takes: as even as possible, the first ones one more."""
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def _bounds(sizes: Sequence[int], rank: int) -> tuple[int, int]:
    lo = sum(sizes[:rank])
    return lo, lo + sizes[rank]


class _Gather(torch.autograd.Function):
    """All processes' rows in rank order; the backward pass sums every process's gradient of this one's rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        most = max(sizes)
        padded = torch.cat([x, x.new_zeros((most - x.shape[0], *x.shape[1:]))]) if x.shape[0] < most else x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total)  # every process's loss depends on these rows
        lo, hi = _bounds(ctx.sizes, ctx.rank)
        return total[lo:hi], None, None


def gather(x: torch.Tensor, sizes: list[int], cluster: Cluster) -> torch.Tensor:
    """Concatenate every process's ``x`` (``sizes[r]`` rows on rank ``r``) in rank order, with gradients.

    One process: ``x`` itself.  Booleans travel as bytes (gloo has no bool).
    """
    if not cluster.distributed:
        return x
    if x.shape[0] != sizes[cluster.rank]:
        raise ValueError(f"rank {cluster.rank} has {x.shape[0]} rows, the split says {sizes[cluster.rank]}")
    if x.dtype == torch.bool:
        return _Gather.apply(x.to(torch.uint8), sizes, cluster.rank).bool()
    return _Gather.apply(x, sizes, cluster.rank)


def gather_features(features: dict, sizes: list[int], cluster: Cluster,
                    keys: Sequence[str] = ("global", "local", "attn")) -> dict:
    """:func:`gather` of the ``keys`` of a feature dict (``Retriever.query_features``); the rest as it is."""
    if not cluster.distributed:
        return features
    return {k: gather(v, sizes, cluster) if k in keys and v is not None else v for k, v in features.items()}


class GlobalBatches(Sampler[list[int]]):
    """Each global batch of an epoch, drawn alike on every process, and the slice of it for this process.

    ``sampler`` (e.g. a seeded ``WeightedRandomSampler`` for class balance) gives the epoch's order; it is cut
    into global batches of ``batch_size`` (the last, incomplete one dropped) and each batch into ``world`` slices
    (:func:`split_sizes`).  The global batches are the same for any number of processes, so the loss of a global
    batch does not depend on how many processes share it.  ``batches()`` draws the order (once per epoch);
    iterating gives this process's slices, as a DataLoader ``batch_sampler``.

    >>> import torch
    >>> from torch.utils.data import SequentialSampler
    >>> rank1 = GlobalBatches(SequentialSampler(range(10)), batch_size=4, world=2, rank=1)
    >>> rank1.batches()
    [[0, 1, 2, 3], [4, 5, 6, 7]]
    >>> list(rank1)
    [[2, 3], [6, 7]]
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, world: int = 1, rank: int = 0):
        self.sampler, self.batch_size, self.world, self.rank = sampler, batch_size, world, rank
        self._batches: list[list[int]] | None = None

    def batches(self) -> list[list[int]]:
        """The global batches of the epoch (drawn on the first call)."""
        if self._batches is None:
            order = [int(i) for i in self.sampler]
            b = self.batch_size
            self._batches = [order[i:i + b] for i in range(0, len(order) - b + 1, b)]
        return self._batches

    def bounds(self) -> tuple[int, int]:
        """The rows of a global batch that fall to this process: ``batch[lo:hi]``."""
        return _bounds(split_sizes(self.batch_size, self.world), self.rank)

    def __iter__(self):
        lo, hi = self.bounds()
        return iter([batch[lo:hi] for batch in self.batches()])

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size  # type: ignore[arg-type]
