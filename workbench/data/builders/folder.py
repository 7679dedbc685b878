"""Generic image folder: one sub-folder per class (``ROOT/<class>/**/*.jpg``), optionally below
split folders (``ROOT/train/<class>/...``, ``ROOT/test/<class>/...``), as many re-distributions of
FER2013, RAF-DB or CK+ on Kaggle are laid out. Class folder names become the ``expression``
(aliases understood, ``--label-map`` for others) or any other ``--label-column``.
"""

from __future__ import annotations

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
from workbench.data.splits import SPLIT_ALIASES
from workbench.errors import ConfigError


@dataclass
class FolderOptions(SplitOptions):
    label_map: str = param("", "Folder name -> label 'folder=label,...' or a .json/.yaml file "
                           "(e.g. '0=anger,1=disgust'); aliases like happy/angry are understood.")
    label_column: str = param("expression", "Column the folder names go to: expression (canonicalised), "
                              "identity, or a meta_* column.")
    split_folders: str = param("auto", "Top-level train/val/test folders: 'auto' (detected), 'yes', 'no'.",
                               choices=("auto", "yes", "no"))


def build(ctx: BuildContext, opts: FolderOptions) -> list[dict[str, Any]]:
    if opts.label_column not in ("expression", "identity") and not opts.label_column.startswith("meta_"):
        raise ConfigError("folder: --label-column must be expression, identity or a meta_* name")
    mapping = parse_mapping(opts.label_map)
    tops = sorted(d.name for d in ctx.root.iterdir() if d.is_dir() and not d.name.startswith("."))
    by_split = opts.split_folders == "yes" or (
        opts.split_folders == "auto" and tops and all(t.lower() in SPLIT_ALIASES for t in tops))
    rows = []
    for p in ctx.images():
        parts = p.relative_to(ctx.root).parts
        split = None
        if by_split:
            if len(parts) < 3 or parts[0].lower() not in SPLIT_ALIASES:
                ctx.problem(p, "not at <split>/<class>/<image>")
                continue
            split, parts = SPLIT_ALIASES[parts[0].lower()], parts[1:]
        if len(parts) < 2:
            ctx.problem(p, "image not inside a class folder")
            continue
        label = parts[0]
        row: dict[str, Any] = {"path": p}
        if opts.label_column == "expression":
            expr, why = expression_or_none(label, mapping)
            if expr is None:
                ctx.problem(p, f"folder '{label}': {why}")
                continue
            row["expression"] = expr
        else:
            row[opts.label_column] = mapping.get(label, label)
        if split:
            row["split"] = split
        rows.append(row)
    return rows


BUILDER = Builder(
    name="folder", build=build, options=FolderOptions,
    description="Generic: one folder per class (optionally under train/val/test folders)",
    citation="(generic layout; cite the dataset you use)",
    layout="ROOT/<class>/**/*.jpg or ROOT/<split>/<class>/**/*.jpg",
)
