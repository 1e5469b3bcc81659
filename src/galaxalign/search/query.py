"""Queries: turn an image, a galaxy id, a description, Galaxy Zoo answers or a sketch into the
nearest galaxies of an index.

Images are embedded by the image encoder, descriptions by the text encoder, and both composed
symbols (``symbols.render_symbol``) and hand-drawn sketches by the symbol encoder: the three
modalities GalaxAlign aligns, so every kind of query lands in the same embedding space.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

# Size limits of query images are those of the one image decoder.
from galaxalign.captions import query_prompt
from galaxalign.datasets.images import MAX_ASPECT_RATIO, MAX_GUNZIP_BYTES, MAX_IMAGE_PIXELS
from galaxalign.search.galaxy_answers import with_answers
from galaxalign.search.index import SearchIndex
from galaxalign.search.records import Hit, index_taxonomy

# OUR CHOICE: query symbols are drawn at 224 px, the encoders' usual input size.
SYMBOL_SIZE = 224
# OUR CHOICE: descriptions up to 1000 characters, far more than any text encoder reads.
MAX_TEXT_CHARS = 1000


class QueryError(ValueError):
    """A query the user can fix (bad image, unknown answer, empty text); the message says how."""


class QueryVectorError(QueryError):
    """The model embedded a query to NaN or infinite values: a broken model (or an input it overflows on)."""


def load_image(data: bytes | str | Path, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None,
               max_gunzip_bytes: int = MAX_GUNZIP_BYTES) -> np.ndarray:
    """Decode an image file (bytes or a path) to uint8 (H, W, 3) RGB, refusing non-images and bombs.

    The catalog's decoder (:func:`galaxalign.datasets.images.decode_image`): FITS and 16-bit files
    are stretched as in a catalog, transparency is composited onto black, and sizes are checked
    (pixels, aspect ratio) before anything is decoded.
    """
    from galaxalign.datasets.images import ImageReadError, decode_image

    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            raise QueryError(f"{path}: is a folder; pass one image file")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
    try:
        return decode_image(data, name, max_pixels=max_pixels, max_gunzip_bytes=max_gunzip_bytes)
    except ImageReadError as exc:
        raise QueryError(str(exc)) from None


def check_text(text: str, what: str = "description") -> str:
    """``text`` stripped, or a QueryError when it is empty, too long or not encodable as UTF-8."""
    if not isinstance(text, str):
        raise QueryError(f"{what} must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise QueryError(f"empty {what}; type a few words, e.g. 'a barred spiral galaxy'")
    if len(text) > MAX_TEXT_CHARS:
        raise QueryError(f"{what} is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise QueryError(f"{what} holds {bad!r} at position {exc.start}, which is not a character "
                         "(a lone UTF-16 surrogate or undecodable byte); remove it") from None
    if not any(unicodedata.category(c)[0] not in "CZ" for c in text):
        # only control, format (zero-width) and separator characters: nothing a text encoder can read
        raise QueryError(f"{what} holds no visible character (only control, zero-width or space characters); "
                         "type a few words, e.g. 'a barred spiral galaxy'")
    return text


def parse_answers(answers: str | Iterable[str], tree=None) -> tuple[str, ...]:
    """Galaxy Zoo answer ids (``smooth-or-featured_smooth,how-rounded_round``) checked against the tree
    (``tree``: a model's own decision tree; default the shipped one)."""
    from galaxalign.taxonomy import decision_tree

    items = answers.split(",") if isinstance(answers, str) else list(answers)
    items = [str(a).strip() for a in items if str(a).strip()]
    if not items:
        raise QueryError("no Galaxy Zoo answers given; pass answer ids such as 'smooth-or-featured_smooth'")
    tree = tree or decision_tree()
    known = tree.answers
    bad = [a for a in items if a not in known]
    if bad:
        raise QueryError(f"unknown Galaxy Zoo answer(s) {bad}; known answers: {', '.join(sorted(known))}")
    seen: dict[str, str] = {}
    for a in items:
        q = known[a].question
        if q in seen and seen[q] != a:
            raise QueryError(f"answers {seen[q]!r} and {a!r} both answer question {q!r}; pick one")
        seen[q] = a
    return tuple(dict.fromkeys(items))


def render_query_symbol(answers: Sequence[str], size: int = SYMBOL_SIZE, taxonomy=None) -> np.ndarray:
    """The composed Galaxy Zoo pictogram of a set of answers (deterministic, no augmentation), drawn
    with ``taxonomy``'s symbol book and decision tree (a model's own; default the shipped ones)."""
    from galaxalign.symbols import SymbolError, book_of, render_symbol

    tree = taxonomy.tree if taxonomy is not None else None
    book = book_of(taxonomy) if taxonomy is not None else None
    try:
        return render_symbol(tuple(parse_answers(answers, tree)), size=size, seed=0, augment=False, book=book, tree=tree)
    except SymbolError as exc:
        raise QueryError(f"cannot draw a symbol for these answers: {exc}") from None


def _one(vectors) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v.reshape(-1, v.shape[-1])[0]


def embed_image(model, image: np.ndarray, modality: str = "image") -> np.ndarray:
    """(D,) embedding of one uint8 image by the image (or symbol) encoder."""
    from galaxalign.inference import embed_arrays

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise QueryError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return _one(embed_arrays(model, image[None], modality=modality))


def clean_text(text: str) -> str:
    """A description stripped and checked (see :func:`check_text`); the service's cache key."""
    return check_text(text if text is not None else "")


def embed_text(model, text: str) -> np.ndarray:
    return embed_texts(model, [clean_text(text)])[0]


def embed_texts(model, texts: Sequence[str]) -> np.ndarray:
    """(N, D) embeddings of checked descriptions, one forward pass (the service batches with it)."""
    from galaxalign.inference import encode_texts

    return encode_texts(model, list(texts)).numpy().astype(np.float32, copy=False)  # a CPU tensor, no graph


def embed_images(model, images: Sequence[np.ndarray], modality: str = "image") -> np.ndarray:
    """(N, D) embeddings of uint8 (H, W, 3) images of one size, one forward pass."""
    from galaxalign.inference import embed_arrays

    return np.asarray(embed_arrays(model, np.stack([np.asarray(im) for im in images]), modality=modality), dtype=np.float32)


def _check_dim(index: SearchIndex, v: np.ndarray) -> np.ndarray:
    if not np.isfinite(v).all():
        raise QueryVectorError("the model embedded this query to NaN or infinite values, so it cannot be searched; "
                               "the model is broken (e.g. NaN weights from a diverged run)")
    if v.shape[-1] != index.dim:
        raise ValueError(
            f"the model embeds to {v.shape[-1]} dimensions but the index holds {index.dim}; "
            f"use the checkpoint the index was built with ({index.checkpoint})"
        )
    return v


# Every query takes ``where`` (a catalog filter: galaxalign.search.filters.CatalogFilter, its dict
# or text form) and ``offset`` (skip the first results: the next page).
def query_vector(index: SearchIndex, vector: np.ndarray, k: int = 10, where=None, offset: int = 0,
                 exclude: Iterable[str] = (), features: Sequence[str] | None = None) -> list[Hit]:
    """Galaxies nearest to an embedding computed elsewhere (e.g. a cached query vector).

    When the index's catalog carries per-galaxy answers, every hit carries its galaxy's ``answers``;
    ``features`` (the answer ids of a feature query) adds ``matched``, how many of them it has."""
    hits = index.search(_check_dim(index, np.asarray(vector)), k, exclude=exclude, where=where, offset=offset)
    return with_answers(index, hits, features)


def query_image(index: SearchIndex, model, image: np.ndarray, k: int = 10, where=None, offset: int = 0) -> list[Hit]:
    """Galaxies that look like ``image`` (image encoder)."""
    return query_vector(index, embed_image(model, image, "image"), k, where, offset)


def query_sketch(index: SearchIndex, model, image: np.ndarray, k: int = 10, where=None, offset: int = 0) -> list[Hit]:
    """Galaxies matching a user's drawing (symbol encoder)."""
    return query_vector(index, embed_image(model, image, "symbol"), k, where, offset)


def query_symbol(index: SearchIndex, model, answers: str | Sequence[str], k: int = 10, where=None,
                 offset: int = 0) -> list[Hit]:
    """Galaxies matching the pictogram composed from Galaxy Zoo answers (symbol encoder), drawn with the
    symbol book and decision tree the index's model was trained with, ranked as a feature query."""
    return query_features(index, model, answers, "symbol", k, where, offset)


# A feature query: Galaxy Zoo answer ids, run through the symbol encoder (the composed pictogram),
# the text encoder (the answers said in the volunteers' wording) or both.
# OUR CHOICE: ``both`` (the default) is the unit-normalised sum of the unit symbol and unit text query
# embeddings: equal weights, the direction halfway between them on the sphere, so a galaxy near both
# queries outranks one near only one; the paper defines no multi-modal query.
FEATURE_VIAS = ("symbol", "text", "both")
DEFAULT_VIA = "both"


def feature_caption(answers: str | Sequence[str], taxonomy=None) -> str:
    """The answers in the volunteers' wording (``galaxalign.answers.caption``) with ``taxonomy``'s
    tree: the text a feature query sends to the text encoder."""
    from galaxalign.answers import caption

    tree = taxonomy.tree if taxonomy is not None else None
    return caption(parse_answers(answers, tree), tree)


def feature_text(answers: str | Sequence[str], taxonomy=None) -> str:
    """What a feature query sends to the text encoder: its caption in the taxonomy's first prompt
    template (``{label}`` for the shipped ones), as per-galaxy training phrases each galaxy's caption
    (``class_bank.galaxy_rows``) and as ``evaluation.feature_search`` asks its text queries."""
    return query_prompt(feature_caption(answers, taxonomy), taxonomy)


def combine_feature_vectors(symbol_vector: np.ndarray, text_vector: np.ndarray) -> np.ndarray:
    """The ``both`` query of a feature search: the unit-normalised sum of the unit symbol and text
    query embeddings (the choice is named at ``FEATURE_VIAS``)."""
    s = np.asarray(symbol_vector, dtype=np.float32).reshape(-1)
    t = np.asarray(text_vector, dtype=np.float32).reshape(-1)
    v = s / max(float(np.linalg.norm(s)), 1e-12) + t / max(float(np.linalg.norm(t)), 1e-12)
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def check_via(via: str) -> str:
    if via not in FEATURE_VIAS:
        raise QueryError(f"via must be one of {', '.join(FEATURE_VIAS)}, got {via!r}")
    return via


def feature_vector(model, answers: str | Sequence[str], via: str = DEFAULT_VIA, taxonomy=None) -> np.ndarray:
    """(D,) query embedding of a feature query (answer ids) run as ``via``: symbol, text or both."""
    check_via(via)
    parsed = parse_answers(answers, taxonomy.tree if taxonomy is not None else None)
    if via == "text":
        return embed_text(model, feature_text(parsed, taxonomy))
    symbol = embed_image(model, render_query_symbol(parsed, taxonomy=taxonomy), "symbol")
    if via == "symbol":
        return symbol
    return combine_feature_vectors(symbol, embed_text(model, feature_text(parsed, taxonomy)))


# OUR CHOICE: a feature query re-ranks the 1,000 galaxies nearest its composed query vector by the
# expected fraction of its answers they have (search.features); an index that small is ranked whole.
RERANK_CANDIDATES = 1000


def rank_features(index: SearchIndex, model, answers: Sequence[str], vector: np.ndarray, via: str = DEFAULT_VIA,
                  k: int = 10, where=None, offset: int = 0) -> list[Hit]:
    """Galaxies ranked by the expected fraction of the feature query ``answers`` they have
    (``search.features``: the model's posterior over the decision-tree paths it was aligned with),
    among the ``RERANK_CANDIDATES`` nearest the composed query ``vector``. Each hit's ``score`` is
    that expected fraction; ``matched`` (when the catalog has answers) the true count. Without a
    taxonomy of the index the hits are the plain nearest neighbours of ``vector``."""
    from galaxalign.search.features import path_bank
    check_via(via)
    if offset < 0:
        raise ValueError(f"offset must be at least 0, got {offset}")
    tax = index_taxonomy(index)
    if tax is None or model is None:
        return query_vector(index, vector, k, where, offset, features=answers)
    from galaxalign.answers import AnswerError

    try:
        bank = path_bank(model, tax)
    except AnswerError:  # no paths to rank by (a taxonomy without answers): the nearest neighbours
        return query_vector(index, vector, k, where, offset, features=answers)
    depth = min(len(index), max(RERANK_CANDIDATES, k + offset))
    if depth < 1:
        return []
    _, rows = index.search_vectors(_check_dim(index, np.asarray(vector)), depth, where=where)
    rows = rows[0][rows[0] >= 0]
    expected = bank.scores(index.vectors(rows), [tuple(answers)], via)[0]
    order = np.argsort(-expected, kind="stable")  # ties keep the cosine order
    return with_answers(index, index.hits(rows[order], expected[order], k=k, offset=offset), answers)


def query_features(index: SearchIndex, model, answers: str | Sequence[str], via: str = DEFAULT_VIA, k: int = 10,
                   where=None, offset: int = 0) -> list[Hit]:
    """Galaxies that have the given Galaxy Zoo answers (a feature query), found through the symbol
    encoder, the text encoder or both and ranked by how many of the answers they are expected to
    have (:func:`rank_features`); each hit carries ``matched`` (how many of the answers its galaxy
    has) when the index's catalog carries per-galaxy answers."""
    tax = index_taxonomy(index)
    parsed = parse_answers(answers, tax.tree if tax is not None else None)
    return rank_features(index, model, parsed, feature_vector(model, parsed, via, tax), via, k, where, offset)


def query_text(index: SearchIndex, model, text: str, k: int = 10, where=None, offset: int = 0) -> list[Hit]:
    """Galaxies matching a description (text encoder)."""
    return query_vector(index, embed_text(model, text), k, where, offset)


def query_id(index: SearchIndex, galaxy_id: str, k: int = 10, include_self: bool = False, where=None,
             offset: int = 0) -> list[Hit]:
    """Neighbours of a catalog galaxy, from its stored embedding (no model needed).

    OUR CHOICE: the galaxy itself (score 1.0) is left out unless ``include_self``.
    """
    v = index.vector(galaxy_id)
    return query_vector(index, v, k, where, offset, exclude=() if include_self else (str(galaxy_id),))
