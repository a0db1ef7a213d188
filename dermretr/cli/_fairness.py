"""``dermretr fairness``: a run's retrieval quality sliced by skin tone, with CIs, gaps and exposure."""

from __future__ import annotations

from pathlib import Path

from .._errors import DermretrError
from ._parsing import add_data_option, data_options, parse_seed

__all__ = ["GROUPINGS", "add_fairness_command", "cmd_fairness", "fairness_header"]


GROUPINGS = ("fitzpatrick", "fitzpatrick_pairs", "monk", "ita_category", "ita_category_estimated",
              "fitzpatrick_estimated")  # dermretr.fairness.GROUPINGS (not imported: fairlearn loads slowly)


def add_fairness_command(sub) -> None:
    fair = sub.add_parser(
        "fairness", help="slice a run's retrieval quality by skin tone, with CIs, gaps and exposure",
        description="Evaluate RUN_DIR on SOURCE:PATH and report each skin-tone group's metrics with bootstrap CIs, "
                    "the overall value, the gap (max - min, with CI and permutation p-value) and ratio, each "
                    "group's diagnosis mix and the gap standardised to a common mix (case-mix-adjusted), and the "
                    "skin tones of the retrieved top-k against the gallery's. Every argument is checked before the "
                    "skin tone is estimated or a model loaded. Writes CSV tables and PNG figures.")
    fair.add_argument("--run", required=True, metavar="RUN_DIR", help="run folder of `dermretr train`")
    fair.add_argument("--data", required=True, help="SOURCE:PATH, e.g. synthetic:./dermsynth")
    fair.add_argument("--by", choices=GROUPINGS, default="fitzpatrick",
                      help="skin-tone grouping; *_estimated ones come from the pixels (default: fitzpatrick)")
    fair.add_argument("--protocol", choices=("case", "modify"), default="case", help="(default: case)")
    fair.add_argument("--metrics", nargs="+", default=["recall@1", "map@10"],
                      help="metrics to slice (default: recall@1 map@10)")
    fair.add_argument("--out", default=None, help="folder for tables and figures (default: RUN_DIR/fairness)")
    fair.add_argument("--baseline", default=None, metavar="RUN_DIR",
                      help="a run to compare against (e.g. before a mitigation): paired per-group differences")
    fair.add_argument("--estimate-ita", action="store_true",
                      help="also estimate skin tone from the pixels (ITA): with labels, its confusion; and how sure "
                           "the gap by estimated groups is (the estimate's uncertainty propagated, and scenarios)")
    fair.add_argument("--min-confidence", type=float, default=None, metavar="X",
                      help="estimates with a confidence below X (0..1) are unknown (default: 0.25); needs "
                           "--estimate-ita or an estimated --by")
    fair.add_argument("--min-group", type=int, default=20, help="flag groups with fewer queries (default: 20)")
    fair.add_argument("--exposure-k", type=int, default=10, help="top-k of the exposure, 0 for none (default: 10)")
    fair.add_argument("--split", choices=("test", "val"), default="test", help="query split (default: test)")
    fair.add_argument("--n-boot", type=int, default=1000,
                      help="bootstrap resamples and permutations, 0 for none (default: 1000)")
    fair.add_argument("--seed", type=parse_seed, default=0)
    add_data_option(fair, from_run=True)
    fair.add_argument("--batch-size", type=int, default=64)
    fair.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    fair.add_argument("--no-progress", action="store_true")


