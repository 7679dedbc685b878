"""RAF-DB basic: ``EmoLabel/list_patition_label.txt`` lines ``train_00001.jpg 5`` (the official file
name keeps the typo "patition"), images in ``Image/aligned/train_00001_aligned.jpg`` (100x100) or
``Image/original/train_00001.jpg``. The split comes from the file-name prefix (train/test)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import param
from workbench.data.builders.base import BuildContext, Builder, require_file

#: RAF-DB basic labels 1..7
LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
LAYOUT = ("ROOT/EmoLabel/list_patition_label.txt + ROOT/Image/aligned/<name>_aligned.jpg "
          "(or Image/original/<name>.jpg)")


@dataclass
class RafdbOptions:
    variant: str = param("aligned", "Which images: 'aligned' (100x100 official alignment, the usual "
                         "choice) or 'original' (full images; run `workbench faces` on them).",
                         choices=("aligned", "original"))
    label_file: str = param("EmoLabel/list_patition_label.txt", "Label list, relative to the root.")


def build(ctx: BuildContext, opts: RafdbOptions) -> list[dict[str, Any]]:
    label_file = require_file(ctx.find(opts.label_file, "basic/" + opts.label_file), "RAF-DB label file "
                              f"'{opts.label_file}'", LAYOUT)
    base = label_file.parent.parent  # the folder holding EmoLabel/ and Image/
    img_dir = base / "Image" / opts.variant
    require_file(img_dir, f"image folder Image/{opts.variant}", LAYOUT)
    rows = []
    try:
        lines = label_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        ctx.problem(label_file, f"cannot read ({exc.strerror})")
        return rows
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{ctx.show(label_file)}:{n}"
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in LABELS:
            ctx.problem(where, "expected '<name>.jpg <label 1-7>'")
            continue
        name = parts[0]
        split = "train" if name.startswith("train") else "test" if name.startswith("test") else None
        if split is None:
            ctx.problem(where, f"file name {name!r} does not start with train/test")
            continue
        stem = Path(name).stem
        img = img_dir / (f"{stem}_aligned.jpg" if opts.variant == "aligned" else name)
        if not img.is_file():
            ctx.problem(img, "image file not found")
            continue
        rows.append({"path": img, "split": split, "expression": LABELS[int(parts[1])]})
    return rows


BUILDER = Builder(
    name="rafdb", build=build, options=RafdbOptions,
    description="RAF-DB basic: 15k in-the-wild images, 7 expressions, official train/test",
    citation="Li, Deng, Du. Reliable Crowdsourcing and Deep Locality-Preserving Learning for Expression "
             "Recognition in the Wild. CVPR 2017.",
    layout=LAYOUT,
)
