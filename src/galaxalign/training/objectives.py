"""The objectives the training methods optimise, and how each is validated (the methods themselves,
and which objective each uses, are registered in ``methods.py``).

- ``galaxalign``: tri-modal contrastive loss (image-text, symbol-text, image-symbol), texts and symbols
  encoded once per class present in the batch (``ClassBank``); with per-galaxy rows (``rows``, from
  ``class_bank.galaxy_rows``) once per distinct answer path, with positives graded by answer agreement.
- ``image_text``: the same contrastive image-text loss without symbols (symbol terms weighted 0).
- ``image_only``: cross-entropy on the linear head (``GalaxAlignModel.classifier``) over the image tower.
- ``zero_shot``: nothing to optimise; only validation.

Each objective exposes ``forward_module`` (the ``nn.Module`` the trainer wraps in DDP, so gradient
synchronisation hooks see every forward) and ``loss(module, images, labels) -> dict`` with ``loss``
plus its named terms.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galaxalign.distributed import DistEnv


class TriModalForward(nn.Module):
    """The forward pass of contrastive training: per-sample features of images, texts and symbols."""

    def __init__(self, model: nn.Module, bank, use_symbols: bool, joint_forward: bool = True,
                 all_classes: bool = True, symbol_refresh_every: int = 1, use_text: bool = True, use_images: bool = True):
        super().__init__()
        self.model = model
        self.bank = bank
        self.use_symbols = use_symbols
        # A tower whose loss terms all weigh 0 is not run: its parameters would get no gradient,
        # which DDP (find_unused_parameters=False) refuses.
        self.use_text = use_text
        self.use_images = use_images
        self.joint_forward = joint_forward
        self.bank_train = True  # random prompt and symbol variant per class and batch; False: canonical
        # OUR CHOICE (symbols.refresh_every): every k-th forward encodes the symbols of all classes (with
        # gradient); the k-1 between reuse those features, detached. k=1: every step, exact.
        self.symbol_refresh_every = max(1, int(symbol_refresh_every))
        self.all_classes = bool(all_classes) or self.symbol_refresh_every > 1
        self.calls = 0
        self.symbol_cache: torch.Tensor | None = None  # (C, D) per-class symbol features of the last refresh

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        caching = self.use_symbols and self.bank_train and self.symbol_refresh_every > 1
        reuse = caching and self.symbol_cache is not None and self.calls % self.symbol_refresh_every != 0
        cb = self.bank.batch(labels, train=self.bank_train, all_classes=self.all_classes, device=images.device,
                             symbols=self.use_symbols and not reuse)
        if caching:
            self.calls += 1
            if reuse or not (self.use_images and self.joint_forward and self.model.symbol_encoder_shared):
                out = self.model.forward_features(images if self.use_images else None,
                                                  text_tokens=cb.text_tokens if self.use_text else None, text_index=cb.text_index)
                if reuse:
                    per_class = self.symbol_cache.to(out["image_features"].dtype if "image_features" in out else self.symbol_cache.dtype)
                else:
                    per_class = self.model.encode_symbol(cb.symbol_images.to(images.dtype))
                    self.symbol_cache = per_class.detach()
                out["symbol_features"] = per_class[cb.symbol_index]
                return out
        if self.use_symbols and self.use_images and self.joint_forward and self.model.symbol_encoder_shared:
            # OUR CHOICE: while the visual encoder is shared (stage 1), images and the batch's few
            # symbols go through it in ONE pass: a separate pass of ~10 symbols costs ~30 % of the
            # step in per-layer overhead, the joint one ~12 %. Same features for towers without batch
            # statistics; with BatchNorm in train mode the symbols join the batch statistics.
            n = images.shape[0]
            both = self.model.encode_image(torch.cat([images, cb.symbol_images.to(images.dtype)]))
            if caching:
                self.symbol_cache = both[n:].detach()
            out = {
                "logit_scale": self.model.scale(),
                "image_features": both[:n],
                "symbol_features": both[n:][cb.symbol_index],
            }
            if self.use_text:
                out["text_features"] = self.model.encode_text(cb.text_tokens)[cb.text_index]
            return out
        return self.model.forward_features(
            images if self.use_images else None,
            text_tokens=cb.text_tokens if self.use_text else None,
            text_index=cb.text_index,
            symbol_images=cb.symbol_images if self.use_symbols else None,
            symbol_index=cb.symbol_index if self.use_symbols else None,
        )


class ClassifierForward(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.classify(images)


def _freeze(params) -> None:
    for p in params:
        p.requires_grad_(False)


def _val_features(model, catalog, batch_size: int = 128):
    """(raw image features (N,V,D), labels) of the validation set, V views: a catalog gives the eval
    transform's single view; cached views (``features.PooledSet``) give all 8 (test-time averaging)."""
    from galaxalign.features import PooledSet

    device = model.logit_scale.device
    if isinstance(catalog, PooledSet):
        from galaxalign.features import view_batch

        step = view_batch(catalog.views.shape[-1])
        raw = []
        for s in range(0, len(catalog.views), step):
            v = torch.from_numpy(catalog.views[s : s + step]).to(device)
            raw.append(model.image_encoder(v.reshape(-1, v.shape[-1])).float().reshape(v.shape[0], v.shape[1], -1))
        return torch.cat(raw), torch.from_numpy(catalog.labels.copy()).to(device)
    from galaxalign.inference import encode_images

    raw = encode_images(model, catalog, "image", output="raw", tta=False, batch_size=batch_size, use_cache=False)
    labels = torch.as_tensor(catalog["label"].to_numpy(np.int64).copy())
    return torch.from_numpy(raw).to(device)[:, None], labels.to(device)


