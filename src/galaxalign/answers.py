"""Per-galaxy decision-tree answers: what the volunteers said of ONE galaxy, as data.

A catalog may carry, per galaxy, answers to the decision tree (``knowledge/decision_tree.yaml``):

- vote fractions in galaxy-datasets' columns ``<question>_<answer>_fraction`` (e.g.
  ``bar_yes_fraction``, ``has-spiral-arms_yes_fraction``); a campaign suffix on the question is
  accepted (``smooth-or-featured-gz2_smooth_fraction``, ``bar-dr5_yes_fraction``). NaN = not asked;
- hard answers in an ``answers`` column: answer ids separated by ``;`` or ``,``
  (``smooth-or-featured_featured-or-disk;disk-edge-on_no;bar_yes``);
- nothing: then the galaxy's class answers (the taxonomy's ``answers``) stand in, as class-level
  alignment always did. Unlabelled galaxies without answers have none.

The rendered survey writes each galaxy's true answers (from its generating parameters) in the first
form, as 1 (this answer), 0 (another answer of the question) or NaN (question not reached).

Everything downstream works on an ``(N, A)`` float matrix over the tree's answer ids in tree order
(:func:`answer_ids`), values in [0, 1], NaN unknown. :func:`hard_answers` reads a galaxy's path through
the tree from a row (the majority answer of every question its earlier answers reach);
:func:`caption` says a path in the volunteers' wording; :func:`relevance` scores a galaxy against a
feature query (the fraction of the query's answers it has, as AION-Search grades text search).
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from galaxalign.captions import caption_of, phrase  # noqa: F401 (phrase: how a caption says an answer)
from galaxalign.taxonomy import DecisionTree, Taxonomy, decision_tree

FRACTION_SUFFIX = "_fraction"
ANSWERS_COLUMN = "answers"
# OUR CHOICE: an answer of a multiple-choice question (the tree's ``multiple_choice: true``, e.g.
# odd features) is said when at least half the volunteers chose it; other questions take their
# majority answer.
MULTIPLE_CHOICE_THRESHOLD = 0.5


class AnswerError(ValueError):
    """Per-galaxy answers are malformed; the message names the column, row or answer."""


def answer_ids(tree: DecisionTree | None = None) -> list[str]:
    """Every answer id of the tree, in tree order: the columns of an answer matrix."""
    tree = tree or decision_tree()
    return [a.id for q in tree.questions for a in q.answers]


def fraction_column(answer_id: str) -> str:
    return f"{answer_id}{FRACTION_SUFFIX}"


def _tree_of(taxonomy_or_tree) -> DecisionTree:
    if taxonomy_or_tree is None:
        return decision_tree()
    if isinstance(taxonomy_or_tree, DecisionTree):
        return taxonomy_or_tree
    return taxonomy_or_tree.tree or decision_tree()


def fraction_columns(columns: Iterable[str], tree: DecisionTree | None = None) -> dict[str, str]:
    """answer id -> the catalog column holding its vote fraction (galaxy-datasets naming).

    ``q_a_fraction`` wins; otherwise ``q-<campaign>_a_fraction`` of the campaign suffix that covers
    the most answers (so a catalog with GZ DECaLS dr5 and dr8 columns reads one campaign, not both)."""
    tree = tree or decision_tree()
    cols = [c for c in columns if isinstance(c, str) and c.endswith(FRACTION_SUFFIX)]
    exact: dict[str, str] = {}
    by_suffix: dict[str, dict[str, str]] = {}
    for q in tree.questions:
        pattern = re.compile(rf"^{re.escape(q.key)}(-[A-Za-z0-9]+)?_(.+){re.escape(FRACTION_SUFFIX)}$")
        keys = {a.key: a.id for a in q.answers}
        for c in cols:
            m = pattern.match(c)
            if not m or m.group(2) not in keys:
                continue
            if m.group(1) is None:
                exact[keys[m.group(2)]] = c
            else:
                by_suffix.setdefault(m.group(1), {})[keys[m.group(2)]] = c
    if by_suffix:
        best = max(sorted(by_suffix), key=lambda s: len(by_suffix[s]))
        return {**by_suffix[best], **exact}
    return exact


def has_galaxy_answers(catalog: pd.DataFrame, taxonomy_or_tree=None) -> bool:
    """Does the catalog carry per-galaxy answers (vote-fraction columns or an ``answers`` column)?"""
    return ANSWERS_COLUMN in catalog.columns or bool(fraction_columns(catalog.columns, _tree_of(taxonomy_or_tree)))


def answer_vector(answers: Iterable[str], tree: DecisionTree | None = None) -> np.ndarray:
    """(A,) hard answers as a row: 1 for each given answer (and every answer it implies), 0 for the
    other answers of those questions, NaN for questions not answered."""
    tree = tree or decision_tree()
    ids = answer_ids(tree)
    col = {a: i for i, a in enumerate(ids)}
    question_of = {a.id: q for q in tree.questions for a in q.answers}
    out = np.full(len(ids), np.nan, dtype=np.float32)
    chosen = expand(answers, tree)
    for a in chosen:
        q = question_of[a]
        for other in q.answers:
            if np.isnan(out[col[other.id]]):
                out[col[other.id]] = 0.0
    for a in chosen:
        out[col[a]] = 1.0
    return out


def expand(answers: Iterable[str], tree: DecisionTree | None = None) -> tuple[str, ...]:
    """The answers plus every answer they imply through ``requires`` (single-answer requirements),
    in tree order. Unknown ids raise :class:`AnswerError`."""
    tree = tree or decision_tree()
    known = tree.answers
    question_of = {a.id: q for q in tree.questions for a in q.answers}
    out: set[str] = set()
    for a in answers:
        a = str(a).strip()
        if a not in known:
            raise AnswerError(f"unknown decision-tree answer {a!r}; known: {sorted(known)}")
        while a not in out:
            out.add(a)
            req = question_of[a].requires
            if len(req) != 1:
                break
            a = req[0]
    order = {a: i for i, a in enumerate(answer_ids(tree))}
    return tuple(sorted(out, key=order.__getitem__))


def parse_answer_list(text, where: str = "answers") -> list[str]:
    """``"a;b"`` / ``"a,b"`` / a list -> answer ids (no checking against a tree)."""
    if isinstance(text, str):
        parts = re.split(r"[;,]", text)
    elif isinstance(text, (list, tuple, np.ndarray)):
        parts = [str(x) for x in text]
    else:
        raise AnswerError(f"{where}: expected answer ids separated by ';', got {text!r}")
    return [p.strip() for p in parts if p.strip()]


def class_answer_matrix(taxonomy: Taxonomy) -> np.ndarray:
    """(C, A) each class's answers as hard rows (the stand-in for galaxies without their own)."""
    tree = _tree_of(taxonomy)
    return np.stack([answer_vector(c.answers, tree) if c.answers else np.full(len(answer_ids(tree)), np.nan, np.float32)
                     for c in taxonomy.classes])


