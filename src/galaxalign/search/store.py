"""The exact vectors of an IVF-PQ index, memory-mapped from one raw float32 file (row = key).

The PQ codes in RAM pick a short list; its exact scores are then read from this file. The OS
pages in only the rows a query touches, so a 10M x 256 store (10 GB) costs no resident memory of
its own beyond the page cache. Rows are addressed by key and only ever appended: a removed
galaxy's row stays (the index no longer returns its key), a new galaxy's row goes at the end.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class VectorStore:
    """Append-only (rows, dim) float32 file, read through ``np.memmap``."""

    def __init__(self, path: str | Path, dim: int):
        self.path, self.dim = Path(path), int(dim)
        size = self.path.stat().st_size
        if size % (4 * self.dim):
            raise ValueError(f"{self.path}: {size} bytes is not a whole number of {self.dim}-d float32 rows")
        self._open()

    def _open(self) -> None:
        rows = self.path.stat().st_size // (4 * self.dim)
        self.data = np.memmap(self.path, dtype=np.float32, mode="r", shape=(rows, self.dim)) if rows else np.zeros((0, self.dim), np.float32)

    def __len__(self) -> int:
        return len(self.data)

    @staticmethod
    def write(path: str | Path, vectors: np.ndarray, chunk: int = 65536) -> Path:
        """Write ``vectors`` (N, D), a chunk at a time (the input may itself be memory-mapped)."""
        path = Path(path)
        with open(path, "wb") as f:
            for start in range(0, len(vectors), chunk):
                f.write(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32).tobytes())
        return path

    def append(self, vectors: np.ndarray) -> np.ndarray:
        """Append rows; returns their keys (row numbers)."""
        first = len(self)
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        with open(self.path, "ab") as f:
            f.write(x.tobytes())
        self._open()
        return np.arange(first, first + len(x), dtype=np.int64)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        return np.asarray(self.data[np.asarray(keys, dtype=np.int64)])

    def rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products of each query with its candidate keys (-1 = none); the best ``k``.

        The cost is the gather: each candidate is one random read of D*4 bytes (~1 us from the
        page cache), so the re-ranking depth, not the PQ scan, sets the query rate.
        """
        q, c = np.asarray(queries, np.float32), np.asarray(candidates, np.int64)
        kk = min(int(k), c.shape[1])
        best = np.full((len(q), kk), -1, dtype=np.int64)
        best_scores = np.full((len(q), kk), -np.inf, dtype=np.float32)
        for i in range(len(q)):
            keys = c[i][c[i] >= 0]
            if len(keys) == 0:
                continue
            s = self.data[keys] @ q[i]
            top = np.argpartition(-s, kk - 1)[:kk] if len(keys) > kk else np.arange(len(keys))
            top = top[np.argsort(-s[top], kind="stable")]
            best[i, : len(top)], best_scores[i, : len(top)] = keys[top], s[top]
        return best_scores, best
