"""`galaxalign search`: nearest galaxies to an image, a catalog id, a description, Galaxy Zoo
answers (composed into a symbol, or a feature query through the symbol and/or text encoder) or a
sketch. Hits list each galaxy's answers when the indexed catalog carries them."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, help="index folder written by `galaxalign index`, or "
                   "milvus://URI#COLLECTION (e.g. milvus://./survey.db#galaxies, milvus://host:19530#galaxies)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--image", help="a galaxy image file (image encoder)")
    q.add_argument("--id", help="a galaxy id of the indexed catalog (its stored embedding)")
    q.add_argument("--text", help="a description, e.g. 'a barred spiral galaxy' (text encoder)")
    q.add_argument("--symbol", help="Galaxy Zoo answers, comma-separated, e.g. smooth-or-featured_smooth,how-rounded_round")
    q.add_argument("--features", help="a feature query: Galaxy Zoo answers, comma-separated, run --via the symbol "
                   "encoder, the text encoder (the answers in volunteer wording) or both")
    q.add_argument("--sketch", help="a drawing in the style of the symbols (symbol encoder)")
    p.add_argument("--via", choices=["symbol", "text", "both"], default="both",
                   help="how --features runs: composed symbol, caption text, or both (normalised sum; default)")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--checkpoint", default=None, help="model (default: the one recorded in index.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    from galaxalign.search import query
    from galaxalign.search.index import SearchIndex

    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    index = SearchIndex.load(args.index)
    extra: dict = {}  # what else the query reports (a feature query's via and caption)
    n_query = 0       # answers of a feature query (the n of "m/n")
    if args.id is not None:
        hits = query.query_id(index, args.id, args.k)
        mode, value = "id", args.id
    else:
        from galaxalign.inference import load_model

        checkpoint = args.checkpoint or index.checkpoint
        if not checkpoint:
            raise ValueError(f"{args.index}/index.json records no checkpoint; pass --checkpoint")
        model, _ = load_model(checkpoint)
        if args.image is not None:
            hits, mode, value = query.query_image(index, model, query.load_image(args.image), args.k), "image", args.image
        elif args.sketch is not None:
            hits, mode, value = query.query_sketch(index, model, query.load_image(args.sketch), args.k), "sketch", args.sketch
        elif args.text is not None:
            hits, mode, value = query.query_text(index, model, args.text, args.k), "text", args.text
        elif args.features is not None:
            tax = query.index_taxonomy(index)
            feats = query.parse_answers(args.features, tax.tree if tax is not None else None)
            hits = query.query_features(index, model, feats, args.via, args.k)
            mode, value = "features", list(feats)
            extra = {"via": args.via, "caption": query.feature_caption(feats, tax)}
            n_query = len(feats)
        else:
            hits, mode, value = query.query_symbol(index, model, args.symbol, args.k), "symbol", args.symbol
            n_query = len(query.parse_answers(args.symbol))
    if args.json:
        print(json.dumps({"query": {mode: value, **extra}, "k": args.k, "results": [h.to_dict() for h in hits]}, indent=2))
        return 0
    print(f"query {mode}: {', '.join(value) if isinstance(value, list) else value}")
    for key, v in extra.items():
        print(f"{key}: {v}")
    matched = any(h.matched is not None for h in hits)
    print(f"{'rank':>4}  {'id':<24} {'score':>7}  {'label':<36} " + ("matched  " if matched else "") + "source")
    for h in hits:
        m = f"{h.matched:>3}/{n_query:<3}  " if matched else ""
        print(f"{h.rank:>4}  {h.id:<24} {h.score:>7.4f}  {h.label_name:<36} {m}{h.source}")
        if h.answers is not None:
            print(f"{'':>6}answers: {', '.join(h.answers) or '(none)'}")
    return 0