def answer_matrix(catalog: pd.DataFrame, taxonomy: Taxonomy, where: str = "catalog") -> np.ndarray:
    """(N, A) float32 per-galaxy answers of a catalog (see the module docstring for the sources).

    Vote fractions come first, an ``answers`` column next; a galaxy with neither (all NaN) takes its
    class's answers when it has a label. A fraction outside [0, 1] or an unknown answer id raises
    :class:`AnswerError` naming the row and column."""
    tree = _tree_of(taxonomy)
    ids = answer_ids(tree)
    n = len(catalog)
    out = np.full((n, len(ids)), np.nan, dtype=np.float32)
    columns = fraction_columns(catalog.columns, tree)
    for j, a in enumerate(ids):
        if a not in columns:
            continue
        col = columns[a]
        values = pd.to_numeric(catalog[col], errors="coerce").to_numpy(np.float64)
        raw = catalog[col].to_numpy()
        bad = (~np.isfinite(values) & pd.notna(raw)) | (values < 0) | (values > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise AnswerError(f"{where}: row {i} (id {catalog['id'].iloc[i]!r}): column {col!r} is {raw[i]}; "
                              "a vote fraction must be a number in [0, 1] (or empty)")
        out[:, j] = values.astype(np.float32)
    if ANSWERS_COLUMN in catalog.columns:
        empty = np.isnan(out).all(axis=1)
        for i in np.flatnonzero(empty):
            value = catalog[ANSWERS_COLUMN].iloc[i]
            if value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip()):
                continue
            try:
                out[i] = answer_vector(parse_answer_list(value), tree)
            except AnswerError as exc:
                raise AnswerError(f"{where}: row {i} (id {catalog['id'].iloc[i]!r}): column {ANSWERS_COLUMN!r}: {exc}") from None
    labels = catalog["label"].to_numpy(np.int64) if "label" in catalog.columns else np.full(n, -1)
    empty = np.isnan(out).all(axis=1) & (labels >= 0)
    if empty.any():
        if labels.max() >= taxonomy.num_classes:
            raise AnswerError(f"{where}: label {int(labels.max())} is not a class of taxonomy {taxonomy.name!r}")
        out[empty] = class_answer_matrix(taxonomy)[labels[empty]]
    return out


def path_masks(matrix: np.ndarray, tree: DecisionTree | None = None) -> np.ndarray:
    """(N, A) bool: every row's path through the tree, all rows at once (the one tree walk; see
    :func:`hard_answers`). Walking the questions in order, each question its row's earlier answers
    reach contributes its majority answer (ties: the first); questions with no values are skipped;
    multiple-choice questions contribute every answer at or above ``MULTIPLE_CHOICE_THRESHOLD``."""
    tree = tree or decision_tree()
    ids = answer_ids(tree)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != len(ids):
        raise AnswerError(f"answer matrix: expected (N, {len(ids)}) columns in tree order, got {m.shape}")
    col = {a: i for i, a in enumerate(ids)}
    chosen = np.zeros(m.shape, dtype=bool)
    j = 0
    for q in tree.questions:
        width = len(q.answers)
        values = m[:, j:j + width]
        reached = ~np.isnan(values).all(axis=1)
        if q.requires:  # only answers of earlier questions are set yet
            reached &= chosen[:, [col[r] for r in q.requires]].any(axis=1)
        v = np.nan_to_num(values, nan=0.0)
        if q.multiple_choice:
            picked = v >= MULTIPLE_CHOICE_THRESHOLD
        else:
            picked = np.zeros(v.shape, dtype=bool)
            picked[np.arange(len(v)), np.argmax(v, axis=1)] = True  # argmax: the first of ties
            picked &= (v.max(axis=1) > 0)[:, None]
        chosen[:, j:j + width] = picked & reached[:, None]
        j += width
    return chosen


