"""The search service against hostile input: crafted files, odd ids, bad JSON, stalled, slow and
oversized connections, decompression bombs, a broken model. Nothing may produce a 5xx, a
wrong-but-confident answer or a server path. (Generated fuzzing: tests/test_fuzz_serve.py.)"""
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
    assert info["limits"] == {"max_upload_bytes": UPLOAD_LIMIT, "max_image_pixels": UPLOAD_LIMIT,
                              "max_gunzip_bytes": 8 * UPLOAD_LIMIT, "max_concurrent_decodes": 2,
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


def test_a_head_over_the_header_limit_is_431_and_costs_no_buffer(fx):
    from galaxalign.serve import create_app

    app = create_app(fx["index"], model=fx["loaded_model"])
    with running_server(app, max_header_bytes=8192) as base:
        with httpx.Client(base_url=base, timeout=10) as c:
            assert c.get("/api/info", headers={"X-Note": "a" * 7000}).status_code == 200
            r = c.get("/api/info", headers={"X-Note": "a" * 9000})
            assert r.status_code == 431 and "8192 bytes" in r.json()["detail"]
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # a head that never ends
            sock.sendall(b"GET /api/info HTTP/1.1\r\nHost: x\r\n")
            with contextlib.suppress(OSError):
                for _ in range(64):
                    sock.sendall(b"X-Pad: " + b"b" * 1000 + b"\r\n")
            assert b"431" in sock.recv(1024)
        with httpx.Client(base_url=base, timeout=10) as c:
            assert c.get("/api/info").status_code == 200


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_body_trickling_in_is_cut_and_the_server_serves_others(fx, http):
    from galaxalign.serve import create_app

    if http == "httptools":
        pytest.importorskip("httptools")
    app = create_app(fx["index"], model=fx["loaded_model"])
    with running_server(app, http=http, body_grace_s=1.0, min_body_rate=1000, max_connections=16) as base:
        port = int(base.rsplit(":", 1)[1])
        slow = []
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", port), timeout=6)
            sock.sendall(b"POST /api/search/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n{")
            slow.append(sock)
        t0 = time.time()
        for _ in range(3):  # 1 byte a second
            time.sleep(1.0)
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")
        for sock in slow:
            reply = sock.recv(4096)
            assert reply == b"" or reply.startswith(b"HTTP/1.1 408"), reply[:200]
            sock.close()
        assert time.time() - t0 < 6
        with httpx.Client(base_url=base, timeout=10) as c:  # an honest upload at full speed still works
            assert c.post("/api/search/text", json={"text": "a spiral", "k": 2}).status_code == 200


def gzipped_fits_bomb(side: int) -> bytes:
    """A gzipped float64 FITS image of side x side zeros: a few hundred KB that expand 1000-fold."""
    import gzip

    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros((side, side), np.float64)).writeto(buf)
    return gzip.compress(buf.getvalue(), 9)


def test_decoding_works_within_a_budget_proportional_to_the_upload_limit(client):
    info = client.get("/api/info").json()["limits"]
    assert info["max_image_pixels"] == UPLOAD_LIMIT and info["max_gunzip_bytes"] == 8 * UPLOAD_LIMIT
    bomb = gzipped_fits_bomb(1000)  # 8 MB of FITS in a few KB
    assert len(bomb) < UPLOAD_LIMIT
    check_error(upload(client, bomb, "bomb.fits.gz"), 400, f"expands past {8 * UPLOAD_LIMIT} bytes")
    big = image_bytes(Image.new("L", (1000, 1000)))  # a 1-megapixel PNG of a few KB
    check_error(upload(client, big, "big.png"), 400, f"above the limit of {UPLOAD_LIMIT} pixels")
    small = gzipped_fits_bomb(64)  # within the budget: decoded and searched
    assert upload(client, small, "small.fits.gz", k=2).status_code == 200


def test_limits_are_checked_when_the_app_is_made():
    from galaxalign.serve import create_app
    from galaxalign.serve.server import server_config

    with pytest.raises(ValueError, match="max_concurrent_decodes"):
        create_app("nowhere", max_concurrent_decodes=0)
    with pytest.raises(ValueError, match="min_body_rate"):
        server_config(None, min_body_rate=-1)


@pytest.mark.parametrize("text", ["\u200b\u200b", "\x00\x00", "\u200b \x00\u2060\ufeff"])
def test_text_of_only_invisible_characters_is_a_400(client, text):
    check_error(client.post("/api/search/text", json={"text": text, "k": 3}), 400, "no visible character")


@pytest.fixture(scope="module")
def nan_client(fx):
    """The service with a model whose every weight is NaN (a diverged run)."""
    import torch

    from galaxalign.model import GalaxAlignModel
    from galaxalign.serve import create_app

    model = GalaxAlignModel.from_config({"backbone": {"kind": "tiny", "seed": 0}, "symbol_encoder_shared": False})
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with TestClient(create_app(fx["index"], model=model.eval()), raise_server_exceptions=False) as c:
        yield c


def test_a_model_that_outputs_nan_is_a_clear_4xx_for_every_query_it_embeds(nan_client, fx):
    responses = {
        "text": nan_client.post("/api/search/text", json={"text": "a spiral", "k": 3}),
        "symbol": nan_client.post("/api/search/symbol", json={"answers": ["smooth-or-featured_smooth"], "k": 3}),
        "features": nan_client.get("/api/search/features", params={"answers": "bar_yes", "k": 3}),
        "image": upload(nan_client, image_bytes_of(read_image(fx["catalog"].iloc[2])), "g.png", k=3),
        "sketch": upload(nan_client, image_bytes_of(read_image(fx["catalog"].iloc[2])), "g.png", "sketch", k=3),
    }
    for name, r in responses.items():
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert "NaN or infinite values" in r.json()["detail"][0]["msg"], (name, r.text)
    assert nan_client.get("/api/search/id/survey-2", params={"k": 3}).status_code == 200  # stored vectors: fine
