"""Encoding an archive with Ray Data: ``dermretr index --engine ray`` and :func:`encode_archive`.

The case table is cut into shards of ``shard_size`` rows (:mod:`._shards`), and one Ray Data pass runs
over the shard descriptors (``ray.data.from_items``, one block per shard): ``map_batches`` over an actor
pool of ``workers`` :class:`ShardEncoder` actors, each with ``gpus_per_worker`` GPUs, each loading the
retriever once (when its first shard to encode arrives).  For every shard an actor first computes the
shard's key (the model's identity and the case ids, paths and sha256 of the image bytes of its rows;
sha256 runs at about 1 GB/s per core, far faster than encoding) and encodes the shard only when that
key differs from the one the shard was written with (sent along by the driver; empty when the shard is
missing or damaged).  Hashing in the
same actors, rather than in a pass of its own, saves a second pipeline's start-up (several seconds of
Ray tasks importing numpy and pandas) on every run.

The driver writes each shard as it arrives (so the actors need no shared disk for the output), shows
the shards done out of all, and at the end writes the index folder from the shards, streamed
(:mod:`._stream`), and removes the shards folder.  A run that dies (a lost node, a killed driver) is
restarted with the same command: the shards written are checked by their keys and skipped.  The Ray
module is imported only when a run starts: ``import dermretr.index`` works without Ray.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _io
from .._checks import is_real, show
from .._errors import DermretrError
from ._common import check_count
from ._faiss import check_index_options
from ._model import load_pretrained, model_info
from ._shards import ShardStore, hash_shard, model_identity, shard_ranges, shards_dir
from ._store import check_output
from ._stream import write_from_shards
from ._vectors import image_cases

__all__ = ["INSTALL_RAY", "ArchiveRun", "ShardEncoder", "encode_archive", "check_ray_options", "require_ray"]

#: How to install the Ray engine (the ``scale`` extra).
INSTALL_RAY = 'pip install "dermretr[scale]"'
_DEVICES = ("auto", "cpu", "cuda")
_CONNECT_TIMEOUT_S = 5.0  # a TCP probe of --address first: Ray itself waits for an unreachable cluster for minutes


@dataclass(frozen=True)
class ArchiveRun:
    """What :func:`encode_archive` did.

    Attributes
    ----------
    path : Path
        The index folder written (opens with :meth:`~dermretr.index.CaseIndex.open`).
    count : int
        Cases indexed.
    shards : int
        Shards of the case table.
    encoded : int
        Shards encoded by this run.
    reused : int
        Shards an earlier run had written for the same inputs (not encoded again).
    seconds : float
        Wall time of the whole run.
    manifest : dict
        The index's ``manifest.json``.
    """

    path: Path
    count: int
    shards: int
    encoded: int
    reused: int
    seconds: float
    manifest: dict


def require_ray() -> Any:
    """The ``ray`` module (with Ray Data), or a one-line error saying how to install it.

    >>> require_ray().__name__  # with the scale extra installed
    'ray'
    """
    try:
        import ray
        import ray.data  # noqa: F401  (the engine needs Ray Data, not only Ray core)
    except ImportError:
        raise DermretrError(f"the Ray engine (--engine ray) needs Ray Data, which is not installed here; install it "
                            f"with: {INSTALL_RAY}") from None
    return ray


def check_ray_options(workers: Any = None, gpus_per_worker: Any = 0, shard_size: Any = 4096, address: Any = None,
                      device: Any = "auto") -> tuple[int | None, float, int, str | None, str]:
    """The Ray engine's options checked: ``(workers, gpus_per_worker, shard_size, address, device)``.

    >>> check_ray_options(workers=2, gpus_per_worker=0.5)
    (2, 0.5, 4096, None, 'auto')
    >>> check_ray_options(shard_size=0)
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: shard_size (--shard-size, cases per shard) must be at least 1, got 0
    """
    if workers is not None:
        workers = check_count(workers, "workers (--workers, Ray actors encoding at once)")
    if not is_real(gpus_per_worker) or not math.isfinite(float(gpus_per_worker)) or float(gpus_per_worker) < 0:
        raise DermretrError(f"gpus_per_worker (--gpus-per-worker) must be a number >= 0 (0: encode on CPUs), got "
                            f"{show(gpus_per_worker)}")
    gpus = float(gpus_per_worker)
    if gpus > 1 and not gpus.is_integer():
        raise DermretrError(f"gpus_per_worker (--gpus-per-worker) must be a fraction below 1 (GPUs shared by "
                            f"several workers) or a whole number, got {gpus_per_worker}")
    shard_size = check_count(shard_size, "shard_size (--shard-size, cases per shard)")
    if address is not None and (not isinstance(address, str) or not address.strip() or " " in address.strip()):
        raise DermretrError(f"address (--address) must be a Ray cluster address such as auto, HOST:6379 or "
                            f"ray://HOST:10001, got {show(address)}")
    if not isinstance(device, str) or device not in _DEVICES:
        raise DermretrError(f"device must be one of {', '.join(_DEVICES)} with the Ray engine (each worker uses the "
                            f"GPUs Ray gives it), got {show(device)}")
    if device == "cuda" and gpus == 0:
        raise DermretrError("device 'cuda' needs GPUs on the Ray workers: give gpus_per_worker > 0 "
                            "(--gpus-per-worker 1), or use device 'auto'")
    if device == "cpu" and gpus > 0:
        raise DermretrError(f"device 'cpu' leaves the {gpus:g} GPU(s) per worker (--gpus-per-worker) unused; use "
                            "device 'auto' or give --gpus-per-worker 0")
    return workers, gpus, shard_size, None if address is None else address.strip(), device


class ShardEncoder:
    """The Ray Data actor: loads the retriever once, then keys and (when changed) encodes one shard per call.

    Parameters
    ----------
    source : str
        A checkpoint file (``checkpoint=True``) or a name or folder that
        :meth:`~dermretr.models.retriever.Retriever.from_pretrained` reads.
    checkpoint : bool
        ``source`` is a checkpoint file.
    device : str
        ``"auto"`` (the GPU Ray assigned, else the CPU), ``"cpu"`` or ``"cuda"``.
    identity : dict
        The driver's :func:`~dermretr.index.model_info`: the model loaded here must have the same
        config hash and weights (a checkpoint replaced during the run is an error, not a mixed index).
    model_id : str
        The driver's :func:`~dermretr.index.model_identity`, part of every shard's key.
    batch_size : int
        Images encoded at once.
    threads : int
        Torch CPU threads of this actor.
    dim, n_masks : int
        The driver's model's embedding size and local vectors per image (0: none), for the empty
        arrays of a kept shard or an error.

    The model is loaded when the first shard to encode arrives, so a rerun that keeps every shard
    hashes the images and loads no model.
    """

    def __init__(self, source: str, checkpoint: bool, device: str, identity: Mapping, model_id: str,
                 batch_size: int, threads: int, dim: int, n_masks: int):
        self.source, self.checkpoint, self.device, self.identity = source, bool(checkpoint), device, dict(identity)
        self.batch_size, self.model_id, self.threads = int(batch_size), str(model_id), max(1, int(threads))
        self.dim, self.n_masks = int(dim), int(n_masks)
        self.retriever: Any = None
        self.error = ""  # said for every shard (as data: Ray would bury a raised one in its own errors)

    def _load(self) -> None:
        """Load the retriever, the first time a shard needs encoding (a rerun whose shards are all kept loads none)."""
        import torch

        from ..models.retriever import Retriever

        torch.set_num_threads(self.threads)
        try:
            self.retriever = (Retriever.load(self.source, device=self.device) if self.checkpoint
                              else Retriever.from_pretrained(self.source, device=self.device))
            mine = model_info(self.retriever)
        except DermretrError as exc:
            self.error = f"a Ray worker cannot load the model: {exc}"
            return
        if (mine["config_hash"], mine["weights_sha256"]) != (self.identity["config_hash"],
                                                             self.identity["weights_sha256"]):
            self.error = (f"a Ray worker loaded another model from {self.source} than the driver did (changed during "
                          "the run, or another file at that path on this node); make the model the same on every "
                          "node and run again")

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Key, and encode when changed, the shard of ``batch`` (one shard per batch, as Ray Data is asked).

        ``batch`` has the columns ``shard``, ``start``, ``stop``, ``case_ids``, ``paths`` and ``stored``
        (the key the shard was written with, ``""`` for none).  The result has ``shard``, ``key``,
        ``global`` (``[1, r, D]``), ``local`` (``[1, r, M, D]``, for retrievers with local vectors),
        both with ``r = 0`` when the stored shard is still good (its key unchanged) or on an error, and
        ``error`` (``""``, or the one-line message of a shard that could not be keyed or encoded).
        """
        shard, start, stop = (int(batch[c][0]) for c in ("shard", "start", "stop"))
        paths = [str(p) for p in batch["paths"][0]]
        error = self.error
        key, e = "", None
        if not error:
            key, error = hash_shard(self.model_id, start, stop, batch["case_ids"][0], paths)
        changed = not error and key != str(batch["stored"][0])
        if changed and self.retriever is None:
            self._load()
            error = self.error
        if changed and not error:
            try:
                e = self.retriever.encode_targets(paths, batch_size=self.batch_size)
            except DermretrError as exc:
                error = f"case image: {exc}"
        empty_local = np.zeros((1, 0, self.n_masks, self.dim), np.float32)
        out = {"global": np.zeros((1, 0, self.dim), np.float32), "local": empty_local}
        if e is not None and not error:
            out = {"global": e.global_vectors[None],
                   "local": e.local_vectors[None] if e.local_vectors is not None else empty_local}
        return {"shard": np.asarray([shard], dtype=np.int64), "key": np.asarray([key], dtype=object),
                "error": np.asarray([error], dtype=object),
                **{k: v.astype(np.float32, copy=False) for k, v in out.items()}}


