"""`galaxalign realism`: rendered vs real morphology statistics; optionally sim-to-real accuracy."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--survey", type=Path, help="rendered survey HDF5 (Galaxy10 layout); default: the cached default survey (500 at 128 px)")
    parser.add_argument("--real", required=True, help="real galaxies: a folder with manifest.csv (file, galaxy10_class), a folder of images, or a catalog CSV")
    parser.add_argument("--out", type=Path, default=Path("runs") / "realism", help="output folder (default runs/realism)")
    parser.add_argument("--taxonomy", help="taxonomy name or YAML path of the real labels (default galaxy10_decals, or the checkpoint's)")
    parser.add_argument("--max-per-class", type=int, default=50, help="at most this many galaxies per class from each set (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="also measure sim-to-real accuracy of this checkpoint (.pt or exported folder) on the labelled real galaxies")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from galaxalign.realism.compare import compare_survey

    if args.max_per_class is not None and args.max_per_class < 1:
        raise ValueError(f"--max-per-class must be >= 1, got {args.max_per_class}")
    survey = args.survey
    if survey is None:
        from galaxalign.survey import default_survey

        survey = default_survey(500, 128, 0)
    summary = compare_survey(
        survey, args.real, args.out, taxonomy=args.taxonomy or "galaxy10_decals", max_per_class=args.max_per_class, seed=args.seed, progress=not args.no_progress
    )
    inputs, fails = summary["inputs"], summary["failures"]
    print(f"rendered {inputs['n_rendered']} vs real {inputs['n_real']} ({inputs['n_real_labelled']} labelled), measured at {inputs['measured_at_px']} px")
    print(f"statmorph failures: rendered {fails['rendered']['failed']}/{fails['rendered']['n']}, real {fails['real']['failed']}/{fails['real']['n']}")
    print(f"{'statistic':<20} {'median ren':>10} {'median real':>11} {'KS':>6} {'p':>8} {'W/spread':>9}")
    for stat, d in summary["overall"].items():
        fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        print(f"{stat:<20} {fmt(d['median_rendered'], '10.3f')} {fmt(d['median_real'], '11.3f')} {fmt(d['ks'], '6.2f')} {fmt(d['ks_pvalue'], '8.1e')} {fmt(d['wasserstein_norm'], '9.2f')}")
    if args.checkpoint:
        from galaxalign.evaluation.sim2real import sim_to_real
        from galaxalign.runtime import atomic_path

        result = sim_to_real(args.checkpoint, args.real, taxonomy=args.taxonomy, progress=not args.no_progress)
        with atomic_path(Path(args.out) / "sim_to_real.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        print(f"sim-to-real ({result['headline']}): accuracy {result['accuracy']:.3f} on {result['n']} real galaxies (chance {result['chance']:.2f})")
    print(f"wrote {args.out}/summary.json, distributions.png, grid.png, *_statistics.csv")
    return 0
