"""``galaxalign train``: fine-tune from a YAML config (a thin shell over galaxalign.training.train)."""
from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="default", help="a shipped config name (default, paper) or a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY.SUB=VALUE", help="config overrides, e.g. stage1.lr=3e-4 data.num=500")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                        help="continue a run: from CKPT, or without a value from OUT/checkpoints/last.pt")
    parser.add_argument("--out", default=None, help="output folder (overrides the config's 'out')")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an earlier run in the output folder and start afresh (without this, or "
                        "--resume, a folder holding a run is refused)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--print-config", action="store_true", help="print the merged config as JSON and exit")


def _is_override(value: str | None) -> bool:
    from pathlib import Path

    if value in (None, "auto") or "=" not in value or Path(value).exists():
        return False
    key = value.partition("=")[0]
    return bool(key) and all(part.isidentifier() for part in key.split("."))


def run(args: argparse.Namespace) -> int:
    from galaxalign.training import load_config, train

    overrides = list(args.overrides)
    if _is_override(args.resume):
        # `--resume data.num=300`: argparse hands the override to --resume's optional value; it is
        # an override (a KEY=VALUE that is no file), and the run resumes from its last checkpoint.
        overrides.insert(0, args.resume)
        args.resume = "auto"
    if args.out:
        overrides.append({"out": args.out})
    cfg = load_config(args.config, overrides)
    from galaxalign.runtime import check_device_name

    check_device_name(cfg["device"])  # before the data and the model are prepared
    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return 0
    from galaxalign.training.checkpoint import claim_run_folder

    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 deletes
    claim_run_folder(cfg["out"], resume=args.resume is not None, overwrite=args.overwrite, is_main=is_main)
    result = train(cfg, progress=not args.quiet, resume=args.resume)
    from galaxalign.distributed import init_distributed

    if init_distributed(cfg["device"]).is_main:
        last_val = next((r for r in reversed(result.history) if r.get("kind") == "val"), {})
        summary = {
            "method": cfg["method"],
            "checkpoint": str(result.checkpoint),
            "export_dir": str(result.export_dir) if result.completed else None,
            "completed": result.completed,
            "seconds": round(result.seconds, 1),
            **{k: v for k, v in last_val.items() if k.startswith("val_")},
        }
        print(json.dumps(summary), file=sys.stdout)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0
