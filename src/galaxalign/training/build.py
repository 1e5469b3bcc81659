"""The parts a run is built from: seeds, its data, its model (with locks and precision), its towers'
memory format and compilation, its data loader. The loop (``trainer.py``) assembles them.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from galaxalign.distributed import DistEnv, ResumableSampler, barrier
from galaxalign.training.methods import get_method


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def worker_init_fn(worker_id: int) -> None:
    """Seed python/numpy in each DataLoader worker from torch's per-worker seed (itself drawn from the
    loader's generator); per-sample seeds (``AugmentedSamples``) then fix each augmentation exactly."""
    s = torch.initial_seed() % (2**32)
    random.seed(s)
    np.random.seed(s)


def prepare_data(cfg: dict, env: DistEnv, progress: bool):
    """Catalog -> taxonomy, labelled train (label fraction applied) and val splits, source path.

    The splits come from :func:`galaxalign.datasets.splits_from_config`, the same function
    evaluation calls, so the evaluated test split is exactly what this run held out."""
    from galaxalign.datasets import splits_from_config
    from galaxalign.taxonomy import load_taxonomy

    d = cfg["data"]
    taxonomy = load_taxonomy(d["taxonomy"])
    if d["source"] == "survey":
        from galaxalign.survey import default_survey

        # Rank 0 renders (cached); the others wait and then read the cached file.
        if env.is_main:
            default_survey(d["num"], d["size"], d["seed"], progress=progress)
        barrier(env)
    splits, info = splits_from_config(d, taxonomy)
    if len(splits["train_labelled"]) == 0:
        raise ValueError(f"data.source {d['source']!r}: no labelled training galaxies after split and label_fraction")
    return taxonomy, splits["train_labelled"], splits["val"], info["path"]


def build_model(cfg: dict, taxonomy, model_config: dict | None = None):
    from galaxalign.model import GalaxAlignModel

    if model_config is None:
        spec = dict(cfg["model"]["backbone"])
        if cfg["model"]["embed_dim"] is not None:
            spec["embed_dim"] = int(cfg["model"]["embed_dim"])
        model_config = {
            "backbone": spec,
            "symbol_encoder_shared": True,
            "num_classes": taxonomy.num_classes if get_method(cfg["method"]).classifier_head else None,
            "tta": cfg["model"]["tta"],
        }
    return GalaxAlignModel.from_config(model_config)


def apply_locks(model: nn.Module, cfg: dict) -> None:
    """Locked towers (``model.lock_image``, ``lock_text``) and frozen batch-norm statistics.

    OUR CHOICE (``model.freeze_bn_stats``): with BatchNorm towers the batch statistics couple the
    galaxies of a batch with the class-level symbols encoded beside them (jointly or in their own
    small batch), and the running statistics used at evaluation drift towards a mixture of the
    two; frozen statistics keep the pretrained normalisation (scales and shifts still train)."""
    m = cfg["model"]
    model.freeze_bn_stats = bool(m["freeze_bn_stats"])   # GalaxAlignModel.train keeps them (HoldsNormStats)
    if m["lock_image"]:
        model.lock_image_tower(unlocked_groups=int(m["lock_image_unlocked_groups"]), freeze_bn_stats=bool(m["lock_image_freeze_bn_stats"]))
    if m["lock_text"]:
        model.lock_text_tower(unlocked_layers=int(m["lock_text_unlocked_layers"]))


def amp_settings(cfg: dict, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler). fp32 on CPU whatever the config says."""
    mode = cfg["amp"]
    if device.type != "cuda" or mode == "off":
        return None, False
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)


def compile_towers(model: nn.Module, cfg: dict) -> bool:
    """``compile``: torch.compile each tower in place (state-dict keys unchanged); ``channels_last``:
    the towers' weights in that memory format.

    OUR CHOICE (measured, docs/training.md "Speed"): ``channels_last: auto`` is on for convolutional
    image towers (more than one Conv2d: EfficientNet-Lite0's fwd+bwd at batch 64 took 0.67 s instead
    of 1.31 s on the CPU) and off for a ViT (one Conv2d, the patch embedding)."""
    towers = [model.image_encoder, model.text_encoder] + ([] if model.symbol_encoder_shared else [model.symbol_encoder])
    channels_last = cfg["channels_last"]
    # OUR CHOICE: channels_last "auto" = on for convolutional image towers (> 1 Conv2d), off for a ViT.
    if channels_last == "auto":
        channels_last = sum(isinstance(m, nn.Conv2d) for m in model.image_encoder.modules()) > 1
    if channels_last:
        for t in towers:
            t.to(memory_format=torch.channels_last)
    if cfg["compile"]:
        backend = "inductor" if cfg["compile"] is True else str(cfg["compile"])
        for t in towers:
            if getattr(t, "_compiled_call_impl", None) is None:
                t.compile(backend=backend)
    return bool(channels_last)


def make_loader(dataset, sampler: ResumableSampler, cfg: dict, workers: int, pin_memory: bool) -> DataLoader:
    """One loader per stage: persistent workers keep their HDF5 handles across epochs; batches are
    uint8 in pinned memory on a GPU."""
    g = torch.Generator()
    g.manual_seed(cfg["seed"])
    return DataLoader(
        dataset,
        batch_size=cfg["batch_size"],
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=worker_init_fn,
        generator=g,
        drop_last=True,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )


def stage_sampler(dataset, cfg: dict, env: DistEnv, stage_number: int) -> tuple[ResumableSampler, int]:
    """The stage's sampler (whole batches, seeded per stage) and its optimiser steps per epoch."""
    sampler = ResumableSampler(dataset, env.world_size, env.rank, seed=cfg["seed"] + 1000 * stage_number, batch_size=cfg["batch_size"])
    steps_per_epoch = (sampler.num_samples // cfg["batch_size"]) // cfg["accumulation"]
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size {cfg['batch_size']} x accumulation {cfg['accumulation']} x {env.world_size} process(es) exceeds the "
            f"{len(dataset)} labelled training galaxies: lower batch_size or accumulation"
        )
    return sampler, steps_per_epoch
