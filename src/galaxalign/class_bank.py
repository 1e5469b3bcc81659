"""Once-per-class encoding of the class-level modalities (text labels and symbols).

In a batch of B galaxies from C << B classes, every sample of a class shares its class's text and
symbol. ``ClassBank.batch(labels)`` returns only the DISTINCT prompt tokens and symbol images the
batch needs plus index tensors mapping each sample to its row; the model encodes each distinct row
once and expands with ``features[index]`` (``GalaxAlignModel.forward_features``). Because encoding
is per-row, this gives the same loss and gradients as encoding every sample's copy (exactly so for
towers without batch-statistics layers; with BatchNorm in train mode only the batch statistics differ).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from galaxalign.taxonomy import Taxonomy


@dataclass
class ClassBankBatch:
    """The class-level inputs of one batch. ``text_index``/``symbol_index`` are (B,) int64."""

    text_tokens: Any                 # tokens of the distinct prompts (Tensor or dict of Tensors)
    text_index: torch.Tensor         # sample -> row of text_tokens
    symbol_images: torch.Tensor      # (K,3,S,S) distinct symbol images, transformed
    symbol_index: torch.Tensor       # sample -> row of symbol_images
    texts: list[str]                 # the distinct prompts, for logging
    classes: torch.Tensor            # (K,) class id of each distinct row (same order for text and symbols)

    def to(self, device) -> "ClassBankBatch":
        tokens = ({k: v.to(device) for k, v in self.text_tokens.items()} if isinstance(self.text_tokens, dict)
                  else self.text_tokens.to(device))
        return ClassBankBatch(tokens, self.text_index.to(device), self.symbol_images.to(device),
                              self.symbol_index.to(device), self.texts, self.classes)


def _select_tokens(tokens, rows: torch.Tensor):
    if isinstance(tokens, dict):
        picked = {k: v[rows] for k, v in tokens.items()}
        if "attention_mask" in picked:  # trim padding that only longer, unselected prompts needed
            width = int(picked["attention_mask"].sum(1).max())
            picked = {k: v[:, :width] for k, v in picked.items()}
        return picked
    return tokens[rows]


class ClassBank:
    """Pre-tokenised prompts and pre-rendered symbol variants for every class of a taxonomy.

    ``n_symbol_variants`` symbol renderings per class come from ``galaxalign.symbols.class_symbol_bank``
    (variant 0 canonical, the rest augmented by the renderer). ``symbol_size`` defaults to the model's
    image size. ``seed`` fixes the renderer and this bank's own draws.
    """

    def __init__(self, taxonomy: Taxonomy, model, n_symbol_variants: int = 4, symbol_size: int | None = None,
                 seed: int = 0):
        from galaxalign.symbols import class_symbol_bank

        if n_symbol_variants < 1:
            raise ValueError(f"n_symbol_variants must be >= 1, got {n_symbol_variants}")
        self.taxonomy = taxonomy
        self.num_classes = len(taxonomy.classes)
        self.n_symbol_variants = int(n_symbol_variants)
        self.rng = np.random.default_rng(seed)

        self.prompts: list[list[str]] = [taxonomy.prompts(c) for c in range(self.num_classes)]
        flat = [p for ps in self.prompts for p in ps]
        self.prompt_offsets = np.cumsum([0] + [len(ps) for ps in self.prompts])
        self.all_prompts = flat
        self.tokens = model.tokenize(flat)  # tokenised once; batches select rows

        size = int(symbol_size or model.image_size)
        images, class_ids = class_symbol_bank(taxonomy, size, self.n_symbol_variants, seed)
        images = np.asarray(images)
        class_ids = np.asarray(class_ids, dtype=np.int64)
        if images.ndim != 4 or images.shape[0] != class_ids.shape[0]:
            raise ValueError(f"class_symbol_bank returned images {images.shape} for {class_ids.shape[0]} class ids")
        missing = sorted(set(range(self.num_classes)) - set(class_ids.tolist()))
        if missing:
            raise ValueError(f"class_symbol_bank returned no symbol for classes {missing}")
        self.symbol_pool = images
        self.symbol_rows = [np.flatnonzero(class_ids == c) for c in range(self.num_classes)]
        self.train_symbol_transform = model.symbol_transform(train=True)
        self.eval_symbol_transform = model.symbol_transform(train=False)
        self.symbol_views: np.ndarray | None = None

    def use_pooled_symbols(self, tower, transform) -> None:
        """Serve symbols as cached pooled trunk features (``galaxalign.features``) of each variant's 8
        dihedral views instead of augmented images: a training draw picks a variant and a view, the
        canonical draw variant 0, view 0. Valid while the symbol tower's trunk stays frozen."""
        from galaxalign.features import pooled_views_arrays

        self.symbol_views = pooled_views_arrays(tower, list(self.symbol_pool), transform, use_cache=True)

    def _check_labels(self, labels) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        bad = (labels < 0) | (labels >= self.num_classes)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise ValueError(f"batch label at position {i} is {int(labels[i])}: not a class id of taxonomy "
                             f"{self.taxonomy.name!r} (0..{self.num_classes - 1}); unlabelled (-1) rows cannot "
                             "be used for contrastive training")
        return labels

    def batch(self, labels, train: bool = True) -> ClassBankBatch:
        """Distinct texts and symbols for ``labels`` plus per-sample index tensors.

        OUR CHOICE: per batch, each class present draws ONE prompt (uniform over its templates x text
        labels) and ONE symbol variant, shared by all its samples; across batches every prompt and
        variant is seen. ``train=False`` picks the first prompt and the canonical symbol, unaugmented.
        """
        labels = self._check_labels(labels)
        classes, inverse = torch.unique(labels, sorted=True, return_inverse=True)
        cls = classes.tolist()
        if train:
            prompt_rows = [int(self.prompt_offsets[c] + self.rng.integers(len(self.prompts[c]))) for c in cls]
            symbol_rows = [int(self.rng.choice(self.symbol_rows[c])) for c in cls]
            transform = self.train_symbol_transform
        else:
            prompt_rows = [int(self.prompt_offsets[c]) for c in cls]
            symbol_rows = [int(self.symbol_rows[c][0]) for c in cls]
            transform = self.eval_symbol_transform
        tokens = _select_tokens(self.tokens, torch.tensor(prompt_rows))
        if self.symbol_views is not None:
            views = [int(self.rng.integers(self.symbol_views.shape[1])) if train else 0 for _ in symbol_rows]
            symbols = torch.from_numpy(self.symbol_views[symbol_rows, views])
        else:
            symbols = torch.stack([transform(self.symbol_pool[r]) for r in symbol_rows])
        return ClassBankBatch(
            text_tokens=tokens,
            text_index=inverse,
            symbol_images=symbols,
            symbol_index=inverse,
            texts=[self.all_prompts[r] for r in prompt_rows],
            classes=classes,
        )

    def expand(self, cb: ClassBankBatch) -> tuple[Any, torch.Tensor]:
        """Per-sample tokens and symbol images (each sample its own copy): the slow reference path."""
        return _select_tokens(cb.text_tokens, cb.text_index), cb.symbol_images[cb.symbol_index]
