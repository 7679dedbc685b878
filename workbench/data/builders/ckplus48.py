"""CK+48: the popular 48x48 crops of the last frames of CK+ sequences, one folder per expression:
``<expression>/S010_004_00000017.png`` = subject S010, sequence 004, frame 17."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workbench.config import param
from workbench.data.builders.base import (
    BuildContext,
    Builder,
    SplitOptions,
    expression_or_none,
    parse_mapping,
)

PATTERN = re.compile(r"^(?P<subject>S\d+)_(?P<sequence>\d+)_(?P<frame>\d+)\.\w+$", re.IGNORECASE)


@dataclass
class CKPlus48Options(SplitOptions):
    label_map: str = param("", "Extra folder-name mapping 'folder=expression,...' (happy, sadness... "
                           "are already understood).")


def build(ctx: BuildContext, opts: CKPlus48Options) -> list[dict[str, Any]]:
    mapping = parse_mapping(opts.label_map)
    rows = []
    bad_folders: dict[str, str] = {}
    for p in ctx.images():
        rel = p.relative_to(ctx.root)
        if len(rel.parts) < 2:
            ctx.problem(p, "image not inside an expression folder")
            continue
        folder = rel.parts[-2]
        expr, why = expression_or_none(folder, mapping)
        if expr is None:
            bad_folders[folder] = why
            ctx.problem(p, f"folder '{folder}': {why}")
            continue
        m = PATTERN.match(p.name)
        if not m:
            ctx.problem(p, "file name does not follow CK+ naming 'S010_004_00000017.png'")
            continue
        subject = m["subject"].upper()
        clip = f"{subject}_{m['sequence']}"
        rows.append({"path": p, "expression": expr, "identity": subject, "clip": clip,
                     "frame": int(m["frame"]), "view": "0"})
    return rows


BUILDER = Builder(
    name="ckplus48", expected=981, build=build, options=CKPlus48Options,
    description="CK+48: 48x48 crops of CK+ peak frames in one folder per expression",
    citation="Lucey et al. The Extended Cohn-Kanade Dataset (CK+). CVPR Workshops 2010.",
    layout="ROOT/<expression>/S010_004_00000017.png",
    spec="ckplus48",
)
