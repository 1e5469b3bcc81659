"""The `galaxalign` command: a thin shell over the Python API.

Each sub-command lives in ``galaxalign/cli/<name>.py`` and defines ``add_arguments(parser)``
and ``run(args) -> int``; its one-line summary is in ``SUMMARY`` below (the one place). Modules are imported only for the command that
runs, so ``galaxalign symbols`` never pays for torch-heavy imports of ``serve``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> module; the order is the order of `galaxalign --help`.
COMMANDS = {
    "generate": "galaxalign.cli.generate",
    "symbols": "galaxalign.cli.symbols",
    "train": "galaxalign.cli.train",
    "pretrain": "galaxalign.cli.pretrain",
    "classify": "galaxalign.cli.classify",
    "evaluate": "galaxalign.cli.evaluate",
    "benchmark": "galaxalign.cli.benchmark",
    "demo": "galaxalign.cli.demo",
    "ablate": "galaxalign.cli.ablate",
    "embed": "galaxalign.cli.embed",
    "index": "galaxalign.cli.index",
    "search": "galaxalign.cli.search",
    "serve": "galaxalign.cli.serve",
    "realism": "galaxalign.cli.realism",
}

# One-line help shown without importing the command's module.
SUMMARY = {
    "generate": "render the embedded synthetic survey (Galaxy10-like classes) to HDF5",
    "symbols": "draw a labelled sheet of every class symbol of a taxonomy, or one symbol from answers",
    "train": "fine-tune (stage 1, stage 2, or a baseline) from a YAML config",
    "pretrain": "train the image trunk on a rendered survey (alignment + answers); writes a base for model.backbone.init",
    "classify": "classify images or symbol sketches with a checkpoint; one JSON line each",
    "evaluate": "classification and similarity-search metrics of a checkpoint on a dataset",
    "benchmark": "the default path vs a frozen ImageNet probe and k-NN on your labelled data, several seeds",
    "demo": "the reproduction table on the embedded survey (all methods, label fractions)",
    "ablate": "ablations: no symbols, no stage 1, separate symbol encoder, stock loss, loss terms",
    "embed": "embed a survey into Parquet shards",
    "index": "build a faiss index (or a Milvus collection) over embeddings",
    "search": "query an index by image, id, text, symbols or a sketch",
    "serve": "HTTP API and web page for similarity search",
    "realism": "compare rendered galaxies with real ones; sim-to-real accuracy",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galaxalign", description="GalaxAlign: galaxy images, symbols and text, aligned.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        p = sub.add_parser(name, help=SUMMARY[name], description=SUMMARY[name])
        if name == command:
            importlib.import_module(COMMANDS[name]).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        # User-facing errors carry their own message (file, row, field); no traceback needed.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"galaxalign {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
