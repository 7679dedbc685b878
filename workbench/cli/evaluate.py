"""`workbench evaluate RUN_DIR --data MANIFEST`: frozen-feature linear probe or kNN."""

from __future__ import annotations

import argparse
import json

from workbench.cli import seed_arg


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="linear probe / kNN on frozen features of a run",
                       description="Evaluate a run's frozen features with a linear probe or weighted kNN. "
                                   "Expression is evaluated subject-disjoint; kNN excludes same-identity "
                                   "neighbours by default.")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="manifest CSV")
    p.add_argument("--protocol", default="linear", choices=("linear", "knn"))
    p.add_argument("--target", default="expression", choices=("expression", "identity", "valence", "arousal"))
    p.add_argument("--label-fraction", type=float, default=1.0, help="fraction of training labels (e.g. 0.01, 0.1)")
    p.add_argument("--checkpoint", default="last", help="'last', 'epoch-0003' or a path")
    p.add_argument("--feature", default="feats", choices=("feats", "z"))
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.config import from_dict
    from workbench.evaluate.protocols import EvalConfig
    from workbench.evaluate.run_eval import evaluate_run
    from workbench.train import load_run

    cfg = from_dict(EvalConfig, {"protocol": args.protocol, "target": args.target,
                                 "label_fraction": args.label_fraction, "feature": args.feature,
                                 "seed": args.seed})
    run_ = load_run(args.run_dir, args.checkpoint)
    result = evaluate_run(run_, args.data, cfg)
    d = result.to_dict()
    d["run"] = str(run_.path)
    d["checkpoint"] = run_.checkpoint.stem
    if args.json:
        print(json.dumps(d))
    else:
        main_metric = "accuracy" if d.get("accuracy") is not None else "ccc"
        print(f"{run_.path.name} [{run_.checkpoint.stem}] {cfg.protocol} {cfg.target} "
              f"(labels {cfg.label_fraction:g}): {main_metric} {d.get(main_metric)}")
    return 0