# ---------------------------------------------------------------------------- the cluster


def _probe(address: str) -> None:
    """Fail at once, naming ``address``, when nothing listens there (``ray.init`` would wait for minutes)."""
    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DermretrError(f"--address {address!r} is not a Ray cluster address; give auto, HOST:PORT (the head "
                            "node's GCS, port 6379 by default) or ray://HOST:10001")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise DermretrError(f"cannot reach a Ray cluster at --address {address} ({reason}); start one with `ray "
                            "start --head` on that machine, or check the address and port") from None


_STARTUP_TIMEOUT = "timed out during startup"
_START_ATTEMPTS = 3


def _init_local(ray: Any, attempts: int = _START_ATTEMPTS, **options: Any) -> None:
    """``ray.init`` of a local cluster, tried again when its node timed out during startup.

    Ray's raylet gives the dashboard agent a fixed 15 s to publish its port and exits otherwise
    (ray-project/ray#65983), which a busy machine can miss; a second start usually succeeds.
    """
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", **options)
            return
        except Exception as exc:
            if _STARTUP_TIMEOUT not in str(exc) or attempt == attempts:
                raise
            ray.shutdown()


@contextlib.contextmanager
def _connected(ray: Any, address: str | None, workers: int, object_store: int) -> Iterator[bool]:
    """A connection of this process to Ray for the block (True: to a local cluster started here).

    A cluster or connection started here ends with the block; one the process had is left open.
    """
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", current):
            raise DermretrError(f"this process is already connected to the Ray cluster at {current}, not "
                                f"{address}; leave address out to use that one, or call ray.shutdown() first")
        yield False
        return
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address is None:
            _init_local(ray, num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False,
                        object_store_memory=object_store, **quiet)
        else:
            ray.init(address=address, **quiet)
    except Exception as exc:  # Ray raises a bare Exception when its node does not start
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        where = "start a local Ray cluster" if address is None else f"connect to the Ray cluster at --address {address}"
        raise DermretrError(f"cannot {where}: {reason}") from None
    try:
        yield address is None
    finally:
        ray.shutdown()