def hard_answers(row: Sequence[float], tree: DecisionTree | None = None) -> tuple[str, ...]:
    """A galaxy's path through the tree from its answer row (:func:`path_masks` of one row)."""
    tree = tree or decision_tree()
    ids = answer_ids(tree)
    mask = path_masks(np.asarray(row, dtype=np.float64).reshape(1, -1), tree)[0]
    return tuple(a for a, on in zip(ids, mask) if on)


def caption(answers: Iterable[str], tree: DecisionTree | None = None) -> str:
    """The answers said in the volunteers' wording, in tree order, e.g. ``"galaxy with features or a
    disk, not edge-on, a bar through the centre, spiral arms, tightly wound arms, 2 spiral arms"``.
    Implied answers are said too; answers whose phrase is empty are left out."""
    tree = tree or decision_tree()
    known = tree.answers
    return caption_of(known[a] for a in expand(answers, tree))


def relevance(query: Iterable[str], galaxy_answers: Iterable[str], tree: DecisionTree | None = None) -> float:
    """Graded relevance of a galaxy to a feature query: the fraction of the query's answers (as given,
    not expanded) found on the galaxy's path (its answers expanded through ``requires``)."""
    q = list(dict.fromkeys(str(a).strip() for a in query))
    if not q:
        raise AnswerError("a feature query needs at least one answer")
    have = set(expand(galaxy_answers, tree))
    return sum(a in have for a in q) / len(q)


def path_matrix(paths: Sequence[Iterable[str]], tree: DecisionTree | None = None) -> np.ndarray:
    """(P, A) bool: the answers on each path, the ones they imply included (:func:`expand`)."""
    tree = tree or decision_tree()
    col = {a: j for j, a in enumerate(answer_ids(tree))}
    have = np.zeros((len(paths), len(col)), dtype=bool)
    for i, p in enumerate(paths):
        have[i, [col[a] for a in expand(p, tree)]] = True
    return have


def relevance_rows(queries: Sequence[Iterable[str]], have: np.ndarray, tree: DecisionTree | None = None) -> np.ndarray:
    """(Q, P) :func:`relevance` of every query to every path of a :func:`path_matrix`, vectorised.
    An empty query or an unknown answer raises :class:`AnswerError` naming the query."""
    tree = tree or decision_tree()
    col = {a: j for j, a in enumerate(answer_ids(tree))}
    out = np.zeros((len(queries), have.shape[0]), dtype=np.float64)
    for qi, query in enumerate(queries):
        q = list(dict.fromkeys(str(a).strip() for a in query))
        if not q:
            raise AnswerError(f"feature query #{qi} is empty")
        unknown = [a for a in q if a not in col]
        if unknown:
            raise AnswerError(f"feature query #{qi}: unknown decision-tree answer(s) {unknown}")
        out[qi] = have[:, [col[a] for a in q]].mean(axis=1)
    return out


def answer_set_rows(matrix: np.ndarray, tree: DecisionTree | None = None) -> tuple[np.ndarray, list[tuple[str, ...]], np.ndarray]:
    """Group galaxies by their path: ``(row of each galaxy (N,), the distinct paths (R), (R, A) mean
    answer row of each path's galaxies)``. Paths are in order of first appearance; a galaxy without
    answers gets row -1. There are far fewer distinct paths than galaxies, so captions and symbols
    are made (and encoded) once per path."""
    tree = tree or decision_tree()
    ids = answer_ids(tree)
    paths = [tuple(a for a, on in zip(ids, mask) if on) for mask in path_masks(matrix, tree)] if len(matrix) else []
    index: dict[tuple[str, ...], int] = {}
    rows = np.full(len(paths), -1, dtype=np.int64)
    for i, p in enumerate(paths):
        if p:
            rows[i] = index.setdefault(p, len(index))
    distinct = list(index)
    vectors = np.zeros((len(distinct), matrix.shape[1]), dtype=np.float32)
    import warnings

    for r in range(len(distinct)):
        with warnings.catch_warnings():  # questions no galaxy of the path reached: all NaN -> 0
            warnings.simplefilter("ignore", RuntimeWarning)
            vectors[r] = np.nan_to_num(np.nanmean(matrix[rows == r], axis=0), nan=0.0)
    return rows, distinct, vectors
