"""``dermretr index`` and ``search``: a search index folder from a run, and composed queries against it."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .._errors import DermretrError
from ..models._released import RELEASED

__all__ = ["INDEX_KINDS", "ENGINES", "add_index_commands", "cmd_index", "cmd_search", "parse_filters"]


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
                                        "SOURCE:PATH indexed now with --model.")
    where = search.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", help="index folder written by `dermretr index`")
    where.add_argument("--data", help=f"SOURCE:PATH: index this dataset now with --model (default {RELEASED}) and "
                                      "search it (nothing is written)")
    search.add_argument("--model", default=None, help=f"with --data: the model (default {RELEASED})")
    search.add_argument("--image", required=True, help="reference lesion image")
    search.add_argument("--text", default="", help="descriptor or modification text (default: none)")
    search.add_argument("-k", type=int, default=10, help="results (default: 10)")
    search.add_argument("--alpha", type=float, default=None, help="override the weight of local evidence")
    search.add_argument("--filter", action="append", default=[], metavar="COLUMN=V1,V2",
                        help="keep cases whose COLUMN is one of the values, e.g. fitzpatrick=5,6 (repeatable)")
    search.add_argument("--rerank", type=int, default=None, help="candidates re-scored exactly (default: 100)")
    search.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    search.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def parse_filters(pairs: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        column, sep, values = pair.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not column.strip() or not items:
            raise DermretrError(f"filter {pair!r} must look like COLUMN=V1,V2 (e.g. fitzpatrick=5,6)")
        out.setdefault(column.strip(), []).extend(items)
    return out


def cmd_index(args) -> int:
    import time

    from ..data import load
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
    cases = load(args.data)
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
    if not ckpt.is_file():
        raise DermretrError(f"{ckpt} not found: is {run} a run folder of `dermretr train`?")
    return ckpt


def _index_with_ray(args) -> int:
    """``dermretr index --engine ray``: :func:`dermretr.index.encode_archive`, restartable."""
    from ..data import load
    from ..index import CaseIndex, encode_archive
    from ..index._ray import check_ray_options, require_ray

    options = dict(workers=args.workers, gpus_per_worker=args.gpus_per_worker or 0,
                   shard_size=4096 if args.shard_size is None else args.shard_size, address=args.address,
                   device=args.device)
    check_ray_options(**options)  # every value, and Ray being there, before the data and the model are read
    require_ray()
    ckpt = _checkpoint(args)
    CaseIndex.check_output(args.out, overwrite=args.overwrite)
    cases = load(args.data)
    run = encode_archive(ckpt if ckpt is not None else (args.model or RELEASED), cases, args.out, kind=args.kind,
                         batch_size=args.batch_size, overwrite=args.overwrite, progress=not args.no_progress,
                         keep_shards=args.keep_shards, **options)
    print(_summary(run.manifest, ckpt, run.seconds, run.path) + f"; Ray: {run.shards} shards, {run.encoded} encoded, "
          f"{run.reused} reused" + (f" (shards kept in {run.path}.shards)" if args.keep_shards else ""))
    return 0


def cmd_search(args) -> int:
    import pandas as pd

    from ..index import CaseIndex

    filters = parse_filters(args.filter)
    if args.index is not None:
        if args.model is not None:
            raise DermretrError("--model goes with --data; an --index folder searches with the model it was built with")
        index = CaseIndex.open(args.index, device=args.device)
    else:
        from ..data import load

        index = CaseIndex.build(args.model or RELEASED, load(args.data), device=args.device)
    if args.rerank is not None:
        if args.rerank < 1:
            raise DermretrError(f"--rerank must be at least 1, got {args.rerank}")
        index.rerank = args.rerank
    hits = index.search(args.image, args.text, k=args.k, alpha=args.alpha, filters=filters)
    if args.text.strip() and hits.attrs.get("descriptors") == {}:
        print("dermretr: note: no 7-point checklist descriptor recognised in the text; it is used as free text",
              file=sys.stderr)
    if args.json:
        print(json.dumps(json.loads(hits.to_json(orient="records")), indent=2))
    elif len(hits) == 0:
        print("no results")
    else:
        with pd.option_context("display.width", 200, "display.max_colwidth", 40):
            print(hits[["rank", "case_id", "diagnosis", "score", "s_global", "s_local"]]
                  .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0

