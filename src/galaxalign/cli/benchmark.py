"""`galaxalign benchmark`: the default path against off-the-shelf baselines on your own labelled galaxies."""
from __future__ import annotations

import json
import shlex
import sys


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="your labelled catalog (CSV/parquet `filepath,label`, a folder, ...)")
    parser.add_argument("--taxonomy", required=True, help="taxonomy name or YAML of your classes")
    parser.add_argument("--out", default="runs/benchmark", help="folder for benchmark.json/.md/.png and each seed's run")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds: one split + training run each")
    parser.add_argument("--labels", type=int, default=300,
                        help="labelled training galaxies per seed (stratified; 0 = the whole training split)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share of the catalog")
    parser.add_argument("--test-fraction", type=float, default=0.3, help="test share of the catalog")
    parser.add_argument("overrides", nargs="*", metavar="KEY.SUB=VALUE", help="training config overrides")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from galaxalign.training.benchmark import run_benchmark

    try:
        seeds = tuple(int(s) for s in str(args.seeds).split(",") if s.strip())
    except ValueError:
        raise SystemExit(f"galaxalign benchmark: --seeds must be comma-separated integers, got {args.seeds!r}")
    command = "galaxalign benchmark " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    summary = run_benchmark(args.data, args.taxonomy, args.out, seeds=seeds, labels=args.labels or None,
                            val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                            overrides=tuple(args.overrides), progress=not args.quiet, command=command)
    print(json.dumps({m: {k: round(v[k], 4) for k in ("accuracy", "balanced_accuracy", "macro_f1", "map")}
                      for m, v in summary["methods"].items()}))
    print(json.dumps({k: v for k, v in summary["paired"].items()}))
    print(f"wrote {args.out}/benchmark.json, benchmark.md and benchmark.png")
    return 0
