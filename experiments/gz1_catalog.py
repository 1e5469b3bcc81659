"""Write a `filepath,label` catalog of the GZ1 SDSS dev set for `galaxalign benchmark`.

    python experiments/gz1_catalog.py ../shared/data/gz1-sdss runs/gz1/catalog.csv

GZ1 classes map to examples/gz1_three_class.yaml: elliptical; spiral_cw and spiral_acw -> spiral;
edge_on. "dont_know" galaxies are left out.
"""
import csv
import sys
from pathlib import Path

MAP = {"elliptical": "elliptical", "spiral_cw": "spiral", "spiral_acw": "spiral", "edge_on": "edge_on"}


def main(folder: str, out: str) -> None:
    folder, out = Path(folder).resolve(), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(folder / "manifest.csv", newline="") as f, open(out, "w", newline="") as g:
        w = csv.writer(g)
        w.writerow(["filepath", "label", "id"])
        for row in csv.DictReader(f):
            if row["gz1_name"] in MAP:
                w.writerow([str(folder / row["file"]), MAP[row["gz1_name"]], Path(row["file"]).stem])
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
