"""The training loop: the model, optimiser and schedule of a run, one epoch of steps, validation and checkpoints."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm

from .._checks import parse_metric
from .._errors import DermretrError
from .._io import atomic_path, os_error
from ..data import load, split_source
from ..data.vocab import TEXT_STYLES, case_text
from ..evaluate import case_search
from ..models.backbones import create
from ..models.losses import RetrievalLoss
from ..models.retriever import Retriever
from ._checkpoints import read_state, repair, write_best, write_curve, write_metrics, write_state
from ._config import TrainConfig, plain
from ._data import Pairs, balance_weights, cache_images, transforms
from ._distributed import Cluster, GlobalBatches, main_only
from ._runs import prepare_run
from ._step import Step, StepBatch
from ._triplets import training_triplets

__all__ = ["TrainResult", "train_run", "param_groups"]


@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    retriever: Retriever
    history: list[dict]
    best: dict
    run_dir: Path


@dataclass
class _Run:
    """What one epoch of a run needs: the data in memory, the model and its optimiser, the loss."""

    config: TrainConfig
    cluster: Cluster
    device: torch.device
    cases: pd.DataFrame
    train_idx: np.ndarray
    train_cases: pd.DataFrame
    groups: np.ndarray
    weights: torch.Tensor
    images: list
    pairs: Pairs
    base_tf: Any
    aug_tf: Any
    triplets: pd.DataFrame | None
    model: Retriever
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: RetrievalLoss
    use_amp: bool
    amp_dtype: torch.dtype
    step: nn.Module  # Step, or Step in DistributedDataParallel with several processes

    def views(self, idx: list[int]) -> torch.Tensor:
        tf = self.aug_tf or self.base_tf
        return torch.stack([tf(self.images[i]) for i in idx]).to(self.device)


def train_run(config: TrainConfig, run: Path, on_epoch_end: Callable[[dict], None] | None,
              cases: pd.DataFrame | None, cluster: Cluster, device: torch.device) -> TrainResult:
    """Train into the run folder ``run`` (absolute, locked by :func:`fit`); see :mod:`dermretr.train`.

    ``cluster`` and ``device`` are :func:`~dermretr.train._distributed.join`'s; with several processes
    only rank 0 writes, and every process returns the same result.
    """
    ckpt_dir = main_only(cluster, prepare_run, run, config)
    r = _setup(config, cases, cluster, device)
    model = r.model
    has_val = bool((r.cases["split"].astype(str) == "val").any())

    history: list[dict] = []
    best: dict = {}
    start_epoch = 1
    if config.resume:
        state = main_only(cluster, _read_last, r, run, ckpt_dir)
        if state is not None:
            done, history, best = state[:3]
            start_epoch = done + 1
            if not cluster.main:  # the weights come from rank 0 when the processes are joined below
                r.optimizer.load_state_dict(state[3])
                r.scheduler.load_state_dict(state[4])
                r.scaler.load_state_dict(state[5])
    split = {"kind": "caller", "note": "the case table given to fit(cases=...)"} if cases is not None else (
        split_source(r.cases))
    main_only(cluster, _write_config, run, config, split)
    if cluster.distributed:  # copies rank 0's weights to every process, then averages the gradients
        r.step = DistributedDataParallel(r.step, device_ids=None, find_unused_parameters=True)

    for epoch in range(start_epoch, config.epochs + 1):
        record = _train_epoch(r, epoch)
        record, best = main_only(cluster, _end_epoch, r, run, ckpt_dir, record, history, best, has_val)
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(record)
    return TrainResult(retriever=model, history=history, best=best, run_dir=Path(config.out).expanduser())


def _write_config(run: Path, config: TrainConfig, split: dict | None) -> None:
    """``config.json``: the options, and where the split of the data came from (``data_split``)."""
    with atomic_path(run / "config.json") as tmp:
        tmp.write_text(json.dumps({**asdict(config), "data_split": split}, indent=2, sort_keys=True,
                                  default=plain) + "\n")


def _read_last(r: _Run, run: Path, ckpt_dir: Path) -> tuple | None:
    """Rank 0 continues from ``last.pt`` (and repairs the files after it); what the other processes need."""
    if not (ckpt_dir / "last.pt").exists():  # read_weights says what is wrong with one that is there
        return None
    done, history, best = read_state(ckpt_dir / "last.pt", r.model, r.optimizer, r.scheduler, r.scaler)
    repair(run, r.model, done, history, best, r.config.select_metric)
    if not r.cluster.distributed:
        return done, history, best
    # on the CPU, so that no process unpickles tensors onto rank 0's GPU (the optimiser moves them to its own)
    return (done, history, best, _on_cpu(r.optimizer.state_dict()), r.scheduler.state_dict(),
            r.scaler.state_dict())


def _on_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (nested dicts, lists, tuples) moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def _end_epoch(r: _Run, run: Path, ckpt_dir: Path, record: dict, history: list[dict], best: dict,
               has_val: bool) -> tuple[dict, dict]:
    """Validate, pick the best and write the epoch's files (rank 0); the epoch's record and the best record."""
    config, model, epoch = r.config, r.model, record["epoch"]
    ks = sorted({1, 5, 10} | {k for k in [parse_metric(config.select_metric)[1]] if k})
    if has_val:
        # the gallery (training images) is encoded from the images already in memory
        gallery = model.encode_targets([r.images[i] for i in r.train_idx], batch_size=max(config.batch_size, 64))
        _, summary = case_search(model, r.cases, query_split="val", gallery_splits=("train",), ks=ks,
                                 batch_size=max(config.batch_size, 64), gallery=gallery)
        record.update({k: v for k, v in summary.items() if k != "n_queries"})
    history = [*history, record]
    name = config.select_metric if config.select_metric in record else "-loss"  # no usable validation: loss
    metric = record[name] if name in record else -record["loss"]
    improved = not best or metric > best["value"] or (math.isnan(best["value"]) and not math.isnan(metric))
    if improved:
        best = {"epoch": epoch, "metric": name, "value": metric}
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, ckpt_dir) from None
    # last.pt first: it is the reference a resumed run repairs the others from (see dermretr.train)
    write_state(ckpt_dir / "last.pt", model, r.optimizer, r.scheduler, r.scaler, epoch, history, best)
    write_metrics(run, history)
    if improved:
        write_best(model, ckpt_dir / "best.pt", best)
    write_curve(run, history, config.select_metric)
    if config.progress:
        shown = ", ".join(f"{k} {record[k]:.3f}" for k in ("loss", "recall@1", "map@10") if k in record)
        tqdm.write(f"epoch {epoch}/{config.epochs}: {shown} ({record['train_seconds']:.0f} s)")
    return record, best


def _setup(config: TrainConfig, cases: pd.DataFrame | None, cluster: Cluster, device: torch.device) -> _Run:
    """The seeds, data, model, optimiser and schedule of a run, in this order (bad data fails first)."""
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)

    cases = load(config.data, **config.data_options) if cases is None else cases
    train_idx = np.flatnonzero(cases["split"].astype(str).to_numpy() == "train")
    if len(train_idx) == 0:
        raise DermretrError(f"{config.data} has no training cases (split 'train')")
    if config.batch_size > len(train_idx):
        raise DermretrError(f"batch size {config.batch_size} is larger than the training set ({len(train_idx)} "
                            f"cases); use --batch-size {len(train_idx)} or less")
    train_cases = cases.iloc[train_idx].reset_index(drop=True)
    weights = balance_weights(train_cases, config.balance_by)  # a bad column fails before the slow part

    backbone = create(config.backbone, pretrained=config.pretrained, device=device, image_size=config.image_size)
    model = Retriever(backbone, kind=config.model, n_masks=config.n_masks, alpha=config.alpha,
                      learn_alpha=config.learn_alpha, freeze_backbone=config.freeze_backbone,
                      text_skip=config.text_skip).to(device)
    base_tf, aug_tf = transforms(backbone, backbone.image_size, config.augment, config.hair_augment)
    images = cache_images(cases["image_path"].tolist(), backbone.image_size, config.progress and cluster.main)
    pairs = Pairs([images[i] for i in train_idx], base_tf, aug_tf)
    groups = train_cases["diagnosis_group"].astype(str).to_numpy()
    triplets = (training_triplets(config.data, cases, train_idx, config.seed, tone_wanted=config.tone_triplets,
                                  findings_wanted=config.finding_triplets)
                if config.modifications else None)

    groups_, params = param_groups(model, config)
    optimizer = torch.optim.AdamW(groups_, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(train_idx) // config.batch_size
    total = steps_per_epoch * config.epochs
    warmup = max(1, min(50, total // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total))))
    )
    loss_fn = RetrievalLoss(patient=config.patient_weight, word_region=config.word_region_weight)
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return _Run(config=config, cluster=cluster, device=device, cases=cases, train_idx=train_idx,
                train_cases=train_cases, groups=groups, weights=weights, images=images, pairs=pairs, base_tf=base_tf,
                aug_tf=aug_tf, triplets=triplets, model=model, params=params, optimizer=optimizer,
                scheduler=scheduler, scaler=scaler, loss_fn=loss_fn, use_amp=use_amp, amp_dtype=amp_dtype,
                step=Step(model, loss_fn, config, cluster))


def _train_epoch(r: _Run, epoch: int) -> dict:
    """One epoch of optimiser steps; its record (mean losses, the learning rate, alpha, seconds).

    With several processes each one takes its slice of every global batch (:class:`GlobalBatches`) and
    draws its own augmentations (rank 0 those of a one-process run); the texts, labels and triplets of a
    global batch are drawn alike on every process.
    """
    config, device, model, triplets, cluster = r.config, r.device, r.model, r.triplets, r.cluster
    t0 = time.perf_counter()
    torch.manual_seed(config.seed * 100_003 + epoch + cluster.rank * 2**40)  # augmentations: same per epoch on resume
    rng = random.Random(config.seed * 100_003 + epoch)
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    # the sampler takes a tensor of weights as well (torch's annotation says Sequence[float])
    sampler = (WeightedRandomSampler(r.weights, num_samples=len(r.train_idx), replacement=True,  # type: ignore[arg-type]
                                     generator=gen)
               if config.balanced else torch.utils.data.RandomSampler(r.pairs, generator=gen))
    slices = GlobalBatches(sampler, config.batch_size, cluster.world, cluster.rank)
    trip_order = (torch.randperm(len(triplets), generator=gen).tolist()
                  if triplets is not None and len(triplets) else [])
    batches = slices.batches()  # drawn after the triplets' order, as in every run before
    loader = DataLoader(r.pairs, batch_sampler=slices, num_workers=config.num_workers)
    model.train()
    sums: dict[str, float] = {}
    n_steps = 0
    bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", disable=not (config.progress and cluster.main),
               leave=False)
    pids = r.train_cases["patient_id"].to_numpy()
    half = max(2, config.batch_size // 2)
    for step, (q_img, t_img, _) in enumerate(bar):
        rows = batches[step]
        q_img, t_img = q_img.to(device), t_img.to(device)
        # the composed query's text is the findings view, as at search time: a caption naming the
        # diagnosis would teach the model to read the answer from the question
        texts = [case_text(r.train_cases.iloc[i], style=rng.choice(TEXT_STYLES), seed=rng.randrange(2**31),
                           view="findings") for i in rows]
        tb = None
        if trip_order:
            assert triplets is not None
            tb = triplets.iloc[[trip_order[(step * half + j) % len(trip_order)] for j in range(half)]]
        batch = StepBatch(texts=texts, groups=[r.groups[i] for i in rows],
                          patient_ids=pids[rows] if config.patient_weight > 0 else None, triplets=tb, views=r.views)
        with torch.autocast(device.type, dtype=r.amp_dtype, enabled=r.use_amp):
            loss, parts, stats = r.step(q_img, t_img, batch)
        r.optimizer.zero_grad(set_to_none=True)
        r.scaler.scale(loss).backward()
        r.scaler.unscale_(r.optimizer)
        torch.nn.utils.clip_grad_norm_(r.params, 1.0)
        r.scaler.step(r.optimizer)
        r.scaler.update()
        r.scheduler.step()
        n_steps += 1
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        for k, v in {**parts, **stats}.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{sums['loss'] / n_steps:.3f}")
    return {"epoch": epoch, **{k: v / max(1, n_steps) for k, v in sums.items()},
            "lr": r.optimizer.param_groups[0]["lr"], "alpha": model.alpha,
            "train_seconds": round(time.perf_counter() - t0, 2),
            **({"processes": cluster.world} if cluster.distributed else {})}


def param_groups(model: Retriever, config: TrainConfig) -> tuple[list[dict], list[torch.nn.Parameter]]:
    """AdamW groups: weight decay on matrices only (not on biases, norms, prototypes, temperatures).

    The local-evidence weight ``alpha`` learns ``alpha_lr_mult`` times faster (a single logit barely moves at
    the backbone's rate, so without it ``alpha`` would stay where it started).
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    fast: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name == "alpha_logit":
            fast.append(p)
        elif p.ndim < 2 or name.endswith("prototypes") or name in ("logit_scale",) or "positional" in name \
                or name.endswith("class_embedding"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups: list[dict[str, Any]] = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    if fast:
        groups.append({"params": fast, "weight_decay": 0.0, "lr": config.lr * config.alpha_lr_mult})
    return [g for g in groups if g["params"]], decay + no_decay + fast
