"""Training checkpoints: one ``.pt`` dict written atomically, and the RNG states that make resume exact.

Keys (docs/architecture.md): model, model_config, taxonomy, optimizer, scheduler, scaler, step, epoch,
stage, config, rng, method; plus ``position`` (where in the data order the run stands).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galaxalign.model_files import CHECKPOINT_FORMAT, ModelFileError, read_checkpoint
from galaxalign.runtime import atomic_path

FORMAT = CHECKPOINT_FORMAT
REQUIRED = ("model", "model_config", "taxonomy", "optimizer", "scheduler", "step", "epoch", "stage", "config", "rng", "method")


def rng_state() -> dict:
    """Every RNG the loop draws from: python, numpy, torch CPU and (when present) CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):
            pass  # fewer GPUs than when saved: CUDA streams restart from the seed


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file beside it, then a rename."""
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint for {path} lacks keys {missing}")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A training checkpoint, read safely (``weights_only=True``, see :mod:`galaxalign.model_files`)."""
    path = Path(path)
    state = read_checkpoint(path, map_location=map_location)
    if state.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a GalaxAlign training checkpoint (no format={FORMAT!r} key)")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ModelFileError(f"{path}: checkpoint lacks keys {missing}")
    return state
