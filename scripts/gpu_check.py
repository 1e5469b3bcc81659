"""GPU check of the paper's setting: the training data path and step at full speed, one JSON object out.

Full mode (a GPU machine, <= 8 minutes): synthesises a Galaxy10-sized HDF5 file (17,736 x 256 x 256 x 3
uint8; class-coloured patterns plus noise, so the loss has something to learn), then trains the paper
config (``configs/paper.yaml``) with open_clip ViT-B-16 at random initialisation (no weights can be
downloaded there) through the trainer's own code path, three times: ``amp=bf16``, ``amp=fp16`` (GradScaler),
and ``amp=bf16`` with ``compile: true``. For each: images/s (steady state), the share of step time spent
waiting for data, peak GPU memory, whether the loss fell; then the loss of one fixed batch on the GPU
(fp32 and bf16) against the same batch on the CPU in float32.

Reduced mode (``--reduced``, the CPU, part of ``make test``): the same code path on a tiny open_clip model
and a tiny file, a few steps per phase, ``compile`` with the ``eager`` backend.

    scripts/gpu_check.sh                 # full; JSON on stdout, logs on stderr
    scripts/gpu_check.sh --reduced       # CPU, seconds
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

GALAXY10 = (17736, 256, 256, 3)
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# Tolerances of the one-batch loss against the CPU in float32 (absolute, on a loss of ~log(batch)).
TOL_FP32 = 1e-3
TOL_BF16 = 5e-2


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synthesise_h5(path: Path, n: int, size: int, seed: int = 0, classes: int = 10) -> Path:
    """A Galaxy10-layout file (``images`` uint8 (n,size,size,3), ``ans``): per class a coloured disc
    of its own radius over a noise field drawn from a small pool (fast to write at Galaxy10 size)."""
    import h5py

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    patterns = np.zeros((classes, size, size, 3), np.uint8)
    for c in range(classes):
        colour = np.array([25 * c, 255 - 20 * c, 120 + (c % 3) * 40], np.float32)
        disc = np.clip(1.2 - r / (size * (0.08 + 0.03 * c)), 0, 1)[:, :, None]
        patterns[c] = np.clip(disc * colour, 0, 200).astype(np.uint8)
    noise = rng.integers(0, 55, (16, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    block = 512
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("images", shape=(n, size, size, 3), dtype=np.uint8, chunks=(1, size, size, 3))
        f["ans"] = labels.astype(np.uint8)
        for a in range(0, n, block):
            b = min(n, a + block)
            ds[a:b] = patterns[labels[a:b]] + noise[np.arange(a, b) % len(noise)]
    return path


def shm_workers(batch: int, size: int) -> int | None:
    """A worker count whose prefetched batches fit in /dev/shm (containers often mount 64 MB), or None
    (derived) when shared memory is ample: DataLoader workers hand batches over through it."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    per_worker = 2 * batch * size * size * 3 * 2  # prefetch_factor batches in flight, with a margin of 2
    if free >= per_worker * 16:
        return None
    return max(0, min(16, free // per_worker))


def phase_config(args, h5: Path, out: Path, name: str, amp: str, compile_: bool | str, stage_epochs: tuple[int, int],
                 max_steps: int, workers: int | None = None):
    from galaxalign.training import load_config

    if args.reduced:
        backbone = {"kind": "open_clip", "model": "galaxalign-check-tiny", "model_config": TINY_CLIP, "pretrained": None}
    else:
        backbone = {"kind": "open_clip", "model": "ViT-B-16", "pretrained": None}
    stages = [s for s, e in zip((1, 2), stage_epochs) if e > 0]
    cfg = load_config("paper", [{
        "data": {"source": str(h5), "in_memory": "auto"},
        "model": {"backbone": backbone},
        "stages": stages,
        "stage1": {"epochs": stage_epochs[0], "lr": 1e-4 if not args.reduced else 1e-3},
        "stage2": {"epochs": max(stage_epochs[1], 0)},
        "batch_size": args.batch,
        "amp": amp,
        "compile": compile_,
        "device": args.device,
        "validate": False,
        "tensorboard": False,
        "max_steps": max_steps,
        "out": str(out / name),
        "seed": 0,
        **({"threads": 1} if args.reduced else {}),  # a shared CPU: more threads only contend
        **({"workers": workers} if workers is not None else {}),
    }])
    cfg["amp"] = amp  # set on the validated dict as well: the check must not depend on the YAML parsing of amp
    return cfg


def run_phase(cfg: dict, name: str, warmup_steps: int) -> dict:
    from galaxalign.training.trainer import Trainer

    cuda = torch.cuda.is_available() and cfg["device"] in ("auto", "cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    trainer = Trainer(cfg, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:  # every synchronising CUDA call warns: counts the host syncs of the whole run
            torch.cuda.set_sync_debug_mode("warn")
        try:
            result = trainer.run()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    wall = time.time() - t0
    rows = [r for r in result.history if r.get("kind") == "train"]
    steady = rows[min(warmup_steps, max(0, len(rows) - 2)):]
    # Steady-state rate from the median step (epoch-end checkpoints and the stage switch excluded); the
    # wall rate over the same rows includes them. Host step times are asynchronous on a GPU, but the
    # launch queue fills within a ViT-B step, so the median tracks the device.
    span = steady[-1]["seconds"] - steady[0]["seconds"] if len(steady) > 1 else 0.0
    steps = len(steady) - 1
    step_s = sum(r["step_seconds"] for r in steady[1:])
    data_s = sum(r.get("data_seconds", 0.0) for r in steady[1:])
    median_step = statistics.median(r["step_seconds"] for r in steady[1:]) if steps > 0 else 0.0
    losses = [r["loss"] for r in rows if r["stage"] == rows[0]["stage"]]  # the trend within the first stage
    k = max(1, min(10, len(losses) // 4))
    first, last = statistics.fmean(losses[:k]), statistics.fmean(losses[-k:])
    out = {
        "phase": name,
        "amp_requested": cfg["amp"],
        "autocast_dtype": str(trainer.autocast_dtype).replace("torch.", "") if trainer.autocast_dtype else "float32",
        "grad_scaler": bool(trainer.use_scaler),
        "compile": cfg["compile"],
        "workers": trainer.runtime["workers"],
        "threads": trainer.runtime["threads"],
        "in_memory": bool(getattr(getattr(trainer, "train_images", None), "in_memory", False)),
        "steps": len(rows),
        "wall_s": round(wall, 1),
        "images_per_s": round(cfg["batch_size"] / median_step, 1) if median_step > 0 else None,
        "images_per_s_wall": round(cfg["batch_size"] * steps / span, 1) if span > 0 and steps > 0 else None,
        "data_wait_share": round(data_s / step_s, 4) if step_s > 0 else None,
        "loss_first": round(first, 4),
        "loss_last": round(last, 4),
        "loss_falling": bool(last < first),
        "finite": all(math.isfinite(v) for v in losses),
    }
    if cuda:
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        # Expected: one per log flush (every 25 steps), plus checkpoints and set-up; fp16 adds the
        # GradScaler's inf check every step.
        out["host_syncs"] = syncs
        out["host_syncs_per_step"] = round(syncs / max(1, len(rows)), 3)
    return out


def one_batch_loss(cfg: dict, device: str, amp: str, state: dict | None, n: int):
    """The loss of the first ``n`` training galaxies (eval transform, canonical prompts and symbols:
    no random draw depends on the device) with the weights ``state``; returns (loss, state)."""
    from galaxalign.datasets import GalaxyDataset
    from galaxalign.training import load_config
    from galaxalign.training.methods import build_objective
    from galaxalign.training.trainer import Trainer

    cfg = load_config(cfg, [{"device": device, "amp": amp, "compile": False}])
    cfg["amp"] = amp
    trainer = Trainer(cfg, progress=False)
    trainer.setup()
    torch.set_float32_matmul_precision("highest")  # the trainer allows TF32; "fp32" here means fp32
    model = trainer.model
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    objective = build_objective(cfg, model, trainer.taxonomy, trainer.env)
    objective.forward_module.bank_train = False
    ds = GalaxyDataset(trainer.train_cat.iloc[:n], model.eval_transform())
    images = torch.stack([ds[i][0] for i in range(len(ds))]).to(trainer.env.device)
    labels = torch.as_tensor([ds[i][1] for i in range(len(ds))]).to(trainer.env.device)
    with torch.no_grad(), trainer.autocast():
        loss = float(objective.loss(objective.forward_module, images, labels)["loss"])
    return loss, {k: v.detach().cpu() for k, v in model.state_dict().items()}


def compare_with_cpu(cfg: dict, n: int) -> dict:
    gpu = torch.cuda.is_available() and cfg["device"] in ("auto", "cuda")
    dev = "cuda" if gpu else "cpu"
    ref, state = one_batch_loss(cfg, "cpu", "off", None, n)
    fp32, _ = one_batch_loss(cfg, dev, "off", state, n)
    bf16, _ = one_batch_loss(cfg, dev, "bf16", state, n)
    return {
        "batch": n,
        "device": dev,
        "loss_cpu_fp32": round(ref, 6),
        "loss_device_fp32": round(fp32, 6),
        "loss_device_bf16": round(bf16, 6),
        "abs_diff_fp32": round(abs(fp32 - ref), 6),
        "abs_diff_bf16": round(abs(bf16 - ref), 6),
        "tolerance_fp32": TOL_FP32,
        "tolerance_bf16": TOL_BF16,
        "within_tolerance": abs(fp32 - ref) <= TOL_FP32 and abs(bf16 - ref) <= TOL_BF16,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reduced", action="store_true", help="CPU smoke run: tiny model, tiny file, a few steps")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--device", default=None, help="default: cuda in full mode, cpu in reduced mode")
    p.add_argument("--batch", type=int, default=None, help="per process (default 256; reduced 8)")
    p.add_argument("--steps", type=int, default=None, help="steps of the bf16 phase (default 200; reduced 24)")
    p.add_argument("--images", type=int, default=None, help=f"galaxies in the synthetic file (default {GALAXY10[0]})")
    p.add_argument("--budget", type=float, default=None, help="seconds; phases that would not fit are skipped (default 450; reduced 120)")
    args = p.parse_args(argv)
    r = args.reduced
    args.budget = args.budget or (120.0 if r else 450.0)
    args.device = args.device or ("cpu" if r else "cuda")
    args.batch = args.batch or (8 if r else 256)
    steps = args.steps or (24 if r else 200)
    n_images = args.images or (64 if r else GALAXY10[0])
    size = 40 if r else GALAXY10[1]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run with --reduced for the CPU smoke run")
    if r:
        torch.set_num_threads(1)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="galaxalign_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    h5 = work / f"synthetic_galaxy10_{n_images}x{size}.h5"
    if not h5.exists():
        log(f"synthesising {h5} ({n_images} x {size} x {size} x 3)")
        synthesise_h5(h5, n_images, size)
    synth_s = time.time() - t0
    steps_per_epoch = max(1, int(n_images * 0.8) // args.batch)
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    warm = 2 if r else 20
    phases = []
    # bf16: both stages (stage 2 with its separate symbol tower, a fifth of the steps); fp16: stage 1
    # (GradScaler); compile: stage 1, the towers compiled (a longer warm-up: the compilation).
    plan = [
        ("bf16", "bf16", False, (epochs, max(1, epochs // 4)), None, warm),
        ("fp16", "fp16", False, (max(1, epochs // 2), 0), None, warm),
        ("bf16_compile", "bf16", "eager" if r else True, (max(1, epochs // 2), 0), None, warm * (1 if r else 3)),
    ]
    workers = shm_workers(args.batch, size if r else 224)
    for name, amp, comp, ep, max_steps, w in plan:
        left = args.budget - (time.time() - t0)
        if left < (10 if r else 90):  # not enough time left for a phase and the CPU comparison
            phases.append({"phase": name, "skipped": f"time budget: {left:.0f} s left of {args.budget} s"})
            continue
        log(f"phase {name}: amp={amp} compile={comp} epochs={ep}")
        cfg = phase_config(args, h5, work, name, amp, comp, ep, max_steps, workers)
        try:
            phases.append(run_phase(cfg, name, w))
        except Exception as exc:  # unattended: report and go on with the next phase
            phases.append({"phase": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
        log(json.dumps(phases[-1]))
        shutil.rmtree(work / name, ignore_errors=True)  # ~2.4 GB of checkpoint and export per phase
    cfg = phase_config(args, h5, work, "compare", "off", False, (1, 0), None, workers)
    try:
        compare = compare_with_cpu(cfg, 4 if r else 16)
    except Exception as exc:
        compare = {"error": f"{type(exc).__name__}: {exc}"[:2000], "within_tolerance": False}
    report = {
        "benchmark": "gpu_check",
        "mode": "reduced" if r else "full",
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "file": {"images": n_images, "size": size, "synthesise_s": round(synth_s, 1)},
        "batch": args.batch,
        "phases": phases,
        "one_batch_vs_cpu_fp32": compare,
        "shm_workers_cap": workers,
        "ok": all(ph.get("finite") and ph.get("loss_falling") for ph in phases) and bool(compare["within_tolerance"]),
        "amp_as_requested": all((ph["amp_requested"] == "bf16") == (ph["autocast_dtype"] == "bfloat16")
                                and (ph["amp_requested"] == "fp16") == ph["grad_scaler"] for ph in phases if "steps" in ph)
        if args.device == "cuda" else None,
        "total_s": round(time.time() - t0, 1),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
