"""Fine-tune throughput at 224 px: training images/s with the frozen-trunk feature cache vs without.

Both use the trainer's own objective and optimiser (galaxalign.training) on the offline towers with
the recipe's taps, at 224 px, GalaxAlign stage 1, batch 32, random images (cost does not depend on
pixel values). *uncached*: every step runs the image tower on the batch (its last 4 groups
trainable, the first version's default); *cached*: the batch is pooled 8-view trunk features (the
recipe's path), and the one-off cost of computing them (8 trunk passes per galaxy) is reported too,
so ``break_even_epochs`` says after how many epochs the cache has paid for itself.
Prints one JSON object; the timings are measured in one run, so the ratio is what to read.

    .venv/bin/python bench/bench_finetune.py [--steps 4] [--batch 32] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def build(cached: bool, batch: int):
    from galaxalign.taxonomy import load_taxonomy
    from galaxalign.training import load_config
    from galaxalign.distributed import DistEnv
    from galaxalign.training.methods import build_objective
    from galaxalign.training.schedule import build_optimizer
    from galaxalign.training.build import apply_locks, build_model

    over = ["model.backbone.image_size=224", "model.backbone.taps=[5, 6, 7]", f"batch_size={batch}", "recipe.enabled=false"]
    if cached:
        over += ["model.lock_image_unlocked_groups=1", "model.lock_text_unlocked_layers=1"]
    cfg = load_config("default", over)
    taxonomy = load_taxonomy(cfg["data"]["taxonomy"])
    torch.manual_seed(0)
    model = build_model(cfg, taxonomy)
    apply_locks(model, cfg)
    objective = build_objective(cfg, model, taxonomy, DistEnv())
    if cached:
        objective.bank.use_pooled_symbols(model.symbol_encoder, model.symbol_transform(train=False))
    optimizer = build_optimizer(model, 1e-4, cfg["optimizer"]["weight_decay"])
    model.train()
    return model, objective, optimizer


def step_seconds(model, objective, optimizer, inputs, labels, steps: int) -> float:
    def one():
        terms = objective.loss(objective.forward_module, inputs, labels)
        terms["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    one()  # warm-up (memoised prompts, allocator)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from galaxalign.features import dihedral_view

    labels = torch.arange(args.batch) % 10
    images = torch.randn(args.batch, 3, 224, 224)
    m_u, o_u, opt_u = build(False, args.batch)
    t_uncached = step_seconds(m_u, o_u, opt_u, images, labels, args.steps)

    m_c, o_c, opt_c = build(True, args.batch)
    tower = m_c.image_encoder
    tower.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        pooled = [tower.pooled(dihedral_view(images, k)) for k in range(8)]
    t_cache_per_image = (time.perf_counter() - t0) / args.batch  # 8 views of one galaxy
    m_c.train()
    t_cached = step_seconds(m_c, o_c, opt_c, pooled[0], labels, max(args.steps, 20))
    ips_u, ips_c = args.batch / t_uncached, args.batch / t_cached
    print(json.dumps({
        "image_size": 224, "batch": args.batch, "threads": args.threads,
        "uncached_images_per_s": round(ips_u, 2),
        "cached_images_per_s": round(ips_c, 1),
        "speedup_cached_vs_uncached": round(ips_c / ips_u, 1),
        "cache_build_seconds_per_galaxy_8_views": round(t_cache_per_image, 4),
        # epochs after which (cache build + cached epochs) beats uncached epochs
        "break_even_epochs": round(t_cache_per_image / max(1.0 / ips_u - 1.0 / ips_c, 1e-9), 2),
    }))


if __name__ == "__main__":
    main()
