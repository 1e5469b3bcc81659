"""Using a trained model: load it, export it, embed images / symbols / texts, class prototypes.

A model is loaded from a training checkpoint (``*.pt``, keys in docs/architecture.md) or an exported
folder (``config.json`` + ``model.safetensors``), both read by :mod:`galaxalign.model_files` (never a
full unpickle). Loading never needs the network: the backbone is built without its pretrained
weights, which the saved state dict replaces.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from galaxalign.model import GalaxAlignModel
from galaxalign.model_files import CONFIG_NAME, EXPORT_FORMAT, EXPORT_VERSION, WEIGHTS_NAME, read_model_files
from galaxalign.runtime import atomic_path
from galaxalign.taxonomy import Taxonomy, load_taxonomy
from galaxalign.transforms import stack


# --------------------------------------------------------------------------------- load / save
def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GalaxAlignModel, Taxonomy]:
    """Load ``(model, taxonomy)`` from a training checkpoint ``.pt`` or an exported folder; eval mode."""
    path = Path(path)
    model_config, taxonomy_data, state = read_model_files(path)
    try:
        model = GalaxAlignModel.from_config(model_config, load_weights=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot build the model from its model_config: {exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the model_config: {exc}") from exc
    model.to(device).eval()
    return model, load_taxonomy(taxonomy_data)


def save_pretrained(model: GalaxAlignModel, taxonomy: Taxonomy, out_dir: str | Path,
                    extra: dict | None = None) -> Path:
    """Export ``config.json`` + ``model.safetensors`` into ``out_dir`` (replaced atomically)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    config = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model_config": model.config,
        "taxonomy": taxonomy.to_dict(),
        "extra": extra or {},
    }
    text = json.dumps(config, indent=2, sort_keys=True)  # fails early on non-JSON extras
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / CONFIG_NAME).write_text(text + "\n")
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": EXPORT_FORMAT})
    return out_dir


# --------------------------------------------------------------------------------- embedding
def _device_of(model) -> torch.device:
    return model.logit_scale.device


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch")


def embed_arrays(model: GalaxAlignModel, images: Sequence[np.ndarray] | np.ndarray, modality: str = "image",
                 batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """L2-normalised float32 (N,D) embeddings of uint8 (H,W,3) images (``image``) or symbols (``symbol``)."""
    if modality not in ("image", "symbol"):
        raise ValueError(f"modality must be 'image' or 'symbol', got {modality!r}")
    transform = model.eval_transform() if modality == "image" else model.symbol_transform(train=False)
    encode = model.encode_image if modality == "image" else model.encode_symbol
    n = len(images)
    out = np.zeros((n, model.embed_dim), dtype=np.float32)
    was_training = model.training
    model.eval()
    starts = range(0, n, batch_size)
    with torch.inference_mode():
        for s in _progress(starts, len(starts), f"embed {modality}s", progress):
            x = stack(images[s : s + batch_size], transform).to(_device_of(model))
            out[s : s + len(x)] = encode(x, normalize=True).float().cpu().numpy()
    model.train(was_training)
    return out


def embed_catalog(model: GalaxAlignModel, catalog, modality: str = "image", batch_size: int = 64,
                  progress: bool = True, num_workers: int = 0) -> np.ndarray:
    """L2-normalised float32 (N,D) embeddings of every catalog row, in row order."""
    from galaxalign.datasets import GalaxyDataset

    if modality not in ("image", "symbol"):
        raise ValueError(f"modality must be 'image' or 'symbol', got {modality!r}")
    transform = model.eval_transform() if modality == "image" else model.symbol_transform(train=False)
    encode = model.encode_image if modality == "image" else model.encode_symbol
    loader = torch.utils.data.DataLoader(GalaxyDataset(catalog, transform), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers)
    out = np.zeros((len(catalog), model.embed_dim), dtype=np.float32)
    was_training = model.training
    model.eval()
    pos = 0
    with torch.inference_mode():
        for x, _ in _progress(loader, len(loader), f"embed {len(catalog)} {modality}s", progress):
            f = encode(x.to(_device_of(model)), normalize=True).float().cpu().numpy()
            out[pos : pos + len(f)] = f
            pos += len(f)
    model.train(was_training)
    return out


def encode_texts(model: GalaxAlignModel, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised (N,D) float32 text embeddings (CPU tensor)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    was_training = model.training
    model.eval()
    parts = []
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            parts.append(model.encode_text(model.tokenize(texts[s : s + batch_size])).float().cpu())
    model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, model.embed_dim)


def class_prototypes(model: GalaxAlignModel, taxonomy: Taxonomy, modality: str = "text",
                     n_symbol_variants: int = 8, seed: int = 0) -> torch.Tensor:
    """(C,D) L2-normalised class embeddings for zero-shot classification.

    ``text``: mean of the normalised embeddings of the class's prompts (CLIP prompt ensembling).
    ``symbol``: mean over the canonical symbol and ``n_symbol_variants - 1`` renderer-augmented ones.
    ``both``: OUR CHOICE, the normalised mean of the text and symbol prototypes (equal weight).
    """
    if modality not in ("text", "symbol", "both"):
        raise ValueError(f"modality must be 'text', 'symbol' or 'both', got {modality!r}")
    protos = []
    if modality in ("text", "both"):
        rows = []
        for c in range(len(taxonomy.classes)):
            rows.append(F.normalize(encode_texts(model, taxonomy.prompts(c)).mean(0), dim=-1))
        protos.append(torch.stack(rows))
    if modality in ("symbol", "both"):
        from galaxalign.symbols import class_symbol_bank

        images, ids = class_symbol_bank(taxonomy, model.image_size, max(1, n_symbol_variants), seed)
        feats = torch.from_numpy(embed_arrays(model, np.asarray(images), modality="symbol"))
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        rows = [F.normalize(feats[ids == c].mean(0), dim=-1) for c in range(len(taxonomy.classes))]
        protos.append(torch.stack(rows))
    return F.normalize(torch.stack(protos).mean(0), dim=-1)


