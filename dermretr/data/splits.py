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

__all__ = ["group_split", "SPLIT_SOURCE", "derived_split_source", "split_source", "describe_split_source"]

#: The key of a case table's ``attrs`` that records where its ``split`` column came from (set by every loader).
SPLIT_SOURCE = "split_source"


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


def derived_split_source(by: str = "patient_id", stratify: str | None = "diagnosis_group",
                         fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> dict:
    """The record of a split made by :func:`group_split` with these arguments (see :func:`split_source`).

    >>> derived_split_source(seed=3)
    {'kind': 'derived', 'method': 'group_split', 'groups': 'patient_id', 'stratify': 'diagnosis_group',
     'fractions': [0.6, 0.2, 0.2], 'seed': 3}
    """
    return {"kind": "derived", "method": "group_split", "groups": by, "stratify": stratify,
            "fractions": [float(f) for f in fractions], "seed": int(seed)}


def split_source(cases: pd.DataFrame) -> dict | None:
    """Where the ``split`` column of a loaded case table came from; None when the table does not say.

    Every loader records it in ``cases.attrs["split_source"]`` as a small JSON-ready dict whose
    ``kind`` is

    * ``"publisher"``: the split files the publisher ships, where the loader looks for them
      (``files``: their paths relative to the dataset folder);
    * ``"split_files"``: split files the user gave (the ``split_files`` option);
    * ``"derived"``: made by :func:`group_split` (``method``, ``groups``, ``stratify``,
      ``fractions``, ``seed``), for sources without split files or when they are absent.

    With files, rows in none of them get a derived split, recorded under ``rest`` (``rows`` and
    the derived record).  A table made or changed by hand has no record, or one that no longer
    holds: the record describes the table as the loader returned it.

    >>> import tempfile, pathlib
    >>> from dermretr.data import load
    >>> from dermretr.data.synth import generate
    >>> root = generate(pathlib.Path(tempfile.mkdtemp()) / "ds", n_cases=6, image_size=64,
    ...                 workers=1, progress=False)
    >>> split_source(load("synthetic", root))["kind"]
    'publisher'
    >>> split_source(pd.DataFrame()) is None
    True
    """
    record = getattr(cases, "attrs", {}).get(SPLIT_SOURCE)
    return dict(record) if isinstance(record, dict) else None


def describe_split_source(record: dict | None) -> str:
    """One line saying where a split came from, for people (``dermretr info``, ``evaluate``).

    >>> describe_split_source(derived_split_source(seed=0))
    'derived by dermretr (group_split: groups patient_id, stratified by diagnosis_group, 60/20/20 % train/val/test,
    seed 0)'
    >>> describe_split_source({"kind": "publisher", "files": ["meta/train_indexes.csv", "meta/valid_indexes.csv",
    ...                                                      "meta/test_indexes.csv"]})
    "publisher's split files meta/train_indexes.csv, meta/valid_indexes.csv, meta/test_indexes.csv"
    >>> describe_split_source(None)
    'not recorded (a case table not returned by a loader)'
    """
    if not isinstance(record, dict):
        return "not recorded (a case table not returned by a loader)"
    kind = record.get("kind")
    if kind == "derived":
        fractions = "/".join(f"{100 * float(f):g}" for f in record.get("fractions", ()))
        strata = f"stratified by {record['stratify']}" if record.get("stratify") else "not stratified"
        return (f"derived by dermretr ({record.get('method', 'group_split')}: groups {record.get('groups')}, "
                f"{strata}, {fractions} % train/val/test, seed {record.get('seed')})")
    if kind in ("publisher", "split_files"):
        files = ", ".join(map(str, record.get("files", ())))
        text = (f"publisher's split files {files}" if kind == "publisher"
                else f"split files given (split_files): {files}")
        rest = record.get("rest")
        if isinstance(rest, dict):
            text += f"; {rest.get('rows')} rows in none of them: {describe_split_source(rest)}"
        return text
    return str(record.get("note") or kind or "unknown")