def _gather(*features, labels):
    from galaxalign.loss import gather_features

    # gather_with_grad: every rank's loss sends gradients to every shard (summed by all_reduce), so
    # after DDP's average the gradient equals one process on the global batch, temperature included.
    return gather_features(*features, labels=labels, gather_with_grad=True)


class ContrastiveObjective:
    """``galaxalign`` and ``image_text``: the TriModalLoss over features gathered across ranks."""

    def __init__(self, cfg: dict, model: nn.Module, taxonomy, env: DistEnv, rows=None, symbols: bool = True):
        from galaxalign.class_bank import ClassBank
        from galaxalign.loss import TriModalLoss

        self.env = env
        weights = {k: float(cfg["loss"][k]) for k in ("image_text", "symbol_text", "image_symbol")}
        if not symbols:
            # The paper's main comparison (image_text): plain image-text fine-tuning, no symbols anywhere.
            weights["symbol_text"] = weights["image_symbol"] = 0.0
        self.use_symbols = weights["symbol_text"] > 0 or weights["image_symbol"] > 0
        use_text = weights["image_text"] > 0 or weights["symbol_text"] > 0
        use_images = weights["image_text"] > 0 or weights["image_symbol"] > 0
        self.loss_fn = TriModalLoss(weights, label_aware=bool(cfg["loss"]["label_aware"]),
                                    graded_power=float(cfg["loss"].get("graded_power", 4.0)))
        # OUR CHOICE: each rank draws its own prompts and symbol variants (more variety per global batch).
        variants = int(cfg["symbols"]["variants"] if rows is None else cfg["answers"]["symbol_variants"])
        self.bank = ClassBank(taxonomy, model, n_symbol_variants=variants, seed=int(cfg["symbols"]["seed"]) + env.rank, rows=rows)
        # Per-galaxy rows: the loss compares the galaxies' answer rows (graded positives), not row ids.
        self.row_vectors = None if rows is None else torch.as_tensor(rows.vectors, dtype=torch.float32)
        # OUR CHOICE: encoding every row each step (fixed shapes) only while rows are few; hundreds of
        # per-galaxy paths are encoded per batch (those present) instead.
        all_rows = bool(cfg["symbols"]["all_classes"]) and (rows is None or len(rows) <= 64)
        self.forward_module = TriModalForward(model, self.bank, self.use_symbols, bool(cfg["symbols"]["joint_forward"]),
                                              all_classes=all_rows,
                                              symbol_refresh_every=int(cfg["symbols"]["refresh_every"]),
                                              use_text=use_text, use_images=use_images)
        if model.classifier is not None:
            _freeze(model.classifier.parameters())
        if not self.use_symbols and not model.symbol_encoder_shared:
            _freeze(model.symbol_encoder.parameters())
        # Towers whose terms all weigh 0 are not run (above): frozen, so DDP expects no gradient.
        if not use_text:
            _freeze(model.text_encoder.parameters())
        if not use_images and not model.symbol_encoder_shared:
            _freeze(model.image_encoder.parameters())

    def loss(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
        out = module(images, labels)
        if self.row_vectors is not None:
            self.row_vectors = self.row_vectors.to(labels.device)
            labels = self.row_vectors[labels]
        feats = (out.get("image_features"), out.get("text_features"), out.get("symbol_features"))
        if self.env.distributed:
            *feats, labels = _gather(*feats, labels=labels)
        terms = self.loss_fn(*feats, out["logit_scale"], labels, gather=False)
        return terms

    @torch.no_grad()
    def validate(self, model: nn.Module, taxonomy, catalog) -> dict:
        """Zero-shot accuracy on the val split from text prototypes (and symbol prototypes)."""
        from galaxalign.inference import class_prototypes

        raw, labels = _val_features(model, catalog)
        feats = F.normalize(F.normalize(raw, dim=-1).mean(1), dim=-1)
        out = {}
        modalities = ["text", "symbol"] if self.use_symbols else ["text"]
        protos = {}
        for modality in modalities:
            protos[modality] = torch.as_tensor(class_prototypes(model, taxonomy, modality=modality)).to(feats.device).float()
        if self.use_symbols:  # fused, as inference.class_prototypes(modality="both")
            protos["both"] = F.normalize(protos["text"] + protos["symbol"], dim=-1)
        for modality, p in protos.items():
            pred = (feats @ p.T).argmax(dim=1)
            out[f"val_acc_{modality}"] = round(float((pred == labels).float().mean()), 4)
        return out


class ClassifierObjective:
    """``image_only``: cross-entropy of the linear head over the (partly locked) image tower."""

    def __init__(self, cfg: dict, model: nn.Module, taxonomy, env: DistEnv):
        if model.classifier is None:
            raise ValueError("method image_only needs a model built with num_classes (the classifier head)")
        self.env = env
        self.forward_module = ClassifierForward(model)
        # Text tower, temperature and symbol copy take no part: frozen so DDP expects no gradient.
        _freeze(model.text_encoder.parameters())
        _freeze([model.logit_scale])
        if not model.symbol_encoder_shared:
            _freeze(model.symbol_encoder.parameters())

    def loss(self, module: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
        logits = module(images, labels)
        ce = F.cross_entropy(logits.float(), labels)
        return {"cross_entropy": ce, "loss": ce}

    @torch.no_grad()
    def validate(self, model: nn.Module, taxonomy, catalog) -> dict:
        raw, labels = _val_features(model, catalog)
        pred = model.classifier(raw).float().mean(1).argmax(dim=1)
        return {"val_acc_classifier": round(float((pred == labels).float().mean()), 4)}


class ZeroShotObjective(ContrastiveObjective):
    """``zero_shot``: no optimisation; validation as for galaxalign (text and symbol prototypes)."""

    def __init__(self, cfg: dict, model: nn.Module, taxonomy, env: DistEnv):
        self.env = env
        self.use_symbols = True
        self.forward_module = None
