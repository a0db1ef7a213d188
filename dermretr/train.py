"""Training composed retrievers on CPU or GPU.

:func:`fit` trains a :class:`~dermretr.models.retriever.Retriever` of any kind
on a case table (``TrainConfig.data`` is a ``SOURCE:PATH`` spec):

* case search: query = (augmented image, its findings text in a random
  style; never the caption, which may name the diagnosis), targets = the other in-batch images (a second augmentation); every
  in-batch case of the same diagnosis group is a positive, the query's own
  case is left out;
* modification triplets (DermSynth's ``meta/modifications.csv``): query =
  (reference image, modification text), the exact target is the positive;
* tone triplets (:func:`derive_tone_triplets`, with ``modifications`` and ``tone_triplets`` (off by default),
  when the training cases have skin-tone labels in two ranges or more):
  query = (reference image, "on Fitzpatrick type V-VI skin: " + its
  findings), target = a training case of its diagnosis group in that range;
  every in-batch target of that group and range is a positive (whichever
  triplet brought it), and a modification's exact target is its positive;
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

Run folder safety
-----------------
* RUN_DIR must be new, empty, or a run folder dermretr wrote (marked with
  ``.dermretr.json``; older runs are recognised by their ``config.json``); a
  folder of the user's is refused, never emptied, and a file is refused.  It is
  checked (and made) before the data is loaded, so an unwritable place fails at
  once.  While :func:`fit` runs, RUN_DIR is locked: a second training into it
  gets a clear error instead of racing the first.  Temporaries left by a killed
  run are removed (with a warning) when the next one starts.
* A folder holding a completed epoch (``checkpoints/last.pt``, ``best.pt`` or
  ``metrics.jsonl``) is only continued with ``resume=True``; one whose first
  epoch never finished (a crash, a full disk) is simply started again.
* A failed write (a full disk...) is an :class:`~dermretr.OutputError` naming
  the file; the previous ``last.pt``/``best.pt`` are left as they were.

Write order and the invariant after a kill
------------------------------------------
Each epoch writes, each file atomically: ``last.pt`` first (weights,
optimiser, history and the best record), then ``metrics.jsonl``, then
``best.pt`` when the epoch improved the best, then the figure.  So ``last.pt``
is always the newest and the reference: ``metrics.jsonl`` and ``best.pt`` are
never newer than it, and at most one step behind.  On ``resume=True`` that step
is repaired from ``last.pt``: ``metrics.jsonl`` is rewritten from its history
when it differs, and when its best record names its own epoch but ``best.pt``
holds another (or is missing), ``best.pt`` is written from its weights.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data.synth import generate
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> root = generate(tmp / "ds", n_cases=40, image_size=64, workers=1, progress=False)
>>> cfg = TrainConfig(data=f"synthetic:{root}", out=str(tmp / "run"), epochs=1, batch_size=8,
...                   image_size=64, progress=False)
>>> result = fit(cfg)
>>> sorted(p.name for p in (tmp / "run").iterdir())  # .dermretr.json marks the folder as dermretr's
['.dermretr.json', 'checkpoints', 'config.json', 'metrics.jsonl', 'training_curve.png']
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import random
import re
import tempfile
import time
import warnings
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
from ._errors import DermretrError, OutputError
from ._io import OWNER_FILE, atomic_path, claim_dir, clean_stale, exclusive, os_error, save_figure
from .data import load, parse_spec
from .data.images import load_rgb
from .data.vocab import TEXT_STYLES, TONE_RANGES, TONE_STYLES, case_text, tone_findings, tone_query_text
from .evaluate import case_search, tone_ranges
from .models.backbones import create, read_weights, weights_mismatch
from .models.composer import SpatialMasks
from .models.losses import RetrievalLoss, group_positives
from .models.retriever import CHECKPOINT_FORMAT, DEFAULT_ALPHA, KINDS, Retriever, save_checkpoint

__all__ = ["TrainConfig", "fit", "TrainResult", "RESUME_KEYS_FREE", "config_from_dict", "read_run_config",
           "derive_tone_triplets"]

#: Config keys that may differ when resuming (everything else must match the run; ``out`` may differ
#: because a run folder may be moved or named another way).
RESUME_KEYS_FREE = ("epochs", "resume", "progress", "device", "num_workers", "out")

#: ``select_metric``: a metric at a positive cut-off, or MRR.
_METRIC_RE = re.compile(r"^(?:(?:recall|precision|map|ndcg)@([1-9][0-9]*)|mrr)$")
_DEVICE_RE = re.compile(r"^(?:auto|cpu|mps|cuda(?::[0-9]+)?)$")
_STR_FIELDS = ("data", "out", "model", "backbone", "balance_by", "select_metric", "device")
_BOOL_FIELDS = ("learn_alpha", "freeze_backbone", "text_skip", "balanced", "augment", "modifications", "tone_triplets",
                "resume", "progress")
#: integer fields and their least value
_INT_FIELDS = {"epochs": 1, "batch_size": 2, "image_size": 1, "n_masks": 1, "seed": 0, "num_workers": 0}
#: float fields: (least value, whether the least value itself is allowed, greatest value or None)
_FLOAT_FIELDS = {"lr": (0.0, False, None), "weight_decay": (0.0, True, None), "alpha": (0.0, True, 1.0),
                 "alpha_lr_mult": (0.0, False, None), "patient_weight": (0.0, True, None),
                 "word_region_weight": (0.0, True, None)}


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
    text_skip : bool
        ``global``/``full``: the composers start as late fusion (a learned-scale text term); ``False``
        is the ablation, the composer before checkpoint format 4.
    balanced : bool
        Balanced sampling over the strata of ``balance_by``.
    balance_by : str
        Comma-separated case-table columns whose value combinations are sampled equally often
        (default ``diagnosis_group``; ``diagnosis_group,fitzpatrick`` also balances skin types, a
        fairness mitigation).  Unknown values form their own stratum.
    augment : bool
        Mild augmentation.
    modifications : bool
        Also train on triplets: DermSynth's modification triplets when the data has them, and (with
        ``tone_triplets``) tone triplets.
    tone_triplets : bool
        With ``modifications``: also tone triplets ("this case, on darker skin") when the training cases
        have skin-type labels in two ranges or more.  Off by default: on DermSynth (1,000 cases, seed 0)
        they lift the tone protocol's macro mAP@10 from 0.03 (random) to 0.24 (filter-only 0.13) but cut
        case search from 0.44 to 0.30 mAP@10 and modification Recall@1 from 0.53 to 0.18.
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
    text_skip: bool = True
    balanced: bool = True
    balance_by: str = "diagnosis_group"
    augment: bool = True
    modifications: bool = True
    tone_triplets: bool = False
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
        """Raise :class:`DermretrError` for values that cannot work (of a wrong type, out of range, not finite)."""
        for name in _STR_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise DermretrError(f"{name} must be a non-empty string, got {value!r}")
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise DermretrError(f"pretrained must be a pretrained tag or the path of a weights file (a string) or "
                                f"None, got {self.pretrained!r}")
        if self.model not in KINDS:
            raise DermretrError(f"unknown model {self.model!r}; choose from {', '.join(KINDS)}")
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise DermretrError(f"{name} must be True or False, got {value!r}")
        for name, least in _INT_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise DermretrError(f"{name} must be an integer, got {value!r}")
            if value < least:
                if name == "batch_size":
                    raise DermretrError(f"batch_size must be at least 2, got {value!r}: the other cases in a batch "
                                        "are the negatives")
                raise DermretrError(f"{name} must be {'a positive integer' if least else 'an integer >= 0'}, "
                                    f"got {value!r}")
        if self.seed >= 2**32:
            raise DermretrError(f"seed must be below 2**32, got {self.seed!r}")
        for name, (least, inclusive, greatest) in _FLOAT_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise DermretrError(f"{name} must be a number, got {value!r}")
            ok = math.isfinite(value) and (value >= least if inclusive else value > least) and (
                greatest is None or value <= greatest)
            if not ok:
                want = (f"in [{least:g}, {greatest:g}]" if greatest is not None
                        else f"{'>=' if inclusive else '>'} {least:g}")
                raise DermretrError(f"{name} must be a finite number {want}, got {value!r}")
        if not _METRIC_RE.match(self.select_metric):
            raise DermretrError(f"select_metric {self.select_metric!r} is not a retrieval metric: use recall@K, "
                                "precision@K, map@K or ndcg@K with K a positive integer (e.g. map@10), or mrr")
        if not _DEVICE_RE.match(self.device):
            raise DermretrError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N or mps")
        if not isinstance(self.extra, dict):
            raise DermretrError(f"extra must be a dict, got {self.extra!r}")
        try:
            json.dumps(self.extra, default=_plain)
        except (TypeError, ValueError) as exc:
            raise DermretrError(f"extra must hold JSON values only (it is saved in config.json): {exc}") from None


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


_TONE_TRIPLET_COLUMNS = ["reference_case_id", "target_case_id", "modification_text", "target_range", "scale",
                         "relevant_value"]


def derive_tone_triplets(cases: pd.DataFrame, seed: int = 0, relevant: str = "diagnosis_group") -> pd.DataFrame:
    """Tone triplets of training cases: "this case, on another skin tone" and a case that answers it.

    The scale is the first of Fitzpatrick and Monk in which ``cases`` have
    skin-tone labels in two ranges or more
    (:func:`~dermretr.evaluate.tone_ranges`); without one the table is
    empty.  Every case with a known range gets one triplet: an other range
    in which ``cases`` hold a case of its ``relevant`` value from another
    patient is drawn, and one such case is the target.  The text is
    :func:`~dermretr.data.vocab.tone_query_text` of the reference's findings
    (its own skin-type mention removed; a random text style) with a random
    tone style, as the tone protocol's queries (:func:`~dermretr.evaluate.tone_search`).

    Parameters
    ----------
    cases : DataFrame
        The training cases.
    seed : int
        Draws of ranges, targets and styles.
    relevant : {"diagnosis_group", "diagnosis"}
        What a target shares with the reference.

    Returns
    -------
    DataFrame
        ``reference_case_id, target_case_id, modification_text, target_range,
        scale, relevant_value``, one row per reference.

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"),
    ...     "diagnosis_group": ["MEL", "MEL", "MEL", "NEV"], "fitzpatrick": [1, 2, 6, 6],
    ...     "streaks": ["irregular", None, None, None]})
    >>> t = derive_tone_triplets(cases)
    >>> t[["reference_case_id", "target_case_id", "target_range"]].to_numpy().tolist()
    [['a', 'c', 'V-VI'], ['b', 'c', 'V-VI'], ['c', 'b', 'I-II']]
    >>> from dermretr.data.vocab import parse_tone
    >>> parse_tone(t.loc[0, "modification_text"]), derive_tone_triplets(cases.assign(fitzpatrick=1)).empty
    ('V-VI', True)
    """
    for scale in ("fitzpatrick", "monk"):
        ranges = tone_ranges(cases, scale)
        if len({r for r in ranges if r is not None}) >= 2:
            break
    else:
        return pd.DataFrame(columns=_TONE_TRIPLET_COLUMNS)
    rng = random.Random(seed)
    values = cases[relevant].astype(object).to_numpy()
    patients = cases["patient_id"].astype(str).to_numpy()
    ids = cases["case_id"].astype(str).to_numpy()
    lists: dict[tuple[str, str], list[int]] = {}
    for j, (value, r) in enumerate(zip(values, ranges)):
        if r is not None and pd.notna(value):
            lists.setdefault((str(value), r), []).append(j)
    pool = {key: np.array(js) for key, js in lists.items()}
    empty = np.zeros(0, dtype=int)
    rows = []
    for i, (value, own) in enumerate(zip(values, ranges)):
        if own is None or pd.isna(value):
            continue
        options = {t: js[patients[js] != patients[i]] for t in TONE_RANGES[scale] if t != own
                   for js in [pool.get((str(value), t), empty)]}
        options = {t: js for t, js in options.items() if len(js)}
        if not options:
            continue
        target = rng.choice(list(options))  # in range order
        j = int(options[target][rng.randrange(len(options[target]))])
        findings = tone_findings(cases.iloc[i], style=rng.choice(TEXT_STYLES), seed=rng.randrange(2**31))
        rows.append([ids[i], ids[j], tone_query_text(findings, target, scale, rng.choice(TONE_STYLES)), target,
                     scale, str(value)])
    return pd.DataFrame(rows, columns=_TONE_TRIPLET_COLUMNS)


def _training_triplets(data: str, cases: pd.DataFrame, train_idx: np.ndarray, seed: int,
                       tone_wanted: bool = True) -> pd.DataFrame:
    """DermSynth's modification triplets and the tone triplets among training cases: ``ref``, ``tgt`` (rows of
    ``cases``), ``text``, ``key`` (what a tone query asks for, ``"group|range"``; empty for a modification,
    which asks for its exact target) and ``target_key`` (the target's own ``"group|range"``).  See
    :func:`_triplet_positives`."""
    mods = _read_triplets(data, cases)
    train_set = set(train_idx.tolist())
    mods = mods[mods["ref"].isin(train_set) & mods["tgt"].isin(train_set)].assign(key="")
    tone = (derive_tone_triplets(cases.iloc[train_idx].reset_index(drop=True), seed=seed) if tone_wanted
            else pd.DataFrame(columns=_TONE_TRIPLET_COLUMNS))
    pos = {cid: i for i, cid in enumerate(cases["case_id"].astype(str))}
    tone = pd.DataFrame({"ref": tone["reference_case_id"].map(pos), "tgt": tone["target_case_id"].map(pos),
                         "text": tone["modification_text"],
                         "key": tone["relevant_value"] + "|" + tone["target_range"], "scale": tone["scale"]})
    out = pd.concat([mods, tone], ignore_index=True).astype({"ref": int, "tgt": int, "key": str})
    target_key = np.full(len(cases), "", dtype=object)
    if len(tone):
        ranges = tone_ranges(cases, str(tone["scale"].iloc[0]))
        groups = cases["diagnosis_group"].astype(str).to_numpy()
        target_key = np.array([f"{g}|{r}" if r is not None else "" for g, r in zip(groups, ranges)], dtype=object)
    return out.drop(columns="scale", errors="ignore").assign(target_key=target_key[out["tgt"].to_numpy()])


def _triplet_positives(batch: pd.DataFrame) -> np.ndarray:
    """Which in-batch targets answer each triplet query: its own target image (any triplet), and for a tone
    query every target of the group and skin-tone range it asks for (whichever triplet brought it).

    >>> batch = pd.DataFrame({"tgt": [5, 5, 7, 8], "key": ["", "MEL|V-VI", "MEL|V-VI", ""],
    ...                       "target_key": ["MEL|V-VI", "MEL|V-VI", "MEL|V-VI", "NEV|I-II"]})
    >>> _triplet_positives(batch).astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    """
    tgt = batch["tgt"].to_numpy()
    key, target_key = batch["key"].to_numpy(dtype=object), batch["target_key"].to_numpy(dtype=object)
    return (tgt[:, None] == tgt[None, :]) | ((key[:, None] != "") & (key[:, None] == target_key[None, :]))


def _balance_weights(cases: pd.DataFrame, balance_by: str) -> torch.Tensor:
    """Sampling weight of each case: ``1 / size`` of its stratum (its combination of ``balance_by`` values)."""
    columns = [c.strip() for c in balance_by.split(",") if c.strip()]
    missing = [c for c in columns if c not in cases.columns]
    if not columns or missing:
        raise DermretrError(f"balance_by {balance_by!r}: column(s) {missing or columns} not in the case table; "
                            f"use columns such as diagnosis_group or diagnosis_group,fitzpatrick")
    strata = cases[columns].astype("string").fillna("<unknown>").agg("|".join, axis=1)
    return torch.tensor((1.0 / strata.map(strata.value_counts())).to_numpy(dtype=float), dtype=torch.double)


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false",
               type(None): "null"}


def read_run_config(file: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run's ``config.json``, checked; a DermretrError naming the file."""
    file = Path(file)
    restore = "restore it, or start a new run in another --out"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DermretrError(f"{file} not found") from None
    except UnicodeDecodeError:
        raise DermretrError(f"{file} is not a text file, so not the run's config.json; {restore}") from None
    except OSError as exc:
        raise DermretrError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        values = json.loads(text)
    except ValueError as exc:
        where = f" ({exc.msg}, line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DermretrError(f"{file} is not valid JSON{where}; it should hold the run's training options as dermretr "
                            f"wrote them: {restore}") from None
    if not isinstance(values, dict):
        raise DermretrError(f"{file} holds {_JSON_TYPES.get(type(values), 'a JSON value')}, not an object of "
                            f"training options; {restore}")
    if "text_skip" not in values and values.get("model", "full") in ("global", "full"):
        values = {**values, "text_skip": False}  # a run of a dermretr before format 4: composers without a text skip
    return config_from_dict(values, source=file)


