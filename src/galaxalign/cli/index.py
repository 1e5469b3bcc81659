"""`galaxalign index`: build a faiss index (a folder) or a Milvus collection over the embeddings
written by `galaxalign embed`, or move an index between the two."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", help="folder written by `galaxalign embed`")
    p.add_argument("--out", help="index folder to write (replaced atomically); faiss backend")
    p.add_argument("--backend", default="faiss", choices=["faiss", "milvus"],
                   help="faiss: an index folder (--out); milvus: a Milvus collection (--uri, --collection)")
    p.add_argument("--uri", default=None, help="Milvus: a Milvus Lite file (./survey.db) or a server "
                   "(http://host:19530); the token comes from $GALAXALIGN_MILVUS_TOKEN")
    p.add_argument("--collection", default=None, help="Milvus collection (default galaxalign; replaced atomically)")
    p.add_argument("--from-index", default=None, metavar="INDEX",
                   help="copy an existing index instead of reading --embeddings: a faiss folder into Milvus "
                   "(--backend milvus), or milvus://URI#COLLECTION into a faiss folder (--out)")
    p.add_argument("--append", action="store_true",
                   help="Milvus: add the --embeddings galaxies to the existing collection (same model) without a rebuild")
    p.add_argument("--kind", default="auto",
                   help="faiss: auto (exact up to 100k vectors, IVF-PQ fast-scan + exact re-ranking beyond), exact, "
                   "hnsw, ivf, ivfpq; milvus: auto (FLAT up to 100k; beyond IVF_FLAT on Milvus Lite, HNSW/DISKANN "
                   "on a server) or a Milvus index type")
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
    if args.backend == "milvus":
        return _run_milvus(args)
    from galaxalign.cli.arguments import check_out_folder

    if args.out is not None:
        check_out_folder(args.out)  # before the work, not after it
    from galaxalign.search.build import build_index_from_embeddings
    from galaxalign.search.index import SearchIndex

    if args.append:
        raise ValueError("--append is for --backend milvus (a faiss folder grows with SearchIndex.add, then save)")
    if args.out is None:
        raise ValueError("--out is required with --backend faiss (the index folder to write)")
    if args.from_index is not None:  # e.g. a Milvus collection back into a faiss folder
        from galaxalign.search.milvus_build import faiss_from_milvus

        out = faiss_from_milvus(args.from_index, args.out, kind=args.kind, params=_parse_params(args.param),
                                progress=not args.no_progress)
    else:
        if args.embeddings is None:
            raise ValueError("pass --embeddings (a folder written by `galaxalign embed`) or --from-index")
        out = build_index_from_embeddings(args.embeddings, args.out, kind=args.kind, params=_parse_params(args.param),
                                          progress=not args.no_progress, shards=args.shards)
    index = SearchIndex.load(out)
    print(f"{index.kind} index of {len(index)} galaxies (dim {index.dim}) -> {out}")
    return 0


def _run_milvus(args) -> int:
    from galaxalign.search import milvus_build as MB
    from galaxalign.search import milvus_schema as MS
    from galaxalign.search.index import SearchIndex

    if args.uri is None:
        raise ValueError("--uri is required with --backend milvus: a Milvus Lite file (./survey.db) or http://host:19530")
    if args.shards != 1:
        raise ValueError("--shards is for faiss; Milvus shards a collection itself")
    collection = MS.check_collection_name(args.collection or MS.DEFAULT_COLLECTION)
    params = _parse_params(args.param)
    if args.append:
        if args.embeddings is None or args.from_index is not None:
            raise ValueError("--append takes --embeddings (the galaxies to add), not --from-index")
        keys = MB.append_embeddings(MS.milvus_spec(args.uri, collection), args.embeddings)
        spec = MS.milvus_spec(args.uri, collection)
        print(f"added {len(keys)} galaxies -> {spec}")
        return 0
    if args.from_index is not None:
        spec = MB.milvus_from_faiss(args.from_index, args.uri, collection, kind=args.kind, params=params,
                                   progress=not args.no_progress)
    elif args.embeddings is not None:
        spec = MB.build_milvus_from_embeddings(args.embeddings, args.uri, collection, kind=args.kind, params=params,
                                              progress=not args.no_progress)
    else:
        raise ValueError("pass --embeddings (a folder written by `galaxalign embed`) or --from-index (a faiss folder)")
    index = SearchIndex.load(spec)
    print(f"{index.kind} index of {len(index)} galaxies (dim {index.dim}) -> {spec}")
    return 0
