"""The service's caches: rendered PNG bytes and search JSON (:class:`LRU`), and whole HTTP responses
of repeated searches and thumbnails (:class:`ResponseCache` over :class:`HTTPCache`)."""
from __future__ import annotations

import threading
from collections import OrderedDict

CACHE_ITEMS = 4096
# OUR CHOICE: the rendered JSON of the last 4,096 distinct searches (by id, text, symbols; a few
# KB each) is kept and served again while the index is unchanged (SearchIndex.generation).
RESPONSE_CACHE_ITEMS = 4096
# OUR CHOICE: up to 64 MB of whole HTTP responses (searches and thumbnails), keyed by the raw request.
HTTP_CACHE_BYTES = 64 * 1024 * 1024
HTTP_CACHE_MAX_BODY = 64 * 1024  # requests with bigger bodies (uploads) are never cached
CACHED_ROUTES = (("GET", "/api/search/id/"), ("GET", "/api/thumb/"), ("POST", "/api/search/text"),
                 ("POST", "/api/search/symbol"))


class LRU:
    """A small thread-safe LRU of rendered PNG bytes (thumbnails, icons)."""

    def __init__(self, size: int):
        self.size, self.data, self.lock = size, OrderedDict(), threading.Lock()

    def peek(self, key):
        """The cached value (now most recently used) or None."""
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def get(self, key, make):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()
        with self.lock:
            self.data[key] = value
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value


class ResponseCache:
    """ASGI middleware: a repeated request for a search or a thumbnail is answered from memory.

    A request is cached only when it is one of :data:`CACHED_ROUTES`, its body (if any) is small
    and the app answered it with a complete 200; the key is the raw request (method, path, query
    string, content type, body) and the index's ``generation``, so adding or removing galaxies
    (which bumps it) retires every stored answer. A hit skips routing, validation and the
    endpoint: the bytes are exactly what the app sent for that request before. Least recently
    used entries are dropped beyond ``max_bytes``.
    """

    def __init__(self, app, searcher):  # searcher: serve.searcher.Searcher (its index and http_cache)
        self.app, self.searcher, self.store = app, searcher, searcher.http_cache

    async def __call__(self, scope, receive, send):
        method, path = scope.get("method"), scope.get("path", "")
        if scope["type"] != "http" or not any(method == m and path.startswith(p) for m, p in CACHED_ROUTES):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        body = b""
        if method == "POST":
            try:
                declared = int(headers.get(b"content-length", b"-1"))
            except ValueError:
                declared = -1
            if not 0 <= declared <= HTTP_CACHE_MAX_BODY:  # chunked or large: not cached
                return await self.app(scope, receive, send)
            chunks = []
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
        key = (self.searcher.index.generation, method, scope.get("raw_path") or path.encode(),
               scope.get("query_string", b""), headers.get(b"content-type"), body)
        entry = self.store.get(key)
        if entry is not None:
            await send({"type": "http.response.start", "status": 200, "headers": entry[0]})
            await send({"type": "http.response.body", "body": entry[1]})
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if method == "POST" and not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        start, parts = None, []

        async def capture(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start is not None and start["status"] == 200:
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self.store.put(key, list(start.get("headers", [])), b"".join(parts))
            await send(message)

        await self.app(scope, replay, capture)


class HTTPCache:
    """The stored responses of :class:`ResponseCache`: an LRU bounded in bytes (used on the event
    loop only, so it needs no lock)."""

    def __init__(self, max_bytes: int = HTTP_CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self.data: OrderedDict[tuple, tuple[list, bytes, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, key: tuple) -> tuple[list, bytes, int] | None:
        entry = self.data.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.data.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: tuple, headers: list, body: bytes) -> None:
        size = len(body) + sum(len(k) + len(v) for k, v in headers) + sum(len(x) for x in key[2:] if x)
        if size > self.max_bytes // 16:
            return
        old = self.data.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        self.data[key] = (headers, body, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, _, dropped) = self.data.popitem(last=False)
            self.bytes -= dropped

    def stats(self) -> dict:
        return {"items": len(self.data), "bytes": self.bytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses}
