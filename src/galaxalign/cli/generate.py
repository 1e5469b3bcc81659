"""`galaxalign generate`: render the embedded synthetic survey to an HDF5 file (Galaxy10 layout)."""
from __future__ import annotations

import argparse
import json


def _weights(text: str):
    """'galaxy10' | 'uniform' | ten comma-separated numbers | 'key=w,key=w' (others 0)."""
    text = text.strip()
    if text in ("galaxy10", "uniform"):
        return text
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and all("=" in p for p in parts):
        out = {}
        for p in parts:
            k, v = p.split("=", 1)
            out[k.strip()] = _number(v, text)
        return out
    return [_number(p, text) for p in parts]


def _number(value: str, whole: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--class-weights {whole!r}: {value!r} is not a number") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from galaxalign.cli.arguments import bounded_int, positive_int
    from galaxalign.survey.generate import MAX_SIZE

    parser.add_argument("--num", type=positive_int, required=True, help="number of galaxies")
    parser.add_argument("--size", type=bounded_int(16, MAX_SIZE), default=128,
                        help=f"cutout width and height in pixels, 16 to {MAX_SIZE} (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same file (default 0)")
    parser.add_argument("--out", required=True, help="output HDF5 file, e.g. survey.h5")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores; 1: no pool)")
    parser.add_argument("--class-weights", type=_weights, default=None,
                        help="'galaxy10' (default: Galaxy10 DECaLS proportions), 'uniform', ten numbers "
                             "'a,b,...' for ids 0..9, or 'key=w,...' with taxonomy class keys")
    parser.add_argument("--observing", default=None,
                        help="JSON object overriding observing ranges of survey_classes.yaml, "
                             "e.g. '{\"psf_fwhm_arcsec\": [\"uniform\", 0.8, 3.0]}'")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from galaxalign.survey import generate_survey

    observing = None
    if args.observing:
        try:
            observing = json.loads(args.observing)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--observing is not valid JSON: {exc}") from None
        if not isinstance(observing, dict):
            raise ValueError("--observing must be a JSON object of parameter -> distribution")
    generate_survey(args.out, args.num, size=args.size, seed=args.seed, workers=args.workers,
                    class_weights=args.class_weights, progress=not args.quiet, observing=observing)
    return 0
