"""The training loop: stage 1 then stage 2 (or a baseline), checkpoints, resume, logs, export.

One code path serves every method (``galaxalign``, ``image_text``, ``image_only``, ``zero_shot``);
what differs is the objective (``methods.py``) and the stage plan. ``train(config)`` is the Python
front door; ``galaxalign train`` is a thin shell over it.
"""
from __future__ import annotations

import csv
import gc
import os
import shutil
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from galaxalign.model import MAX_LOGIT_SCALE
from galaxalign.runtime import atomic_path
from galaxalign.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from galaxalign.training.config import derived_checkpoint_every, derived_runtime, load_config
from galaxalign.distributed import DistEnv, ResumableSampler, barrier, init_distributed
from galaxalign.training.methods import build_objective
from galaxalign.training.schedule import build_optimizer, cosine_schedule

TRAIN_LOG = "train_log.csv"
VAL_LOG = "val_log.csv"
# OUR CHOICE: ``answers.per_galaxy: auto`` aligns each galaxy with its own path only when the labelled
# training galaxies average at least 2 per distinct path; below that most paths are one galaxy's, and a
# class bank generalises better. Validation split, scripts/per_galaxy_val_sweep.py (class_weight 3):
# label fraction 0.01 (14 galaxies on 11 paths) per-galaxy vs class-level val class mAP 0.279 vs 0.289,
# feature nDCG@10 symbol 0.713 vs 0.745, text 0.615 vs 0.688; label fraction 0.1 (about 4 per path)
# and 1 (about 23 per path) per-galaxy is level or above (docs/model.md).
MIN_GALAXIES_PER_PATH = 2.0


@dataclass
class TrainResult:
    checkpoint: Path  # the last .pt written
    export_dir: Path  # OUT/model, loadable with galaxalign.inference.load_model
    seconds: float
    history: list[dict] = field(default_factory=list)  # train rows (per optimiser step) and val rows (per epoch)
    completed: bool = True  # False when stopped by max_steps


@dataclass(frozen=True)
class StagePlan:
    number: int  # 1 or 2: which config section (stage1 / stage2) it reads
    epochs: int
    lr: float
    warmup_fraction: float
    shared_symbol_encoder: bool


def stage_plan(cfg: dict) -> list[StagePlan]:
    """Which stages a method runs. Baselines run one stage with the stage-1 settings."""
    def plan(n: int, shared: bool) -> StagePlan:
        s = cfg[f"stage{n}"]
        return StagePlan(n, s["epochs"], float(s["lr"]), float(s["warmup_fraction"]), shared)

    method = cfg["method"]
    # OUR CHOICE: a baseline runs one stage with the stage-1 settings (epochs, lr, warm-up).
    if method == "zero_shot":
        return []
    if method in ("image_text", "image_only"):
        return [plan(1, True)]
    return [plan(n, True if n == 1 else bool(cfg["stage2"]["shared_symbol_encoder"])) for n in cfg["stages"]]


# ---------------------------------------------------------------------------------------------
# seeds and data


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
            "num_classes": taxonomy.num_classes if cfg["method"] == "image_only" else None,
            "tta": cfg["model"]["tta"],
        }
    return GalaxAlignModel.from_config(model_config)


def apply_locks(model: nn.Module, cfg: dict) -> None:
    m = cfg["model"]
    model.freeze_bn_stats = bool(m["freeze_bn_stats"])   # see Trainer.train_mode
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


# ---------------------------------------------------------------------------------------------
# logs


