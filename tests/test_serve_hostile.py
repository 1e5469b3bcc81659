"""The search service against hostile input: crafted files, odd ids, bad JSON, stalled connections
and a bounded fuzz run. Nothing may produce a 5xx, a wrong-but-confident answer or a server path."""
from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from galaxalign.datasets import read_image
from galaxalign.search import query as q

UPLOAD_LIMIT = 300_000


@pytest.fixture(scope="module")
def client(fx):
    from galaxalign.serve import create_app

    app = create_app(fx["index"], max_upload_bytes=UPLOAD_LIMIT, model=fx["loaded_model"])
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@contextlib.contextmanager
def running_server(app, **limits):
    """``app`` under uvicorn (with ``galaxalign serve``'s limits) on a free local port; yields its URL."""
    import uvicorn

    from galaxalign.serve.server import server_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(server_config(app, port=port, **limits))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def image_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def image_bytes_of(array: np.ndarray) -> bytes:
    return image_bytes(Image.fromarray(array))


def upload(client, data: bytes, name: str = "x.png", kind: str = "image", **params):
    return client.post(f"/api/search/{kind}", params=params, files={"file": (name, data, "application/octet-stream")})


def check_error(r, status: int, words: str):
    assert r.status_code == status, r.text
    assert words in r.json()["detail"], r.json()["detail"]


# -- crafted files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 60_000), (1, 20_000_000), (40_000, 2)])
@pytest.mark.parametrize("kind", ["image", "sketch"])
def test_an_extreme_aspect_ratio_is_a_400_naming_the_limit(client, size, kind):
    data = image_bytes(Image.new("1", size))
    assert len(data) < 60_000  # tiny files, all of them
    r = upload(client, data, "strip.png", kind)
    check_error(r, 400, f"strip.png: image is {size[0]}x{size[1]} pixels, an aspect ratio above the limit of 10:1")


def test_a_lone_surrogate_in_a_text_query_is_a_400(client):
    r = client.post("/api/search/text", content=b'{"text": "spiral \\ud800", "k": 3}',
                    headers={"content-type": "application/json"})
    check_error(r, 400, "not a character")
    assert client.post("/api/search/text", json={"text": "spiral", "k": 3}).status_code == 200


def fits_cutout(path, image: np.ndarray, nan_corner: bool = False):
    from astropy.io import fits

    flux = (image.astype(np.float32).transpose(2, 0, 1) / 255.0) ** 2 * 3e-3  # (3, H, W) float flux
    if nan_corner:
        flux[:, :4, :4] = np.nan
    fits.PrimaryHDU(flux).writeto(path)
    return path


@pytest.mark.parametrize("nan_corner", [False, True])
def test_a_fits_upload_searches_exactly_like_the_catalog_reads_the_file(client, fx, tmp_path, nan_corner):
    path = fits_cutout(tmp_path / "cutout.fits", read_image(fx["catalog"].iloc[12]), nan_corner)
    r = upload(client, path.read_bytes(), "cutout.fits", k=5)
    assert r.status_code == 200, r.text
    expected = q.query_image(q.SearchIndex.load(fx["index"]), fx["loaded_model"], read_image(path), 5)
    got = r.json()["results"]
    assert [h["id"] for h in got] == [h.id for h in expected]
    assert [h["score"] for h in got] == pytest.approx([h.score for h in expected], abs=1e-5)


def test_a_16_bit_grey_upload_searches_like_the_catalog_reads_it(client, fx, tmp_path, write_png):
    grey = (read_image(fx["catalog"].iloc[3])[..., 0].astype(np.uint16) * 12)  # 0..3060 of 65535
    path = tmp_path / "g16.png"
    write_png(path, grey, bit_depth=16)
    r = upload(client, path.read_bytes(), "g16.png", k=5)
    expected = q.query_image(q.SearchIndex.load(fx["index"]), fx["loaded_model"], read_image(path), 5)
    assert r.status_code == 200 and [h["id"] for h in r.json()["results"]] == [h.id for h in expected]
    assert read_image(path).mean() < 200  # stretched, not the near-white of a plain 16 -> 8 bit conversion


def test_a_transparent_sketch_searches_like_the_same_sketch_on_black(client):
    """Issue 10, item 4: a white disk on a transparent background is the white disk on black."""
    y, x = np.mgrid[:64, :64] - 31.5
    disk = np.hypot(x, y) < 20
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[disk, 3] = 255
    on_black = np.zeros((64, 64, 3), np.uint8)
    on_black[disk] = 255
    transparent = upload(client, image_bytes(Image.fromarray(rgba, "RGBA")), "icon.png", "sketch", k=8).json()["results"]
    black = upload(client, image_bytes_of(on_black), "black.png", "sketch", k=8).json()["results"]
    assert [(h["id"], round(h["score"], 5)) for h in transparent] == [(h["id"], round(h["score"], 5)) for h in black]


