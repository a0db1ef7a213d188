"""``dermretr fairness``: a run's retrieval quality sliced by skin tone, with CIs, gaps and exposure."""

from __future__ import annotations

from pathlib import Path

from .._errors import DermretrError
from ._parsing import parse_seed

__all__ = ["GROUPINGS", "add_fairness_command", "cmd_fairness"]


GROUPINGS = ("fitzpatrick", "fitzpatrick_pairs", "monk", "ita_category", "ita_category_estimated",
              "fitzpatrick_estimated")  # dermretr.fairness.GROUPINGS (not imported: fairlearn loads slowly)


def add_fairness_command(sub) -> None:
    fair = sub.add_parser(
        "fairness", help="slice a run's retrieval quality by skin tone, with CIs, gaps and exposure",
        description="Evaluate RUN_DIR on SOURCE:PATH and report each skin-tone group's metrics with bootstrap CIs, "
                    "the overall value, the gap (max - min, with CI and permutation p-value) and ratio, and the "
                    "skin tones of the retrieved top-k against the gallery's. Writes CSV tables and PNG figures.")
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
                      help="also estimate skin tone from the pixels (ITA) and, with labels, report its confusion")
    fair.add_argument("--min-group", type=int, default=20, help="flag groups with fewer queries (default: 20)")
    fair.add_argument("--exposure-k", type=int, default=10, help="top-k of the exposure, 0 for none (default: 10)")
    fair.add_argument("--split", choices=("test", "val"), default="test", help="query split (default: test)")
    fair.add_argument("--n-boot", type=int, default=1000,
                      help="bootstrap resamples and permutations, 0 for none (default: 1000)")
    fair.add_argument("--seed", type=parse_seed, default=0)
    fair.add_argument("--batch-size", type=int, default=64)
    fair.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    fair.add_argument("--no-progress", action="store_true")


def cmd_fairness(args) -> int:
    import pandas as pd

    from .._io import claim_dir
    from ..fairness import GROUPING_TITLES, format_slices, is_fairness_folder, run_fairness

    out = Path(args.out).expanduser() if args.out else Path(args.run).expanduser() / "fairness"
    out = claim_dir(out, "fairness", recognise=is_fairness_folder, create=False)  # checked before the long part
    if args.min_group < 1:
        raise DermretrError(f"--min-group must be at least 1, got {args.min_group}")
    report = run_fairness(args.run, args.data, by=args.by, protocol=args.protocol, metrics=args.metrics,
                          split=args.split, n_boot=args.n_boot, min_group=args.min_group,
                          estimate=args.estimate_ita, exposure_k=args.exposure_k, baseline=args.baseline,
                          seed=args.seed, batch_size=args.batch_size, device=args.device,
                          progress=not args.no_progress)
    files = report.save(out)  # before printing: output piped into `head` still leaves the files
    title = GROUPING_TITLES[args.by]
    ci = f"95% bootstrap CI, {args.n_boot} resamples" if args.n_boot else "no CI"
    print(f"{report.run} ({report.method}), protocol {args.protocol} on {args.data}: {title}"
          f"{' (estimated from pixels)' if args.by.endswith('_estimated') else ''}; {ci}; "
          f"* = fewer than {args.min_group} queries")
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 80):
        print(format_slices(report.slices).to_string())
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
        if report.comparison is not None:
            c = report.comparison
            print(f"\n{report.names[1]} vs {report.names[0]} (after - before, paired over the same queries):")
            print(c.drop(columns=["kind", "small"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{len(files)} files written to {out}: {', '.join(f.name for f in files)}")
    return 0

