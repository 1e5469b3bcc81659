"""Service at load: query-embedding cache, batched model calls, pagination and filters over HTTP."""
from __future__ import annotations

import threading
import time
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient

from galaxalign.serve.embedding_cache import EmbeddingCache, MicroBatcher

# ``fx`` (survey, model, embeddings, exact index) comes from conftest.py


@pytest.fixture(scope="module")
def app(fx):
    from galaxalign.serve import create_app

    return create_app(fx["index"], model=fx["loaded_model"])


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def test_batcher_runs_concurrent_requests_as_one_batch():
    calls = []

    def double(items):
        calls.append(list(items))
        time.sleep(0.05)  # a slow "forward pass": others arrive meanwhile
        return [2 * i for i in items]

    batcher = MicroBatcher(double, max_batch=8, window_s=0.01)
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher(i))) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: 2 * i for i in range(20)}
    assert sum(len(c) for c in calls) == 20 and len(calls) <= 5 and max(len(c) for c in calls) == 8


def test_batcher_passes_errors_to_every_waiter_and_recovers():
    batcher = MicroBatcher(lambda items: [1 / i for i in items], window_s=0)
    with pytest.raises(ZeroDivisionError):
        batcher(0)
    assert batcher(4) == 0.25


def test_cache_computes_each_key_once():
    cache, computed = EmbeddingCache(size=2), []
    make = lambda key: (lambda: computed.append(key) or np.full(3, len(computed), np.float32))  # noqa: E731
    a = cache.get("a", make("a"))
    assert cache.get("a", make("a")) is a and computed == ["a"]
    cache.get("b", make("b"))
    cache.get("c", make("c"))  # evicts a (least recently used)
    cache.get("a", make("a"))
    assert computed == ["a", "b", "c", "a"] and cache.stats()["hits"] == 1
    with pytest.raises(ValueError):
        a[0] = 5  # shared vectors are read-only


def test_repeated_text_and_symbol_queries_skip_the_model(client, app, fx, monkeypatch):
    from galaxalign.search import query as q

    calls = []
    real = q.embed_texts
    monkeypatch.setattr(q, "embed_texts", lambda model, texts: calls.append(list(texts)) or real(model, texts))
    first = client.post("/api/search/text", json={"text": "  a cached spiral galaxy ", "k": 5}).json()
    again = client.post("/api/search/text", json={"text": "a cached spiral galaxy", "k": 5}).json()
    assert calls == [["a cached spiral galaxy"]]  # stripped text is the key: one forward pass
    assert [r["id"] for r in first["results"]] == [r["id"] for r in again["results"]]
    expected = q.query_text(app.state.searcher.index, fx["loaded_model"], "a cached spiral galaxy", 5)
    assert [r["id"] for r in first["results"]] == [h.id for h in expected]
    body = {"answers": ["smooth-or-featured_smooth"], "k": 3}
    before = app.state.searcher.query_vectors.stats()["misses"]
    client.post("/api/search/symbol", json=body)
    client.post("/api/search/symbol", json=body)
    assert app.state.searcher.query_vectors.stats()["misses"] == before + 1


def test_offset_pages_through_results(client, fx):
    gid = str(fx["catalog"].iloc[3]["id"])
    full = client.get(f"/api/search/id/{gid}", params={"k": 20}).json()["results"]
    page = client.get(f"/api/search/id/{gid}", params={"k": 10, "offset": 10}).json()
    assert page["offset"] == 10 and [r["id"] for r in page["results"]] == [r["id"] for r in full[10:20]]
    assert page["results"][0]["rank"] == 11
    assert client.get(f"/api/search/id/{gid}", params={"offset": 5000}).status_code == 422


def test_where_filters_results_and_bad_filters_are_400(client, fx):
    gid = str(fx["catalog"].iloc[0]["id"])
    hits = client.get(f"/api/search/id/{gid}", params={"k": 10, "where": "class=3"}).json()["results"]
    assert hits and all(h["label"] == 3 for h in hits)
    text = client.post("/api/search/text", json={"text": "a galaxy", "where": "class=1,2", "k": 5}).json()["results"]
    assert text and all(h["label"] in (1, 2) for h in text)
    bad = client.get(f"/api/search/id/{gid}", params={"where": "nope=1:2"})
    assert bad.status_code == 400 and "unknown column 'nope'" in bad.json()["detail"]


