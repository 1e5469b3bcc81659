"""HTTP latency of `galaxalign serve` under bounded concurrent load on 127.0.0.1.

    python bench/bench_serve.py [--requests 10000] [--concurrency 20] [--index DIR --checkpoint CKPT]

Without --index it builds a fixture: the embedded rendered survey (``survey.default_survey``,
--galaxies of them) embedded by a tiny random model and indexed exactly. The server runs in a
subprocess (`python -m galaxalign serve`); the load generator is a plain asyncio HTTP/1.1 client
(:class:`HTTPConnection`: one keep-alive connection per concurrent client, ``--concurrency`` of
them, each sending its next request when its last answer is in), run on the same machine as the
server: they share its cores. Every response's status is counted and every 200's body checked
(JSON results of the right length, ranks, the query galaxy not among its own neighbours; PNG
thumbnails); a failed check counts as a client error. The request mix: by-id search (60%; a
quarter of them the second page, ``offset=10``, and a tenth filtered, ``where=class=...``),
thumbnails (15%), text search (10%, from 8 recurring descriptions, as the page's examples recur),
text search with a new description every time (5%: cache misses, batched into shared forward
passes), symbol search (5%) and /api/info (5%). Prints one JSON object: latency p50/p90/p99 (ms)
overall and per request kind, requests/s, status counts.
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
from urllib.parse import quote


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_fixture(root: Path, galaxies: int) -> tuple[Path, Path]:
    import torch

    from galaxalign.datasets import load_catalog
    from galaxalign.inference import load_model, save_pretrained
    from galaxalign.model import GalaxAlignModel
    from galaxalign.search.embed import embed_survey
    from galaxalign.search.build import build_index_from_embeddings
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


class HTTPConnection:
    """One HTTP/1.1 keep-alive connection over asyncio streams: the load generator's client.

    A plain client (request line and headers out; status line, headers and a ``Content-Length`` or
    chunked body back), because a full client library (httpx) costs more CPU per request than the
    server it measures, and on a 2-core machine the two share the cores.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode("ascii") + b"\r\n" + (body or b""))
        try:
            lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                parts = []
                while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    parts.append((await self.reader.readexactly(size + 2))[:size])
                while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                    pass
                data = b"".join(parts)
            else:
                data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def check_body(kind: str, request: dict | None, url: str, headers: dict, data: bytes, galaxies: int) -> str | None:
    """What is wrong with a 200 response's body for its request kind (None: nothing)."""
    if kind == "thumb":
        ok = headers.get("content-type") == "image/png" and data.startswith(b"\x89PNG\r\n\x1a\n")
        return None if ok else "thumbnail is not a PNG"
    try:
        doc = json.loads(data)
    except ValueError:
        return "body is not JSON"
    if kind == "info":
        return None if doc.get("count") == galaxies else f"info count {doc.get('count')} != {galaxies}"
    k = request["k"] if request else 10
    offset = 10 if "offset=10" in url else 0
    results = doc.get("results")
    if not isinstance(results, list) or not 0 < len(results) <= k or doc.get("k") != k or doc.get("offset") != offset:
        return f"bad result list for {url}"
    if [r.get("rank") for r in results] != list(range(offset + 1, offset + len(results) + 1)):
        return f"ranks out of order for {url}"
    if kind == "by_id" and doc["query"]["id"] in {r.get("id") for r in results}:
        return f"the query galaxy is among its own neighbours for {url}"
    return None


async def load(base: str, ids: list[str], n: int, concurrency: int, seed: int):
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
            plan.append(("by_id", "GET", f"/api/search/id/{quote(gid, safe='')}?k=10{extra}", None))
        elif r < 0.75:
            plan.append(("thumb", "GET", f"/api/thumb/{quote(gid, safe='')}.png", None))
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
    host, port = base.removeprefix("http://").rsplit(":", 1)

    async def worker():
        conn = HTTPConnection(host, int(port))
        try:
            for kind, method, url, request in queue:
                body = json.dumps(request).encode() if request is not None else None
                t0 = time.perf_counter()
                try:
                    status, headers, data = await conn.request(method, url, body)
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    errors.append(type(exc).__name__)
                    continue
                latencies.setdefault(kind, []).append(time.perf_counter() - t0)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200 and (problem := check_body(kind, request, url, headers, data, len(ids))):
                    errors.append(problem)
        finally:
            conn.close()

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
            server_cpu0, client_cpu0, load0 = cpu_seconds(server.pid), cpu_seconds(os.getpid()), os.getloadavg()[0]
            latencies, statuses, errors, wall = asyncio.run(load(base, ids, args.requests, args.concurrency, args.seed))
            server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu0, cpu_seconds(os.getpid()) - client_cpu0
            load1 = os.getloadavg()[0]
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
        "load_generator": "asyncio HTTP/1.1 keep-alive client (one connection per concurrent client, every status and body checked) on the same machine as the server (127.0.0.1), sharing its cores",
        "cpu_cores": os.cpu_count(), **pct(everything),
        "requests_per_s": round(len(everything) / wall, 1),
        # CPU per request (user + system, all threads): what the timings cost, whatever else runs
        "server_cpu_ms_per_request": round(server_cpu / len(everything) * 1000, 3),
        "client_cpu_ms_per_request": round(client_cpu / len(everything) * 1000, 3),
        "load_average_1min": [round(load0, 2), round(load1, 2)],  # before, after: the machine is shared
        "by_kind": {kind: pct(vs) for kind, vs in sorted(latencies.items())},
        "statuses": statuses, "server_errors_5xx": server_errors, "client_errors": len(errors),
        "client_error_kinds": sorted(set(errors))[:10],
        "non_2xx": sum(v for k, v in statuses.items() if not k.startswith("2")),
    }
    print(json.dumps(result, indent=2))
    return 1 if server_errors or errors or result["non_2xx"] else 0


if __name__ == "__main__":
    sys.exit(main())
