"""Text tower ``hf``: any Hugging Face sentence encoder (a hub name such as
``sentence-transformers/all-mpnet-base-v2``, or a local folder), attention-masked mean pooling (as
sentence-transformers) and a linear projection into the shared space.

Spec: ``{"kind": "hf", "model": NAME_OR_FOLDER, "context_length": 64}``. A hub name downloads on
first use (Hugging Face's cache); a folder is read locally only. ``load_weights=False`` reads the
configuration only (random weights: a trained GalaxAlign model's state dict fills them).
"""
from __future__ import annotations

import os
from typing import Sequence

from torch import nn

from galaxalign.backbones.base import LockableTower
from galaxalign.backbones.offline import MiniLMTextTower
from galaxalign.backbones.towers import TextTowerSpec, register_text_tower

KNOWN_KEYS = {"kind", "model", "context_length"}


class HFSentenceTower(MiniLMTextTower):
    """:class:`~galaxalign.backbones.offline.MiniLMTextTower` (pooling, memo of a frozen encoder) over
    any ``transformers`` encoder."""

    def __init__(self, model: str, embed_dim: int, load_weights: bool):
        LockableTower.__init__(self)
        from transformers import AutoConfig, AutoModel

        local = os.path.isdir(model)
        if load_weights:
            self.bert = AutoModel.from_pretrained(model, local_files_only=local)
        else:
            self.bert = AutoModel.from_config(AutoConfig.from_pretrained(model, local_files_only=local))
        width = self.bert.config.hidden_size
        self.proj = nn.Linear(width, embed_dim)
        nn.init.normal_(self.proj.weight, std=width**-0.5)  # as every tower's head
        nn.init.zeros_(self.proj.bias)

    def lock_groups(self):
        """Embeddings, each encoder layer (BERT-style ``encoder.layer`` or ``layers``), the projection;
        an encoder of another layout locks as one group."""
        enc = getattr(self.bert, "encoder", None)
        layers = list(getattr(enc, "layer", None) or getattr(enc, "layers", None) or [])
        embeddings = getattr(self.bert, "embeddings", None)
        if not layers or embeddings is None:
            return [self.bert, self.proj]
        pooler = [self.bert.pooler] if getattr(self.bert, "pooler", None) is not None else []
        return [[embeddings, *pooler], *layers, self.proj]


class HFTokenizer:
    """Callable: list of texts -> {"input_ids", "attention_mask"} padded to the longest."""

    def __init__(self, model: str, context_length: int):
        from transformers import AutoTokenizer

        self.context_length = int(context_length)
        self._tok = AutoTokenizer.from_pretrained(model, local_files_only=os.path.isdir(model))

    def __call__(self, texts: Sequence[str]) -> dict:
        enc = self._tok(list(texts), padding=True, truncation=True, max_length=self.context_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@register_text_tower("hf")
def build_hf_text_tower(spec: dict, embed_dim: int, load_weights: bool) -> TextTowerSpec:
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"text tower kind 'hf': unknown keys {sorted(unknown)}; known {sorted(KNOWN_KEYS)}")
    if not spec.get("model"):
        raise ValueError("text tower kind 'hf' needs 'model' (a Hugging Face name or a local folder)")
    model = str(spec["model"])
    return TextTowerSpec(HFSentenceTower(model, embed_dim, load_weights), HFTokenizer(model, spec.get("context_length", 64)))