# -- what a client sees ------------------------------------------------------------------------------
def test_no_response_reveals_a_server_path(client, fx):
    root = str(fx["index"].parent)
    responses = [
        client.get("/api/info"),
        client.get("/api/galaxy/survey-4"),
        client.get("/api/catalog", params={"limit": 5}),
        client.get("/api/search/id/survey-4", params={"k": 3}),
        upload(client, image_bytes_of(read_image(fx["catalog"].iloc[4])), "g.png", k=3),
    ]
    for r in responses:
        assert r.status_code == 200 and root not in r.text and "/tmp" not in r.text, r.text
    info = responses[0].json()
    assert info["checkpoint"] == "model" and info["data_source"] == "survey.h5"
    assert responses[1].json()["source"] == "survey.h5#4"
    assert info["limits"] == {"max_upload_bytes": UPLOAD_LIMIT, "max_image_pixels": q.MAX_IMAGE_PIXELS,
                              "max_aspect_ratio": q.MAX_ASPECT_RATIO, "max_text_chars": q.MAX_TEXT_CHARS, "max_k": 100,
                              "max_offset": 1000}


@pytest.mark.parametrize("k", [True, False, "3", 2.0, None, [3]])
def test_k_must_be_a_json_integer(client, k):
    assert client.post("/api/search/text", json={"text": "a spiral", "k": k}).status_code == 422
    assert client.post("/api/search/symbol", json={"answers": ["bar_yes"], "k": k}).status_code == 422


