"""`galaxalign symbols`: a labelled sheet of a taxonomy's class symbols, or one composed symbol."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--taxonomy", default="galaxy10_decals", help="shipped taxonomy name or a taxonomy YAML file (default: galaxy10_decals)")
    what.add_argument("--answers", help="comma-separated decision-tree answers composed into one symbol, e.g. disk-edge-on_no,bar_yes,spiral-winding_tight")
    what.add_argument("--all-answers", action="store_true", help="a sheet of the pictogram of every decision-tree answer")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--size", type=int, default=None, help="symbol size in pixels (default: 128 on a sheet, 224 for one symbol)")
    parser.add_argument("--symbols-file", type=Path, default=None, help="a user's symbols.yaml instead of the shipped one "
                        "(or the taxonomy's own, when it names one)")
    parser.add_argument("--decision-tree", type=Path, default=None, help="with --answers / --all-answers: a user's "
                        "decision_tree.yaml instead of the shipped one")
    parser.add_argument("--augment", action="store_true", help="with --answers: draw a random augmented variant")
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmented variant (default 0)")


def run(args: argparse.Namespace) -> int:
    from galaxalign.symbols import answer_sheet, load_symbol_book, render_symbol, symbol_sheet

    from galaxalign.taxonomy import load_decision_tree

    book = load_symbol_book(args.symbols_file) if args.symbols_file else None
    tree = load_decision_tree(args.decision_tree) if args.decision_tree else None
    if args.out.suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: must be a .png file")
    if args.answers:
        from PIL import Image

        from galaxalign.runtime import atomic_path

        image = render_symbol(args.answers.split(","), size=args.size or 224, seed=args.seed, augment=args.augment, book=book,
                              tree=tree)
        with atomic_path(args.out) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]} symbol of {args.answers})")
        return 0
    if args.all_answers:
        out = answer_sheet(args.out, size=args.size or 96, book=book, tree=tree)
        print(f"wrote {out} (the pictogram of every answer)")
        return 0
    out = symbol_sheet(args.taxonomy, args.out, size=args.size or 128, book=book)
    print(f"wrote {out} (class symbols of {args.taxonomy})")
    return 0
