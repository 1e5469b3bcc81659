"""faiss ``auto`` vs Milvus Lite on the same vectors: recall@10, single-client queries/s, build time,
bytes per galaxy, filtered search; one run, one JSON object on stdout.

    python bench/bench_milvus.py                       # 200,000 vectors (a few minutes on 2 cores)
    GALAXALIGN_BENCH_MILVUS_N=1000000 python bench/bench_milvus.py    # or --n 1000000

Vectors: draws from the Gaussian mixture fitted to real embeddings (bench/embedding_gmm.npz, D=256;
see bench/bench_index.py), L2-normalised; queries are fresh draws; ground truth from exact faiss
search. Both indexes are what ``galaxalign index`` builds with ``--kind auto``: faiss in a folder,
Milvus (``--backend milvus``) in a Milvus Lite file, each with its search knob calibrated on the
data to recall@10 0.98. Queries go one at a time through ``SearchIndex.search_vectors`` (what
``galaxalign search`` and the service call), single-threaded on the faiss side.

Milvus Lite is the laptop stand-in for a Milvus cluster: a gRPC server in this same Python process
whose segments are searched by faiss. Its per-query cost is mostly that fixed overhead (measured
here on a 10-row collection), which a cluster's C++ query nodes do not pay in the same way; the
per-vector part is what docs/scale.md scales up.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_index import GMM_FILE, bench_table, load_mixture, log, sample_mixture, timed  # noqa: E402


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def one_at_a_time(index, queries, k, where=None):
    """(rows/keys (Q, k), queries/s) with one search call per query, as a single client sends them."""
    out = np.full((len(queries), k), -1, np.int64)
    t0 = time.perf_counter()
    for i, v in enumerate(queries):
        _, rows = index.search_vectors(v, k, where=where)
        out[i] = rows[0]
    return out, len(queries) / (time.perf_counter() - t0)


def exact_subset(base, queries, rows, k):
    import faiss

    sub = faiss.IndexFlatIP(base.shape[1])
    sub.add(np.ascontiguousarray(base[rows]))
    _, found = sub.search(queries, k)
    return np.where(found >= 0, rows[np.maximum(found, 0)], -1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=int(os.environ.get("GALAXALIGN_BENCH_MILVUS_N", 200_000)))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default=None, help="where the index folder and the Milvus Lite file go")
    ap.add_argument("--mixture", default=str(GMM_FILE))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import faiss

    from galaxalign.search import milvus_build as MB
    from galaxalign.search import milvus_index as M
    from galaxalign.search import milvus_schema as MS
    from galaxalign.search.difficulty import recall_at_k
    from galaxalign.search.build import build_index
    from galaxalign.search.index import SearchIndex

    k = 10
    weights, means, chol, meta = load_mixture(args.mixture)
    base = sample_mixture(weights, means, chol, args.n, seed=args.seed)
    queries = sample_mixture(weights, means, chol, args.queries, seed=args.seed + 1)
    table = bench_table(args.n, args.seed)
    rng = np.random.default_rng(args.seed + 5)
    table["ra"] = rng.uniform(0, 360, args.n)
    table["dec"] = np.degrees(np.arcsin(rng.uniform(-1, 1, args.n)))
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    _, truth = exact.search(queries, k)
    del exact
    result = {"n": args.n, "dim": int(base.shape[1]), "queries": args.queries, "k": k,
              "machine": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}}
    log(f"data: {base.shape}, {args.queries} queries")

    mag = table["mag_r"].to_numpy()
    filters = {
        "mag_r 16-17": ({"ranges": {"mag_r": [16.0, 17.0]}}, (mag >= 16) & (mag <= 17)),
    }
    cone = (150.0, 2.0, 20.0)  # a 20-degree cone: ~3% of the sky
    from galaxalign.search.filters import CatalogFilter

    filters["cone 20 deg"] = (CatalogFilter(cone=cone), CatalogFilter(cone=cone).mask(table))
    truths = {name: exact_subset(base, queries, np.flatnonzero(mask), k) for name, (_, mask) in filters.items()}

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        faiss.omp_set_num_threads(args.build_threads)
        out, build_s = timed(lambda: build_index(base, table, tmp / "faiss", kind="auto", seed=args.seed, progress=False))
        fi = SearchIndex.load(out)
        faiss.omp_set_num_threads(1)
        rows, qps = one_at_a_time(fi, queries, k)
        result["faiss"] = {"kind": fi.kind, "params": fi.params, "build_seconds": round(build_s, 1),
                           "recall_at_10": round(recall_at_k(rows, truth, k), 4), "qps_single_client": round(qps, 1),
                           "bytes_per_galaxy": round(folder_bytes(out) / args.n, 1), "filtered": {}}
        log(f"faiss: {result['faiss']}")
        for name, (where, mask) in filters.items():
            frows, fqps = one_at_a_time(fi, queries, k, where)
            result["faiss"]["filtered"][name] = {
                "selectivity": round(float(mask.mean()), 4), "recall_at_10": round(recall_at_k(frows, truths[name], k), 4),
                "all_results_match": bool(mask[frows[frows >= 0]].all()), "qps": round(fqps, 1)}
            log(f"faiss filtered {name}: {result['faiss']['filtered'][name]}")
        del fi

        faiss.omp_set_num_threads(args.build_threads)
        uri = str(tmp / "bench.db")
        spec, mbuild_s = timed(lambda: MB.build_milvus_index(base, table, uri, "bench", kind="auto", seed=args.seed,
                                                             progress=False))
        mi = SearchIndex.load(spec)
        keys, mqps = one_at_a_time(mi, queries, k)  # keys are the row numbers here (0..N-1)
        result["milvus_lite"] = {"index_type": mi.info.get("index_type"), "params": mi.params,
                                 "calibration": mi.info.get("calibration"), "build_seconds": round(mbuild_s, 1),
                                 "calibration_seconds": mi.info.get("calibration_seconds"),
                                 "recall_at_10": round(recall_at_k(keys, truth, k), 4),
                                 "qps_single_client": round(mqps, 1),
                                 "bytes_per_galaxy": round(folder_bytes(Path(uri)) / args.n, 1), "filtered": {}}
        knob = MS.SEARCH_KNOB.get(mi.info.get("index_type"))
        if knob:
            sweep = []
            for v in sorted({max(1, int(mi.params[knob]) // 2), int(mi.params[knob]), int(mi.params[knob]) * 2}):
                t0 = time.perf_counter()
                found = np.concatenate([mi._search_keys(queries[i:i + 1], k, {knob: v})[1] for i in range(len(queries))])
                sweep.append({knob: v, "recall_at_10": round(recall_at_k(found, truth, k), 4),
                              "qps": round(len(queries) / (time.perf_counter() - t0), 1)})
            result["milvus_lite"]["sweep"] = sweep
        log(f"milvus lite: {result['milvus_lite']}")
        for name, (where, mask) in filters.items():
            fkeys, fqps = one_at_a_time(mi, queries, k, where)
            result["milvus_lite"]["filtered"][name] = {
                "selectivity": round(float(mask.mean()), 4), "recall_at_10": round(recall_at_k(fkeys, truths[name], k), 4),
                "all_results_match": bool(mask[fkeys[fkeys >= 0]].all()), "qps": round(fqps, 1),
                "expression": mi.filter_expression(where if isinstance(where, CatalogFilter) else
                                                   CatalogFilter(ranges=where["ranges"]))}
            log(f"milvus lite filtered {name}: {result['milvus_lite']['filtered'][name]}")

        # the fixed cost of one Milvus Lite search (gRPC + the in-process engine), on a 10-row collection
        tiny = SearchIndex.load(MB.build_milvus_index(base[:10], table.iloc[:10], uri, "tiny", progress=False))
        _, tiny_qps = one_at_a_time(tiny, queries, k)
        t0 = time.perf_counter()
        for i in range(len(queries)):
            mi.client.search("bench", data=[queries[i]], limit=k, output_fields=[],
                             search_params=mi._search_params())
        raw_qps = len(queries) / (time.perf_counter() - t0)
        result["milvus_lite"]["per_query_ms"] = {
            "total": round(1000 / mqps, 2),
            "fixed_overhead_10_rows": round(1000 / tiny_qps, 2),
            "raw_client_search_no_fields": round(1000 / raw_qps, 2),
        }
        # growth: 1,000 new galaxies, 100 removed, no rebuild
        new = sample_mixture(weights, means, chol, 1000, seed=args.seed + 2)
        nt = bench_table(1000, args.seed + 2, start=args.n).assign(ra=0.0, dec=0.0)
        _, add_s = timed(lambda: mi.add(new, nt))
        _, rm_s = timed(lambda: mi.remove([f"g{i}" for i in range(100)]))
        result["milvus_lite"]["growth"] = {"added": 1000, "add_seconds": round(add_s, 2), "removed": 100,
                                           "remove_seconds": round(rm_s, 2), "count": len(mi),
                                           "new_galaxy_found_first": mi.search(new[3], 1)[0].id == f"g{args.n + 3}"}
        log(f"milvus lite: {result['milvus_lite']['per_query_ms']} {result['milvus_lite']['growth']}")
        del mi, tiny
    f, m = result["faiss"], result["milvus_lite"]
    result["milvus_vs_faiss"] = {"qps_ratio": round(m["qps_single_client"] / f["qps_single_client"], 3),
                                 "build_ratio": round(m["build_seconds"] / max(f["build_seconds"], 1e-9), 2),
                                 "bytes_ratio": round(m["bytes_per_galaxy"] / f["bytes_per_galaxy"], 2)}
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
