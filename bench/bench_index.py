"""Approximate vs exact search on vectors as hard as real embeddings: recall@10, queries/s, memory.

    python bench/bench_index.py [--n 1000000] [--queries 1000] [--threads 1] [--no-anchor]
    GALAXALIGN_BENCH_10M=1 python bench/bench_index.py --only-large   # the 10M part alone (~30 min)

Vectors: draws from the Gaussian mixture in bench/embedding_gmm.npz, fitted (by
bench/fit_embedding_gmm.py) to real embeddings of galaxies rendered by our survey generator,
at the model's dimension (256), L2-normalised; queries are fresh draws. The run first reports how
hard the data is (IVF nprobe=1 recall@10 at sqrt(N) lists, relative contrast), beside the same
measures of the real embeddings. Ground truth and the baseline speed come from exact
inner-product search (faiss IndexFlatIP, batched and one query at a time). Then:

- ``auto``: the index ``galaxalign index --kind auto`` builds for N (parameters from N, nprobe
  calibrated on the data), with a sweep of nprobe around the chosen value;
- a plain faiss ``IndexHNSWFlat(D, 32)`` on the same vectors, the outside anchor;
- a filtered query (a magnitude window, ~10% of the catalog) through faiss's IDSelector, against
  exact search over the matching rows; adding and removing galaxies without a rebuild;
- with GALAXALIGN_BENCH_10M=1 (or --large-n): 10M vectors in a memory-mapped file, indexed by
  ``auto`` (IVF-PQ fast-scan + exact re-ranking from the memory-mapped store), with build time,
  resident memory and single-threaded queries/s.

All timings single-threaded (--threads) unless said; builds use every core. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GMM_FILE = HERE / "embedding_gmm.npz"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


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
            x[sel] = means[c] + z[sel] @ chol[c if len(chol) > 1 else 0].T  # tied: one shared factor
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x_all[start : start + m] = x
    return x_all


def load_mixture(path=GMM_FILE):
    g = np.load(path)
    return g["weights"], g["means"], g["chol"], json.loads(str(g["meta"]))


def timed(fn, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def rss_mb() -> dict:
    """Resident memory of this process now (anonymous vs file-backed, e.g. memory-mapped) and peak."""
    out = {"peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def bench_table(n, seed, start=0):
    import pandas as pd

    rng = np.random.default_rng(seed + 17)
    ids = pd.array([f"g{i}" for i in range(start, start + n)], dtype="string[pyarrow]")
    return pd.DataFrame({"id": ids, "label": rng.integers(0, 10, n),
                         "source": pd.array([""] * n, dtype="string[pyarrow]"),
                         "mag_r": rng.uniform(14.0, 20.0, n).astype(np.float32)})


def exact_baseline(base, queries, k, single):
    import faiss

    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    (_, truth), batch_s = timed(lambda: exact.search(queries, k))
    _, single_s = timed(lambda: [exact.search(queries[i : i + 1], k) for i in range(single)])
    return exact, truth, len(queries) / batch_s, single / single_s


def part_small(args, mixture, result):
    import faiss

    from galaxalign.search.difficulty import dataset_difficulty, recall_at_k
    from galaxalign.search.build import build_index
    from galaxalign.search.index import SearchIndex

    weights, means, chol, meta = mixture
    k = 10
    t0 = time.perf_counter()
    base = sample_mixture(weights, means, chol, args.n, seed=args.seed)
    queries = sample_mixture(weights, means, chol, args.queries, seed=args.seed + 1)
    log(f"data: {base.shape} from a {meta['components']}-component mixture in {time.perf_counter() - t0:.1f}s")

    exact, truth, exact_batch_qps, exact_single_qps = exact_baseline(base, queries, k, args.exact_single)
    baseline = max(exact_batch_qps, exact_single_qps)
    log(f"exact: {exact_batch_qps:.0f} q/s batched, {exact_single_qps:.0f} q/s one at a time")
    diff = dataset_difficulty(base, queries, truth=truth)
    result["difficulty"] = {"generated": diff, "real_embeddings": meta.get("real_difficulty"),
                            "generated_at_real_n": meta.get("sample_difficulty_same_n"), "real_n": meta.get("count")}
    log(f"difficulty: {diff} (real embeddings at n={meta.get('count')}: {meta.get('real_difficulty')})")
    result["exact"] = {"qps_batched": round(exact_batch_qps, 1), "qps_single": round(exact_single_qps, 1),
                       "baseline_qps": round(baseline, 1)}
    del exact

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        table = bench_table(args.n, args.seed)
        faiss.omp_set_num_threads(args.build_threads)
        (out), build_s = timed(lambda: build_index(base, table, Path(tmp) / "auto", kind="auto", seed=args.seed, progress=False))
        index = SearchIndex.load(out)
        faiss.omp_set_num_threads(args.threads)
        knob = {"ivf": "nprobe", "ivfpq": "nprobe", "hnsw": "ef_search"}.get(index.kind)
        log(f"auto: {index.kind} {index.params} built in {build_s:.1f}s")
        (_, rows), s = timed(lambda: index.search_vectors(queries, k), repeat=2)
        rec = recall_at_k(rows, truth, k)
        auto = {"kind": index.kind, "params": index.params, "calibration": index.info.get("calibration"),
                "build_seconds": round(build_s, 1), "recall_at_10": round(rec, 4), "qps": round(len(queries) / s, 1),
                "speedup_vs_exact": round(len(queries) / s / baseline, 1), "sweep": []}
        log(f"  chosen: recall@10 {rec:.4f}, {len(queries) / s:.0f} q/s = {len(queries) / s / baseline:.1f}x exact")
        if knob:
            chosen = int(index.params[knob])
            for v in sorted({max(1, chosen // 2), chosen, chosen * 2}):
                (_, keys), s = timed(lambda: index._search_keys(np.ascontiguousarray(queries), k, {knob: v}), repeat=2)
                r = recall_at_k(index.rows_of_keys(keys), truth, k)
                auto["sweep"].append({knob: v, "recall_at_10": round(r, 4), "qps": round(len(queries) / s, 1),
                                      "speedup_vs_exact": round(len(queries) / s / baseline, 1)})
                log(f"  {knob}={v}: recall@10 {r:.4f}, {len(queries) / s:.0f} q/s")
        auto["meets_goal"] = bool(auto["recall_at_10"] >= 0.98 and auto["speedup_vs_exact"] >= 50)
        result["auto"] = auto

        # filtered search: a 1-magnitude window (~1/6 of the catalog), through faiss's IDSelector
        mag = table["mag_r"].to_numpy()
        where = {"ranges": {"mag_r": [16.0, 17.0]}}
        mask = (mag >= 16.0) & (mag <= 17.0)
        rows_sel = np.flatnonzero(mask)
        sub = faiss.IndexFlatIP(base.shape[1])
        sub.add(base[rows_sel])
        (_, ftruth), fexact_s = timed(lambda: sub.search(queries, k))
        ftruth = rows_sel[ftruth]
        del sub
        (_, frows), fs = timed(lambda: index.search_vectors(queries, k, where=where))
        result["filtered"] = {"filter": where, "selectivity": round(float(mask.mean()), 4),
                              "recall_at_10": round(recall_at_k(frows, ftruth, k), 4),
                              "all_results_match": bool(mask[frows[frows >= 0]].all()),
                              "qps": round(len(queries) / fs, 1),
                              "exact_on_matching_rows_qps": round(len(queries) / fexact_s, 1)}
        log(f"filtered: {result['filtered']}")

        # growth: a next data release of 10,000 galaxies, then 1,000 removed, no rebuild
        new = sample_mixture(weights, means, chol, 10_000, seed=args.seed + 2)
        _, add_s = timed(lambda: index.add(new, bench_table(10_000, args.seed + 2, start=args.n)))
        gone = [f"g{i}" for i in range(0, 1000)]
        _, rm_s = timed(lambda: index.remove(gone))
        hit = index.search(new[3], 1)[0]
        result["growth"] = {"added": 10_000, "add_seconds": round(add_s, 2), "removed": 1000,
                            "remove_seconds": round(rm_s, 2), "count": len(index),
                            "new_galaxy_found_first": hit.id == f"g{args.n + 3}"}
        log(f"growth: {result['growth']}")
        del index

    if args.anchor:
        faiss.omp_set_num_threads(args.build_threads)
        h = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        _, hb = timed(lambda: h.add(base))
        faiss.omp_set_num_threads(args.threads)
        sweep = []
        for ef in (16, 32, 64, 128, 256):
            h.hnsw.efSearch = ef
            (_, found), s = timed(lambda: h.search(queries, k), repeat=2)
            sweep.append({"ef_search": ef, "recall_at_10": round(recall_at_k(found, truth, k), 4),
                          "qps": round(len(queries) / s, 1), "speedup_vs_exact": round(len(queries) / s / baseline, 1)})
            log(f"hnsw32 anchor ef={ef}: {sweep[-1]}")
        ok = [r for r in sweep if r["recall_at_10"] >= 0.98]
        result["hnsw32_anchor"] = {"build_seconds": round(hb, 1), "build_threads": args.build_threads,
                                   "ef_construction": int(h.hnsw.efConstruction), "sweep": sweep,
                                   "fastest_at_0.98": max(ok, key=lambda r: r["qps"]) if ok else None}
        del h


def part_large(args, mixture, result):
    import faiss

    from galaxalign.search.difficulty import recall_at_k
    from galaxalign.search.build import build_index
    from galaxalign.search.index import SearchIndex
    from galaxalign.search.tuning import exact_top_k

    weights, means, chol, meta = mixture
    n, k, dim = args.large_n, 10, means.shape[1]
    work = Path(tempfile.mkdtemp(prefix="bench-10m-", dir=args.workdir))
    try:
        raw = work / "vectors.f32"
        t0 = time.perf_counter()
        mm = np.memmap(raw, dtype=np.float32, mode="w+", shape=(n, dim))
        sample_mixture(weights, means, chol, n, seed=args.seed + 10, out=mm)
        mm.flush()
        del mm
        base = np.memmap(raw, dtype=np.float32, mode="r", shape=(n, dim))
        queries = sample_mixture(weights, means, chol, args.large_queries, seed=args.seed + 11)
        gen_s = time.perf_counter() - t0
        log(f"10M: generated {n} x {dim} ({raw.stat().st_size / 1e9:.1f} GB, memory-mapped) in {gen_s:.0f}s")
        faiss.omp_set_num_threads(args.build_threads)
        (_, truth), truth_s = timed(lambda: exact_top_k(base, queries, k))
        log(f"10M: exact ground truth for {len(queries)} queries in {truth_s:.0f}s ({args.build_threads} threads)")
        table = bench_table(n, args.seed)
        rss_before = rss_mb()
        # the 10M goal is recall@10 >= 0.95: calibrate to that target (nlist, PQ from N as always)
        out, build_s = timed(lambda: build_index(base, table, work / "index", kind="auto", seed=args.seed, progress=True,
                                                 params={"target_recall": args.large_target}))
        del base, table
        log(f"10M: built in {build_s:.0f}s")
        faiss.omp_set_num_threads(args.threads)
        rss_0 = rss_mb()
        index = SearchIndex.load(out)
        rss_1 = rss_mb()
        index.search_vectors(queries[:50], k)  # warm the store's pages a little, as a served index would be
        (_, rows), s = timed(lambda: index.search_vectors(queries, k), repeat=2)
        rss_2 = rss_mb()
        rec = recall_at_k(rows, truth, k)
        result["large"] = {
            "n": n, "dim": dim, "kind": index.kind, "params": index.params, "calibration": index.info.get("calibration"),
            "generate_seconds": round(gen_s, 1), "build_seconds": round(build_s, 1), "build_threads": args.build_threads,
            "calibration_seconds": index.info.get("calibration_seconds"),
            "index_file_mb": round((out / "index.faiss").stat().st_size / 1e6, 1),
            "store_file_gb": round((out / "vectors.f32").stat().st_size / 1e9, 2),
            "resident_index_mb": round(rss_1.get("RssAnon", 0) - rss_0.get("RssAnon", 0), 1),
            "rss_after_queries": rss_2, "rss_before_build": rss_before,
            "queries": len(queries), "recall_at_10": round(rec, 4), "qps_single_thread": round(len(queries) / s, 1),
            "meets_goal": bool(rec >= 0.95 and len(queries) / s >= 300),
        }
        log(f"10M: {result['large']}")
    finally:
        if not args.keep_large:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--exact-single", type=int, default=100, help="queries timed one at a time on exact search")
    ap.add_argument("--threads", type=int, default=1, help="faiss threads while querying")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-anchor", dest="anchor", action="store_false", help="skip the plain faiss HNSW32 anchor")
    ap.add_argument("--large-n", type=int, default=10_000_000 if os.environ.get("GALAXALIGN_BENCH_10M") else 0,
                    help="also run the memory-mapped large part at this N (default 10M when GALAXALIGN_BENCH_10M=1)")
    ap.add_argument("--large-queries", type=int, default=500)
    ap.add_argument("--large-target", type=float, default=0.95, help="recall@10 the large index is calibrated to")
    ap.add_argument("--only-large", action="store_true")
    ap.add_argument("--keep-large", action="store_true", help="keep the large part's files")
    ap.add_argument("--workdir", default=None, help="where the temporary index folders go (default: $TMPDIR)")
    ap.add_argument("--mixture", default=str(GMM_FILE))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import faiss

    faiss.omp_set_num_threads(args.threads)
    mixture = load_mixture(args.mixture)
    result = {"n": args.n, "dim": int(mixture[1].shape[1]), "queries": args.queries, "k": 10,
              "query_threads": args.threads, "generator": mixture[3].get("source"),
              "mixture_components": mixture[3].get("components")}
    if not args.only_large:
        part_small(args, mixture, result)
    if args.large_n:
        part_large(args, mixture, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
