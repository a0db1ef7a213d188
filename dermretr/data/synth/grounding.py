"""Grounding check: whether every 7-point criterion is visible in the pixels.

:func:`grounding_report` trains a tiny multi-task CNN from scratch (one
classification head per criterion) on the training images of a case table and
reports, per criterion, how well it predicts the criterion on the held-out
test cases, next to the majority-class rate and chance.  On DermSynth
generated with ``priors="uniform"`` (criteria independent of each other and of
the diagnosis, so there is no shortcut through correlations) a criterion
clearly above both baselines is drawn as a pattern a classifier can see; one
that is not points at a renderer weakness.  :func:`confusion_table` shows
which values are mixed up, :func:`prediction_table` gives the predictions per
test case (to slice errors by skin type or by the other criteria).

Examples
--------
>>> from dermretr.data.synth.grounding import REPORT_COLUMNS
>>> REPORT_COLUMNS[:4]
('criterion', 'n_classes', 'n_test', 'majority_rate')
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..._checks import check_int
from ..._device import resolve_device
from ..._errors import DermretrError
from ..vocab import CRITERIA, CRITERION_NAMES

__all__ = ["grounding_report", "confusion_table", "prediction_table", "REPORT_COLUMNS"]

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
    present = sorted(split.dropna().unique().tolist())
    if not split.isin(list(train_splits)).any():
        raise DermretrError(
            f"no training cases: no row has split in {list(train_splits)} (splits present: {present})"
        )
    if not (split == test_split).any():
        raise DermretrError(f"no test cases: no row has split {test_split!r} (splits present: {present})")


def _encode_labels(cases: pd.DataFrame) -> np.ndarray:
    """Criterion values -> class indices in vocabulary order (-1 where unknown)."""
    labels = np.full((len(cases), len(CRITERION_NAMES)), -1, dtype=np.int64)
    for j, crit in enumerate(CRITERION_NAMES):
        index = {v: i for i, v in enumerate(CRITERIA[crit])}
        for i, value in enumerate(cases[crit].astype("object")):
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
                    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=2.0)
                arr = np.array(img, dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise DermretrError(f"cannot read image {path}: {exc}") from None
        out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


# ----------------------------------------------------------------------------- model


def _build_model(n_classes: Sequence[int], width: int):
    import torch
    from torch import nn

    def conv(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        # Pooling before BatchNorm/ReLU does the elementwise work on a quarter of the pixels.
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), *([nn.MaxPool2d(2)] if pool else []),
                nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    class TinyCNN(nn.Module):
        """Five 3x3 convolutions (the first three max-pooled); mean, max and std pooling feed one head per criterion."""

        def __init__(self) -> None:
            super().__init__()
            w = width
            self.features = nn.Sequential(
                *conv(3, w, True), *conv(w, 2 * w, True), *conv(2 * w, 4 * w, True),
                *conv(4 * w, 8 * w, False), *conv(8 * w, 8 * w, False),
            )
            self.heads = nn.ModuleList(nn.Linear(8 * w * 3, k) for k in n_classes)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            f = self.features(x).flatten(2)
            z = torch.cat([f.mean(dim=2), f.amax(dim=2), f.std(dim=2)], dim=1)
            return [head(z) for head in self.heads]

    return TinyCNN()


def _augment(x, gen):
    """Random flips and 90-degree rotations (one draw per batch, from ``gen``): lesions have no orientation."""
    import torch

    k = int(torch.randint(4, (1,), generator=gen))
    if k:
        x = torch.rot90(x, k, dims=(2, 3))
    if bool(torch.randint(2, (1,), generator=gen)):
        x = torch.flip(x, dims=(3,))
    return x


def _to_input(x_uint8, mean, std, device):
    import torch

    x = x_uint8.to(device, non_blocking=True).float().div_(255.0)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- public


def grounding_report(
    cases: pd.DataFrame,
    image_size: int = 96,
    epochs: int = 25,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    *,
    lr: float = 5e-3,
    width: int = 16,
    train_splits: Sequence[str] = ("train", "val"),
    test_split: str = "test",
) -> pd.DataFrame:
    """Train a tiny multi-task CNN on the pixels and report per-criterion test accuracy.

    The CNN (five 3x3 convolutions with BatchNorm, three max-pools, mean/max/std
    pooling, one linear head per criterion) is trained from scratch with
    AdamW and a one-cycle learning rate, with random flips and 90-degree
    rotations, on the rows whose split is in ``train_splits``; it is scored on
    the rows of ``test_split``.  Everything random comes from ``seed``; the
    caller's global torch random state is left as it was.

    Parameters
    ----------
    cases : DataFrame
        A case table with ``image_path``, ``split`` and the seven criteria
        columns (for instance ``dermretr.data.load("synthetic", root)``).
        A row with an unknown (NA) value of a criterion is left out of that
        criterion's loss and scores only.
    image_size : int
        Images are resized to ``image_size`` x ``image_size`` (>= 16) and
        cached in memory as uint8.  DermSynth's finest patterns (streak tips,
        thin vessels) are learnt much better at 96 px than at 64 px.
    epochs : int
        Training epochs.
    batch_size : int
        Mini-batch size.
    seed : int
        Seeds initialisation, shuffling and augmentation: the same seed gives
        the same report on the same machine and device.
    device : str
        ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
    progress : bool
        Show progress bars (tqdm).
    lr : float
        Peak learning rate.
    width : int
        Channels of the first convolution (doubled up to 8x deeper down).
    train_splits : sequence of str
        Splits trained on (default: train and val).
    test_split : str
        Split scored.

    Returns
    -------
    DataFrame
        One row per criterion (:data:`REPORT_COLUMNS`): ``criterion``,
        ``n_classes`` (values in the vocabulary), ``n_test`` (labelled test
        cases), ``majority_rate`` (test accuracy of always predicting the most
        frequent *training* value), ``accuracy``, ``balanced_accuracy`` (mean
        recall over the values present in the test split), ``chance``
        (1 / number of values present in the test split) and ``lift``
        (accuracy - majority_rate).  ``attrs`` holds plain, JSON-friendly
        details: ``"confusion"`` (criterion -> test confusion counts, rows
        true value, columns predicted, in vocabulary order; see
        :func:`confusion_table`), ``"predictions"`` (see
        :func:`prediction_table`) and ``"timings"`` (seconds spent loading,
        training and evaluating).

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
    >>> rep["criterion"].tolist()[:2], len(rep)
    (['pigment_network', 'streaks'], 7)
    >>> bool(((rep["accuracy"] >= 0) & (rep["accuracy"] <= 1)).all())
    True
    >>> confusion_table(rep, "blue_whitish_veil").index.tolist()
    ['absent', 'present']
    """
    for name, value, low in (("image_size", image_size, 16), ("epochs", epochs, 1),
                             ("batch_size", batch_size, 2), ("width", width, 1)):
        check_int(value, name, low, what=f"an integer of at least {low}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise DermretrError(f"lr must be a positive number, got {lr!r}")
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
    image_size, epochs, batch_size = int(image_size), int(epochs), int(batch_size)

    t0 = time.perf_counter()
    paths = cases["image_path"].astype("string").to_numpy()[np.concatenate([train_rows, test_rows])].tolist()
    images = _load_images(paths, image_size, progress)
    x_train, x_test = images[: len(train_rows)], images[len(train_rows):]
    y_train = torch.from_numpy(labels[train_rows])
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats = x_train.float().div_(255.0)
    mean = stats.mean(dim=(0, 2, 3)).view(1, 3, 1, 1).to(dev)
    std = stats.std(dim=(0, 2, 3)).clamp_min(1e-3).view(1, 3, 1, 1).to(dev)
    del stats
    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        # All randomness (init, shuffling, augmentation) comes from ``seed``; the
        # caller's global torch random state is restored on exit.
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(seed))
            model = _build_model(n_classes, int(width)).to(dev, memory_format=torch.channels_last)
            gen = torch.Generator().manual_seed(int(seed) + 1)
            n = len(train_rows)
            steps = max(1, -(-n // batch_size))
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps,
                                                        pct_start=0.2)
            loss_fn = nn.CrossEntropyLoss(ignore_index=-1, reduction="sum")
            bar = tqdm(range(epochs), desc="grounding: train", unit="epoch", disable=not progress)
            for _ in bar:
                model.train()
                order = torch.randperm(n, generator=gen)
                total, count = 0.0, 0
                for s in range(steps):
                    idx = order[s * batch_size: (s + 1) * batch_size]
                    if len(idx) >= 2:  # BatchNorm needs two samples
                        xb = _to_input(_augment(x_train[idx], gen), mean, std, dev)
                        yb = y_train[idx].to(dev)
                        outs = model(xb)
                        # mean cross-entropy over the labelled (case, criterion) pairs
                        loss = sum(loss_fn(o, yb[:, j]) for j, o in enumerate(outs)) / (yb >= 0).sum().clamp_min(1)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total += float(loss.detach()) * len(idx)
                        count += len(idx)
                    sched.step()
                bar.set_postfix(loss=f"{total / max(count, 1):.3f}")
            bar.close()
        t_train = time.perf_counter() - t0

        t0 = time.perf_counter()
        model.eval()
        preds = [np.zeros((0, len(CRITERION_NAMES)), dtype=np.int64)]
        with torch.no_grad():
            for s in range(0, len(test_rows), 256):
                outs = model(_to_input(x_test[s: s + 256], mean, std, dev))
                preds.append(torch.stack([o.argmax(1) for o in outs], dim=1).cpu().numpy())
        pred = np.concatenate(preds)
    finally:
        cudnn.deterministic, cudnn.benchmark = saved
    t_eval = time.perf_counter() - t0

    records, confusion = [], {}
    train_labels, y_test = labels[train_rows], labels[test_rows]
    for j, crit in enumerate(CRITERION_NAMES):
        k = len(CRITERIA[crit])
        ytr = train_labels[:, j][train_labels[:, j] >= 0]
        keep = y_test[:, j] >= 0
        yt, yp = y_test[keep, j], pred[keep, j]
        cm = np.zeros((k, k), dtype=np.int64)
        np.add.at(cm, (yt, yp), 1)
        confusion[crit] = cm.tolist()
        present = np.flatnonzero(cm.sum(axis=1) > 0)
        if len(yt) and len(ytr):
            majority = int(np.bincount(ytr, minlength=k).argmax())
            majority_rate = float(np.mean(yt == majority))
            accuracy = float(np.mean(yt == yp))
            balanced = float((np.diag(cm)[present] / cm.sum(axis=1)[present]).mean())
            chance = 1.0 / len(present)
        else:  # no labelled training or test case for this criterion
            majority_rate = accuracy = balanced = chance = float("nan")
        records.append(dict(
            criterion=crit, n_classes=k, n_test=int(len(yt)), majority_rate=majority_rate,
            accuracy=accuracy, balanced_accuracy=balanced, chance=chance, lift=accuracy - majority_rate,
        ))
    report = pd.DataFrame.from_records(records, columns=list(REPORT_COLUMNS))
    # Plain lists and dicts only: pandas compares attrs when concatenating frames.
    report.attrs["confusion"] = confusion
    report.attrs["predictions"] = {
        "index": cases.index[test_rows].tolist(),
        **{c: [CRITERIA[c][int(p)] for p in pred[:, j]] for j, c in enumerate(CRITERION_NAMES)},
    }
    report.attrs["timings"] = {"load_s": t_load, "train_s": t_train, "eval_s": t_eval}
    return report


def _details(report: pd.DataFrame, key: str):
    if not isinstance(report, pd.DataFrame) or key not in report.attrs:
        raise DermretrError(f"not a grounding report (no attrs[{key!r}]); pass what grounding_report returned")
    return report.attrs[key]


def confusion_table(report: pd.DataFrame, criterion: str) -> pd.DataFrame:
    """The test confusion matrix of one criterion of a :func:`grounding_report`.

    Rows are the true values, columns the predicted values, both in the
    vocabulary's order; cells count test cases.

    Examples
    --------
    >>> rep = pd.DataFrame(columns=REPORT_COLUMNS)
    >>> rep.attrs["confusion"] = {"blue_whitish_veil": [[9, 1], [0, 10]]}
    >>> confusion_table(rep, "blue_whitish_veil").loc["absent", "present"]
    np.int64(1)
    """
    confusion = _details(report, "confusion")
    if criterion not in confusion:
        raise DermretrError(f"no confusion matrix for {criterion!r}; criteria: {', '.join(confusion)}")
    values = list(CRITERIA[criterion])
    return pd.DataFrame(np.asarray(confusion[criterion], dtype=np.int64),
                        index=pd.Index(values, name="true"), columns=pd.Index(values, name="predicted"))


def prediction_table(report: pd.DataFrame) -> pd.DataFrame:
    """The predicted criterion values of every test case of a :func:`grounding_report`.

    Indexed like the case table given to :func:`grounding_report`, so
    ``cases.loc[pred.index]`` lines the truth up with the predictions.

    Examples
    --------
    >>> rep = pd.DataFrame(columns=REPORT_COLUMNS)
    >>> rep.attrs["predictions"] = {"index": [3], "streaks": ["regular"]}
    >>> prediction_table(rep).loc[3, "streaks"]
    'regular'
    """
    pred = dict(_details(report, "predictions"))
    index = pred.pop("index")
    return pd.DataFrame(pred, index=pd.Index(index))
