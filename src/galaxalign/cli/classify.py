"""`galaxalign classify`: one JSON line per input image, symbol sketch or text string."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_arguments(parser) -> None:
    from galaxalign.cli.arguments import positive_int

    parser.add_argument("--checkpoint", required=True, help="training checkpoint (.pt) or exported model folder")
    parser.add_argument(
        "--modality", choices=("image", "symbol", "text"), default="image",
        help="image: galaxy images (JPEG, PNG, FITS); symbol: a pictogram or sketch, through the symbol "
        "encoder; text: the arguments are text strings",
    )
    parser.add_argument(
        "--prototypes", choices=("text", "symbol", "both", "head"), default=None,
        help="class prototypes to compare with (default: the image-only model's head for images when it "
        "has one, else both text and symbol prototypes fused)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="inputs per forward pass (default 32)")
    parser.add_argument("inputs", nargs="+", metavar="FILES", help="image files or folders of them, or text strings with --modality text")


def expand_inputs(inputs, modality: str) -> tuple[list[str], list[str]]:
    """(inputs to classify, error messages): a folder stands for the image files inside it (recursively)."""
    if modality == "text":
        good, errors = [], []
        for text in inputs:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                errors.append(f"text {text!r}: holds {text[exc.start:exc.end]!r} at position {exc.start}, which is not "
                              "a character (an undecodable byte); skipped")
                continue
            good.append(text)
        return good, errors
    from galaxalign.datasets.images import is_image_file

    files, errors = [], []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and is_image_file(p.relative_to(path)))
            if not found:
                errors.append(f"{path}: a folder with no image files in it (JPEG, PNG, FITS)")
            files.extend(found)
        else:
            files.append(name)
    return files, errors


def run(args) -> int:
    from galaxalign.evaluation.predict import Classifier

    inputs, errors = expand_inputs(args.inputs, args.modality)
    for message in errors:
        print(f"galaxalign classify: error: {message}", file=sys.stderr, flush=True)
    clf = Classifier.from_checkpoint(args.checkpoint, prototypes=args.prototypes)
    failures = len(errors)
    for record in clf.classify(inputs, modality=args.modality, batch_size=args.batch_size):
        if "error" in record:
            failures += 1
            print(f"galaxalign classify: error: {record['error']}", file=sys.stderr, flush=True)
        else:
            print(json.dumps(record, allow_nan=False), flush=True)  # never NaN: not JSON
    if failures:
        print(f"galaxalign classify: {failures} input(s) could not be classified (listed above)", file=sys.stderr)
    return 1 if failures else 0
