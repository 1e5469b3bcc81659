"""Speed-up of once-per-class text+symbol encoding over per-sample encoding (forward + backward).

Prints one JSON object. Run: .venv/bin/python bench/bench_class_bank.py [--backbone offline|tiny]
Timings on a shared CPU are noisy; the median over --iters iterations is reported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from galaxalign.class_bank import ClassBank
from galaxalign.loss import TriModalLoss
from galaxalign.model import GalaxAlignModel
from galaxalign.taxonomy import load_taxonomy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", choices=["offline", "tiny"], default="offline")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--taxonomy", default="galaxy10_decals")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    spec = {"kind": "tiny"} if args.backbone == "tiny" else {"kind": "offline", "image_size": args.image_size}
    model = GalaxAlignModel.from_config({"backbone": spec, "symbol_encoder_shared": True}).train()
    tax = load_taxonomy(args.taxonomy)
    bank = ClassBank(tax, model, n_symbol_variants=4, seed=0)
    criterion = TriModalLoss()
    size = model.image_size
    images = torch.randn(args.batch, 3, size, size)
    image_features = model.encode_image(images).detach()  # the image side is the same in both paths

    def step(labels, once: bool) -> float:
        cb = bank.batch(labels)
        t0 = time.perf_counter()
        if once:
            feats = model.forward_features(None, cb.text_tokens, cb.text_index, cb.symbol_images, cb.symbol_index)
        else:
            tokens, symbols = bank.expand(cb)
            feats = model(text_tokens=tokens, symbol_images=symbols)
        loss = criterion(image_features, feats["text_features"], feats["symbol_features"], feats["logit_scale"],
                         labels)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, tax.num_classes, (args.batch,), generator=gen) for _ in range(args.iters + 1)]
    step(batches[0], True), step(batches[0], False)  # warm-up
    per_sample = [step(b, False) for b in batches[1:]]
    once = [step(b, True) for b in batches[1:]]
    result = {
        "backbone": spec,
        "batch": args.batch,
        "classes": tax.num_classes,
        "distinct_classes_per_batch": statistics.median(len(torch.unique(b)) for b in batches[1:]),
        "iters": args.iters,
        "threads": args.threads,
        "per_sample_s_median": round(statistics.median(per_sample), 4),
        "once_per_class_s_median": round(statistics.median(once), 4),
        "speedup": round(statistics.median(per_sample) / statistics.median(once), 2),
        "what": "forward+backward of text and symbol encoders plus the tri-modal loss, per batch",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
