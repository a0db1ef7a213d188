"""Triplets for training: DermSynth's modification triplets, derived tone triplets, and their in-batch positives."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..data import parse_spec
from ..data.vocab import TEXT_STYLES, TONE_RANGES, TONE_STYLES, tone_findings, tone_query_text
from ..evaluate import tone_ranges

__all__ = ["derive_tone_triplets", "read_triplets", "training_triplets", "triplet_positives", "TONE_TRIPLET_COLUMNS"]


def read_triplets(data: str, cases: pd.DataFrame) -> pd.DataFrame:
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


TONE_TRIPLET_COLUMNS = ["reference_case_id", "target_case_id", "modification_text", "target_range", "scale",
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
        return pd.DataFrame(columns=TONE_TRIPLET_COLUMNS)
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
        case = cast("Mapping[str, Any]", cases.iloc[i])  # a row: a mapping of column to value
        findings = tone_findings(case, style=rng.choice(TEXT_STYLES), seed=rng.randrange(2**31))
        rows.append([ids[i], ids[j], tone_query_text(findings, target, scale, rng.choice(TONE_STYLES)), target,
                     scale, str(value)])
    return pd.DataFrame(rows, columns=TONE_TRIPLET_COLUMNS)


def training_triplets(data: str, cases: pd.DataFrame, train_idx: np.ndarray, seed: int,
                       tone_wanted: bool = True) -> pd.DataFrame:
    """DermSynth's modification triplets and the tone triplets among training cases.

    Columns: ``ref``, ``tgt`` (rows of ``cases``), ``text``, ``key`` (what a tone query asks for,
    ``"group|range"``; empty for a modification, which asks for its exact target) and ``target_key`` (the
    target's own ``"group|range"``).  See :func:`triplet_positives`.
    """
    mods = read_triplets(data, cases)
    train_set = set(train_idx.tolist())
    mods = mods[mods["ref"].isin(train_set) & mods["tgt"].isin(train_set)].assign(key="")
    tone = (derive_tone_triplets(cases.iloc[train_idx].reset_index(drop=True), seed=seed) if tone_wanted
            else pd.DataFrame(columns=TONE_TRIPLET_COLUMNS))
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


def triplet_positives(batch: pd.DataFrame) -> np.ndarray:
    """Which in-batch targets answer each triplet query.

    Its own target image (any triplet), and for a tone query every target of the group and skin-tone range it
    asks for (whichever triplet brought it).

    >>> batch = pd.DataFrame({"tgt": [5, 5, 7, 8], "key": ["", "MEL|V-VI", "MEL|V-VI", ""],
    ...                       "target_key": ["MEL|V-VI", "MEL|V-VI", "MEL|V-VI", "NEV|I-II"]})
    >>> triplet_positives(batch).astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    """
    tgt = batch["tgt"].to_numpy()
    key, target_key = batch["key"].to_numpy(dtype=object), batch["target_key"].to_numpy(dtype=object)
    return (tgt[:, None] == tgt[None, :]) | ((key[:, None] != "") & (key[:, None] == target_key[None, :]))