def _check_resume(run: Path, cfg: TrainConfig) -> dict:
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


def _completed(run: Path) -> str | None:
    """What in ``run`` shows that an epoch was completed (None when nothing does)."""
    for rel in ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl"):
        file = run / rel
        try:
            if file.exists() and (rel != "metrics.jsonl" or file.stat().st_size > 0):
                return rel
        except OSError:
            return rel
    return None


def _check_writable(folder: Path) -> None:
    """Create and remove a temporary file in ``folder``: an OutputError now rather than after the first epoch."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".write-check.dermretr-{os.getpid()}-", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise os_error(exc, folder) from None


def _plain(value):
    """JSON form of numpy scalars in a config (``json.dumps(default=...)``)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


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
    if ax2.get_legend_handles_labels()[0]:  # a run without validation cases has no curve to name
        ax2.legend(fontsize=8)
    return fig


def fit(config: TrainConfig, on_epoch_end: Callable[[dict], None] | None = None, *,
        cases: pd.DataFrame | None = None) -> TrainResult:
    """Train a retriever as described by ``config``; see the module docstring.

    ``on_epoch_end(record)`` is called after each epoch's checkpoint is written
    (it may raise, e.g. to stop a run early; the run resumes from there).
    ``cases`` replaces the table loaded from ``config.data`` (validated here), for
    splits that a benchmark makes itself, such as the folds of a cross-validation;
    ``config.data`` still names where the cases come from (and DermSynth's
    modification triplets).
    """
    config.check()
    if cases is not None:
        from .data.cases import validate_cases

        if not isinstance(cases, pd.DataFrame):
            raise DermretrError(f"cases must be a case table (pandas DataFrame), got {type(cases).__name__}")
        cases = validate_cases(cases)
    run = Path(config.out).expanduser().absolute()
    claim_dir(run, "run", option="--out", recognise=is_run_folder, create=False)  # a file, a user's folder: refused
    with exclusive(run, "--out"):
        created = not run.exists()
        try:
            return _fit(config, run, on_epoch_end, cases)
        except BaseException:
            if created:  # nothing of the run was written: leave no empty folder behind
                try:
                    if {p.name for p in run.iterdir()} <= {OWNER_FILE}:
                        (run / OWNER_FILE).unlink(missing_ok=True)
                        run.rmdir()
                except OSError:
                    pass
            raise


