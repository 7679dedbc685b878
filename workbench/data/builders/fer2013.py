"""FER2013: ``fer2013.csv`` with columns ``emotion, pixels, Usage`` (48x48 grey images as 2304
space-separated numbers). The builder writes each image as a PNG under the output manifest's folder
(``<images-dir>/<split>/<row>.png``; existing files are kept, so re-running is cheap).

Labels 0..6 = anger, disgust, fear, happiness, sadness, surprise, neutral. Usage: Training -> train,
PublicTest -> val, PrivateTest -> test.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import param
from workbench.data.builders.base import BuildContext, Builder, require_file

LABELS = {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise", 6: "neutral"}
USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
LAYOUT = "ROOT/fer2013.csv (columns emotion, pixels, Usage)"
SIDE = 48


@dataclass
class Fer2013Options:
    csv: str = param("fer2013.csv", "The FER2013 table, relative to the root (or absolute).")
    images_dir: str = param("fer2013_images", "Folder (relative to the output manifest) the PNGs are written to.")


def pixels_to_png(pixels: str, dest: Path) -> str:
    """Write a '2304 numbers' string as a 48x48 grey PNG; returns '' or the reason it failed."""
    from PIL import Image

    try:
        values = np.array([int(v) for v in pixels.split()], dtype=np.int64)
    except ValueError:
        return "pixels are not integers"
    if values.size != SIDE * SIDE:
        return f"pixels has {values.size} values, expected {SIDE * SIDE}"
    if values.min() < 0 or values.max() > 255:
        return "pixel values outside 0..255"
    if dest.is_file() and dest.stat().st_size > 0:
        return ""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    Image.fromarray(values.astype(np.uint8).reshape(SIDE, SIDE), "L").save(tmp, format="PNG")
    os.replace(tmp, dest)
    return ""


def resolve(ctx: BuildContext, name: str) -> Path | None:
    p = Path(name)
    if p.is_absolute():
        return p if p.exists() else None
    return ctx.find(name)


def images_dir(ctx: BuildContext, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else ctx.out_dir / p


def build(ctx: BuildContext, opts: Fer2013Options) -> list[dict[str, Any]]:
    table = require_file(resolve(ctx, opts.csv), f"FER2013 table '{opts.csv}'", LAYOUT)
    out_dir = images_dir(ctx, opts.images_dir)
    rows = []
    with open(table, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
        if not {"emotion", "pixels"} <= set(fields):
            ctx.problem(table, "missing columns emotion/pixels")
            return rows
        for i, rec in enumerate(reader):
            where = f"{ctx.show(table)}:{i + 2}"
            emo = (rec.get(fields["emotion"]) or "").strip()
            if not emo.isdigit() or int(emo) not in LABELS:
                ctx.problem(where, f"emotion {emo!r} is not 0-6")
                continue
            usage = (rec.get(fields.get("usage", ""), "") or "").strip().lower()
            split = USAGE.get(usage)
            if usage and split is None:
                ctx.problem(where, f"unknown Usage {usage!r}")
                continue
            dest = out_dir / (split or "unsplit") / f"{i:05d}.png"
            why = pixels_to_png(rec.get(fields["pixels"]) or "", dest)
            if why:
                ctx.problem(where, why)
                continue
            row = {"path": dest, "expression": LABELS[int(emo)], "meta_row": i}
            if split:
                row["split"] = split
            rows.append(row)
    return rows


BUILDER = Builder(
    name="fer2013", build=build, options=Fer2013Options,
    description="FER2013: 35,887 48x48 grey faces, 7 expressions, Training/PublicTest/PrivateTest",
    citation="Goodfellow et al. Challenges in Representation Learning: A report on three machine learning "
             "contests. ICONIP 2013.",
    layout=LAYOUT,
)
