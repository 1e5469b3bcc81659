"""Contrastive losses for aligning images, symbols and text (small modules: features in, scalar out).

Texts and symbols are class-level, so one batch holds the same text / symbol many times. The stock
CLIP loss (targets = the diagonal) then pushes apart samples of the same class. The default here is
LABEL-AWARE: every same-class pair is a positive. With logits ``L = s * A @ B.T`` and the same-label
mask ``M_ij = [y_i == y_j]``, the targets are ``T = M / rowsum(M)`` and

    loss = 1/2 * ( KL(T || softmax_rows(L)) + KL(T || softmax_rows(L.T)) )   (mean over rows)

i.e. soft cross-entropy minus the (constant) target entropy, so a perfect alignment costs 0 and
gradients equal those of the soft cross-entropy. With all labels distinct T is the identity and the
loss equals the stock CLIP loss exactly.

GRADED positives (per-galaxy alignment, ``galaxalign.answers``): ``labels`` may be an (N, A) matrix of
decision-tree answer rows instead of class ids. Two galaxies are then positives to the degree that
their answers agree: with ``s_ij`` the soft Jaccard similarity of their rows (sum of minima over sum of
maxima; for hard answers |shared answers| / |answers of either|), ``M_ij = s_ij ** p`` and the same
row-normalised targets as above. OUR CHOICE: p = ``DEFAULT_GRADED_POWER`` = 4, so a galaxy that
shares 6 of 8 answers weighs 0.32 of an identical one and an unrelated one (s ~ 0.2) 0.002: a batch's
many loosely related galaxies do not drown the close ones. Class-level labels are the special case
(identical rows within a class: s = 1) and p -> infinity gives the label-aware loss on distinct paths.

Distributed training: call the loss with ``gather=True`` (or gather yourself with
``gather_features``) and every rank computes the loss of the global batch (same value as one process
on the whole batch). Default (``gather_with_grad=False``): gradients flow into the local shard only,
so for parameters reached through the features the SUM over ranks equals the single-process
gradient and DDP's average is 1/world_size of it (as in open_clip); ``logit_scale`` is applied after
gathering and gets the full gradient on every rank. ``gather_with_grad=True``: gradients also flow
to the other ranks' shards and are summed, so DDP's average equals the single-process gradient
exactly for every parameter, temperature included. Checked with 2 gloo processes (docs/model.md).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

PAIRS = ("image_text", "symbol_text", "image_symbol")
# OUR CHOICE: equal weights; the paper does not publish its weighting of the three alignments.
DEFAULT_WEIGHTS = {"image_text": 1.0, "symbol_text": 1.0, "image_symbol": 1.0}


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradient over ranks and returns the local slice
    (what torch.distributed.nn.all_gather does; written out because that API is deprecated)."""

    @staticmethod
    def forward(ctx, x):
        dist = torch.distributed
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_features(*features: torch.Tensor | None, labels: torch.Tensor | None = None, gather_with_grad: bool = False):
    """All-gather feature tensors (and labels) across ranks, open_clip style.

    Returns ``(gathered_features..., gathered_labels)``. The local shard keeps its autograd graph:
    with ``gather_with_grad`` every rank's loss also sends gradients to the other ranks' shards (summed
    by all_reduce), otherwise the local tensor is written back into its slot of a plain all_gather.
    Local batches must have equal sizes on every rank.
    Without an initialised process group it returns its inputs unchanged.
    """
    if not _dist_ready() or torch.distributed.get_world_size() == 1:
        return (*features, labels)
    dist = torch.distributed
    world, rank = dist.get_world_size(), dist.get_rank()
    out = []
    for f in features:
        if f is None:
            out.append(None)
            continue
        if gather_with_grad:
            out.append(_AllGatherWithGrad.apply(f))
        else:
            parts = [torch.zeros_like(f) for _ in range(world)]
            dist.all_gather(parts, f.detach())
            parts[rank] = f  # keep the gradient path for the local shard
            out.append(torch.cat(parts, dim=0))
    if labels is not None:
        parts = [torch.zeros_like(labels) for _ in range(world)]
        dist.all_gather(parts, labels)
        labels = torch.cat(parts, dim=0)
    return (*out, labels)


DEFAULT_GRADED_POWER = 4.0


def answer_agreement(answers: torch.Tensor) -> torch.Tensor:
    """(N,N) soft Jaccard similarity of (N,A) answer rows (NaN counts as 0); 1 on the diagonal."""
    a = torch.nan_to_num(answers, nan=0.0).clamp(min=0.0)
    num = torch.minimum(a[:, None, :], a[None, :, :]).sum(-1)
    den = torch.maximum(a[:, None, :], a[None, :, :]).sum(-1)
    s = num / den.clamp(min=1e-12)
    return s.fill_diagonal_(1.0)


def label_targets(labels: torch.Tensor, dtype: torch.dtype, graded_power: float = DEFAULT_GRADED_POWER) -> torch.Tensor:
    """Row-normalised positives: 1-D class ids -> the same-label mask; 2-D answer rows -> the graded
    agreement ``answer_agreement ** graded_power`` (module docstring)."""
    if labels.ndim == 2:
        mask = answer_agreement(labels.to(dtype)) ** float(graded_power)
    else:
        mask = (labels[:, None] == labels[None, :]).to(dtype)
    return mask / mask.sum(dim=1, keepdim=True)


