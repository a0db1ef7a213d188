"""Contact sheets: example cases of a case table, one row of thumbnails per group."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .._checks import check_int
from .._errors import DermretrError
from ._common import load_thumbnail

__all__ = ["contact_sheet"]


def contact_sheet(
    cases: pd.DataFrame,
    by: str = "diagnosis",
    per_group: int = 6,
    seed: int = 0,
    thumb: int = 128,
    max_groups: int = 25,
    title: str | None = None,
) -> Figure:
    """A grid of example cases: one row per value of ``by``, ``per_group`` images each.

    Parameters
    ----------
    cases : DataFrame
        A case table (needs ``image_path`` and the ``by`` column).
    by : str
        Column to group by (``"diagnosis"``, ``"diagnosis_group"``,
        ``"fitzpatrick"``, a criterion such as ``"blue_whitish_veil"``...).
    per_group : int
        Images per row (sampled with ``seed``).
    seed : int
        Seed of the sampling.
    thumb : int
        Thumbnail side in pixels.
    max_groups : int
        At most this many rows (the most frequent groups).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if by not in cases.columns:
        raise DermretrError(f"cannot group by {by!r}: not a column of the case table ({list(cases.columns)})")
    if len(cases) == 0:
        raise DermretrError("the case table is empty: nothing to show")
    check_int(per_group, "per_group", what="at least 1")
    keys = cases[by].astype(object).where(cases[by].notna(), "unknown").astype(str)
    counts = keys.value_counts()
    groups = sorted(counts.index[:max_groups], key=lambda g: (g == "unknown", g))
    rng = np.random.default_rng(seed)
    ncols = per_group
    fig = Figure(figsize=(1.6 * ncols + 2.2, 1.6 * len(groups) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), ncols, squeeze=False)
    for r, group in enumerate(groups):
        idx = np.flatnonzero(keys.to_numpy() == group)
        pick = rng.choice(idx, size=min(per_group, len(idx)), replace=False)
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(pick):
                row = cases.iloc[pick[c]]
                ax.imshow(load_thumbnail(row["image_path"], thumb))
                ax.set_title(str(row["case_id"]), fontsize=6)
            if c == 0:
                ax.set_ylabel(f"{group}\n(n={counts[group]})", fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title or f"Example cases by {by}", fontsize=10)
    return fig
