"""`galaxalign ablate`: GalaxAlign without symbols, without stage 1, separate symbol encoder, stock loss, each loss
term (the shipped `ablate` run grid)."""
from __future__ import annotations


def add_arguments(parser) -> None:
    from galaxalign.cli.demo import add_common_arguments

    add_common_arguments(parser, "ablate", "runs/ablate")
    parser.add_argument("--label-fraction", type=float, default=None, help="labelled share of the training split (default: the grid's, 1.0)")
    parser.add_argument("--only", default=None,
                        help="comma-separated subset of the grid's runs: full,no_symbols,no_stage1,shared_symbol_encoder,"
                        "stock_loss,no_image_text_loss,no_symbol_text_loss,no_image_symbol_loss")


def run(args) -> int:
    from galaxalign.cli.demo import common_kwargs
    from galaxalign.grids.runner import run_ablations

    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    if args.label_fraction is not None and not 0 < args.label_fraction <= 1:
        raise ValueError(f"--label-fraction must be in (0, 1], got {args.label_fraction}")
    report = run_ablations(args.out, quick=args.quick, grid=args.grid, label_fraction=args.label_fraction, only=only,
                           **common_kwargs(args))
    print(f"wrote {args.out}/report.json and {args.out}/report.md ({len(report['runs'])} runs, "
          f"{report['timings']['total_seconds']:.0f} s)")
    return 0