def _fit(config: TrainConfig, run: Path, on_epoch_end: Callable[[dict], None] | None,
         cases: pd.DataFrame | None = None) -> TrainResult:
    claim_dir(run, "run", option="--out", recognise=is_run_folder)
    _check_writable(run)
    ckpt_dir = run / "checkpoints"
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise OutputError(f"{ckpt_dir} is a file, not a folder; choose another --out")
    if ckpt_dir.is_dir():
        _check_writable(ckpt_dir)
    clean_stale(run)
    clean_stale(ckpt_dir)
    if config.resume:
        _check_resume(run, config)
        if not (ckpt_dir / "last.pt").exists() and (ckpt_dir / "best.pt").exists():
            raise DermretrError(f"cannot resume {run}: checkpoints/last.pt is missing (only best.pt is there), so "
                                "training cannot continue; choose another --out (best.pt is kept)")
    else:
        done = _completed(run)
        if done is not None:
            raise DermretrError(f"{run} already holds a run; pass --resume to continue it or choose another --out "
                                f"(it has {done})")
    device = resolve_device(config.device)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DermretrError(f"device {config.device!r}: there are only {torch.cuda.device_count()} CUDA GPU(s) "
                            f"here (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DermretrError(f"device {config.device!r} asked for, but MPS is not available here; use 'auto' or 'cpu'")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)

    cases = load(config.data) if cases is None else cases
    train_idx = np.flatnonzero(cases["split"].astype(str).to_numpy() == "train")
    if len(train_idx) == 0:
        raise DermretrError(f"{config.data} has no training cases (split 'train')")
    if config.batch_size > len(train_idx):
        raise DermretrError(f"batch size {config.batch_size} is larger than the training set ({len(train_idx)} "
                            f"cases); use --batch-size {len(train_idx)} or less")
    has_val = bool((cases["split"].astype(str) == "val").any())
    train_cases = cases.iloc[train_idx].reset_index(drop=True)
    weights = _balance_weights(train_cases, config.balance_by)  # a bad column fails before the slow part

    backbone = create(config.backbone, pretrained=config.pretrained, device=device, image_size=config.image_size)
    model = Retriever(backbone, kind=config.model, n_masks=config.n_masks, alpha=config.alpha,
                      learn_alpha=config.learn_alpha, freeze_backbone=config.freeze_backbone,
                      text_skip=config.text_skip).to(device)
    base_tf, aug_tf = _transforms(backbone, backbone.image_size, config.augment)
    images = _cache_images(cases["image_path"].tolist(), backbone.image_size, config.progress)
    pairs = _Pairs([images[i] for i in train_idx], base_tf, aug_tf)
    groups = train_cases["diagnosis_group"].astype(str).to_numpy()
    triplets = (_training_triplets(config.data, cases, train_idx, config.seed, tone_wanted=config.tone_triplets)
                if config.modifications else None)

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
    ks = sorted({1, 5, 10} | {int(m[1]) for m in [_METRIC_RE.match(config.select_metric)] if m and m[1]})

    history: list[dict] = []
    best: dict = {}
    start_epoch = 1
    if config.resume and (ckpt_dir / "last.pt").exists():  # read_weights says what is wrong with it
        done, history, best = _read_state(ckpt_dir / "last.pt", model, optimizer, scheduler, scaler)
        start_epoch = done + 1
        _repair(run, model, done, history, best, config.select_metric)
    with atomic_path(run / "config.json") as tmp:
        tmp.write_text(json.dumps(asdict(config), indent=2, sort_keys=True, default=_plain) + "\n")

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
            # the composed query's text is the findings view, as at search time: a caption naming the
            # diagnosis would teach the model to read the answer from the question
            texts = [case_text(train_cases.iloc[r], style=rng.choice(TEXT_STYLES), seed=rng.randrange(2**31),
                               view="findings") for r in rows]
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
                    mpos = torch.tensor(_triplet_positives(tb), device=device)
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
            _, summary = case_search(model, cases, query_split="val", gallery_splits=("train",), ks=ks,
                                     batch_size=max(config.batch_size, 64), gallery=gallery)
            record.update({k: v for k, v in summary.items() if k != "n_queries"})
        history.append(record)
        name = config.select_metric if config.select_metric in record else "-loss"  # no usable validation: loss
        metric = record[name] if name in record else -record["loss"]
        improved = not best or metric > best["value"] or (math.isnan(best["value"]) and not math.isnan(metric))
        if improved:
            best = {"epoch": epoch, "metric": name, "value": metric}
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, ckpt_dir) from None
        # last.pt first: it is the reference a resumed run repairs the others from (see the module docstring)
        _write_state(ckpt_dir / "last.pt", model, optimizer, scheduler, scaler, epoch, history, best)
        _write_metrics(run, history)
        if improved:
            _write_best(model, ckpt_dir / "best.pt", best)
        _write_curve(run, history, config.select_metric)
        if config.progress:
            shown = ", ".join(f"{k} {record[k]:.3f}" for k in ("loss", "recall@1", "map@10") if k in record)
            tqdm.write(f"epoch {epoch}/{config.epochs}: {shown} ({record['train_seconds']:.0f} s)")
        if on_epoch_end is not None:
            on_epoch_end(record)
    return TrainResult(retriever=model, history=history, best=best, run_dir=Path(config.out).expanduser())


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


