"""Training configuration: a YAML file merged over the schema below, plus ``a.b=c`` overrides.

The schema is the single list of keys a config may hold; a key outside it is an error naming its
full path (``stage1.lrr``), never silently ignored. Shipped configs live in ``galaxalign/configs``
and are referable by name (``default``, ``paper``).
"""
from __future__ import annotations

import copy
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from galaxalign.training.methods import list_methods
from galaxalign.training.recipe import RECIPE_DEFAULTS

from galaxalign.datasets.splits import DATA_DEFAULTS

CONFIGS = "galaxalign.configs"
METHODS = list_methods()  # the registered training methods (training.methods)
AMP_MODES = ("auto", "fp16", "bf16", "off")

# Keys whose value is a free-form mapping handed to another layer (validated there, not here).
FREE_FORM = {("model", "backbone")}

# The schema: every key a config may hold, with its default.
SCHEMA: dict[str, Any] = {
    "method": "galaxalign",
    "stages": [1, 2],
    "data": copy.deepcopy(DATA_DEFAULTS),  # the data section is the library's (galaxalign.datasets.splits)
    "model": {
        "backbone": {"kind": "offline"},
        "embed_dim": None,  # None: the backbone's own
        "lock_image": False,
        "lock_image_unlocked_groups": 0,  # with lock_image: how many last layer groups still train
        "lock_image_freeze_bn_stats": True,  # frozen groups keep their batch-norm statistics too
        "freeze_bn_stats": False,  # every batch norm (trainable groups too) keeps its running statistics
        "lock_text": False,
        "lock_text_unlocked_layers": 0,
        "tta": "none",  # "dihedral": classify and embed with the mean of the 8 rotations/flips
    },
    # The self-choosing recipe (training/recipe.py, which owns its keys and defaults); off in the bare
    # schema, on in configs/default.yaml.
    "recipe": {**RECIPE_DEFAULTS, "enabled": False},
    "loss": {
        "image_text": 1.0,
        "symbol_text": 1.0,
        "image_symbol": 1.0,
        "label_aware": True,
        # Per-galaxy alignment: positives graded by answer agreement ** graded_power (galaxalign.loss).
        "graded_power": 4.0,
    },
    # Per-galaxy decision-tree answers (galaxalign.answers): "auto" aligns each galaxy with its own
    # caption and symbol when the training catalog carries answers, true always (galaxies without
    # answers use their class's), false class-level texts and symbols as in the paper.
    "answers": {
        "per_galaxy": "auto",
        "symbol_variants": 2,  # symbol variants per distinct answer path (the class bank's variants: symbols.variants)
        "partial_captions": 0,  # extra captions per path that say only some of its answers (class_bank.partial_paths)
        "partial_symbols": 0,  # symbols of partial paths alternating with the full one across the symbol variants
        "class_weight": 0.0,   # the class label as one more answer of this weight in the graded agreement (class_bank.galaxy_rows)
    },
    "symbols": {
        "variants": 4,  # symbol variants per class in the class bank
        "seed": 0,
        "joint_forward": True,  # stage 1: images and symbols in one pass through the shared encoder
        "all_classes": True,  # encode every class's text and symbol each step: fixed shapes, no host sync
        "refresh_every": 1,  # encode symbols every k-th step, reuse the detached features between (1: every step)
    },
    # OUR CHOICE (the paper's are unpublished): learning rates, epochs, warm-up fraction, AdamW betas/eps
    # (CLIP's), weight decay 0.1, equal loss weights, label-aware loss; stage 2 at half the stage-1 rate.
    "stage1": {"epochs": 2, "lr": 1e-4, "warmup_fraction": 0.1},
    "stage2": {"epochs": 2, "lr": 5e-5, "warmup_fraction": 0.1, "shared_symbol_encoder": False},
    "optimizer": {"weight_decay": 0.1, "beta1": 0.9, "beta2": 0.98, "eps": 1e-6, "grad_clip_norm": None,
                  "head_lr_scale": 1.0},  # lr factor of the projection heads and the temperature
    "batch_size": 64,  # per process
    "accumulation": 1,
    "workers": None,  # DataLoader workers per process; None: derived from the device (derived_runtime)
    "threads": None,  # torch intra-op threads per process; None: derived from the device (derived_runtime)
    "device": "auto",
    "amp": "auto",
    "seed": 0,
    "out": "runs/train",
    "checkpoint_every_steps": None,  # 0: only at the end of each epoch; None: derived from the run length
    "keep_epoch_checkpoints": False,
    "keep_best_checkpoint": False,  # also keep checkpoints/best.pt: the epoch with the best validation accuracy
    "log_every_steps": None,  # train-log cadence (one host sync per N steps); None: 1 on CPU, 25 on a GPU
    "compile": False,  # torch.compile the towers: false, true (inductor) or a backend name
    "channels_last": "auto",  # channels_last image batch and towers: true, false, "auto" (on for convolutional image towers)
    "validate": True,
    "max_steps": None,  # debug: stop (with a checkpoint) after this many optimizer steps in total
    "tensorboard": True,
}


