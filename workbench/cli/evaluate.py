"""`workbench evaluate RUN_DIR --data MANIFEST`: frozen-feature probes, several in one embedding pass."""

from __future__ import annotations

import argparse
import json

from workbench.cli import seed_arg

#: EvalConfig fields with their own flags below (several values / a seed check)
_OWN_FLAGS = ("protocol", "target", "seed")


def register(sub) -> None:
    from workbench.config import describe
    from workbench.evaluate.protocols import EvalConfig

    p = sub.add_parser("evaluate", help="linear probe / kNN on frozen features of a run",
                       description="Evaluate a run's frozen features with linear probes and/or weighted kNN, "
                                   "for one or several targets, from one embedding pass. Expression is "
                                   "evaluated subject-disjoint (person-wise k-fold CV when the test split has "
                                   "< 12 people); kNN excludes same-identity neighbours by default. Prints a "
                                   "table (accuracy, 95%% interval, test people, split rule); --json prints "
                                   "one JSON object per result.")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="manifest CSV")
    p.add_argument("--protocol", nargs="+", default=["linear"], choices=("linear", "knn"),
                   help="one or more protocols [default: linear]")
    p.add_argument("--target", nargs="+", default=["expression"],
                   choices=("expression", "identity", "valence", "arousal"),
                   help="one or more targets [default: expression]")
    p.add_argument("--by", default=None, metavar="COLUMN",
                   help="also give the accuracy per value of this manifest column (e.g. view)")
    p.add_argument("--checkpoint", default="last", help="'last', 'epoch-0003' or a path")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object per result (JSON lines)")
    group = p.add_argument_group("EvalConfig (the protocol's options)")
    for spec in describe(EvalConfig):
        if spec.name in _OWN_FLAGS:
            continue
        help_text = f"{spec.help} [default: {spec.default}]".replace("%", "%%")
        group.add_argument("--" + spec.name.replace("_", "-"), dest=spec.name, default=None,
                           choices=spec.choices, help=help_text)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.config import describe, from_dict
    from workbench.data.manifest import Manifest
    from workbench.evaluate.protocols import EvalConfig
    from workbench.evaluate.run_eval import accuracy_by
    from workbench.runs import evaluate_run, extract_embeddings, load_run

    options = {s.name: getattr(args, s.name) for s in describe(EvalConfig)
               if s.name not in _OWN_FLAGS and getattr(args, s.name, None) is not None}
    configs = [from_dict(EvalConfig, {**options, "protocol": p, "target": t, "seed": args.seed})
               for t in dict.fromkeys(args.target) for p in dict.fromkeys(args.protocol)]
    run_ = load_run(args.run_dir, args.checkpoint)
    manifest = Manifest.load(args.data)
    if args.by and args.by not in manifest.frame.columns:
        from workbench.errors import MissingMetadataError

        raise MissingMetadataError(f"--by {args.by}: the manifest has no '{args.by}' column")
    embeddings = extract_embeddings(run_, manifest)  # one pass for every protocol and target
    rows = []
    for cfg in configs:
        result = evaluate_run(run_, manifest, cfg, embeddings=embeddings)
        d = result.to_dict()
        d["run"], d["checkpoint"] = str(run_.path), run_.checkpoint.stem
        if args.by:
            d["by"] = {"column": args.by, "groups": accuracy_by(result, embeddings.meta, args.by)}
        rows.append(d)
    if args.json:
        for d in rows:
            print(json.dumps(d))
        return 0
    print(f"{run_.path.name} [{run_.checkpoint.stem}] on {manifest.path}")
    print(f"{'protocol':<8} {'target':<11} {'labels':>6}  {'score':>6}  {'95% interval':<16} {'chance':>6}  "
          f"{'test people':>11}  split")
    for d in rows:
        if d.get("accuracy") is not None:
            score, ci = f"{d['accuracy']:.3f}", f"[{d['ci_low']:.3f}, {d['ci_high']:.3f}]"
            chance = f"{d['chance']:.3f}"
        else:
            score, ci, chance = f"{d['ccc']:.3f}", "(CCC)", "–"
        print(f"{d['protocol']:<8} {d['target']:<11} {d['label_fraction']:>6g}  {score:>6}  {ci:<16} {chance:>6}  "
              f"{str(d.get('n_test_people') or '–'):>11}  {d.get('split_rule', '')}")
        for g, s in (d.get("by", {}).get("groups") or {}).items():
            print(f"{'':<8} {args.by}={g:<9} {'':>6}  {s['accuracy']:>6.3f}  [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
                  f"  n={s['n']}, people={s['people']}")
    return 0
