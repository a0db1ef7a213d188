"""``dermretr evaluate``: run folders on a dataset, one table with bootstrap CIs, and metrics.json."""

from __future__ import annotations

from pathlib import Path

from .._errors import DermretrError
from ._parsing import add_data_option, data_options, parse_findings_weight, parse_seed

__all__ = ["add_evaluate_command", "cmd_evaluate"]


def add_evaluate_command(sub) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="evaluate run folders (baselines and the composed model) with bootstrap CIs",
        description="Evaluate each RUN_DIR's checkpoints/best.pt on SOURCE:PATH, print one table across the runs "
                    "(Recall/Precision/mAP/nDCG@K and MRR with 95%% bootstrap CIs) and write metrics.json.")
    evaluate.add_argument("--run", nargs="+", required=True, metavar="RUN_DIR", help="run folder(s) to evaluate")
    evaluate.add_argument("--data", required=True, help="SOURCE:PATH, e.g. synthetic:./dermsynth")
    evaluate.add_argument("--protocol", choices=("case", "modify", "tone"), default="case",
                          help="case: test image + its findings text; modify: reference image + modification "
                               "text; tone: test image + its findings + another skin-tone range ('this condition, "
                               "on darker skin'; needs skin-tone labels) (default: case)")
    evaluate.add_argument("--tone-scale", choices=("fitzpatrick", "monk", "ita"), default="fitzpatrick",
                          help="tone protocol: skin-tone ranges of Fitzpatrick types (I-II, III-IV, V-VI), Monk tones "
                               "(1-3, 4-7, 8-10) or ITA categories estimated from the pixels (default: fitzpatrick)")
    evaluate.add_argument("--tone-style", choices=("scale", "plain"), default="scale",
                          help="tone protocol: the phrase names the range ('on Fitzpatrick type V-VI skin') or a "
                               "plain word ('on darker skin') (default: scale)")
    evaluate.add_argument("--out", required=True, help="metrics file to write (JSON list of records)")
    evaluate.add_argument("--relevant", choices=("diagnosis_group", "diagnosis"), default="diagnosis_group",
                          help="case and tone protocols: relevant = same diagnosis group or same fine diagnosis")
    evaluate.add_argument("--split", choices=("test", "val"), default="test", help="query split (default: test)")
    evaluate.add_argument("--k", type=int, nargs="+", default=[1, 5, 10], help="cut-offs (default: 1 5 10)")
    evaluate.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples, 0 for none (default: 1000)")
    evaluate.add_argument("--seed", type=parse_seed, default=0, help="bootstrap and derived-triplet seed (default: 0)")
    evaluate.add_argument("--per-query", default=None, metavar="CSV", help="also write per-query metrics here")
    evaluate.add_argument("--floors", nargs="*",
                          choices=("random", "majority", "criteria_match", "filter_only", "none"),
                          default=None, metavar="FLOOR",
                          help="non-learned rankings shown beside the runs: random (expected value), majority "
                               "(most common group first), criteria_match (annotated 7-point findings; modify: "
                               "the reference's after the requested change); for the tone protocol majority and "
                               "criteria_match rank within the target skin-tone range, put first, and filter_only "
                               "puts the range first, diagnosis ignored; default: every floor the data and "
                               "protocol allow; 'none' for none")
    evaluate.add_argument("--findings-weight", type=parse_findings_weight, default=None, metavar="W|val",
                          help="case and tone protocols, data with annotated 7-point findings: also score each "
                               "run plus W times the findings agreement of criteria_match, as its own row "
                               "RUN+findings (val: W chosen on the val cases' queries against the train cases, "
                               "0 to 8)")
    add_data_option(evaluate, from_run=True)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    evaluate.add_argument("--no-progress", action="store_true")


