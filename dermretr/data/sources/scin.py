"""Loader for SCIN, the Skin Condition Image Network (Google Research & Stanford, 2024).

Licence: SCIN Data Use License (attribution; no attempt to re-identify contributors); terms, restrictions and
citation: docs/datasets.md.

Layout
------
``ROOT/dataset/scin_cases.csv`` and ``ROOT/dataset/scin_labels.csv`` as in the
public bucket (``gs://dx-scin-public-data``), joined on ``case_id``, and the
images where the cases file says: the ``image_1_path`` .. ``image_3_path``
columns hold paths relative to ``ROOT`` (``dataset/images/-123.png``).
``ROOT`` may also be the ``dataset/`` folder itself.  Case ids look like large
(often negative) integers; they are read as text and never as numbers.

One row per image: a case has up to three images, each becomes a row with
``case_id`` = ``"<SCIN case_id>-<N>"`` (N = 1..3), ``image_number`` = N and
``shot_type`` = ``image_N_shot_type``.  ``patient_id`` is the SCIN case id
(SCIN publishes no patient ids; one case is one contributor's condition), so
images of a case always share a split.

Mapping
-------
* ``diagnosis``: the condition of highest weight in
  ``weighted_skin_condition_label`` (a Python-literal dict, first one on
  ties); else the first condition of ``dermatologist_skin_condition_on_label_name``
  (a Python-literal list; also read under the spelling
  ``dermatologist_skin_condition_label_name``); cases without any label:
  ``"unlabeled"``.  Both columns are parsed with :func:`ast.literal_eval`,
  never evaluated;
* ``diagnosis_group`` = ``diagnosis``: SCIN has no coarser grouping;
* ``malignant``: NA (SCIN's conditions are not biopsy-confirmed);
* ``fitzpatrick``: the self-reported ``fitzpatrick_skin_type`` (FST1..FST6;
  NONE_IDENTIFIED and NONE_SELECTED mean unknown);
* ``dermatologist_fitzpatrick_consensus`` (extra, Int64): the median of the
  available dermatologist estimates ``dermatologist_fitzpatrick_skin_type_label_1..3``
  (the lower of the two middle values when two estimates are available: the
  :func:`statistics.median_low`); the three estimates are kept as extra columns;
* ``monk`` = ``monk_skin_tone_label_us`` (1..10); ``monk_skin_tone_label_india``
  is kept as an extra Int64 column;
* ``split``: :func:`~dermretr.data.splits.group_split` by case, stratified by
  diagnosis, computed before missing images are dropped.

Every other column of both files is kept (text); the original ``case_id`` and
``source`` columns are kept as ``scin_case_id`` and ``scin_source``.

Text views (``descriptors``, ``findings``)
------------------------------------------
``"; "``-joined phrases.  The caption ``descriptors``: the condition; the
self-reported symptoms answered YES (``itching``, ``increasing size``,
``joint pain`` ...); textures (``raised or bumpy``, ``flat``, ``rough or
flaky``, ``fluid filled``); body parts (``on the arm``, ``on the back of the
hand`` ...); the duration (``present for one to four weeks``, ``present since
childhood``); the age group (``age 30 to 39``) and the sex at birth
(``female``, ``male``).  Unknown or unspecified answers ("no relevant
experience", ``AGE_UNKNOWN``, ``OTHER_OR_UNSPECIFIED`` ...) and the condition
of unlabeled cases are left out.

``findings`` (what queries use) is the same without the condition: everything
in it is the contributor's own report, made before any dermatologist labelled
the case.

Examples
--------
>>> import tempfile, pathlib
>>> from dermretr.data import load
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "dataset" / "images").mkdir(parents=True)
>>> _ = (root / "dataset" / "scin_cases.csv").write_text(
...     "case_id,image_1_path,condition_symptoms_itching,body_parts_arm\\n"
...     "-1234567890123456789,dataset/images/-1.png,YES,YES\\n")
>>> _ = (root / "dataset" / "scin_labels.csv").write_text(
...     "case_id,weighted_skin_condition_label\\n-1234567890123456789,\\"{'Eczema': 0.7, 'Tinea': 0.3}\\"\\n")
>>> _ = (root / "dataset" / "images" / "-1.png").write_bytes(b"")
>>> load(f"scin:{root}").loc[0, ["case_id", "diagnosis", "descriptors", "findings"]].tolist()
['-1234567890123456789-1', 'Eczema', 'Eczema; itching; on the arm', 'itching; on the arm']
"""

from __future__ import annotations