class RunLog:
    """CSV (always) and TensorBoard (optional) logs, rank 0 only. On resume, rows past the checkpoint's
    step (written by the killed run after its last checkpoint) are dropped so the logs read as one run."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.enabled = enabled
        self.out = out
        self.history: list[dict] = []
        self._headers: dict[str, list[str]] = {}
        self.writer = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        for name in (TRAIN_LOG, VAL_LOG):
            path = out / name
            if resume_step is None:
                path.unlink(missing_ok=True)
            elif path.exists():
                with open(path, newline="") as f:
                    rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
                self._rewrite(path, rows)
                self.history.extend(_typed(r) for r in rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # tensorboard not installed: CSV still has everything
                self.writer = None

    @staticmethod
    def _rewrite(path: Path, rows: list[dict]) -> None:
        if not rows:
            path.unlink(missing_ok=True)
            return
        fields = list(rows[0].keys())
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    def _append(self, name: str, row: dict) -> None:
        """Append one CSV row. The header is read once per file and cached; the file is rewritten
        only when a row brings a column the header lacks (e.g. a loss term that starts in stage 2)."""
        path = self.out / name
        header = self._headers.get(name)
        if header is None and path.exists():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
        new_columns = [k for k in row if k not in (header or ())]
        if header is None or not path.exists():
            header = list(row)
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=header, restval="")
                w.writeheader()
                w.writerow(row)
        elif new_columns:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            header = header + new_columns
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=header, restval="")
                w.writeheader()
                w.writerows(rows)
                w.writerow(row)
        else:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=header, restval="").writerow(row)
        self._headers[name] = header

    def _log(self, name: str, row: dict, tag: str, keep) -> None:
        self.history.append(row)
        if not self.enabled:
            return
        self._append(name, row)
        if self.writer is not None:
            for k, v in row.items():
                if keep(k) and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{tag}/{k.removeprefix('val_')}", v, row["step"])

    def train_row(self, row: dict) -> None:
        self._log(TRAIN_LOG, row, "train", lambda k: k not in ("step", "epoch", "stage", "kind"))

    def val_row(self, row: dict) -> None:
        self._log(VAL_LOG, row, "val", lambda k: k.startswith("val_"))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _typed(row: dict) -> dict:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v in ("", None):
            continue
        try:
            f = float(v)
            out[k] = int(f) if k in ("step", "epoch", "stage") else f
        except ValueError:
            out[k] = v
    return out


# Keys a resumed run may change: they do not alter what is computed.
RESUME_MAY_CHANGE = {"max_steps", "out", "workers", "threads", "device", "tensorboard", "checkpoint_every_steps", "keep_epoch_checkpoints",
                     "keep_best_checkpoint", "log_every_steps", "compile", "channels_last"}


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Key paths where two configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


# ---------------------------------------------------------------------------------------------
# model selection


def selection_metric(method: str) -> str:
    """The validation metric that picks a stage's best epoch: each method's primary classifier."""
    return {"galaxalign": "val_acc_both", "image_text": "val_acc_text", "image_only": "val_acc_classifier"}.get(method, "val_acc_text")


class BestEpoch:
    """The best validation epoch of a stage: its trainable weights (and normaliser buffers), kept in
    memory and in a small safetensors file (score and epoch in its metadata) so that a resumed run
    still knows it."""

    def __init__(self, path: Path, metric: str):
        self.path = path
        self.metric = metric
        self.score: float | None = None
        self.epoch: int | None = None
        self.state: dict | None = None
        self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            meta = f.metadata() or {}
            self.state = {k: f.get_tensor(k) for k in f.keys()}
        self.score, self.epoch = float(meta["score"]), int(meta["epoch"])

    def reset(self) -> None:
        self.score = self.epoch = self.state = None
        self.path.unlink(missing_ok=True)

    @staticmethod
    def _trainable(model: nn.Module) -> dict:
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
                if k in names or k.endswith(("feature_mean", "feature_std"))}

    def offer(self, model: nn.Module, row: dict, epoch: int) -> None:
        value = row.get(self.metric)
        if value is None or (self.score is not None and float(value) <= self.score):
            return
        from safetensors.torch import save_file

        from galaxalign.runtime import atomic_path

        self.score, self.epoch, self.state = float(value), int(epoch), self._trainable(model)
        with atomic_path(self.path) as tmp:
            save_file(self.state, str(tmp), metadata={"score": repr(self.score), "epoch": str(self.epoch)})

    def restore(self, model: nn.Module) -> int | None:
        """Load the best epoch's weights into ``model`` (every rank); returns that epoch or None."""
        if self.state is None:
            self._read()
        if self.state is None:
            return None
        device = next(model.parameters()).device
        missing = set(self.state) - set(model.state_dict())
        if missing:
            raise RuntimeError(f"{self.path}: best-epoch weights name parameters the model lacks: {sorted(missing)[:5]}")
        model.load_state_dict({**model.state_dict(), **{k: v.to(device) for k, v in self.state.items()}})
        return self.epoch


