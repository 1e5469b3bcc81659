"""What the endpoints share: the index, the model (loaded on first use), caches and locks."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from fastapi import HTTPException
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from galaxalign.search import query as q
from galaxalign.search.index import Hit, SearchIndex
from galaxalign.serve.caches import CACHE_ITEMS, LRU, RESPONSE_CACHE_ITEMS, HTTPCache
from galaxalign.serve.embedding_cache import EmbeddingCache, MicroBatcher
from galaxalign.serve.responses import public_name, render_json, thumb_url

# OUR CHOICE: on an index of at most 4M vector components (16k galaxies at D=256: an exact scan
# well under a millisecond) a search runs on the event loop; handing it to a thread costs more.
INLINE_SEARCH_WORK = 4_000_000


class Searcher:
    """What the endpoints share: the index, the model (loaded on first use), caches and locks."""

    def __init__(self, index: SearchIndex, checkpoint: str | None, model=None):
        self.index = index
        self.checkpoint = checkpoint or index.checkpoint
        self._model = model
        self._model_lock = threading.Lock()
        self._read_lock = threading.Lock()  # HDF5 reads are not thread-safe
        self._reader = None
        self.thumbs = LRU(CACHE_ITEMS)
        self.icons = LRU(512)
        self.responses = LRU(RESPONSE_CACHE_ITEMS)
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
