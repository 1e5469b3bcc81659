"""What the evaluation protocols score: image embeddings of a catalog (memoised per model) and the
image-only baseline's head scores."""
from __future__ import annotations

import numpy as np


def head_scores(model, images: list[np.ndarray]) -> np.ndarray:
    """Class probabilities of the image-only baseline's head (``model.classify``) for uint8 images."""
    from galaxalign.inference import encode_images

    return encode_images(model, images, "image", output="head")


def head_scores_catalog(model, catalog, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """:func:`head_scores` over a catalog, in batches."""
    from galaxalign.inference import encode_images

    return encode_images(model, catalog, "image", output="head", batch_size=batch_size, progress=progress)


def cached_embeddings(model, catalog, cache: dict | None, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Image embeddings of a catalog's rows (``inference.embed_catalog``), memoised in ``cache`` by the
    catalog's ids: every metric of one model on the same galaxies shares one embedding pass."""
    from galaxalign.inference import embed_catalog

    key = ("image", tuple(catalog["id"].astype(str)))
    if cache is None:
        return embed_catalog(model, catalog, modality="image", batch_size=batch_size, progress=progress)
    if key not in cache:
        cache[key] = embed_catalog(model, catalog, modality="image", batch_size=batch_size, progress=progress)
    return cache[key]