import ast
import os
import re
import statistics
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from ..._errors import DataWarning, DermretrError
from ._common import (
    add_text_views,
    bad_values,
    check_missing,
    check_seed,
    dataset_root,
    describe_lines,
    finish,
    insert_case_columns,
    line_unit,
    locate,
    parse_number,
    read_table,
    rename_collisions,
    unique_ids,
)

__all__ = ["load_scin", "LAYOUT", "UNLABELED", "CONDITION_COLUMNS"]

SOURCE = "scin"
CASES_CSV = "scin_cases.csv"
LABELS_CSV = "scin_labels.csv"
LAYOUT = (
    "ROOT/dataset/scin_cases.csv (case_id, image_1_path..image_3_path, ...) and ROOT/dataset/scin_labels.csv "
    "(case_id, weighted_skin_condition_label, dermatologist_skin_condition_on_label_name, ...), "
    "image paths relative to ROOT (dataset/images/<id>.png)"
)
#: Diagnosis of cases without any condition label.
UNLABELED = "unlabeled"
WEIGHTED = "weighted_skin_condition_label"
#: The list-of-conditions column, under both spellings found in SCIN's documents.
CONDITION_COLUMNS = ("dermatologist_skin_condition_on_label_name", "dermatologist_skin_condition_label_name")
SELF_FST = "fitzpatrick_skin_type"
DERM_FST = tuple(f"dermatologist_fitzpatrick_skin_type_label_{k}" for k in (1, 2, 3))
MONK_US = "monk_skin_tone_label_us"
MONK_INDIA = "monk_skin_tone_label_india"
CONSENSUS = "dermatologist_fitzpatrick_consensus"
_FST_UNKNOWN = ("NONE_IDENTIFIED", "NONE_SELECTED")
_FST_ALLOWED = "FST1, FST2, FST3, FST4, FST5, FST6, NONE_IDENTIFIED, NONE_SELECTED (unknown), or empty"
_YES = {"yes", "true", "1"}
#: Prefixes of SCIN's yes/no answer columns, in text-view order, and answers left out of the text.
_ANSWER_PREFIXES = ("condition_symptoms_", "other_symptoms_", "textures_", "body_parts_")
_SKIPPED_ANSWERS = {"no_relevant_experience", "no_relevant_symptoms", "texture_unspecified"}
_BODY_PARTS = {
    "back_of_hand": "on the back of the hand",
    "torso_front": "on the front of the torso",
    "torso_back": "on the back of the torso",
    "foot_top_or_side": "on the top or side of the foot",
    "foot_sole": "on the sole of the foot",
    "other": "on another body part",
}


def _words(value: str) -> str:
    return " ".join(value.replace("_", " ").lower().split())


def _answer_phrase(prefix: str, suffix: str) -> str | None:
    if suffix in _SKIPPED_ANSWERS:
        return None
    if prefix == "body_parts_":
        return _BODY_PARTS.get(suffix, f"on the {_words(suffix)}")
    return _words(suffix)


def _duration_phrase(value: str) -> str | None:
    words = _words(value)
    if not words or "unknown" in words:
        return None
    return f"present {words}" if words.startswith("since") else f"present for {words}"


def _age_phrase(value: str) -> str | None:
    words = _words(value)
    if not words or "unknown" in words:
        return None
    return words if words.startswith("age") else f"age {words}"


def _sex_phrase(value: str) -> str | None:
    words = _words(value)
    return words if words in ("female", "male") else None


def _text(value) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _parse_fst(df: pd.DataFrame, column: str, path: Path) -> pd.Series:
    raw = df[column]

    def conv(v):
        v = _text(v)
        if v is None or v.upper() in _FST_UNKNOWN:
            return pd.NA
        m = re.fullmatch(r"FST([1-6])", v.upper())
        return int(m.group(1)) if m else "bad"

    out = raw.map(conv)
    bad = raw[out.map(lambda v: isinstance(v, str))]
    if len(bad):
        raise bad_values(path, column, bad, f"allowed values: {_FST_ALLOWED}")
    return out.astype("Int64")


def _parse_literals(df: pd.DataFrame, column: str, kind: type[list] | type[dict], path: Path) -> list:
    """Parse Python-literal cells of ``column`` (a list of names or a dict of weights); errors name the lines."""
    example = "['Eczema', 'Psoriasis']" if kind is list else "{'Eczema': 0.69, 'Psoriasis': 0.31}"
    out: list = []
    bad: list[str] = []
    for i, v in df[column].items():
        text = _text(v)
        if text is None:
            out.append(kind())
            continue
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            bad.append(f"{i} ({text!r}: {type(exc).__name__})")
            out.append(kind())
            continue
        if kind is list and isinstance(value, tuple):
            value = list(value)
        if kind is list:
            ok = isinstance(value, list) and all(isinstance(x, str) for x in value)
        else:
            ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(w, (int, float))
                                                 and not isinstance(w, bool) for k, w in value.items())
        if not ok:
            bad.append(f"{i} ({text!r}: not a {'list of names' if kind is list else 'dict of name: weight'})")
            value = kind()
        out.append(value)
    if bad:
        raise DermretrError(
            f"{path}: column {column!r} has malformed Python literals at "
            f"{describe_lines(bad, limit=5, unit=line_unit(df.index))}; "
            f"expected a literal {kind.__name__} such as {example}, or an empty cell"
        )
    return out