def cmd_fairness(args) -> int:
    import pandas as pd

    from .._io import claim_dir
    from ..fairness import format_slices, is_fairness_folder, run_fairness

    estimating = args.estimate_ita or args.by.endswith("_estimated")
    if args.min_confidence is not None:  # checked before anything is loaded
        if not 0.0 <= args.min_confidence <= 1.0:
            raise DermretrError(f"--min-confidence must be in [0, 1], got {args.min_confidence:g}")
        if not estimating:
            raise DermretrError("--min-confidence applies to skin tone estimated from the pixels: add --estimate-ita "
                                "or group by an estimated grouping (--by fitzpatrick_estimated)")
    if args.min_group < 1:
        raise DermretrError(f"--min-group must be at least 1, got {args.min_group}")
    out = Path(args.out).expanduser() if args.out else Path(args.run).expanduser() / "fairness"
    out = claim_dir(out, "fairness", recognise=is_fairness_folder, create=False)  # checked before the long part
    report = run_fairness(args.run, args.data, by=args.by, protocol=args.protocol, metrics=args.metrics,
                          split=args.split, n_boot=args.n_boot, min_group=args.min_group,
                          estimate=args.estimate_ita, exposure_k=args.exposure_k, baseline=args.baseline,
                          min_confidence=args.min_confidence, data_options=data_options(args.option, "fairness"),
                          seed=args.seed, batch_size=args.batch_size, device=args.device,
                          progress=not args.no_progress)
    files = report.save(out)  # before printing: output piped into `head` still leaves the files
    print(fairness_header(report.run, report.method, args.protocol, args.data, args.n_boot, args.min_group))
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 80):
        print(format_slices(report.slices).to_string())  # its first line names the grouping (and if estimated)
        _print_case_mix(report)
        if report.exposure is not None:
            e = report.exposure
            print(f"\nExposure: skin tones of the top-{e.attrs['k']} retrieved cases vs the gallery "
                  "(drift = mean retrieved tone - gallery's, on the scale's positions; < 0: towards lighter skin)")
            shown = e.set_index("group")
            print(shown.drop(columns=["drift_low", "drift_high"]).to_string(float_format=lambda v: f"{v:.2f}"))
        if report.confusion is not None:
            a = report.confusion.attrs
            print(f"\nEstimated vs labelled skin type (n={a['n']}): exact {a['exact']:.1%}, "
                  f"within one type {a['within_one']:.1%}\n{report.confusion.to_string()}")
        if estimating:
            _print_uncertainty(report, args)
        if report.comparison is not None:
            c = report.comparison
            print(f"\n{report.names[1]} vs {report.names[0]} (after - before, paired over the same queries):")
            print(c.drop(columns=["kind", "small"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{len(files)} files written to {out}: {', '.join(f.name for f in files)}")
    return 0


def fairness_header(run: str, method: str, protocol: str, data: str, n_boot: int, min_group: int) -> str:
    """The first line `dermretr fairness` prints; the table below it names the grouping (once).

    >>> fairness_header("run", "full", "case", "synthetic:ds", 0, 20)
    'run (full), protocol case on synthetic:ds; no CI; * = fewer than 20 queries'
    """
    ci = f"95% bootstrap CI, {n_boot} resamples" if n_boot else "no CI"
    return f"{run} ({method}), protocol {protocol} on {data}; {ci}; * = fewer than {min_group} queries"


def _print_case_mix(report) -> None:
    """Each group's diagnosis mix, and the gap standardised to the gap groups' pooled mix beside the raw one."""
    from ..fairness import format_case_mix

    if report.case_mix is None or report.adjusted is None:
        return
    mix, adj = report.case_mix, report.adjusted
    print(f"\nDiagnosis mix per group (queries of each {mix.attrs['stratum']}; TVD: total variation distance from "
          f"the gap groups' pooled mix, in brackets for groups outside the gap; above {mix.attrs['threshold']:g} the "
          "raw gap mixes case mix with skin tone)")
    print(format_case_mix(mix).to_string())
    a = adj.attrs
    ci = (f"{a['ci']:.0%} bootstrap CI within group x {a['stratum']}, simultaneous for the difference; p: labels "
          f"permuted within each {a['stratum']}" if a["n_boot"] else "no CI")
    print(f"\nCase-mix-adjusted gap: each group standardised to the gap groups' pooled {a['stratum']} mix ({ci})")
    shown = adj.drop(columns=["kind"]).rename(columns={"ci_low": "adj_low", "ci_high": "adj_high",
                                                       "p_value": "adj_p"})
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))


def _print_uncertainty(report, args) -> None:
    """The estimate's share of unknown cases, and how sure the gap by the estimated groups is."""
    import numpy as np

    from ..fairness import GROUPING_TITLES
    from ..skin_tone import MIN_CONFIDENCE

    cases = report.cases
    unknown = int(np.isnan(cases["ita_estimated"].to_numpy(dtype=float)).sum())
    threshold = MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence
    print(f"\nSkin tone estimated from the pixels: {len(cases) - unknown} of {len(cases)} cases, {unknown} "
          f"({unknown / len(cases):.1%}) unknown (too little skin, or a confidence below {threshold:g})")
    u = report.uncertainty
    if u is None:
        if report.uncertainty_note:
            print(report.uncertainty_note)
        return
    a = u.attrs
    draws = f"{a['n_draws']} draws" if a["n_draws"] else "no draws (--n-boot 0): scenarios only"
    print(f"\nHow sure is the gap by {GROUPING_TITLES[a['by']]}? ({a['ci']:.0%} intervals, {draws}; "
          f"{a['unknown_share']:.1%} of queries unknown, {a['n_low_confidence']} estimates below confidence "
          f"{a['low_confidence']:g}; every scenario in gap_uncertainty_{a['by']}.csv)")
    print("  estimated: queries resampled; propagated: + the estimate's uncertainty (a model: the confidence is not "
          "a probability); scenario range: unknown or doubtful queries all in one group, each group in turn")
    shown = u[u["kind"].isin(["estimated", "propagated", "scenario range"])]
    cols = ["metric", "kind", "gap", "low", "high", "max_group", "min_group", "same_extremes", "share_reassigned",
            "note"]
    print(shown[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
