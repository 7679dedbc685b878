"""`workbench attention RUN_DIR --data MANIFEST --out DIR`: Grad-CAM overlays and region scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.cli import seed_arg


def register(sub) -> None:
    p = sub.add_parser("attention", help="Grad-CAM on facial landmarks: overlays + region scores CSV",
                       description="Grad-CAM (captum LayerGradCam, bilinear, ReLU) of a run on a balanced set of "
                                   "faces with landmarks; attention mass per facial region normalised by area, "
                                   "pointing game against the regions each expression moves.")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="manifest with landmarks and expression")
    p.add_argument("--out", required=True)
    p.add_argument("--target", default="prototype", choices=("prototype", "identity", "view", "probe"),
                   help="what to explain: similarity to the expression prototype, to the identity centroid, "
                        "to another view, or the probe's class logit")
    p.add_argument("--per-expression", type=int, default=8, help="images per expression")
    p.add_argument("--layer", default=None, help="module to explain (default: a stage with >= 4x4 maps)")
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--recompute", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.analysis.study import attention_for_run

    res = attention_for_run(args.run_dir, args.data, target=args.target, checkpoint=args.checkpoint,
                            n_per_expression=args.per_expression, seed=args.seed, layer=args.layer,
                            recompute=args.recompute)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res.save_overlays(out / "overlays")
    res.scores.to_csv(out / "region_scores.csv", index=False)
    summary = res.summary()
    summary.to_csv(out / "region_summary.csv")
    print(summary.round(3).to_string())
    print(f"{len(res)} overlays → {out / 'overlays'}; scores → {out / 'region_scores.csv'}")
    return 0
