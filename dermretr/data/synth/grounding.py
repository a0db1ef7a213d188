"""Grounding check: is every 7-point criterion visible in the pixels?

:func:`grounding_report` trains a tiny multi-task CNN from scratch (one
classification head per criterion) on the training images of a case table and
reports, per criterion, how well it predicts the criterion on the held-out
test cases, next to the majority-class rate and chance.  On DermSynth
generated with ``priors="uniform"`` (criteria independent of each other and of
the diagnosis) a criterion that is clearly above both baselines is drawn as a
pattern a classifier can see; one that is not points at a renderer weakness.

The per-criterion confusion matrices (rows: true value, columns: predicted
value, test split) are attached to the returned table as
``report.attrs["confusion"]``, and the timings as ``report.attrs["timings"]``.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> from dermretr.data.synth import generate
>>> from dermretr.data.synth.grounding import grounding_report
>>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=40, image_size=64,
...                 priors="uniform", workers=1, progress=False)
>>> report = grounding_report(load("synthetic", root), image_size=32, epochs=1,
...                           device="cpu", progress=False)
>>> report["criterion"].tolist()[:2], list(report.columns)[:4]
(['pigment_network', 'streaks'], ['criterion', 'n_classes', 'n_test', 'majority_rate'])
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..._device import resolve_device
from ..._errors import DermretrError
from ..vocab import CRITERIA, CRITERION_NAMES

__all__ = ["grounding_report", "REPORT_COLUMNS"]

#: Columns of the table returned by :func:`grounding_report`, in order.
REPORT_COLUMNS: tuple[str, ...] = (
    "criterion",
    "n_classes",
    "n_test",
    "majority_rate",
    "accuracy",
    "balanced_accuracy",
    "chance",
    "lift",
)


# ----------------------------------------------------------------------------- input


def _check_cases(cases: pd.DataFrame, train_splits: Sequence[str], test_split: str) -> None:
    if not isinstance(cases, pd.DataFrame):
        raise DermretrError(f"grounding needs a case table (pandas DataFrame), got {type(cases).__name__}")
    missing = [c for c in ("image_path", "split", *CRITERION_NAMES) if c not in cases.columns]
    if missing:
        raise DermretrError(
            f"the case table lacks column(s) {', '.join(missing)}; grounding needs image_path, split "
            f"and the seven criteria ({', '.join(CRITERION_NAMES)})"
        )
    split = cases["split"].astype("string")
    if not split.isin(list(train_splits)).any():
        raise DermretrError(
            f"no training cases: no row has split in {list(train_splits)} "
            f"(splits present: {sorted(split.dropna().unique().tolist())})"
        )
    if not (split == test_split).any():
        raise DermretrError(
            f"no test cases: no row has split {test_split!r} "
            f"(splits present: {sorted(split.dropna().unique().tolist())})"
        )


def _encode_labels(cases: pd.DataFrame) -> np.ndarray:
    """Criterion values -> class indices in vocabulary order (-1 where unknown)."""
    labels = np.full((len(cases), len(CRITERION_NAMES)), -1, dtype=np.int64)
    for j, crit in enumerate(CRITERION_NAMES):
        index = {v: i for i, v in enumerate(CRITERIA[crit])}
        col = cases[crit].astype("object")
        for i, value in enumerate(col):
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                continue
            clean = " ".join(str(value).replace("_", " ").strip().lower().split())
            if clean not in index:
                raise DermretrError(
                    f"{crit}: unknown value {value!r} in row {i}; allowed values: {', '.join(CRITERIA[crit])}"
                )
            labels[i, j] = index[clean]
    return labels


def _load_images(paths: Sequence[str], image_size: int, progress: bool):
    """Read, RGB-convert and resize every image into one uint8 tensor (N, 3, S, S)."""
    import torch
    from PIL import Image

    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    for i, path in enumerate(tqdm(paths, desc="grounding: images", unit="img", disable=not progress)):
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (image_size, image_size):
                    img = img.resize((image_size, image_size), Image.BILINEAR, reducing_gap=2.0)
                arr = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise DermretrError(f"cannot read image {path}: {exc}") from None
        out[i] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    return out


# ----------------------------------------------------------------------------- model


def _build_model(n_classes: Sequence[int], width: int):
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class TinyCNN(nn.Module):
        """Four conv blocks; average+max pooled and a coarse 2x2 grid feed one head per criterion."""

        def __init__(self) -> None:
            super().__init__()
            w = width
            self.features = nn.Sequential(
                block(3, w), nn.MaxPool2d(2),
                block(w, 2 * w), nn.MaxPool2d(2),
                block(2 * w, 4 * w), nn.MaxPool2d(2),
                block(4 * w, 4 * w),
            )
            dim = 4 * w * (1 + 1 + 4)
            self.dropout = nn.Dropout(0.2)
            self.heads = nn.ModuleList(nn.Linear(dim, k) for k in n_classes)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            f = self.features(x)
            z = torch.cat([
                f.mean(dim=(2, 3)),
                f.amax(dim=(2, 3)),
                nn.functional.adaptive_avg_pool2d(f, 2).flatten(1),
            ], dim=1)
            z = self.dropout(z)
            return [head(z) for head in self.heads]

    return TinyCNN()


def _augment(x, gen):
    """Random flips and 90-degree rotations (per batch, from ``gen``): lesions have no orientation."""
    import torch

    k = int(torch.randint(4, (1,), generator=gen))
    if k:
        x = torch.rot90(x, k, dims=(2, 3))
    if bool(torch.randint(2, (1,), generator=gen)):
        x = torch.flip(x, dims=(3,))
    return x


def _to_input(x_uint8, mean, std, device):
    x = x_uint8.to(device, non_blocking=True).float().div_(255.0)
    return (x - mean) / std


# ----------------------------------------------------------------------------- public


def grounding_report(
    cases: pd.DataFrame,
    image_size: int = 64,
    epochs: int = 30,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    *,
    lr: float = 3e-3,
    width: int = 24,
    train_splits: Sequence[str] = ("train", "val"),
    test_split: str = "test",
) -> pd.DataFrame:
    """Train a tiny multi-task CNN on the pixels and report per-criterion test accuracy.

    Parameters
    ----------
    cases : DataFrame
        A case table with ``image_path``, ``split`` and the seven criteria
        columns (for instance ``dermretr.data.load("synthetic", root)``).
        Rows with an unknown (NA) criterion value are left out of that
        criterion's loss and scores only.
    image_size : int
        Images are resized to ``image_size`` x ``image_size`` (>= 16).
    epochs : int
        Training epochs (AdamW with a one-cycle learning-rate schedule).
    batch_size : int
        Mini-batch size.
    seed : int
        Seeds model initialisation, shuffling and augmentation; the same seed
        gives the same report on the same device.
    device : str
        ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
    progress : bool
        Show progress bars.
    lr : float
        Peak learning rate.
    width : int
        Channels of the first conv block (doubled twice deeper down).
    train_splits : sequence of str
        Splits trained on (default: train and val).
    test_split : str
        Split evaluated on.

    Returns
    -------
    DataFrame
        One row per criterion: ``criterion``, ``n_classes`` (values in the
        vocabulary), ``n_test`` (labelled test cases), ``majority_rate`` (test
        accuracy of always predicting the most frequent *training* value),
        ``accuracy``, ``balanced_accuracy`` (mean recall over the values present
        in the test split), ``chance`` (1 / values present in the test split)
        and ``lift`` (accuracy - majority_rate).  ``attrs["confusion"]`` maps
        each criterion to its test confusion matrix (DataFrame, rows true,
        columns predicted); ``attrs["timings"]`` holds seconds spent loading,
        training and evaluating.

    Raises
    ------
    DermretrError
        Missing columns, no training or no test rows, an unknown criterion
        value, an unreadable image or a bad parameter.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from dermretr.data import load
    >>> from dermretr.data.synth import generate
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=40, image_size=64,
    ...                 priors="uniform", workers=1, progress=False)
    >>> rep = grounding_report(load("synthetic", root), image_size=32, epochs=1, device="cpu",
    ...                        progress=False)
    >>> len(rep), bool(((rep["accuracy"] >= 0) & (rep["accuracy"] <= 1)).all())
    (7, True)
    """
    for name, value, low in (("image_size", image_size, 16), ("epochs", epochs, 1),
                             ("batch_size", batch_size, 1), ("width", width, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise DermretrError(f"{name} must be an integer of at least {low}, got {value!r}")
    if not lr > 0:
        raise DermretrError(f"lr must be positive, got {lr!r}")
    if isinstance(train_splits, str):
        train_splits = (train_splits,)
    _check_cases(cases, train_splits, test_split)

    import torch
    from torch import nn

    dev = resolve_device(device)
    split = cases["split"].astype("string").fillna("")
    train_rows = np.flatnonzero(split.isin(list(train_splits)).to_numpy())
    test_rows = np.flatnonzero((split == test_split).to_numpy())
    labels = _encode_labels(cases)
    n_classes = [len(CRITERIA[c]) for c in CRITERION_NAMES]

    t0 = time.perf_counter()
    rows = np.concatenate([train_rows, test_rows])
    images = _load_images(cases["image_path"].astype("string").to_numpy()[rows].tolist(), int(image_size), progress)
    x_train, x_test = images[: len(train_rows)], images[len(train_rows):]
    y_train = torch.from_numpy(labels[train_rows])
    y_test = labels[test_rows]
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats = x_train.float().div(255.0)
    mean = stats.mean(dim=(0, 2, 3)).view(1, 3, 1, 1).to(dev)
    std = stats.std(dim=(0, 2, 3)).clamp_min(1e-3).view(1, 3, 1, 1).to(dev)
    del stats
    det_before = torch.backends.cudnn.deterministic
    bench_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        # All randomness (init, dropout, shuffling, augmentation) comes from ``seed``;
        # the caller's global torch RNG state is restored afterwards.
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(seed))
            model = _build_model(n_classes, int(width)).to(dev)
            gen = torch.Generator().manual_seed(int(seed) + 1)
            n = len(train_rows)
            steps_per_epoch = max(1, -(-n // int(batch_size)))
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=int(epochs),
                                                        steps_per_epoch=steps_per_epoch, pct_start=0.2)
            loss_fn = nn.CrossEntropyLoss(ignore_index=-1, reduction="sum")
            bar = tqdm(range(int(epochs)), desc="grounding: train", unit="epoch", disable=not progress)
            for _ in bar:
                model.train()
                order = torch.randperm(n, generator=gen)
                total, count = 0.0, 0
                for s in range(steps_per_epoch):
                    idx = order[s * int(batch_size): (s + 1) * int(batch_size)]
                    if len(idx) < 2:  # BatchNorm needs two samples
                        continue
                    xb = _augment(_to_input(x_train[idx], mean, std, dev), gen)
                    yb = y_train[idx].to(dev)
                    outs = model(xb)
                    labelled = (yb >= 0).sum().clamp_min(1)
                    loss = sum(loss_fn(o, yb[:, j]) for j, o in enumerate(outs)) / labelled
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss) * len(idx)
                    count += len(idx)
                bar.set_postfix(loss=f"{total / max(count, 1):.3f}")
        bar.close()
        t_train = time.perf_counter() - t0

        t0 = time.perf_counter()
        model.eval()
        preds = []
        with torch.no_grad():
            for s in range(0, len(test_rows), 256):
                outs = model(_to_input(x_test[s: s + 256], mean, std, dev))
                preds.append(torch.stack([o.argmax(1) for o in outs], dim=1).cpu().numpy())
        pred = np.concatenate(preds) if preds else np.zeros((0, len(CRITERION_NAMES)), dtype=np.int64)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = det_before, bench_before
    t_eval = time.perf_counter() - t0

    records, confusion = [], {}
    train_labels = labels[train_rows]
    for j, crit in enumerate(CRITERION_NAMES):
        values = CRITERIA[crit]
        ytr = train_labels[:, j][train_labels[:, j] >= 0]
        keep = y_test[:, j] >= 0
        yt, yp = y_test[keep, j], pred[keep, j]
        cm = np.zeros((len(values), len(values)), dtype=np.int64)
        np.add.at(cm, (yt, yp), 1)
        confusion[crit] = pd.DataFrame(cm, index=pd.Index(values, name="true"),
                                       columns=pd.Index(values, name="predicted"))
        present = np.flatnonzero(cm.sum(axis=1) > 0)
        if len(yt) and len(ytr):
            majority = int(np.bincount(ytr, minlength=len(values)).argmax())
            majority_rate = float(np.mean(yt == majority))
            accuracy = float(np.mean(yt == yp))
            recalls = np.diag(cm)[present] / cm.sum(axis=1)[present]
            balanced = float(recalls.mean())
            chance = 1.0 / len(present)
        else:
            majority_rate = accuracy = balanced = chance = float("nan")
        records.append(dict(
            criterion=crit, n_classes=len(values), n_test=int(len(yt)), majority_rate=majority_rate,
            accuracy=accuracy, balanced_accuracy=balanced, chance=chance, lift=accuracy - majority_rate,
        ))
    report = pd.DataFrame.from_records(records, columns=list(REPORT_COLUMNS))
    report.attrs["confusion"] = confusion
    report.attrs["timings"] = {"load_s": t_load, "train_s": t_train, "eval_s": t_eval}
    return report
