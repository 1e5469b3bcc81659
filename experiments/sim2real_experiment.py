"""One sim-to-real experiment: render a training survey, train, classify the real exemplars, measure realism.

Steps (each skipped when its output exists, so an interrupted run resumes):
  1. render ``--num`` galaxies at ``--size`` px (``observing`` overrides from ``--observing`` JSON);
  2. ``galaxalign train --config default`` on it (extra ``key=value`` overrides after ``--``);
  3. ``evaluation.sim_to_real`` on ../shared/data/gz2-exemplars (every classifier);
  4. optionally (``--realism N``) render N galaxies at 128 px and ``realism.compare_survey`` them.
Writes ``OUT/result.json`` with the accuracies and the distances.

Usage:
  python experiments/sim2real_experiment.py runs/s2r/A [--observing obs.json] [--realism 200] \\
      [-- stage1.epochs=6 stage2.epochs=3 data.augment=1.0]
Run one at a time on a shared machine: training uses one torch thread.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXEMPLARS = ROOT.parent / "shared" / "data" / "gz2-exemplars"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--observing", type=Path, help="JSON file of observing overrides (survey_classes.yaml keys)")
    ap.add_argument("--num", type=int, default=2000)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--realism", type=int, default=0, help="also measure realism on this many 128 px galaxies")
    ap.add_argument("--realism-per-class", type=int, default=12)
    ap.add_argument("--aug-zoom", help="ablation: train-transform zoom range LO,HI (default: the library's)")
    ap.add_argument("--aug-gain", type=float, help="ablation: train-transform per-channel gain (default: the library's)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from galaxalign.evaluation import sim_to_real
    from galaxalign.realism import compare_survey
    from galaxalign.survey import generate_survey

    args.out.mkdir(parents=True, exist_ok=True)
    observing = json.loads(args.observing.read_text()) if args.observing else None
    result: dict = {"observing": observing, "train_overrides": extra, "seconds": {}}
    survey = args.out / f"survey_n{args.num}_s{args.size}.h5"
    t0 = time.perf_counter()
    if not survey.exists():
        generate_survey(survey, args.num, size=args.size, seed=args.seed, workers=1, observing=observing)
    result["seconds"]["render"] = round(time.perf_counter() - t0, 1)

    ckpt = args.out / "train" / "checkpoints" / "last.pt"
    t0 = time.perf_counter()
    if not ckpt.exists():
        train_args = ["train", "--config", "default", "--out", str(args.out / "train"), "--quiet", "tensorboard=false",
                      f"data.source={survey}", *extra]
        # The trainer passes only a strength to the train transform; an ablation of the augmentation
        # ranges swaps the library defaults in the training process itself.
        zoom = tuple(float(v) for v in args.aug_zoom.split(",")) if args.aug_zoom else None
        code = ("import sys, galaxalign.transforms as T\n"
                f"zoom, gain = {zoom!r}, {args.aug_gain!r}\n"
                "d = list(T.train_transform.__defaults__)\n"
                "d[1] = zoom if zoom is not None else d[1]\n"
                "d[2] = gain if gain is not None else d[2]\n"
                "T.train_transform.__defaults__ = tuple(d)\n"
                "from galaxalign.cli import main\n"
                "sys.exit(main(sys.argv[1:]))\n")
        cmd = [sys.executable, "-c", code, *train_args]
        print("galaxalign " + " ".join(train_args), f"(aug zoom={zoom}, gain={args.aug_gain})", flush=True)
        subprocess.run(cmd, check=True)
        result["aug"] = {"zoom": zoom, "channel_gain": args.aug_gain}
    result["seconds"]["train"] = round(time.perf_counter() - t0, 1)
    import csv

    with (args.out / "train" / "val_log.csv").open() as f:
        last = list(csv.DictReader(f))[-1]  # the final validation row
    result["val"] = {k: v for k, v in last.items() if "acc" in k}

    t0 = time.perf_counter()
    s2r = sim_to_real(str(ckpt), str(EXEMPLARS), survey=str(survey))
    result["seconds"]["sim_to_real"] = round(time.perf_counter() - t0, 1)
    (args.out / "sim_to_real.json").write_text(json.dumps(s2r, indent=1, default=str))
    result["sim_to_real"] = {"headline": s2r["headline"], "accuracy": s2r["accuracy"], "macro_f1": s2r["macro_f1"],
                             "methods": {k: v.get("accuracy") for k, v in s2r.get("methods", {}).items()}}

    if args.realism:
        t0 = time.perf_counter()
        rsurvey = args.out / f"realism_n{args.realism}_s128.h5"
        if not rsurvey.exists():
            generate_survey(rsurvey, args.realism, size=128, seed=1, workers=1, observing=observing, progress=False)
        comp = compare_survey(rsurvey, EXEMPLARS, args.out / "realism", max_per_class=args.realism_per_class, progress=False)
        result["seconds"]["realism"] = round(time.perf_counter() - t0, 1)
        result["realism"] = {k: {"median_rendered": d["median_rendered"], "median_real": d["median_real"],
                                 "ks": d["ks"], "wasserstein_norm": d["wasserstein_norm"]}
                             for k, d in comp["overall"].items()}
        result["realism_failures"] = comp.get("failures")
    (args.out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: result[k] for k in ("val", "sim_to_real", "seconds")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
