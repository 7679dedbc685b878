"""`workbench separation RUN_DIR --data MANIFEST`: does the embedding encode expression or identity?"""

from __future__ import annotations

import argparse
import json

from workbench.cli import seed_arg


def register(sub) -> None:
    p = sub.add_parser("separation", help="identity-vs-expression report of a run",
                       description="Expression and identity probes on the same embedding (identity leakage), "
                                   "cross-identity expression retrieval, variance shares and silhouettes. "
                                   "Persisted in RUN_DIR/analysis/; --track computes it at every checkpoint.")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="manifest with expression and identity columns")
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--feature", default="feats", choices=("feats", "z"))
    p.add_argument("--track", action="store_true", help="over all numbered checkpoints of the run")
    p.add_argument("--recompute", action="store_true", help="ignore persisted results")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.analysis.study import separation_for_run, separation_over_training

    if args.track:
        track = separation_over_training(args.run_dir, args.data, progress=True, feature=args.feature, seed=args.seed,
                                         recompute=args.recompute)
        frame = track.to_frame()
        print(json.dumps(frame.to_dict(orient="records")) if args.json else frame.to_string(index=False))
        return 0
    rep = separation_for_run(args.run_dir, args.data, checkpoint=args.checkpoint, feature=args.feature,
                             seed=args.seed, recompute=args.recompute)
    print(json.dumps({"run": args.run_dir, "checkpoint": args.checkpoint, **rep.metrics()}) if args.json
          else rep.summary())
    return 0
