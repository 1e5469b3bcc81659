"""`galaxalign evaluate`: classification and similarity-search metrics of a checkpoint."""
from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (.pt) or exported model folder")
    parser.add_argument(
        "--data", default=None,
        help="'survey' (the embedded survey), a Galaxy10 .h5, a GZ2 catalog or a user catalog; "
        "default: the data the checkpoint was trained on",
    )
    parser.add_argument("--taxonomy", default=None, help="taxonomy name or YAML (default: the checkpoint's own)")
    parser.add_argument("--split", default="test", help="split whose galaxies are classified and used as queries")
    parser.add_argument("--gallery", default="train", help="split searched by the queries (relevant = same class)")
    parser.add_argument("--label-fraction", type=float, default=None,
                        help="labelled share of the TRAINING split the linear probe / k-NN learn from, whatever "
                        "--gallery is (default: the checkpoint's)")
    parser.add_argument("--knn-k", type=int, default=None, help="k of the k-NN classifier (default 10)")
    parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples for the 95%% intervals (default 1000)")
    parser.add_argument("--out", default=None, help="folder for report.json, report.md and plots (default: print only)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from galaxalign.cli.arguments import check_out_folder

    if args.out:
        check_out_folder(args.out)  # before the work, not after it
    from galaxalign.evaluation.bootstrap import N_RESAMPLES
    from galaxalign.evaluation.classifiers import KNN_K
    from galaxalign.evaluation.protocol import evaluate

    report = evaluate(
        args.checkpoint, args.data, args.out, split=args.split, gallery_split=args.gallery, taxonomy=args.taxonomy,
        label_fraction=args.label_fraction, knn_k=args.knn_k or KNN_K, n_resamples=args.bootstrap or N_RESAMPLES,
        progress=not args.quiet,
    )
    keys = ("primary_classifier", "accuracy", "macro_f1", "map", "map_at_10", "precision_at_10", "n_test", "n_gallery")
    figures = {k: report[k] for k in keys}
    fs = report.get("feature_search")
    if fs:  # the split carries per-galaxy answers: feature-search nDCG@10 of symbol and text queries
        figures.update({f"feature_search_{m}_ndcg_at_{fs['k']}": fs[m]["ndcg"] for m in ("symbol", "text")})
    print(json.dumps(figures))
    if args.out:
        print(f"wrote {args.out}/report.json, report.md and plots")
    return 0
