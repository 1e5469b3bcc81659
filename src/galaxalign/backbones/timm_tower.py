"""Image tower ``timm``: any timm image model, including ``hf_hub:`` names (e.g. Zoobot's galaxy
encoders, ``hf_hub:mwalmsley/zoobot-encoder-convnext_nano``), as the image half of a backbone.

Spec (inside ``{"kind": "towers", "image": {...}}``)::

    {"kind": "timm", "model": "convnext_nano", "pretrained": true, "taps": null,
     "image_size": null, "model_kwargs": {}}

``pretrained`` downloads the weights (timm's cache); ``load_weights=False`` (loading a trained
GalaxAlign model, tests) builds the architecture only. ``taps``: ``None`` projects timm's pooled
pre-logits features; a list of feature indices (``forward_intermediates``) pools each tapped
stage, concatenates, standardises with a data-fitted normaliser and projects, the same protocol as
the offline EfficientNet tower (``pooled``, ``fit_feature_normalizer``, 2-D pooled input), so the
trunk-feature cache and the recipe's frozen-trunk training work with it. Preprocessing (size,
mean, std) is timm's data config for the model unless ``image_size`` is set.
"""
from __future__ import annotations

import torch
from torch import nn

from galaxalign.backbones.base import LockableTower
from galaxalign.backbones.towers import ImageTowerSpec, register_image_tower

KNOWN_KEYS = {"kind", "model", "pretrained", "taps", "image_size", "model_kwargs"}


class TimmImageTower(LockableTower):
    """A timm trunk (classifier removed), pooled, then a linear projection into the shared space."""

    def __init__(self, model: str, embed_dim: int, load_weights: bool, pretrained: bool = True, taps=None,
                 image_size: int | None = None, model_kwargs: dict | None = None):
        super().__init__()
        import timm
        from timm.data import resolve_model_data_config

        self.trunk = timm.create_model(model, pretrained=bool(pretrained and load_weights), num_classes=0,
                                       **(model_kwargs or {}))
        data = resolve_model_data_config(self.trunk)
        self.image_size = int(image_size or data["input_size"][-1])
        self.image_mean = tuple(float(m) for m in data["mean"])
        self.image_std = tuple(float(s) for s in data["std"])
        self.taps = None if taps is None else [int(t) for t in ([taps] if isinstance(taps, int) else taps)]
        if self.taps is not None and (not self.taps or len(set(self.taps)) != len(self.taps)):
            raise ValueError(f"timm tower {model!r}: 'taps' must list distinct feature indices, got {taps!r}")
        with torch.no_grad():
            was = self.trunk.training
            self.trunk.eval()
            width = self.pooled(torch.zeros(1, 3, self.image_size, self.image_size)).shape[1]
            self.trunk.train(was)
        if self.taps is not None:
            self.register_buffer("feature_mean", torch.zeros(width))
            self.register_buffer("feature_std", torch.ones(width))
        self.feature_width = int(width)
        self.proj = nn.Linear(width, embed_dim)
        # OUR CHOICE (as every tower's head): N(0, 1/in) weights, zero bias, pretrained geometry kept up to scale.
        nn.init.normal_(self.proj.weight, std=width**-0.5)
        nn.init.zeros_(self.proj.bias)

    def lock_groups(self):
        """timm's own coarse parameter groups (stem, stages or blocks, head norm), input side first,
        then the projection."""
        from timm.models import group_parameters

        params = dict(self.trunk.named_parameters())
        groups = group_parameters(self.trunk, self.trunk.group_matcher(coarse=True))
        return [[params[n] for n in names] for _, names in sorted(groups.items())] + [self.proj]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) images -> (B,F) pooled trunk features, before normaliser and projection."""
        if self.taps is None:
            return self.trunk(x)
        maps = self.trunk.forward_intermediates(x, indices=self.taps, intermediates_only=True)
        return torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.taps is not None:
            pooled = (pooled - self.feature_mean) / self.feature_std
        return self.proj(pooled)

    @torch.no_grad()
    def fit_feature_normalizer(self, pooled: torch.Tensor) -> None:
        """Set the normaliser to the per-feature mean and std of ``pooled`` (N,F) training features."""
        if self.taps is None:
            return
        pooled = pooled.reshape(-1, self.feature_width).double()
        self.feature_mean.copy_(pooled.mean(0).to(self.feature_mean.dtype))
        self.feature_std.copy_(pooled.std(0).clamp(min=1e-6).to(self.feature_std.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # already pooled (frozen-trunk feature cache)
            if x.shape[1] != self.feature_width:
                raise ValueError(f"pooled features of width {x.shape[1]}, this tower expects {self.feature_width}")
            return self.project(x)
        return self.project(self.pooled(x))


@register_image_tower("timm")
def build_timm_tower(spec: dict, embed_dim: int, load_weights: bool) -> ImageTowerSpec:
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"image tower kind 'timm': unknown keys {sorted(unknown)}; known {sorted(KNOWN_KEYS)}")
    if not spec.get("model"):
        raise ValueError("image tower kind 'timm' needs 'model' (a timm name, or hf_hub:owner/name)")
    tower = TimmImageTower(str(spec["model"]), embed_dim, load_weights, bool(spec.get("pretrained", True)), spec.get("taps"),
                           spec.get("image_size"), spec.get("model_kwargs"))
    return ImageTowerSpec(tower, tower.image_size, tower.image_mean, tower.image_std)
