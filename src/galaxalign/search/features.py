"""Ranking by features: the expected fraction of a feature query's answers each galaxy has.

A feature query is a set of decision-tree answers ("featured, not edge-on, bar, spiral, tight, 2
arms"); a galaxy's relevance to it is the fraction of those answers on its path
(``answers.relevance``). The aligned model does not see that path, but it was trained to tell paths
apart: per-galaxy GalaxAlign aligns every training galaxy with the caption and the composed symbol of
ITS path, one bank row per distinct path (``class_bank.galaxy_rows``; the model carries those paths
as ``model.answer_paths``), and a class-level model aligns galaxies with their class's answers. So
each galaxy gets a **posterior over those paths**: the softmax, at the model's learned temperature
(``model.scale()``), of the cosines of its image embedding to each path's caption (text encoder,
the mean over the taxonomy's prompt templates, as the bank trains it) or composed symbol (symbol
encoder), plus the log of a **prior**: how many training galaxies had each path
(``model.answer_path_counts``, see ``PRIOR_WEIGHT``). Its score for a query is the **expected relevance** under that posterior,
``sum_r P(r | galaxy) * relevance(query, path_r)``: galaxies are ranked by how many of the query's
answers they are expected to have, which is the issue's "ranked by how many of them they have" and
exactly what nDCG with graded relevance rewards.

OUR CHOICE: the path posterior, at the model's own temperature, ranked feature queries better on
the validation split than the composed query vector's cosine or a posterior over single answers
(figures: docs/search.md, "How the feature scoring was chosen").

``via="both"`` averages the symbol and text posteriors (equal weights, like the composed ``both``
query of ``search.query``). In an index the posterior re-ranks the nearest ``RERANK_CANDIDATES``
galaxies of the composed query vector (``search.query.rank_features``); an index no larger than
that is ranked whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from galaxalign.answers import AnswerError, caption, path_matrix, relevance_rows
from galaxalign.captions import templates_of, wrap

VIAS = ("symbol", "text", "both")


def bank_paths(model, taxonomy) -> tuple[tuple[str, ...], ...]:
    """The paths a model's posterior ranges over: the per-galaxy training paths it carries, else
    (class-level models, baselines) the answers of the taxonomy's classes that have them."""
    paths = getattr(model, "answer_paths", None)
    if paths:
        return tuple(tuple(p) for p in paths)
    paths = tuple(tuple(c.answers) for c in taxonomy.classes if c.answers)
    if not paths:
        raise AnswerError(f"taxonomy {taxonomy.name!r} gives no class any decision-tree answers, and the model "
                          "carries no per-galaxy paths: there is nothing to rank feature queries by")
    return paths


@dataclass
class PathBank:
    """The paths of a model with their embeddings: what ranking by features needs, built once per model."""

    paths: tuple[tuple[str, ...], ...]
    have: np.ndarray                                   # (R, A) bool: answers.path_matrix of the paths
    embeddings: dict[str, np.ndarray] = field(repr=False)   # "text" / "symbol" -> (R, D) unit rows
    scale: float
    tree: object = field(repr=False)
    log_prior: np.ndarray | None = field(default=None, repr=False)   # (R,) added to the logits; None: uniform

    def relevance(self, queries: Sequence[Sequence[str]]) -> np.ndarray:
        """(Q, R) the fraction of each query's answers on each path (``answers.relevance_rows``)."""
        return relevance_rows(queries, self.have, self.tree)

    def posterior(self, embeddings: np.ndarray, via: str) -> np.ndarray:
        """(N, R) each galaxy's posterior over the paths from its unit image embedding."""
        if via not in VIAS:
            raise ValueError(f"via must be one of {VIAS}, got {via!r}")
        if via == "both":
            return 0.5 * (self.posterior(embeddings, "symbol") + self.posterior(embeddings, "text"))
        logits = self.scale * (np.asarray(embeddings, dtype=np.float32) @ self.embeddings[via].T)
        if self.log_prior is not None:
            logits = logits + self.log_prior[None, :].astype(logits.dtype)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits, dtype=np.float64)
        return p / p.sum(axis=1, keepdims=True)

    def scores(self, embeddings: np.ndarray, queries: Sequence[Sequence[str]], via: str) -> np.ndarray:
        """(Q, N) expected relevance of every galaxy (unit image embeddings) to every query."""
        return self.relevance(queries) @ self.posterior(embeddings, via).T


