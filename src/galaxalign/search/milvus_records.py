"""Reading a Milvus collection's records: each galaxy's decision-tree path (with the hits) and the
whole catalog (export)."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

from galaxalign.search.milvus_schema import VECTOR_FIELD


class StoredAnswers:
    """Each galaxy's decision-tree path as the collection stores it (``search.galaxy_answers``'s
    interface, by key): read with the hits, not computed from a table in memory."""

    def __init__(self, index, tree):
        self.index, self.tree = index, tree

    def of_row(self, key: int) -> tuple[str, ...]:
        return self.index._records([int(key)])[0]["answers"]

    def matched(self, key: int, query: Sequence[str]) -> int:
        have = _expanded(self.of_row(key), self.tree)
        return sum(a in have for a in query)


@lru_cache(maxsize=65536)
def _expanded_cached(path: tuple, tree_id: int, tree) -> frozenset:
    from galaxalign import answers as A

    return frozenset(A.expand(path, tree))


def _expanded(path, tree) -> frozenset:
    return _expanded_cached(tuple(path), id(tree), tree)


def export_collection(index, vectors: bool = True, batch: int = 4096):
    """Every galaxy of a collection (key order): its catalog row and, with ``vectors``, its embedding."""
    fields = index._scalar_fields() + ([VECTOR_FIELD] if vectors else [])
    it = index.client.query_iterator(index.collection, batch_size=batch, filter="", output_fields=fields)
    records, keys, vecs = [], [], []
    try:
        while True:
            rows = it.next()
            if not rows:
                break
            for r in rows:
                keys.append(int(r["key"]))
                records.append(index._to_record(r))
                if vectors:
                    vecs.append(np.asarray(r[VECTOR_FIELD], np.float32))
    finally:
        it.close()
    order = np.argsort(np.asarray(keys, np.int64), kind="stable")
    columns = list(index.layout.order) or ["id", "label", "source"]
    table = pd.DataFrame([records[i] for i in order], columns=columns) if records else pd.DataFrame(columns=columns)
    x = np.stack([vecs[i] for i in order]) if vectors and vecs else (np.zeros((0, index.dim), np.float32) if vectors else None)
    return table, x
