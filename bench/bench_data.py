"""The training data path against the model step: images/s per CPU core of the loader (uint8 out at the
training size, as the device sees it), the device-side augmentation, and the model step on this device.

In one run, on a synthetic Galaxy10-layout HDF5 file (256 px cutouts) and GZ2-sized JPEGs (424 px):

- ``loader``: ``AugmentedSamples`` through a ``DataLoader`` in the main process (one core), HDF5 on disk
  (one sorted read per batch) and held in RAM, and JPEG folders with PIL and with torchvision's decoder;
- ``device_augment``: ``GalaxyAugment.apply`` on a batch (here the CPU; on a GPU it is the GPU's);
- ``model_step``: the trainer itself (default config's offline towers at the training size, a few
  steps, one DataLoader worker): images/s of the step and the share of step time spent waiting for data.

From the per-core loader rate R (images/s) and a GPU's training rate G, a GPU process needs
``ceil(G / R)`` worker cores plus one for itself. Prints one JSON object.

    .venv/bin/python bench/bench_data.py [--size 224] [--batch 64] [--images 512] [--steps 4]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# OUR CHOICE (assumed, README): open_clip ViT-B-16 training in bf16 on one H200 at 224 px, batch 256.
ASSUMED_GPU_IMAGES_PER_S = 1500


def catalog(path: Path, n: int):
    import pandas as pd

    return pd.DataFrame({"id": [str(i) for i in range(n)], "source": "bench", "h5_path": str(path),
                         "h5_row": range(n), "label": np.arange(n) % 10})


def loader_rate(dataset, batch: int, batches: int) -> float:
    """Images/s of the loader in the main process (one core), uint8 batches out."""
    from torch.utils.data import DataLoader

    keys = [(i % len(dataset), i) for i in np.random.default_rng(0).permutation(batch * batches)]
    loader = DataLoader(dataset, batch_size=batch, sampler=keys, num_workers=0, drop_last=True)
    it = iter(loader)
    next(it)  # first batch: file opening, allocations
    t = time.perf_counter()
    n = 0
    for images, labels, params in it:
        assert images.dtype == torch.uint8
        n += images.shape[0]
    return n / (time.perf_counter() - t)


def jpeg_rates(folder: Path, n: int, size: int) -> dict:
    """Decode + resize to ``size`` per core, PIL vs torchvision, on ``n`` 424 px JPEGs."""
    import pandas as pd
    from PIL import Image

    from galaxalign.datasets.pytorch import GalaxyDataset
    from galaxalign.transforms import resize_center_crop_uint8

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:424, :424] - 211.5
    files = []
    for i in range(n):
        blob = np.exp(-(xx**2 + yy**2) / (2 * (20 + i % 30) ** 2))[:, :, None] * np.array([210, 190, 160])
        img = np.clip(blob + rng.normal(0, 8, (424, 424, 3)), 0, 255).astype(np.uint8)
        files.append(folder / f"g{i}.jpg")
        Image.fromarray(img).save(files[-1], quality=90)
    cat = pd.DataFrame({"id": [f.stem for f in files], "source": "bench", "file_loc": [str(f) for f in files], "label": 0})
    ds = GalaxyDataset(cat, image_size=size)

    def torchvision_read(i: int):  # the alternative measured against the package's one decoder (PIL)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg, read_file
        image = decode_jpeg(read_file(str(files[i])), mode=ImageReadMode.RGB).permute(1, 2, 0).contiguous().numpy()
        return resize_center_crop_uint8(image, size)

    readers = {"pil (GalaxyDataset)": ds.image, "torchvision": torchvision_read}
    times: dict[str, list[float]] = {k: [] for k in readers}
    for rep in range(4):  # interleaved, so load drift on a shared machine hits both alike
        for name, read in readers.items():
            t = time.perf_counter()
            for i in range(n):
                read(i)
            if rep:  # the first round warms up (imports, file cache)
                times[name].append(time.perf_counter() - t)
    return {k: round(n / statistics.median(v), 1) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224, help="training size (px)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--images", type=int, default=512, help="galaxies in the synthetic 256 px HDF5 file")
    p.add_argument("--steps", type=int, default=4, help="model steps")
    p.add_argument("--model-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gpu-rate", type=float, default=ASSUMED_GPU_IMAGES_PER_S)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "scripts"))
    from gpu_check import synthesise_h5

    from galaxalign.datasets.pytorch import AugmentedSamples, GalaxyDataset
    from galaxalign.training import load_config
    from galaxalign.training.trainer import Trainer
    from galaxalign.transforms import GalaxyAugment

    work = Path(tempfile.mkdtemp(prefix="galaxalign_bench_data_"))
    h5 = synthesise_h5(work / "g10.h5", args.images, 256)
    aug = GalaxyAugment(args.size, [0.5] * 3, [0.25] * 3, strength=1.0)
    batches = max(2, args.images // args.batch)
    on_disk = loader_rate(AugmentedSamples(GalaxyDataset(catalog(h5, args.images), image_size=args.size), aug), args.batch, batches)
    in_ram = loader_rate(AugmentedSamples(GalaxyDataset(catalog(h5, args.images), image_size=args.size, in_memory=True), aug),
                         args.batch, batches)
    (work / "jpg").mkdir()
    jpeg = jpeg_rates(work / "jpg", 48, args.size)

    # Device-side augmentation of a uint8 batch (this machine: the CPU).
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (args.batch, args.size, args.size, 3), dtype=np.uint8))
    params = torch.from_numpy(np.stack([aug.draw(np.random.default_rng(s)) for s in range(args.batch)]))
    aug.apply(x, params)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        aug.apply(x, params)
        times.append(time.perf_counter() - t)
    augment_rate = args.batch / statistics.median(times)

    # The model step through the trainer: one worker feeds the step; the step reports its data wait.
    cfg = load_config("default", [f"data.source={h5}", f"model.backbone.image_size={args.size}", f"batch_size={args.model_batch}",
                                  f"max_steps={args.steps + 1}", "workers=1", f"threads={args.threads}", "device=cpu",
                                  "validate=false", "tensorboard=false", f"out={work / 'run'}"])
    trainer = Trainer(cfg, progress=False)
    rows = [r for r in trainer.run().history if r["kind"] == "train"][1:]  # the first step waits for worker start-up
    step_s = statistics.median(r["step_seconds"] for r in rows)
    wait = sum(r["data_seconds"] for r in rows) / sum(r["step_seconds"] for r in rows)
    model_rate = args.model_batch / step_s
    per_core = in_ram
    print(json.dumps({
        "benchmark": "data_path",
        "device": "cpu",
        "threads": args.threads,
        "train_size": args.size,
        "loader_images_per_s_per_core": {
            "galaxy10_h5_on_disk": round(on_disk, 1),
            "galaxy10_h5_in_memory": round(in_ram, 1),
            "jpeg_424px_decode_resize": jpeg,
        },
        "device_augment_images_per_s": round(augment_rate, 1),
        "model_step": {"backbone": "offline EfficientNet-Lite0 + MiniLM (default config locks)", "batch": args.model_batch,
                       "steps": len(rows), "images_per_s": round(model_rate, 1), "data_wait_share": round(wait, 4)},
        "loader_over_model": round(per_core / model_rate, 2),
        "cores_per_gpu_formula": "ceil(G / R) + 1: G the GPU's training images/s, R the loader's images/s per core",
        "assumed_gpu_images_per_s": args.gpu_rate,
        "cores_per_gpu_at_assumed_rate": math.ceil(args.gpu_rate / per_core) + 1,
    }, indent=2))


if __name__ == "__main__":
    main()
