"""Each indexed galaxy's decision-tree answers, read once per index from its catalog metadata.

When an index's table (the catalog's metadata) carries per-galaxy answers (galaxy-datasets'
``<question>_<answer>_fraction`` columns, which the rendered survey writes, or an ``answers``
column; see :mod:`galaxalign.answers`), every search hit says which answers its galaxy has: its
path through the tree (:func:`galaxalign.answers.hard_answers`), and, for a feature query, how many
of the query's answers are on it (``matched``; :func:`galaxalign.answers.relevance` times the number
of query answers).

The work is done once per loaded index, not per request: the answer matrix is read in row chunks,
every galaxy's path is walked for all rows at once (``galaxalign.answers.path_masks``, the vectorised form of
``hard_answers``) and the index keeps one small code per galaxy into the list of distinct paths
(vote fractions of a million galaxies still fall on a few thousand distinct paths).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np

from galaxalign import answers as A
from galaxalign.search.records import index_taxonomy

# OUR CHOICE: answer matrices are read 65,536 galaxies at a time (about 13 MB of float32 each), so a
# catalog of millions never holds its whole (N, A) matrix in memory.
CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class IndexAnswers:
    """The answers of every galaxy of an index: ``codes[row]`` indexes ``paths`` (distinct paths)."""

    codes: np.ndarray                   # (N,) int32
    paths: tuple[tuple[str, ...], ...]  # each distinct path, answer ids in tree order
    expanded: tuple[frozenset, ...]     # each path with every answer it implies
    tree: object

    def of_row(self, row: int) -> tuple[str, ...]:
        return self.paths[int(self.codes[row])]

    def matched(self, row: int, query: Sequence[str]) -> int:
        """How many of the query's answers (as given) galaxy ``row`` has."""
        have = self.expanded[int(self.codes[row])]
        return sum(a in have for a in query)


def compute_index_answers(table, taxonomy=None) -> IndexAnswers | None:
    """The answers of every galaxy of an id table, or None when the table carries no per-galaxy
    answers (no fraction columns, no ``answers`` column)."""
    tree = A._tree_of(taxonomy)
    if not A.has_galaxy_answers(table, tree):
        return None
    if taxonomy is None and "label" in table.columns:
        table = table.drop(columns=["label"])  # no taxonomy: no class answers to stand in
    ids = A.answer_ids(tree)
    codes = np.empty(len(table), dtype=np.int32)
    distinct: dict[bytes, int] = {}
    masks: list[np.ndarray] = []
    for start in range(0, len(table), CHUNK_ROWS):
        part = table.iloc[start:start + CHUNK_ROWS]
        chunk = A.path_masks(A.answer_matrix(part, taxonomy, where="index table"), tree)
        packed = np.packbits(chunk, axis=1)
        uniq, inverse = np.unique(packed, axis=0, return_inverse=True)
        local = np.empty(len(uniq), dtype=np.int32)
        for u, row in enumerate(uniq):
            key = row.tobytes()
            if key not in distinct:
                distinct[key] = len(masks)
                masks.append(np.unpackbits(row)[: len(ids)].astype(bool))
            local[u] = distinct[key]
        codes[start:start + len(part)] = local[np.asarray(inverse).reshape(-1)]
    paths = tuple(tuple(a for a, on in zip(ids, mask) if on) for mask in masks)
    expanded = tuple(frozenset(A.expand(p, tree)) for p in paths)
    return IndexAnswers(codes, paths, expanded, tree)


def index_answers(index) -> IndexAnswers | None:
    """The answers of an index's galaxies, computed on first use and kept with the index until its
    table changes (``SearchIndex.add`` / ``remove`` replace the table)."""
    stored = getattr(index, "stored_answers", None)
    if stored is not None:  # a backend that keeps each galaxy's path itself (search.milvus_index)
        return stored()
    cached = getattr(index, "_galaxalign_answers", None)
    if cached is not None and cached[0] is index.table:
        return cached[1]
    value = compute_index_answers(index.table, index_taxonomy(index))
    try:
        index._galaxalign_answers = (index.table, value)
    except AttributeError:
        pass
    return value


def with_answers(index, hits: list, query: Iterable[str] | None = None) -> list:
    """``hits`` carrying their galaxies' ``answers`` (and ``matched`` for a feature ``query``);
    unchanged when the index has no per-galaxy answers."""
    known = index_answers(index)
    if known is None or not hits:
        return hits
    q = list(dict.fromkeys(query)) if query is not None else None
    return [replace(h, answers=known.of_row(h.row), matched=known.matched(h.row, q) if q is not None else None)
            for h in hits]
