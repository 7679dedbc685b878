"""`workbench demo --out DIR`: the whole loop on the embedded synthetic face set."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from workbench.config import add_arguments
    from workbench.demo import DemoConfig

    p = sub.add_parser("demo", help="synth → generic vs face-specific SSL → probes with intervals → table",
                       description="Generate calibrated synthetic faces, pretrain generic SSL methods and their "
                                   "face-specific counterparts at an equal budget, and read expression and "
                                   "identity probes (95% person-bootstrap intervals) between floors (raw "
                                   "pixels, random init) and ceilings (landmark geometry, supervised).")
    p.add_argument("--out", default="runs/demo", help="output folder [default: runs/demo]")
    p.add_argument("--quiet", action="store_true")
    add_arguments(p, DemoConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.config import args_to_dict, from_dict
    from workbench.demo import DemoConfig, run_demo

    cfg = from_dict(DemoConfig, args_to_dict(args, DemoConfig))
    run_demo(args.out, cfg, progress=not args.quiet)
    return 0
