"""Training checkpoints: one ``.pt`` dict written atomically, and the RNG states that make resume exact.

Keys (docs/architecture.md): model, model_config, taxonomy, optimizer, scheduler, scaler, step, epoch,
stage, config, rng, method; plus ``position`` (where in the data order the run stands).
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galaxalign.model_files import CHECKPOINT_FORMAT, CHECKPOINT_KEYS, read_training_checkpoint
from galaxalign.distributed import barrier
from galaxalign.runtime import atomic_path
from galaxalign.training.best_epoch import new_best

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


# Keys a resumed run may change: they do not alter what is computed.
RESUME_MAY_CHANGE = {"max_steps", "out", "workers", "threads", "device", "tensorboard", "checkpoint_every_steps", "keep_epoch_checkpoints",
                     "keep_best_checkpoint", "log_every_steps", "compile", "channels_last"}


def config_changes(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Key paths where two configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += config_changes(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def check_resume(state: dict, cfg: dict, path: Path, world_size: int) -> None:
    """A resumed run must train what the checkpoint trained: same method, same config except for the
    keys of :data:`RESUME_MAY_CHANGE`, same number of processes (the data order of a mid-epoch resume
    depends on it)."""
    if state["method"] != cfg["method"]:
        raise ValueError(f"{path}: checkpoint was trained with method {state['method']!r}, config says {cfg['method']!r}")
    changed = [k for k in config_changes(state["config"], cfg) if k.split(".")[0] not in RESUME_MAY_CHANGE]
    if changed:
        raise ValueError(
            f"{path}: the config differs from the checkpoint's in {changed}; resume with the same config "
            f"and overrides (only {sorted(RESUME_MAY_CHANGE)} may change)"
        )
    saved = state.get("position", {}).get("world_size", world_size)
    if saved != world_size:
        raise ValueError(
            f"checkpoint was written by {saved} processes, this run has {world_size}: "
            "the data order of a mid-epoch resume would differ (resume with the same world size)"
        )


def run_rng_state(objective, env) -> dict:
    """:func:`rng_state` plus the objective's own draws (the class bank's generator, reused symbol
    features); gathered from every rank in a distributed run (a collective call)."""
    rngs = rng_state()
    bank = getattr(objective, "bank", None)
    if bank is not None:  # the class bank draws prompts and symbol variants from its own generator
        rngs["class_bank"] = bank.rng.bit_generator.state
    fwd = getattr(objective, "forward_module", None)
    if getattr(fwd, "symbol_refresh_every", 1) > 1:  # reused symbol features: part of the exact state
        rngs["symbol_cache"] = {"calls": fwd.calls, "features": None if fwd.symbol_cache is None else fwd.symbol_cache.cpu()}
    if env.distributed:
        import torch.distributed as dist

        gathered: list = [None] * env.world_size
        dist.all_gather_object(gathered, rngs)
        rngs = {"per_rank": gathered}
    return rngs


def set_run_rng_state(rngs: dict, objective, env) -> None:
    """Undo :func:`run_rng_state` on this rank."""
    if "per_rank" in rngs:
        per = rngs["per_rank"]
        rngs = per[env.rank] if env.rank < len(per) else per[0]
    set_rng_state(rngs)
    bank = getattr(objective, "bank", None)
    if bank is not None and "class_bank" in rngs:
        bank.rng.bit_generator.state = rngs["class_bank"]
    cache = rngs.get("symbol_cache")
    fwd = getattr(objective, "forward_module", None)
    if cache is not None and fwd is not None:
        fwd.calls = int(cache["calls"])
        fwd.symbol_cache = None if cache["features"] is None else cache["features"].to(env.device)


def load_stage_state(state: dict, optimizer, scheduler, scaler) -> None:
    """A resumed stage's optimiser, schedule and gradient scaler, as the checkpoint left them."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])


class RunCheckpoints:
    """A run's checkpoints: ``OUT/checkpoints/last.pt`` (with ``keep_epoch_checkpoints`` one per epoch
    too, with ``keep_best_checkpoint`` ``best.pt``), and what the run remembers of them (the step of
    the last one, the best validation score so far, restored on resume)."""

    def __init__(self, out: Path, cfg: dict, env, resume_state: dict | None):
        self.dir = Path(out) / "checkpoints"
        self.cfg, self.env = cfg, env
        self.last: Path | None = None
        self.saved_step = int(resume_state["step"]) if resume_state else 0  # step of the last one written
        self.best = resume_state.get("best") if resume_state else None  # (metric, value) of best.pt

    def state(self, model, taxonomy, step: int, position: dict, stage_number: int, seconds: float,
              optimizer=None, scheduler=None, scaler=None, objective=None) -> dict:
        """The checkpoint dict (keys: docs/architecture.md). Collective in a distributed run (RNGs)."""
        return {
            "model": model.state_dict(),
            "model_config": model.config,
            "taxonomy": taxonomy.to_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step,
            "epoch": position["epoch"],
            "stage": stage_number,
            "position": {**position, "world_size": self.env.world_size},
            "config": self.cfg,
            "rng": run_rng_state(objective, self.env),
            "method": self.cfg["method"],
            "seconds": seconds,
            "best": self.best,
        }

    def save(self, state_fn, step: int, tag: str | None = None, best: bool = False) -> None:
        """Every rank builds the state (RNG gathering is collective); rank 0 writes it."""
        state = state_fn()
        if self.env.is_main:
            self.last = write_checkpoints(self.dir, state, tag if self.cfg["keep_epoch_checkpoints"] else None, best)
        else:
            self.last = self.dir / "last.pt"
        self.saved_step = step
        barrier(self.env)

    def is_new_best(self, row: dict, metric: str) -> bool:
        """``keep_best_checkpoint``: does this validation row beat best.pt by ``metric`` (the method's
        selection metric, the one that also picks a stage's best epoch)?"""
        if not self.cfg["keep_best_checkpoint"]:
            return False
        if self.env.distributed:  # rank 0 validated: every rank must take the same decision
            import torch.distributed as dist

            box = [row]
            dist.broadcast_object_list(box, src=0)
            row = box[0]
        better = new_best(row, self.best, metric)
        if better is not None:
            self.best = better
        return better is not None


def write_checkpoints(ckpt_dir: Path, state: dict, tag: str | None = None, best: bool = False) -> Path:
    """``last.pt``; with ``tag`` also ``<tag>.pt``; with ``best`` a byte copy of last.pt as ``best.pt``
    (written atomically like it, no second serialisation). Returns last.pt."""
    last = save_checkpoint(ckpt_dir / "last.pt", state)
    if tag:
        save_checkpoint(ckpt_dir / f"{tag}.pt", state)
    if best:
        with atomic_path(ckpt_dir / "best.pt") as tmp:
            shutil.copyfile(last, tmp)
    return last