class ConfigError(ValueError):
    """A training config is malformed; the message names the file and the key path."""


def shipped_configs() -> list[str]:
    folder = resources.files(CONFIGS)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path_or_name: str | Path) -> tuple[dict, str]:
    name = str(path_or_name)
    if name in shipped_configs():
        text = resources.files(CONFIGS).joinpath(f"{name}.yaml").read_text()
        source = f"{name}.yaml"
    else:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(
                f"config {name!r} is neither a shipped config {shipped_configs()} nor an existing file"
            )
        text, source = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    return data, source


def _merge(base: dict, update: dict, schema: dict, source: str, prefix: tuple[str, ...] = ()) -> dict:
    """Merge ``update`` into ``base`` in place, refusing keys the schema does not know."""
    for key, value in update.items():
        path = prefix + (str(key),)
        if key not in schema:
            raise ConfigError(
                f"{source}: unknown config key {'.'.join(path)!r}; known at this level: {sorted(schema)}"
            )
        if path in FREE_FORM and isinstance(value, dict) and isinstance(base.get(key), dict) \
                and value.get("kind", base[key].get("kind")) == base[key].get("kind"):
            # A free-form spec of the same kind (or without a kind: ``model.backbone.image_size=96``)
            # updates the current spec key by key; a spec of another kind replaces it whole.
            base[key] = {**base[key], **copy.deepcopy(value)}
        elif isinstance(schema[key], dict) and path not in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {'.'.join(path)} must be a mapping, got {value!r}")
            _merge(base[key], value, schema[key], source, path)
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_override(text: str) -> dict:
    """``"stage1.lr=3e-4"`` -> ``{"stage1": {"lr": 0.0003}}``; the value is read as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key in {key!r}")
    value = _override_value(text, raw)
    if isinstance(value, str) and "e" in value.lower():
        # YAML 1.1 reads "3e-4" as a string; a learning rate given that way is meant as a number.
        try:
            value = float(value)
        except ValueError:
            pass
    out: dict = {}
    node = out
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _override_value(text: str, raw: str) -> Any:
    """The YAML value of an override's text; an error when YAML would silently drop part of it.

    ``out=runs/my run #2`` reads as ``runs/my run`` (`` #`` starts a comment) and ``out=a: b`` as a
    mapping: both would cut a path without a word. Quote such a value, or pass values, not strings
    (``load_config(..., overrides=[{"out": path}])``).
    """
    if not raw.strip():
        return None
    try:
        node = yaml.compose(raw)
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from None
    if node is not None and node.end_mark.index < len(raw.rstrip()):
        raise ConfigError(
            f"override {text!r}: YAML would read only {raw[:node.end_mark.index].strip()!r} of the value "
            f"(the rest, {raw[node.end_mark.index:].strip()!r}, is a comment): quote the value"
        )
    if isinstance(node, yaml.MappingNode) and not node.flow_style:
        raise ConfigError(
            f"override {text!r}: YAML reads the value as a mapping because of ': '; quote the value, or "
            "write a mapping in braces ({key: value})"
        )
    return value


def merge_nested(base: dict, update: dict) -> dict:
    """Deep-merge plain nested dicts (``update`` wins), in place; returns ``base``."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_nested(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def dotted_overrides(mapping: dict, source: str = "overrides") -> dict:
    """``{"data.num": 300, "stage1": {"lr": 1e-4}}`` -> nested dict; values are kept as given (never re-parsed)."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(mapping).__name__}")
    out: dict = {}
    for key, value in mapping.items():
        parts = str(key).split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"{source}: empty part in key {key!r}")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: key {key!r} goes inside {p!r}, which is given a value too")
        if isinstance(value, dict):
            value = dotted_overrides(value, source)
            if isinstance(node.get(parts[-1]), dict):
                merge_nested(node[parts[-1]], value)
                continue
        node[parts[-1]] = _numbers(value)
    return out


def _numbers(node: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string: turn such strings back into floats."""
    if isinstance(node, dict):
        return {k: _numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers(v) for v in node]
    if isinstance(node, str):
        try:
            if any(c.isdigit() for c in node) and node.strip().lower().lstrip("+-")[0].isdigit():
                return float(node) if any(c in node.lower() for c in ".e") else node
        except (ValueError, IndexError):
            return node
    return node


