"""Evaluating a run folder: its best checkpoint on one protocol, into per-query metrics and records."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .._checks import check_boot, check_seed
from .._errors import DermretrError
from ..data.splits import split_source
from ..models.embeddings import EncodingCache
from ._case import case_scores, case_search, scores_search
from ._common import PROTOCOLS, check_relevant, check_split, data_options_for, load_data, resolve_gallery_splits
from ._hybrid import check_findings_weight, choose_findings_weight, hybrid_scores
from ._metrics import check_ks
from ._modify import derive_triplets, load_triplets, modify_search
from ._records import metric_records
from ._tone import tone_queries, tone_scores, tone_scores_search, tone_search, with_tone_estimate

__all__ = ["run_checkpoint", "evaluate_run"]

def run_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The best checkpoint of a run folder, ``RUN_DIR/checkpoints/best.pt``, checked to exist.

    >>> import tempfile
    >>> run_checkpoint(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: run folder ... has no checkpoint: .../checkpoints/best.pt not found ...
    """
    run = Path(run_dir).expanduser()
    if run.is_file():
        folder = run.parent.parent if run.parent.name == "checkpoints" else None
        hint = f" (here {folder})" if folder is not None else ""
        raise DermretrError(f"{run} is a file, not a run folder: pass the folder that `dermretr train --out` "
                            f"wrote, the one holding checkpoints/{hint}")
    if not run.is_dir():
        raise DermretrError(f"run folder {run} not found (train one with `dermretr train --out {run}`)")
    ckpt = run / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        if (run / "checkpoints" / "last.pt").is_file() and not ckpt.exists():
            raise DermretrError(f"run folder {run} has no checkpoint: {ckpt} not found; the training stopped before "
                                "writing it: continue it with `dermretr train --resume` and the same options")
        what = "is not a file" if ckpt.exists() else "not found"
        raise DermretrError(
            f"run folder {run} has no checkpoint: {ckpt} {what} (is it a finished `dermretr train` run?)"
        )
    try:
        empty = ckpt.stat().st_size == 0
    except OSError as exc:
        raise DermretrError(f"cannot read {ckpt}: {exc.strerror or exc}") from None
    if empty:
        raise DermretrError(f"{ckpt} is empty (an interrupted copy?); copy the run again or train it again")
    return ckpt


