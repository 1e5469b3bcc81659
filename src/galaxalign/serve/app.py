"""FastAPI app over a search index: JSON API (OpenAPI at /docs) and the web page at /.

The service is a thin shell over :mod:`galaxalign.search`: every endpoint validates its input,
calls one query function and returns JSON. User mistakes become a 4xx with a JSON ``detail`` that
says what is wrong; the server keeps serving. Thumbnails are read only from the indexed catalog,
looked up by id: no path from a client is ever opened, and no server path is shown to one (files
are named, not located). Galaxy ids travel in URLs percent-encoded and may hold any character,
``/`` included (a folder catalog's ids are relative paths).
"""
from __future__ import annotations

import io
import json
import os
import random
import struct
import threading
import zlib
from collections import OrderedDict
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, Field

from galaxalign.search import query as q
from galaxalign.search.filters import FilterError
from galaxalign.search.galaxy_answers import index_answers
from galaxalign.search.index import Hit, SearchIndex, UnknownGalaxyError
from galaxalign.serve.embedding_cache import EmbeddingCache, MicroBatcher

# OUR CHOICE: uploads up to 8 MB, up to 100 results per query, 128 px thumbnails, 96 px icons.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
# OUR CHOICE: decoding an upload works within a budget proportional to the upload limit: at most one
# decoded pixel per uploaded byte (8.4 megapixels for 8 MB, more than a query needs: the encoders
# see 96-224 px) and a gzipped FITS file expanded to at most 8 bytes per uploaded byte (64 MB); at
# most 2 uploads decode at once (each may take a few hundred MB at the limits).
DECODE_PIXELS_PER_UPLOAD_BYTE = 1
GUNZIP_BYTES_PER_UPLOAD_BYTE = 8
MAX_CONCURRENT_DECODES = 2
MAX_K = 100
THUMB_SIZE = 128
ICON_SIZE = 96
CACHE_ITEMS = 4096
# OUR CHOICE: the rendered JSON of the last 4,096 distinct searches (by id, text, symbols; a few
# KB each) is kept and served again while the index is unchanged (SearchIndex.generation).
RESPONSE_CACHE_ITEMS = 4096
# OUR CHOICE: up to 64 MB of whole HTTP responses (searches and thumbnails), keyed by the raw request.
HTTP_CACHE_BYTES = 64 * 1024 * 1024
HTTP_CACHE_MAX_BODY = 64 * 1024  # requests with bigger bodies (uploads) are never cached
# OUR CHOICE: on an index of at most 4M vector components (16k galaxies at D=256: an exact scan
# well under a millisecond) a search runs on the event loop; handing it to a thread costs more.
INLINE_SEARCH_WORK = 4_000_000
CACHED_ROUTES = (("GET", "/api/search/id/"), ("GET", "/api/thumb/"), ("POST", "/api/search/text"),
                 ("POST", "/api/search/symbol"))
# OUR CHOICE: results can be paged up to 1,000 deep (offset + k fetched from the index per request).
MAX_OFFSET = 1000
WHERE_HELP = ("catalog filter, e.g. 'mag_r=16:17;redshift=:0.1;class=2,3;cone=150.1,2.2,1.5' "
              "(ranges on numeric columns, classes by id or name, a sky cone ra,dec,radius in degrees)")


class TextQuery(BaseModel):
    text: str = Field(..., description="a description, e.g. 'a barred spiral galaxy'", strict=True)
    # strict: JSON true is not k=1, "10" is not 10
    k: int = Field(10, ge=1, le=MAX_K, strict=True)
    offset: int = Field(0, ge=0, le=MAX_OFFSET, strict=True, description="skip this many results (the next page)")
    where: str | None = Field(None, description=WHERE_HELP)


