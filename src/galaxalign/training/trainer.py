"""The training loop: stage 1 then stage 2 (or a baseline), checkpoints, resume, logs, export.

One code path serves every method; what differs is asked of the method object (``methods.py``:
its stages, objective, selection metric). The parts live beside it: ``build`` (data, model,
loader), ``per_galaxy`` (which rows galaxies align with), ``run_log``, ``best_epoch``,
``checkpoint`` (state, RNG, resume). ``train(config)`` is the Python front door; ``galaxalign
train`` is a thin shell over it.
"""
from __future__ import annotations

import gc
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from galaxalign.distributed import barrier, init_distributed
from galaxalign.model import MAX_LOGIT_SCALE
from galaxalign.training.best_epoch import BestEpoch
from galaxalign.training.build import (amp_settings, apply_locks, build_model, compile_towers, make_loader, prepare_data,
                                       seed_everything, stage_sampler)
from galaxalign.training.checkpoint import RunCheckpoints, check_resume, load_checkpoint, load_stage_state, set_run_rng_state
from galaxalign.training.config import derived_checkpoint_every, derived_runtime, load_config
from galaxalign.training.methods import StagePlan, get_method
from galaxalign.training.per_galaxy import label_rows
from galaxalign.training.run_log import RunLog
from galaxalign.training.schedule import optimizer_step, stage_optimizer
from galaxalign.training.warm_start import warm_start_symbol_projection, warm_start_text_projection
# With trainable stages on cached maps a validation pass costs seconds: about this many per stage.
FT_VALIDATIONS_MAPS = 8


@dataclass
class TrainResult:
    checkpoint: Path  # the last .pt written
    export_dir: Path  # OUT/model, loadable with galaxalign.inference.load_model
    seconds: float
    history: list[dict] = field(default_factory=list)  # train rows (per optimiser step) and val rows (per epoch)
    completed: bool = True  # False when stopped by max_steps


