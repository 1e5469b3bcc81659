"""The one interface every image–text backbone offers: a dual encoder.

A ``DualEncoder`` holds two towers that each end in a projection into the shared embedding space:
``visual`` (images ``(B,3,S,S)`` -> ``(B,D)``) and ``text`` (tokens -> ``(B,D)``), a tokenizer, the
image preprocessing it expects (size, mean, std) and a learnable temperature ``logit_scale``.
Towers are plain ``nn.Module``s with a ``lock(n, ...)`` method so that a deep copy of the image tower
(the stage-2 symbol encoder) can be locked the same way.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# CLIP convention: logit_scale stores log(1/temperature); 0.07 is CLIP's initial temperature.
LOGIT_SCALE_INIT = math.log(1 / 0.07)


def _params_of(group: Any) -> list[nn.Parameter]:
    items = group if isinstance(group, (list, tuple)) else [group]
    out: list[nn.Parameter] = []
    for item in items:
        if isinstance(item, nn.Parameter):
            out.append(item)
        elif isinstance(item, nn.Module):
            out.extend(item.parameters())
        else:
            raise TypeError(f"a lock group holds modules or parameters, got {type(item).__name__}")
    return out


def _modules_of(group: Any) -> list[nn.Module]:
    items = group if isinstance(group, (list, tuple)) else [group]
    return [m for item in items if isinstance(item, nn.Module) for m in item.modules()]


def batch_norms(*modules: nn.Module) -> list[nn.Module]:
    """Every batch-norm layer inside ``modules``."""
    return [m for root in modules for m in root.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class HoldsNormStats:
    """Mixin for an ``nn.Module``: ``train()`` leaves the batch norms of ``held_norms()`` in eval mode.

    Their running statistics stay frozen (their scales and shifts still train). The one mechanism
    behind ``lock(..., freeze_bn_stats=True)`` and the training option ``model.freeze_bn_stats``.
    """

    def held_norms(self) -> list[nn.Module]:
        return []

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        for m in self.held_norms():
            m.eval()
        return self


class LockableTower(HoldsNormStats, nn.Module):
    """A tower whose parameters come in ordered groups (input side first) that ``lock`` can freeze.

    Subclasses implement ``lock_groups()``. ``lock(n)`` freezes every group but the last ``n``, like
    open_clip's ``lock_image_tower(unlocked_groups)``; the projection head is the last group, so
    ``lock(1)`` trains only the projection.
    """

    def lock_groups(self) -> list[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        groups = self.lock_groups()
        if unlocked_groups < 0:
            raise ValueError(f"unlocked_groups must be >= 0, got {unlocked_groups}")
        frozen = groups[: max(len(groups) - unlocked_groups, 0)]
        for group in groups:
            for p in _params_of(group):
                p.requires_grad_(True)
        for group in frozen:
            for p in _params_of(group):
                p.requires_grad_(False)
        # Frozen batch norms would still drift their running statistics in train mode.
        self._frozen_norms = (
            [m for g in frozen for m in _modules_of(g) if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if freeze_bn_stats
            else []
        )
        self.train(self.training)

    def held_norms(self) -> list[nn.Module]:
        return getattr(self, "_frozen_norms", [])


class DualEncoder(nn.Module):
    """Image tower + text tower + tokenizer + preprocessing facts + learnable temperature."""

    def __init__(
        self,
        spec: dict,
        visual: nn.Module,
        text: nn.Module,
        tokenizer: Callable[[Sequence[str]], Any],
        image_size: int,
        embed_dim: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        logit_scale_init: float = LOGIT_SCALE_INIT,
    ):
        super().__init__()
        self.spec = dict(spec)
        self.visual = visual
        self.text = text
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.embed_dim = int(embed_dim)
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))

    def tokenize(self, texts: Sequence[str]):
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts))

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens, normalize: bool = False) -> torch.Tensor:
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        self.visual.lock(unlocked_groups, freeze_bn_stats=freeze_bn_stats)

    def lock_text_tower(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        lock_text(self.text, unlocked_layers, freeze_layer_norm)


def lock_text(tower: nn.Module, unlocked_layers: int, freeze_layer_norm: bool = True) -> None:
    """Freeze a text tower but its last ``unlocked_layers`` groups (ours or open_clip's)."""
    if isinstance(tower, LockableTower):
        tower.lock(unlocked_layers)
    else:  # open_clip TextTransformer / HFTextEncoder
        tower.lock(unlocked_layers, freeze_layer_norm)


def lock_image(tower: nn.Module, unlocked_groups: int, freeze_bn_stats: bool = False) -> None:
    tower.lock(unlocked_groups, freeze_bn_stats=freeze_bn_stats)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
