"""`galaxalign embed`: embed a survey into Parquet shards (resumable; torchrun splits the shards)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from galaxalign.search.embed import DEFAULT_SHARD_SIZE

    p.add_argument("--checkpoint", required=True, help="training checkpoint (.pt) or exported model folder")
    p.add_argument("--data", required=True, help="survey / catalog: .h5 file, catalog CSV/Parquet or image folder")
    p.add_argument("--taxonomy", default=None, help="label scheme (default: the checkpoint's own)")
    p.add_argument("--out", required=True, help="output folder for shards and manifest.json")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help=f"rows per shard (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--num-workers", type=int, default=0, help="image-reading worker processes per rank")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (under torchrun: cuda:$LOCAL_RANK)")
    p.add_argument("--skip-bad", action="store_true",
                   help="drop catalog rows whose image or label is bad (listed in a warning) instead of stopping")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from galaxalign.cli.arguments import check_out_folder

    check_out_folder(args.out)  # before the work, not after it
    from galaxalign.datasets import describe_catalog, load_catalog
    from galaxalign.inference import load_model
    from galaxalign.search.embed import embed_survey
    from galaxalign.taxonomy import load_taxonomy
    from galaxalign.distributed import env_rank_world, rank_device

    if args.batch_size < 1 or args.shard_size < 1:
        raise ValueError("--batch-size and --shard-size must be at least 1")
    rank, _world = env_rank_world()
    device = rank_device(args.device)
    # Absolute paths: the manifest (and the index built from it) must work from any folder.
    checkpoint, data = Path(args.checkpoint).expanduser().resolve(), Path(args.data).expanduser().resolve()
    model, model_taxonomy = load_model(checkpoint)
    model.to(device)
    tax = load_taxonomy(args.taxonomy) if args.taxonomy else model_taxonomy
    catalog = load_catalog(data, tax, skip_bad=True) if args.skip_bad else load_catalog(data, tax)
    if rank == 0 and not args.no_progress:
        print(describe_catalog(catalog, tax), file=sys.stderr)
    manifest = embed_survey(model, catalog, args.out, checkpoint=str(checkpoint), data_source=str(data),
                            taxonomy=tax, batch_size=args.batch_size, shard_size=args.shard_size,
                            num_workers=args.num_workers, device=device, progress=not args.no_progress)
    if rank == 0:
        print(f"embedded {len(catalog)} galaxies -> {manifest}")
    return 0
