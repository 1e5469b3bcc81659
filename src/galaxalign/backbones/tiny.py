"""kind "tiny": a random-initialised, few-thousand-parameter dual encoder for fast tests and smoke runs.

No batch norm anywhere: features of a sample never depend on the rest of the batch, so
once-per-class encoding is exactly equal to per-sample encoding.
"""
from __future__ import annotations

import re
import zlib
from typing import Sequence

import torch
from torch import nn

from galaxalign.backbones.base import DualEncoder, LockableTower

DEFAULTS = {"embed_dim": 32, "image_size": 32, "width": 16, "vocab_size": 2048, "context_length": 16}


class HashingTokenizer:
    """Lower-cased words hashed (crc32, stable across runs) into ``vocab_size - 1`` buckets; 0 pads."""

    def __init__(self, vocab_size: int = 2048, context_length: int = 16):
        self.vocab_size = int(vocab_size)
        self.context_length = int(context_length)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z0-9]+", str(text).lower())[: self.context_length]
            for j, w in enumerate(words):
                out[i, j] = 1 + zlib.crc32(w.encode()) % (self.vocab_size - 1)
        return out


class TinyImageTower(LockableTower):
    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, stride=2, padding=1), nn.GroupNorm(4, w), nn.GELU())
        self.stage1 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(4, 2 * w), nn.GELU())
        self.stage2 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(4, 4 * w), nn.GELU())
        self.proj = nn.Linear(4 * w, embed_dim)

    def lock_groups(self):
        return [self.stem, self.stage1, self.stage2, self.proj]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.proj(x.mean(dim=(2, 3)))


class TinyTextTower(LockableTower):
    """Word embeddings, masked mean pool, one MLP layer, projection."""

    def __init__(self, vocab_size: int, width: int, embed_dim: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, 4 * width, padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(4 * width, 4 * width), nn.GELU())
        self.proj = nn.Linear(4 * width, embed_dim)

    def lock_groups(self):
        return [self.token_embedding, self.mlp, self.proj]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != 0).unsqueeze(-1).to(self.token_embedding.weight.dtype)
        pooled = (self.token_embedding(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.proj(self.mlp(pooled))


def build_tiny(spec: dict, load_weights: bool = True) -> DualEncoder:
    cfg = {**DEFAULTS, **{k: v for k, v in spec.items() if k != "kind"}}
    unknown = set(cfg) - set(DEFAULTS) - {"seed"}
    if unknown:
        raise ValueError(f"backbone spec kind 'tiny': unknown keys {sorted(unknown)}; known {sorted(DEFAULTS)}")
    if cfg["width"] % 4:
        raise ValueError(f"backbone spec kind 'tiny': width must be a multiple of 4, got {cfg['width']}")
    with torch.random.fork_rng(enabled="seed" in cfg):  # a seeded build leaves the global RNG alone
        if "seed" in cfg:
            torch.manual_seed(int(cfg["seed"]))
        visual = TinyImageTower(cfg["width"], cfg["embed_dim"])
        text = TinyTextTower(cfg["vocab_size"], cfg["width"], cfg["embed_dim"])
    return DualEncoder(
        {"kind": "tiny", **cfg},
        visual,
        text,
        HashingTokenizer(cfg["vocab_size"], cfg["context_length"]),
        image_size=cfg["image_size"],
        embed_dim=cfg["embed_dim"],
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
    )
