"""Query embeddings for the service: repeated queries from a cache, concurrent ones in one batch.

Text and symbol queries repeat (the page's example descriptions, popular answer combinations), and
a forward pass costs tens of milliseconds on a CPU where a search costs well under one. So:

- :class:`EmbeddingCache` keeps the vectors of the last ``size`` distinct queries (LRU, per
  modality); a hit skips the model entirely.
- :class:`MicroBatcher` gathers the requests that arrive while the model is busy (or within
  ``window_s``) and runs them through the encoder as one batch: 20 concurrent text queries cost
  one forward pass of 20, not 20 passes of 1, and the model is never run by two threads at once.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable, Hashable, Sequence

import numpy as np

# OUR CHOICE: 10,000 cached query vectors (10 MB at D=256), batches of up to 32, a 2 ms window.
CACHE_SIZE = 10_000
MAX_BATCH = 32
WINDOW_S = 0.002


class MicroBatcher:
    """Call ``fn(items) -> vectors`` on batches of the items that concurrent callers submit.

    The first caller to find the batcher idle becomes the leader: it waits ``window_s`` for
    company, runs the batch, and keeps running batches while more items are waiting; the others
    block on their result. An exception from ``fn`` reaches every caller of that batch.
    """

    def __init__(self, fn: Callable[[Sequence], Sequence], max_batch: int = MAX_BATCH, window_s: float = WINDOW_S):
        self.fn, self.max_batch, self.window_s = fn, int(max_batch), float(window_s)
        self._lock = threading.Lock()
        self._pending: list[tuple[object, Future]] = []
        self._running = False
        self.batches: list[int] = []  # sizes of the batches run (for tests and /api/info)

    def __call__(self, item):
        future: Future = Future()
        with self._lock:
            self._pending.append((item, future))
            lead = not self._running
            if lead:
                self._running = True
        if lead:
            if self.window_s > 0:
                time.sleep(self.window_s)
            self._drain()
        return future.result()

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                if not batch:
                    self._running = False
                    return
            self.batches.append(len(batch))
            self.batches[:] = self.batches[-1000:]
            try:
                out = self.fn([item for item, _ in batch])
                for (_, future), vector in zip(batch, out):
                    future.set_result(vector)
            except BaseException as exc:  # every waiter hears of it; the leader goes on with the rest
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)


class EmbeddingCache:
    """LRU of query vectors keyed by (modality, normalised query), filled through a batcher."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = int(size)
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def peek(self, key: Hashable) -> np.ndarray | None:
        """The cached vector of ``key`` (a hit), or None without computing anything."""
        with self._lock:
            vector = self._data.get(key)
            if vector is not None:
                self._data.move_to_end(key)
                self.hits += 1
            return vector

    def get(self, key: Hashable, compute: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
        vector = np.asarray(compute(), dtype=np.float32)
        vector.setflags(write=False)  # shared between requests: nobody may change it
        with self._lock:
            self._data[key] = vector
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return vector

    def stats(self) -> dict:
        with self._lock:
            return {"items": len(self._data), "size": self.size, "hits": self.hits, "misses": self.misses}
