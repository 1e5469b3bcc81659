"""Once-per-row encoding of the label modalities (text and symbols): a row is a class, or (per-galaxy
alignment) one distinct decision-tree path that galaxies share.

In a batch of B galaxies from C << B classes, every sample of a class shares its class's text and
symbol. ``ClassBank.batch(labels)`` returns only the DISTINCT prompt tokens and symbol images the
batch needs plus index tensors mapping each sample to its row; the model encodes each distinct row
once and expands with ``features[index]`` (``GalaxAlignModel.forward_features``). Because encoding
is per-row, this gives the same loss and gradients as encoding every sample's copy (exactly so for
towers without batch-statistics layers; with BatchNorm in train mode only the batch statistics differ).

Per-galaxy alignment (:func:`galaxy_rows`): every galaxy's text is the caption of ITS answers and its
symbol is composed from them; galaxies with the same path share one row, so the "labels" the bank
takes are row ids and there are far fewer rows than galaxies (each caption tokenised and each
symbol rendered once per path).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from galaxalign.captions import path_prompts
from galaxalign.taxonomy import Taxonomy


@dataclass
class BankRows:
    """What a bank encodes per row: prompts, symbol answer sets (variants cycle through them), and
    for per-galaxy rows the (R, A) answer rows the graded loss compares (None: class rows)."""

    prompts: list[list[str]]
    symbols: list[list[tuple[str, ...]]]
    vectors: np.ndarray | None = None
    names: list[str] | None = None
    paths: list[tuple[str, ...]] | None = None   # per-galaxy rows: each row's decision-tree path

    def __len__(self) -> int:
        return len(self.prompts)


def partial_paths(path: tuple[str, ...], n: int, tree, keep: float = 0.6) -> list[tuple[str, ...]]:
    """``n`` partial descriptions of a path, as a volunteer or a user's query says only some answers:
    each answer kept with probability ``keep``, closed under ``requires``; seeded by the path itself
    (the same path always gives the same subsets). Empty draws and the full path are skipped."""
    import zlib

    from galaxalign import answers as A

    rng = np.random.default_rng(zlib.crc32(",".join(path).encode()))
    out: list[tuple[str, ...]] = []
    for _ in range(4 * n):
        if len(out) >= n:
            break
        kept = [a for a in path if rng.random() < keep]
        sub = A.expand(kept, tree) if kept else ()
        if sub and sub != tuple(path) and sub not in out:
            out.append(sub)
    return out


def galaxy_rows(catalog, taxonomy: Taxonomy, partial_captions: int = 0, partial_symbols: int = 0,
                class_weight: float = 0.0) -> tuple[np.ndarray, BankRows]:
    """Per-galaxy rows of a labelled catalog: ``(row id of each galaxy, BankRows)``. Each distinct
    path (``answers.answer_set_rows``) is one row: its caption in every prompt template (plus
    ``partial_captions`` captions of :func:`partial_paths`, in the first template), its composed
    symbol (alternating with ``partial_symbols`` symbols of partial paths across the variants), its
    mean answer row. Galaxies without answers of their own use their class's.

    ``class_weight`` w > 0 (``answers.class_weight``): the class label counts as one more answer of
    weight w in the graded agreement. Rows are then distinct (path, class) pairs, and each row's
    answer vector is extended by w times the one-hot of its class (C more columns). Galaxies of
    one class agree more than their sub-class answers alone say, galaxies of two classes less."""
    from galaxalign import answers as A

    tree = taxonomy.tree
    matrix = A.answer_matrix(catalog, taxonomy)
    rows, paths, vectors = A.answer_set_rows(matrix, tree)
    if (rows < 0).any():
        i = int(np.flatnonzero(rows < 0)[0])
        raise ValueError(f"galaxy {catalog['id'].iloc[i]!r} has no decision-tree answers (and no class to stand in)")
    if class_weight > 0:
        labels = catalog["label"].to_numpy(np.int64)
        if (labels < 0).any() or labels.max() >= taxonomy.num_classes:
            i = int(np.flatnonzero((labels < 0) | (labels >= taxonomy.num_classes))[0])
            raise ValueError(f"answers.class_weight > 0 needs every training galaxy's class; galaxy "
                             f"{catalog['id'].iloc[i]!r} has label {labels[i]}")
        pairs: dict[tuple[int, int], int] = {}
        new_rows = np.array([pairs.setdefault((int(r), int(y)), len(pairs)) for r, y in zip(rows, labels)], dtype=np.int64)
        onehot = np.zeros((len(pairs), taxonomy.num_classes), dtype=np.float32)
        base = np.empty(len(pairs), dtype=np.int64)
        for (r, y), j in pairs.items():
            onehot[j, y] = float(class_weight)
            base[j] = r
        paths = [paths[r] for r in base]
        vectors = np.concatenate([vectors[base], onehot], axis=1)
        rows = new_rows
    captions = [A.caption(p, tree) for p in paths]
    prompts = [path_prompts(c, taxonomy.prompt_templates, [A.caption(sub, tree) for sub in partial_paths(p, partial_captions, tree)])
               for p, c in zip(paths, captions)]
    symbols = [[p, *partial_paths(p, partial_symbols, tree)] if partial_symbols else [p] for p in paths]
    return rows, BankRows(prompts=prompts, symbols=symbols, vectors=vectors, names=captions, paths=list(paths))


def path_counts(row_of, rows: BankRows) -> tuple[list[tuple[str, ...]], list[int]]:
    """The distinct paths of per-galaxy rows (first-seen order) and how many galaxies have each
    (``row_of``: the row of every galaxy, as :func:`galaxy_rows` returns it). Rows that differ only
    by class (``class_weight`` > 0) count towards their one path."""
    if rows.paths is None:
        raise ValueError("path_counts needs per-galaxy rows (BankRows.paths is None for class rows)")
    per_row = np.bincount(np.asarray(row_of, dtype=np.int64), minlength=len(rows.paths))
    counts: dict[tuple[str, ...], int] = {}
    for path, n in zip(rows.paths, per_row):
        counts[tuple(path)] = counts.get(tuple(path), 0) + int(n)
    return list(counts), list(counts.values())


@dataclass
class ClassBankBatch:
    """The class-level inputs of one batch. ``text_index``/``symbol_index`` are (B,) int64."""

    text_tokens: Any                 # tokens of the distinct prompts (Tensor or dict of Tensors)
    text_index: torch.Tensor         # sample -> row of text_tokens
    symbol_images: torch.Tensor | None  # (K,3,S,S) distinct symbol images, transformed (None: not asked for)
    symbol_index: torch.Tensor       # sample -> row of symbol_images
    texts: list[str]                 # the distinct prompts, for logging
    classes: torch.Tensor            # (K,) class id of each distinct row (same order for text and symbols)

    def to(self, device) -> "ClassBankBatch":
        tokens = ({k: v.to(device, non_blocking=True) for k, v in self.text_tokens.items()} if isinstance(self.text_tokens, dict)
                  else self.text_tokens.to(device, non_blocking=True))
        images = None if self.symbol_images is None else self.symbol_images.to(device, non_blocking=True)
        return ClassBankBatch(tokens, self.text_index.to(device, non_blocking=True), images,
                              self.symbol_index.to(device, non_blocking=True), self.texts, self.classes)


def _select_tokens(tokens, rows: torch.Tensor, trim: bool = True):
    if isinstance(tokens, dict):
        picked = {k: v[rows] for k, v in tokens.items()}
        if trim and "attention_mask" in picked:  # trim padding that only longer, unselected prompts needed
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
                 seed: int = 0, rows: BankRows | None = None):
        from galaxalign.symbols import book_of, class_symbol_bank
        from galaxalign.symbols.raster import answer_symbol_bank

        if n_symbol_variants < 1:
            raise ValueError(f"n_symbol_variants must be >= 1, got {n_symbol_variants}")
        self.taxonomy = taxonomy
        self.rows = rows
        # "classes" are the bank's rows: the taxonomy's classes, or the per-galaxy paths of ``rows``.
        self.num_classes = len(taxonomy.classes) if rows is None else len(rows)
        self.n_symbol_variants = int(n_symbol_variants)
        self.rng = np.random.default_rng(seed)

        self.prompts: list[list[str]] = ([taxonomy.prompts(c) for c in range(self.num_classes)] if rows is None
                                         else [list(p) for p in rows.prompts])
        flat = [p for ps in self.prompts for p in ps]
        self.prompt_offsets = np.cumsum([0] + [len(ps) for ps in self.prompts])
        self.all_prompts = flat
        self.tokens = model.tokenize(flat)  # tokenised once; batches select rows

        size = int(symbol_size or model.image_size)
        if rows is None:
            images, class_ids = class_symbol_bank(taxonomy, size, self.n_symbol_variants, seed)
        else:  # one answer set per row (its path); variants are augmentations of it
            images, class_ids = answer_symbol_bank([list(s) for s in rows.symbols], size, self.n_symbol_variants, seed,
                                                   book=book_of(taxonomy), tree=taxonomy.tree)
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
        # Training symbols live on the device: the pool at the model's size in [0,1], augmented there.
        from galaxalign.transforms import SymbolAugment, resize_center_crop, to_float_tensor

        self._pool01 = torch.stack([resize_center_crop(to_float_tensor(im), size) for im in images])
        self._on_device: dict = {}
        self.symbol_augment = SymbolAugment(model.image_mean, model.image_std)

    def _device_state(self, device):
        device = torch.device(device)
        state = self._on_device.get(device)
        if state is None:
            tokens = ({k: v.to(device) for k, v in self.tokens.items()} if isinstance(self.tokens, dict)
                      else self.tokens.to(device))
            # Per class: first prompt row and prompt count; first row of its variants (in class order) and count.
            order = np.concatenate(self.symbol_rows)
            counts = [len(r) for r in self.symbol_rows]
            long = dict(dtype=torch.long, device=device)
            self._pool_order = getattr(self, "_pool_order", {})
            self._pool_order[device] = torch.as_tensor(order, **long)
            state = self._on_device[device] = (
                self._pool01.to(device), tokens,
                torch.as_tensor(self.prompt_offsets[:-1], **long), torch.as_tensor([len(p) for p in self.prompts], **long),
                torch.as_tensor(np.cumsum([0] + counts[:-1]), **long), torch.as_tensor(counts, **long),
            )
        return state

    def use_pooled_symbols(self, tower, transform) -> None:
        """Serve symbols as cached pooled trunk features (``galaxalign.features``) of each variant's 8
        dihedral views instead of augmented images: a training draw picks a variant and a view, the
        canonical draw variant 0, view 0. Valid while the symbol tower's trunk stays frozen."""
        from galaxalign.features import pooled_views_arrays

        self.symbol_views = pooled_views_arrays(tower, list(self.symbol_pool), transform, use_cache=True)

    def _cached_symbols(self, symbol_rows, train: bool, device) -> torch.Tensor:
        """(K, F) cached pooled features for the drawn variants: a random dihedral view each when
        training (drawn from this bank's RNG), view 0 otherwise."""
        rows = [int(r) for r in (symbol_rows.tolist() if isinstance(symbol_rows, torch.Tensor) else symbol_rows)]
        views = [int(self.rng.integers(self.symbol_views.shape[1])) if train else 0 for _ in rows]
        return torch.from_numpy(self.symbol_views[rows, views]).to(device)

    def _check_labels(self, labels) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        bad = (labels < 0) | (labels >= self.num_classes)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise ValueError(f"batch label at position {i} is {int(labels[i])}: not a class id of taxonomy "
                             f"{self.taxonomy.name!r} (0..{self.num_classes - 1}); unlabelled (-1) rows cannot "
                             "be used for contrastive training")
        return labels

    def batch(self, labels, train: bool = True, all_classes: bool = False, device=None, symbols: bool = True) -> ClassBankBatch:
        """Distinct texts and symbols for ``labels`` plus per-sample index tensors.

        OUR CHOICE: per batch, each class present draws ONE prompt (uniform over its templates x text
        labels) and ONE symbol variant, shared by all its samples; across batches every prompt and
        variant is seen. ``train=False`` picks the first prompt and the canonical symbol, unaugmented.

        ``all_classes=True`` returns a row for EVERY class of the taxonomy and ``labels`` themselves as
        the indexes: fixed shapes (``torch.compile``) and no look at the labels' values, so labels on a
        GPU cause no host sync. Training symbols are gathered and augmented on ``device`` (default:
        the labels' device), from a generator seeded by this bank's own RNG. ``symbols=False`` (image-text
        training) skips the symbol images (``symbol_images`` is None); the draws stay the same.
        """
        device = torch.device(device) if device is not None else (labels.device if isinstance(labels, torch.Tensor) else torch.device("cpu"))
        if all_classes:
            if not isinstance(labels, torch.Tensor) or labels.device.type == "cpu":
                labels = self._check_labels(labels)
            classes = torch.arange(self.num_classes)
            inverse = labels.to(device=device, dtype=torch.long, non_blocking=True)
        else:
            labels = self._check_labels(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
            classes, inverse = torch.unique(labels, sorted=True, return_inverse=True)
            inverse = inverse.to(device, non_blocking=True)
        cls = classes.tolist()
        if train and all_classes:
            # Drawn on the device: a prompt and a symbol variant per class from a generator seeded by
            # this bank's RNG; nothing crosses from the host but the seed.
            pool, tokens_dev, p_off, p_cnt, s_off, s_cnt = self._device_state(device)
            g = torch.Generator(device=device)
            g.manual_seed(int(self.rng.integers(2**62)))
            u = torch.rand(2, self.num_classes, generator=g, device=device, dtype=torch.float64)
            prompt_rows = p_off + (u[0] * p_cnt).long().clamp_max(p_cnt - 1)
            symbol_rows = s_off + (u[1] * s_cnt).long().clamp_max(s_cnt - 1)
            images = None
            if symbols and self.symbol_views is not None:  # cached features: no pixels to augment
                images = self._cached_symbols(self._pool_order[device].index_select(0, symbol_rows).cpu(), True, device)
            elif symbols:
                images = self.symbol_augment(pool.index_select(0, self._pool_order[device].index_select(0, symbol_rows)), g)
            tokens = _select_tokens(tokens_dev, prompt_rows, trim=False)
            return ClassBankBatch(tokens, inverse, images, inverse, texts=[], classes=classes)
        if train:
            prompt_rows = [int(self.prompt_offsets[c] + self.rng.integers(len(self.prompts[c]))) for c in cls]
            symbol_rows = [int(self.rng.choice(self.symbol_rows[c])) for c in cls]
            pool, tokens_dev = self._device_state(device)[:2]
            g = torch.Generator(device=device)
            g.manual_seed(int(self.rng.integers(2**62)))
            rows = torch.tensor(symbol_rows).to(device, non_blocking=True)
            if symbols and self.symbol_views is not None:
                images = self._cached_symbols(symbol_rows, True, device)
            else:
                images = self.symbol_augment(pool.index_select(0, rows), g) if symbols else None
            tokens = _select_tokens(tokens_dev, torch.tensor(prompt_rows).to(device, non_blocking=True), trim=not all_classes)
        else:
            prompt_rows = [int(self.prompt_offsets[c]) for c in cls]
            symbol_rows = [int(self.symbol_rows[c][0]) for c in cls]
            tokens = _select_tokens(self.tokens, torch.tensor(prompt_rows), trim=not all_classes)
            if symbols and self.symbol_views is not None:
                images = self._cached_symbols(symbol_rows, False, device)
            else:
                images = torch.stack([self.eval_symbol_transform(self.symbol_pool[r]) for r in symbol_rows]).to(device) if symbols else None
            tokens = ({k: v.to(device) for k, v in tokens.items()} if isinstance(tokens, dict) else tokens.to(device))
        return ClassBankBatch(
            text_tokens=tokens,
            text_index=inverse,
            symbol_images=images,
            symbol_index=inverse,
            texts=[self.all_prompts[r] for r in prompt_rows],
            classes=classes,
        )

    def expand(self, cb: ClassBankBatch) -> tuple[Any, torch.Tensor]:
        """Per-sample tokens and symbol images (each sample its own copy): the slow reference path."""
        return _select_tokens(cb.text_tokens, cb.text_index), cb.symbol_images[cb.symbol_index]
