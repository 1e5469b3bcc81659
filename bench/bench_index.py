"""Approximate vs exact search on 1,000,000 clustered vectors: recall@10 and queries/s.

    python bench/bench_index.py [--n 1000000] [--dim 128] [--kinds ivf,ivfpq] [--threads 1]

Vectors: ``clusters`` Gaussian clusters on the unit sphere (like embeddings of a survey's
morphologies), L2-normalised; queries are fresh draws from the same clusters. Ground truth and the
baseline speed come from exact inner-product search (faiss IndexFlatIP). For each kind the
nprobe / efSearch sweep is printed, and the fastest setting with recall@10 >= target is chosen.
Prints one JSON object (progress on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def clustered_vectors(n, dim, clusters, spread, seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 200_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x = centers[rng.integers(0, clusters, m)] + rng.normal(0, spread, (m, dim)).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def sample_mixture(weights, means, chol, n, seed=0, out=None, chunk=262_144):
    """``n`` L2-normalised draws from a Gaussian mixture (weights (C,), means (C, D), Cholesky
    factors (C, D, D)); written into ``out`` (e.g. a np.memmap) when given, a chunk at a time."""
    rng = np.random.default_rng(seed)
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    means, chol = np.asarray(means, np.float32), np.asarray(chol, np.float32)
    dim = means.shape[1]
    x_all = np.empty((n, dim), np.float32) if out is None else out
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        comp = rng.choice(len(weights), m, p=weights)
        z = rng.standard_normal((m, dim), dtype=np.float32)
        x = np.empty((m, dim), np.float32)
        for c in np.unique(comp):
            sel = comp == c
            x[sel] = means[c] + z[sel] @ chol[c].T
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x_all[start : start + m] = x
    return x_all


def timed_search(index, queries, k, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        _, rows = index.search(queries, k)
        best = min(best, time.perf_counter() - t0)
    return rows, len(queries) / best


def recall_at(found, truth, k):
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--spread", type=float, default=0.08, help="per-dimension noise around each cluster centre")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--exact-queries", type=int, default=200, help="queries timed on exact search (it is slow)")
    ap.add_argument("--kinds", default="ivf,ivfpq",
                    help="comma list of ivf, ivfpq, hnsw (HNSW at 1M takes >10 min to build on one core)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import faiss

    from galaxalign.search.index import create_faiss_index, resolve_params

    faiss.omp_set_num_threads(args.threads)
    k = 10
    t0 = time.perf_counter()
    base = clustered_vectors(args.n + args.queries, args.dim, args.clusters, args.spread, args.seed)
    queries, base = base[: args.queries], base[args.queries :]
    log(f"data: {base.shape} in {time.perf_counter() - t0:.1f}s")

    exact = faiss.IndexFlatIP(args.dim)
    exact.add(base)
    t0 = time.perf_counter()
    _, truth = exact.search(queries, k)
    truth_s = time.perf_counter() - t0
    _, exact_qps = timed_search(exact, queries[: args.exact_queries], k)
    # Batched exact search on all queries, too: BLAS makes it faster per query than one at a time.
    exact_qps_batch = len(queries) / truth_s
    log(f"exact: {exact_qps:.1f} q/s ({args.exact_queries} queries), {exact_qps_batch:.1f} q/s batched ({args.queries})")
    baseline = max(exact_qps, exact_qps_batch)

    result = {"n": args.n, "dim": args.dim, "clusters": args.clusters, "spread": args.spread, "queries": args.queries,
              "threads": args.threads, "k": k, "exact_qps": round(baseline, 1), "kinds": {}}
    sweeps = {"ivf": ("nprobe", [1, 2, 4, 8, 16, 32, 64]), "ivfpq": ("nprobe", [1, 2, 4, 8, 16, 32, 64]),
              "hnsw": ("ef_search", [16, 32, 64, 128, 256])}
    for kind in [s.strip() for s in args.kinds.split(",") if s.strip()]:
        params = resolve_params(kind, args.n, args.dim)
        t0 = time.perf_counter()
        index = create_faiss_index(kind, base, params, seed=args.seed, progress=False)
        build_s = time.perf_counter() - t0
        log(f"{kind}: built in {build_s:.1f}s with {params}")
        name, values = sweeps[kind]
        rows = []
        for v in values:
            if kind == "hnsw":
                index.hnsw.efSearch = v
            else:
                faiss.extract_index_ivf(index).nprobe = v
            found, qps = timed_search(index, queries, k, repeat=2)
            rec = recall_at(found, truth, k)
            rows.append({name: v, "recall_at_10": round(rec, 4), "qps": round(qps, 1), "speedup": round(qps / baseline, 1)})
            log(f"  {name}={v}: recall@10 {rec:.4f}, {qps:.0f} q/s, {qps / baseline:.1f}x exact")
        ok = [r for r in rows if r["recall_at_10"] >= args.target_recall]
        best = max(ok, key=lambda r: r["qps"]) if ok else None
        result["kinds"][kind] = {"params": params, "build_seconds": round(build_s, 1), "sweep": rows, "chosen": best,
                                 "meets_target": bool(best and best["speedup"] >= 20)}
        del index
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
