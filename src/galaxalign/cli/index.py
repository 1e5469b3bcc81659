"""`galaxalign index`: build a faiss index over the embeddings written by `galaxalign embed`."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", required=True, help="folder written by `galaxalign embed`")
    p.add_argument("--out", required=True, help="index folder to write (replaced atomically)")
    p.add_argument("--kind", default="auto", choices=["auto", "exact", "hnsw", "ivf", "ivfpq"],
                   help="auto: exact up to 100k vectors, IVF-PQ (fast-scan + exact re-ranking) beyond")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="index parameter, e.g. ef_search=128, nprobe=32, nlist=4096, M=32 (repeatable)")
    p.add_argument("--shards", type=int, default=1,
                   help="build in this many shards (one trained quantizer; queries fan out and merge)")
    p.add_argument("--no-progress", action="store_true")


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE")
        try:
            params[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"--param {item!r}: value must be a number") from None
    return params


def run(args) -> int:
    from galaxalign.search.build import build_index_from_embeddings
    from galaxalign.search.index import SearchIndex

    out = build_index_from_embeddings(args.embeddings, args.out, kind=args.kind, params=_parse_params(args.param),
                                      progress=not args.no_progress, shards=args.shards)
    index = SearchIndex.load(out)
    print(f"{index.kind} index of {len(index)} galaxies (dim {index.dim}) -> {out}")
    return 0
