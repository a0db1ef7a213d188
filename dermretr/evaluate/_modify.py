"""The "modify" protocol: a reference image plus a modification text (DermSynth's triplets, or derived)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._checks import check_int
from .._errors import DermretrError
from ..data.vocab import CRITERIA, criteria_of, modification_text
from ..models.embeddings import Embeddings, EmbeddingsLike, convex_score
from ._common import attach_metrics, check_split, is_known, query_columns, resolve_gallery_splits, same_values
from ._leak import check_query_text
from ._metrics import rank_metrics, summarize_metrics

__all__ = ["load_triplets", "derive_triplets", "modify_search", "modify_queries", "ModifyQueries"]

def load_triplets(root: str | os.PathLike) -> pd.DataFrame | None:
    """DermSynth's modification triplets of a dataset folder, or None when it has none.

    Reads ``ROOT/meta/modifications.csv`` (``reference_case_id``,
    ``modification_text``, ``target_case_id``, ``criterion``, ``from_value``,
    ``to_value``...); ``root`` may also be the CSV file itself.

    >>> import tempfile
    >>> load_triplets(tempfile.mkdtemp()) is None
    True
    """
    path = Path(root).expanduser()
    file = path if path.is_file() else path / "meta" / "modifications.csv"
    if not file.is_file():
        return None
    try:
        mods = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DermretrError(f"cannot read modification triplets {file}: {exc}") from None
    missing = [c for c in ("reference_case_id", "modification_text", "target_case_id") if c not in mods.columns]
    if missing:
        raise DermretrError(f"{file} lacks column(s) {missing}; found {list(mods.columns)}")
    return mods


def derive_triplets(cases: pd.DataFrame, split: str = "test", seed: int = 0, max_per_case: int = 1,
                    gallery_splits: Sequence[str] | None = None) -> pd.DataFrame:
    """Modification queries for a dataset with 7-point criteria but no triplets.

    For each reference case of ``split`` with known criteria, in table order,
    up to ``max_per_case`` different criteria are drawn (with a generator
    seeded by ``seed``), each with a new value that differs from the
    reference's and that some *eligible* gallery case has: one of
    ``gallery_splits``, of the reference's diagnosis group and of another
    patient.  Those eligible cases with the requested value are the relevant
    ones (:func:`modify_search`), so every derived query has at least one.

    Parameters
    ----------
    cases : DataFrame
        A validated case table.
    split : str
        The references' split.
    seed : int
        Same seed, same triplets.
    max_per_case : int
        Triplets per reference at most.
    gallery_splits : strs, optional
        Default: train and val for test references, train for val references.

    Returns
    -------
    DataFrame
        ``reference_case_id, modification_text, criterion, from_value, to_value``
        (the text comes from :func:`~dermretr.data.vocab.modification_text`).

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": list("abc"), "patient_id": list("pqr"),
    ...     "diagnosis_group": ["NEV"] * 3, "split": ["train", "val", "test"],
    ...     "streaks": ["regular", "irregular", "absent"]})
    >>> derive_triplets(cases)[["reference_case_id", "criterion", "from_value", "to_value"]].to_numpy().tolist()
    [['c', 'streaks', 'absent', 'irregular']]
    """
    check_int(max_per_case, "max_per_case")
    columns = ["reference_case_id", "modification_text", "criterion", "from_value", "to_value"]
    crit_cols = [c for c in CRITERIA if c in cases.columns and cases[c].notna().any()]
    if not crit_cols:
        raise DermretrError(
            "the modify protocol needs modification triplets (DermSynth's meta/modifications.csv) or cases with "
            "known 7-point criteria (e.g. derm7pt); this dataset has neither"
        )
    splits = cases["split"].astype(str)
    gallery_splits = resolve_gallery_splits(split, gallery_splits)
    refs = cases[splits == split]
    gal = cases[splits.isin(list(gallery_splits))]
    g_group = gal["diagnosis_group"].astype(str).to_numpy()
    g_patient = gal["patient_id"].astype(str).to_numpy()
    g_values = {c: gal[c].astype(object).to_numpy() for c in crit_cols}
    # values present per (group, criterion): value -> patients having it
    present: dict[tuple[str, str], dict[str, set[str]]] = {}
    for c in crit_cols:
        for grp, val, pat in zip(g_group, g_values[c], g_patient):
            if is_known(val):
                present.setdefault((grp, c), {}).setdefault(str(val), set()).add(pat)
    rng = np.random.default_rng(seed)
    rows = []
    for _, ref in refs.iterrows():
        known = criteria_of(ref)
        grp, pat = str(ref["diagnosis_group"]), str(ref["patient_id"])
        options = {}
        for c in crit_cols:
            if c not in known:
                continue
            values = [v for v in CRITERIA[c] if v != known[c]
                      and (present.get((grp, c), {}).get(v, set()) - {pat})]
            if values:
                options[c] = values
        if not options:
            continue
        names = list(options)
        chosen = rng.permutation(len(names))[:max_per_case]
        for j in sorted(chosen):
            c = names[j]
            new = options[c][int(rng.integers(len(options[c])))]
            text_seed = int(rng.integers(2**31))
            after = dict(known, **{c: new})
            rows.append({"reference_case_id": str(ref["case_id"]),
                         "modification_text": modification_text(known, after, seed=text_seed),
                         "criterion": c, "from_value": known[c], "to_value": new})
    return pd.DataFrame(rows, columns=columns)


def modify_search(retriever, cases: pd.DataFrame, triplets=None, split: str = "test",
                  gallery_splits: Sequence[str] | None = None, ks: Sequence[int] = (1, 5, 10),
                  alpha: float | None = None, seed: int = 0, max_per_case: int = 1, batch_size: int = 64,
                  progress: bool = False, ties: str = "pessimistic", queries: EmbeddingsLike | None = None,
                  gallery: EmbeddingsLike | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """The "modify" protocol: reference image + modification text.

    Parameters
    ----------
    retriever : Retriever
        Anything with ``encode_queries``/``encode_targets``.
    cases : DataFrame
        A validated case table.
    triplets : DataFrame, path or None
        DermSynth-style triplets (``reference_case_id``, ``modification_text``,
        ``target_case_id``), or a dataset folder holding
        ``meta/modifications.csv``: relevant = the exact target; gallery =
        every case except the reference.  Triplets without
        ``target_case_id`` (from :func:`derive_triplets`), or None (or a
        folder without the file) to derive them: relevant = gallery cases of
        ``gallery_splits`` with the requested criterion value and the
        reference's diagnosis group; the reference's patient is excluded.
    split : str
        References come from this split.
    gallery_splits : strs, optional
        Gallery of derived triplets (default: train+val for test references).
    seed, max_per_case
        Passed to :func:`derive_triplets`.
    ties : {"pessimistic", "stable", "optimistic"}
        Order of equal scores (see :func:`rank_metrics`).
    queries, gallery : dict, optional
        Pre-computed ``encode_queries`` of the queries and ``encode_targets``
        of the gallery, in the order of :func:`modify_queries` (its
        ``references``/``texts`` and ``gallery``), e.g. to score one
        encoding at several ``alpha``.

    Returns
    -------
    (DataFrame, dict)
        Per-query metrics (the reference's :data:`QUERY_COLUMNS`, the triplet's
        columns, ``n_relevant`` and the metrics) and their means.

    Examples
    --------
    A stand-in retriever that maps a query straight onto its target:

    >>> class Oracle:
    ...     def encode_targets(self, paths, **_):
    ...         return {"global": np.eye(3)[[int(p) for p in paths]], "local": None, "alpha": 0.0}
    ...     def encode_queries(self, paths, texts, **_):
    ...         return {"global": np.eye(3)[[int(t[-1]) for t in texts]], "local": None, "alpha": 0.0}
    >>> cases = pd.DataFrame({"case_id": list("abc"), "patient_id": ["p", "p", "q"],
    ...     "image_path": ["0", "1", "2"], "diagnosis": "x", "diagnosis_group": "X", "split": "test"})
    >>> mods = pd.DataFrame({"reference_case_id": ["a", "b"], "modification_text": ["to 1", "to 0"],
    ...                      "target_case_id": ["b", "a"]})
    >>> per_query, summary = modify_search(Oracle(), cases, mods, ks=(1,))
    >>> summary["recall@1"], per_query["n_relevant"].tolist()
    (1.0, [1, 1])
    """
    mq = modify_queries(cases, triplets, split=split, gallery_splits=gallery_splits, seed=seed,
                        max_per_case=max_per_case)
    if queries is None:
        queries = retriever.encode_queries(mq.references["image_path"].tolist(), mq.texts, batch_size=batch_size,
                                           progress=progress)
    if gallery is None:
        gallery = retriever.encode_targets(mq.gallery["image_path"].tolist(), batch_size=batch_size,
                                           progress=progress)
    queries, gallery = Embeddings.from_mapping(queries), Embeddings.from_mapping(gallery)
    if len(queries) != len(mq.texts) or len(gallery) != len(mq.gallery):
        raise DermretrError(f"pre-computed encodings do not fit: {len(queries)} queries for {len(mq.texts)} "
                            f"modification queries, {len(gallery)} targets for {len(mq.gallery)} gallery cases")
    s, _, _ = convex_score(queries, gallery, alpha=alpha)
    per_query = attach_metrics(mq.info, rank_metrics(s, mq.relevant, mq.exclude, ks=ks, ties=ties))
    return per_query, summarize_metrics(per_query)


@dataclass(frozen=True)
class ModifyQueries:
    """The queries, gallery, relevance and exclusions of the "modify" protocol (:func:`modify_queries`).

    ``triplets`` are the triplets kept (reference in the split, cases in the
    table), one per query; ``references`` the reference cases, one row per
    query; ``texts`` the modification texts; ``gallery`` the gallery cases;
    ``relevant`` and ``exclude`` are ``[Q, G]``; ``info`` is the per-query
    table's head (the reference's :data:`QUERY_COLUMNS` and the triplet's
    columns); ``exact`` says whether relevance is the exact target
    (DermSynth's triplets) or derived (criterion value and diagnosis group).
    """

    triplets: pd.DataFrame
    references: pd.DataFrame
    texts: list[str]
    gallery: pd.DataFrame
    relevant: np.ndarray
    exclude: np.ndarray
    info: pd.DataFrame
    exact: bool


def modify_queries(cases: pd.DataFrame, triplets=None, split: str = "test",
                   gallery_splits: Sequence[str] | None = None, seed: int = 0,
                   max_per_case: int = 1) -> ModifyQueries:
    """The queries of the "modify" protocol, without a model (see :func:`modify_search` for the arguments).

    Every query text is checked by :func:`check_query_text` (it never names the answer).

    Examples
    --------
    >>> cases = pd.DataFrame({"case_id": list("abc"), "patient_id": ["p", "p", "q"],
    ...     "image_path": ["0", "1", "2"], "diagnosis": "x", "diagnosis_group": "X", "split": "test"})
    >>> mods = pd.DataFrame({"reference_case_id": ["a"], "modification_text": ["to 1"], "target_case_id": ["b"]})
    >>> mq = modify_queries(cases, mods)
    >>> mq.exact, mq.relevant.tolist(), mq.exclude.tolist()
    (True, [[False, True, False]], [[True, False, False]])
    """
    check_split(cases, split)
    if triplets is not None and not isinstance(triplets, pd.DataFrame):
        triplets = load_triplets(triplets)
    exact = triplets is not None and "target_case_id" in triplets.columns
    if triplets is None:
        triplets = derive_triplets(cases, split=split, seed=seed, max_per_case=max_per_case,
                                   gallery_splits=gallery_splits)
    needed = ("reference_case_id", "modification_text") + (() if exact else ("criterion", "to_value"))
    missing = [c for c in needed if c not in triplets.columns]
    if missing:
        raise DermretrError(f"modification triplets lack column(s) {missing}; found {list(triplets.columns)}")
    ids = cases["case_id"].astype(str).to_numpy()
    pos = {cid: i for i, cid in enumerate(ids)}
    splits = cases["split"].astype(str).to_numpy()
    t = triplets.astype({"reference_case_id": str}).reset_index(drop=True)
    keep = t["reference_case_id"].map(lambda c: c in pos and splits[pos[c]] == split).to_numpy(dtype=bool)
    if exact:
        t = t.astype({"target_case_id": str})
        keep = keep & t["target_case_id"].isin(pos).to_numpy()
    t = t[keep].reset_index(drop=True)
    if len(t) == 0:
        what = "modification triplets" if exact else "derivable modification queries (criteria changes)"
        raise DermretrError(f"no {what} with a reference in split {split!r} and their cases in the dataset")
    ref_idx = t["reference_case_id"].map(pos).to_numpy(dtype=int)
    q = cases.iloc[ref_idx].reset_index(drop=True)
    if exact:
        g_idx = np.arange(len(cases))
        rel = np.zeros((len(t), len(g_idx)), dtype=bool)
        rel[np.arange(len(t)), t["target_case_id"].map(pos).to_numpy(dtype=int)] = True
        exclude = np.zeros_like(rel)
        exclude[np.arange(len(t)), ref_idx] = True
    else:
        g_idx = np.flatnonzero(np.isin(splits, list(resolve_gallery_splits(split, gallery_splits))))
        if len(g_idx) == 0:
            raise DermretrError(
                f"the modify protocol needs gallery cases in {list(resolve_gallery_splits(split, gallery_splits))}")
        g = cases.iloc[g_idx]
        rel = same_values(q["diagnosis_group"].astype(str).to_numpy(), g["diagnosis_group"].astype(str).to_numpy())
        unknown = sorted(set(t["criterion"].astype(str)) - (set(CRITERIA) & set(cases.columns)))
        if unknown:
            raise DermretrError(f"modification triplets name criteria {unknown} that are not 7-point criteria "
                                f"columns of the case table; use one of {sorted(set(CRITERIA) & set(cases.columns))}")
        for c in t["criterion"].unique():
            rows = (t["criterion"] == c).to_numpy()
            gv = g[c].astype(object).to_numpy()
            gv = np.array([str(v) if is_known(v) else "\0" for v in gv], dtype=object)
            rel[rows] &= same_values(t.loc[rows, "to_value"].astype(str).to_numpy(), gv)
        exclude = (same_values(q["patient_id"].astype(str).to_numpy(), g["patient_id"].astype(str).to_numpy())
                   | same_values(q["case_id"].astype(str).to_numpy(), g["case_id"].astype(str).to_numpy()))
    texts = t["modification_text"].tolist()
    check_query_text(q, texts)
    extra = [c for c in ("modification_text", "criterion", "from_value", "to_value", "target_case_id")
             if c in t.columns]
    info = pd.concat([query_columns(q), t[extra]], axis=1)
    return ModifyQueries(triplets=t, references=q, texts=texts, gallery=cases.iloc[g_idx].reset_index(drop=True),
                         relevant=rel, exclude=exclude, info=info, exact=exact)
