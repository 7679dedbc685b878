"""`workbench export RUN --out FILE.safetensors`: the trained backbone for plain timm."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("export", help="the trained backbone as a timm state dict (safetensors) + JSON card",
                       description="Write the run's backbone as a plain timm state dict that "
                                   "timm.create_model(NAME, num_classes=0) loads with strict=True, and a JSON "
                                   "card with the model name, input size, normalisation, provenance and the "
                                   "lines of code that load it.")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="output file, ending in .safetensors (the card is .json beside)")
    p.add_argument("--checkpoint", default="last", help="'last', 'epoch-0003' or a path [default: last]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from workbench.runs import export_backbone

    weights, card = export_backbone(args.run_dir, args.out, checkpoint=args.checkpoint)
    print(f"wrote {weights} and {card}; load it with:")
    for line in json.loads(card.read_text())["load"]:
        print("  " + line)
    return 0
