"""Queries: turn an image, a galaxy id, a description, Galaxy Zoo answers or a sketch into the
nearest galaxies of an index.

Images are embedded by the image encoder, descriptions by the text encoder, and both composed
symbols (``symbols.render_symbol``) and hand-drawn sketches by the symbol encoder: the three
modalities GalaxAlign aligns, so every kind of query lands in the same embedding space.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

# Size limits of query images are those of the one image decoder.
from galaxalign.datasets.images import MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS
from galaxalign.search.index import Hit, SearchIndex

# OUR CHOICE: query symbols are drawn at 224 px, the encoders' usual input size.
SYMBOL_SIZE = 224
# OUR CHOICE: descriptions up to 1000 characters, far more than any text encoder reads.
MAX_TEXT_CHARS = 1000


class QueryError(ValueError):
    """A query the user can fix (bad image, unknown answer, empty text); the message says how."""


def load_image(data: bytes | str | Path, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None) -> np.ndarray:
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
        return decode_image(data, name, max_pixels=max_pixels)
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
    return text


def index_taxonomy(index):
    """The label scheme an index was embedded with (index.json ``taxonomy``), with the decision tree
    and symbol book the model was trained with; None when the index records none."""
    cached = getattr(index, "_galaxalign_taxonomy", False)
    if cached is not False:
        return cached
    tax = None
    data = (getattr(index, "info", None) or {}).get("taxonomy")
    if data is not None:
        from galaxalign.taxonomy import load_taxonomy

        try:
            tax = load_taxonomy(data)
        except (FileNotFoundError, ValueError):
            tax = None
    try:
        index._galaxalign_taxonomy = tax
    except AttributeError:
        pass
    return tax


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
    v = np.asarray(vectors.detach().cpu().numpy() if hasattr(vectors, "detach") else vectors, dtype=np.float32)
    return v.reshape(-1, v.shape[-1])[0]


def embed_image(model, image: np.ndarray, modality: str = "image") -> np.ndarray:
    """(D,) embedding of one uint8 image by the image (or symbol) encoder."""
    from galaxalign.inference import embed_arrays

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise QueryError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return _one(embed_arrays(model, image[None], modality=modality))


def embed_text(model, text: str) -> np.ndarray:
    from galaxalign.inference import encode_texts

    return _one(encode_texts(model, [check_text(text or "")]))


def _check_dim(index: SearchIndex, v: np.ndarray) -> np.ndarray:
    if v.shape[-1] != index.dim:
        raise ValueError(
            f"the model embeds to {v.shape[-1]} dimensions but the index holds {index.dim}; "
            f"use the checkpoint the index was built with ({index.checkpoint})"
        )
    return v


def query_image(index: SearchIndex, model, image: np.ndarray, k: int = 10) -> list[Hit]:
    """Galaxies that look like ``image`` (image encoder)."""
    return index.search(_check_dim(index, embed_image(model, image, "image")), k)


def query_sketch(index: SearchIndex, model, image: np.ndarray, k: int = 10) -> list[Hit]:
    """Galaxies matching a user's drawing (symbol encoder)."""
    return index.search(_check_dim(index, embed_image(model, image, "symbol")), k)


def query_symbol(index: SearchIndex, model, answers: str | Sequence[str], k: int = 10) -> list[Hit]:
    """Galaxies matching the pictogram composed from Galaxy Zoo answers (symbol encoder), drawn with the
    symbol book and decision tree the index's model was trained with."""
    tax = index_taxonomy(index)
    return query_sketch(index, model, render_query_symbol(answers, taxonomy=tax), k)


def query_text(index: SearchIndex, model, text: str, k: int = 10) -> list[Hit]:
    """Galaxies matching a description (text encoder)."""
    return index.search(_check_dim(index, embed_text(model, text)), k)


def query_id(index: SearchIndex, galaxy_id: str, k: int = 10, include_self: bool = False) -> list[Hit]:
    """Neighbours of a catalog galaxy, from its stored embedding (no model needed).

    OUR CHOICE: the galaxy itself (score 1.0) is left out unless ``include_self``.
    """
    v = index.vector(galaxy_id)
    return index.search(v, k, exclude=() if include_self else (str(galaxy_id),))