def _metrics_text(history: list[dict]) -> str:
    return "".join(json.dumps(h) + "\n" for h in history)


def _write_metrics(run: Path, history: list[dict]) -> None:
    with atomic_path(run / "metrics.jsonl") as tmp:
        tmp.write_text(_metrics_text(history))


def _write_best(model: Retriever, path: Path, best: dict) -> None:
    model.save(path, extra={"epoch": best["epoch"], "metric": best["metric"], "value": best["value"]})


def _write_curve(run: Path, history: list[dict], metric: str) -> None:
    save_figure(_curve(history, metric), run / "training_curve.png")


_STATE_KEYS = ("state_dict", "optimizer", "scheduler", "scaler", "epoch", "history", "best")


def _read_state(path: Path, model, optimizer, scheduler, scaler) -> tuple[int, list[dict], dict]:
    """Load ``last.pt`` into the model and the optimiser etc.; its epoch, history and best record."""
    expected = "a training checkpoint (checkpoints/last.pt written by `dermretr train`)"

    def fail(reason: str) -> DermretrError:
        return DermretrError(f"cannot resume from {path}: {reason}; expected {expected} (use another --out to start "
                             "a new run)")

    state = read_weights(path, expected)
    if not isinstance(state, dict):
        raise fail(f"it holds a {type(state).__name__}")
    missing = [k for k in _STATE_KEYS if k not in state]
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


