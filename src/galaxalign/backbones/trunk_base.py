"""A pretrained image trunk on disk: the base that ``galaxalign pretrain`` writes and a fine-tune starts from.

A base is a folder with two files: ``trunk.safetensors`` (the state dict of the image tower's trunk,
EfficientNet-Lite without its ImageNet classifier) and ``base.json`` (what it is: format, image
tower name, the image size it was trained at, the SHA-256 of the weights, and how it was made).
The training config names it with ``model.backbone.init=PATH`` (the folder or either file); the
offline backbone loads the trunk after the ImageNet weights (:func:`load_trunk_base`). A base
that does not fit the tower (another EfficientNet, missing or extra tensors, other shapes, a
damaged file) raises :class:`TrunkBaseError` naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

BASE_FORMAT = "galaxalign-trunk-base/1"
WEIGHTS_FILE = "trunk.safetensors"
META_FILE = "base.json"


class TrunkBaseError(ValueError):
    """A trunk base cannot be read or does not fit the image tower; the message names the file."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, meta) of a base given as its folder, its ``base.json`` or its ``trunk.safetensors``."""
    path = Path(path)
    if not path.exists():
        raise TrunkBaseError(f"trunk base {path} does not exist (model.backbone.init names the folder "
                             "`galaxalign pretrain` wrote, e.g. runs/pretrain/base)")
    folder = path if path.is_dir() else path.parent
    if not path.is_dir() and path.name not in (WEIGHTS_FILE, META_FILE):
        raise TrunkBaseError(f"{path}: a trunk base is a folder holding {WEIGHTS_FILE} and {META_FILE} (or one of them)")
    weights, meta = folder / WEIGHTS_FILE, folder / META_FILE
    for p in (weights, meta):
        if not p.is_file():
            raise TrunkBaseError(f"trunk base {path}: {p} does not exist (a base written by `galaxalign pretrain` "
                                 f"has {WEIGHTS_FILE} and {META_FILE})")
    return weights, meta


def write_trunk_base(folder: str | Path, state: Mapping[str, torch.Tensor], meta: dict) -> Path:
    """Write ``state`` and ``meta`` (plus format and weights hash) into ``folder``, each file atomically."""
    from safetensors.torch import save_file

    from galaxalign.runtime import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    clean = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(weights) as tmp:
        save_file(clean, str(tmp))
    info = {"format": BASE_FORMAT, **meta, "weights_sha256": _sha256(weights), "tensors": len(clean)}
    with atomic_path(folder / META_FILE) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return folder


def read_trunk_base(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, meta) of a base, checked for format and integrity."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, meta_path = base_paths(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrunkBaseError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != BASE_FORMAT:
        raise TrunkBaseError(f"{meta_path}: not a trunk base (expected format {BASE_FORMAT!r}, "
                             f"got {meta.get('format') if isinstance(meta, dict) else meta!r})")
    if meta.get("weights_sha256") and _sha256(weights) != meta["weights_sha256"]:
        raise TrunkBaseError(f"{weights}: SHA-256 differs from the one {meta_path.name} records: the weights "
                             "file is damaged or belongs to another base")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise TrunkBaseError(f"{weights}: cannot read the weights ({exc})") from None
    return state, meta


def load_trunk_base(trunk: nn.Module, path: str | Path, image: str) -> dict:
    """Load a base into ``trunk`` (an EfficientNet-Lite named ``image``), all tensors or none. Returns its meta."""
    state, meta = read_trunk_base(path)
    if meta.get("image") != image:
        raise TrunkBaseError(f"trunk base {path}: made for image tower {meta.get('image')!r}, this model's is "
                             f"{image!r} (set model.backbone.image={meta.get('image')!r} or use a matching base)")
    own = trunk.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise TrunkBaseError(f"trunk base {path}: its tensors do not match {image}'s trunk: "
                             f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise TrunkBaseError(f"trunk base {path}: tensor {k!r} has shape {tuple(state[k].shape)}, "
                                 f"{image}'s trunk expects {tuple(v.shape)}")
    trunk.load_state_dict(state)
    return meta


def size_mismatch_note(path: str | Path, image_size: int) -> str | None:
    """A warning when a model runs a base at another input size than it was pretrained at, else None.

    Measured (docs/training.md, "Pretraining on the rendered survey"): a base pretrained at 64 px
    beat ImageNet's trunk by 0.03-0.05 in probe accuracy on real SDSS galaxies at 64 px, and lost
    to it by 0.02-0.11 at 224 px: the features it learnt are tied to the galaxy's size in pixels."""
    try:
        meta = json.loads(base_paths(path)[1].read_text())
    except (TrunkBaseError, OSError, ValueError):
        return None  # load_trunk_base reports a broken base
    trained = meta.get("image_size")
    if isinstance(trained, int) and trained != int(image_size):
        return (f"trunk base {path} was pretrained at {trained} px and this model runs at {image_size} px; "
                f"set model.backbone.image_size={trained}, or pretrain at {image_size} px (--size {image_size})")
    return None