# -- response caches: what a repeated request costs, and that it is never stale ------------------------
def fresh_app(fx):
    """An app over its own copy of the index (tests below change it)."""
    from galaxalign.search.index import SearchIndex
    from galaxalign.serve import create_app

    return create_app(SearchIndex.load(fx["index"]), model=fx["loaded_model"])


def cached_requests(gid: str) -> list[tuple[str, str, dict]]:
    from galaxalign.serve.responses import thumb_url

    return [("GET", f"/api/search/id/{quote(gid, safe='')}", {"params": {"k": 7, "offset": 3}}),
            ("GET", f"/api/search/id/{quote(gid, safe='')}", {"params": {"k": 5, "where": "class=1,2,3"}}),
            ("POST", "/api/search/text", {"json": {"text": "a cached barred spiral", "k": 6, "offset": 2}}),
            ("POST", "/api/search/symbol", {"json": {"answers": ["smooth-or-featured_smooth"], "k": 4}}),
            ("GET", thumb_url(gid), {})]


def test_repeated_requests_come_from_the_cache_byte_for_byte_as_uncached(fx):
    from galaxalign.search import query as q
    from galaxalign.serve.responses import SafeJSONResponse

    gid = str(fx["catalog"].iloc[5]["id"])
    app, uncached = fresh_app(fx), fresh_app(fx)
    uncached.state.searcher.http_cache.max_bytes = 0  # stores nothing
    uncached.state.searcher.responses.size = 0
    with TestClient(app) as c, TestClient(uncached) as u:
        first = [c.request(m, url, **kw) for m, url, kw in cached_requests(gid)]
        stats = app.state.searcher.http_cache.stats()
        again = [c.request(m, url, **kw) for m, url, kw in cached_requests(gid)]
        assert app.state.searcher.http_cache.stats()["hits"] == stats["hits"] + len(again)
        plain = [u.request(m, url, **kw) for m, url, kw in cached_requests(gid)]
        assert uncached.state.searcher.http_cache.stats()["items"] == 0
    for a, b, p in zip(first, again, plain):
        assert a.status_code == b.status_code == p.status_code == 200
        assert a.content == b.content == p.content
        assert a.headers == b.headers == p.headers
    # ... and the bytes are what rendering the search's result gives, ranks continuing after offset
    index = app.state.searcher.index
    expected = app.state.searcher.hits_json(q.query_id(index, gid, 7, offset=3), {"id": gid, "where": None}, 7, 3)
    assert first[0].content == SafeJSONResponse(expected).body
    assert [r["rank"] for r in first[0].json()["results"]] == list(range(4, 11))


def test_cached_answers_are_retired_when_galaxies_are_added_or_removed(fx):
    app = fresh_app(fx)
    index = app.state.searcher.index
    gid = str(fx["catalog"].iloc[2]["id"])
    by_id = f"/api/search/id/{quote(gid, safe='')}"
    text = {"text": "a smooth round galaxy", "k": 5}
    with TestClient(app) as c:
        before = c.get(by_id, params={"k": 5}).json()["results"]
        assert c.get(by_id, params={"k": 5}).json()["results"] == before  # now cached
        text_before = c.post("/api/search/text", json=text).json()["results"]
        # a twin of the galaxy (its own vector, a new id) must become its first neighbour
        twin = index.table.iloc[[index.row_of(gid)]].copy()
        twin["id"] = "twin-" + gid
        generation = index.generation
        index.add(index.vector(gid)[None], twin)
        assert index.generation == generation + 1
        after = c.get(by_id, params={"k": 5}).json()["results"]
        assert after[0]["id"] == "twin-" + gid and [r["id"] for r in after[1:]] == [r["id"] for r in before[:4]]
        # the text query's best hit removed: it is gone from the (formerly cached) answer
        index.remove([text_before[0]["id"]])
        text_after = c.post("/api/search/text", json=text).json()["results"]
        assert text_before[0]["id"] not in {r["id"] for r in text_after}
        assert [r["id"] for r in text_after[:4]] == [r["id"] for r in text_before[1:5]]
        index.remove(["twin-" + gid])
        assert [r["id"] for r in c.get(by_id, params={"k": 5}).json()["results"]] == [r["id"] for r in before]