class SymbolQuery(BaseModel):
    answers: list[str] = Field(..., description="Galaxy Zoo answer ids, e.g. ['smooth-or-featured_smooth']", strict=True)
    k: int = Field(10, ge=1, le=MAX_K, strict=True)
    offset: int = Field(0, ge=0, le=MAX_OFFSET, strict=True, description="skip this many results (the next page)")
    where: str | None = Field(None, description=WHERE_HELP)


def thumb_url(galaxy_id: str) -> str:
    """The thumbnail URL of a galaxy; the id is percent-encoded (any character round-trips)."""
    return _thumb_url(str(galaxy_id))


@lru_cache(maxsize=65536)
def _thumb_url(galaxy_id: str) -> str:  # ten per search result page, the same ids over and over
    return f"/api/thumb/{quote(galaxy_id, safe='')}.png"


@lru_cache(maxsize=65536)
def _public_str(value: str) -> str:
    from galaxalign.datasets.images import parse_h5_source

    h5 = parse_h5_source(value)
    path, suffix = (h5[0], f"#{h5[1]}") if h5 else (value, "")
    if os.path.isabs(path) or path.startswith("~") or ".." in Path(path).parts or "\\" in path:
        return Path(path.replace("\\", "/")).name + suffix
    return value


def public_name(value: Any) -> Any:
    """What a client may see of a server-side path: its file name (``survey.h5#12`` for an HDF5 row).

    Relative ids and labels pass unchanged; absolute paths, ``~`` paths and ones that climb out
    with ``..`` are cut to their last part, so no response reveals the server's folder layout.
    """
    if not isinstance(value, str) or not value:
        return value
    return _public_str(value)  # the same few thousand catalog sources, over and over: memoised


class _LRU:
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


def _png(image: np.ndarray, size: int | None = None) -> bytes:
    """PNG bytes of a uint8 image, shrunk to fit ``size`` (LANCZOS)."""
    from PIL import Image

    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if size:
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
    if im.mode == "RGB":
        return _png_rgb(np.asarray(im))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def _png_rgb(rgb: np.ndarray) -> bytes:
    """A plain PNG of an (H, W, 3) uint8 array: no row filters, zlib level 1.

    Noisy sky images gain almost nothing from PNG's row filters and strong compression (a few
    percent of size), which cost Pillow's encoder 2-4x the time; zlib runs without the GIL.
    """
    h, w, _ = rgb.shape
    rows = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None for every row
    rows[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
            + chunk(b"IEND", b""))


