"""The case table: one validated pandas DataFrame schema used everywhere.

Every dataset loader returns a case table, and every later step (training,
indexing, evaluation, fairness slicing) consumes one.  A row is one image of
one lesion of one patient.

Columns (extra dataset columns are kept, after these):

==================  ===========================  =========================================
column              dtype                        meaning
==================  ===========================  =========================================
case_id             string, unique               one image of one lesion
patient_id          string                       the patient (splits never cross patients)
image_path          string                       path of the image file
diagnosis           string                       the dataset's own label
diagnosis_group     string                       coarse group; Derm7pt's BCC/NEV/MEL/MISC/SK
                                                 for dermoscopy, documented per source else
malignant           boolean (nullable)           True, False or NA
pigment_network ..  category (7 columns)         the 7-point criteria, NA when unknown
fitzpatrick         Int64 in 1..6 or NA          Fitzpatrick skin type (I..VI accepted)
monk                Int64 in 1..10 or NA         Monk skin tone
split               category train/val/test
source              string                       the loader that produced the row
==================  ===========================  =========================================

Optional text columns (:data:`TEXT_COLUMNS`, kept as extra columns; every
loader writes both, older or hand-made tables may lack them):

* ``descriptors`` -- the *caption*: ``"; "``-joined phrases that may name the
  diagnosis (training text, zero-shot text search);
* ``findings`` -- what can be observed or reported before a diagnosis
  (dermoscopic criteria, morphology, symptoms and history, body site,
  duration, age, sex, skin type), ``"; "``-joined, possibly empty; never the
  diagnosis, its group or benign/malignant.  Every query is built from it
  (:func:`dermretr.data.vocab.case_text`, ``view="findings"``).

Examples
--------
>>> import pandas as pd
>>> from dermretr.data.cases import validate_cases
>>> df = pd.DataFrame({"case_id": ["a"], "patient_id": ["p"], "image_path": ["a.jpg"],
...                    "diagnosis": ["melanoma"], "diagnosis_group": ["MEL"], "malignant": [True],
...                    "fitzpatrick": [2], "split": ["train"], "source": ["demo"]})
>>> bool(validate_cases(df)["pigment_network"].isna().all())
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from .._errors import CaseTableError
from .vocab import CRITERIA, CRITERION_NAMES

__all__ = [
    "CASE_COLUMNS",
    "REQUIRED_COLUMNS",
    "TEXT_COLUMNS",
    "SPLITS",
    "validate_cases",
    "empty_cases",
    "summarize_cases",
]

#: Splits, in order.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: All schema columns, in the order a validated table has them.
CASE_COLUMNS: tuple[str, ...] = (
    "case_id",
    "patient_id",
    "image_path",
    "diagnosis",
    "diagnosis_group",
    "malignant",
    *CRITERION_NAMES,
    "fitzpatrick",
    "monk",
    "split",
    "source",
)
#: Columns that must be present (the rest are added as NA when missing).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "case_id",
    "patient_id",
    "image_path",
    "diagnosis",
    "diagnosis_group",
    "split",
    "source",
)
#: Optional text columns written by the loaders: the caption and the leak-free findings.
TEXT_COLUMNS: tuple[str, ...] = ("descriptors", "findings")
_NON_NULL = ("case_id", "patient_id", "image_path", "diagnosis", "diagnosis_group", "split", "source")
_MAX_SHOWN = 8


def _rows(index: Iterable, values: Iterable | None = None) -> str:
    """Format offending rows (and values) for an error message."""
    index = list(index)
    if values is None:
        shown = ", ".join(str(i) for i in index[:_MAX_SHOWN])
    else:
        values = list(values)
        shown = ", ".join(f"{i} ({v!r})" for i, v in zip(index[:_MAX_SHOWN], values[:_MAX_SHOWN]))
    more = f" and {len(index) - _MAX_SHOWN} more" if len(index) > _MAX_SHOWN else ""
    return f"row{'s' if len(index) > 1 else ''} {shown}{more}"


def _fail(column: str, bad: pd.Series, what: str, hint: str) -> None:
    raise CaseTableError(
        f"case table column {column!r}: {what} at {_rows(bad.index, bad.tolist())}; {hint}"
    )


def _as_string(df: pd.DataFrame, column: str) -> pd.Series:
    col = df[column]
    if pd.api.types.infer_dtype(col, skipna=True) not in ("string", "empty", "integer"):
        is_text = col.map(lambda v: isinstance(v, (str, np.str_, int, np.integer))).astype(bool)
        bad = col[col.notna().to_numpy() & ~is_text.to_numpy()]
        if len(bad):
            _fail(column, bad, "values are not text", "use strings")
    out = col.astype("string")
    if column in _NON_NULL:
        empty = out[out.isna() | (out.str.strip() == "")]
        if len(empty):
            raise CaseTableError(
                f"case table column {column!r}: missing or empty values at {_rows(empty.index)}; "
                "every case needs one"
            )
    return out


def _as_bool(df: pd.DataFrame, column: str) -> pd.Series:
    mapping = {True: True, False: False, "true": True, "false": False,  # True/False also map 1 and 0
               "1": True, "0": False, "yes": True, "no": False, "malignant": True, "benign": False}
    col = df[column]

    def conv(v):
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return pd.NA
        key = v.strip().lower() if isinstance(v, str) else v
        if isinstance(key, (float, np.floating)) and float(key).is_integer():
            key = int(key)
        try:
            return mapping[key]
        except (KeyError, TypeError):
            return "__bad__"

    uniques = {v: conv(v) for v in col.dropna().unique()}
    conv_col = col.map(uniques).where(col.notna(), pd.NA)
    bad = col[conv_col.map(lambda v: isinstance(v, str))]
    if len(bad):
        _fail(column, bad, "values are not booleans", "use True/False (or 1/0), NA when unknown")
    return conv_col.astype("boolean")


_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}


def _as_int_range(df: pd.DataFrame, column: str, lo: int, hi: int, roman: bool = False) -> pd.Series:
    col = df[column]
    allowed = f"{lo}..{hi} (or I..VI)" if roman else f"{lo}..{hi}"
    booleans = col.map(lambda v: isinstance(v, (bool, np.bool_))).astype(bool)
    if booleans.any():
        _fail(column, col[booleans], "values are booleans, not integers", f"use {allowed}, NA when unknown")
    values = col
    if roman:  # Fitzpatrick types are often written I..VI
        values = col.map(lambda v: _ROMAN.get(v.strip().lower(), v) if isinstance(v, str) else v)
    num = pd.to_numeric(values, errors="coerce")
    if isinstance(num, pd.Series) and num.dtype == object:
        num = num.astype(float)
    bad = col[(col.notna() & num.isna()) | (num.notna() & ((num % 1 != 0) | (num < lo) | (num > hi)))]
    if len(bad):
        _fail(column, bad, f"values outside the integers {allowed}", f"use {allowed}, NA when unknown")
    return num.astype("Int64")


def _as_criterion(df: pd.DataFrame, column: str) -> pd.Categorical:
    allowed = CRITERIA[column]
    col = df[column]
    if col.isna().all():
        return pd.Categorical([pd.NA] * len(col), categories=list(allowed))
    uniques = {v: " ".join(str(v).replace("_", " ").strip().lower().split()) for v in col.dropna().unique()}
    norm = col.map(uniques).where(col.notna(), pd.NA)
    bad = col[norm.notna() & ~norm.isin(allowed)]
    if len(bad):
        _fail(column, bad, "unknown criterion values", f"allowed values: {', '.join(allowed)}")
    return pd.Categorical(norm, categories=list(allowed))


def validate_cases(df: pd.DataFrame, copy: bool = True) -> pd.DataFrame:
    """Check a case table and return it with schema columns first and canonical dtypes.

    Missing optional columns (``malignant``, the seven criteria, ``fitzpatrick``,
    ``monk``) are added as NA.  Criteria values are normalised (underscores and
    case forgiven).  Extra columns are kept after the schema columns.

    Parameters
    ----------
    df : DataFrame
        The table to check.
    copy : bool
        Work on a copy (default) rather than on ``df`` itself.

    Returns
    -------
    DataFrame
        The validated table, index reset to 0..n-1.

    Raises
    ------
    CaseTableError
        Naming the column, the offending rows and their values, and what to do.

    Examples
    --------
    >>> import pandas as pd
    >>> bad = pd.DataFrame({"case_id": ["a", "a"], "patient_id": ["p", "q"],
    ...     "image_path": ["a.jpg", "b.jpg"], "diagnosis": ["x", "y"], "diagnosis_group": ["X", "Y"],
    ...     "split": ["train", "test"], "source": ["demo", "demo"]})
    >>> validate_cases(bad)
    Traceback (most recent call last):
    ...
    dermretr._errors.CaseTableError: case table column 'case_id' repeats 1 id: 'a' (rows 0, 1); case ids must be ...
    """
    if not isinstance(df, pd.DataFrame):
        raise CaseTableError(f"a case table must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CaseTableError(
            f"case table is missing required column(s) {missing}; found columns: {list(df.columns)}"
        )
    dup_cols = df.columns[df.columns.duplicated()].tolist()
    if dup_cols:
        raise CaseTableError(f"case table has duplicate column names {dup_cols}")
    out = df.copy() if copy else df
    out = out.reset_index(drop=True)
    for column in ("malignant", *CRITERION_NAMES, "fitzpatrick", "monk"):
        if column not in out.columns:
            out[column] = pd.NA
    for column in ("case_id", "patient_id", "image_path", "diagnosis", "diagnosis_group", "source"):
        out[column] = _as_string(out, column)
    dups = out["case_id"][out["case_id"].duplicated(keep=False)]
    if len(dups):
        rows = dups.groupby(dups, sort=False).groups
        shown = "; ".join(f"{str(cid)!r} ({_rows(list(index)[:4])}{' ...' if len(index) > 4 else ''})"
                          for cid, index in list(rows.items())[:5])
        more = f"; and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise CaseTableError(
            f"case table column 'case_id' repeats {len(rows)} id{'s' if len(rows) > 1 else ''}: {shown}{more}; "
            "case ids must be unique (one row per image): give every row its own id"
        )
    split = out["split"].map(lambda v: v.strip().lower() if isinstance(v, str) else v)
    bad = out["split"][~split.isin(SPLITS)]
    if len(bad):
        _fail("split", bad, "unknown splits", f"allowed values: {', '.join(SPLITS)}")
    out["split"] = pd.Categorical(split, categories=list(SPLITS))
    out["malignant"] = _as_bool(out, "malignant")
    for column in CRITERION_NAMES:
        out[column] = _as_criterion(out, column)
    out["fitzpatrick"] = _as_int_range(out, "fitzpatrick", 1, 6, roman=True)
    out["monk"] = _as_int_range(out, "monk", 1, 10)
    extra = [c for c in out.columns if c not in CASE_COLUMNS]
    return out[list(CASE_COLUMNS) + extra]


def empty_cases(extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """An empty, validated case table (useful as a starting point or in tests).

    >>> len(empty_cases()), list(empty_cases().columns)[:3]
    (0, ['case_id', 'patient_id', 'image_path'])
    """
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in (*REQUIRED_COLUMNS, *extra_columns)})
    return validate_cases(df)


def summarize_cases(cases: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Count cases per diagnosis, per criterion value and per Fitzpatrick type, by split.

    Returns a dict of tables (``"diagnosis"``, ``"criteria"``, ``"fitzpatrick"``,
    ``"splits"``); each has one column per split plus ``total``.

    >>> import pandas as pd
    >>> df = validate_cases(pd.DataFrame({"case_id": ["a", "b"], "patient_id": ["p", "q"],
    ...     "image_path": ["a.jpg", "b.jpg"], "diagnosis": ["melanoma", "lentigo"],
    ...     "diagnosis_group": ["MEL", "MISC"], "fitzpatrick": [2, None],
    ...     "split": ["train", "test"], "source": ["demo", "demo"]}))
    >>> summarize_cases(df)["fitzpatrick"]["total"].to_dict()
    {'I': 0, 'II': 1, 'III': 0, 'IV': 0, 'V': 0, 'VI': 0, 'unknown': 1}
    """

    def by_split(keys: pd.Series, order: list, name: str) -> pd.DataFrame:
        table = pd.crosstab(keys.to_numpy(), cases["split"].astype(str).to_numpy()).reindex(
            index=order, columns=list(SPLITS), fill_value=0
        )
        table = table.rename_axis(index=name, columns="split")
        table["total"] = table.sum(axis=1)
        return table.astype(int)

    diag = cases["diagnosis_group"].astype(str) + " / " + cases["diagnosis"].astype(str)
    out = {"diagnosis": by_split(diag, sorted(diag.unique()), "group / diagnosis")}
    frames = []
    for c in CRITERION_NAMES:
        vals = cases[c].astype(object).where(cases[c].notna(), "unknown").astype(str)
        order = [v for v in (*CRITERIA[c], "unknown") if v in set(vals)]
        t = by_split(vals, order, "value")
        t.index = pd.MultiIndex.from_product([[c], t.index], names=["criterion", "value"])
        frames.append(t)
    out["criteria"] = pd.concat(frames)
    roman = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
    fitz = cases["fitzpatrick"].map(lambda v: roman.get(int(v)) if pd.notna(v) else "unknown")
    out["fitzpatrick"] = by_split(fitz, [*roman.values(), "unknown"], "fitzpatrick")
    out["splits"] = pd.DataFrame(
        {
            "cases": cases["split"].astype(str).value_counts().reindex(list(SPLITS), fill_value=0),
            "patients": cases.groupby(cases["split"].astype(str))["patient_id"].nunique().reindex(list(SPLITS),
                                                                                                    fill_value=0),
        }
    ).astype(int)
    return out