# ---------------------------------------------------------------------------------------------
# the loop


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
        self.per_galaxy_note = None
        self.path_counts: tuple[list, list] | None = None
        self.rows, self.train_labels = self.label_rows()
        if progress and self.env.is_main and self.per_galaxy_note:
            print(self.per_galaxy_note, flush=True)
        if progress and self.env.is_main and self.rows is not None:
            print(f"per-galaxy alignment: {len(self.rows)} distinct decision-tree paths over {len(self.train_cat)} "
                  "training galaxies (answers.per_galaxy)", flush=True)
        self.cached = bool(cfg["recipe"].get("enabled")) and cfg["recipe"].get("cache") is True
        self.out = Path(cfg["out"])
        self.ckpt_dir = self.out / "checkpoints"
        self.resume_state = None
        if resume is not None:
            path = self.ckpt_dir / "last.pt" if str(resume) in ("", "auto", "last") else Path(resume)
            self.resume_state = load_checkpoint(path)
            saved_method = self.resume_state["method"]
            if saved_method != cfg["method"]:
                raise ValueError(f"{path}: checkpoint was trained with method {saved_method!r}, config says {cfg['method']!r}")
            changed = [k for k in _diff(self.resume_state["config"], cfg) if k.split(".")[0] not in RESUME_MAY_CHANGE]
            if changed:
                raise ValueError(
                    f"{path}: the config differs from the checkpoint's in {changed}; resume with the same config "
                    f"and overrides (only {sorted(RESUME_MAY_CHANGE)} may change)"
                )
        self.t0 = time.time()
        self.seconds_before = float(self.resume_state.get("seconds", 0.0)) if self.resume_state else 0.0
        self.global_step = int(self.resume_state["step"]) if self.resume_state else 0
        self.last_checkpoint: Path | None = None
        self.saved_step = self.global_step  # step of the last checkpoint written (derived cadence)
        self.best = self.resume_state.get("best") if self.resume_state else None  # (metric, value) of best.pt

    # -- set-up ---------------------------------------------------------------------------------

    def label_rows(self):
        """``(BankRows or None, the label of each training galaxy the objective sees)``: class ids, or
        with per-galaxy alignment the row id of each galaxy's decision-tree path (class_bank.galaxy_rows).

        OUR CHOICE: ``answers.per_galaxy: auto`` turns it on for ``galaxalign`` when the training
        catalog carries per-galaxy answers and its labelled galaxies average at least
        ``MIN_GALAXIES_PER_PATH`` per distinct path; ``image_text`` stays the paper's class-level
        baseline unless ``answers.per_galaxy: true``."""
        from galaxalign.answers import has_galaxy_answers
        from galaxalign.class_bank import galaxy_rows, path_counts

        cfg = self.cfg
        labels = self.train_cat["label"].to_numpy(np.int64).copy()
        mode = cfg["answers"]["per_galaxy"]
        if cfg["method"] not in ("galaxalign", "image_text") or mode is False:
            return None, labels
        if mode == "auto" and (cfg["method"] != "galaxalign" or not has_galaxy_answers(self.train_cat, self.taxonomy)):
            return None, labels
        row_of, rows = galaxy_rows(self.train_cat, self.taxonomy, int(cfg["answers"]["partial_captions"]),
                                   int(cfg["answers"]["partial_symbols"]), float(cfg["answers"]["class_weight"]))
        self.path_counts = path_counts(row_of, rows)  # (distinct paths, galaxies each): the model records them
        if mode == "auto":
            n_paths = len(self.path_counts[0])
            if len(row_of) < MIN_GALAXIES_PER_PATH * n_paths:
                self.per_galaxy_note = (f"per-galaxy alignment off (answers.per_galaxy: auto): {len(row_of)} labelled "
                                        f"training galaxies on {n_paths} distinct decision-tree paths, fewer than "
                                        f"{MIN_GALAXIES_PER_PATH:g} per path; aligning with class-level symbols and text")
                self.path_counts = None
                return None, labels
        return rows, row_of

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
        self.train_images = GalaxyDataset(catalog, image_size=self.model.image_size, in_memory=self.cfg["data"]["in_memory"])
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
        val = None if out[1] is None else FT.PooledSet(out[1], self.val_cat["label"].to_numpy(np.int64))
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
        """OUR CHOICE (LP-FT style warm start): before contrastive training, the text projection is set
        so that each class's prompts land on the mean image embedding of its labelled galaxies (ridge
        least squares, text tower otherwise untouched), so training starts from prototypes that
        already classify like nearest-class-mean instead of aligning random ones."""
        if self.cfg["method"] not in ("galaxalign", "image_text") or self.train_views is None:
            return
        from galaxalign.training.warm_start import warm_start_text_projection

        emb, labels = self.train_embeddings()
        warm_start_text_projection(self.model, self.taxonomy if self.rows is None else self.rows.prompts, emb, labels)

    def train_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,D) 8-view-averaged embeddings of the labelled training galaxies (from the cached views,
        through the image tower's current projection) and their labels (per-galaxy: row ids)."""
        from galaxalign.features import embed_pooled_views

        emb = torch.from_numpy(embed_pooled_views(self.model.image_encoder, self.train_views, tta=True))
        return emb, torch.from_numpy(self.train_labels.copy())

    def loader(self, dataset, sampler: ResumableSampler) -> DataLoader:
        """One loader per stage: persistent workers keep their HDF5 handles across epochs; batches are
        uint8 in pinned memory on a GPU."""
        g = torch.Generator()
        g.manual_seed(self.cfg["seed"])
        workers = int(self.runtime["workers"])
        return DataLoader(
            dataset,
            batch_size=self.cfg["batch_size"],
            sampler=sampler,
            num_workers=workers,
            worker_init_fn=worker_init_fn,
            generator=g,
            drop_last=True,
            pin_memory=self.env.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=2 if workers > 0 else None,
        )

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

    def compile_towers(self) -> None:
        """``compile``: torch.compile each tower in place (state-dict keys unchanged); ``channels_last``:
        the towers' weights in that memory format.

        OUR CHOICE (measured, docs/training.md "Speed"): ``channels_last: auto`` is on for convolutional
        image towers (more than one Conv2d: EfficientNet-Lite0's fwd+bwd at batch 64 took 0.67 s instead
        of 1.31 s on the CPU) and off for a ViT (one Conv2d, the patch embedding)."""
        model, cfg = self.model, self.cfg
        towers = [model.image_encoder, model.text_encoder] + ([] if model.symbol_encoder_shared else [model.symbol_encoder])
        self.channels_last = cfg["channels_last"]
        # OUR CHOICE: channels_last "auto" = on for convolutional image towers (> 1 Conv2d), off for a ViT.
        if self.channels_last == "auto":
            self.channels_last = sum(isinstance(m, nn.Conv2d) for m in model.image_encoder.modules()) > 1
        if self.channels_last:
            for t in towers:
                t.to(memory_format=torch.channels_last)
        if cfg["compile"]:
            backend = "inductor" if cfg["compile"] is True else str(cfg["compile"])
            for t in towers:
                if getattr(t, "_compiled_call_impl", None) is None:
                    t.compile(backend=backend)

    # -- checkpoints ----------------------------------------------------------------------------

    def state(self, stage_index: int, stage: StagePlan, epoch: int, batch: int, optimizer, scheduler, scaler, objective=None) -> dict:
        rngs = rng_state()
        bank = getattr(objective, "bank", None)
        if bank is not None:  # the class bank draws prompts and symbol variants from its own generator
            rngs["class_bank"] = bank.rng.bit_generator.state
        fwd = getattr(objective, "forward_module", None)
        if getattr(fwd, "symbol_refresh_every", 1) > 1:  # reused symbol features: part of the exact state
            rngs["symbol_cache"] = {"calls": fwd.calls, "features": None if fwd.symbol_cache is None else fwd.symbol_cache.cpu()}
        if self.env.distributed:
            import torch.distributed as dist

            gathered: list = [None] * self.env.world_size
            dist.all_gather_object(gathered, rngs)
            rngs = {"per_rank": gathered}
        return {
            "model": self.model.state_dict(),
            "model_config": self.model.config,
            "taxonomy": self.taxonomy.to_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": self.global_step,
            "epoch": epoch,
            "stage": stage.number if stage is not None else 0,
            "position": {"stage_index": stage_index, "epoch": epoch, "batch": batch, "world_size": self.env.world_size},
            "config": self.cfg,
            "rng": rngs,
            "method": self.cfg["method"],
            "seconds": self.elapsed(),
            "best": self.best,
        }

    def save(self, state_fn, tag: str | None = None, best: bool = False) -> None:
        """Every rank builds the state (RNG gathering is collective); rank 0 writes it (``best``: also
        as best.pt)."""
        state = state_fn()
        if self.env.is_main:
            self.last_checkpoint = save_checkpoint(self.ckpt_dir / "last.pt", state)
            if tag and self.cfg["keep_epoch_checkpoints"]:
                save_checkpoint(self.ckpt_dir / f"{tag}.pt", state)
            if best:  # a byte copy of last.pt, written atomically like it (no second serialisation)
                with atomic_path(self.ckpt_dir / "best.pt") as tmp:
                    shutil.copyfile(self.last_checkpoint, tmp)
        else:
            self.last_checkpoint = self.ckpt_dir / "last.pt"
        self.saved_step = self.global_step
        barrier(self.env)

    def is_new_best(self, row: dict) -> bool:
        """``keep_best_checkpoint``: does this validation row beat best.pt? By the method's
        :func:`selection_metric` (its primary classifier's validation accuracy)."""
        if not self.cfg["keep_best_checkpoint"]:
            return False
        if self.env.distributed:  # rank 0 validated: every rank must take the same decision
            import torch.distributed as dist

            box = [row]
            dist.broadcast_object_list(box, src=0)
            row = box[0]
        key = selection_metric(self.cfg["method"])  # the same metric that picks a stage's best epoch
        if key not in row:
            key = next((k for k in row if k.startswith("val_acc")), None)
        if key is None:
            return False
        if self.best is None or row[key] > self.best[1]:
            self.best = (key, float(row[key]))
            return True
        return False

    def restore_rng(self, objective=None) -> None:
        rngs = self.resume_state["rng"]
        if "per_rank" in rngs:
            per = rngs["per_rank"]
            rngs = per[self.env.rank] if self.env.rank < len(per) else per[0]
        set_rng_state(rngs)
        bank = getattr(objective, "bank", None)
        if bank is not None and "class_bank" in rngs:
            bank.rng.bit_generator.state = rngs["class_bank"]
        cache = rngs.get("symbol_cache")
        fwd = getattr(objective, "forward_module", None)
        if cache is not None and fwd is not None:
            fwd.calls = int(cache["calls"])
            fwd.symbol_cache = None if cache["features"] is None else cache["features"].to(self.env.device)

    def elapsed(self) -> float:
        return self.seconds_before + time.time() - self.t0

    # -- validation -----------------------------------------------------------------------------

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
        """``model.train()``, then keep every batch norm on its running statistics when asked.

        OUR CHOICE (``model.freeze_bn_stats``): with BatchNorm towers the batch statistics couple the
        galaxies of a batch with the class-level symbols encoded beside them (jointly or in their own
        small batch), and the running statistics used at evaluation drift towards a mixture of the
        two; frozen statistics keep the pretrained normalisation (scales and shifts still train)."""
        self.model.train()   # GalaxAlignModel.train holds the batch norms (backbones.base.HoldsNormStats)

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.autocast_dtype)

    # -- run ------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        self.setup()
        cfg, env = self.cfg, self.env
        plan = stage_plan(cfg)
        pos = self.resume_state["position"] if self.resume_state else {"stage_index": 0, "epoch": 0, "batch": 0}
        if self.resume_state and pos.get("world_size", env.world_size) != env.world_size:
            raise ValueError(
                f"checkpoint was written by {pos['world_size']} processes, this run has {env.world_size}: "
                "the data order of a mid-epoch resume would differ (resume with the same world size)"
            )
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
            objective = build_objective(cfg, self.model, self.taxonomy, env, rows=self.rows)
            self.validate(objective, None, 0)
            self.save(lambda: self.state(0, None, 0, 0, None, None, None))
        export_dir = self.out / "model"
        if completed and env.is_main:
            from galaxalign.inference import save_pretrained

            save_pretrained(self.model, self.taxonomy, export_dir, extra={"method": cfg["method"], "config": cfg, "source": self.source, "step": self.global_step})
        barrier(env)
        self.log.close()
        return TrainResult(self.last_checkpoint, export_dir, self.elapsed(), self.log.history, completed)

    def run_stage(self, si: int, stage: StagePlan, dataset, pos: dict | None) -> bool:
        """Run one stage from ``pos`` (or its start). Returns False when max_steps stopped the run."""
        cfg, env, model = self.cfg, self.env, self.model
        if stage.number == 2 and not stage.shared_symbol_encoder and model.symbol_encoder is model.image_encoder:
            # Stage 2: the symbol encoder becomes a copy of the stage-1 image encoder (locks copied too).
            model.separate_symbol_encoder()
            model.to(env.device)
        self.compile_towers()
        objective = build_objective(cfg, model, self.taxonomy, env, rows=self.rows)
        if self.cached and getattr(objective, "bank", None) is not None and objective.use_symbols:
            objective.bank.use_pooled_symbols(model.symbol_encoder, model.symbol_transform(train=False))
        if self.cached and stage.number == 2 and pos is None and objective.use_symbols and not model.symbol_encoder_shared:
            self.warm_start_symbols(objective)
        module: nn.Module = objective.forward_module
        if env.distributed:
            # Reused symbol features (symbols.refresh_every > 1) leave the stage-2 symbol tower out of some steps.
            unused = int(cfg["symbols"]["refresh_every"]) > 1 and not model.symbol_encoder_shared
            module = nn.parallel.DistributedDataParallel(module, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                                                         find_unused_parameters=unused)

        sampler = ResumableSampler(dataset, env.world_size, env.rank, seed=cfg["seed"] + 1000 * stage.number, batch_size=cfg["batch_size"])
        micro_per_epoch = sampler.num_samples // cfg["batch_size"]
        accum = cfg["accumulation"]
        steps_per_epoch = micro_per_epoch // accum
        if steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {cfg['batch_size']} x accumulation {accum} x {env.world_size} process(es) exceeds the "
                f"{len(dataset)} labelled training galaxies: lower batch_size or accumulation"
            )
        total_steps = steps_per_epoch * stage.epochs
        optimizer = build_optimizer(model, stage.lr, cfg["optimizer"]["weight_decay"], (cfg["optimizer"]["beta1"], cfg["optimizer"]["beta2"]), cfg["optimizer"]["eps"],
                                    head_lr_scale=float(cfg["optimizer"]["head_lr_scale"]))
        scheduler = cosine_schedule(optimizer, total_steps, stage.warmup_fraction)
        scaler = torch.amp.GradScaler(env.device.type, enabled=self.use_scaler)
        start_epoch, start_batch = 0, 0
        if pos is not None:
            optimizer.load_state_dict(self.resume_state["optimizer"])
            scheduler.load_state_dict(self.resume_state["scheduler"])
            if self.resume_state.get("scaler"):
                scaler.load_state_dict(self.resume_state["scaler"])
            start_epoch, start_batch = int(pos["epoch"]), int(pos["batch"])
            self.restore_rng(objective)

        def state_at(epoch: int, batch: int):
            return lambda: self.state(si, stage, epoch, batch, optimizer, scheduler, scaler, objective)

        self.train_mode()
        clip = cfg["optimizer"]["grad_clip_norm"]
        max_steps = cfg["max_steps"]
        every, save_epoch_ends = derived_checkpoint_every(cfg, steps_per_epoch, sum(p.epochs for p in stage_plan(cfg)))
        log_every = int(self.runtime["log_every_steps"])
        loader = self.loader(dataset, sampler)
        trainable = [p for p in model.parameters() if p.requires_grad]
        # With the cache, keep the stage's best validation epoch (restored at the stage's end).
        best_epoch = BestEpoch(self.ckpt_dir / f"best_stage{stage.number}.safetensors", selection_metric(cfg["method"])) if self.cached else None
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
                if clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, float(clip))
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                with torch.no_grad():  # OUR CHOICE (open_clip's): temperature kept in [1/100, 1]
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                self.global_step += 1
                batch_in_epoch += 1
                micro = 0
                now = time.perf_counter()
                pending.append({
                    "kind": "train",
                    "step": self.global_step,
                    "epoch": epoch,
                    "stage": stage.number,
                    "_device": {**sums, "logit_scale": model.logit_scale.detach().exp()},
                    "lr": optimizer.param_groups[0]["lr"],
                    "step_seconds": round(now - t_step, 4),
                    "data_seconds": round(data_wait, 4),
                    "seconds": round(self.elapsed(), 2),
                })
                sums = {}
                data_wait = 0.0
                stop = max_steps is not None and self.global_step >= max_steps
                ckpt = batch_in_epoch < steps_per_epoch and (stop or (every and self.global_step % every == 0))
                if len(pending) >= log_every or ckpt or stop or batch_in_epoch >= steps_per_epoch:
                    self.flush(pending, bar)
                if ckpt:
                    self.save(state_at(epoch, batch_in_epoch))
                if stop and batch_in_epoch < steps_per_epoch:
                    if bar is not None:
                        bar.close()
                    return False
                t_step = time.perf_counter()
            self.flush(pending, bar)
            if bar is not None:
                bar.close()
            last_epoch = epoch + 1 == stage.epochs
            # With the cache, epochs are short: validate about 30 times a stage (and at its end).
            val_every = max(1, stage.epochs // 30) if self.cached else 1
            row = self.validate(objective, stage, epoch) if ((epoch + 1) % val_every == 0 or last_epoch) else {}
            if best_epoch is not None and env.is_main:
                best_epoch.offer(model, row, epoch + 1)
            if last_epoch and best_epoch is not None:
                barrier(env)
                chosen = best_epoch.restore(model)
                if chosen is not None and env.is_main:
                    self.log.val_row({"kind": "val", "step": self.global_step, "epoch": epoch, "stage": stage.number,
                                      "selected_epoch": chosen, "seconds": round(self.elapsed(), 2)})
            best = self.is_new_best(row)
            stop = max_steps is not None and self.global_step >= max_steps
            if save_epoch_ends or best or last_epoch or stop or self.global_step - self.saved_step >= every or cfg["keep_epoch_checkpoints"]:
                self.save(state_at(epoch + 1, 0), tag=f"stage{stage.number}_epoch{epoch + 1}", best=best)
            if stop:
                return si == len(stage_plan(cfg)) - 1 and epoch + 1 == stage.epochs
        if stage.epochs == 0:
            self.save(state_at(0, 0))
        return True

    def warm_start_symbols(self, objective) -> None:
        """Stage 2: the separate symbol encoder's projection starts with each class's symbols pointing
        at its labelled galaxies' mean image embedding (see :meth:`warm_start`)."""
        from galaxalign.training.warm_start import class_means, ridge_projection

        model, bank = self.model, objective.bank
        emb, labels = self.train_embeddings()
        means = class_means(emb, labels, bank.num_classes)
        present = set(labels.unique().tolist())
        tower = model.symbol_encoder
        rows = [(r, c) for c in sorted(present) for r in bank.symbol_rows[c]]
        views = bank.symbol_views[[r for r, _ in rows]]  # (n, 8, F)
        inputs = torch.as_tensor(views.reshape(-1, views.shape[-1]), dtype=torch.float32, device=tower.feature_mean.device)
        inputs = (inputs - tower.feature_mean) / tower.feature_std
        targets = torch.stack([means[c] for _, c in rows for _ in range(views.shape[1])]).to(inputs.device)
        ridge_projection(tower.proj, inputs, targets)

    def flush(self, pending: list[dict], bar=None) -> None:
        """Read the pending steps' device scalars in ONE transfer and write their train-log rows."""
        if not pending:
            return
        keys = [list(r["_device"]) for r in pending]
        flat = torch.stack([v.reshape(()).float() for r in pending for v in r["_device"].values()]).tolist()
        at = 0
        for r, ks in zip(pending, keys):
            vals = dict(zip(ks, flat[at : at + len(ks)]))
            at += len(ks)
            scale = vals.pop("logit_scale")
            row = {k: v for k, v in r.items() if k != "_device"}
            row = {**{k: row[k] for k in ("kind", "step", "epoch", "stage")}, **{k: round(v, 6) for k, v in vals.items()},
                   "lr": row["lr"], "logit_scale": round(scale, 4), "step_seconds": row["step_seconds"],
                   "data_seconds": row["data_seconds"], "seconds": row["seconds"]}
            if self.env.is_main:
                self.log.train_row(row)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.set_postfix(loss=f"{vals.get('loss', float('nan')):.4f}")
        pending.clear()


def train(config: dict | str | Path, progress: bool = True, resume: str | Path | None = None) -> TrainResult:
    """Train as ``config`` says (a dict from load_config, or a config name/path) and export the model.

    ``resume``: a checkpoint path, or ``"auto"`` for ``OUT/checkpoints/last.pt``. With
    ``progress=False`` nothing is printed (the demo trains many runs).
    """
    cfg = load_config(config)  # a dict is re-validated: callers may have edited it
    return Trainer(cfg, progress=progress, resume=resume).run()
