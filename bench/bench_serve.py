"""HTTP latency of `galaxalign serve` under bounded concurrent load on 127.0.0.1.

    python bench/bench_serve.py [--requests 10000] [--concurrency 50] [--index DIR --checkpoint CKPT]

Without --index it builds a fixture: the embedded rendered survey (``survey.default_survey``,
--galaxies of them) embedded by a tiny random model and indexed exactly. The server runs in a
subprocess (`python -m galaxalign serve`); the client is httpx async with ``--concurrency``
connections. The request mix is by-id search (70%), thumbnails (15%), text search (10%) and
/api/info (5%). Prints one JSON object: p50/p90/p99 latency (ms), requests/s, status counts.
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
    texts = ["a barred spiral galaxy", "a smooth round galaxy", "an edge-on disk", "two merging galaxies"]
    plan = []
    for _ in range(n):
        r = rng.random()
        gid = rng.choice(ids)
        if r < 0.70:
            plan.append(("GET", f"/api/search/id/{gid}?k=10", None))
        elif r < 0.85:
            plan.append(("GET", f"/api/thumb/{gid}.png", None))
        elif r < 0.95:
            plan.append(("POST", "/api/search/text", {"text": rng.choice(texts), "k": 10}))
        else:
            plan.append(("GET", "/api/info", None))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    queue = iter(plan)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        async def worker():
            for method, url, body in queue:
                t0 = time.perf_counter()
                try:
                    r = await client.request(method, url, json=body)
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, statuses, errors, wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=50)
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
    ms = np.asarray(latencies) * 1000
    server_errors = sum(v for k, v in statuses.items() if k.startswith("5"))
    result = {
        "requests": args.requests, "concurrency": args.concurrency, "galaxies": len(ids),
        "p50_ms": round(float(np.percentile(ms, 50)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1),
        "requests_per_s": round(len(ms) / wall, 1), "statuses": statuses, "server_errors_5xx": server_errors,
        "client_errors": len(errors),
    }
    print(json.dumps(result, indent=2))
    return 1 if server_errors or errors else 0


if __name__ == "__main__":
    sys.exit(main())
