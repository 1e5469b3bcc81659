"""Train-step time of tri-modal GalaxAlign vs image-text-only training: same backbone, batch and locks.

Uses the trainer's own objectives and optimiser (galaxalign.training) on the default config's offline
towers at its image size, with random images (the step cost does not depend on pixel values).
Prints one JSON object. Target: ratio <= 1.05 in both stages. ``ratio`` is stage 1 (shared encoder:
images and symbols in one pass); ``ratio_stage2`` has a separate symbol encoder, so its ~10 symbols take
their own pass. ``*_refresh`` repeat both with ``symbols.refresh_every=K`` (symbol features encoded every
K-th step, reused detached between): their cost is the MEAN over whole refresh cycles.

    .venv/bin/python bench/bench_train_step.py [--steps 8] [--batch 64] [--threads 1] [--refresh 4] [KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def build(method: str, args, stage: int = 1, extra: tuple[str, ...] = ()):
    """Model, objective and optimiser exactly as the trainer builds them for ``method`` and ``stage``."""
    from galaxalign.taxonomy import load_taxonomy
    from galaxalign.training import load_config
    from galaxalign.distributed import DistEnv
    from galaxalign.training.methods import build_objective
    from galaxalign.training.schedule import build_optimizer
    from galaxalign.training.build import apply_locks, build_model

    cfg = load_config("default", [f"method={method}", f"batch_size={args.batch}", *args.overrides, *extra])
    taxonomy = load_taxonomy(cfg["data"]["taxonomy"])
    torch.manual_seed(0)
    model = build_model(cfg, taxonomy)
    if stage == 2:
        model.separate_symbol_encoder()  # the stage-2 copy keeps the image encoder's locks
    apply_locks(model, cfg)
    objective = build_objective(cfg, model, taxonomy, DistEnv())
    optimizer = build_optimizer(model, 1e-4, cfg["optimizer"]["weight_decay"])
    model.train()
    return model, objective, optimizer, taxonomy


def step(setup, images, labels) -> tuple[float, list[str]]:
    model, objective, optimizer, _ = setup
    t = time.perf_counter()
    terms = objective.loss(objective.forward_module, images, labels)
    terms["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t, sorted(k for k in terms if k != "loss")


def summary(times: list[float], terms: list[str], setup) -> dict:
    model = setup[0]
    return {
        "median_s": round(statistics.median(times), 4),
        "mean_s": round(statistics.fmean(times), 4),
        "min_s": round(min(times), 4),
        "terms": terms,
        "image_size": model.image_size,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="timed steps (a multiple of --refresh)")
    p.add_argument("--refresh", type=int, default=4, help="symbols.refresh_every of the *_refresh setups")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model.lock_image=false")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    refresh = (f"symbols.refresh_every={args.refresh}",)
    setups = {"image_text": build("image_text", args), "galaxalign": build("galaxalign", args),
              "galaxalign_stage2": build("galaxalign", args, stage=2),
              "galaxalign_refresh": build("galaxalign", args, extra=refresh),
              "galaxalign_stage2_refresh": build("galaxalign", args, stage=2, extra=refresh)}
    taxonomy = setups["galaxalign"][3]
    size = setups["galaxalign"][0].image_size
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, size, size, generator=g)
    labels = torch.randint(0, taxonomy.num_classes, (args.batch,), generator=g)
    times: dict[str, list[float]] = {m: [] for m in setups}
    terms: dict[str, list[str]] = {}
    # Steps alternate between the two methods so load drift on a shared machine hits both alike.
    for i in range(args.warmup + args.steps):
        for m, setup in setups.items():
            dt, terms[m] = step(setup, images, labels)
            if i >= args.warmup:
                times[m].append(dt)
    out = {m: summary(times[m], terms[m], setups[m]) for m in setups}
    base = out["image_text"]["median_s"]
    base_mean = out["image_text"]["mean_s"]
    ratios = {
        "ratio": out["galaxalign"]["median_s"] / base,
        "ratio_stage2": out["galaxalign_stage2"]["median_s"] / base,
        "ratio_refresh": out["galaxalign_refresh"]["mean_s"] / base_mean,
        "ratio_stage2_refresh": out["galaxalign_stage2_refresh"]["mean_s"] / base_mean,
    }
    print(json.dumps({
        "benchmark": "train_step",
        "backbone": "offline (EfficientNet-Lite0 + all-MiniLM-L6-v2), default config locks",
        "batch": args.batch,
        "classes_in_batch": int(labels.unique().numel()),
        "threads": args.threads,
        "device": "cpu",
        "refresh_every": args.refresh,
        "image_text": out["image_text"],
        "galaxalign_tri_modal": out["galaxalign"],
        "galaxalign_stage2_separate_symbol_encoder": out["galaxalign_stage2"],
        "galaxalign_refresh": out["galaxalign_refresh"],
        "galaxalign_stage2_refresh": out["galaxalign_stage2_refresh"],
        **{k: round(v, 3) for k, v in ratios.items()},
        "target_ratio": 1.05,
        "meets_target": {k: v <= 1.05 for k, v in ratios.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