class Searcher:
    """What the endpoints share: the index, the model (loaded on first use), caches and locks."""

    def __init__(self, index: SearchIndex, checkpoint: str | None, model=None):
        self.index = index
        self.checkpoint = checkpoint or index.checkpoint
        self._model = model
        self._model_lock = threading.Lock()
        self._read_lock = threading.Lock()  # HDF5 reads are not thread-safe
        self._reader = None
        self.thumbs = _LRU(CACHE_ITEMS)
        self.icons = _LRU(512)
        self.responses = _LRU(RESPONSE_CACHE_ITEMS)
        self.http_cache = HTTPCache()
        # Query embeddings: repeated text / symbol queries from the cache, concurrent ones batched.
        self.query_vectors = EmbeddingCache()
        self._texts = MicroBatcher(lambda texts: q.embed_texts(self.model, texts))
        self._symbols = MicroBatcher(
            lambda sets: q.embed_images(self.model, [q.render_query_symbol(a, taxonomy=q.index_taxonomy(self.index))
                                                     for a in sets], "symbol"))

    def text_vector(self, text: str) -> np.ndarray:
        text = q.clean_text(text)
        return self.query_vectors.get(("text", text), lambda: self._texts(text))

    def symbol_vector(self, answers: tuple[str, ...]) -> np.ndarray:
        return self.query_vectors.get(("symbol", tuple(answers)), lambda: self._symbols(tuple(answers)))

    def feature_vector(self, answers: tuple[str, ...], via: str) -> np.ndarray:
        """A feature query's embedding (search.query.feature_vector), from the cached symbol / text ones."""
        if via == "symbol":
            return self.symbol_vector(answers)
        text = self.text_vector(q.feature_text(answers, q.index_taxonomy(self.index)))
        return text if via == "text" else q.combine_feature_vectors(self.symbol_vector(answers), text)

    def load_model(self):
        """The model, loaded on first use; a missing or refused file raises OSError / ValueError naming it."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    if not self.checkpoint:
                        raise HTTPException(503, "no model: the index records no checkpoint and none was given to serve")
                    from galaxalign.inference import load_model

                    model, _ = load_model(self.checkpoint)
                    self._model = model.eval()
        return self._model

    def warm_up(self):
        """Load the model and run the text and symbol paths once (their imports, first-call set-up),
        so that the first users of each do not stall everyone else's requests; returns the model."""
        model = self.load_model()
        from galaxalign.taxonomy import decision_tree

        tax = q.index_taxonomy(self.index)
        answer = (tax.tree if tax is not None else decision_tree()).questions[0].answers[0].id
        q.embed_texts(model, ["a galaxy"])
        q.embed_images(model, [q.render_query_symbol((answer,), taxonomy=tax)], "symbol")
        if tax is not None:  # the paths feature queries are ranked by (search.features), built once
            from galaxalign.answers import AnswerError
            from galaxalign.search.features import path_bank

            try:
                path_bank(model, tax)
            except AnswerError:
                pass  # a taxonomy without answers: feature queries fall back to the nearest neighbours
        return model

    @property
    def model(self):
        try:
            return self.load_model()
        except (OSError, ValueError) as exc:
            # A broken or refused model file: the service lives on, queries that need it fail.
            name = public_name(str(Path(self.checkpoint).resolve()))
            message = str(exc).replace(str(Path(self.checkpoint)), name).replace(str(self.checkpoint), name)
            raise HTTPException(503, f"the model cannot be loaded: {message}") from None

    def image_of(self, galaxy_id: str) -> np.ndarray:
        row = self.index.record(galaxy_id)  # a dict: a faiss table row or a Milvus record alike
        from galaxalign.datasets import read_image

        try:
            with self._read_lock:
                return read_image(row)
        except (OSError, ValueError) as exc:
            # The catalog points at an image that is gone or broken: this galaxy has no thumbnail.
            raise HTTPException(404, f"image of galaxy {galaxy_id!r} is unavailable: {exc}") from None

    @property
    def inline_search(self) -> bool:
        """Whether a search (with the query vector at hand) is cheap enough for the event loop."""
        if getattr(self.index, "searches_over_network", False):  # a Milvus index: a round trip, never inline
            return False
        return len(self.index) * self.index.dim <= INLINE_SEARCH_WORK

    async def cached_search(self, key: tuple, search, inline: bool = False) -> Response:
        """The JSON response of a search, rendered once per index generation and then served from
        the cache; ``search()`` returns the response's content. It runs in the thread pool (it may
        need the model or a long scan) unless ``inline``. Errors propagate (to the 4xx handlers)
        and are not cached."""
        key = (self.index.generation, *key)
        body = self.responses.peek(key)
        if body is None:
            make = lambda: render_json(search())  # noqa: E731
            body = self.responses.get(key, make) if inline else await run_in_threadpool(self.responses.get, key, make)
        return Response(body, media_type="application/json")

    def hits_json(self, hits: list[Hit], query: dict, k: int, offset: int = 0) -> dict:
        return {
            "query": {key: v for key, v in query.items() if v is not None},
            "k": k,
            "offset": offset,
            "results": [{**h.to_dict(), "source": public_name(h.source), "thumb_url": thumb_url(h.id)} for h in hits],
        }


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with a 413, before they are parsed.

    A declared Content-Length is checked up front; a chunked body is counted as it arrives, so an
    endless upload is cut off instead of being spooled to disk.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _error(400, f"bad Content-Length header {length.decode(errors='replace')!r}")(scope, receive, send)
            if declared > self.limit:
                return await _error(413, self._message(declared))(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the app's body reading: FastAPI turns it into the 413 response.
                    raise HTTPException(413, self._message(received))
            return message

        await self.app(scope, counted_receive, send)

    def _message(self, size: int) -> str:
        return f"request body of {size}+ bytes is over the upload limit ({self.limit} bytes with the form envelope)"


def render_json(content: Any) -> bytes:
    """JSON with every non-ASCII character escaped: a lone surrogate that a request smuggled in (and
    that an error message echoes back) cannot make the response unencodable, i.e. a 500."""
    options = {"ensure_ascii": True, "allow_nan": False, "separators": (",", ":"), "default": _json_default}
    try:
        text = json.dumps(content, **options)
    except ValueError:  # NaN / Infinity (Python's JSON parser accepts them in requests): null
        text = json.dumps(_finite(content), **options)
    return text.encode("ascii")


def _json_default(value: Any) -> Any:
    """What plain JSON does not know: numpy values as Python ones, the rest through FastAPI's encoder."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return jsonable_encoder(value)


class ResponseCache:
    """ASGI middleware: a repeated request for a search or a thumbnail is answered from memory.

    A request is cached only when it is one of :data:`CACHED_ROUTES`, its body (if any) is small
    and the app answered it with a complete 200; the key is the raw request (method, path, query
    string, content type, body) and the index's ``generation``, so adding or removing galaxies
    (which bumps it) retires every stored answer. A hit skips routing, validation and the
    endpoint: the bytes are exactly what the app sent for that request before. Least recently
    used entries are dropped beyond ``max_bytes``.
    """

    def __init__(self, app, searcher: "Searcher"):
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


class SafeJSONResponse(JSONResponse):
    """A JSONResponse rendered by :func:`render_json`."""

    def render(self, content: Any) -> bytes:
        return render_json(content)


def _finite(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _error(status: int, detail: Any, headers: dict | None = None) -> JSONResponse:
    return SafeJSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def create_app(index_dir: str | Path | SearchIndex, checkpoint: str | None = None, *, model=None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_image_pixels: int | None = None,
               max_gunzip_bytes: int | None = None, max_concurrent_decodes: int = MAX_CONCURRENT_DECODES) -> FastAPI:
    """The search service over an index folder. ``model`` (already loaded) skips ``load_model``.

    Limits (docs/search.md): uploads of ``max_upload_bytes``; decoded within ``max_image_pixels``
    (default: :data:`DECODE_PIXELS_PER_UPLOAD_BYTE` per upload byte, at most the decoder's own
    limit) and ``max_gunzip_bytes`` (default :data:`GUNZIP_BYTES_PER_UPLOAD_BYTE` per upload byte),
    ``max_concurrent_decodes`` at a time.
    """
    if max_image_pixels is None:
        max_image_pixels = min(q.MAX_IMAGE_PIXELS, DECODE_PIXELS_PER_UPLOAD_BYTE * int(max_upload_bytes))
    if max_gunzip_bytes is None:
        max_gunzip_bytes = GUNZIP_BYTES_PER_UPLOAD_BYTE * int(max_upload_bytes)
    for name, value in (("max_upload_bytes", max_upload_bytes), ("max_image_pixels", max_image_pixels),
                        ("max_gunzip_bytes", max_gunzip_bytes), ("max_concurrent_decodes", max_concurrent_decodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    index = index_dir if isinstance(index_dir, SearchIndex) else SearchIndex.load(index_dir)
    searcher = Searcher(index, checkpoint, model)
    index_answers(index)  # every galaxy's decision-tree answers, read once here, not per request
    app = FastAPI(
        title="GalaxAlign search",
        description="Find galaxies by image, catalog id, description, Galaxy Zoo symbols or a sketch.",
        version="1",
        docs_url=None,  # served below from local files: the page works offline
        default_response_class=SafeJSONResponse,
    )
    app.state.searcher = searcher
    static = resources.files("galaxalign.serve").joinpath("static")

    # -- errors: user mistakes are 4xx JSON, never a crash ---------------------------------------
    @app.exception_handler(q.QueryError)
    async def _query_error(_request: Request, exc: q.QueryError):
        return _error(400, str(exc))

    @app.exception_handler(q.QueryVectorError)
    async def _query_vector_error(_request: Request, exc: q.QueryVectorError):
        # The model cannot embed this query: no ranking to give. Said in the shape of the other 422s
        # (FastAPI's validation errors, as the OpenAPI schema documents them).
        return _error(422, [{"loc": ["query"], "msg": str(exc), "type": "query_embedding_not_finite"}])

    @app.exception_handler(FilterError)
    async def _filter_error(_request: Request, exc: FilterError):
        return _error(400, str(exc))

    @app.exception_handler(UnknownGalaxyError)
    async def _unknown_id(_request: Request, exc: UnknownGalaxyError):
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError):
        return _error(422, jsonable_encoder(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, exc.detail, getattr(exc, "headers", None))

    app.add_middleware(ResponseCache, searcher=searcher)  # inside BodyLimit: limits are checked first
    app.add_middleware(BodyLimit, limit=max_upload_bytes + 64 * 1024)  # room for the multipart envelope

    decode_slots = threading.BoundedSemaphore(max_concurrent_decodes)

    def decode(data: bytes, name: str) -> np.ndarray:
        with decode_slots:  # held in the worker thread: the event loop never waits for a slot
            return q.load_image(data, max_image_pixels, name, max_gunzip_bytes)

    async def read_upload(file: UploadFile) -> np.ndarray:
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"{file.filename or 'upload'}: over the upload limit of {max_upload_bytes} bytes")
        # Decoding runs in the thread pool (it must not stall the event loop), a few at a time, each
        # within the decode budget: a small bomb cannot take the memory of many.
        return await run_in_threadpool(decode, data, file.filename or "upload")

    # -- page ------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(static.joinpath("index.html")), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    _mount_docs(app)

    # -- facts -----------------------------------------------------------------------------------
    # Endpoints whose work is a few dict lookups are ``async``: they answer on the event loop, with
    # no thread hand-off; anything that may compute (a search not in the cache, a thumbnail not yet
    # drawn, the model) goes to the thread pool. Searches return pre-rendered JSON (a Response, so
    # FastAPI does not re-encode it).
    @app.get("/api/info", summary="the index: size, kind, model, classes, limits")
    async def info() -> dict[str, Any]:
        return SafeJSONResponse({
            "count": len(index),
            "dim": index.dim,
            "kind": index.kind,
            "params": index.info.get("params", {}),
            "checkpoint": public_name(str(Path(searcher.checkpoint).resolve())) if searcher.checkpoint else None,
            "data_source": public_name(index.info.get("data_source")),
            "classes": index.class_names,
            "limits": {"max_upload_bytes": max_upload_bytes, "max_image_pixels": max_image_pixels,
                       "max_gunzip_bytes": max_gunzip_bytes, "max_concurrent_decodes": max_concurrent_decodes,
                       "max_aspect_ratio": q.MAX_ASPECT_RATIO, "max_text_chars": q.MAX_TEXT_CHARS, "max_k": MAX_K,
                       "max_offset": MAX_OFFSET},
            "query_cache": searcher.query_vectors.stats(),
            "response_cache": searcher.http_cache.stats(),
        })

    @app.get("/api/symbols", summary="the Galaxy Zoo decision tree with each answer's pictogram URL")
    def symbols() -> dict[str, Any]:
        from galaxalign.answers import phrase as answer_phrase  # how a caption says an answer
        from galaxalign.taxonomy import decision_tree

        tax = q.index_taxonomy(index)  # the model's own tree, saved with it
        return {
            "questions": [
                {
                    "key": question.key,
                    "text": question.text,
                    "requires": list(question.requires),
                    "answers": [
                        {"id": a.id, "text": a.text, "phrase": answer_phrase(a), "icon": a.icon,
                         "icon_url": f"/api/symbol.png?answers={a.id}"}
                        for a in question.answers
                    ],
                }
                for question in (tax.tree if tax is not None else decision_tree()).questions
            ]
        }

    @app.get("/api/symbol.png", summary="the pictogram composed from Galaxy Zoo answers",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def symbol_png(answers: str = Query(..., description="comma-separated answer ids"),
                   size: int = Query(ICON_SIZE, ge=16, le=512)):
        tax = q.index_taxonomy(index)
        parsed = q.parse_answers(answers, tax.tree if tax is not None else None)
        png = searcher.icons.get((parsed, size), lambda: _png(q.render_query_symbol(parsed, size=size, taxonomy=tax)))
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/api/thumb/{galaxy_id:path}.png", summary="a catalog galaxy's thumbnail, by (percent-encoded) id",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def thumb(galaxy_id: str):
        png = searcher.thumbs.peek(galaxy_id)
        if png is None:
            png = await run_in_threadpool(searcher.thumbs.get, galaxy_id,
                                          lambda: _png(searcher.image_of(galaxy_id), THUMB_SIZE))
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/api/catalog", summary="browse the indexed catalog (in order or a random sample)")
    def catalog(offset: int = Query(0, ge=0), limit: int = Query(24, ge=1, le=200),
                random_sample: bool = Query(False, alias="random"), seed: int | None = None,
                label: int | None = Query(None, ge=-1)) -> dict[str, Any]:
        table = index.table
        rows = np.arange(len(table)) if label is None else np.flatnonzero(table["label"].to_numpy() == label)
        if random_sample:
            picked = rows[random.Random(seed).sample(range(len(rows)), min(limit, len(rows)))]
        else:
            picked = list(rows[offset : offset + limit])
        items = []
        for r in picked:
            rec = table.iloc[int(r)]
            lab = int(rec["label"])
            items.append({"id": str(rec["id"]), "label": lab, "label_name": index.label_name(lab),
                          "source": public_name(str(rec["source"])), "thumb_url": thumb_url(rec["id"])})
        return {"total": int(len(rows)), "offset": offset, "items": items}

    @app.get("/api/galaxy/{galaxy_id:path}", summary="a catalog galaxy's record (id, label, source, metadata)")
    def galaxy(galaxy_id: str) -> dict[str, Any]:
        rec = index.record(galaxy_id)
        rec["label_name"] = index.label_name(int(rec["label"]))
        rec["thumb_url"] = thumb_url(galaxy_id)
        return {k: (public_name(v) if k != "id" else v) if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                for k, v in rec.items()}

    # -- search ----------------------------------------------------------------------------------
    @app.post("/api/search/image", summary="galaxies that look like an uploaded image")
    async def search_image(file: UploadFile = File(...), k: int = Query(10, ge=1, le=MAX_K),
                           offset: int = Query(0, ge=0, le=MAX_OFFSET), where: str | None = Query(None, description=WHERE_HELP)):
        image = await read_upload(file)
        # The forward pass (and the first model load) runs in the thread pool, off the event loop.
        hits = await run_in_threadpool(lambda: q.query_image(index, searcher.model, image, k, where, offset))
        return searcher.hits_json(hits, {"image": file.filename, "where": where}, k, offset)

    @app.post("/api/search/sketch", summary="galaxies matching an uploaded drawing (symbol encoder)")
    async def search_sketch(file: UploadFile = File(...), k: int = Query(10, ge=1, le=MAX_K),
                            offset: int = Query(0, ge=0, le=MAX_OFFSET), where: str | None = Query(None, description=WHERE_HELP)):
        image = await read_upload(file)
        hits = await run_in_threadpool(lambda: q.query_sketch(index, searcher.model, image, k, where, offset))
        return searcher.hits_json(hits, {"sketch": file.filename, "where": where}, k, offset)

    @app.get("/api/search/id/{galaxy_id:path}", summary="neighbours of a catalog galaxy (its stored embedding)")
    async def search_id(galaxy_id: str, k: int = Query(10, ge=1, le=MAX_K), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                        where: str | None = Query(None, description=WHERE_HELP)):
        return await searcher.cached_search(("id", galaxy_id, k, offset, where), lambda: searcher.hits_json(
            q.query_id(index, galaxy_id, k, where=where, offset=offset), {"id": galaxy_id, "where": where}, k, offset),
            inline=searcher.inline_search)

    @app.post("/api/search/text", summary="galaxies matching a description (text encoder)")
    async def search_text(body: TextQuery):
        # A query vector already cached needs no model: the search may then run inline.
        vector = searcher.query_vectors.peek(("text", q.clean_text(body.text))) if searcher.inline_search else None
        return await searcher.cached_search(("text", body.text, body.k, body.offset, body.where), lambda: searcher.hits_json(
            q.query_vector(index, vector if vector is not None else searcher.text_vector(body.text), body.k, body.where,
                           body.offset), {"text": body.text, "where": body.where}, body.k, body.offset),
            inline=vector is not None)

    @app.post("/api/search/symbol", summary="galaxies matching the symbol composed from Galaxy Zoo answers")
    async def search_symbol(body: SymbolQuery):
        def search():
            tax = q.index_taxonomy(index)
            answers = q.parse_answers(body.answers, tax.tree if tax is not None else None)
            hits = q.rank_features(index, searcher.model, answers, searcher.symbol_vector(answers), "symbol", body.k,
                                   body.where, body.offset)
            return searcher.hits_json(hits, {"answers": list(answers), "where": body.where}, body.k, body.offset)

        return await searcher.cached_search(("symbol", tuple(body.answers), body.k, body.offset, body.where), search)

    @app.get("/api/search/features", summary="galaxies with the given Galaxy Zoo answers (a feature query)")
    def search_features(answers: str = Query(..., description="comma-separated answer ids, e.g. "
                                             "smooth-or-featured_featured-or-disk,disk-edge-on_no,bar_yes"),
                        via: Literal["symbol", "text", "both"] = Query(
                            q.DEFAULT_VIA, description="the composed symbol (symbol encoder), the answers in "
                            "volunteer wording (text encoder), or both (the normalised sum of the two)"),
                        k: int = Query(10, ge=1, le=MAX_K), offset: int = Query(0, ge=0, le=MAX_OFFSET),
                        where: str | None = Query(None, description=WHERE_HELP)):
        tax = q.index_taxonomy(index)
        parsed = q.parse_answers(answers, tax.tree if tax is not None else None)
        caption = q.feature_caption(parsed, tax)
        hits = q.rank_features(index, searcher.model, parsed, searcher.feature_vector(parsed, via), via, k, where, offset)
        return searcher.hits_json(hits, {"answers": list(parsed), "via": via, "caption": caption, "where": where}, k, offset)

    return app


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the files of the ``swagger-ui-bundle-v2`` package (no CDN).

    Without that package the page falls back to FastAPI's CDN-hosted one, which needs internet
    access; the schema itself (/openapi.json) is always served.
    """
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is not None and (Path(str(swagger_ui_path)) / "swagger-ui-bundle.js").is_file():
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
        urls = {"swagger_js_url": "/docs-assets/swagger-ui-bundle.js", "swagger_css_url": "/docs-assets/swagger-ui.css",
                "swagger_favicon_url": "/docs-assets/favicon-32x32.png"}
    else:
        urls = {}

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs", **urls)