def test_api_docs_load_without_internet(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in page.text and client.get(asset).status_code == 200


def test_a_model_that_cannot_be_loaded_is_503_and_the_server_lives_on(fx, tmp_path, crafted_checkpoint):
    from galaxalign.serve import create_app

    evil, marker = crafted_checkpoint(tmp_path)
    with TestClient(create_app(fx["index"], str(evil)), raise_server_exceptions=False) as c:
        r = c.post("/api/search/text", json={"text": "a spiral"})
        check_error(r, 503, "evil.pt: refused")
        assert str(tmp_path) not in r.text
        assert c.get("/api/search/id/survey-1").status_code == 200  # needs no model
    assert not marker.exists()


# -- a folder catalog: ids are relative paths, with any characters -------------------------------------
@pytest.fixture(scope="module")
def folder_client(tmp_path_factory, fx):
    from galaxalign.datasets import load_catalog
    from galaxalign.inference import load_model
    from galaxalign.search.embed import embed_survey
    from galaxalign.search.build import build_index_from_embeddings
    from galaxalign.serve import create_app

    root = tmp_path_factory.mktemp("folder")
    names = ["barred_spiral/b3.png", "barred_spiral/deep/b 4.png", "round_smooth/odd #1?%&+.png",
             "round_smooth/ü-ñ.png", "loose_spiral/x.png.png", "cigar_smooth/c;1=2.png"]
    for i, name in enumerate(names):
        path = root / "galaxies" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(read_image(fx["catalog"].iloc[i])).save(path)
    model_dir = fx["model"]
    model, taxonomy = load_model(model_dir)
    catalog = load_catalog(root / "galaxies", taxonomy)
    embed_survey(model, catalog, root / "emb", checkpoint=str(model_dir), data_source=str(root / "galaxies"),
                 taxonomy=taxonomy, batch_size=4, shard_size=10, progress=False)
    index = build_index_from_embeddings(root / "emb", root / "index", kind="exact", progress=False)
    # A real server: Starlette's TestClient percent-decodes paths twice, uvicorn (rightly) once.
    with running_server(create_app(index, model=model)) as base, httpx.Client(base_url=base, timeout=30) as c:
        yield c, sorted(names), root


def test_every_folder_catalog_galaxy_can_be_opened_by_its_id(folder_client):
    client, names, root = folder_client
    items = client.get("/api/catalog", params={"limit": 50}).json()["items"]
    assert sorted(i["id"] for i in items) == names
    for item in items:
        galaxy_id = item["id"]
        thumb = client.get(item["thumb_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png", (galaxy_id, thumb.text)
        for encoded in (quote(galaxy_id, safe=""), quote(galaxy_id, safe="/")):
            record = client.get(f"/api/galaxy/{encoded}")
            assert record.status_code == 200 and record.json()["id"] == galaxy_id, (galaxy_id, record.text)
            assert str(root) not in record.text
            hits = client.get(f"/api/search/id/{encoded}", params={"k": 3})
            assert hits.status_code == 200 and galaxy_id not in [h["id"] for h in hits.json()["results"]]
        for hit in hits.json()["results"]:
            assert client.get(hit["thumb_url"]).status_code == 200


def test_ids_that_only_look_like_paths_are_still_unknown(folder_client):
    client, _, _ = folder_client
    for attempt in ("barred_spiral/../barred_spiral/b3.png", "/barred_spiral/b3.png", "barred_spiral%2Fb3.png"):
        assert client.get(f"/api/galaxy/{quote(attempt, safe='')}").status_code == 404


# -- stalled connections -----------------------------------------------------------------------------------
@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_connections_that_never_finish_their_headers_are_closed(fx, http):
    from galaxalign.serve import create_app

    if http == "httptools":
        pytest.importorskip("httptools")
    app = create_app(fx["index"], model=fx["loaded_model"])
    with running_server(app, header_timeout_s=0.5, max_connections=64, http=http) as base:
        port = int(base.rsplit(":", 1)[1])
        stalled = []
        for i in range(20):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:
                sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            stalled.append(sock)
        time.sleep(1.5)
        for sock in stalled:
            assert sock.recv(1024) == b""  # closed by the server
            sock.close()
        with httpx.Client(base_url=base, timeout=10) as c:  # keep-alive: two requests on one connection
            assert c.get("/api/info").status_code == 200
            time.sleep(0.2)
            assert c.get("/api/search/id/survey-1").status_code == 200


# -- bounded fuzz ------------------------------------------------------------------------------------------
FORMAT_MODES = {
    "PNG": ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["P", "L"],
    "TIFF": ["1", "L", "RGB", "RGBA", "F", "I", "I;16", "CMYK"],
    "WEBP": ["RGB", "RGBA"],
    "BMP": ["1", "L", "P", "RGB"],
}


def random_picture(rng) -> bytes:
    fmt = str(rng.choice(list(FORMAT_MODES)))
    mode = str(rng.choice(FORMAT_MODES[fmt]))
    if rng.random() < 0.15:
        w, h = (1, int(rng.integers(11, 5000))) if rng.random() < 0.5 else (int(rng.integers(11, 5000)), 1)
    else:
        w, h = (int(v) for v in np.exp(rng.uniform(0, np.log(300), 2)).astype(int) + 1)
    if mode == "F":
        arr = rng.normal(0, 1e3, (h, w)).astype(np.float32)
        arr[rng.random((h, w)) < 0.05] = np.nan
        img = Image.fromarray(arr, "F")
    elif mode in ("I;16", "I"):
        img = Image.fromarray(rng.integers(0, 65535, (h, w)).astype(np.uint16)).convert(mode)
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").convert(mode)
    kw = {"transparency": 0} if mode == "P" and rng.random() < 0.5 and fmt in ("PNG", "GIF") else {}
    try:
        return image_bytes(img, fmt, **kw)
    except (OSError, ValueError, KeyError):  # a mode this Pillow cannot write in this format
        return image_bytes(img.convert("RGB"), "PNG")


def random_fits(rng) -> bytes:
    from astropy.io import fits

    shape = [int(n) for n in rng.integers(1, 40, int(rng.integers(1, 5)))]
    dtype = rng.choice([np.uint8, np.int16, np.int32, np.float32, np.float64])
    data = (rng.normal(0, 100, shape)).astype(dtype)
    buf = io.BytesIO()
    fits.PrimaryHDU(data).writeto(buf)
    return buf.getvalue()


def random_upload(rng) -> bytes:
    kind = int(rng.integers(7))
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 3000)))
    if kind == 1:
        return random_picture(rng)
    if kind == 2:
        data = random_picture(rng)
        return data[: int(rng.integers(0, len(data)))]
    if kind == 3:
        data = bytearray(random_picture(rng))
        for i in rng.integers(0, len(data), 8):
            data[int(i)] = int(rng.integers(256))
        return bytes(data)
    if kind == 4:
        return b"\x89PNG\r\n\x1a\n" + rng.bytes(int(rng.integers(0, 500)))
    if kind == 5:
        data = random_fits(rng)
        return data if rng.random() < 0.7 else data[: int(rng.integers(0, len(data)))]
    return b"SIMPLE  =" + rng.bytes(int(rng.integers(0, 3000)))


def random_text(rng, n: int | None = None) -> str:
    n = int(rng.integers(0, 40)) if n is None else n
    pools = [(32, 127), (0, 32), (0xA0, 0x3000), (0xD800, 0xE000), (0x1F300, 0x1F600)]
    out = []
    for _ in range(n):
        lo, hi = pools[int(rng.integers(len(pools)))]
        out.append(chr(int(rng.integers(lo, hi))))
    return "".join(out)