def cmd_evaluate(args) -> int:
    import pandas as pd

    from .._io import atomic_path, claim_file
    from ..data import describe_split_source, format_options, split_source
    from ..evaluate import (
        check_findings_weight,
        data_options_for,
        evaluate_run,
        is_metrics_file,
        is_per_query_file,
        load_data,
        load_triplets,
        results_table,
        run_checkpoint,
        tone_queries,
        with_tone_estimate,
        write_metrics,
    )
    from ..floors import available_floors, evaluate_floors

    tone = args.protocol == "tone"
    notes = {"random": "random = expected value under a uniformly random ranking",
             "majority": ("majority = the target skin-tone range first, its most common "
                          f"{args.relevant} first" if tone else f"majority = the gallery's most common "
                                                                 f"{args.relevant} first"),
             "criteria_match": ("criteria_match = the target skin-tone range first, ranked by agreement of "
                                "annotated 7-point findings" if tone else
                                "criteria_match = ranked by agreement of annotated 7-point findings" + (
                 " with the reference's findings after the requested change" if args.protocol == "modify" else "")),
             "filter_only": "filter_only = gallery cases in the target skin-tone range first, in random order "
                            f"(expected value), {args.relevant} ignored"}

    given = data_options(args.option, "evaluate")
    out = claim_file(args.out, option="--out", recognise=is_metrics_file)  # before the long part
    per_query_out = (claim_file(args.per_query, option="--per-query", recognise=is_per_query_file)
                     if args.per_query else None)
    if per_query_out is not None and per_query_out == out:
        raise DermretrError("--out and --per-query name the same file; give two names")
    for run in args.run:
        run_checkpoint(run)  # every run folder is checked before the long part
    names = [Path(r).expanduser().name or str(r) for r in args.run]
    if len(set(names)) < len(names):
        names = [str(r) for r in args.run]
    if len(set(names)) < len(names):
        raise DermretrError(f"the same run folder is given twice: {' '.join(args.run)}")
    options = data_options_for(args.data, given, args.run)  # those of the runs unless given (and agreeing)
    cases, root = load_data(args.data, options)
    check_findings_weight(args.findings_weight, args.protocol, cases, args.split)  # before the long part
    split_from = split_source(cases)
    triplets = load_triplets(root) if args.protocol == "modify" and root is not None else None
    tone = None
    if args.protocol == "tone":  # bad data (no skin-tone labels...) fails before the long part
        scale, style = getattr(args, "tone_scale", "fitzpatrick"), getattr(args, "tone_style", "scale")
        labelled = cases
        cases = with_tone_estimate(cases, scale, progress=not args.no_progress)
        scale_name = {"fitzpatrick": "Fitzpatrick", "monk": "Monk", "ita": "ITA"}[scale] + (
            " (estimated from the pixels now)" if cases is not labelled else
            " (estimated)" if scale == "ita" else "")
        tone = tone_queries(cases, args.split, scale=scale, relevant=args.relevant, style=style, texts=False)
        check_findings_weight(args.findings_weight, args.protocol, cases, args.split, relevant=args.relevant,
                              tone_scale=scale)  # "val" needs the val cases' tone queries too
    # non-learned floors: --floors NAME... / none; absent = every floor the data and protocol allow
    wanted = getattr(args, "floors", None)
    floors = (available_floors(cases, args.split, protocol=args.protocol, triplets=triplets,
                               tone_scale=getattr(args, "tone_scale", "fitzpatrick")) if wanted is None
              else tuple(f for f in wanted if f != "none"))
    floor_pq, floor_recs = None, list[dict]()
    if floors:  # cheap, and bad data fails before the long part
        clash = sorted({f"floor:{f}" for f in floors} & set(names))
        if clash:
            raise DermretrError(f"run folder {clash[0]!r} is named like a floor's rows; rename it")
        floor_pq, floor_recs = evaluate_floors(cases, floors, split=args.split, relevant=args.relevant, ks=args.k,
                                               n_boot=args.n_boot, seed=args.seed, protocol=args.protocol,
                                               tone_scale=getattr(args, "tone_scale", "fitzpatrick"),
                                               triplets=triplets)
    records, per_query, weights = [], [], dict[str, float]()
    tone_args = (scale, style) if tone is not None else ("fitzpatrick", "scale")  # evaluate_run's defaults
    for run, name in zip(args.run, names):
        model = None
        if args.findings_weight is not None:  # two rows of one model: load it once and encode each image once
            from ..models.embeddings import EncodingCache
            from ..models.retriever import Retriever

            model = EncodingCache(Retriever.load(run_checkpoint(run), device=args.device))
        pq, recs = evaluate_run(run, cases, args.protocol, triplets=triplets, split=args.split,
                                relevant=args.relevant, ks=args.k, n_boot=args.n_boot, seed=args.seed,
                                batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
                                name=name, tone_scale=tone_args[0], tone_style=tone_args[1], retriever=model)
        records += recs
        per_query.append(pq)
        if model is not None:  # the hybrid, its own row
            pq, recs = evaluate_run(run, cases, args.protocol, split=args.split, relevant=args.relevant, ks=args.k,
                                    n_boot=args.n_boot, seed=args.seed, batch_size=args.batch_size,
                                    device=args.device, progress=not args.no_progress, name=f"{name}+findings",
                                    findings_weight=args.findings_weight, retriever=model, tone_scale=tone_args[0],
                                    tone_style=tone_args[1])
            weights[name] = pq.attrs["findings_weight"]
            records += recs
            per_query.append(pq)
    records += floor_recs
    for record in records:  # every record says where the split came from (the tone estimate drops attrs)
        record["split_source"] = split_from
    if floor_pq is not None:
        per_query.append(floor_pq)
    if tone is not None:
        what = (f"{args.split} image + a phrase naming another {scale_name} skin-tone range + its findings; relevant = "
                f"same {args.relevant} with a skin tone in the target range, own patient excluded; "
                f"{len(tone.info)} queries, skipped: {tone.skipped['no_relevant']} (case, range) pairs without a "
                f"relevant gallery case and {tone.skipped['unknown_tone']} cases without a known skin tone")
    elif args.protocol == "case":
        what = f"{args.split} image + its findings text (never the diagnosis); relevant = same {args.relevant}"
    else:
        what = "reference image + modification text; " + (
            "relevant = the exact target (DermSynth triplets)" if triplets is not None else
            "relevant = requested criterion value and same diagnosis group (derived)")
    ci = f"95% bootstrap CI over queries, {args.n_boot} resamples" if args.n_boot else "no CI"
    print(f"Protocol {args.protocol} on {args.data} ({what}; {ci})")
    print(f"Data: {format_options(options)}{' (as the run was trained)' if options and given is None else ''}; "
          f"split from: {describe_split_source(split_from)}")
    if args.protocol == "tone":
        print("(macro) = mean over target skin-tone ranges of the per-range means, CI resampled within ranges")
    else:
        print("(macro) = mean over diagnosis groups of the per-group means, CI resampled within groups")
    if floor_recs:
        print("Floors (no model): " + "; ".join(notes[f] for f in floors))
    if weights:
        how = "chosen on the val cases by macro mAP@10" if args.findings_weight == "val" else "given"
        print("RUN+findings = the run's scores plus W x the findings agreement of criteria_match (W " + how + ": "
              + ", ".join(f"{name} {w:g}" for name, w in weights.items()) + ")")
    with pd.option_context("display.width", 1000, "display.max_columns", None, "display.max_colwidth", None):
        table = results_table(records)  # one row per run; printed with one column per run to fit a terminal
        table.index = [f"{method} (floor)" if str(run).startswith("floor:") else f"{run} ({method})"
                       for run, method, *_ in table.index]
        print(table.T.to_string())
    out = write_metrics(records, out)
    print(f"\nmetrics written to {out}")
    if per_query_out is not None:
        with atomic_path(per_query_out) as tmp:
            pd.concat(per_query, ignore_index=True).to_csv(tmp, index=False)
        print(f"per-query metrics written to {per_query_out}")
    return 0

