"""`workbench finetune RUN_DIR --data MANIFEST`: supervised fine-tuning (CL-MEx stage 2), per-view scores."""

from __future__ import annotations

import argparse
import json

from workbench.cli import seed_arg


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a run's encoder + linear head on expression (per-view scores)",
                       description="Fine-tune the whole encoder of a run plus a linear head with cross-entropy on "
                                   "the expression column (subject-disjoint split), and report accuracy and "
                                   "macro-F1 overall and per view. --from-scratch trains the same architecture "
                                   "from random weights (the comparison CL-MEx makes). The result is saved in "
                                   "RUN_DIR/analysis/finetune-*/.")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="manifest CSV with expression (+ identity/split, view)")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, cosine to 0 (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--label-fraction", type=float, default=1.0, help="fraction of training labels (e.g. 0.1)")
    p.add_argument("--from-scratch", action="store_true", help="random init instead of the run's weights")
    p.add_argument("--no-augment", action="store_true", help="no augmentation while fine-tuning")
    p.add_argument("--checkpoint", default="last", help="'last', 'epoch-0003' or a path")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.device import select_device
    from workbench.runs import finetune_run, load_run

    device = select_device(args.device)
    run_ = load_run(args.run_dir, args.checkpoint, device=device)
    result = finetune_run(run_, args.data, epochs=args.epochs, lr=args.lr, label_fraction=args.label_fraction,
                      seed=args.seed, device=device, from_scratch=args.from_scratch, batch_size=args.batch_size,
                      augment=not args.no_augment, progress=not args.json)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{run_.path.name} [{result.checkpoint}] {result.summary()}")
        print(f"saved: {result.path}")
    return 0