# OUR CHOICE: each path's symbol is the mean of 4 renderings (canonical + 3 augmented, as the training
# bank's answers.symbol_variants draws them) embedded without test-time dihedral views. A scratch
# comparison on the validation split (not kept as a script) put 1-8 renderings, with or without the 8
# views, within 0.01 nDCG@10 of each other; these settings cost 1/16 of the encoder passes of 8 x 8.
SYMBOL_VARIANTS = 4
SYMBOL_TTA = False


# OUR CHOICE: the posterior multiplies in a prior over the paths, the number of training galaxies that
# had each (+ 0.5, so a path no galaxy had is still possible), at weight 1 (Bayes' rule: the bank has
# one row per DISTINCT path, so the cosines alone treat a path one galaxy had like one 300 had).
# Validation figures: docs/search.md, "How the feature scoring was chosen". Models that carry no
# counts (trained before they were recorded) use a uniform prior.
PRIOR_WEIGHT = 1.0
PRIOR_SMOOTHING = 0.5


def path_log_prior(counts: Sequence[int] | None, weight: float = PRIOR_WEIGHT) -> np.ndarray | None:
    """``weight * log(count + PRIOR_SMOOTHING)`` per path; None (uniform) without counts or weight."""
    if counts is None or weight == 0:
        return None
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or (c < 0).any():
        raise ValueError(f"path counts must be one non-negative count per path, got {c.shape}")
    return (float(weight) * np.log(c + PRIOR_SMOOTHING)).astype(np.float32)


def build_path_bank(model, taxonomy, paths: Sequence[Sequence[str]] | None = None,
                    symbol_variants: int = SYMBOL_VARIANTS, symbol_tta: bool | None = SYMBOL_TTA,
                    counts: Sequence[int] | None = None, prior_weight: float = PRIOR_WEIGHT) -> PathBank:
    """The :class:`PathBank` of a model: its paths' captions (mean over prompt templates) through the
    text encoder and their composed symbols (deterministic renderings) through the symbol encoder.

    ``counts`` (training galaxies per path, the prior; see ``PRIOR_WEIGHT``) default to the model's
    ``answer_path_counts`` when ``paths`` are the model's own."""
    import torch

    from galaxalign.inference import encode_images, encode_texts

    tree = taxonomy.tree
    if paths is None:
        paths = bank_paths(model, taxonomy)
        if counts is None and paths == getattr(model, "answer_paths", None):
            counts = getattr(model, "answer_path_counts", None)
    paths = tuple(tuple(p) for p in paths)
    if counts is not None and len(counts) != len(paths):
        raise ValueError(f"{len(counts)} path counts for {len(paths)} paths")
    have = path_matrix(paths, tree)
    captions = [caption(p, tree) for p in paths]
    text = np.stack([np.asarray(encode_texts(model, [wrap(c, t) for c in captions]), dtype=np.float32)
                     for t in templates_of(taxonomy)]).mean(axis=0)
    text /= np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    from galaxalign.symbols import book_of
    from galaxalign.symbols.raster import answer_symbol_bank

    # the mean over the canonical rendering and renderer-augmented variants of each path's symbol
    n = max(1, int(symbol_variants))
    images, _ = answer_symbol_bank(paths, int(model.image_size), n, 0, book_of(taxonomy), tree)
    symbol = np.asarray(encode_images(model, images, "symbol", tta=symbol_tta), dtype=np.float32).reshape(len(paths), n, -1).mean(axis=1)
    symbol /= np.maximum(np.linalg.norm(symbol, axis=1, keepdims=True), 1e-12)
    with torch.no_grad():
        scale = float(model.scale().detach().cpu())
    return PathBank(paths, have, {"text": text, "symbol": symbol}, scale, tree, path_log_prior(counts, prior_weight))


def path_bank(model, taxonomy) -> PathBank:
    """:func:`build_path_bank`, kept on the model for the next query (a model being served or
    evaluated is not trained further in place; a changed path list or taxonomy rebuilds it)."""
    key = (bank_paths(model, taxonomy), getattr(model, "answer_path_counts", None), taxonomy.name, id(taxonomy.tree))
    cached = getattr(model, "_galaxalign_path_bank", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    bank = build_path_bank(model, taxonomy)
    try:
        object.__setattr__(model, "_galaxalign_path_bank", (key, bank))
    except AttributeError:
        pass
    return bank
