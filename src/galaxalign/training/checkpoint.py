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

from galaxalign.model_files import CHECKPOINT_FORMAT, CHECKPOINT_KEYS, read_training_checkpoint
from galaxalign.runtime import atomic_path

FORMAT = CHECKPOINT_FORMAT
REQUIRED = CHECKPOINT_KEYS


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
    return read_training_checkpoint(path, map_location=map_location)


# What a run writes into its ``out`` folder (the trainer's names); their presence marks a run folder.
RUN_ARTEFACTS = ("checkpoints", "model", "train_log.csv", "val_log.csv", "tensorboard")


class RunExistsError(ValueError):
    """A new run would write into the folder of an earlier one."""


def run_artefacts(out: str | Path) -> list[str]:
    """Names of an earlier run's artefacts in ``out`` (empty for a new or unrelated folder)."""
    out = Path(out)
    return [name for name in RUN_ARTEFACTS if (out / name).exists()]


def claim_run_folder(out: str | Path, resume: bool = False, overwrite: bool = False, is_main: bool = True) -> None:
    """Make sure a new run does not silently destroy an earlier one in ``out``.

    An ``out`` that holds a run is refused unless the run is resumed (``resume``) or explicitly
    replaced (``overwrite``: the earlier run's artefacts are deleted first, on the main process, so
    old exports and logs never sit beside new checkpoints).
    """
    if resume and overwrite:
        raise ValueError("--resume continues the run in the folder and --overwrite deletes it: pass one of them")
    present = run_artefacts(out)
    if resume or not present:
        return
    if not overwrite:
        raise RunExistsError(
            f"{out}: holds an earlier run ({', '.join(present)}); pass --resume to continue it, --overwrite to "
            "delete and replace it, or --out for a new folder"
        )
    if is_main:
        import shutil

        for name in present:
            path = Path(out) / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
