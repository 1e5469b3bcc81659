"""Optimiser and learning-rate schedule: AdamW with open_clip's weight-decay rule, cosine with warm-up."""
from __future__ import annotations

import math

import torch
from torch import nn


def exclude_from_weight_decay(name: str, param: torch.Tensor) -> bool:
    """open_clip's rule: gains, biases, norms and the temperature are not decayed."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def is_head_parameter(name: str) -> bool:
    """The projection heads (modules named ``proj``, new and randomly initialised in the offline and
    tiny backbones), the image-only classifier head and the temperature: what ``head_lr_scale`` speeds up."""
    parts = name.split(".")
    return name == "logit_scale" or parts[0] == "classifier" or (len(parts) >= 2 and parts[-2] == "proj")


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-6,
                    head_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: decayed and not decayed groups, and with ``head_lr_scale``
    != 1 the heads (``is_head_parameter``) in their own two groups at ``lr * head_lr_scale``. Group 0
    is always the towers' not-decayed group at the base rate (the rate the logs show)."""
    groups = {(False, False): [], (True, False): [], (False, True): [], (True, True): []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = head_lr_scale != 1 and is_head_parameter(name)
        groups[(not exclude_from_weight_decay(name, p), head)].append(p)
    if not any(groups.values()):
        raise ValueError("no trainable parameters: every tower is locked")
    out = [{"params": groups[(False, False)], "weight_decay": 0.0}, {"params": groups[(True, False)], "weight_decay": weight_decay}]
    if head_lr_scale != 1:
        out += [{"params": groups[(False, True)], "weight_decay": 0.0, "lr": lr * head_lr_scale},
                {"params": groups[(True, True)], "weight_decay": weight_decay, "lr": lr * head_lr_scale}]
    return torch.optim.AdamW(out, lr=lr, betas=tuple(betas), eps=eps)


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


def stage_optimizer(model: nn.Module, opt: dict, stage, total_steps: int, device_type: str, use_scaler: bool):
    """A stage's AdamW (``opt``: the config's ``optimizer`` section; lr and warm-up of the stage), its
    cosine schedule over ``total_steps`` and its gradient scaler (fp16 only)."""
    optimizer = build_optimizer(model, stage.lr, opt["weight_decay"], (opt["beta1"], opt["beta2"]), opt["eps"],
                                head_lr_scale=float(opt["head_lr_scale"]))
    scheduler = cosine_schedule(optimizer, total_steps, stage.warmup_fraction)
    scaler = torch.amp.GradScaler(device_type, enabled=use_scaler)
    return optimizer, scheduler, scaler


def optimizer_step(optimizer, scheduler, scaler, trainable: list, clip: float | None) -> None:
    """One optimiser step of accumulated (scaled) gradients: clip (``grad_clip_norm``), step, zero, schedule."""
    if clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, float(clip))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
