"""`galaxalign pretrain`: train the image trunk on a rendered survey; writes a base for fine-tuning.

The small version runs on a laptop CPU (the defaults); the large one is the same command on a GPU
with a bigger survey and more steps, e.g. ``--num 200000 --size 128 --steps 20000 --batch-size 256``.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from galaxalign.training.pretrain import PretrainSettings as S

    parser.add_argument("--out", required=True, help="run folder: survey, checkpoint.pt, history.json, base/")
    parser.add_argument("--num", type=int, default=S.num, help=f"galaxies to render (default {S.num})")
    parser.add_argument("--size", type=int, default=S.size, help=f"cutout size rendered and trained at, px (default {S.size})")
    parser.add_argument("--steps", type=int, default=S.steps, help=f"optimiser steps (default {S.steps}); raise it with --resume to go on")
    parser.add_argument("--batch-size", type=int, default=S.batch_size, help=f"galaxies per step (default {S.batch_size})")
    parser.add_argument("--lr", type=float, default=S.lr, help=f"trunk learning rate (default {S.lr})")
    parser.add_argument("--head-lr", type=float, default=S.head_lr, help=f"heads' learning rate (default {S.head_lr})")
    parser.add_argument("--answer-weight", type=float, default=S.answer_weight,
                        help=f"weight of the decision-tree answer loss next to alignment (default {S.answer_weight})")
    parser.add_argument("--seed", type=int, default=S.seed, help="seed of the survey and of every training draw")
    parser.add_argument("--survey", default=None, help="train on this rendered survey (HDF5) instead of rendering one")
    parser.add_argument("--render-workers", type=int, default=None, help="rendering processes (default: all cores)")
    parser.add_argument("--data-workers", type=int, default=0, help="data-loading processes (default 0: in the loop)")
    parser.add_argument("--checkpoint-every", type=int, default=S.checkpoint_every, help=f"steps between checkpoints (default {S.checkpoint_every})")
    parser.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="pause the run at this step (checkpoint and base written); --resume continues the same schedule")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from galaxalign.training.pretrain import PretrainSettings, pretrain

    settings = PretrainSettings(out=args.out, num=args.num, size=args.size, steps=args.steps, batch_size=args.batch_size,
                                lr=args.lr, head_lr=args.head_lr, answer_weight=args.answer_weight, seed=args.seed,
                                survey=args.survey, render_workers=args.render_workers, data_workers=args.data_workers,
                                checkpoint_every=args.checkpoint_every, device=args.device, threads=args.threads,
                                stop_at=args.stop_at)
    result = pretrain(settings, resume=args.resume, progress=not args.quiet)
    last = result.history[-1] if result.history else {}
    print(f"pretrain: {result.steps} steps on {result.survey.name} in {result.seconds:.0f} s; "
          f"last loss {last.get('loss')}, answer accuracy {last.get('answer_acc')}; base {result.base}")
    return 0
