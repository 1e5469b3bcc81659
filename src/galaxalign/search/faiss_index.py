"""The faiss side of an index: which faiss structure each kind is, its parameters, its search knobs.

Every kind stores galaxies under int64 *keys* (faiss ids), so galaxies can be added and removed
without a rebuild: ``exact`` and ``hnsw`` wrap their storage in ``IndexIDMap2``; IVF indexes keep
ids in their inverted lists (with a hash-table direct map, so a vector can be looked up by key).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

KINDS = ("exact", "hnsw", "ivf", "ivfpq")

# OUR CHOICE of defaults. None = chosen from the data at build time: nlist from N (resolve_params),
# nprobe / ef_search by calibration (galaxalign.search.tuning: the smallest value whose recall@10
# on sampled database vectors reaches target_recall).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "exact": {},
    "hnsw": {"M": 32, "ef_construction": 80, "ef_search": None, "target_recall": 0.98},
    "ivf": {"nlist": None, "nprobe": None, "target_recall": 0.98},
    "ivfpq": {"nlist": None, "nprobe": None, "pq_m": None, "pq_bits": 4, "rerank_factor": 32, "target_recall": 0.98},
}
# the search-time knob calibration tunes, per kind, and its value when calibration is skipped
SEARCH_KNOB = {"hnsw": "ef_search", "ivf": "nprobe", "ivfpq": "nprobe"}
UNCALIBRATED = {"ef_search": 64, "nprobe": 16}


# The type and range of every parameter, checked before faiss sees it (faiss aborts the process on
# some out-of-range values, e.g. HNSW M=0). None (where allowed): chosen from the data.
# OUR CHOICE of upper bounds: far beyond any useful value (faiss's own guides stay under them).
PARAM_RANGES: dict[str, tuple[type, float, float]] = {
    "M": (int, 2, 512),
    "ef_construction": (int, 1, 65536),
    "ef_search": (int, 1, 65536),
    "nlist": (int, 1, 1 << 24),
    "nprobe": (int, 1, 1 << 24),
    "pq_m": (int, 1, 65536),
    "pq_bits": (int, 4, 8),
    "rerank_factor": (int, 1, 4096),
    "target_recall": (float, 1e-6, 1.0),
}


def check_param(name: str, value: Any) -> Any:
    """``value`` if it is a valid setting of index parameter ``name`` (:data:`PARAM_RANGES`), else a
    ValueError saying what is allowed."""
    if value is None or name not in PARAM_RANGES:
        return value
    kind, low, high = PARAM_RANGES[name]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = number and float(value).is_integer() and low <= value <= high
        what = f"an integer from {int(low)} to {int(high)}"
    else:
        ok = number and math.isfinite(value) and low <= value <= high
        what = f"a number in ({0 if low < 1e-3 else low:g}, {high:g}]"
    if not ok:
        raise ValueError(f"index parameter {name}={value!r}: must be {what}")
    return int(value) if kind is int else float(value)


def auto_nlist(kind: str, count: int) -> int:
    """Inverted lists for ``count`` vectors.

    OUR CHOICE: IVF-Flat 4*sqrt(N) (faiss's guideline is 4-16 sqrt(N); more lists scan fewer
    vectors per probe), IVF-PQ sqrt(N) (its 4-bit codes are ~30x cheaper to scan than float
    vectors, so the coarse search over the centroids is the larger cost and fewer lists pay);
    always at least 39 training points per list (faiss's minimum), at most 65,536.
    """
    per = 4.0 if kind == "ivf" else 1.0
    return int(max(1, min(per * math.sqrt(count), count // 39, 65536)))


def resolve_params(kind: str, count: int, dim: int, params: dict | None = None) -> dict:
    """Fill the defaults of ``kind`` that depend on the catalog size and dimension."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {('auto',) + KINDS}")
    p = dict(DEFAULT_PARAMS[kind])
    params = dict(params or {})
    if kind == "ivfpq" and "refine_k_factor" in params:  # the name before rerank_factor
        params["rerank_factor"] = params.pop("refine_k_factor")
    unknown = set(params) - set(p)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for index kind {kind!r}; known: {sorted(p)}")
    p.update({name: check_param(name, value) for name, value in params.items()})
    if kind in ("ivf", "ivfpq"):
        if p["nlist"] is None:
            p["nlist"] = auto_nlist(kind, count)
        p["nlist"] = int(max(1, min(p["nlist"], count)))
        if p["nprobe"] is not None:
            p["nprobe"] = int(max(1, min(p["nprobe"], p["nlist"])))
    if kind == "ivfpq":
        if int(p["pq_bits"]) not in (4, 8):
            raise ValueError(f"ivfpq: pq_bits must be 4 (fast-scan) or 8, got {p['pq_bits']}")
        if p["pq_m"] is None:
            # OUR CHOICE: 1 dimension per 4-bit sub-quantizer (D codes = D/2 bytes: 128 B at D=256),
            # 4 per 8-bit one (D/4 bytes); the short list (k * rerank_factor = 320) is then re-ranked
            # with the exact vectors. Re-ranking reads dominate a query (one random 1 KB read per
            # candidate), so finer codes that need a shorter list win: on bench/bench_index.py's
            # data 2-d codes needed x64 re-ranking and reached recall@10 0.972 at 1M, plateauing
            # there. The price is build time: faiss encodes 1-d sub-quantizers at ~80 us/vector.
            per = 1 if int(p["pq_bits"]) == 4 else 4
            p["pq_m"] = next(m for m in (dim // per, dim // 2, dim, 1) if m >= 1 and dim % m == 0)
        if dim % int(p["pq_m"]):
            raise ValueError(f"ivfpq: pq_m={p['pq_m']} must divide the dimension {dim}")
    return p


def empty_index(kind: str, dim: int, params: dict):
    """An untrained faiss inner-product index of ``kind`` that takes ``add_with_ids``."""
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "exact":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, int(params["M"]), ip)
        inner.hnsw.efConstruction = int(params["ef_construction"])
        return faiss.IndexIDMap2(inner)
    quantizer = faiss.IndexFlatIP(dim)
    nlist = int(params["nlist"])
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    elif int(params["pq_bits"]) == 4:
        index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, int(params["pq_m"]), 4, ip)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, int(params["pq_m"]), 8, ip)
    index.own_fields = True
    quantizer.this.disown()  # the IVF index now owns (and frees) its quantizer
    if kind == "ivf":
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct(key) after adds/removals
    return index


