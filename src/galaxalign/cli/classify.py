"""`galaxalign classify`: one JSON line per input image, symbol sketch or text string."""
from __future__ import annotations

import json
import sys


def add_arguments(parser) -> None:
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
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("inputs", nargs="+", metavar="FILES", help="image files, or text strings with --modality text")


def run(args) -> int:
    from galaxalign.evaluation.predict import Classifier

    clf = Classifier.from_checkpoint(args.checkpoint, prototypes=args.prototypes)
    failures = 0
    for record in clf.classify(args.inputs, modality=args.modality, batch_size=args.batch_size):
        if "error" in record:
            failures += 1
            print(f"galaxalign classify: error: {record['error']}", file=sys.stderr, flush=True)
        else:
            print(json.dumps(record), flush=True)
    return 1 if failures else 0
