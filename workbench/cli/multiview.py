"""`workbench multiview --out DIR`: CL-MEx on a multi-view set vs the same encoder from scratch."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from workbench.config import add_arguments
    from workbench.multiview import MultiViewConfig

    p = sub.add_parser("multiview", help="multi-view study: CL-MEx vs scratch, per view, seeds, intervals",
                       description="On a multi-view set (synthetic --views by default, or --manifest with group "
                                   "and view columns), for each seed: pretrain CL-MEx on the groups, fine-tune it "
                                   "and the same architecture from scratch at the same budget, and score frozen "
                                   "linear probes of it and of an untrained encoder; every accuracy overall and "
                                   "per view with its 95%% person-bootstrap interval. Writes multiview.md/.csv.")
    p.add_argument("--out", default="runs/multiview", help="output folder [default: runs/multiview]")
    p.add_argument("--quiet", action="store_true")
    add_arguments(p, MultiViewConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.config import args_to_dict, from_dict
    from workbench.multiview import MultiViewConfig, run_multiview_study

    cfg = from_dict(MultiViewConfig, args_to_dict(args, MultiViewConfig))
    run_multiview_study(args.out, cfg, progress=not args.quiet)
    return 0
