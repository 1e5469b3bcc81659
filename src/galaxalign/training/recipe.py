"""The training recipe that chooses itself from the data and the device.

A user who passes nothing gets the good path; every choice is printed, saved with the model (the
export's ``extra.recipe``) and can be overridden with ``recipe.<key>=<value>`` (``auto`` lets the
recipe decide). ``recipe.enabled=false`` trains exactly what the rest of the config says.

Choices (``resolve_recipe``):

- ``image_size``: the input size follows the cutouts: the median shorter side of up to 64 training
  images, clamped to [64, 224] and rounded to a multiple of 16 (a 424-px DECaLS cutout is trained at
  224, the 96-px rendered survey at 96). Only for the offline backbone; open_clip towers keep the
  size their positional embeddings were trained at.
- ``taps``: which image-tower stages feed the projection (offline backbone; see
  ``backbones.offline.EfficientNetImageTower``). ``auto``: stages 5, 6 and 7.
- ``crop``: the centre fraction of each cutout kept before resizing. ``auto``: twice the median
  radius of the central galaxy's segment (``realism.morphology.segment_galaxy``) over the side, on up
  to 32 training images, rounded up to 0.05 and clamped to [0.3, 1]: a 423-px SDSS frame whose
  galaxy spans half of it is cropped to its centre instead of shrinking the galaxy to a few pixels.
- ``finetune_stages``: how many of the image tower's last stages train on the cache (offline
  backbone). The cache then holds the spatial feature maps of the 8 views after the frozen stages
  (``backbone.cache_stage``), and the last stages plus the projections train on them, so the methods
  can differ in the trunk, not only in linear projections. ``auto``: 2 on a CPU (stages 6 and 7 of
  EfficientNet-Lite0), 3 on a GPU; 0 keeps the pooled-feature cache (projections only).
- ``cache``: train on the frozen-trunk feature cache (``galaxalign.features``): the whole image trunk
  frozen, its pooled features of the 8 dihedral views of every galaxy computed once; the projections,
  the temperature train (the text tower's sentence encoder is locked too and memoised per prompt). ``auto``: on when the backbone supports it and
  the labelled training set is small (<= ``cache_max_galaxies``) or there is no GPU, where
  fine-tuning the trunk on few labels does not beat frozen features (measured, docs/training.md).
- ``epochs``: with the cache, optimiser steps are cheap, so the stage epochs follow a step budget
  (``steps``, split 2:1 between stages 1 and 2 for ``galaxalign``); otherwise the config's epochs.
- ``batch_size``: at most the number of labelled training galaxies (label fraction 0.01 of a small
  survey is a handful of galaxies).
- ``tta``: dihedral test-time averaging for classification and search embeddings (on with the cache,
  where it is free; a config value otherwise).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

RECIPE_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "image_size": "auto",
    "taps": "auto",
    "cache": "auto",
    "epochs": "auto",
    "batch_size": "auto",
    "tta": "auto",
    "crop": "auto",
    "finetune_stages": "auto",
    # OUR CHOICE: 900 optimiser steps in all with the cache (under a minute on a 2-core CPU at batch
    # 64), at most 150 epochs (tiny label sets); validation picks the best epoch of each stage
    # (training.trainer), so a long budget does not overfit the reported model. On the rendered
    # survey the fused-prototype validation accuracy plateaued after ~300-500 stage-1 steps.
    "steps": 900,
    # OUR CHOICE (CPU budget): with trainable stages a step runs them on the batch's stage maps
    # (~1-2 s at batch 64, 160 px, on one shared core), so the budget is fewer, dearer steps. On the
    # gz1-sdss validation split (300 labels, seed 0, 360 steps) the fused-prototype validation
    # accuracy peaked at step 84 and stayed level to 360 (docs/training.md): 180 keeps a margin.
    "finetune_steps": 180,
    "max_epochs": 150,
    "cache_max_galaxies": 20000,
}
AUTO_TAPS = [5, 6, 7]
SIZE_RANGE = (64, 224)
# OUR CHOICE (CPU budget): with trainable stages on the cache, inputs are at most 160 px on a CPU
# (stage-5 maps of 10x10: a step of the last two stages at batch 64 costs ~0.1 s on one core).
MAP_CACHE_CPU_MAX_SIZE = 160
CROP_RANGE = (0.3, 1.0)


def galaxy_crop(catalog, sample: int = 32, seed: int = 0) -> tuple[float, float]:
    """(crop fraction, median segment radius in units of the cutout side) from up to ``sample`` images."""
    from galaxalign.datasets import ImageReader
    from galaxalign.realism.morphology import linear_flux, segment_galaxy

    rng = np.random.default_rng(seed)
    rows = rng.choice(len(catalog), size=min(sample, len(catalog)), replace=False)
    reader = ImageReader()
    radii = []
    try:
        for r in catalog.iloc[np.sort(rows)].to_dict("records"):
            image = reader(r)
            flux = linear_flux(image)
            flux = flux.mean(axis=2) if flux.ndim == 3 else flux
            try:
                seg, _ = segment_galaxy(flux)
            except ValueError:
                continue  # nothing detected: this image says nothing about the extent
            ys, xs = np.nonzero(seg)
            h, w = flux.shape
            radii.append(float(np.hypot(ys - (h - 1) / 2, xs - (w - 1) / 2).max()) / min(h, w))
    finally:
        reader.close()
    if not radii:
        return 1.0, float("nan")
    rel = float(np.median(radii))
    lo, hi = CROP_RANGE
    return float(min(max(math.ceil(2 * rel * 20 - 1e-9) / 20, lo), hi)), rel


def _auto(value) -> bool:
    return isinstance(value, str) and value == "auto"


def native_image_size(catalog, sample: int = 64, seed: int = 0) -> int:
    """The median shorter side (px) of up to ``sample`` images of a catalog."""
    from galaxalign.datasets import ImageReader

    if len(catalog) == 0:
        raise ValueError("cannot choose an input size from an empty catalog")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(catalog), size=min(sample, len(catalog)), replace=False)
    reader = ImageReader()
    records = catalog.iloc[np.sort(rows)].to_dict("records")
    sizes = [min(reader(r).shape[:2]) for r in records]
    reader.close()
    return int(np.median(sizes))


def input_size_for(native: int) -> int:
    lo, hi = SIZE_RANGE
    return int(min(max(int(round(native / 16.0)) * 16, lo), hi))


def resolve_recipe(cfg: dict, train_cat, device_type: str, world_size: int = 1) -> tuple[dict, dict]:
    """(effective config, the choices made) for a training config and its labelled training catalog.

    The effective config has every ``auto`` of ``recipe`` replaced by the value chosen (and the keys
    it sets filled in), so it is itself a valid config that reproduces the same run: a resumed run
    resolves to the same values, and evaluation reads them from the saved config."""
    r = {**RECIPE_DEFAULTS, **(cfg.get("recipe") or {})}
    cfg = copy.deepcopy(cfg)
    if not r["enabled"]:
        return cfg, {"enabled": False}
    choices: dict[str, Any] = {"enabled": True}
    spec = cfg["model"]["backbone"]
    offline = spec.get("kind", "offline") == "offline"
    n_train = int(len(train_cat))

    stages = 0
    if offline:
        if _auto(r["finetune_stages"]):
            stages = 3 if device_type == "cuda" else 2
            why_st = f"the last {stages} image-tower stages train on cached stage maps ({device_type})"
        else:
            stages = int(r["finetune_stages"] or 0)
            why_st = "set by recipe.finetune_stages"
        if _auto(r["crop"]):
            crop, rel = galaxy_crop(train_cat)
            spec["crop"] = crop
            choices["crop"] = {"value": crop, "why": f"central galaxy segments reach {rel:.2f} of the side (median)"}
        elif r["crop"] is not None:
            spec["crop"] = float(r["crop"])
            choices["crop"] = {"value": spec["crop"], "why": "set by recipe.crop"}
        if _auto(r["image_size"]):
            native = native_image_size(train_cat)
            crop = float(spec.get("crop", 1.0) or 1.0)
            hi = MAP_CACHE_CPU_MAX_SIZE if (stages and device_type != "cuda") else SIZE_RANGE[1]
            spec["image_size"] = min(input_size_for(int(round(native * crop))), hi)
            choices["image_size"] = {"value": spec["image_size"],
                                     "why": f"median cutout side {native} px x crop {crop:g}, clamped to [{SIZE_RANGE[0]}, {hi}]"}
        elif r["image_size"] is not None:
            spec["image_size"] = int(r["image_size"])
            choices["image_size"] = {"value": spec["image_size"], "why": "set by recipe.image_size"}
        if _auto(r["taps"]):
            spec["taps"] = list(AUTO_TAPS)
            choices["taps"] = {"value": spec["taps"], "why": "mid-level stages separate real galaxies better than the ImageNet head"}
        elif r["taps"] is not None:
            spec["taps"] = r["taps"]
            choices["taps"] = {"value": spec["taps"], "why": "set by recipe.taps"}

    cache_ok = offline and spec.get("taps") is not None
    if _auto(r["cache"]):
        cache = cache_ok and (n_train <= int(r["cache_max_galaxies"]) or device_type != "cuda")
        why = (f"{n_train} labelled galaxies on {device_type}: frozen trunk, cached 8-view features" if cache
               else ("backbone cannot embed from pooled features" if not cache_ok
                     else f"{n_train} labelled galaxies on a GPU: fine-tune the towers"))
    else:
        cache = bool(r["cache"])
        why = "set by recipe.cache"
        if cache and not cache_ok:
            raise ValueError("recipe.cache=true needs the offline backbone with taps (model.backbone.taps or recipe.taps)")
    choices["cache"] = {"value": cache, "why": why}
    if offline and cache and stages:
        taps = spec.get("taps") or []
        numeric = [int(t) for t in taps if t != "head"]
        deepest = 7 if "head" in taps else max(numeric)
        k = min(max(deepest - stages, 1), min(numeric))  # taps at or after the cut are computed from its maps
        spec["cache_stage"] = k
        stages = deepest - k
        choices["finetune_stages"] = {"value": stages, "why": why_st + f" (cache after stage {k})"}
    elif offline:
        spec["cache_stage"] = None
        stages = 0
        choices["finetune_stages"] = {"value": 0, "why": "no cache: the lock settings of the config apply" if not cache
                                      else "set by recipe.finetune_stages"}
    if cache:
        m = cfg["model"]
        m["lock_image"] = True
        # the projection, plus the stages after the cache cut (and the head conv when tapped)
        m["lock_image_unlocked_groups"] = 1 + stages + (1 if stages and "head" in (spec.get("taps") or []) else 0)
        m["lock_image_freeze_bn_stats"] = True
        m["freeze_bn_stats"] = True
        # OUR CHOICE: the text tower trains its projection only (its sentence encoder memoises each
        # prompt), so a cached step costs milliseconds; with K classes the projection alone can place
        # the K prototypes anywhere, and the warm start places them on the class means.
        m["lock_text"] = True
        m["lock_text_unlocked_layers"] = 1

    bs = int(cfg["batch_size"])
    if _auto(r["batch_size"]):
        bs = max(2, min(bs, n_train // max(int(world_size), 1)))
        choices["batch_size"] = {"value": bs, "why": f"min(config batch_size {cfg['batch_size']}, {n_train} labelled galaxies)"}
    elif r["batch_size"] is not None:
        bs = int(r["batch_size"])
        choices["batch_size"] = {"value": bs, "why": "set by recipe.batch_size"}
    cfg["batch_size"] = bs

    if _auto(r["epochs"]) and cache:
        steps_per_epoch = max(1, n_train // (bs * int(cfg["accumulation"])))
        total = int(r["finetune_steps"] if spec.get("cache_stage") is not None else r["steps"])
        cap = int(r["max_epochs"])
        if cfg["method"] == "galaxalign" and len(cfg["stages"]) == 2:
            e1 = min(max(1, math.ceil(total * 2 / 3 / steps_per_epoch)), math.ceil(cap * 2 / 3))
            e2 = min(max(1, math.ceil(total / 3 / steps_per_epoch)), math.ceil(cap / 3))
        else:
            e1 = e2 = min(max(1, math.ceil(total / steps_per_epoch)), cap)
        cfg["stage1"]["epochs"], cfg["stage2"]["epochs"] = e1, e2
        choices["epochs"] = {"value": [e1, e2], "why": f"{total} optimiser steps at {steps_per_epoch} steps/epoch, at most {cap} epochs"}
    elif not _auto(r["epochs"]) and r["epochs"] is not None:
        e = r["epochs"]
        e1, e2 = (e, e) if isinstance(e, int) else (int(e[0]), int(e[1]))
        cfg["stage1"]["epochs"], cfg["stage2"]["epochs"] = e1, e2
        choices["epochs"] = {"value": [e1, e2], "why": "set by recipe.epochs"}

    if _auto(r["tta"]):
        tta = "dihedral" if cache else "none"
        choices["tta"] = {"value": tta, "why": "free with the cache" if cache else "8x embedding cost without the cache"}
    else:
        tta = "dihedral" if r["tta"] in (True, "dihedral") else "none"
        choices["tta"] = {"value": tta, "why": "set by recipe.tta"}
    cfg["model"]["tta"] = tta
    resolved = cfg.setdefault("recipe", {})
    resolved.update({k: v["value"] for k, v in choices.items() if isinstance(v, dict)})
    return cfg, choices


def describe_choices(choices: dict) -> str:
    if not choices.get("enabled"):
        return "recipe: off (the config is trained as written)"
    lines = ["recipe (override any with recipe.<key>=<value>):"]
    for k, v in choices.items():
        if k == "enabled":
            continue
        lines.append(f"  {k}: {v['value']}  ({v['why']})")
    return "\n".join(lines)
