"""One run, end to end: :func:`run_fairness` evaluates and slices a run, :class:`FairnessReport` saves it.

The tables of :mod:`._slicing`, :mod:`._casemix` and :mod:`._exposure`, the estimated skin tone
of :mod:`dermretr.skin_tone` and the figures of :mod:`._plots`, for a
``dermretr train`` run folder (``dermretr fairness``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .._checks import check_boot, check_int, check_seed, is_real, metric_cutoffs
from .._errors import DataWarning, DermretrError
from ..evaluate import PROTOCOLS, data_options_for, evaluate_run, load_data, load_triplets, run_checkpoint
from ..skin_tone import MIN_CONFIDENCE, estimate_skin_tone
from ._casemix import STRATUM, adjusted_gap, case_mix, query_strata
from ._exposure import exposure, retrieve_topk
from ._groups import check_by, estimate_note, is_estimated, ita_confusion, skin_tone_groups
from ._plots import (
    grouping_title,
    plot_comparison,
    plot_exposure,
    plot_gap_uncertainty,
    plot_ita_confusion,
    plot_slices,
)
from ._slicing import compare_runs, slice_metrics
from ._uncertainty import gap_uncertainty

__all__ = ["FairnessReport", "is_fairness_folder", "run_fairness"]


class _CachingRetriever:
    """A retriever whose encodings are kept, so that metrics and exposure encode each image once."""

    def __init__(self, retriever: Any) -> None:
        self.retriever = retriever
        self.kind: str = getattr(retriever, "kind", "unknown")
        self._cache: dict[tuple, Any] = {}

    def encode_queries(self, paths: Sequence[Any], texts: Sequence[Any], **kwargs: Any) -> Any:
        key = ("q", tuple(map(str, paths)), tuple(map(str, texts)))
        if key not in self._cache:
            self._cache[key] = self.retriever.encode_queries(paths, texts, **kwargs)
        return self._cache[key]

    def encode_targets(self, paths: Sequence[Any], **kwargs: Any) -> Any:
        key = ("t", tuple(map(str, paths)))
        if key not in self._cache:
            self._cache[key] = self.retriever.encode_targets(paths, **kwargs)
        return self._cache[key]


@dataclass
class FairnessReport:
    """What :func:`run_fairness` returns; :meth:`save` writes its tables and figures."""

    by: str
    run: str
    method: str
    protocol: str
    cases: pd.DataFrame
    per_query: pd.DataFrame
    slices: pd.DataFrame
    exposure: pd.DataFrame | None = None
    results: pd.DataFrame | None = None
    confusion: pd.DataFrame | None = None
    baseline_per_query: pd.DataFrame | None = None
    comparison: pd.DataFrame | None = None
    names: tuple[str, str] = ("baseline", "run")
    uncertainty: pd.DataFrame | None = None
    uncertainty_note: str = ""
    case_mix: pd.DataFrame | None = None
    adjusted: pd.DataFrame | None = None

    def save(self, out: str | os.PathLike) -> list[Path]:
        """Write CSV tables and PNG figures into the folder ``out`` (atomically, file by file).

        ``fairness_<by>.csv/.png``, ``per_query.csv``, ``exposure_<by>.csv/.png``
        (case protocol), ``skin_tone_estimated.csv``, ``ita_confusion.csv/.png``
        and ``gap_uncertainty_<grouping>.csv/.png`` (estimated skin tone),
        ``comparison_<by>.csv/.png`` (with a baseline), ``case_mix_<by>.csv`` and
        ``adjusted_gap_<by>.csv`` (with diagnosis groups).
        """
        from .._io import atomic_path, claim_dir, save_figure

        out = claim_dir(out, "fairness", recognise=is_fairness_folder)  # never writes into a folder of the user's
        written: list[Path] = []

        def csv(frame: pd.DataFrame, name: str, index: bool = False) -> None:
            with atomic_path(out / name) as tmp:
                frame.to_csv(tmp, index=index)
            written.append(out / name)

        def png(fig: Figure, name: str) -> None:
            written.append(save_figure(fig, out / name))

        csv(self.slices, f"fairness_{self.by}.csv")
        png(plot_slices(self.slices, title=f"{self.run} ({self.method}), protocol {self.protocol}: retrieval quality "
                                           f"by {grouping_title(self.by).lower()}"), f"fairness_{self.by}.png")
        csv(self.per_query, "per_query.csv")
        if self.case_mix is not None:
            csv(self.case_mix, f"case_mix_{self.by}.csv")
        if self.adjusted is not None:
            csv(self.adjusted, f"adjusted_gap_{self.by}.csv")
        if self.exposure is not None:
            csv(self.exposure, f"exposure_{self.by}.csv")
            png(plot_exposure(self.exposure), f"exposure_{self.by}.png")
        if "ita_estimated" in self.cases.columns:
            cols = [c for c in ("case_id", "split", "fitzpatrick", "monk", "ita", "ita_estimated",
                                "ita_category_estimated", "fitzpatrick_estimated", "ita_confidence",
                                "ita_iqr_estimated", "ita_unknown_reason") if c in self.cases.columns]
            csv(self.cases[cols], "skin_tone_estimated.csv")
        if self.confusion is not None:
            csv(self.confusion, "ita_confusion.csv", index=True)
            png(plot_ita_confusion(self.confusion), "ita_confusion.png")
        if self.uncertainty is not None:
            u_by = self.uncertainty.attrs["by"]
            csv(self.uncertainty, f"gap_uncertainty_{u_by}.csv")
            labelled = self.slices if (self.by, u_by) in _SAME_SCALE else None
            png(plot_gap_uncertainty(self.uncertainty, labelled=labelled,
                                     confusion=self.confusion if u_by == "fitzpatrick_estimated" else None),
                f"gap_uncertainty_{u_by}.png")
        if self.comparison is not None:
            csv(self.comparison, f"comparison_{self.by}.csv")
            png(plot_comparison(self.comparison, names=self.names), f"comparison_{self.by}.png")
        return written


#: (labelled grouping, estimated grouping) on one scale: their gaps are drawn side by side.
_SAME_SCALE = {("fitzpatrick", "fitzpatrick_estimated"), ("ita_category", "ita_category_estimated")}
#: The estimated grouping reported beside a labelled one when the skin tone is also estimated.
_ESTIMATED_OF = {"ita_category": "ita_category_estimated"}

_OUTPUT_FILES = re.compile(r"^(fairness_\w+|exposure_\w+|comparison_\w+|gap_uncertainty_\w+|ita_confusion)"
                           r"\.(csv|png)$"
                           r"|^(per_query|skin_tone_estimated|case_mix_\w+|adjusted_gap_\w+)\.csv$")


def is_fairness_folder(path: str | os.PathLike) -> bool:
    """Whether the folder holds only what :meth:`FairnessReport.save` writes (a folder of an older version).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "fairness_fitzpatrick.csv").write_text("group")
    >>> is_fairness_folder(d)
    True
    >>> _ = (d / "notes.txt").write_text("mine")
    >>> is_fairness_folder(d)
    False
    """
    names = [p.name for p in Path(path).iterdir() if not p.name.startswith(".")]
    return bool(names) and all(_OUTPUT_FILES.match(n) for n in names)


def run_fairness(run_dir: str | os.PathLike, data: Any, by: str = "fitzpatrick", protocol: str = "case",
                 metrics: Sequence[str] = ("recall@1", "map@10"), split: str = "test", n_boot: int = 1000,
                 ci: float = 0.95, min_group: int = 20, estimate: bool = False, exposure_k: int = 10,
                 baseline: str | os.PathLike | None = None, seed: int = 0, batch_size: int = 64,
                 device: str = "auto", progress: bool = False, retriever: Any = None,
                 baseline_retriever: Any = None, min_confidence: float | None = None,
                 data_options: dict | None = None) -> FairnessReport:
    """Evaluate a run and slice it by skin tone: metrics per group, exposure, estimated tone, comparison.

    Parameters
    ----------
    run_dir : path
        A ``dermretr train`` run (``RUN_DIR/checkpoints/best.pt``).
    data : str or DataFrame
        ``"SOURCE:PATH"`` (DermSynth triplets are read from the folder for
        the modify protocol) or a case table.
    by : str
        A grouping of :data:`GROUPINGS`; estimated groupings estimate the
        skin tone from the pixels (:func:`estimate_skin_tone`).
    protocol : {"case", "modify"}
        See :func:`dermretr.evaluate.evaluate_run`; exposure needs "case".
    metrics, n_boot, ci, min_group, seed
        As in :func:`slice_metrics`.
    split : {"test", "val"}
        Query split (the gallery is train+val, or train for val queries).
    estimate : bool
        Also estimate the skin tone from the pixels (and, where the data has
        Fitzpatrick labels, report :func:`ita_confusion`).  With an estimated
        skin tone, :func:`gap_uncertainty` says how sure the gap by estimated
        groups is (``by`` itself when estimated, else ``fitzpatrick_estimated``,
        or ``ita_category_estimated`` beside ``ita_category``).
    exposure_k : int
        Top-k of the exposure (0: no exposure).
    baseline : path, optional
        A second run (e.g. before a mitigation), compared with
        :func:`compare_runs` (``run_dir`` is the "after").
    batch_size, device, progress
        Encoding options.
    retriever, baseline_retriever : Retriever, optional
        Use these models instead of loading the checkpoints.
    min_confidence : float, optional
        Estimates below this confidence are unknown (default
        :data:`~dermretr.skin_tone.MIN_CONFIDENCE`); only with an estimated
        skin tone.
    data_options : dict, optional
        Loader options for a ``"SOURCE:PATH"`` ``data`` (default: those the
        runs were trained with on that source; see
        :func:`dermretr.evaluate.data_options_for`).

    Returns
    -------
    FairnessReport
        ``case_mix`` holds each group's diagnosis mix (:func:`case_mix`) and
        ``adjusted`` the gap standardised to a common mix (:func:`adjusted_gap`)
        when the data has diagnosis groups.  With an estimated skin tone, ``uncertainty`` holds
        :func:`gap_uncertainty` (or ``uncertainty_note`` says why there is no
        gap by the estimated groups), and a :class:`DataWarning` says the
        groups are estimated, with the share of unknowns.

    Examples
    --------
    >>> run_fairness("no/such/run", "synthetic:/nowhere")
    Traceback (most recent call last):
    ...
    dermretr._errors.DermretrError: run folder no/such/run not found (train one with `dermretr train --out no/such/run`)
    """
    check_by(by)
    if protocol == "tone":  # its queries are (case, target range) pairs, not one per case: not sliced here
        raise DermretrError("fairness slices the case and modify protocols; the tone protocol is already by skin "
                            "tone: use `dermretr evaluate --protocol tone`")
    if protocol not in PROTOCOLS:
        raise DermretrError(f"unknown protocol {protocol!r}; protocols: {', '.join(PROTOCOLS)}")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    ks = metric_cutoffs(metrics)
    check_boot(n_boot, ci)
    check_int(min_group, "min_group")
    check_int(exposure_k, "exposure_k", 0)
    check_int(batch_size, "batch_size")
    check_seed(seed)
    if split not in ("test", "val"):
        raise DermretrError(f"split must be 'test' or 'val', got {split!r}")
    estimating = estimate or is_estimated(by)
    if min_confidence is not None:
        if not estimating:
            raise DermretrError("min_confidence applies to skin tone estimated from the pixels: estimate it "
                                "(estimate=True, --estimate-ita) or group by an estimated grouping")
        if not (is_real(min_confidence) and 0.0 <= float(min_confidence) <= 1.0):
            raise DermretrError(f"min_confidence must be a number in [0, 1], got {min_confidence!r}")
    ckpt = run_checkpoint(run_dir) if retriever is None else None
    base_ckpt = run_checkpoint(baseline) if baseline is not None and baseline_retriever is None else None
    if ckpt is not None or base_ckpt is not None:
        from .._device import resolve_device

        resolve_device(device)  # an unknown or absent device fails before the data is loaded
    cases, root = load_data(data, data_options_for(data, data_options, [run_dir, baseline]))
    if not is_estimated(by):  # a labelled grouping the data lacks fails before the (long) estimate
        skin_tone_groups(cases, by)
    if estimating:
        cases = estimate_skin_tone(cases, progress=progress,
                                   min_confidence=MIN_CONFIDENCE if min_confidence is None else min_confidence)
    skin_tone_groups(cases, by)  # a missing or unknown grouping fails before any model is loaded
    triplets = load_triplets(root) if protocol == "modify" and root is not None else None
    if retriever is None or (baseline is not None and baseline_retriever is None):
        from ..models.retriever import Retriever
    if retriever is None:
        assert ckpt is not None  # run_checkpoint found it
        retriever = Retriever.load(ckpt, device=device)
    model = _CachingRetriever(retriever)
    name = Path(run_dir).expanduser().name or str(run_dir)
    options: dict[str, Any] = {"split": split, "ks": ks, "n_boot": 0, "seed": seed, "batch_size": batch_size,
                               "device": device, "progress": progress, "triplets": triplets}
    per_query, _ = evaluate_run(run_dir, cases, protocol, retriever=model, name=name, **options)
    slices = slice_metrics(per_query, cases, by=by, metrics=metrics, n_boot=n_boot, ci=ci, min_group=min_group,
                           seed=seed)
    report = FairnessReport(by=by, run=name, method=model.kind, protocol=protocol, cases=cases, per_query=per_query,
                            slices=slices)
    if query_strata(per_query, cases, STRATUM) is not None:  # the raw gap beside the case-mix-adjusted one
        report.case_mix = case_mix(per_query, cases, by=by, min_group=min_group)
        report.adjusted = adjusted_gap(per_query, cases, by=by, metrics=metrics, n_boot=n_boot, ci=ci,
                                       min_group=min_group, seed=seed)
    if protocol == "case" and exposure_k:
        gallery_splits = ("train", "val") if split == "test" else ("train",)
        report.results = retrieve_topk(model, cases, k=exposure_k, query_split=split, gallery_splits=gallery_splits,
                                       batch_size=batch_size, progress=progress)
        report.exposure = exposure(report.results, cases, by=by, gallery_splits=gallery_splits, n_boot=n_boot,
                                   ci=ci, seed=seed)
    if "ita_estimated" in cases.columns and "fitzpatrick" in cases.columns and cases["fitzpatrick"].notna().any():
        report.confusion = ita_confusion(cases)
    if estimating:
        u_by = by if is_estimated(by) else _ESTIMATED_OF.get(by, "fitzpatrick_estimated")
        try:
            report.uncertainty = gap_uncertainty(per_query, cases, by=u_by, metrics=metrics, n_draws=n_boot, ci=ci,
                                                 min_group=min_group, seed=seed)
        except DermretrError as exc:  # e.g. fewer than two estimated groups: the rest of the report stands
            report.uncertainty_note = f"no gap by {grouping_title(u_by)}: {exc}"
        else:
            if u_by != by:  # slice_metrics warned already when the slices are by the estimated groups
                a = report.uncertainty.attrs
                warnings.warn(estimate_note(u_by, a["n_unknown"], a["n_queries"]), DataWarning, stacklevel=2)
    if baseline is not None:
        base = baseline_retriever
        if base is None:
            assert base_ckpt is not None  # run_checkpoint found it
            base = Retriever.load(base_ckpt, device=device)
        base_name = Path(baseline).expanduser().name or str(baseline)
        report.baseline_per_query, _ = evaluate_run(baseline, cases, protocol, retriever=base, name=base_name,
                                                    **options)
        report.comparison = compare_runs(report.baseline_per_query, per_query, cases, by=by, metrics=metrics,
                                         n_boot=n_boot, ci=ci, min_group=min_group, seed=seed)
        report.names = (base_name, name) if base_name != name else ("baseline", "run")
    return report
