"""Leak-free train/val/test splits: whole groups (patients, lesions) go to one split.

Examples
--------
>>> import pandas as pd
>>> from dermretr.data.splits import group_split
>>> df = pd.DataFrame({"patient_id": [f"p{i // 2}" for i in range(40)],
...                    "diagnosis_group": ["MEL", "NEV"] * 20})
>>> split = group_split(df, fractions=(0.6, 0.2, 0.2), seed=0)
>>> bool((split.groupby(df["patient_id"]).nunique() == 1).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._checks import check_int
from .._errors import DermretrError
from .cases import SPLITS

__all__ = ["group_split"]


def group_split(
    cases: pd.DataFrame,
    by: str = "patient_id",
    stratify: str | None = "diagnosis_group",
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> pd.Series:
    """Assign each row to train/val/test so that no group of ``by`` spans two splits.

    Groups are stratified by the most frequent value of ``stratify`` within the
    group and dealt, largest first, to the split whose share of cases is
    furthest below its target fraction, so the splits match ``fractions`` in
    case counts and keep the class mix.

    Parameters
    ----------
    cases : DataFrame
        Must contain ``by`` (and ``stratify`` unless None).
    by : str
        The grouping column (``"patient_id"``; ``"lesion_id"`` for HAM10000).
    stratify : str or None
        Column whose distribution each split should keep.
    fractions : three floats
        Target fractions of train, val and test; they must sum to 1.
    seed : int
        Seed of the shuffle that breaks ties.

    Returns
    -------
    Series
        ``"train"``, ``"val"`` or ``"test"`` per row, aligned with ``cases.index``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"patient_id": list("aabbccddee"), "diagnosis_group": ["MEL"] * 10})
    >>> sorted(group_split(df, fractions=(0.6, 0.2, 0.2)).value_counts().items())
    [('test', 2), ('train', 6), ('val', 2)]
    """
    if not isinstance(cases, pd.DataFrame):
        raise DermretrError(f"cases must be a case table (a pandas DataFrame), got {type(cases).__name__}")
    try:
        target = np.asarray(fractions, dtype=float)
    except (TypeError, ValueError):
        target = np.full(1, np.nan)
    if (target.shape != (3,) or not np.isfinite(target).all() or (target < 0).any()
            or not np.isclose(target.sum(), 1.0)):
        raise DermretrError(f"split fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    check_int(seed, "the split seed", 0)
    for col in (by, stratify):
        if col is not None and col not in cases.columns:
            raise DermretrError(
                f"cannot split: column {col!r} not in the case table (columns: {list(cases.columns)})"
            )
    if len(cases) == 0:
        return pd.Series([], index=cases.index, dtype=object, name="split")
    groups = cases[by].astype(str)
    if cases[by].isna().any():
        rows = cases.index[cases[by].isna()].tolist()[:8]
        raise DermretrError(f"cannot split: column {by!r} is missing at rows {rows}")
    rng = np.random.default_rng(seed)
    sizes = groups.value_counts()
    if stratify is None:
        strata = pd.Series("all", index=sizes.index)
    else:
        # each group's most frequent stratum (ties: the alphabetically first), vectorised
        counts = pd.DataFrame({"g": groups.to_numpy(), "s": cases[stratify].astype(str).to_numpy()})
        counts = counts.groupby(["g", "s"], sort=True).size().reset_index(name="n")
        counts = counts.sort_values(["g", "n", "s"], ascending=[True, False, True], kind="stable")
        strata = counts.drop_duplicates("g").set_index("g")["s"]
    assignment: dict[str, str] = {}
    for _, members in strata.groupby(strata):
        names = members.index.to_numpy()[rng.permutation(len(members))]
        # largest groups first so the small ones can even out the counts (stable: ties keep the shuffle)
        names = names[np.argsort(-sizes[names].to_numpy(), kind="stable")]
        filled = np.zeros(3)
        for name in names:
            deficit = target * (filled.sum() + sizes[name]) - filled
            # never give a split a group when its target fraction is zero
            deficit[target == 0] = -np.inf
            k = int(np.argmax(deficit))
            assignment[name] = SPLITS[k]
            filled[k] += sizes[name]
    return groups.map(assignment).rename("split")
