"""Optimiser and learning-rate schedule: AdamW with open_clip's weight-decay rule, cosine with warm-up."""
from __future__ import annotations

import math

import torch
from torch import nn


def exclude_from_weight_decay(name: str, param: torch.Tensor) -> bool:
    """open_clip's rule: gains, biases, norms and the temperature are not decayed."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-6) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in two groups: decayed and not decayed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if exclude_from_weight_decay(name, p) else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("no trainable parameters: every tower is locked")
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


class CosineWithWarmup:
    """lr multiplier: linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    A callable object (not a lambda) so the LambdaLR that uses it can be pickled with a checkpoint.
    """

    def __init__(self, total_steps: int, warmup_steps: int):
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine schedule whose warm-up is a FRACTION of the stage's optimiser steps (rounded)."""
    warmup = int(round(warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineWithWarmup(total_steps, warmup))