def _check(cond: bool, key: str, message: str, source: str) -> None:
    if not cond:
        raise ConfigError(f"{source}: {key}: {message}")


def validate_config(cfg: dict, source: str = "<config>") -> dict:
    """Check types and ranges; returns ``cfg``. Errors name the key path and the bad value."""
    c = cfg
    _check(c["method"] in METHODS, "method", f"must be one of {list(METHODS)}, got {c['method']!r}", source)
    stages = c["stages"]
    if isinstance(stages, int):
        stages = c["stages"] = [stages]
    _check(
        isinstance(stages, list) and stages and all(s in (1, 2) for s in stages) and stages == sorted(set(stages)),
        "stages",
        f"must be [1], [2] or [1, 2], got {stages!r}",
        source,
    )
    for frac in ("val_fraction", "test_fraction"):
        v = c["data"][frac]
        _check(isinstance(v, (int, float)) and 0 <= v < 1, f"data.{frac}", f"must be in [0, 1), got {v!r}", source)
    _check(c["data"]["val_fraction"] + c["data"]["test_fraction"] < 1, "data", "val_fraction + test_fraction must be < 1", source)
    lf = c["data"]["label_fraction"]
    _check(isinstance(lf, (int, float)) and 0 < lf <= 1, "data.label_fraction", f"must be in (0, 1], got {lf!r}", source)
    _check(isinstance(c["data"]["source"], str) and c["data"]["source"], "data.source", "must be 'survey' or a path", source)
    _check(isinstance(c["data"]["skip_bad"], bool), "data.skip_bad", f"must be true or false, got {c['data']['skip_bad']!r}", source)
    for k in ("num", "size"):
        v = c["data"][k]
        _check(isinstance(v, int) and v > 0, f"data.{k}", f"must be a positive integer, got {v!r}", source)
    _check(isinstance(c["model"]["backbone"], dict) and "kind" in c["model"]["backbone"], "model.backbone", "must be a mapping with a 'kind'", source)
    for k in ("image_text", "symbol_text", "image_symbol"):
        v = c["loss"][k]
        _check(isinstance(v, (int, float)) and v >= 0, f"loss.{k}", f"must be a number >= 0, got {v!r}", source)
    for s in ("stage1", "stage2"):
        st = c[s]
        _check(isinstance(st["epochs"], int) and st["epochs"] >= 0, f"{s}.epochs", f"must be an integer >= 0, got {st['epochs']!r}", source)
        _check(isinstance(st["lr"], (int, float)) and st["lr"] > 0, f"{s}.lr", f"must be a number > 0, got {st['lr']!r}", source)
        wf = st["warmup_fraction"]
        _check(isinstance(wf, (int, float)) and 0 <= wf < 1, f"{s}.warmup_fraction", f"must be a fraction in [0, 1), got {wf!r}", source)
    for k in ("batch_size", "accumulation"):
        _check(isinstance(c[k], int) and c[k] > 0, k, f"must be a positive integer, got {c[k]!r}", source)
    _check(c["workers"] is None or (isinstance(c["workers"], int) and c["workers"] >= 0), "workers", f"must be null or an integer >= 0, got {c['workers']!r}", source)
    th = c["threads"]
    _check(th is None or (isinstance(th, int) and th > 0), "threads", f"must be null or a positive integer, got {th!r}", source)
    amp = c["amp"]
    # YAML reads a bare `amp: off` as False (and `on` as True): both are meant as modes.
    if amp is False:
        amp = c["amp"] = "off"
    elif amp is True:
        amp = c["amp"] = "auto"
    _check(amp in AMP_MODES, "amp", f"must be one of {list(AMP_MODES)}, got {amp!r}", source)
    _check(isinstance(c["seed"], int), "seed", f"must be an integer, got {c['seed']!r}", source)
    ce = c["checkpoint_every_steps"]
    _check(ce is None or (isinstance(ce, int) and ce >= 0), "checkpoint_every_steps", f"must be null or an integer >= 0, got {ce!r}", source)
    le = c["log_every_steps"]
    _check(le is None or (isinstance(le, int) and le > 0), "log_every_steps", f"must be null or a positive integer, got {le!r}", source)
    _check(isinstance(c["compile"], (bool, str)), "compile", f"must be true, false or a torch.compile backend name, got {c['compile']!r}", source)
    _check(c["channels_last"] in (True, False, "auto"), "channels_last", f"must be true, false or 'auto', got {c['channels_last']!r}", source)
    _check(c["data"]["in_memory"] in (True, False, "auto"), "data.in_memory", f"must be true, false or 'auto', got {c['data']['in_memory']!r}", source)
    re_ = c["symbols"]["refresh_every"]
    _check(isinstance(re_, int) and re_ > 0, "symbols.refresh_every", f"must be a positive integer, got {re_!r}", source)
    ms = c["max_steps"]
    _check(ms is None or (isinstance(ms, int) and ms > 0), "max_steps", f"must be null or a positive integer, got {ms!r}", source)
    _check(c["model"]["tta"] in ("none", "dihedral"), "model.tta", f"must be 'none' or 'dihedral', got {c['model']['tta']!r}", source)
    _check(isinstance(c["recipe"]["enabled"], bool), "recipe.enabled", f"must be true or false, got {c['recipe']['enabled']!r}", source)
    for k in ("steps", "finetune_steps", "max_epochs", "cache_max_galaxies"):
        v = c["recipe"][k]
        _check(isinstance(v, int) and v > 0, f"recipe.{k}", f"must be a positive integer, got {v!r}", source)
    hs = c["optimizer"]["head_lr_scale"]
    _check(isinstance(hs, (int, float)) and hs > 0, "optimizer.head_lr_scale", f"must be a number > 0, got {hs!r}", source)
    _check(isinstance(c["symbols"]["variants"], int) and c["symbols"]["variants"] > 0, "symbols.variants", "must be a positive integer", source)
    pg = c["answers"]["per_galaxy"]
    _check(pg in (True, False, "auto"), "answers.per_galaxy", f"must be true, false or 'auto', got {pg!r}", source)
    sv = c["answers"]["symbol_variants"]
    _check(isinstance(sv, int) and not isinstance(sv, bool) and sv > 0, "answers.symbol_variants", f"must be a positive integer, got {sv!r}", source)
    pc = c["answers"]["partial_captions"]
    _check(isinstance(pc, int) and not isinstance(pc, bool) and pc >= 0, "answers.partial_captions", f"must be an integer >= 0, got {pc!r}", source)
    cw = c["answers"]["class_weight"]
    _check(isinstance(cw, (int, float)) and not isinstance(cw, bool) and cw >= 0, "answers.class_weight",
           f"must be a number >= 0, got {cw!r}", source)
    ps = c["answers"]["partial_symbols"]
    _check(isinstance(ps, int) and not isinstance(ps, bool) and ps >= 0, "answers.partial_symbols", f"must be an integer >= 0, got {ps!r}", source)
    gp = c["loss"]["graded_power"]
    _check(isinstance(gp, (int, float)) and not isinstance(gp, bool) and gp > 0, "loss.graded_power", f"must be a number > 0, got {gp!r}", source)
    return cfg