def _diagnosis(weights: dict, names: list) -> str:
    weights = {" ".join(k.split()): w for k, w in weights.items() if k.strip()}
    if weights:
        return max(weights, key=weights.__getitem__)
    names = [" ".join(n.split()) for n in names if n.strip()]
    return names[0] if names else UNLABELED


def _check_ids(df: pd.DataFrame, path: Path) -> pd.Series:
    return unique_ids(df, "case_id", path, "every case needs its id", "case ids must be unique")


def _read_labels(path: Path) -> pd.DataFrame:
    labels = read_table(path, SOURCE, LAYOUT, required=["case_id"])
    names_col = next((c for c in CONDITION_COLUMNS if c in labels.columns), None)
    if names_col is None and WEIGHTED not in labels.columns:
        raise DermretrError(
            f"{path}: missing required column(s) [{WEIGHTED!r}, {CONDITION_COLUMNS[0]!r} "
            f"(or {CONDITION_COLUMNS[1]!r})], at least one is needed; found columns {list(labels.columns)}. "
            f"Expected layout: {LAYOUT}"
        )
    labels["case_id"] = _check_ids(labels, path)
    weights = _parse_literals(labels, WEIGHTED, dict, path) if WEIGHTED in labels.columns else [{}] * len(labels)
    names = _parse_literals(labels, names_col, list, path) if names_col else [[]] * len(labels)
    labels["__diagnosis"] = [_diagnosis(w, n) for w, n in zip(weights, names)]
    estimates = [_parse_fst(labels, c, path) for c in DERM_FST if c in labels.columns]
    if estimates:
        table = pd.concat(estimates, axis=1)
        labels[CONSENSUS] = pd.array(
            [statistics.median_low(v) if len(v := [int(x) for x in row if pd.notna(x)]) else pd.NA
             for row in table.itertuples(index=False)],
            dtype="Int64",
        )
    else:
        labels[CONSENSUS] = pd.array([pd.NA] * len(labels), dtype="Int64")
    for column in (MONK_US, MONK_INDIA):
        if column in labels.columns:
            labels[column] = parse_number(labels, column, path, 1, 10, integer=True,
                                          what="an integer").astype("Int64")
    return labels


def _findings(row: dict, answer_columns: Sequence[tuple[str, str, str]]) -> str:
    """The contributor's answers of one case as '; '-joined phrases (the ``findings`` view)."""
    parts: list[str] = []
    for column, prefix, suffix in answer_columns:
        v = row.get(column)
        if isinstance(v, str) and v.strip().lower() in _YES:
            phrase = _answer_phrase(prefix, suffix)
            if phrase:
                parts.append(phrase)
    for column, phrase_of in (("condition_duration", _duration_phrase), ("age_group", _age_phrase),
                              ("sex_at_birth", _sex_phrase)):
        v = _text(row.get(column))
        phrase = phrase_of(v) if v else None
        if phrase:
            parts.append(phrase)
    return "; ".join(parts)


