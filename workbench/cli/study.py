"""`workbench study --out DIR`: every face-specific method against its generic baseline, over seeds."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from workbench.comparison import StudyConfig
    from workbench.config import add_arguments

    p = sub.add_parser("study", help="equal-budget study: face-specific vs generic SSL, seeds, intervals",
                       description="Pretrain every face-specific method and its generic baseline at an equal "
                                   "budget over several seeds, on the calibrated synthetic set and on real "
                                   "manifests, with floors, ceilings and 95% person-bootstrap intervals; writes "
                                   "study.md (tables, verdicts, the command) and study.csv.")
    p.add_argument("--out", default="runs/study", help="output folder [default: runs/study]")
    p.add_argument("--quiet", action="store_true")
    add_arguments(p, StudyConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.comparison import StudyConfig, run_study
    from workbench.config import args_to_dict, from_dict

    cfg = from_dict(StudyConfig, args_to_dict(args, StudyConfig))
    run_study(args.out, cfg, progress=not args.quiet)
    return 0
