"""The files a trained model lives in, and the one safe way to read them.

Two forms (keys in docs/architecture.md):

- an **exported model**: a folder with ``config.json`` (model config, taxonomy) and
  ``model.safetensors`` (weights) -- plain data, what to hand to someone else;
- a **training checkpoint**: one ``.pt`` file (weights, optimiser, RNG states, the run's config),
  what a run resumes from.

Nothing here ever runs a full unpickler: a ``.pt`` file is read with
``torch.load(weights_only=True)``, which rebuilds only tensors, containers and numbers, plus the
few numpy types a checkpoint's RNG state needs (registered as safe globals for that one read). A
file that needs anything else -- a class, a function, ``os.system`` -- is refused with a message
saying so, because unpickling an untrusted file can run arbitrary code.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

from galaxalign.runtime import recover_path

CHECKPOINT_FORMAT = "galaxalign-checkpoint"
EXPORT_FORMAT = "galaxalign-model"
EXPORT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_KEYS = ("model", "model_config", "taxonomy")
# The keys of a model config (GalaxAlignModel.config); any other is refused, as a training config's
# unknown keys are: a misspelt or foreign key must not be silently ignored.
MODEL_CONFIG_KEYS = ("backbone", "symbol_encoder_shared", "num_classes", "tta", "answer_paths", "answer_path_counts")


class ModelFileError(ValueError):
    """A model file that cannot (or must not) be read; the message names the file and why."""


def _numpy_safe_globals() -> list:
    """numpy types inside a checkpoint's RNG state (``np.random.get_state()``: a uint32 array)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    dtypes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.uint64, np.int32, np.bool_)]
    return [_reconstruct, np.ndarray, np.dtype, *dtypes]


def _unpickling_error(path: Path, exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    wants_code = next((line for line in lines if "Unsupported global" in line), None)
    if wants_code:
        return (
            f"{path}: refused: the file holds Python objects that a GalaxAlign checkpoint never contains "
            f"({wants_code}). It was not unpickled, because unpickling an untrusted file can run arbitrary "
            f"code. Pass a training checkpoint written by `galaxalign train` or an exported model folder "
            f"({CONFIG_NAME} + {WEIGHTS_NAME})"
        )
    detail = next((line for line in lines if line.startswith("Unsupported")), lines[0][:200] if lines else "")
    return f"{path}: not a readable training checkpoint (not a torch file, or a damaged one: {detail})"


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """The dict of a ``.pt`` training checkpoint, read with ``weights_only=True`` (never a full unpickle).

    Raises :class:`ModelFileError` (naming the file) for a missing, truncated, foreign or unsafe file.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a checkpoint file (an exported model folder holds "
                             f"{CONFIG_NAME} + {WEIGHTS_NAME})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        raise ModelFileError(f"{path}: a bare weights file; pass the exported model folder that holds it "
                             f"with its {CONFIG_NAME}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(_unpickling_error(path, exc)) from None
    except Exception as exc:  # truncated zip, not a torch file at all, ...: one line, no pickle traceback
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelFileError(f"{path}: not a readable training checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: expected a training checkpoint (a dict), got {type(state).__name__}")
    return state


# The keys of a training checkpoint (docs/architecture.md); the trainer writes them all.
CHECKPOINT_KEYS = ("model", "model_config", "taxonomy", "optimizer", "scheduler", "step", "epoch", "stage", "config",
                   "rng", "method")


def read_training_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """A training checkpoint (:func:`read_checkpoint`) checked to carry the format marker and every key
    of :data:`CHECKPOINT_KEYS`."""
    path = Path(path)
    state = read_checkpoint(path, map_location=map_location)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not a GalaxAlign training checkpoint (no format={CHECKPOINT_FORMAT!r} key)")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ModelFileError(f"{path}: checkpoint lacks keys {missing}")
    return state


def training_config_of(checkpoint: str | Path) -> dict | None:
    """The training config stored with a checkpoint (``.pt``) or an exported folder, if any."""
    path = Path(checkpoint)
    if path.is_dir():
        cfg = path / CONFIG_NAME
        if cfg.is_file():
            extra = (json.loads(cfg.read_text()).get("extra") or {})
            return extra.get("config") or extra.get("training_config")
        return None
    if path.is_file():
        return read_training_checkpoint(path).get("config")
    raise FileNotFoundError(f"checkpoint {path} does not exist")


def read_export(folder: str | Path) -> tuple[dict, dict, dict]:
    """``(model_config, taxonomy_data, state_dict)`` of an exported model folder (JSON + safetensors)."""
    folder = Path(folder)
    recover_path(folder)  # a crash in the middle of replacing this folder: bring the last version back
    cfg_path, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for p in (cfg_path, weights):
        if not p.is_file():
            raise FileNotFoundError(f"exported model folder {folder} lacks {p.name}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{cfg_path}: not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    if cfg.get("format") != EXPORT_FORMAT:
        raise ModelFileError(f"{cfg_path}: field 'format' is {cfg.get('format')!r}, expected {EXPORT_FORMAT!r}")
    try:
        version = int(cfg.get("version", 0))
    except (TypeError, ValueError):
        raise ModelFileError(f"{cfg_path}: field 'version' is {cfg.get('version')!r}, expected an integer") from None
    if version > EXPORT_VERSION:
        raise ModelFileError(f"{cfg_path}: format version {version} is newer than this galaxalign "
                             f"understands ({EXPORT_VERSION}); upgrade galaxalign")
    for key in ("model_config", "taxonomy"):
        if key not in cfg:
            raise ModelFileError(f"{cfg_path}: missing field {key!r}")
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type on a truncated or foreign file
        raise ModelFileError(f"{weights}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    return check_model_config(cfg["model_config"], cfg_path), cfg["taxonomy"], state


def check_model_config(model_config: Any, where: str | Path) -> dict:
    """``model_config`` when it is a mapping of known keys (:data:`MODEL_CONFIG_KEYS`) with a backbone
    spec; a :class:`ModelFileError` naming ``where`` and the key otherwise."""
    if not isinstance(model_config, dict):
        raise ModelFileError(f"{where}: model_config must be a mapping, got {type(model_config).__name__}")
    unknown = sorted(str(k) for k in model_config if k not in MODEL_CONFIG_KEYS)
    if unknown:
        raise ModelFileError(f"{where}: unknown model_config key(s) {unknown}; known: {list(MODEL_CONFIG_KEYS)}")
    if not isinstance(model_config.get("backbone"), dict):
        raise ModelFileError(f"{where}: model_config.backbone must be a mapping with a 'kind'")
    return model_config


def read_model_files(path: str | Path) -> tuple[dict, dict, dict]:
    """``(model_config, taxonomy_data, state_dict)`` from a training checkpoint or an exported folder."""
    path = Path(path)
    if not path.exists() and not recover_path(path):
        raise FileNotFoundError(f"model {path} does not exist (expected a checkpoint .pt or an exported folder)")
    if path.is_dir():
        return read_export(path)
    ckpt = read_checkpoint(path)
    missing = [k for k in MODEL_KEYS if k not in ckpt]
    if missing:
        raise ModelFileError(f"{path}: checkpoint lacks key {missing[0]!r} (missing {missing}; has {sorted(map(str, ckpt))})")
    return check_model_config(ckpt["model_config"], path), ckpt["taxonomy"], ckpt["model"]
