"""`galaxalign demo`: the reproduction table on the embedded survey (all methods, label fractions)."""
from __future__ import annotations


def add_arguments(parser) -> None:
    from galaxalign.runtime import DEMO_DIR

    parser.add_argument("--quick", action="store_true", help="300-galaxy survey, 32 px input, 1+1 epochs, fewer trainable layers (0.5-4 min on 2 shared CPU cores)")
    parser.add_argument("--out", default=str(DEMO_DIR), help="output folder (default: %(default)s)")
    parser.add_argument("--config", default="default", help="base training config, shipped name or YAML (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run, e.g. --set data.num=17736 (repeatable)")
    parser.add_argument("--methods", default=None, help="comma-separated subset of zero_shot,image_only,image_text,galaxalign")
    parser.add_argument("--fractions", default=None, help="comma-separated label fractions (default 0.1,1.0)")
    parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default 1000; 200 with --quick)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def parse_list(text: str | None, cast, name: str, allowed=None):
    if not text:
        return None
    items = [cast(x.strip()) for x in text.split(",") if x.strip()]
    if allowed is not None:
        bad = [x for x in items if x not in allowed]
        if bad:
            raise ValueError(f"{name}: unknown value(s) {bad}; choose from {list(allowed)}")
    return items


def run(args) -> int:
    from galaxalign.evaluation.demo import DEMO_METHODS, LABEL_FRACTIONS, run_demo

    methods = parse_list(args.methods, str, "--methods", DEMO_METHODS) or DEMO_METHODS
    fractions = parse_list(args.fractions, float, "--fractions") or LABEL_FRACTIONS
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"--fractions: label fractions must be in (0, 1], got {fractions}")
    report = run_demo(args.out, quick=args.quick, config=args.config, overrides=args.overrides, methods=methods,
                      fractions=fractions, n_resamples=args.bootstrap, progress=not args.quiet)
    print(f"wrote {args.out}/report.json and {args.out}/report.md "
          f"({len(report['runs'])} runs, {report['timings']['total_seconds']:.0f} s)")
    return 0
