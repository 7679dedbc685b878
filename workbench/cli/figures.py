"""`workbench figures RUN_DIR [RUN_DIR...] --data MANIFEST --out DIR`: the standard paper figure set."""

from __future__ import annotations

import argparse

from workbench.cli import seed_arg


def register(sub) -> None:
    from workbench.analysis.study import FIGURES

    p = sub.add_parser("figures", help="paper figures (PDF/SVG/PNG + CSV + JSON card) and a LaTeX table",
                       description="Training curves, probe comparison (95% CIs, chance levels), separation panels, "
                                   "UMAP panels and a Grad-CAM grid with region bars, in one colour-blind-safe "
                                   "style: single column, double column or slide.")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--figures", nargs="*", default=None, choices=FIGURES, help="subset to write [default: all]")
    p.add_argument("--style", default="double", choices=("single", "double", "slide"),
                   help="single column (3.5 in), double column (7.16 in) or slide (10 in) [default: double]")
    p.add_argument("--umap-method", default="umap", choices=("umap", "pca"))
    p.add_argument("--seed", type=seed_arg, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.analysis.study import write_figure_set

    written = write_figure_set(args.run_dirs, args.data, args.out, progress=True, figures=args.figures, style=args.style,
                               seed=args.seed, umap_method=args.umap_method)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