# OUR CHOICE: at most 16 DataLoader workers per process (beyond that, start-up and memory grow for no gain
# at 224 px: bench/bench_data.py measures the per-core rate).
MAX_WORKERS = 16
GPU_LOG_EVERY = 25


def derived_runtime(cfg: dict, device_type: str, local_world_size: int = 1, cpu_count: int | None = None) -> dict:
    """``workers``, ``threads`` and ``log_every_steps`` for this machine, where the config leaves them null.

    The cores of the machine (this process's affinity) are shared by the ``local_world_size`` processes
    of the node. On a GPU each process keeps one core for itself (it launches kernels) and gives the
    rest to DataLoader workers (1 torch thread each); on the CPU the model is the bottleneck: no
    workers, every core of the process's share to torch's intra-op threads. Logging syncs with the
    device, so a GPU logs every ``GPU_LOG_EVERY`` steps, the CPU every step.
    """
    if cpu_count is None:
        try:
            cpu_count = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpu_count = os.cpu_count() or 1
    per_process = max(1, int(cpu_count) // max(1, int(local_world_size)))
    gpu = device_type == "cuda"
    # OUR CHOICE: on a GPU, workers = the process's cores - 1 (<= 16) and 1-2 torch threads; on the CPU no
    # workers and all of the process's cores as threads; logs read from a GPU every 25 steps.
    workers = min(per_process - 1, MAX_WORKERS) if gpu else 0
    threads = max(1, per_process - workers) if not gpu else max(1, min(2, per_process - workers))
    out = {
        "workers": cfg["workers"] if cfg["workers"] is not None else workers,
        "threads": cfg["threads"] if cfg["threads"] is not None else threads,
        "log_every_steps": cfg["log_every_steps"] if cfg["log_every_steps"] is not None else (GPU_LOG_EVERY if gpu else 1),
    }
    return out


def derived_checkpoint_every(cfg: dict, steps_per_epoch: int, total_epochs: int) -> tuple[int, bool]:
    """(checkpoint every N steps, always at epoch ends?) for ``checkpoint_every_steps``.

    An integer in the config is used as is (epoch ends always save). OUR CHOICE for null: about ten
    checkpoints per run (``last.pt`` overwritten), never more often than once per epoch, and at every
    stage end; a run of at most ten epochs thus saves at its epoch ends, a 20-epoch run of 27-step
    epochs (the paper's setting on 2 GPUs) every 54 steps instead of every 27.
    """
    every = cfg["checkpoint_every_steps"]
    # OUR CHOICE: a null cadence means ~10 checkpoints per run, at most one per epoch, always at stage ends.
    if every is not None:
        return int(every), True
    total = max(1, steps_per_epoch * max(1, total_epochs))
    return max(math.ceil(total / 10), steps_per_epoch, 1), False


def default_schema() -> dict:
    return copy.deepcopy(SCHEMA)


def load_config(path_or_name: str | Path | dict | None = "default", overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read a config (shipped name, YAML path, or a dict), merge it over the schema, apply overrides.

    ``overrides`` are ``"key.sub=value"`` strings (values read as YAML scalars) or dicts. The result is
    a complete, validated plain dict: every key of the schema is present.
    """
    cfg = default_schema()
    if isinstance(path_or_name, dict):
        data, source = copy.deepcopy(path_or_name), "<dict>"
    elif path_or_name is None:
        data, source = {}, "<schema defaults>"
    else:
        data, source = _read_yaml(path_or_name)
    _merge(cfg, _numbers(data), SCHEMA, source)
    for ov in overrides or ():
        parsed = ov if isinstance(ov, dict) else parse_override(ov)
        _merge(cfg, parsed, SCHEMA, "override" if isinstance(ov, dict) else f"override {ov!r}")
        _pin_recipe(cfg, parsed)
    return validate_config(cfg, source)


# A key a user sets explicitly on the command line is a choice the recipe must not undo: it pins the
# recipe's matching choice to that value.
_RECIPE_PINS = {
    ("model", "backbone", "image_size"): "image_size",
    ("model", "backbone", "taps"): "taps",
    ("batch_size",): "batch_size",
    ("model", "tta"): "tta",
    ("model", "backbone", "crop"): "crop",
}


def _pin_recipe(cfg: dict, override: dict) -> None:
    def get(node, path):
        for k in path:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node

    recipe = cfg.get("recipe")
    if not isinstance(recipe, dict):
        return
    for path, key in _RECIPE_PINS.items():
        value = get(override, path)
        if value is not None:  # the later of two overrides wins, as for any key
            recipe[key] = value
    epochs = [get(override, (s, "epochs")) for s in ("stage1", "stage2")]
    values = [e if e is not None else cfg[s]["epochs"] for e, s in zip(epochs, ("stage1", "stage2"))]
    # not integers (``stage1.epochs=.inf``): left unpinned, for validate_config to name the key
    if any(e is not None for e in epochs) and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        recipe["epochs"] = values