def _pool(ray: Any, workers: int | None, gpus: float, local: bool) -> tuple[int, float, int]:
    """``(actors, cpus per actor, torch threads)`` for the cluster connected to; an error when it cannot hold them."""
    resources = ray.cluster_resources()
    cpus, gpus_there = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if gpus > 0 and gpus_there < gpus:
        raise DermretrError(f"--gpus-per-worker {gpus:g} asks for GPUs, but the Ray cluster has {gpus_there:g}; "
                            "give --gpus-per-worker 0 to encode on CPUs, or connect to a cluster with GPUs (--address)")
    if workers is None:
        workers = int(gpus_there // gpus) if gpus > 0 else (min(8, int(cpus)) if local else int(cpus))
        workers = max(1, workers)
    per_cpu = 1.0 if gpus > 0 else float(max(1, int(cpus // workers)))
    if workers * per_cpu > cpus or workers * gpus > gpus_there:
        raise DermretrError(f"--workers {workers} needs {workers * per_cpu:g} CPUs and {workers * gpus:g} GPUs, but "
                            f"the Ray cluster has {cpus:g} CPUs and {gpus_there:g} GPUs; give fewer workers")
    return workers, per_cpu, int(per_cpu)


def _ray_failure(ray: Any, exc: BaseException) -> DermretrError | None:
    """The one-line error for a failure of Ray itself out of a Ray Data run (None: raise ``exc`` as it is).

    Errors of the inputs come back from the workers as data (see :class:`ShardEncoder`); what is left
    is Ray's: a lost node or worker, the object store, or a bug (a ``RayTaskError``, raised as it is).
    """
    if isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError):
        reason = " ".join(str(exc).split())[:200]
        return DermretrError(f"the Ray job failed ({type(exc).__name__}: {reason}); the shards written so far are "
                             "kept: run the same command again to continue")
    return None


def _rows(ray: Any, ds: Any) -> Iterator[dict]:
    """The rows of a Ray Data dataset, its errors turned into one-line ones (see :func:`_ray_failure`)."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    logger = logging.getLogger("ray.data")
    level = logger.level
    context.enable_progress_bars = False  # the driver shows its own bar, shards done out of all
    logger.setLevel(logging.WARNING)
    try:
        yield from ds.iter_rows()
    except Exception as exc:
        error = _ray_failure(ray, exc)
        if error is None:
            raise
        raise error from None
    finally:
        context.enable_progress_bars = saved
        logger.setLevel(level)


# ---------------------------------------------------------------------------- the run


def _driver_model(model: Any, cases: pd.DataFrame) -> tuple[str, bool, Any, dict]:
    """``(source, is_checkpoint, retriever on CPU, model_info)`` of a model given by file or name."""
    from ..models.retriever import Retriever

    if not isinstance(model, (str, os.PathLike)) or isinstance(model, bool):
        raise DermretrError(f"model must be a checkpoint file or a pretrained model's name or folder (the Ray workers "
                            f"load it themselves), got {show(model)}; save a Retriever first with .save(path)")
    path = Path(model).expanduser()
    if path.is_file():
        retriever = Retriever.load(path, device="cpu")
        return str(path.resolve()), True, retriever, model_info(retriever, path)
    retriever, name = load_pretrained(model, "cpu", None, cases)
    return name, False, retriever, model_info(retriever, pretrained=name)


def encode_archive(model: str | os.PathLike, cases: pd.DataFrame, out: str | os.PathLike, kind: str = "flat", *,
                   address: str | None = None, workers: int | None = None, gpus_per_worker: float = 0,
                   shard_size: int = 4096, batch_size: int = 64, device: str = "auto", overwrite: bool = False,
                   progress: bool = False, keep_shards: bool = False, **options: Any) -> ArchiveRun:
    """Encode every case image with Ray Data and write the index folder ``out`` (restartable).

    The same folder as ``CaseIndex.build(model, cases, kind, ...).save(out)``, for archives too large
    for one process: the images are encoded by a pool of Ray actors in shards of ``shard_size`` cases,
    kept in ``OUT.shards/`` beside ``out`` until the index is saved.  Run it again after a crash and
    the shards already written for the same model and images are not encoded again.

    Parameters
    ----------
    model : str or path
        A checkpoint file (``RUN_DIR/checkpoints/best.pt``) or a name or folder that
        :meth:`~dermretr.models.retriever.Retriever.from_pretrained` reads; every worker loads it
        (so it must be at the same path on every node, as the images must).
    cases : DataFrame
        The case table (validated; ``image_path`` readable by the workers).
    out : str or path
        The index folder to write.
    kind : {"flat", "hnsw", "ivf", "ivfpq"}
        FAISS index over the global vectors.
    address : str, optional
        A Ray cluster to use (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``); default
        ``RAY_ADDRESS`` when set, else a local cluster started (and shut down) for this run.  A
        process already connected to Ray uses that connection and leaves it open.
    workers : int, optional
        Actors encoding at once (default: one per GPU share, else per CPU, at most 8 locally).
    gpus_per_worker : float
        GPUs of each actor (0: CPUs only; 0.5: two actors share a GPU).
    shard_size : int
        Cases per shard: the unit of work, of restart and of re-encoding after a change.
    batch_size : int
        Images an actor encodes at once.
    device : {"auto", "cpu", "cuda"}
        Where an actor runs the model (``"auto"``: the GPU Ray gave it, else the CPU).
    overwrite : bool
        Replace an index already in ``out``.
    progress : bool
        Show the shards done out of all.
    keep_shards : bool
        Keep the shards folder after the index is saved (another index kind from the same vectors
        then encodes nothing).
    **options
        Index options of :meth:`~dermretr.index.CaseIndex.build` (``nlist``, ``hnsw_m``, ``seed``...).

    Returns
    -------
    ArchiveRun
        The folder, the count and how many shards were encoded and reused.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.data import load
    >>> from dermretr.data.synth import generate
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=8, image_size=64, workers=1,
    ...                 progress=False)
    >>> run = encode_archive("dermretr/dermsynth-tiny", load("synthetic", root), root.parent / "idx",
    ...                      workers=2, shard_size=4)  # doctest: +SKIP
    >>> run.count, run.shards, run.encoded, run.reused  # doctest: +SKIP
    (8, 2, 2, 0)
    """
    started = time.perf_counter()
    options = check_index_options(kind, options)
    workers, gpus, shard_size, address, device = check_ray_options(workers, gpus_per_worker, shard_size, address,
                                                                   device)
    batch_size = check_count(batch_size, "batch_size")
    for name, value in (("overwrite", overwrite), ("progress", progress), ("keep_shards", keep_shards)):
        if not isinstance(value, (bool, np.bool_)):
            raise DermretrError(f"{name} must be True or False, got {show(value)}")
    ray = require_ray()
    cases = image_cases(cases)
    path = check_output(out, bool(overwrite))  # before the long part
    if address is None and not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS", "").strip() or None
    if address not in (None, "auto"):
        _probe(address)
    source, is_checkpoint, retriever, info = _driver_model(model, cases)
    dim = int(retriever.backbone.embed_dim)
    n_masks = int(retriever.n_masks) if retriever.uses_local else 0
    alpha = float(retriever.alpha) if n_masks else 0.0
    del retriever  # the workers load their own
    model_id = model_identity(info)
    ranges = shard_ranges(len(cases), shard_size)
    ids, paths = cases["case_id"].astype(str).tolist(), cases["image_path"].astype(str).tolist()
    store = ShardStore(shards_dir(path))
    shard_bytes = shard_size * (1 + n_masks) * dim * 4
    with _io.exclusive(store.folder, "index folder"):  # one run per shards folder, for the whole run
        store.claim()
        try:
            with _connected(ray, address, workers or min(8, os.cpu_count() or 1),
                            int(min(8 << 30, max(256 << 20, 8 * shard_bytes)))) as local, warnings.catch_warnings():
                # Ray Data's own deprecation notices (its settings' old names) are nothing a user can act on
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
                n_actors, per_cpu, threads = _pool(ray, workers, gpus, local)
                stored = [store.stored_key(i, b - a, dim, n_masks) for i, (a, b) in enumerate(ranges)]
                encoded = _run_shards(ray, store, ranges, stored, ids, paths, dict(
                    source=source, checkpoint=is_checkpoint, device=device, model_id=model_id,
                    batch_size=batch_size, threads=threads, dim=dim, n_masks=n_masks,
                    identity={k: info[k] for k in ("config_hash", "weights_sha256")}),
                    min(n_actors, len(ranges)), per_cpu, gpus, progress)
            manifest = write_from_shards(path, bool(overwrite), cases, kind, options, ranges,
                                         lambda i: store.read(i, ranges[i][1] - ranges[i][0], dim, n_masks),
                                         dim, n_masks, alpha, info, stacklevel=3)
            if not keep_shards:
                store.remove()
        finally:
            if not store.shard_files():  # a run that failed before its first shard leaves no folder behind
                store.remove()
    return ArchiveRun(path, len(cases), len(ranges), encoded, len(ranges) - encoded, time.perf_counter() - started,
                      manifest)


def _run_shards(ray: Any, store: ShardStore, ranges: list[tuple[int, int]], stored: list[str], ids: list[str],
                paths: list[str], encoder: dict, actors: int, per_cpu: float, gpus: float, progress: bool) -> int:
    """Every shard through the actor pool; the driver writes each shard that comes back encoded.  The count encoded.

    A shard whose key matches ``stored`` comes back without vectors and is kept as it is on disk.
    """
    from tqdm.auto import tqdm

    items = [{"shard": i, "start": a, "stop": b, "case_ids": ids[a:b], "paths": paths[a:b], "stored": stored[i]}
             for i, (a, b) in enumerate(ranges)]
    remote: dict[str, Any] = {"num_cpus": per_cpu}
    if gpus > 0:
        remote["num_gpus"] = gpus
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardEncoder, fn_constructor_kwargs=encoder, compute=ray.data.ActorPoolStrategy(size=actors), batch_size=1,
        batch_format="numpy", **remote)
    encoded = 0
    with tqdm(total=len(ranges), desc="Encoding shards", unit="shard", disable=not progress) as bar:
        for row in _rows(ray, ds):
            if row["error"]:
                raise DermretrError(str(row["error"]))
            i = int(row["shard"])
            a, b = ranges[i]
            if row["global"].shape[0]:  # encoded: its key changed or it was not there
                store.write(i, str(row["key"]), a, b, row["global"], row["local"] if row["local"].shape[0] else None)
                encoded += 1
            bar.update(1)
    return encoded