def test_errors_and_large_bodies_are_never_cached(fx):
    app = fresh_app(fx)
    cache = app.state.searcher.http_cache
    with TestClient(app) as c:
        for _ in range(2):
            assert c.get("/api/search/id/no-such-galaxy").status_code == 404
            assert c.get("/api/search/id/survey-1", params={"where": "nope=1"}).status_code == 400
            assert c.post("/api/search/text", json={"text": "   "}).status_code == 400
            assert c.get("/api/thumb/no-such-galaxy.png").status_code == 404
        assert cache.stats()["items"] == 0
        padded = b'{"text": "a spiral galaxy", "k": 3' + b" " * 70_000 + b"}"  # over the cached body size
        r = c.post("/api/search/text", content=padded, headers={"content-type": "application/json"})
        assert r.status_code == 200 and len(r.json()["results"]) == 3 and cache.stats()["items"] == 0
        assert c.post("/api/search/text", json={"text": "a spiral galaxy", "k": 3}).json() == r.json()


def test_the_response_cache_stays_within_its_byte_budget(fx):
    app = fresh_app(fx)
    cache = app.state.searcher.http_cache
    cache.max_bytes = 40_000
    ids = [str(g) for g in fx["catalog"]["id"][:30]]
    with TestClient(app) as c:
        for gid in ids:
            assert c.get(f"/api/search/id/{quote(gid, safe='')}", params={"k": 10}).status_code == 200
    stats = cache.stats()
    assert 0 < stats["bytes"] <= 40_000 and stats["items"] < len(ids)
    assert c is not None and list(cache.data)[-1][2].endswith(quote(ids[-1], safe="").encode())  # the newest kept


def test_json_rendering_handles_numpy_values_and_non_finite_numbers():
    from galaxalign.serve.responses import render_json

    assert render_json({"a": np.int64(3), "b": np.float32(0.5), "c": float("nan"), "d": "é"}) == \
        b'{"a":3,"b":0.5,"c":null,"d":"\\u00e9"}'


def test_warm_up_loads_the_model_without_filling_the_caches(fx):
    app = fresh_app(fx)
    searcher = app.state.searcher
    assert searcher.warm_up() is fx["loaded_model"]
    assert searcher.query_vectors.stats()["items"] == 0 and searcher.http_cache.stats()["items"] == 0


def test_thumbnail_png_decodes_to_the_exact_pixels():
    import io

    from PIL import Image

    from galaxalign.serve.images import png_bytes as _png

    rng = np.random.default_rng(0)
    for shape in [(128, 128, 3), (37, 90, 3), (1, 1, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        decoded = Image.open(io.BytesIO(_png(image, 128)))
        decoded.load()  # checks every chunk's CRC and the zlib stream
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), image)
    big = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    assert Image.open(io.BytesIO(_png(big, 128))).size == (85, 128)  # shrunk to fit, aspect kept
    grey = Image.open(io.BytesIO(_png(rng.integers(0, 256, (20, 20), dtype=np.uint8), 128)))
    assert grey.mode == "L"


def test_serve_freezes_the_loaded_heap_and_shortens_the_gil_interval(fx, monkeypatch):
    import gc
    import sys

    import uvicorn

    from galaxalign.serve.server import SWITCH_INTERVAL_S, serve

    ran = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: ran.append(gc.get_freeze_count()))
    interval = sys.getswitchinterval()
    try:
        serve(fresh_app(fx), port=0)
        assert ran and ran[0] > 10_000  # the app's objects were frozen before serving
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    finally:
        gc.unfreeze()
        sys.setswitchinterval(interval)
