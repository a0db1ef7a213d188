"""``dermretr index`` and ``search``: a search index folder from a run, and composed queries against it.

``search`` prints what a person needs to read its results: the model that answers, the findings
recognised in the text (:func:`dermretr.data.vocab.query_findings`, or a line saying it names none
and how much it changed the results), the query image's own case left out (or kept and marked with
``--keep-self``; :func:`dermretr.index.same_image_cases`), and per hit its diagnosis, skin type,
image and its findings that match or contradict the text's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .._errors import DermretrError
from ..models._released import RELEASED
from ._parsing import add_data_option, data_options

__all__ = ["INDEX_KINDS", "ENGINES", "add_index_commands", "cmd_index", "cmd_search", "parse_filters", "model_line",
           "text_line", "result_table", "format_table", "text_table", "skin_label", "findings_line"]


INDEX_KINDS = ("flat", "hnsw", "ivf", "ivfpq")  # dermretr.index.INDEX_KINDS (not imported: faiss loads slowly)
ENGINES = ("local", "ray")
_RAY_ONLY = (("address", "--address"), ("workers", "--workers"), ("gpus_per_worker", "--gpus-per-worker"),
             ("shard_size", "--shard-size"), ("keep_shards", "--keep-shards"))


def add_index_commands(sub) -> None:
    index = sub.add_parser("index", help="index a dataset for case search with a trained retriever",
                           description="Encode every case of SOURCE:PATH with RUN_DIR's checkpoint (or a pretrained "
                                       f"model, by default the released {RELEASED}) and write a search index folder "
                                       "(FAISS over global vectors, local vectors for exact re-ranking, the case "
                                       "table and manifest.json).")
    which = index.add_mutually_exclusive_group()
    which.add_argument("--run", help="run folder of `dermretr train` (RUN_DIR)")
    which.add_argument("--model", default=None,
                       help=f"a model folder (save_pretrained), hf-hub:ORG/NAME or a shipped name (default without "
                            f"--run: {RELEASED}, trained on DermSynth)")
    index.add_argument("--data", required=True, help="SOURCE:PATH of the cases to index")
    index.add_argument("--out", required=True, help="index folder to write (INDEX_DIR)")
    add_data_option(index, from_run=True)
    index.add_argument("--kind", choices=INDEX_KINDS, default="flat",
                       help="flat (exact), hnsw (graph), ivf (inverted lists) or ivfpq (compressed) (default: flat)")
    index.add_argument("--checkpoint", choices=("best", "last"), default="best",
                       help="RUN_DIR/checkpoints/{best,last}.pt (default: best)")
    index.add_argument("--batch-size", type=int, default=64)
    index.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    index.add_argument("--overwrite", action="store_true", help="replace an existing index in --out")
    index.add_argument("--no-progress", action="store_true")
    scale = index.add_argument_group("encoding with Ray Data (--engine ray; needs pip install \"dermretr[scale]\")")
    scale.add_argument("--engine", choices=ENGINES, default="local",
                       help="local: encode in this process (default); ray: encode on a Ray cluster's actors in "
                            "shards kept in INDEX_DIR.shards/ until the index is saved, so that a rerun after a "
                            "crash encodes only the shards still missing")
    scale.add_argument("--address", default=None,
                       help="the Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: RAY_ADDRESS, else a "
                            "local cluster started for this run)")
    scale.add_argument("--workers", type=int, default=None,
                       help="Ray actors encoding at once, each loading the model once (default: one per GPU share "
                            "with --gpus-per-worker, else one per CPU, at most 8 locally)")
    scale.add_argument("--gpus-per-worker", type=float, default=None,
                       help="GPUs of each actor, e.g. 1 or 0.5 (default: 0, CPUs only)")
    scale.add_argument("--shard-size", type=int, default=None,
                       help="cases per shard, the unit of restart and re-encoding (default: 4096)")
    scale.add_argument("--keep-shards", action="store_true",
                       help="keep INDEX_DIR.shards/ after the index is saved (another --kind then encodes nothing)")
    search = sub.add_parser("search", help="search an index with a reference image and descriptor text",
                            description="Composed case search: the reference image plus text against INDEX_DIR "
                                        "(with the model it records: a checkpoint or a pretrained model) or against "
                                        "SOURCE:PATH indexed now with --model.  The output names the model, the "
                                        "findings recognised in the text and, per result, its findings that match "
                                        "or contradict them, its skin type and image; a case whose image is the "
                                        "query image itself (the same bytes) is left out unless --keep-self.")
    where = search.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", help="index folder written by `dermretr index`")
    where.add_argument("--data", help=f"SOURCE:PATH: index this dataset now with --model (default {RELEASED}) and "
                                      "search it (nothing is written)")
    search.add_argument("--model", default=None, help=f"with --data: the model (default {RELEASED})")
    add_data_option(search)
    search.add_argument("--image", required=True, help="reference lesion image")
    search.add_argument("--text", default="", help="descriptor or modification text (default: none)")
    search.add_argument("-k", type=int, default=10, help="results (default: 10)")
    search.add_argument("--alpha", type=float, default=None, help="override the weight of local evidence")
    search.add_argument("--filter", action="append", default=[], metavar="COLUMN=V1,V2",
                        help="keep cases whose COLUMN is one of the values, e.g. fitzpatrick=5,6 (repeatable)")
    search.add_argument("--rerank", type=int, default=None, help="candidates re-scored exactly (default: 100)")
    search.add_argument("--keep-self", action="store_true",
                        help="keep the query image's own case (the same file or the same bytes) in the results, "
                             "marked; by default it is left out, with a line saying so")
    search.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    search.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (when `dermretr "
                                                         "serve` answers, the server's device)")
    search.add_argument("--no-server", action="store_true",
                        help="search in this process even when `dermretr serve` holds the index")


def parse_filters(pairs: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        column, sep, values = pair.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not column.strip() or not items:
            raise DermretrError(f"filter {pair!r} must look like COLUMN=V1,V2 (e.g. fitzpatrick=5,6)")
        out.setdefault(column.strip(), []).extend(items)
    return out


def _index_cases(args):
    """The cases of ``--data``, loaded with ``-o`` or else the options ``--run`` was trained with."""
    from ..evaluate import data_options_for, load_data

    given = data_options(args.option, args.command)
    options = data_options_for(args.data, given, [args.run] if getattr(args, "run", None) else [])
    return load_data(args.data, options)[0]


def cmd_index(args) -> int:
    import time

    from ..index import CaseIndex
    from ..models.retriever import Retriever

    if args.engine == "ray":
        return _index_with_ray(args)
    given = [flag for name, flag in _RAY_ONLY if getattr(args, name) is not None and getattr(args, name) is not False]
    if given:
        one = len(given) == 1
        raise DermretrError(f"{', '.join(given)} {'is' if one else 'are'} for --engine ray only (encoding with Ray "
                            f"Data); add --engine ray or leave {'it' if one else 'them'} out")
    ckpt = _checkpoint(args)
    out = CaseIndex.check_output(args.out, overwrite=args.overwrite)  # before the long part
    model = Retriever.load(ckpt, device=args.device) if ckpt is not None else (args.model or RELEASED)
    cases = _index_cases(args)
    start = time.perf_counter()
    index = CaseIndex.build(model, cases, kind=args.kind, checkpoint=ckpt, batch_size=args.batch_size,
                            progress=not args.no_progress, device=args.device)
    index.save(out, overwrite=args.overwrite)
    print(_summary(index.manifest, ckpt, time.perf_counter() - start, out))
    return 0


def _summary(m: dict, ckpt: Path | None, seconds: float, out: Path) -> str:
    """The line ``dermretr index`` ends with."""
    local = f"{m['n_masks']} local vectors each, alpha {m['alpha']:.2f}" if m["n_masks"] else "global vectors only"
    return (f"indexed {m['count']} cases ({m['kind']}, dim {m['dim']}, {local}) with "
            f"{ckpt if ckpt is not None else m['model']['pretrained']} in {seconds:.1f} s -> {out}")


def _checkpoint(args) -> Path | None:
    """RUN_DIR/checkpoints/{best,last}.pt of ``--run`` (None without --run)."""
    if args.run is None:
        return None
    run = Path(args.run).expanduser()
    ckpt = run / "checkpoints" / f"{args.checkpoint}.pt"
    if not run.is_dir():
        raise DermretrError(f"--run {run}: no such folder{'' if run.is_absolute() else f' in {Path.cwd()}'}; "
                            "give the --out folder of `dermretr train`")
    if not ckpt.is_file():
        raise DermretrError(f"{ckpt} not found: is {run} a run folder of `dermretr train`?")
    return ckpt


def _index_with_ray(args) -> int:
    """``dermretr index --engine ray``: :func:`dermretr.index.encode_archive`, restartable."""
    from ..index import CaseIndex, encode_archive
    from ..index._ray import check_ray_options, require_ray

    options = dict(workers=args.workers, gpus_per_worker=args.gpus_per_worker or 0,
                   shard_size=4096 if args.shard_size is None else args.shard_size, address=args.address,
                   device=args.device)
    check_ray_options(**options)  # every value, and Ray being there, before the data and the model are read
    require_ray()
    ckpt = _checkpoint(args)
    CaseIndex.check_output(args.out, overwrite=args.overwrite)
    cases = _index_cases(args)
    run = encode_archive(ckpt if ckpt is not None else (args.model or RELEASED), cases, args.out, kind=args.kind,
                         batch_size=args.batch_size, overwrite=args.overwrite, progress=not args.no_progress,
                         keep_shards=args.keep_shards, **options)
    print(_summary(run.manifest, ckpt, run.seconds, run.path) + f"; Ray: {run.shards} shards, {run.encoded} encoded, "
          f"{run.reused} reused" + (f" (shards kept in {run.path}.shards)" if args.keep_shards else ""))
    return 0


def _check_search_args(args) -> dict[str, list[str]]:
    """The filters of ``--filter``; bad ``--filter`` or ``--rerank`` values are an error before any work."""
    if args.rerank is not None and args.rerank < 1:
        raise DermretrError(f"--rerank must be at least 1, got {args.rerank}")
    return parse_filters(args.filter)


def cmd_search(args) -> int:
    _check_search_args(args)
    if args.index is not None:
        if args.model is not None:
            raise DermretrError("--model goes with --data; an --index folder searches with the model it was built with")
        if args.option is not None:
            raise DermretrError("-o (loader options) goes with --data; an --index folder holds the cases it was "
                                "built from")
        if not args.no_server:
            from ._serve import forward

            answered = forward(args)  # `dermretr serve` holds this index: it answers, and nothing heavy loads here
            if answered is not None:
                return answered
    from ..index import CaseIndex

    if args.index is not None:
        index = CaseIndex.open(args.index, device=args.device)
    else:
        index = CaseIndex.build(args.model or RELEASED, _index_cases(args), device=args.device)
    return answer(index, args)


def answer(index, args, cwd: str | None = None) -> int:
    """Run one search of ``args`` on an open ``index`` and print what ``dermretr search`` prints.

    ``cwd`` is the folder image paths are shown relative to (default: the working folder); the
    search server passes its client's.  ``args.rerank`` changes ``index.rerank``.
    """
    from ..data.vocab import query_findings

    filters = _check_search_args(args)
    if args.rerank is not None:
        index.rerank = args.rerank
    found = query_findings(args.text)
    hits, own = _search_without_self(index, args, args.text, filters)
    overlap = None
    if args.text.strip() and not found and not found.problems and len(hits):  # what does the text change?
        alone, _ = _search_without_self(index, args, "", filters, quiet=True)
        overlap = (len(set(alone["case_id"]) & set(hits["case_id"])), len(hits))
    notes = [f"model: {model_line(index.manifest)}", text_line(args.text, found, overlap)]
    if own and not args.keep_self:
        notes.append(f"left out case{'s' if len(own) > 1 else ''} {', '.join(own)}: "
                     f"{'they hold' if len(own) > 1 else 'it is'} the query image itself; --keep-self keeps "
                     f"{'them' if len(own) > 1 else 'it'}")
    if own and args.keep_self:
        notes.append(f"case{'s' if len(own) > 1 else ''} {', '.join(own)}: the query image itself (kept by "
                     "--keep-self; marked below)")
    table = result_table(hits, found, own if args.keep_self else [])
    if args.json:
        for note in notes:
            print(f"dermretr: note: {note}", file=sys.stderr)
        print(json.dumps(json.loads(table.to_json(orient="records")), indent=2))
        return 0
    print("\n".join(notes))
    if len(table) == 0:
        print("no results")
        return 0
    print(format_table(table, bool(found), cwd))
    if found:
        print(findings_line(found, hits))
    return 0


def _search_without_self(index, args, text: str, filters: dict, quiet: bool = False) -> tuple:
    """The hits of one search and the ids of the cases whose image is the query image (left out unless kept).

    Only the hits are compared with the query image (:func:`dermretr.index.same_image_cases`);
    when one is the query image, the search runs again without it, until no hit is.  Only the
    last search's warnings are shown (none with ``quiet``).
    """
    import warnings

    from ..index import same_image_cases

    def search(exclude: list[str] | None) -> tuple:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hits = index.search(args.image, text, k=args.k, alpha=args.alpha, filters=filters, exclude=exclude)
        return hits, caught

    hits, caught = search(None)
    own = same_image_cases(index.cases, args.image, hits["case_id"])
    if not args.keep_self:
        while own:
            hits, caught = search(own)
            more = [c for c in same_image_cases(index.cases, args.image, hits["case_id"]) if c not in own]
            if not more:
                break
            own = own + more
    for w in [] if quiet else caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return hits, own


def model_line(manifest: dict) -> str:
    """Which model answers a search of an index: its name or checkpoint, kind, backbone and image size.

    >>> model_line({"model": {"pretrained": "dermretr/dermsynth-tiny", "config": {"kind": "full",
    ...             "backbone": "dermretr-tiny", "image_size": 128}}})
    'dermretr/dermsynth-tiny, the released model, trained on DermSynth only (full, dermretr-tiny, 128 px)'
    >>> model_line({"model": None})
    'not recorded in the index (built from vectors)'
    """
    model = manifest.get("model") or {}
    config = model.get("config") or {}
    parts = [str(config[key]) for key in ("kind", "backbone") if config.get(key)]
    parts += [f"{config['image_size']} px"] if config.get("image_size") else []
    what = f" ({', '.join(parts)})" if parts else ""
    if model.get("pretrained"):
        name = str(model["pretrained"])
        return name + (", the released model, trained on DermSynth only" if name == RELEASED else "") + what
    if model.get("checkpoint_path"):
        return f"checkpoint {model['checkpoint_path']}{what}{_run_line(Path(model['checkpoint_path']))}"
    return "not recorded in the index (built from vectors)"


def _run_line(checkpoint: Path) -> str:
    """How the run of a checkpoint was trained ("; trained 12 epochs on SPEC"), from its config.json; or ""."""
    try:
        config = json.loads((checkpoint.parent.parent / "config.json").read_text(encoding="utf-8"))
        return f"; trained {int(config['epochs'])} epochs on {config['data']}"
    except (OSError, ValueError, TypeError, KeyError):
        return ""


def text_line(text: str, found, overlap: tuple[int, int] | None = None) -> str:
    """What the search made of the query text: the findings it recognised, or that it names none.

    ``overlap`` is (results shared with the image alone, results) for a text that names no finding.

    >>> from dermretr.data.vocab import query_findings
    >>> text_line("blue-white veil", query_findings("blue-white veil"))
    'text: recognised blue-whitish veil'
    >>> text_line("the quick brown fox", query_findings("the quick brown fox"), (10, 10))[:66]
    'text: names no finding dermretr knows (no 7-point descriptor, no s'
    """
    if not text.strip():
        return "text: none; the results rank by the image alone"
    problems = "; ".join(found.problems)
    if found:
        return f"text: recognised {', '.join(found.phrases())}" + (f" (not compared: {problems})" if problems else "")
    if problems:
        return f"text: no finding compared ({problems}); the model reads the text as it stands"
    line = ("text: names no finding dermretr knows (no 7-point descriptor, no skin type), so nothing below is "
            "compared with it; the model still reads it as free text")
    if overlap is None:
        return line
    return line + f"; results shared with the image alone (no text): {overlap[0]} of {overlap[1]}"


def result_table(hits, found, kept: Sequence[str]):
    """The hits with what the output adds: ``query_image`` (kept with --keep-self), ``matches``, ``contradicts``.

    ``matches`` and ``contradicts`` hold each hit's own findings that agree with / differ from
    those the query text names (:func:`dermretr.data.vocab.compare_findings`).
    """
    from ..data.vocab import compare_findings

    out = hits.reset_index(drop=True).copy()
    pairs = [compare_findings(found, row) for _, row in out.iterrows()]
    out.insert(2, "query_image", out["case_id"].isin(list(kept)).to_numpy(dtype=bool))
    out["matches"] = [m for m, _ in pairs]
    out["contradicts"] = [c for _, c in pairs]
    return out


def format_table(table, with_findings: bool, cwd: str | None = None) -> str:
    """The result table as text: rank, case, scores, diagnosis, skin type, findings (when the text names any), image.

    Image paths under the working folder (or ``cwd``) are shown relative to it.
    """
    import os

    import pandas as pd

    def path(value) -> str:
        if not isinstance(value, str) or not value:
            return "?"
        try:
            rel = os.path.relpath(value, cwd)
        except ValueError:  # another drive (Windows)
            return value
        return value if rel.startswith("..") else rel

    n = len(table)
    view = pd.DataFrame({
        "rank": table["rank"],
        "case": [f"{c} (query image)" if q else str(c) for c, q in zip(table["case_id"], table["query_image"])],
        "score": table["score"], "s_global": table["s_global"], "s_local": table["s_local"],
        "diagnosis": table["diagnosis"] if "diagnosis" in table.columns else ["?"] * n,
        "skin": [skin_label(v) for v in table["fitzpatrick"]] if "fitzpatrick" in table.columns else ["?"] * n,
    })
    if with_findings:
        view["matches"] = [", ".join(v) if v else "-" for v in table["matches"]]
        view["contradicts"] = [", ".join(v) if v else "-" for v in table["contradicts"]]
    view["image"] = [path(v) for v in table["image_path"]] if "image_path" in table.columns else ["?"] * n
    return text_table(view)


def skin_label(value) -> str:
    """A Fitzpatrick type as its roman numeral, ``"?"`` when unknown (as the query builder shows it).

    (:func:`dermretr.session.skin_label` says the same; importing the session would slow every search.)

    >>> skin_label(5), skin_label(None), skin_label(float("nan")), skin_label("V-VI")
    ('V', '?', '?', 'V-VI')
    """
    import pandas as pd

    try:
        if value is None or pd.isna(value):
            return "?"
        number = int(value)
    except (TypeError, ValueError):
        return str(value)
    return ("I", "II", "III", "IV", "V", "VI")[number - 1] if 1 <= number <= 6 else str(value)


def text_table(view) -> str:
    """A DataFrame as plain text: numbers right-aligned with 4 decimals, everything else left-aligned.

    >>> import pandas as pd
    >>> print(text_table(pd.DataFrame({"rank": [1, 10], "case": ["a", "bcd"], "score": [0.5, 0.25]})))
    rank  case   score
       1  a     0.5000
      10  bcd   0.2500
    """
    import pandas as pd

    columns = []
    for name in view.columns:
        values = view[name]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in values]
        width = max([len(str(name)), *map(len, cells)])
        pad = (lambda t, w=width: t.rjust(w)) if numeric else (lambda t, w=width: t.ljust(w))
        columns.append([pad(str(name)), *map(pad, cells)])
    return "\n".join("  ".join(row).rstrip() for row in zip(*columns))


def findings_line(found, hits) -> str:
    """How many results show each finding of the text ("blue-whitish veil: 0 of 10")."""
    from ..data.vocab import shown_findings

    shown = [shown_findings(found, row) for _, row in hits.iterrows()]
    parts = []
    for phrase in found.phrases():
        yes = sum(1 for s in shown if s.get(phrase) is True)
        unknown = sum(1 for s in shown if s.get(phrase) is None)
        parts.append(f"{phrase} {yes} of {len(hits)}" + (f" (unknown for {unknown})" if unknown else ""))
    return "results showing the text's findings: " + ", ".join(parts)
