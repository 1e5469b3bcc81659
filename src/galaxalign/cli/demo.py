"""`galaxalign demo`: the reproduction table on the embedded survey (the shipped `demo` run grid:
every method at every label fraction and seed)."""
from __future__ import annotations


def add_common_arguments(parser, grid: str, out: str) -> None:
    """Arguments shared by `galaxalign demo` and `galaxalign ablate` (both run a grid)."""
    parser.add_argument("--quick", action="store_true", help="the grid's quick sizes: 300-galaxy survey, 32 px input, 1+1 epochs, "
                        "fewer trainable layers (0.5-4 min on 2 shared CPU cores)")
    parser.add_argument("--out", default=out, help="output folder (default: %(default)s)")
    parser.add_argument("--grid", default=grid, help="run grid: shipped name or YAML file (default: %(default)s)")
    parser.add_argument("--config", default=None, help="base training config, shipped name or YAML (default: the grid's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run, e.g. --set data.num=17736 (repeatable)")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds (default: the grid's)")
    parser.add_argument("--exemplars", action="append", default=None,
                        help="real labelled galaxies (folder or catalog) for the sim-to-real check, e.g. "
                             "../shared/data/gz2-exemplars; repeat for several surveys, each reported separately. "
                             "A folder whose manifest.csv names each image's decision-tree answer also gets the "
                             "one-answer feature search (ROC-AUC) for every run")
    parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default: the grid's, 1000; 200 with --quick)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def add_arguments(parser) -> None:
    from galaxalign.runtime import DEMO_DIR

    add_common_arguments(parser, "demo", str(DEMO_DIR))
    parser.add_argument("--methods", default=None, help="comma-separated subset of zero_shot,image_only,image_text,galaxalign")
    parser.add_argument("--fractions", default=None, help="comma-separated label fractions (default: the grid's, 0.1,1.0)")


def parse_list(text: str | None, cast, name: str, allowed=None):
    if not text:
        return None
    items = [cast(x.strip()) for x in text.split(",") if x.strip()]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            raise ValueError(f"{name}: unknown value(s) {bad}; choose from {list(allowed)}")
    return items


def common_kwargs(args) -> dict:
    return {"config": args.config, "overrides": args.overrides, "seeds": parse_list(args.seeds, int, "--seeds"),
            "exemplars": args.exemplars, "n_resamples": args.bootstrap, "progress": not args.quiet}


def run(args) -> int:
    from galaxalign.grids.runner import run_demo
    from galaxalign.training.config import METHODS

    methods = parse_list(args.methods, str, "--methods", METHODS)
    fractions = parse_list(args.fractions, float, "--fractions")
    if fractions and any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"--fractions: label fractions must be in (0, 1], got {fractions}")
    report = run_demo(args.out, quick=args.quick, grid=args.grid, methods=methods, fractions=fractions, **common_kwargs(args))
    print(f"wrote {args.out}/report.json and {args.out}/report.md "
          f"({len(report['runs'])} runs, {report['timings']['total_seconds']:.0f} s)")
    return 0
