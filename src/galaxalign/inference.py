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


def default_tta(model) -> bool:
    """Whether a model's embeddings average the 8 dihedral views by default (``model.config['tta']``)."""
    return str(model.config.get("tta", "none")) == "dihedral"


def _batches_of_views(model, source, modality: str, tta: bool, batch_size: int, progress: bool,
                      use_cache: bool | None, num_workers: int = 0):
    """Yield (B, V, D) un-normalised projected features, V = 8 dihedral views (``tta``) or 1.

    The one image-embedding loop of the package. ``source``: a catalog (DataFrame) or a sequence /
    (N,H,W,3) array of uint8 images. Towers that embed from pooled trunk features use the
    frozen-trunk feature cache (``galaxalign.features``; on by default for catalogs, off for loose
    arrays such as uploads); others run the full tower on each view.
    """
    from galaxalign import features as FT

    if modality not in ("image", "symbol"):
        raise ValueError(f"modality must be 'image' or 'symbol', got {modality!r}")
    tower = model.image_encoder if modality == "image" else model.symbol_encoder
    transform = model.eval_transform() if modality == "image" else model.symbol_transform(train=False)
    device = _device_of(model)
    is_catalog = hasattr(source, "columns")
    n = len(source)
    maps = getattr(tower, "cache_stage", None) is not None
    if FT.supports_cache(tower) and not (maps and n > FT.MAP_CACHE_MAX_GALAXIES):
        cache = is_catalog if use_cache is None else bool(use_cache)
        if is_catalog:
            views = FT.pooled_views_catalog(tower, source, transform, device=device, batch_size=batch_size,
                                            use_cache=cache, progress=progress, num_workers=num_workers)
        else:
            views = FT.pooled_views_arrays(tower, source, transform, device=device, batch_size=batch_size, use_cache=cache)
        views = torch.from_numpy(views if tta else views[:, :1])
        step = FT.view_batch(views.shape[-1])
        for s in range(0, n, step):
            v = views[s : s + step].to(device)
            yield tower(v.reshape(-1, v.shape[-1])).float().reshape(v.shape[0], v.shape[1], -1)
        return
    if is_catalog:
        from galaxalign.datasets import GalaxyDataset

        loader = torch.utils.data.DataLoader(GalaxyDataset(source, transform), batch_size=batch_size, shuffle=False,
                                             num_workers=num_workers)
        batches = (x for x, _ in _progress(loader, len(loader), f"embed {n} {modality}s", progress))
    else:
        starts = range(0, n, batch_size)
        batches = (stack(source[s : s + batch_size], transform)
                   for s in _progress(starts, len(starts), f"embed {modality}s", progress))
    from galaxalign.features import dihedral_view

    for x in batches:
        x = x.to(device)
        ks = range(8) if tta else range(1)
        yield torch.stack([tower(dihedral_view(x, k)).float() for k in ks], dim=1)


def encode_images(model: GalaxAlignModel, source, modality: str = "image", *, output: str = "embedding",
                  tta: bool | None = None, batch_size: int = 64, progress: bool = False,
                  use_cache: bool | None = None, num_workers: int = 0) -> np.ndarray:
    """Embed galaxy images or symbols: a catalog or uint8 (H,W,3) images -> float32 (N, D or C).

    ``output``: ``embedding`` (L2-normalised; with ``tta`` the renormalised mean of the 8 dihedral
    views' normalised embeddings), ``raw`` (un-normalised projected features, view-averaged) or
    ``head`` (class probabilities of the image-only head, the views' logits averaged). ``tta=None``
    uses the model's own setting (:func:`default_tta`). Inference mode, eval mode, batched.
    """
    if output not in ("embedding", "raw", "head"):
        raise ValueError(f"output must be 'embedding', 'raw' or 'head', got {output!r}")
    if output == "head" and model.classifier is None:
        raise RuntimeError("this model has no classifier head: build it with config num_classes=<int>")
    tta = default_tta(model) if tta is None else bool(tta)
    width = model.classifier.out_features if output == "head" else model.embed_dim
    out = np.zeros((len(source), width), dtype=np.float32)
    was_training = model.training
    model.eval()
    pos = 0
    try:
        with torch.inference_mode():
            for f in _batches_of_views(model, source, modality, tta, batch_size, progress, use_cache, num_workers):
                if output == "embedding":
                    r = F.normalize(F.normalize(f, dim=-1).mean(1), dim=-1)
                elif output == "raw":
                    r = f.mean(1)
                else:
                    r = torch.softmax(model.classifier(f).float().mean(1), dim=-1)
                out[pos : pos + len(r)] = r.cpu().numpy()
                pos += len(r)
    finally:
        model.train(was_training)
    return out


def embed_arrays(model: GalaxAlignModel, images: Sequence[np.ndarray] | np.ndarray, modality: str = "image",
                 batch_size: int = 64, progress: bool = False, tta: bool | None = None) -> np.ndarray:
    """L2-normalised float32 (N,D) embeddings of uint8 (H,W,3) images (``image``) or symbols (``symbol``)."""
    return encode_images(model, images, modality, tta=tta, batch_size=batch_size, progress=progress)


def embed_catalog(model: GalaxAlignModel, catalog, modality: str = "image", batch_size: int = 64,
                  progress: bool = True, num_workers: int = 0, tta: bool | None = None) -> np.ndarray:
    """L2-normalised float32 (N,D) embeddings of every catalog row, in row order."""
    return encode_images(model, catalog, modality, tta=tta, batch_size=batch_size, progress=progress,
                         num_workers=num_workers)


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


_SYMBOL_BANKS: dict = {}


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
        prompts = [taxonomy.prompts(c) for c in range(len(taxonomy.classes))]
        # One call for every class's prompts: each call switches the whole model to eval and back.
        feats = encode_texts(model, [p for ps in prompts for p in ps]).split([len(ps) for ps in prompts])
        protos.append(torch.stack([F.normalize(f.mean(0), dim=-1) for f in feats]))
    if modality in ("symbol", "both"):
        from galaxalign.symbols import class_symbol_bank

        import hashlib

        # The rendering is a pure function of (taxonomy with its symbol book, size, variants, seed):
        # memoised, because validation asks for the same prototypes every epoch.
        key = (hashlib.sha1(json.dumps(taxonomy.to_dict(), sort_keys=True, default=str).encode()).hexdigest(),
               int(model.image_size), max(1, n_symbol_variants), int(seed))
        if key not in _SYMBOL_BANKS:
            if len(_SYMBOL_BANKS) > 16:
                _SYMBOL_BANKS.clear()
            _SYMBOL_BANKS[key] = class_symbol_bank(taxonomy, model.image_size, max(1, n_symbol_variants), seed)
        images, ids = _SYMBOL_BANKS[key]
        feats = torch.from_numpy(encode_images(model, np.asarray(images), "symbol", use_cache=True))
        ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        rows = [F.normalize(feats[ids == c].mean(0), dim=-1) for c in range(len(taxonomy.classes))]
        protos.append(torch.stack(rows))
    return F.normalize(torch.stack(protos).mean(0), dim=-1)