class Trainer:
    """Holds the state of one run; ``run()`` executes the stage plan from wherever it stands."""

    def __init__(self, cfg: dict, progress: bool = True, resume: str | Path | None = None):
        from galaxalign.training.recipe import describe_choices, resolve_recipe

        self.progress = progress
        self.env = init_distributed(cfg["device"])
        self.taxonomy, self.train_cat, self.val_cat, self.source = prepare_data(cfg, self.env, progress)
        # The recipe's choices are written into the config itself (it stays a valid, reproducible config).
        cfg, self.recipe = resolve_recipe(cfg, self.train_cat, self.env.device.type, self.env.world_size)
        if progress and self.env.is_main and self.recipe.get("enabled"):
            print(describe_choices(self.recipe), flush=True)
        self.cfg = cfg
        self.method = get_method(cfg["method"])
        lr = label_rows(cfg, self.train_cat, self.taxonomy)
        self.rows, self.train_labels, self.path_counts, self.per_galaxy_note = lr.rows, lr.labels, lr.path_counts, lr.note
        if progress and self.env.is_main and lr.describe(len(self.train_cat)):
            print(lr.describe(len(self.train_cat)), flush=True)
        self.cached = bool(cfg["recipe"].get("enabled")) and cfg["recipe"].get("cache") is True
        self.map_cached = self.cached and cfg["model"]["backbone"].get("cache_stage") is not None
        self.out = Path(cfg["out"])
        self.resume_state = None
        if resume is not None:
            path = self.out / "checkpoints" / "last.pt" if str(resume) in ("", "auto", "last") else Path(resume)
            self.resume_state = load_checkpoint(path)
            check_resume(self.resume_state, cfg, path, self.env.world_size)
        self.t0 = time.time()
        self.seconds_before = float(self.resume_state.get("seconds", 0.0)) if self.resume_state else 0.0
        self.global_step = int(self.resume_state["step"]) if self.resume_state else 0
        self.ckpt = RunCheckpoints(self.out, cfg, self.env, self.resume_state)


    def setup(self) -> None:
        cfg, env = self.cfg, self.env
        self.runtime = derived_runtime(cfg, env.device.type, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.set_num_threads(int(self.runtime["threads"]))
        seed_everything(cfg["seed"])
        torch.set_float32_matmul_precision("high")
        model_config = self.resume_state["model_config"] if self.resume_state else None
        self.model = build_model(cfg, self.taxonomy, model_config)
        # per-galaxy alignment: the model carries the paths it was aligned with (search.features)
        # ... with how many training galaxies had each (the path prior)
        self.model.set_answer_paths(*(self.path_counts or (None, None)))
        if self.resume_state:
            self.model.load_state_dict(self.resume_state["model"])
        apply_locks(self.model, cfg)
        self.model.to(env.device)
        self.train_views = self.val_input = None
        if self.cached:
            self.train_views, self.val_input = self.cache_features()
        elif self.val_cat is not None:
            self.val_input = self.val_cat
        if not self.resume_state:
            self.fit_normalizer()
            self.warm_start()
        # Ranks differ from here on (dropout); data order and augmentations are seeded per sample.
        seed_everything(cfg["seed"] + env.rank)
        self.autocast_dtype, use_scaler = amp_settings(cfg, env.device)
        self.use_scaler = use_scaler
        self.log = RunLog(self.out, env.is_main, bool(cfg["tensorboard"]), self.global_step if self.resume_state else None)

    def dataset(self):
        """uint8 images at the training size + per-sample augmentation parameters (AugmentedSamples);
        the pixels are augmented a batch at a time on the device (``self.augment``)."""
        from galaxalign.datasets.pytorch import AugmentedSamples, GalaxyDataset

        if self.cached:
            from galaxalign.features import CachedViews

            return CachedViews(self.train_views, self.train_labels)
        # The model's train transform supplies the augmentation (its ranges are the model's choice).
        self.augment = self.model.train_transform(strength=float(self.cfg["data"]["augment"])).augment
        catalog = self.train_cat if self.rows is None else self.train_cat.assign(label=self.train_labels)
        self.train_images = GalaxyDataset(catalog, image_size=self.model.image_size, in_memory=self.cfg["data"]["in_memory"],
                                          crop=self.model.image_crop)
        return AugmentedSamples(self.train_images, self.augment)

    # -- frozen-trunk features, normaliser, warm start -----------------------------------------------

    def cache_features(self):
        """Pooled 8-view trunk features of the training and validation galaxies (rank 0 computes and
        stores them, the others read the store)."""
        from galaxalign import features as FT

        tower, transform, env = self.model.image_encoder, self.model.eval_transform(), self.env
        if not (FT.supports_cache(tower) and FT.trunk_is_frozen(tower)):
            raise ValueError("recipe.cache=true needs an image tower with taps whose trunk is frozen")
        def views():
            return [FT.pooled_views_catalog(tower, cat, transform, device=env.device, progress=self.progress and env.is_main)
                    if cat is not None and len(cat) else None for cat in (self.train_cat, self.val_cat)]

        out = views() if env.is_main else None
        barrier(env)
        if out is None:
            out = views()
        train_views = torch.from_numpy(out[0])
        val_views = out[1]
        if val_views is not None and getattr(tower, "cache_stage", None) is not None:
            # OUR CHOICE: with trainable stages each validation pass runs them on every view; two views
            # (the identity and a quarter turn flipped) rank epochs like all eight at a quarter of the cost.
            val_views = val_views[:, list(FT.VAL_VIEWS)]
        val = None if val_views is None else FT.PooledSet(val_views, self.val_cat["label"].to_numpy(np.int64))
        return train_views, val

    def fit_normalizer(self) -> None:
        """Standardise the tapped trunk features with statistics of this run's training galaxies."""
        from galaxalign import features as FT

        tower = self.model.image_encoder
        if not FT.supports_cache(tower):
            return
        if self.train_views is not None:
            pooled = self.train_views
        else:  # fine-tuned trunk: statistics of the pretrained trunk on (a sample of) the training set
            # 128 galaxies x 8 views: 1,024 pooled vectors, one trunk pass each (not stored: the trunk trains)
            cat = self.train_cat.sample(n=min(len(self.train_cat), 128), random_state=int(self.cfg["seed"]))
            pooled = torch.from_numpy(FT.pooled_views_catalog(tower, cat, self.model.eval_transform(), device=self.env.device,
                                                              use_cache=False, progress=False))
        tower.fit_feature_normalizer(pooled.to(tower.feature_mean.device))

    def warm_start(self) -> None:
        """The text projection's warm start (:mod:`galaxalign.training.warm_start`) from the cached views."""
        if self.method.aligns_text and self.train_views is not None:
            prompts = self.taxonomy if self.rows is None else self.rows.prompts
            warm_start_text_projection(self.model, prompts, *self.train_embeddings())

    def train_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,D) 8-view-averaged embeddings of the labelled training galaxies (from the cached views,
        through the image tower's current projection) and their labels (per-galaxy: row ids)."""
        from galaxalign.features import embed_pooled_views

        emb = torch.from_numpy(embed_pooled_views(self.model.image_encoder, self.train_views, tta=True))
        return emb, torch.from_numpy(self.train_labels.copy())

    def device_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Host batch (uint8 images, labels, params) -> augmented, normalised images and labels on the
        device; copies are non-blocking, the noise seed is read from the host params (no sync).
        With the feature cache a batch is (pooled features, labels): the views were the augmentation."""
        dev = self.env.device
        if self.cached:
            feats, labels = batch
            return feats.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        images, labels, params = batch
        noise_seed = int(params[:, -1].double().sum()) if self.augment.strength > 0 else 0
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = self.augment.apply(images.to(dev, non_blocking=True), params.to(dev, non_blocking=True), noise_seed, memory_format=fmt)
        return x, labels.to(dev, non_blocking=True)


    def state_fn(self, si: int, stage: StagePlan | None, epoch: int, batch: int, *parts):
        """The checkpoint state here, built when called (``parts``: optimizer, scheduler, scaler, objective)."""
        position = {"stage_index": si, "epoch": epoch, "batch": batch}
        return lambda: self.ckpt.state(self.model, self.taxonomy, self.global_step, position, stage.number if stage else 0,
                                       self.elapsed(), *parts)

    def elapsed(self) -> float:
        return self.seconds_before + time.time() - self.t0


    def validate(self, objective, stage: StagePlan | None, epoch: int) -> dict:
        if not self.cfg["validate"] or self.val_input is None or len(self.val_input) == 0:
            return {}
        row: dict = {}
        if self.env.is_main:
            self.model.eval()
            with torch.no_grad(), self.autocast():
                metrics = objective.validate(self.model, self.taxonomy, self.val_input)
            self.train_mode()
            row = {"kind": "val", "step": self.global_step, "epoch": epoch, "stage": stage.number if stage else 0, **metrics, "seconds": round(self.elapsed(), 2)}
            self.log.val_row(row)
        barrier(self.env)
        return row

    def train_mode(self) -> None:
        self.model.train()  # GalaxAlignModel.train holds the batch norms when asked (build.apply_locks)

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.autocast_dtype)


    def run(self) -> TrainResult:
        self.setup()
        cfg, env = self.cfg, self.env
        plan = self.method.stages(cfg)
        pos = self.resume_state["position"] if self.resume_state else {"stage_index": 0, "epoch": 0, "batch": 0}
        completed = True
        dataset = self.dataset() if plan else None
        for si, stage in enumerate(plan):
            if si < pos["stage_index"]:
                continue
            resuming_here = self.resume_state is not None and si == pos["stage_index"]
            finished = self.run_stage(si, stage, dataset, pos if resuming_here else None)
            if env.distributed:
                # The stage's DDP wrapper is kept alive by reference cycles, with its gradient buckets
                # (~0.6 GB for ViT-B-16): collect it before the next stage builds its own.
                gc.collect()
            if not finished:
                completed = False
                break
        if not plan:
            # zero_shot: nothing to train; evaluate and save the initial model so evaluation can run on it.
            objective = self.method.objective(cfg, self.model, self.taxonomy, env, rows=self.rows)
            self.validate(objective, None, 0)
            self.ckpt.save(self.state_fn(0, None, 0, 0), self.global_step)
        export_dir = self.out / "model"
        if completed and env.is_main:
            from galaxalign.inference import save_pretrained

            save_pretrained(self.model, self.taxonomy, export_dir, extra={"method": cfg["method"], "config": cfg, "source": self.source, "step": self.global_step})
        barrier(env)
        self.log.close()
        return TrainResult(self.ckpt.last, export_dir, self.elapsed(), self.log.history, completed)

    def prepare_stage(self, stage: StagePlan, pos: dict | None):
        """The stage's towers (stage 2: a separate symbol encoder), objective and forward module."""
        cfg, env, model = self.cfg, self.env, self.model
        if stage.number == 2 and not stage.shared_symbol_encoder and model.symbol_encoder is model.image_encoder:
            # Stage 2: the symbol encoder becomes a copy of the stage-1 image encoder (locks copied too).
            model.separate_symbol_encoder()
            model.to(env.device)
        self.channels_last = compile_towers(model, cfg)
        objective = self.method.objective(cfg, model, self.taxonomy, env, rows=self.rows)
        if self.cached and getattr(objective, "bank", None) is not None and objective.use_symbols:
            objective.bank.use_pooled_symbols(model.symbol_encoder, model.symbol_transform(train=False))
        if self.cached and stage.number == 2 and pos is None and objective.use_symbols and not model.symbol_encoder_shared:
            warm_start_symbol_projection(model, objective.bank, *self.train_embeddings())
        module: nn.Module = objective.forward_module
        if env.distributed:
            # Reused symbol features (symbols.refresh_every > 1) leave the stage-2 symbol tower out of some steps.
            unused = int(cfg["symbols"]["refresh_every"]) > 1 and not model.symbol_encoder_shared
            module = nn.parallel.DistributedDataParallel(module, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                                                         find_unused_parameters=unused)
        return objective, module

    def run_stage(self, si: int, stage: StagePlan, dataset, pos: dict | None) -> bool:
        """Run one stage from ``pos`` (or its start). Returns False when max_steps stopped the run."""
        cfg, env, model = self.cfg, self.env, self.model
        objective, module = self.prepare_stage(stage, pos)
        sampler, steps_per_epoch = stage_sampler(dataset, cfg, env, stage.number)
        accum = cfg["accumulation"]
        optimizer, scheduler, scaler = stage_optimizer(model, cfg["optimizer"], stage, steps_per_epoch * stage.epochs,
                                                       env.device.type, self.use_scaler)
        start_epoch, start_batch = 0, 0
        if pos is not None:
            load_stage_state(self.resume_state, optimizer, scheduler, scaler)
            start_epoch, start_batch = int(pos["epoch"]), int(pos["batch"])
            set_run_rng_state(self.resume_state["rng"], objective, env)

        def state_at(epoch: int, batch: int):
            return self.state_fn(si, stage, epoch, batch, optimizer, scheduler, scaler, objective)

        self.train_mode()
        clip = cfg["optimizer"]["grad_clip_norm"]
        max_steps = cfg["max_steps"]
        every, save_epoch_ends = derived_checkpoint_every(cfg, steps_per_epoch, sum(p.epochs for p in self.method.stages(cfg)))
        log_every = int(self.runtime["log_every_steps"])
        loader = make_loader(dataset, sampler, cfg, int(self.runtime["workers"]), env.device.type == "cuda")
        trainable = [p for p in model.parameters() if p.requires_grad]
        # With the cache, keep the stage's best validation epoch (restored at the stage's end).
        best_epoch = BestEpoch(self.ckpt.dir / f"best_stage{stage.number}.safetensors", self.method.selection_metric) if self.cached else None
        if best_epoch is not None and pos is None:
            best_epoch.reset()
        for epoch in range(start_epoch, stage.epochs):
            skip_steps = start_batch if epoch == start_epoch else 0
            sampler.set_position(epoch, skip_steps * accum * cfg["batch_size"])
            bar = None
            if self.progress and env.is_main:
                from tqdm.auto import tqdm

                bar = tqdm(total=steps_per_epoch, initial=skip_steps, desc=f"{cfg['method']} stage {stage.number} epoch {epoch + 1}/{stage.epochs}", leave=False, dynamic_ncols=True)
            batch_in_epoch = skip_steps
            micro = 0
            # No host sync inside the step: loss terms stay device tensors until a flush (every
            # log_every steps, before a checkpoint, at the epoch's end) reads them all at once.
            sums: dict[str, torch.Tensor] = {}
            pending: list[dict] = []
            t_step = time.perf_counter()
            data_wait = 0.0
            batches = iter(loader)
            while True:
                t_data = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    break
                data_wait += time.perf_counter() - t_data
                if batch_in_epoch >= steps_per_epoch:
                    break  # the accumulation remainder of an epoch is not used
                images, labels = self.device_batch(batch)
                # OUR CHOICE: accumulation sums gradients of micro-batches (each its own contrastive
                # batch), not open_clip's feature caching; cheaper in code, negatives stay per micro-batch.
                last_micro = micro == accum - 1
                sync = module.no_sync() if (env.distributed and not last_micro) else nullcontext()
                with sync:
                    with self.autocast():
                        terms = objective.loss(module, images, labels)
                    scaler.scale(terms["loss"] / accum).backward()
                for k, v in terms.items():
                    v = v.detach().float() / accum
                    sums[k] = sums[k] + v if k in sums else v
                micro += 1
                if not last_micro:
                    continue
                optimizer_step(optimizer, scheduler, scaler, trainable, clip)
                with torch.no_grad():  # OUR CHOICE (open_clip's): temperature kept in [1/100, 1]
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                self.global_step += 1
                batch_in_epoch += 1
                micro = 0
                now = time.perf_counter()
                pending.append({"kind": "train", "step": self.global_step, "epoch": epoch, "stage": stage.number,
                                "_device": {**sums, "logit_scale": model.logit_scale.detach().exp()},
                                "lr": optimizer.param_groups[0]["lr"], "step_seconds": round(now - t_step, 4),
                                "data_seconds": round(data_wait, 4), "seconds": round(self.elapsed(), 2)})
                sums = {}
                data_wait = 0.0
                stop = max_steps is not None and self.global_step >= max_steps
                ckpt = batch_in_epoch < steps_per_epoch and (stop or (every and self.global_step % every == 0))
                if len(pending) >= log_every or ckpt or stop or batch_in_epoch >= steps_per_epoch:
                    self.log.flush(pending, bar)
                if ckpt:
                    self.ckpt.save(state_at(epoch, batch_in_epoch), self.global_step)
                if stop and batch_in_epoch < steps_per_epoch:
                    if bar is not None:
                        bar.close()
                    return False
                t_step = time.perf_counter()
            self.log.flush(pending, bar)
            if bar is not None:
                bar.close()
            last_epoch = epoch + 1 == stage.epochs
            # With the cache, epochs are short: validate about 30 times a stage (and at its end).
            val_every = max(1, stage.epochs // (FT_VALIDATIONS_MAPS if self.map_cached else 30)) if self.cached else 1
            row = self.validate(objective, stage, epoch) if ((epoch + 1) % val_every == 0 or last_epoch) else {}
            if best_epoch is not None and env.is_main:
                best_epoch.offer(model, row, epoch + 1)
            if last_epoch and best_epoch is not None:
                barrier(env)
                chosen = best_epoch.restore(model)
                if chosen is not None and env.is_main:
                    self.log.val_row({"kind": "val", "step": self.global_step, "epoch": epoch, "stage": stage.number,
                                      "selected_epoch": chosen, "seconds": round(self.elapsed(), 2)})
            best = self.ckpt.is_new_best(row, self.method.selection_metric)
            stop = max_steps is not None and self.global_step >= max_steps
            if save_epoch_ends or best or last_epoch or stop or self.global_step - self.ckpt.saved_step >= every or cfg["keep_epoch_checkpoints"]:
                self.ckpt.save(state_at(epoch + 1, 0), self.global_step, f"stage{stage.number}_epoch{epoch + 1}", best)
            if stop:
                return si == len(self.method.stages(cfg)) - 1 and epoch + 1 == stage.epochs
        if stage.epochs == 0:
            self.ckpt.save(state_at(0, 0), self.global_step)
        return True


def train(config: dict | str | Path, progress: bool = True, resume: str | Path | None = None) -> TrainResult:
    """Train as ``config`` says (a dict from load_config, or a config name/path) and export the model.

    ``resume``: a checkpoint path, or ``"auto"`` for ``OUT/checkpoints/last.pt``. With
    ``progress=False`` nothing is printed (the demo trains many runs).
    """
    cfg = load_config(config)  # a dict is re-validated: callers may have edited it
    return Trainer(cfg, progress=progress, resume=resume).run()
