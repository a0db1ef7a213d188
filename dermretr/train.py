"""Training composed retrievers on CPU or GPU.

:func:`fit` trains a :class:`~dermretr.models.retriever.Retriever` of any kind
on a case table (``TrainConfig.data`` is a ``SOURCE:PATH`` spec):

* case search: query = (augmented image, its descriptor text in a random
  style), targets = the other in-batch images (a second augmentation); every
  in-batch case of the same diagnosis group is a positive, the query's own
  case is left out;
* modification triplets (DermSynth's ``meta/modifications.csv``): query =
  (reference image, modification text), the exact target is the positive;
* class-balanced sampling, mild augmentation (crops, flips, small colour
  jitter), mixed precision on CUDA, fixed seeds;
* each epoch: a progress bar with the loss, validation Recall@K / mAP@K with
  the case protocol, the best checkpoint by ``select_metric``; for the full
  model also the target masks' entropy (fraction of uniform) and overlap, to
  see masks collapsing onto one map.

RUN_DIR holds ``config.json``, ``metrics.jsonl`` (one line per epoch),
``checkpoints/last.pt`` and ``checkpoints/best.pt`` (written atomically,
loadable with ``weights_only=True``) and ``training_curve.png``.  A run
interrupted at any point continues with ``resume=True`` from the last
completed epoch, with the same result as an uninterrupted run on CPU.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data.synth import generate
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> root = generate(tmp / "ds", n_cases=40, image_size=64, workers=1, progress=False)
>>> cfg = TrainConfig(data=f"synthetic:{root}", out=str(tmp / "run"), epochs=1, batch_size=8,
...                   image_size=64, progress=False)
>>> result = fit(cfg)
>>> sorted(p.name for p in (tmp / "run").iterdir())
['checkpoints', 'config.json', 'metrics.jsonl', 'training_curve.png']
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision.transforms import v2
from tqdm.auto import tqdm

from ._device import resolve_device
from ._errors import DermretrError
from ._io import atomic_path, save_figure
from .data import load, parse_spec
from .data.images import load_rgb
from .data.vocab import TEXT_STYLES, case_text
from .evaluate import case_search
from .models.backbones import create
from .models.composer import SpatialMasks
from .models.losses import RetrievalLoss, group_positives
from .models.retriever import DEFAULT_ALPHA, KINDS, Retriever

__all__ = ["TrainConfig", "fit", "TrainResult", "RESUME_KEYS_FREE"]

#: Config keys that may differ when resuming (everything else must match the run).
RESUME_KEYS_FREE = ("epochs", "resume", "progress", "device", "num_workers")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as RUN_DIR/config.json).

    Parameters
    ----------
    data : str
        ``SOURCE:PATH`` of the case table.
    out : str
        RUN_DIR.
    model : str
        Retriever kind: one of ``image``, ``text``, ``late_fusion``, ``clip4cir``, ``global``, ``full``.
    backbone, pretrained : str
        See :func:`dermretr.models.backbones.create`.
    epochs, batch_size, image_size : int
        Training length, in-batch size (also the number of negatives), input side.
    lr, weight_decay : float
        AdamW settings (cosine schedule with a short warm-up).
    n_masks : int
        Spatial masks M (``model="full"``).
    alpha : float
        Initial weight of local evidence; ``learn_alpha`` learns it, ``alpha_lr_mult`` times faster than
        the rest (no weight decay on it, on biases, norms or the temperature).
    freeze_backbone : bool
        Train only the heads.
    balanced : bool
        Balanced sampling over the strata of ``balance_by``.
    balance_by : str
        Comma-separated case-table columns whose value combinations are sampled equally often
        (default ``diagnosis_group``; ``diagnosis_group,fitzpatrick`` also balances skin types, a
        fairness mitigation).  Unknown values form their own stratum.
    augment : bool
        Mild augmentation.
    modifications : bool
        Also train on DermSynth's modification triplets when the data has them.
    patient_weight, word_region_weight : float
        Optional SLIMP-style and AFLoc-style loss terms (0 = off).
    select_metric : str
        Validation metric that picks ``best.pt`` (``map@10``, ``recall@1``...).
    seed : int
        Seed of everything.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    resume : bool
        Continue the run in ``out``.
    """

    data: str
    out: str
    model: str = "full"
    backbone: str = "dermretr-tiny"
    pretrained: str | None = None
    epochs: int = 15
    batch_size: int = 64
    image_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    n_masks: int = 4
    alpha: float = DEFAULT_ALPHA
    learn_alpha: bool = True
    alpha_lr_mult: float = 20.0
    freeze_backbone: bool = False
    balanced: bool = True
    balance_by: str = "diagnosis_group"
    augment: bool = True
    modifications: bool = True
    patient_weight: float = 0.0
    word_region_weight: float = 0.0
    select_metric: str = "map@10"
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    resume: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`DermretrError` for values that cannot work."""
        if self.model not in KINDS:
            raise DermretrError(f"unknown model {self.model!r}; choose from {', '.join(KINDS)}")
        for name in ("epochs", "batch_size", "image_size", "n_masks"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise DermretrError(f"{name} must be a positive integer, got {v!r}")
        if self.batch_size < 2:
            raise DermretrError("batch_size must be at least 2: the other cases in a batch are the negatives")
        if not 0 <= self.alpha <= 1:
            raise DermretrError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.lr <= 0:
            raise DermretrError(f"lr must be positive, got {self.lr}")
        metric = self.select_metric.split("@")[0]
        if metric not in ("recall", "precision", "map", "ndcg", "mrr"):
            raise DermretrError(f"select_metric {self.select_metric!r} is not a retrieval metric (e.g. map@10)")


@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    retriever: Retriever
    history: list[dict]
    best: dict
    run_dir: Path


class _Pairs(Dataset):
    """Two augmented views of cached case images: (query view, target view, row index)."""

    def __init__(self, images: list, transform, augment_transform):
        self.images = images
        self.transform = transform
        self.augment = augment_transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        aug = self.augment or self.transform
        return aug(img), aug(img), i


def _cache_images(paths: list[str], size: int, progress: bool) -> list:
    """Decode every image once, resized so the short side is ``size`` (training reads from memory)."""
    out = []
    for p in tqdm(paths, desc="Loading images", unit="img", disable=not progress):
        img = load_rgb(p)
        scale = size / min(img.size)
        if abs(scale - 1) > 1e-6:
            img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                             resample=3)
        out.append(img)
    return out


def _transforms(backbone, size: int, augment: bool):
    norm = next((t for t in getattr(backbone.preprocess, "transforms", []) if isinstance(t, v2.Normalize)
                 or type(t).__name__ == "Normalize"), None)
    mean = tuple(getattr(norm, "mean", (0.48145466, 0.4578275, 0.40821073)))
    std = tuple(getattr(norm, "std", (0.26862954, 0.26130258, 0.27577711)))
    base = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True), v2.CenterCrop(size),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    if not augment:
        return base, None
    aug = v2.Compose([
        v2.PILToTensor(),
        v2.RandomResizedCrop(size, scale=(0.75, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.05),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])
    return base, aug


def _read_triplets(data: str, cases: pd.DataFrame) -> pd.DataFrame:
    source, path = parse_spec(data)
    file = Path(path).expanduser() / "meta" / "modifications.csv"
    if source != "synthetic" or not file.is_file():
        return pd.DataFrame(columns=["ref", "tgt", "text"])
    mods = pd.read_csv(file, dtype=str, keep_default_na=False)
    pos = {cid: i for i, cid in enumerate(cases["case_id"])}
    mods = mods[mods["reference_case_id"].isin(pos) & mods["target_case_id"].isin(pos)]
    return pd.DataFrame({"ref": mods["reference_case_id"].map(pos).to_numpy(dtype=int),
                         "tgt": mods["target_case_id"].map(pos).to_numpy(dtype=int),
                         "text": mods["modification_text"].to_numpy()})


def _balance_weights(cases: pd.DataFrame, balance_by: str) -> torch.Tensor:
    """Sampling weight of each case: ``1 / size`` of its stratum (its combination of ``balance_by`` values)."""
    columns = [c.strip() for c in balance_by.split(",") if c.strip()]
    missing = [c for c in columns if c not in cases.columns]
    if not columns or missing:
        raise DermretrError(f"balance_by {balance_by!r}: column(s) {missing or columns} not in the case table; "
                            f"use columns such as diagnosis_group or diagnosis_group,fitzpatrick")
    strata = cases[columns].astype("string").fillna("<unknown>").agg("|".join, axis=1)
    return torch.tensor((1.0 / strata.map(strata.value_counts())).to_numpy(dtype=float), dtype=torch.double)


def _check_resume(run: Path, cfg: TrainConfig) -> dict:
    saved_file = run / "config.json"
    if not saved_file.is_file():
        raise DermretrError(f"cannot resume: {saved_file} not found (start the run without --resume)")
    saved = json.loads(saved_file.read_text())
    now = asdict(cfg)
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUME_KEYS_FREE and saved.get(k) != now.get(k))
    if diff:
        details = ", ".join(f"{k}: run has {saved.get(k)!r}, you asked {now.get(k)!r}" for k in diff)
        raise DermretrError(f"cannot resume {run}: the config differs ({details}); use the same settings "
                            "or another --out")
    return saved


def _curve(history: list[dict], metric: str) -> Figure:
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h["loss"] for h in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", title="Loss")
    for key in (metric, "recall@1", "recall@10"):
        if key in history[0]:
            ax2.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax2.set(xlabel="epoch", ylabel="validation", title="Validation (case search)", ylim=(0, 1))
    ax2.legend(fontsize=8)
    return fig


def fit(config: TrainConfig, on_epoch_end: Callable[[dict], None] | None = None) -> TrainResult:
    """Train a retriever as described by ``config``; see the module docstring.

    ``on_epoch_end(record)`` is called after each epoch's checkpoint is written
    (it may raise, e.g. to stop a run early; the run resumes from there).
    """
    config.check()
    run = Path(config.out).expanduser()
    if config.resume:
        _check_resume(run, config)
    elif (run / "config.json").exists():
        raise DermretrError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)

    cases = load(config.data)
    train_idx = np.flatnonzero(cases["split"].astype(str).to_numpy() == "train")
    if len(train_idx) == 0:
        raise DermretrError(f"{config.data} has no training cases (split 'train')")
    if config.batch_size > len(train_idx):
        raise DermretrError(f"batch size {config.batch_size} is larger than the training set ({len(train_idx)} "
                            f"cases); use --batch-size {len(train_idx)} or less")
    has_val = bool((cases["split"].astype(str) == "val").any())

    backbone = create(config.backbone, pretrained=config.pretrained, device=device, image_size=config.image_size)
    model = Retriever(backbone, kind=config.model, n_masks=config.n_masks, alpha=config.alpha,
                      learn_alpha=config.learn_alpha, freeze_backbone=config.freeze_backbone).to(device)
    base_tf, aug_tf = _transforms(backbone, backbone.image_size, config.augment)
    images = _cache_images(cases["image_path"].tolist(), backbone.image_size, config.progress)
    train_cases = cases.iloc[train_idx].reset_index(drop=True)
    pairs = _Pairs([images[i] for i in train_idx], base_tf, aug_tf)
    groups = train_cases["diagnosis_group"].astype(str).to_numpy()
    weights = _balance_weights(train_cases, config.balance_by)
    triplets = _read_triplets(config.data, cases) if config.modifications else None
    if triplets is not None:
        train_set = set(train_idx.tolist())
        triplets = triplets[triplets["ref"].isin(train_set) & triplets["tgt"].isin(train_set)].reset_index(drop=True)

    groups_, params = _param_groups(model, config)
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

    history: list[dict] = []
    best: dict = {}
    start_epoch = 1
    ckpt_dir = run / "checkpoints"
    if config.resume and (ckpt_dir / "last.pt").is_file():
        state = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history = json.loads(state["history"])
        best = json.loads(state["best"])
        start_epoch = int(state["epoch"]) + 1
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / "config.json") as tmp:
        tmp.write_text(json.dumps(asdict(config), indent=2, sort_keys=True) + "\n")

    def views(idx: list[int]) -> torch.Tensor:
        tf = aug_tf or base_tf
        return torch.stack([tf(images[i]) for i in idx]).to(device)

    for epoch in range(start_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)  # augmentation draws: same per epoch on resume
        rng = random.Random(config.seed * 100_003 + epoch)
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        sampler = (WeightedRandomSampler(weights, num_samples=len(train_idx), replacement=True, generator=gen)
                   if config.balanced else torch.utils.data.RandomSampler(pairs, generator=gen))
        loader = DataLoader(pairs, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                            num_workers=config.num_workers)
        trip_order = (torch.randperm(len(triplets), generator=gen).tolist()
                      if triplets is not None and len(triplets) else [])
        model.train()
        sums: dict[str, float] = {}
        n_steps = 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", disable=not config.progress, leave=False)
        for step, (q_img, t_img, rows) in enumerate(bar):
            rows = rows.tolist()
            q_img, t_img = q_img.to(device), t_img.to(device)
            texts = [case_text(train_cases.iloc[r], style=rng.choice(TEXT_STYLES), seed=rng.randrange(2**31))
                     for r in rows]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                q = model.query_features(q_img, texts)
                t = model.target_features(t_img)
                pos, valid = group_positives([groups[r] for r in rows], device=device)
                patient_sim = patient_pos = None
                if config.patient_weight > 0:
                    patient_sim = t["global"] @ t["global"].T
                    pids = train_cases["patient_id"].to_numpy()[rows]
                    patient_pos = torch.tensor(pids[:, None] == pids[None, :], device=device)
                loss, parts = loss_fn(model.score(q, t), model.logit_scale, pos, valid, model.uses_local,
                                      patient_sim, patient_pos, _word_region(model, q, t, texts, config))
                if trip_order:
                    half = max(2, config.batch_size // 2)
                    pick = [trip_order[(step * half + j) % len(trip_order)] for j in range(half)]
                    tb = triplets.iloc[pick]
                    qm = model.query_features(views(tb["ref"].tolist()), tb["text"].tolist())
                    tm = model.target_features(views(tb["tgt"].tolist()))
                    tgt_ids = tb["tgt"].to_numpy()
                    mpos = torch.tensor(tgt_ids[:, None] == tgt_ids[None, :], device=device)
                    mloss, mparts = loss_fn(model.score(qm, tm), model.logit_scale, mpos, None, model.uses_local)
                    loss = loss + mloss
                    parts["modification"] = mparts["combined"]
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n_steps += 1
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if t.get("attn") is not None:  # are the target masks distinct and focused? (collapse check)
                stats = SpatialMasks.statistics(t["attn"])
                sums["mask_entropy"] = sums.get("mask_entropy", 0.0) + stats["entropy_fraction"]
                sums["mask_overlap"] = sums.get("mask_overlap", 0.0) + stats["overlap"]
            bar.set_postfix(loss=f"{sums['loss'] / n_steps:.3f}")
        record = {"epoch": epoch, **{k: v / max(1, n_steps) for k, v in sums.items()},
                  "lr": optimizer.param_groups[0]["lr"], "alpha": model.alpha,
                  "train_seconds": round(time.perf_counter() - t0, 2)}
        if has_val:
            # the gallery (training images) is encoded from the images already in memory
            gallery = model.encode_targets([images[i] for i in train_idx], batch_size=max(config.batch_size, 64))
            _, summary = case_search(model, cases, query_split="val", gallery_splits=("train",),
                                     batch_size=max(config.batch_size, 64), gallery=gallery)
            record.update({k: v for k, v in summary.items() if k != "n_queries"})
        history.append(record)
        metric = record.get(config.select_metric, -record["loss"])
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not best or metric > best["value"]:
            best = {"epoch": epoch, "metric": config.select_metric if has_val else "-loss", "value": metric}
            model.save(ckpt_dir / "best.pt", extra={"epoch": epoch, "metric": best["metric"], "value": metric})
        _write_state(ckpt_dir / "last.pt", model, optimizer, scheduler, scaler, epoch, history, best)
        with atomic_path(run / "metrics.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
        save_figure(_curve(history, config.select_metric), run / "training_curve.png")
        if config.progress:
            shown = ", ".join(f"{k} {record[k]:.3f}" for k in ("loss", "recall@1", "map@10") if k in record)
            tqdm.write(f"epoch {epoch}/{config.epochs}: {shown} ({record['train_seconds']:.0f} s)")
        if on_epoch_end is not None:
            on_epoch_end(record)
    return TrainResult(retriever=model, history=history, best=best, run_dir=run)


def _param_groups(model: Retriever, config: TrainConfig) -> tuple[list[dict], list[torch.nn.Parameter]]:
    """AdamW groups: weight decay on matrices only (not on biases, norms, prototypes, temperatures); the
    local-evidence weight ``alpha`` learns ``alpha_lr_mult`` times faster (a single logit barely moves at
    the backbone's rate, so without it ``alpha`` would stay where it started)."""
    decay, no_decay, fast = [], [], []
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
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    if fast:
        groups.append({"params": fast, "weight_decay": 0.0, "lr": config.lr * config.alpha_lr_mult})
    return [g for g in groups if g["params"]], decay + no_decay + fast


def _word_region(model: Retriever, q: dict, t: dict, texts: list[str], config: TrainConfig):
    """AFLoc-style word-to-region scores between query texts and target patches, when enabled."""
    if config.word_region_weight <= 0 or t.get("tokens") is None:
        return None
    from .models.losses import word_region_scores

    tokens = model.backbone.tokenize(texts)
    _, feats, mask = model.backbone.encode_text(tokens)
    proj = getattr(model.encoder, "text_projection", None)
    words = feats @ proj if isinstance(proj, torch.Tensor) else feats
    vproj = model.backbone.project_tokens()
    patches = t["tokens"] @ vproj if vproj is not None else t["tokens"]
    if words.shape[-1] != patches.shape[-1]:
        return None
    mask = mask & (tokens != tokens.max(dim=1, keepdim=True).values)  # drop the end-of-text token
    mask[:, 0] = False  # and the start token
    return word_region_scores(words, mask, patches)


def _write_state(path: Path, model, optimizer, scheduler, scaler, epoch: int, history: list, best: dict) -> None:
    state = {
        "state_dict": model.state_dict(),
        "config": model.config(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "history": json.dumps(history),
        "best": json.dumps(best),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def config_from_dict(values: dict) -> TrainConfig:
    """A :class:`TrainConfig` from a dict (e.g. a run's config.json), rejecting unknown keys."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DermretrError(f"unknown training option(s) {unknown}; known: {', '.join(sorted(known))}")
    return TrainConfig(**values)

