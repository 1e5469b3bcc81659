"""Draw docs/img/survey_vs_real.png: rendered galaxies of each class beside real exemplars.

One row per Galaxy10 class: N rendered cutouts, then the real SDSS exemplars from
../shared/data/gz2-exemplars whose manifest maps to that class (column skipped when absent).
Usage: python scripts/make_survey_figure.py [--out docs/img/survey_vs_real.png] [--per-class 5]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from galaxalign.runtime import atomic_path
from galaxalign.survey import render_galaxy
from galaxalign.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parents[1]
EXEMPLARS = ROOT.parent / "shared" / "data" / "gz2-exemplars"


def real_exemplars() -> dict[int, list[Path]]:
    manifest = EXEMPLARS / "manifest.csv"
    if not manifest.exists():
        return {}
    out: dict[int, list[Path]] = {}
    with manifest.open() as f:
        for row in csv.DictReader(f):
            if row.get("galaxy10_class", "").strip():
                out.setdefault(int(row["galaxy10_class"]), []).append(EXEMPLARS / row["file"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "survey_vs_real.png"))
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--tile", type=int, default=88)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-crop", type=float, default=1.0,
                    help="central fraction of each real exemplar shown (1.0: the whole cutout, as sim_to_real sees it)")
    args = ap.parse_args()
    taxonomy = load_taxonomy("galaxy10_decals")
    real = real_exemplars()
    n_real = max((min(len(v), 2) for v in real.values()), default=0)
    t, label_w, gap = args.tile, 170, 8
    width = label_w + args.per_class * t + (gap + n_real * t if n_real else 0)
    sheet = Image.new("RGB", (width, 18 + len(taxonomy) * t), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((label_w, 3), "rendered (128 px, shown at %d)" % t, fill=(0, 0, 0))
    if n_real:
        draw.text((label_w + args.per_class * t + gap, 3), "real SDSS (GZ2 exemplars, %d %% field)" % round(100 * args.real_crop), fill=(0, 0, 0))
    for c in taxonomy.classes:
        y = 18 + c.id * t
        draw.text((4, y + t // 2 - 12), f"{c.id} {c.name}".replace(" Galaxies", "").replace("Galaxies", ""), fill=(0, 0, 0))
        for j in range(args.per_class):
            img, _ = render_galaxy(c.id, 128, np.random.default_rng([args.seed, c.id, j]))
            sheet.paste(Image.fromarray(img).resize((t, t), Image.LANCZOS), (label_w + j * t, y))
        for j, path in enumerate(real.get(c.id, [])[:n_real]):
            im = Image.open(path).convert("RGB")
            # Whole by default: the rendered survey now randomises its field of view to cover SDSS's wider one.
            w, h = im.size
            m = (1 - args.real_crop) / 2
            im = im.crop((int(m * w), int(m * h), int((1 - m) * w), int((1 - m) * h))).resize((t, t), Image.LANCZOS)
            sheet.paste(im, (label_w + args.per_class * t + gap + j * t, y))
    with atomic_path(args.out) as tmp:
        # Adaptive palette keeps the PNG small (< 500 KB) with no visible loss at this scale.
        sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG", optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
