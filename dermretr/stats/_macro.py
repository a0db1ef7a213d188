"""Macro means over classes: class codes and weights, the stratified bootstrap of a macro mean."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import DermretrError

__all__ = ["AVERAGES", "check_average", "macro_by", "column_classes", "class_codes", "class_weights", "macro_mean",
           "stratified_means"]


#: Averages over queries: the plain mean, and the mean over classes of the class means.
AVERAGES = ("micro", "macro")


def check_average(average: str) -> str:
    """``average`` when it is one of :data:`AVERAGES`.

    >>> check_average("mean")
    Traceback (most recent call last):
        ...
    dermretr._errors.DermretrError: average must be 'micro' or 'macro', got 'mean'
    """
    if average not in AVERAGES:
        raise DermretrError(f"average must be 'micro' or 'macro', got {average!r}")
    return average


def macro_by(per_query: pd.DataFrame, by: str | None) -> str:
    """The class column of a macro average: ``by``, else ``target_range`` if present, else ``diagnosis_group``.

    The tone protocol's tables have target ranges; the others are averaged over diagnosis groups.

    >>> macro_by(pd.DataFrame(columns=["target_range"]), None), macro_by(pd.DataFrame(), None)
    ('target_range', 'diagnosis_group')
    """
    if by is not None:
        return by
    return "target_range" if "target_range" in per_query.columns else "diagnosis_group"


def column_classes(usable: pd.DataFrame, by: str) -> np.ndarray:
    """Class codes (:func:`class_codes`) of the queries of ``usable`` for a macro average over column ``by``."""
    if not isinstance(by, str) or by not in usable.columns:
        raise DermretrError(f"cannot macro-average over {by!r}: the per-query table has no such column "
                            f"(columns: {list(usable.columns)})")
    return class_codes(usable[by])[0]


def class_codes(labels) -> tuple[np.ndarray, list]:
    """Integer class codes ``0 .. n_classes - 1`` (classes sorted; a missing label is a class of its own, last).

    >>> class_codes(["b", None, "a", "b"])
    (array([1, 2, 0, 1]), ['a', 'b', None])
    """
    series = pd.Series(list(labels), dtype=object)
    missing = series.isna().to_numpy()
    text = series.where(~missing, "").astype(str).to_numpy()
    uniques = sorted(set(text[~missing]))
    lookup = {u: i for i, u in enumerate(uniques)}
    codes = np.array([len(uniques) if m else lookup[t] for t, m in zip(text, missing)], dtype=np.int64)
    names: list = list(uniques) + ([None] if missing.any() else [])
    return codes, names


def class_weights(codes: np.ndarray) -> np.ndarray:
    """Per-query weights ``1 / (n_classes * n_class(i))`` that make a weighted sum the macro mean.

    >>> class_weights(np.array([0, 0, 1])).tolist()
    [0.25, 0.25, 0.5]
    """
    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes)
    present = int((counts > 0).sum())
    if present == 0:
        return np.zeros(0)
    return 1.0 / (present * counts[codes])


def macro_mean(values, codes: np.ndarray) -> np.ndarray:
    """Mean over classes of the per-class means of ``values`` ``[n]`` or ``[n, m]``; returns ``[m]``.

    >>> macro_mean(np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), np.array([0, 0, 1])).tolist()
    [0.75, 0.5]
    """
    values = np.asarray(values, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    if values.ndim == 1:
        values = values[:, None]
    if len(values) == 0:
        return np.full(values.shape[1], np.nan)
    # the arithmetic of stratified_means (class means summed in code order, then divided), so that a
    # resample equal to the data gives exactly the point estimate
    classes = [c for c in range(int(codes.max()) + 1) if (codes == c).any()]
    out = np.zeros(values.shape[1])
    for c in classes:
        out += values[codes == c].mean(axis=0)
    return out / len(classes)


def stratified_means(values: np.ndarray, codes: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Macro means ``[n_boot, m]`` of ``n_boot`` stratified resamples of ``values`` ``[n, m]``.

    Each class's queries are resampled with replacement among themselves
    (its size stays fixed), class by class in code order and in blocks of
    resamples so memory stays small; the same seed gives the same draws.

    >>> v = np.array([[0.0], [1.0], [1.0]])
    >>> means = stratified_means(v, np.array([0, 0, 1]), n_boot=200, seed=0)
    >>> means.shape, float(means.min()) >= 0.5, float(means.max()) <= 1.0   # class 1 is always 1.0
    ((200, 1), True, True)
    """
    values = np.asarray(values, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    if values.ndim != 2 or len(codes) != len(values):
        raise DermretrError(f"stratified bootstrap: {len(codes)} class labels for values of shape {values.shape}")
    rng = np.random.default_rng(seed)
    classes = [c for c in range(int(codes.max()) + 1) if (codes == c).any()] if len(codes) else []
    out = np.zeros((n_boot, values.shape[1]))
    for c in classes:
        sub = values[codes == c]
        n_c = len(sub)
        block = max(1, 2**18 // n_c)
        for start in range(0, n_boot, block):
            stop = min(n_boot, start + block)
            idx = rng.integers(0, n_c, size=(stop - start, n_c))
            out[start:stop] += sub[idx].mean(axis=1)
    return out / max(len(classes), 1)