def load_scin(
    root: str | os.PathLike,
    missing: Literal["warn", "raise", "keep"] = "warn",
    seed: int = 0,
) -> pd.DataFrame:
    """Load a SCIN folder into a validated case table with one row per image.

    Parameters
    ----------
    root : path
        The folder holding ``dataset/`` (or the ``dataset/`` folder itself).
    missing : {"warn", "raise", "keep"}
        Rows whose image is not found: drop them with one DataWarning giving
        the count and examples (default), raise a DermretrError, or keep them
        with ``image_path`` set to where the cases file says the image is.
    seed : int
        Seed of the case-grouped split stratified by diagnosis.

    Returns
    -------
    DataFrame
        A validated case table with ``scin_case_id``, ``image_number``,
        ``shot_type``, ``dermatologist_fitzpatrick_consensus``,
        ``descriptors`` and ``findings``; every column of both CSV files is
        kept.

    Raises
    ------
    DermretrError
        A CSV is missing, lacks a required column, has repeated case ids,
        malformed literal labels, unknown skin types or Monk tones, image
        paths escaping ``root``, or (``missing="raise"``) images are missing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "dataset" / "images").mkdir(parents=True)
    >>> _ = (root / "dataset" / "scin_cases.csv").write_text(
    ...     "case_id,fitzpatrick_skin_type,image_1_path,image_2_path\\n"
    ...     "42,FST2,dataset/images/a.png,dataset/images/b.png\\n")
    >>> _ = (root / "dataset" / "scin_labels.csv").write_text(
    ...     "case_id,dermatologist_skin_condition_on_label_name,monk_skin_tone_label_us\\n"
    ...     "42,\\"['Psoriasis', 'Eczema']\\",3\\n")
    >>> for name in "ab":
    ...     _ = (root / "dataset" / "images" / f"{name}.png").write_bytes(b"")
    >>> cases = load_scin(root)
    >>> cases[["case_id", "patient_id", "diagnosis", "fitzpatrick", "monk"]].values.tolist()
    [['42-1', '42', 'Psoriasis', 2, 3], ['42-2', '42', 'Psoriasis', 2, 3]]
    """
    missing, seed = check_missing(missing), check_seed(seed)
    root = dataset_root(root, SOURCE, LAYOUT).resolve()
    meta_dir = root / "dataset"
    if not (meta_dir / CASES_CSV).is_file() and (root / CASES_CSV).is_file() and root.name == "dataset":
        meta_dir, root = root, root.parent
    cases_path, labels_path = meta_dir / CASES_CSV, meta_dir / LABELS_CSV
    cases = read_table(cases_path, SOURCE, LAYOUT, required=["case_id", "image_1_path"])
    cases["case_id"] = _check_ids(cases, cases_path)
    fitzpatrick = (_parse_fst(cases, SELF_FST, cases_path) if SELF_FST in cases.columns
                   else pd.Series(pd.NA, index=cases.index, dtype="Int64"))
    labels = _read_labels(labels_path)

    lines = cases.index  # the merge numbers the rows anew
    merged = cases.merge(labels, on="case_id", how="left", suffixes=("", "_labels"), validate="one_to_one")
    merged["__diagnosis"] = merged["__diagnosis"].fillna(UNLABELED)
    merged["__fitzpatrick"] = fitzpatrick.to_numpy()
    answer_columns = [(c, p, c[len(p):]) for p in _ANSWER_PREFIXES for c in merged.columns if c.startswith(p)]
    findings = [_findings(row, answer_columns) for row in merged.to_dict("records")]
    condition = merged["__diagnosis"].where(merged["__diagnosis"] != UNLABELED, "").tolist()

    rows: list[int] = []
    numbers: list[int] = []
    image_paths: list[str] = []
    found: list[bool] = []
    no_image: list[str] = []
    for i in range(len(merged)):
        listed = False
        for n in (1, 2, 3):
            rel = _text(merged.at[i, f"image_{n}_path"]) if f"image_{n}_path" in merged.columns else None
            if rel is None:
                continue
            listed = True
            expected, hit = locate(root, [rel], cases_path, lines[i])
            rows.append(i)
            numbers.append(n)
            found.append(hit is not None)
            image_paths.append(str(hit if hit is not None else expected))
        if not listed:
            no_image.append(merged.at[i, "case_id"])
    if no_image:
        warnings.warn(
            f"{SOURCE}: {len(no_image)} case(s) of {cases_path} list no image path and were skipped "
            f"(e.g. {', '.join(no_image[:5])})", DataWarning, stacklevel=2)

    scin_ids = merged["case_id"]
    out = rename_collisions(merged, SOURCE).iloc[rows].reset_index(drop=True)
    diagnosis = out.pop("__diagnosis")
    fitz = out.pop("__fitzpatrick")
    ids = scin_ids.iloc[rows].reset_index(drop=True)
    insert_case_columns(
        out, case_id=ids + "-" + pd.Series(numbers, dtype=str), patient_id=ids, image_path=image_paths,
        diagnosis=diagnosis, diagnosis_group=diagnosis, malignant=pd.array([pd.NA] * len(out), dtype="boolean"),
        fitzpatrick=fitz, monk=out[MONK_US].to_numpy() if MONK_US in out.columns else pd.NA)
    out["image_number"] = pd.array(numbers, dtype="Int64")
    out["shot_type"] = [
        _text(out.at[j, f"image_{n}_shot_type"]) if f"image_{n}_shot_type" in out.columns else None
        for j, n in enumerate(numbers)
    ]
    add_text_views(out, [[findings[i] for i in rows]], before=[[condition[i] for i in rows]])
    return finish(out, found, missing, source=SOURCE, seed=seed, path=cases_path, root=root)