def _best_epoch(path: Path) -> int | None:
    """The epoch a ``best.pt`` holds (None when it is missing or unreadable)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return int(payload["extra"]["epoch"])
    except Exception:  # missing, damaged or foreign: treated as not holding the best epoch
        return None


def _repair(run: Path, model: Retriever, epoch: int, history: list[dict], best: dict, metric: str) -> None:
    """Bring ``metrics.jsonl`` and ``best.pt`` up to ``last.pt`` (its ``epoch``, history and best record)
    after a run was killed between its writes (see the module docstring)."""
    file = run / "metrics.jsonl"
    try:
        current = file.read_text(encoding="utf-8") if file.is_file() else None
    except (OSError, UnicodeDecodeError):
        current = None
    stale = current != _metrics_text(history)
    if stale:
        _write_metrics(run, history)
    curve = run / "training_curve.png"
    try:
        old_curve = curve.stat().st_mtime_ns < (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    except OSError:
        old_curve = True
    if history and (stale or old_curve):
        _write_curve(run, history, metric)
    best_file = run / "checkpoints" / "best.pt"
    if best and _best_epoch(best_file) != best.get("epoch"):
        if best.get("epoch") == epoch:
            _write_best(model, best_file, best)
        else:
            warnings.warn(f"{best_file} does not hold epoch {best.get('epoch')}, the best one recorded in last.pt "
                          "(was it removed or replaced?); it is written again when an epoch improves on "
                          f"{best.get('metric')} = {best.get('value')}", UserWarning, stacklevel=3)


def config_from_dict(values: dict, source: str | os.PathLike | None = None) -> TrainConfig:
    """A checked :class:`TrainConfig` from a dict (e.g. a run's config.json, named by ``source`` in errors),
    rejecting unknown keys, missing required ones and bad values."""
    where = f"{source}: " if source is not None else ""
    if not isinstance(values, dict):
        raise DermretrError(f"{where}training options must be a dict, got {type(values).__name__}")
    fields = dataclasses.fields(TrainConfig)
    known = {f.name for f in fields}
    unknown = sorted(map(str, set(values) - known))
    if unknown:
        raise DermretrError(f"{where}unknown training option(s) {unknown}; known: {', '.join(sorted(known))}")
    required = [f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in values]
    if missing:
        raise DermretrError(f"{where}missing training option(s) {missing}")
    config = TrainConfig(**values)
    try:
        config.check()
    except DermretrError as exc:
        raise DermretrError(f"{where}{exc}") from None
    return config