def _soft_ce_minus_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, dim=1)
    ent = torch.where(targets > 0, targets * torch.log(targets.clamp(min=1e-30)), torch.zeros_like(targets))
    return (ent - targets * logp).sum(dim=1).mean()


def contrastive_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor | float,
    labels: torch.Tensor | None = None,
    label_aware: bool = True,
    graded_power: float = DEFAULT_GRADED_POWER,
) -> torch.Tensor:
    """Symmetric InfoNCE between rows of ``a`` and ``b`` (L2-normalised (N,D)); see module docstring."""
    if a.shape != b.shape:
        raise ValueError(f"contrastive loss needs features of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    # The loss runs in float32 even under autocast (as open_clip users do): in bf16 the logits near
    # 30-100 are spaced 0.25-0.5 apart and the label-aware target rows do not sum to 1.
    # (float64 stays float64.)
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    scale = torch.as_tensor(logit_scale, device=a.device).to(dtype)
    with torch.autocast(device_type=a.device.type, enabled=False):
        return _contrastive_loss_fp32(a.to(dtype), b.to(dtype), scale, labels, label_aware, graded_power)


def _contrastive_loss_fp32(a, b, logit_scale, labels, label_aware, graded_power=DEFAULT_GRADED_POWER):
    logits = logit_scale * a @ b.T
    if label_aware and labels is not None:
        if labels.shape[0] != a.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for a batch of {a.shape[0]} features")
        targets = label_targets(labels.to(a.device), logits.dtype, graded_power)  # symmetric: same mask both ways
        return 0.5 * (_soft_ce_minus_entropy(logits, targets) + _soft_ce_minus_entropy(logits.T, targets))
    # Stock CLIP (open_clip ClipLoss): the diagonal is the only positive.
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ContrastiveLoss(nn.Module):
    """Symmetric contrastive loss between two modalities; label-aware by default, stock CLIP if not."""

    def __init__(self, label_aware: bool = True, gather_with_grad: bool = False, graded_power: float = DEFAULT_GRADED_POWER):
        super().__init__()
        self.label_aware = bool(label_aware)
        self.gather_with_grad = bool(gather_with_grad)
        self.graded_power = float(graded_power)

    def forward(self, a, b, logit_scale, labels=None, gather: bool = False) -> torch.Tensor:
        if gather:
            a, b, labels = gather_features(a, b, labels=labels, gather_with_grad=self.gather_with_grad)
        return contrastive_loss(a, b, logit_scale, labels, self.label_aware, self.graded_power)


class TriModalLoss(nn.Module):
    """Weighted sum of symmetric contrastive losses over (image,text), (symbol,text), (image,symbol).

    ``weights``: a mapping over ``PAIRS`` or a 3-sequence in that order. A zero weight, or a missing
    modality, skips the term. Returns a dict: ``loss`` (the weighted sum) plus each computed term.
    """

    def __init__(self, weights: Mapping[str, float] | Sequence[float] | None = None, label_aware: bool = True,
                 gather_with_grad: bool = False, graded_power: float = DEFAULT_GRADED_POWER):
        super().__init__()
        if weights is None:
            weights = DEFAULT_WEIGHTS
        if not isinstance(weights, Mapping):
            weights = list(weights)
            if len(weights) != 3:
                raise ValueError(f"loss weights need 3 values for {PAIRS}, got {weights}")
            weights = dict(zip(PAIRS, weights))
        unknown = set(weights) - set(PAIRS)
        if unknown:
            raise ValueError(f"unknown loss weight keys {sorted(unknown)}; expected {PAIRS}")
        self.weights = {p: float(weights.get(p, 0.0)) for p in PAIRS}
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {self.weights}")
        self.pair_loss = ContrastiveLoss(label_aware, graded_power=graded_power)
        self.gather_with_grad = bool(gather_with_grad)

    def forward(self, image_features=None, text_features=None, symbol_features=None, logit_scale=1.0,
                labels=None, gather: bool = False) -> dict[str, torch.Tensor]:
        if gather:
            image_features, text_features, symbol_features, labels = gather_features(
                image_features, text_features, symbol_features, labels=labels, gather_with_grad=self.gather_with_grad
            )
        feats = {"image": image_features, "text": text_features, "symbol": symbol_features}
        out: dict[str, torch.Tensor] = {}
        total = None
        for pair in PAIRS:
            w = self.weights[pair]
            left, right = pair.split("_")
            if w == 0 or feats[left] is None or feats[right] is None:
                continue
            term = self.pair_loss(feats[left], feats[right], logit_scale, labels)
            out[pair] = term
            total = w * term if total is None else total + w * term
        if total is None:
            raise ValueError(f"no loss term to compute: weights {self.weights}, "
                             f"given {[k for k, v in feats.items() if v is not None]}")
        out["loss"] = total
        return out
