"""`workbench umap RUN_DIR [RUN_DIR...] --data MANIFEST --out DIR`: 2-D maps of embeddings."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.cli import seed_arg


def register(sub) -> None:
    p = sub.add_parser("umap", help="UMAP / PCA maps of one or more runs (or aligned over training)",
                       description="Seeded UMAP (or PCA) of run embeddings, persisted in each run's analysis/ "
                                   "folder; writes an interactive HTML plus PDF/SVG/PNG figures to --out.")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="umap", choices=("umap", "pca"))
    p.add_argument("--color", default="expression", help="metadata column: expression, identity, view, run...")
    p.add_argument("--facet", default=None, help="metadata column to facet on (default: run when several runs)")
    p.add_argument("--aligned", action="store_true", help="AlignedUMAP over the checkpoints of one run")
    p.add_argument("--style", default="double", choices=("single", "double", "slide"))
    p.add_argument("--seed", type=seed_arg, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.analysis.study import aligned_umap_over_training, umap_for_runs
    from workbench.errors import ConfigError

    if args.aligned:
        if len(args.run_dirs) != 1:
            raise ConfigError("--aligned takes exactly one run folder")
        emap = aligned_umap_over_training(args.run_dirs[0], args.data, seed=args.seed, progress=True)
        facet = args.facet or "epoch"
    else:
        emap = umap_for_runs(args.run_dirs, args.data, method=args.method, seed=args.seed, progress=True)
        facet = args.facet or ("run" if len(args.run_dirs) > 1 else None)
    paths = emap.export(Path(args.out), style=args.style, name=f"{emap.method}-{args.color}", color=args.color,
                        facet=facet)
    print(f"{len(emap.coords)} points → {', '.join(str(p) for p in paths.values())}")
    return 0
