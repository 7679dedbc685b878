"""``workbench synth``: generate the synthetic face set (images + manifest), optionally a contact sheet.

Examples::

    workbench synth --out data/synth                          # 24 ids x 24 images at 64 px
    workbench synth --out data/views --views 5                # multi-view groups (yaw -60..60)
    workbench synth --out data/clips --clips --clip-length 16 # neutral -> apex -> neutral clips
    workbench synth --out data/synth --contact-sheet          # also DIR/contact_sheet.png
    workbench synth --out figs --sheet-only                   # only the contact sheet
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from workbench.config import describe, from_dict


def register(sub: Any) -> None:
    """Add the ``synth`` sub-command (one flag per :class:`SynthConfig` field)."""
    from workbench.data.synth import SynthConfig

    p = sub.add_parser(
        "synth",
        help="generate the synthetic face set (images, 68 landmarks, manifest.csv)",
        description="Render parametric faces (identity x expression x pose x nuisance) into DIR/images and "
                    "write DIR/manifest.csv. Same seed -> byte-identical output.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    for spec in describe(SynthConfig):
        flag = "--" + spec.name.replace("_", "-")
        help_text = f"{spec.help} [default: {spec.default}]"
        if spec.type is bool or spec.type == "bool":
            p.add_argument(flag, dest=spec.name, action="store_true", default=None, help=help_text)
        else:
            metavar = {"int": "INT", "float": "FLOAT", "str": "STR"}.get(getattr(spec.type, "__name__", ""),
                                                                        "VALUE")
            p.add_argument(flag, dest=spec.name, default=None, metavar=metavar, help=help_text,
                           choices=list(spec.choices) if spec.choices else None)
    p.add_argument("--contact-sheet", action="store_true",
                   help="also write DIR/contact_sheet.png (rows: identities, columns: expressions at apex)")
    p.add_argument("--sheet-only", action="store_true", help="write only DIR/contact_sheet.png, no dataset")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the config from the flags, generate, print a one-line summary."""
    from workbench.data.synth import SynthConfig, generate_dataset, validate, write_contact_sheet
    from workbench.errors import ConfigError

    given = {spec.name: getattr(args, spec.name) for spec in describe(SynthConfig)
             if getattr(args, spec.name, None) is not None}
    cfg = validate(from_dict(SynthConfig, given))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    t0 = time.perf_counter()
    parts = []
    if not args.sheet_only:
        manifest = generate_dataset(cfg, out, progress=not args.quiet)
        parts.append(f"{cfg.total_images} images ({cfg.identities} identities, {cfg.size} px) -> {manifest}")
    if args.contact_sheet or args.sheet_only:
        sheet = write_contact_sheet(out / "contact_sheet.png", size=max(cfg.size, 96),
                                    identities=min(cfg.identities, 6), seed=cfg.seed)
        parts.append(f"contact sheet -> {sheet}")
    print(f"synth: {'; '.join(parts)} in {time.perf_counter() - t0:.1f} s")
    return 0
