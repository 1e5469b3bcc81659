"""Warm start of the label towers: prototypes that start where the labelled images are.

The text and symbol towers were never aligned with the image tower, so contrastive training would
first spend its steps (and its gradients through the image features) aligning random prototypes.
Instead, before training, a label tower's final projection is solved in closed form so that the
embedding of each class's prompts (or symbols) points at the mean embedding of that class's
labelled galaxies: ridge least squares from the tower's pre-projection features to the class means,
shrunk towards the current weights (``lam`` relative to the features' mean energy).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def class_means(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C,D) L2-normalised mean embedding per class (zeros for classes without galaxies)."""
    e = F.normalize(embeddings.float(), dim=-1)
    out = torch.zeros(num_classes, e.shape[1])
    for c in range(num_classes):
        m = labels == c
        if bool(m.any()):
            out[c] = F.normalize(e[m].mean(0), dim=-1)
    return out


@torch.no_grad()
def ridge_projection(linear: torch.nn.Linear, inputs: torch.Tensor, targets: torch.Tensor, lam: float = 0.1) -> None:
    """Set ``linear`` (weight (D,H), bias) to argmin ||inputs W^T + b - targets||^2 + l ||W - W0||^2.

    ``l = lam * mean squared input norm``; the bias absorbs the mean. Targets are scaled to the
    norm the current projection gives these inputs, so the temperature's scale still fits."""
    x = inputs.double()
    y = targets.double()
    w0 = linear.weight.double()
    current = linear(inputs.to(linear.weight.dtype)).double().norm(dim=1).mean().clamp(min=1e-6)
    y = F.normalize(y, dim=-1) * current
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    h = x.shape[1]
    reg = lam * float((xc**2).sum(1).mean())
    a = xc.T @ xc + reg * torch.eye(h, dtype=x.dtype)
    b = xc.T @ yc + reg * w0.T
    w = torch.linalg.solve(a, b).T  # (D,H)
    linear.weight.copy_(w.to(linear.weight.dtype))
    linear.bias.copy_((my - mx @ w.T).to(linear.bias.dtype))


@torch.no_grad()
def warm_start_text_projection(model, taxonomy, image_embeddings: torch.Tensor, labels: torch.Tensor) -> bool:
    """Point every class's prompt embeddings at its labelled galaxies' mean image embedding.

    OUR CHOICE (LP-FT style warm start): before contrastive training, the text projection is set so
    that each class's prompts land on the mean image embedding of its labelled galaxies (ridge least
    squares, text tower otherwise untouched), so training starts from prototypes that already
    classify like nearest-class-mean instead of aligning random ones.

    ``taxonomy``: a Taxonomy (its classes' prompts), or a list of prompt lists, one per label value
    (per-galaxy rows: each answer path's captions).
    Needs a text tower that ends in ``proj`` (a Linear) after ``sentence_embedding`` (the offline
    MiniLM tower); returns False (nothing changed) for other towers."""
    tower = model.text_encoder
    proj = getattr(tower, "proj", None)
    if not isinstance(proj, torch.nn.Linear) or not callable(getattr(tower, "sentence_embedding", None)):
        return False
    prompts = ([taxonomy.prompts(c) for c in range(len(taxonomy.classes))] if hasattr(taxonomy, "classes")
               else [list(p) for p in taxonomy])
    means = class_means(image_embeddings, labels, len(prompts))
    present = [c for c in range(len(prompts)) if bool((labels == c).any())]
    if len(present) < 2:
        return False
    texts, targets = [], []
    for c in present:
        for p in prompts[c]:
            texts.append(p)
            targets.append(means[c])
    was = tower.training
    tower.eval()
    device = proj.weight.device
    tokens = model.tokenize(texts)
    tokens = {k: v.to(device) for k, v in tokens.items()} if isinstance(tokens, dict) else tokens.to(device)
    feats = tower.sentence_embedding(tokens).float()
    tower.train(was)
    ridge_projection(proj, feats, torch.stack(targets).to(device))
    return True


@torch.no_grad()
def warm_start_symbol_projection(model, bank, image_embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    """Stage 2: the separate symbol encoder's projection starts with each class's symbols (the class
    bank's pooled symbol views) pointing at its labelled galaxies' mean image embedding."""
    means = class_means(image_embeddings, labels, bank.num_classes)
    present = set(labels.unique().tolist())
    tower = model.symbol_encoder
    rows = [(r, c) for c in sorted(present) for r in bank.symbol_rows[c]]
    views = bank.symbol_views[[r for r, _ in rows]]  # (n, 8, F)
    inputs = torch.as_tensor(views.reshape(-1, views.shape[-1]), dtype=torch.float32, device=tower.feature_mean.device)
    inputs = (inputs - tower.feature_mean) / tower.feature_std
    targets = torch.stack([means[c] for _, c in rows for _ in range(views.shape[1])]).to(inputs.device)
    ridge_projection(tower.proj, inputs, targets)