def evaluate_run(run_dir: str | os.PathLike, data, protocol: str = "case", *, triplets=None,
                 split: str = "test", relevant: str = "diagnosis_group", ks: Sequence[int] = (1, 5, 10),
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0, alpha: float | None = None,
                 batch_size: int = 64, device: str = "auto", progress: bool = False, name: str | None = None,
                 retriever=None, by: str | None = None, tone_scale: str = "fitzpatrick",
                 tone_style: str = "scale", data_options: Mapping[str, object] | None = None,
                 findings_weight: float | str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Evaluate one run folder: per-query metrics and the records of ``metrics.json``.

    Parameters
    ----------
    run_dir : path
        A ``dermretr train`` run; ``RUN_DIR/checkpoints/best.pt`` is loaded.
    data : str or DataFrame
        ``"SOURCE:PATH"`` (triplets are then read from ``PATH/meta/modifications.csv``
        when it exists) or an already loaded case table.
    protocol : {"case", "modify", "tone"}
        See :func:`case_search`, :func:`modify_search` and :func:`tone_search`.
    triplets : DataFrame or path, optional
        Modification triplets for ``protocol="modify"`` (default: the data
        folder's, else derived from the criteria).
    split : str
        The query split (``"test"``; ``"val"`` searches the train gallery).
    relevant : {"diagnosis_group", "diagnosis"}
        Relevance of the case and tone protocols.
    ks, n_boot, level, seed
        Cut-offs and the bootstrap (``seed`` also derives triplets).
    alpha, batch_size, device, progress
        Scoring and encoding options.
    name : str, optional
        The run's name in the records (default: the folder's name).
    retriever : Retriever, optional
        Use this model instead of loading the checkpoint.
    by : str, optional
        Query column whose classes the macro records average over (default:
        ``target_range`` for the tone protocol, ``diagnosis_group`` else).
    tone_scale, tone_style
        ``scale`` and ``style`` of :func:`tone_search`; ``tone_scale="ita"``
        estimates skin tone from the pixels
        (:func:`dermretr.skin_tone.estimate_skin_tone`) when ``data`` has no
        estimate yet.
    data_options : dict, optional
        Loader options for a ``"SOURCE:PATH"`` ``data`` (default: those the run
        was trained with on that source, from its config.json; given ones must
        agree with them, see :func:`data_options_for`).
    findings_weight : float or "val", optional
        Case and tone protocols, where the cases carry annotated 7-point
        findings: score the model's scores plus this weight times the findings
        agreement (:func:`hybrid_scores`), reported as its own method
        (``KIND+findings``); ``"val"`` chooses the weight on the val cases'
        queries of the same protocol against the train cases
        (:func:`choose_findings_weight`).  The weight used is in the per-query
        table's ``attrs["findings_weight"]``.

    Returns
    -------
    (DataFrame, list of dict)
        Per-query metrics (with ``run``, ``method`` and ``protocol`` columns
        first) and the records of :func:`metric_records` (micro, then macro
        over ``by``; ``split_source`` says where the data's split came from,
        :func:`dermretr.data.split_source`).  Equal scores are ranked pessimistically (relevant
        cases last); compare with the non-learned floors of
        :func:`dermretr.floors.evaluate_floors`.

    Examples
    --------
    >>> evaluate_run("no/such/run", "synthetic:/nowhere")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: run folder no/such/run not found (train one with `dermretr train --out no/such/run`)
    """
    if protocol not in PROTOCOLS:
        raise DermretrError(f"unknown protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    check_relevant(relevant)
    ks = check_ks(ks)
    check_boot(n_boot, level)
    check_seed(seed)
    ckpt = run_checkpoint(run_dir) if retriever is None else None
    cases, root = load_data(data, data_options_for(data, data_options, [run_dir]))
    split_from = split_source(cases)  # before the tone protocol adds columns
    check_split(cases, split)
    gallery_splits = resolve_gallery_splits(split, None)
    tq = None
    if protocol == "tone":  # bad data fails before the model is loaded
        cases = with_tone_estimate(cases, tone_scale, progress=progress)
        tq = tone_queries(cases, split, gallery_splits, scale=tone_scale, relevant=relevant, style=tone_style)
    # before the model is loaded
    weight = check_findings_weight(findings_weight, protocol, cases, split, relevant=relevant,
                                   tone_scale=tone_scale if protocol == "tone" else None)
    if protocol == "modify" and triplets is None:
        triplets = load_triplets(root) if root is not None else None
        if triplets is None:  # derive now: bad data fails before the model is loaded
            triplets = derive_triplets(cases, split=split, seed=seed, gallery_splits=gallery_splits)
            if len(triplets) == 0:
                raise DermretrError(
                    f"no modification queries can be derived: no {split} case has a known criterion value that "
                    f"differs from a {'/'.join(gallery_splits)} case of its diagnosis group"
                )
    if retriever is None:
        from ..models.retriever import Retriever

        assert ckpt is not None  # run_checkpoint found it above
        retriever = Retriever.load(ckpt, device=device)
    method = str(getattr(retriever, "kind", "unknown"))
    run = name if name is not None else (Path(run_dir).expanduser().name or str(run_dir))
    if weight is not None:
        if not isinstance(retriever, EncodingCache):  # the val and test searches share the training images
            retriever = EncodingCache(retriever)
        if isinstance(weight, str):  # "val"
            weight, _ = choose_findings_weight(retriever, cases, "val", ("train",), relevant=relevant, alpha=alpha,
                                               protocol=protocol, tone_scale=tone_scale, tone_style=tone_style)
        if tq is not None:  # the tone protocol
            s = tone_scores(retriever, tq, alpha=alpha, batch_size=batch_size, progress=progress)
            per_query = tone_scores_search(tq, hybrid_scores(tq.rows, tq.gallery, s, weight), ks=ks,
                                           ties="pessimistic")
        else:
            q, g, s, exclude = case_scores(retriever, cases, split, gallery_splits, alpha=alpha,
                                           batch_size=batch_size, progress=progress)
            per_query = scores_search(q, g, hybrid_scores(q, g, s, weight), exclude, relevant=relevant, ks=ks,
                                      ties="pessimistic")
        per_query.attrs["findings_weight"] = weight
        method += "+findings"
    elif protocol == "case":
        per_query, _ = case_search(retriever, cases, query_split=split, gallery_splits=gallery_splits,
                                   relevant=relevant, ks=ks, alpha=alpha, batch_size=batch_size, progress=progress,
                                   ties="pessimistic")
    elif protocol == "tone":
        per_query, _ = tone_search(retriever, cases, split, gallery_splits, scale=tone_scale, relevant=relevant,
                                   ks=ks, alpha=alpha, style=tone_style, batch_size=batch_size, progress=progress,
                                   ties="pessimistic", queries=tq)
    else:
        per_query, _ = modify_search(retriever, cases, triplets, split=split, gallery_splits=gallery_splits, ks=ks,
                                     alpha=alpha, seed=seed, batch_size=batch_size, progress=progress,
                                     ties="pessimistic")
    records = metric_records(per_query, run, method, protocol, n_boot=n_boot, level=level, seed=seed, by=by,
                             split_source=split_from)
    per_query.insert(0, "protocol", protocol)
    per_query.insert(0, "method", method)
    per_query.insert(0, "run", run)
    return per_query, records

