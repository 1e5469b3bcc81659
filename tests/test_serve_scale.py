"""Service at load: query-embedding cache, batched model calls, pagination and filters over HTTP."""
from __future__ import annotations

import threading
import time

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