def train_index(index, kind: str, vectors: np.ndarray, params: dict, seed: int = 0) -> None:
    """Train IVF indexes (k-means, and the PQ codebooks) on a sample of ``vectors``."""
    if kind not in ("ivf", "ivfpq"):
        return
    n = len(vectors)
    # OUR CHOICE: k-means on 64 points per list (faiss asks for >= 39): stable centroids, and
    # training stays a minute, not an hour, at 10M vectors.
    n_train = min(n, 64 * int(params["nlist"]))
    if kind == "ivfpq":
        n_train = min(n, max(n_train, 2 ** int(params["pq_bits"]) * 64))
        if n < 2 ** int(params["pq_bits"]):
            raise ValueError(f"ivfpq needs at least {2 ** int(params['pq_bits'])} vectors to train, got {n}; use --kind exact")
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n_train >= n else np.sort(rng.choice(n, n_train, replace=False))
    train = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    index.cp.seed = seed
    index.train(train)


def add_in_chunks(index, vectors: np.ndarray, keys: np.ndarray, progress: bool = False, chunk: int = 65536) -> None:
    """``add_with_ids`` in chunks (a memory-mapped input is read a chunk at a time)."""
    from tqdm.auto import tqdm

    with tqdm(total=len(vectors), desc="index", unit="vec", disable=not progress) as bar:
        for start in range(0, len(vectors), chunk):
            part = np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32)
            index.add_with_ids(part, np.ascontiguousarray(keys[start : start + chunk], dtype=np.int64))
            bar.update(len(part))


def ivf_parts(index) -> list:
    """The IVF index(es) inside ``index`` (one per shard of an ``IndexShards``)."""
    import faiss

    if isinstance(index, faiss.IndexShards):
        return [ivf for i in range(index.count()) for ivf in ivf_parts(faiss.downcast_index(index.at(i)))]
    try:
        return [faiss.extract_index_ivf(index)]
    except RuntimeError:
        return []


def hnsw_part(index):
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def set_search_params(index, kind: str, params: dict) -> None:
    """Apply the search knobs of ``params`` (nprobe, ef_search, k_factor) to a loaded index."""
    import faiss

    if kind == "hnsw":
        h = hnsw_part(index)
        if h is not None:
            h.hnsw.efSearch = int(params.get("ef_search") or UNCALIBRATED["ef_search"])
    elif kind in ("ivf", "ivfpq"):
        for ivf in ivf_parts(index):
            ivf.nprobe = int(max(1, min(int(params.get("nprobe") or UNCALIBRATED["nprobe"]), ivf.nlist)))
        if isinstance(index, faiss.IndexRefine):  # indexes built before the memory-mapped store
            index.k_factor = float(params.get("rerank_factor") or params.get("refine_k_factor") or 1)


def search_parameters(index, kind: str, params: dict, selector=None, widen: float = 1.0):
    """faiss SearchParameters carrying ``selector``; the probe width grows by ``widen`` (>= 1) so a
    selective filter still finds k matches in the lists it scans (OUR CHOICE: nprobe / ef_search
    times 1 / selectivity, capped at nlist / 4096)."""
    import faiss

    if kind in ("ivf", "ivfpq") and ivf_parts(index):
        nlist = ivf_parts(index)[0].nlist
        nprobe = int(params.get("nprobe") or UNCALIBRATED["nprobe"])
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(min(nlist, math.ceil(nprobe * widen))))
    if kind == "hnsw" and hnsw_part(index) is not None:
        ef = int(params.get("ef_search") or UNCALIBRATED["ef_search"])
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(min(4096, math.ceil(ef * widen))))
    return faiss.SearchParameters(sel=selector)
