"""Fit the benchmark's vector generator to real embeddings of ours; writes bench/embedding_gmm.npz.

    python bench/fit_embedding_gmm.py [--num 2000] [--embeddings DIR] [--out bench/embedding_gmm.npz]

Run once (a few minutes on CPU); bench/bench_index.py then samples from the saved mixture and needs
no model. Without --embeddings it renders ``--num`` galaxies with the project's own survey generator
(``survey.generate_survey``, as ``galaxalign generate``), embeds them with the offline model
(EfficientNet-Lite0 ImageNet trunk + its initial projection, D=256; as ``galaxalign embed``), and
fits a full-covariance Gaussian mixture (scikit-learn) to the L2-normalised embeddings, choosing
the number of components by held-out log-likelihood. The .npz holds the mixture (weights, means,
Cholesky factors of the covariances) and the difficulty of the real embeddings (relative contrast,
IVF nprobe=1 recall@10 at the same size), so a bench run can show that its samples are as hard.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def embed_rendered_survey(num: int, root: Path, seed: int) -> Path:
    """``galaxalign generate`` + ``galaxalign embed`` through the Python API; returns the embeddings folder."""
    import torch

    from galaxalign.datasets import load_catalog
    from galaxalign.inference import load_model, save_pretrained
    from galaxalign.model import GalaxAlignModel
    from galaxalign.search.embed import embed_survey
    from galaxalign.survey import generate_survey
    from galaxalign.taxonomy import load_taxonomy

    torch.manual_seed(seed)
    tax = load_taxonomy("galaxy10_decals")
    ckpt = save_pretrained(GalaxAlignModel.from_config({"backbone": {"kind": "offline"}}), tax, root / "model")
    model, tax = load_model(ckpt)
    with contextlib.redirect_stdout(sys.stderr):
        survey = generate_survey(root / "survey.h5", num, size=128, seed=seed, workers=1, progress=False)
    catalog = load_catalog(survey, tax)
    embed_survey(model, catalog, root / "emb", checkpoint=str(ckpt), data_source=str(survey), taxonomy=tax,
                 progress=True)
    return root / "emb"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=2000, help="galaxies to render and embed (without --embeddings)")
    ap.add_argument("--embeddings", help="an existing embeddings folder (`galaxalign embed` output) to fit instead")
    ap.add_argument("--components", default="1,2,4,8,16,32,64", help="mixture sizes to try")
    ap.add_argument("--covariance", default="full,tied", help="scikit-learn covariance types to try")
    ap.add_argument("--out", default=str(HERE / "embedding_gmm.npz"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from sklearn.mixture import GaussianMixture

    from galaxalign.search.difficulty import dataset_difficulty
    from galaxalign.search.embed import read_embeddings
    from galaxalign.search.index import normalize_rows

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        emb = Path(args.embeddings) if args.embeddings else embed_rendered_survey(args.num, Path(tmp), args.seed)
        table, vectors, manifest = read_embeddings(emb)
    x = normalize_rows(np.asarray(vectors, np.float64).astype(np.float32)).astype(np.float64)
    log(f"{len(x)} embeddings of dimension {x.shape[1]} in {time.perf_counter() - t0:.0f}s")
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(x))
    fit, held = x[perm[: int(0.8 * len(x))]], x[perm[int(0.8 * len(x)) :]]
    # OUR CHOICE: a small covariance floor, 1% of the mean per-dimension variance, so components fitted
    # on fewer points than dimensions stay positive definite without flattening their shape.
    reg = 0.01 * float(x.var(axis=0).mean())
    best = None
    for cov in args.covariance.split(","):
        for c in [int(s) for s in args.components.split(",")]:
            if c * 10 > len(fit):
                continue
            gm = GaussianMixture(c, covariance_type=cov, reg_covar=reg, random_state=args.seed, max_iter=200).fit(fit)
            score = float(gm.score(held))
            log(f"  {cov} covariance, {c} components: held-out log-likelihood {score:.1f} per vector")
            if best is None or score > best[0]:
                best = (score, c, cov)
    gm = GaussianMixture(best[1], covariance_type=best[2], reg_covar=reg, random_state=args.seed, max_iter=200).fit(x)
    # tied: one covariance shared by all components, stored once as a (1, D, D) factor
    chol = np.linalg.cholesky(gm.covariances_ if best[2] == "full" else gm.covariances_[None])
    real = dataset_difficulty(x.astype(np.float32), queries=min(200, len(x) // 10), seed=args.seed)
    # the same measures on as many samples of the fitted mixture: is the generator as hard as the data?
    sys.path.insert(0, str(HERE))
    from bench_index import sample_mixture

    fitted = dataset_difficulty(sample_mixture(gm.weights_, gm.means_, chol, len(x), seed=args.seed + 1),
                                queries=min(200, len(x) // 10), seed=args.seed)
    out = Path(args.out)
    np.savez_compressed(
        out, weights=gm.weights_.astype(np.float64), means=gm.means_.astype(np.float32),
        chol=chol.astype(np.float32),
        meta=json.dumps({"source": "offline model (EfficientNet-Lite0 + initial projection) embeddings of "
                                   f"{len(x)} galaxies rendered by galaxalign's survey generator (seed {args.seed})",
                         "count": int(len(x)), "dim": int(x.shape[1]), "components": int(best[1]), "covariance_type": best[2],
                         "sample_difficulty_same_n": fitted,
                         "reg_covar": reg, "heldout_loglik": best[0], "real_difficulty": real,
                         "checkpoint_kind": "offline", "data_source": manifest.get("data_source")}),
    )
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {best[1]} components ({best[2]}); difficulty of the real data {real}, of as many samples {fitted}")


if __name__ == "__main__":
    main()
