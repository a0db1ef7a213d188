"""``dermretr index`` and ``search``: a search index folder from a run, and composed queries against it."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .._errors import DermretrError
from ..models._released import RELEASED

__all__ = ["INDEX_KINDS", "add_index_commands", "cmd_index", "cmd_search", "parse_filters"]


INDEX_KINDS = ("flat", "hnsw", "ivf", "ivfpq")  # dermretr.index.INDEX_KINDS (not imported: faiss loads slowly)


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

    ckpt = None
    if args.run is not None:
        run = Path(args.run).expanduser()
        ckpt = run / "checkpoints" / f"{args.checkpoint}.pt"
        if not ckpt.is_file():
            raise DermretrError(f"{ckpt} not found: is {run} a run folder of `dermretr train`?")
    out = CaseIndex.check_output(args.out, overwrite=args.overwrite)  # before the long part
    model = Retriever.load(ckpt, device=args.device) if ckpt is not None else (args.model or RELEASED)
    cases = load(args.data)
    start = time.perf_counter()
    index = CaseIndex.build(model, cases, kind=args.kind, checkpoint=ckpt, batch_size=args.batch_size,
                            progress=not args.no_progress, device=args.device)
    index.save(out, overwrite=args.overwrite)
    m = index.manifest
    local = f"{m['n_masks']} local vectors each, alpha {m['alpha']:.2f}" if m["n_masks"] else "global vectors only"
    print(f"indexed {len(index)} cases ({m['kind']}, dim {m['dim']}, {local}) with "
          f"{ckpt if ckpt is not None else m['model']['pretrained']} in {time.perf_counter() - start:.1f} s -> {out}")
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

