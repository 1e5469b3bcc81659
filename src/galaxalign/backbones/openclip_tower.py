"""Image and text towers ``open_clip``: the visual or the text tower of an open_clip model (spec as
for backbone kind ``open_clip``: ``model``, ``pretrained``, ``model_config``, ``image_size``,
``precision``, ``quick_gelu``). open_clip towers end in their own projection, so their model's
embedding width is the shared space's: the other tower projects into it.
"""
from __future__ import annotations

from galaxalign.backbones.openclip_adapter import build_open_clip
from galaxalign.backbones.towers import ImageTowerSpec, TextTowerSpec, register_image_tower, register_text_tower


def native_width(spec: dict) -> int:
    """The open_clip model's embedding width, read from its config (nothing is built)."""
    if spec.get("model_config") is not None:
        return int(spec["model_config"]["embed_dim"])
    import open_clip

    cfg = open_clip.get_model_config(str(spec.get("model")))
    if cfg is None:
        raise ValueError(f"open_clip has no architecture {spec.get('model')!r}; see open_clip.list_models()")
    return int(cfg["embed_dim"])


def _clip(spec: dict, load_weights: bool):
    return build_open_clip({**{k: v for k, v in spec.items() if k != "kind"}, "kind": "open_clip"}, load_weights)


@register_image_tower("open_clip", native_dim=native_width)
def build_open_clip_image(spec: dict, embed_dim: int, load_weights: bool) -> ImageTowerSpec:
    clip = _clip(spec, load_weights)
    return ImageTowerSpec(clip.visual, clip.image_size, clip.image_mean, clip.image_std, native_dim=clip.embed_dim)


@register_text_tower("open_clip", native_dim=native_width)
def build_open_clip_text(spec: dict, embed_dim: int, load_weights: bool) -> TextTowerSpec:
    clip = _clip(spec, load_weights)
    return TextTowerSpec(clip.text, clip.tokenizer, native_dim=clip.embed_dim)
