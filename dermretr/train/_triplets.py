"""Triplets for training: DermSynth's modification triplets, derived tone triplets, and their in-batch positives."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..data import parse_spec
from ..data.vocab import TEXT_STYLES, TONE_RANGES, TONE_STYLES, criteria_of, tone_findings, tone_query_text
from ..evaluate import derive_triplets, findings_columns, tone_ranges

__all__ = ["derive_tone_triplets", "derive_finding_triplets", "read_triplets", "training_triplets", "triplet_positives",
           "TONE_TRIPLET_COLUMNS", "FINDING_TRIPLET_COLUMNS"]


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


FINDING_TRIPLET_COLUMNS = ["reference_case_id", "target_case_id", "modification_text", "criterion", "to_value",
                           "relevant_value"]


def derive_finding_triplets(cases: pd.DataFrame, seed: int = 0, relevant: str = "diagnosis_group",
                            per_case: int = 1) -> pd.DataFrame:
    """Finding triplets of training cases: "this case, with irregular streaks" and a case that answers it.

    The training counterpart of the modify protocol's derived queries
    (:func:`~dermretr.evaluate.derive_triplets`, same texts): for each case
    with annotated 7-point findings, up to ``per_case`` criteria get a value
    the case does not have and that a case of its ``relevant`` value (another
    patient) has; one such case is the target.  They teach the image side to
    see a finding a text names, which case search alone hardly asks for.
    Without findings the table is empty.

    >>> cases = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"),
    ...     "diagnosis_group": ["MEL", "MEL", "MEL", "NEV"],
    ...     "streaks": ["irregular", "absent", "absent", "irregular"]})
    >>> t = derive_finding_triplets(cases)
    >>> t[["reference_case_id", "target_case_id", "criterion", "to_value"]].to_numpy().tolist()
    [['a', 'c', 'streaks', 'absent'], ['b', 'a', 'streaks', 'irregular'], ['c', 'a', 'streaks', 'irregular']]
    """
    if not findings_columns(cases) or relevant not in cases.columns:
        return pd.DataFrame(columns=FINDING_TRIPLET_COLUMNS)
    table = cases.assign(split="train", diagnosis_group=cases[relevant].astype(str))  # derive_triplets' grouping
    queries = derive_triplets(table, split="train", seed=seed, max_per_case=per_case, gallery_splits=("train",))
    rng = random.Random(seed)
    ids = cases["case_id"].astype(str).to_numpy()
    patients = cases["patient_id"].astype(str).to_numpy()
    values = table["diagnosis_group"].to_numpy()
    row_of = {cid: i for i, cid in enumerate(ids)}
    known = [criteria_of(row) for _, row in cases.iterrows()]
    rows = []
    for ref, text, criterion, to_value in queries[["reference_case_id", "modification_text", "criterion",
                                                   "to_value"]].itertuples(index=False):
        i = row_of[str(ref)]
        has = np.fromiter((k.get(str(criterion)) == to_value for k in known), dtype=bool, count=len(known))
        options = np.flatnonzero((values == values[i]) & (patients != patients[i]) & has)
        j = int(options[rng.randrange(len(options))])  # derive_triplets only asks for values such a case has
        rows.append([ids[i], ids[j], text, criterion, to_value, str(values[i])])
    return pd.DataFrame(rows, columns=FINDING_TRIPLET_COLUMNS)


def training_triplets(data: str, cases: pd.DataFrame, train_idx: np.ndarray, seed: int,
                       tone_wanted: bool = True, findings_wanted: bool = False) -> pd.DataFrame:
    """DermSynth's modification triplets, and the tone and finding triplets among training cases.

    Columns: ``ref``, ``tgt`` (rows of ``cases``), ``text``, ``key`` (what a derived query asks for:
    ``"group|range"`` for a tone query, ``"group|criterion=value"`` for a finding query; empty for a
    DermSynth modification, which asks for its exact target) and ``target_key`` (the target's own keys,
    joined by ``";"``).  See :func:`triplet_positives`.
    """
    mods = read_triplets(data, cases)
    train_set = set(train_idx.tolist())
    mods = mods[mods["ref"].isin(train_set) & mods["tgt"].isin(train_set)].assign(key="")
    train_cases = cases.iloc[train_idx].reset_index(drop=True)
    tone = (derive_tone_triplets(train_cases, seed=seed) if tone_wanted
            else pd.DataFrame(columns=TONE_TRIPLET_COLUMNS))
    finding = (derive_finding_triplets(train_cases, seed=seed) if findings_wanted
               else pd.DataFrame(columns=FINDING_TRIPLET_COLUMNS))
    pos = {cid: i for i, cid in enumerate(cases["case_id"].astype(str))}
    tone = pd.DataFrame({"ref": tone["reference_case_id"].map(pos), "tgt": tone["target_case_id"].map(pos),
                         "text": tone["modification_text"],
                         "key": tone["relevant_value"] + "|" + tone["target_range"], "scale": tone["scale"]})
    finding = pd.DataFrame({"ref": finding["reference_case_id"].map(pos), "tgt": finding["target_case_id"].map(pos),
                            "text": finding["modification_text"],
                            "key": finding["relevant_value"] + "|" + finding["criterion"] + "=" + finding["to_value"]})
    out = pd.concat([mods, tone, finding], ignore_index=True).astype({"ref": int, "tgt": int, "key": str})
    groups = cases["diagnosis_group"].astype(str).to_numpy()
    keys: list[list[str]] = [[] for _ in range(len(cases))]
    if len(tone):
        ranges = tone_ranges(cases, str(tone["scale"].iloc[0]))
        for k, (g, r) in enumerate(zip(groups, ranges)):
            if r is not None:
                keys[k].append(f"{g}|{r}")
    if len(finding):
        for k, (_, row) in enumerate(cases.iterrows()):
            keys[k] += [f"{groups[k]}|{c}={v}" for c, v in criteria_of(row).items()]
    target_key = np.array([";".join(k) for k in keys], dtype=object)
    return out.drop(columns="scale", errors="ignore").assign(target_key=target_key[out["tgt"].to_numpy()])


def triplet_positives(batch: pd.DataFrame) -> np.ndarray:
    """Which in-batch targets answer each triplet query.

    Its own target image (any triplet), and for a tone or finding query every target with the group and
    skin-tone range, or the group and finding, it asks for (whichever triplet brought it).

    >>> batch = pd.DataFrame({"tgt": [5, 5, 7, 8], "key": ["", "MEL|V-VI", "MEL|streaks=absent", ""],
    ...                       "target_key": ["MEL|V-VI;MEL|streaks=absent", "MEL|V-VI;MEL|streaks=absent",
    ...                                      "MEL|V-VI;MEL|streaks=absent", "NEV|I-II;NEV|streaks=absent"]})
    >>> triplet_positives(batch).astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    """
    tgt = batch["tgt"].to_numpy()
    key = batch["key"].to_numpy(dtype=object)
    target_keys = [set(str(k).split(";")) - {""} for k in batch["target_key"].to_numpy(dtype=object)]
    answers = np.array([[k != "" and k in tk for tk in target_keys] for k in key], dtype=bool).reshape(len(key), -1)
    return (tgt[:, None] == tgt[None, :]) | answers

