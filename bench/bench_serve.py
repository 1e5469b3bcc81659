"""HTTP latency of `galaxalign serve` under bounded concurrent load on 127.0.0.1.

    python bench/bench_serve.py [--requests 10000] [--concurrency 20] [--index DIR --checkpoint CKPT]

Without --index it builds a fixture: the embedded rendered survey (``survey.default_survey``,
--galaxies of them) embedded by a tiny random model and indexed exactly. The server runs in a
subprocess (`python -m galaxalign serve`); the client is httpx async with ``--concurrency``
connections, run on the same machine as the server (they share its cores: on a 2-core machine
the load generator takes a good part of one). The request mix: by-id search (60%; a quarter of
them the second page, ``offset=10``, and a tenth filtered, ``where=class=...``), thumbnails (15%),
text search (10%, from 8 recurring descriptions, as the page's examples recur), text search with
a new description every time (5%: cache misses, batched into shared forward passes), symbol search
(5%) and /api/info (5%). Prints one JSON object: latency p50/p90/p99 (ms) overall and per request
kind, requests/s, status counts.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_fixture(root: Path, galaxies: int) -> tuple[Path, Path]:
    import torch

    from galaxalign.datasets import load_catalog
    from galaxalign.inference import load_model, save_pretrained
    from galaxalign.model import GalaxAlignModel
    from galaxalign.search.embed import embed_survey
    from galaxalign.search.index import build_index_from_embeddings
    from galaxalign.survey import default_survey
    from galaxalign.taxonomy import load_taxonomy

    torch.manual_seed(0)
    tax = load_taxonomy("galaxy10_decals")
    ckpt = save_pretrained(GalaxAlignModel.from_config({"backbone": {"kind": "tiny", "seed": 0}}), tax, root / "model")
    model, tax = load_model(ckpt)
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
        survey = default_survey(num=galaxies, size=128, seed=0)
    catalog = load_catalog(survey)
    embed_survey(model, catalog, root / "emb", checkpoint=str(ckpt), data_source=str(survey), taxonomy=tax, progress=False)
    return build_index_from_embeddings(root / "emb", root / "index", progress=False), ckpt


async def load(base: str, ids: list[str], n: int, concurrency: int, seed: int):
    import httpx

    rng = random.Random(seed)
    texts = ["a barred spiral galaxy", "a smooth round galaxy", "an edge-on disk", "two merging galaxies",
             "a cigar-shaped elliptical", "a spiral with loose arms", "a galaxy with a bulge", "a ring galaxy"]
    symbols = [["smooth-or-featured_smooth"], ["smooth-or-featured_featured-or-disk", "disk-edge-on_yes"],
               ["smooth-or-featured_featured-or-disk", "disk-edge-on_no", "bar_yes"]]
    plan = []
    for i in range(n):
        r = rng.random()
        gid = rng.choice(ids)
        if r < 0.60:
            extra = "&offset=10" if rng.random() < 0.25 else ("&where=class=" + str(rng.randrange(10)) if rng.random() < 0.13 else "")
            plan.append(("by_id", "GET", f"/api/search/id/{gid}?k=10{extra}", None))
        elif r < 0.75:
            plan.append(("thumb", "GET", f"/api/thumb/{gid}.png", None))
        elif r < 0.85:
            plan.append(("text", "POST", "/api/search/text", {"text": rng.choice(texts), "k": 10}))
        elif r < 0.90:
            plan.append(("text_new", "POST", "/api/search/text", {"text": f"galaxy number {i} with {rng.random():.6f} arms", "k": 10}))
        elif r < 0.95:
            plan.append(("symbol", "POST", "/api/search/symbol", {"answers": rng.choice(symbols), "k": 10}))
        else:
            plan.append(("info", "GET", "/api/info", None))
    latencies: dict[str, list[float]] = {}
    statuses: dict[str, int] = {}
    errors: list[str] = []
    queue = iter(plan)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        async def worker():
            for kind, method, url, body in queue:
                t0 = time.perf_counter()
                try:
                    r = await client.request(method, url, json=body)
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                latencies.setdefault(kind, []).append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, statuses, errors, wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--galaxies", type=int, default=512, help="fixture survey size (without --index)")
    ap.add_argument("--index")
    ap.add_argument("--checkpoint")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import numpy as np

    from galaxalign.search.index import SearchIndex

    with tempfile.TemporaryDirectory() as tmp:
        if args.index:
            index_dir, ckpt = Path(args.index), args.checkpoint
        else:
            index_dir, ckpt = build_fixture(Path(tmp), args.galaxies)
        ids = SearchIndex.load(index_dir).table["id"].astype(str).tolist()
        port = free_port()
        cmd = [sys.executable, "-m", "galaxalign", "serve", "--index", str(index_dir), "--port", str(port)]
        if ckpt:
            cmd += ["--checkpoint", str(ckpt)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            import httpx

            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"server exited: {server.stderr.read().decode()[-2000:]}")
                try:
                    if httpx.get(base + "/api/info", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not come up in 120 s")
                time.sleep(0.2)
            httpx.post(base + "/api/search/text", json={"text": "warm-up"}, timeout=60)  # loads the model
            print(f"serving {len(ids)} galaxies; {args.requests} requests, {args.concurrency} concurrent", file=sys.stderr)
            latencies, statuses, errors, wall = asyncio.run(load(base, ids, args.requests, args.concurrency, args.seed))
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
    def pct(values) -> dict:
        ms = np.asarray(values) * 1000
        return {"count": int(len(ms)), "p50_ms": round(float(np.percentile(ms, 50)), 1),
                "p90_ms": round(float(np.percentile(ms, 90)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
                "max_ms": round(float(ms.max()), 1)}

    everything = [v for vs in latencies.values() for v in vs]
    server_errors = sum(v for k, v in statuses.items() if k.startswith("5"))
    result = {
        "requests": args.requests, "concurrency": args.concurrency, "galaxies": len(ids),
        "load_generator": "httpx async client on the same machine as the server (127.0.0.1), sharing its cores",
        "cpu_cores": os.cpu_count(), **pct(everything),
        "requests_per_s": round(len(everything) / wall, 1),
        "by_kind": {kind: pct(vs) for kind, vs in sorted(latencies.items())},
        "statuses": statuses, "server_errors_5xx": server_errors, "client_errors": len(errors),
        "non_2xx": sum(v for k, v in statuses.items() if not k.startswith("2")),
    }
    print(json.dumps(result, indent=2))
    return 1 if server_errors or errors else 0


if __name__ == "__main__":
    sys.exit(main())
