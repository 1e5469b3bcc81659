"""FastAPI app over a search index: JSON API (OpenAPI at /docs) and the web page at /.

The service is a thin shell over :mod:`galaxalign.search`: every endpoint validates its input,
calls one query function and returns JSON. User mistakes become a 4xx with a JSON ``detail`` that
says what is wrong; the server keeps serving. Thumbnails are read only from the indexed catalog,
looked up by id: no path from a client is ever opened, and no server path is shown to one (files
are named, not located). Galaxy ids travel in URLs percent-encoded and may hold any character,
``/`` included (a folder catalog's ids are relative paths).
"""
from __future__ import annotations

import random
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Literal

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
from galaxalign.search.index import SearchIndex, UnknownGalaxyError
from galaxalign.serve.caches import ResponseCache
from galaxalign.serve.images import png_bytes
from galaxalign.serve.responses import SafeJSONResponse, public_name, thumb_url
from galaxalign.serve.searcher import Searcher

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
    def symbolpng_bytes(answers: str = Query(..., description="comma-separated answer ids"),
                   size: int = Query(ICON_SIZE, ge=16, le=512)):
        tax = q.index_taxonomy(index)
        parsed = q.parse_answers(answers, tax.tree if tax is not None else None)
        png = searcher.icons.get((parsed, size), lambda: png_bytes(q.render_query_symbol(parsed, size=size, taxonomy=tax)))
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/api/thumb/{galaxy_id:path}.png", summary="a catalog galaxy's thumbnail, by (percent-encoded) id",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def thumb(galaxy_id: str):
        png = searcher.thumbs.peek(galaxy_id)
        if png is None:
            png = await run_in_threadpool(searcher.thumbs.get, galaxy_id,
                                          lambda: png_bytes(searcher.image_of(galaxy_id), THUMB_SIZE))
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