def sendable(text: str) -> str:
    """``text`` without lone surrogates (which no HTTP client can put in a URL or a form field)."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def random_json(rng, depth: int = 0):
    kind = int(rng.integers(8 if depth < 3 else 5))
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(2))
    if kind == 2:
        return int(rng.integers(-10**6, 10**6)) if rng.random() < 0.8 else int(rng.integers(0, 2**62)) * 10**20
    if kind == 3:
        return float(rng.normal(0, 1e6))
    if kind == 4:
        return random_text(rng)
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))]
    keys = ["text", "k", "answers", random_text(rng, 3)]
    return {str(rng.choice(keys)): random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))}


def test_fuzzed_uploads_queries_and_json_never_give_a_5xx(client, fx):
    rng = np.random.default_rng(20261201)
    answers = ["smooth-or-featured_smooth", "bar_yes", "bar_no", "how-rounded_round", "nope", ""]
    statuses: dict[int, int] = {}
    failures = []
    t0 = time.time()
    n = 0
    while time.time() - t0 < 12 and n < 1200:
        n += 1
        kind = n % 6
        if kind in (0, 1):
            data = random_upload(rng)
            k = "5" if rng.random() < 0.7 else rng.choice(["0", "-1", "101", "abc", "1e3", "true", ""])
            endpoint = f"/api/search/{'image' if kind == 0 else 'sketch'}"
            if rng.random() < 0.15:  # a malformed multipart body
                boundary = str(rng.choice(["xyz", "", "a" * 80]))
                r = client.post(endpoint, content=b"--xyz\r\n" + data[:300],
                                headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            else:
                r = client.post(endpoint, params={"k": str(k)},
                                files={"file": (sendable(random_text(rng, 6)) or "f", data, "image/png")})
        elif kind == 2:
            body = random_json(rng)
            if rng.random() < 0.5:
                body = {"text": random_text(rng) if rng.random() < 0.8 else random_json(rng),
                        "k": int(rng.integers(-3, 120)) if rng.random() < 0.3 else 5 if rng.random() < 0.6 else random_json(rng)}
            content = json.dumps(body).encode() if rng.random() < 0.9 else rng.bytes(int(rng.integers(0, 200)))
            if rng.random() < 0.1:  # Python's JSON parser takes these; a response must still encode
                content = json.dumps({"text": "x", "k": float(rng.choice([np.nan, np.inf, -np.inf]))}).encode()
            r = client.post("/api/search/text", content=content, headers={"content-type": "application/json"})
        elif kind == 3:
            body = {"answers": [str(rng.choice(answers)) for _ in range(int(rng.integers(0, 5)))],
                    "k": int(rng.integers(-3, 120)) if rng.random() < 0.3 else 5} if rng.random() < 0.6 else random_json(rng)
            r = client.post("/api/search/symbol", content=json.dumps(body).encode(),
                            headers={"content-type": "application/json"})
        elif kind == 4:
            galaxy_id = sendable(random_text(rng))
            path = str(rng.choice(["/api/search/id/", "/api/galaxy/", "/api/thumb/"]))
            r = client.get(path + quote(galaxy_id, safe="") + (".png" if path.endswith("thumb/") else ""),
                           params={"k": str(rng.integers(-2, 150)) if rng.random() < 0.3 else "5"})
        else:
            params = {"offset": str(rng.integers(-5, 10**12)), "limit": str(rng.integers(-5, 300)),
                      "label": str(rng.integers(-3, 12)), "random": str(rng.choice(["true", "false", "maybe"])),
                      "seed": str(rng.integers(-10**9, 10**9))}
            if rng.random() < 0.5:
                r = client.get("/api/catalog", params=params)
            else:
                r = client.get("/api/symbol.png", params={"answers": ",".join(rng.choice(answers, 3)),
                                                          "size": str(rng.integers(0, 600))})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if r.status_code >= 500:
            failures.append((kind, r.status_code, r.text[:300]))
    print(f"fuzz: {n} requests in {time.time() - t0:.1f} s, statuses {dict(sorted(statuses.items()))}")
    assert not failures, failures[:5]
    assert n >= 100 and statuses.get(200, 0) > 0 and sum(v for s, v in statuses.items() if 400 <= s < 500) > 0
    # ... and the server is alive and right afterwards.
    assert client.get("/api/info").status_code == 200
    r = upload(client, image_bytes_of(read_image(fx["catalog"].iloc[9])), "g9.png", k=1)
    assert r.status_code == 200 and r.json()["results"][0]["id"] == "survey-9"
