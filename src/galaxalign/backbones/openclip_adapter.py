"""kind "open_clip": any open_clip architecture with a pretrained tag or a local checkpoint file.

The paper's setting is ``{"kind": "open_clip", "model": "ViT-B-16", "pretrained": "openai"}``.
Tags download from the hub (the normal path for users); offline, pass a local file instead.
A custom architecture can be given inline as ``"model_config"`` (open_clip's JSON config as a dict);
it is registered under ``"model"`` before building, which is how tests build a tiny random CLIP.
"""
from __future__ import annotations

import copy
import os
from typing import Sequence

import torch

from galaxalign.backbones.base import DualEncoder

KNOWN_KEYS = {"kind", "model", "pretrained", "model_config", "image_size", "precision", "quick_gelu"}


class OpenCLIPTokenizer:
    """Picklable wrapper around open_clip's tokenizer for one architecture."""

    def __init__(self, model_name: str):
        import open_clip

        self.model_name = model_name
        self._tok = open_clip.get_tokenizer(model_name)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tok(list(texts))


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def build_open_clip(spec: dict, load_weights: bool = True) -> DualEncoder:
    import open_clip
    from open_clip import factory

    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"backbone spec kind 'open_clip': unknown keys {sorted(unknown)}; known {sorted(KNOWN_KEYS)}")
    name = spec.get("model")
    if not name:
        raise ValueError("backbone spec kind 'open_clip' needs 'model' (e.g. 'ViT-B-16')")
    if spec.get("model_config") is not None:
        cfg = copy.deepcopy(spec["model_config"])
        if "vision_cfg" not in cfg or "text_cfg" not in cfg or "embed_dim" not in cfg:
            raise ValueError(f"open_clip model_config for {name!r} needs embed_dim, vision_cfg and text_cfg")
        factory._MODEL_CONFIGS[name] = cfg
    elif name not in open_clip.list_models():
        raise ValueError(f"open_clip has no architecture {name!r}; see open_clip.list_models()")

    # OpenAI-trained weights use QuickGELU although the plain configs (ViT-B-16) say GELU; open_clip's
    # tag registry knows. The resolved flag is stored in the spec, so a model rebuilt without weights
    # (load_model) gets the same activation. For a local OpenAI checkpoint set "quick_gelu": true.
    quick_gelu = spec.get("quick_gelu")
    if quick_gelu is None:
        tag = spec.get("pretrained")
        quick_gelu = bool(tag and open_clip.get_pretrained_cfg(name, str(tag)).get("quick_gelu", False))
    pretrained = spec.get("pretrained") if load_weights else None
    if pretrained and _looks_like_path(str(pretrained)) and not os.path.isfile(pretrained):
        raise FileNotFoundError(f"open_clip checkpoint file {pretrained!r} (backbone spec 'pretrained') does not exist")
    try:
        # force_custom_text puts the text tower in its own module (model.text), so it can be held,
        # locked and saved without the image tower; open_clip converts OpenAI checkpoints to it.
        clip = open_clip.create_model(
            name,
            pretrained=pretrained,
            force_custom_text=True,
            force_quick_gelu=bool(quick_gelu),
            force_image_size=spec.get("image_size"),
            precision=spec.get("precision", "fp32"),
        )
    except RuntimeError as exc:
        if pretrained and not os.path.isfile(str(pretrained)):
            raise RuntimeError(
                f"could not fetch open_clip weights {name!r} / pretrained={pretrained!r} ({exc}). "
                "Without internet, download the checkpoint elsewhere (e.g. open_clip.create_model("
                f"'{name}', pretrained='{pretrained}') then copy ~/.cache/huggingface) or pass a local file: "
                f"{{'kind': 'open_clip', 'model': '{name}', 'pretrained': '/path/to/checkpoint.pt'}}"
            ) from exc
        raise
    preprocess = getattr(clip.visual, "preprocess_cfg", {}) or {}
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    embed_dim = int(clip.text.text_projection.shape[1]) if getattr(clip.text, "text_projection", None) is not None \
        else int(clip.visual.output_dim)
    backbone = DualEncoder(
        {"kind": "open_clip", **{k: v for k, v in spec.items() if k != "kind"}, "quick_gelu": bool(quick_gelu)},
        clip.visual,
        clip.text,
        OpenCLIPTokenizer(name),
        image_size=int(size),
        embed_dim=embed_dim,
        image_mean=preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN),
        image_std=preprocess.get("std", open_clip.OPENAI_DATASET_STD),
        logit_scale_init=float(clip.logit_scale.detach()),
    )
    return backbone
