"""`galaxalign ablate`: GalaxAlign without symbols, without stage 1, shared encoder, stock loss, each loss term."""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="the demo's quick sizes")
    parser.add_argument("--out", default="runs/ablate", help="output folder (default: %(default)s)")
    parser.add_argument("--config", default="default", help="base training config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run (repeatable)")
    parser.add_argument("--label-fraction", type=float, default=1.0, help="labelled share of the training split (default 1.0)")
    parser.add_argument("--only", default=None,
                        help="comma-separated subset of full,no_symbols,no_stage1,shared_symbol_encoder,stock_loss,"
                        "no_image_text_loss,no_symbol_text_loss,no_image_symbol_loss")
    parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default 1000; 200 with --quick)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args) -> int:
    from galaxalign.evaluation.demo import run_ablations

    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    if not 0 < args.label_fraction <= 1:
        raise ValueError(f"--label-fraction must be in (0, 1], got {args.label_fraction}")
    report = run_ablations(args.out, quick=args.quick, config=args.config, overrides=args.overrides,
                           label_fraction=args.label_fraction, only=only, n_resamples=args.bootstrap,
                           progress=not args.quiet)
    print(f"wrote {args.out}/report.json and {args.out}/report.md ({len(report['runs'])} runs, "
          f"{report['timings']['total_seconds']:.0f} s)")
    return 0
