"""VoxCeleb1 face tracks as frames: ``<id>/<youtube_id>/<clip>/*.jpg`` (also the official
``unzippedIntervalFaces/data/<celebrity>/1.6/<youtube_id>/<clip>/*.jpg``). Unlabelled video: rows
have ``identity`` (the VoxCeleb id or celebrity name), ``clip`` = ``<id>/<youtube_id>/<clip>`` and
``frame`` = the number in the frame's file name (or its rank in sorted order when the name has no
number), so sorting by frame gives time order. The released frames are every 6th of 25 fps video
(SSL-FER assumes 25/6 frames per second).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workbench.config import param
from workbench.data.builders.base import BuildContext, Builder

NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class VoxCelebOptions:
    split: str = param("none", "'none' (pretraining data, default) or 'auto' (seeded identity-disjoint "
                       "train/val/test).", choices=("auto", "none"))
    seed: int = param(0, "Seed of --split auto.")
    min_frames: int = param(1, "Drop clips with fewer frames than this (temporal sampling needs >= 2).", min=1)


def build(ctx: BuildContext, opts: VoxCelebOptions) -> list[dict[str, Any]]:
    clips: dict[tuple[str, str, str], list[Any]] = {}
    for p in ctx.images():
        parts = p.relative_to(ctx.root).parts
        if len(parts) < 4:
            ctx.problem(p, "not at <id>/<youtube_id>/<clip>/<frame>.jpg")
            continue
        ident, yt, clip = parts[-4], parts[-3], parts[-2]
        if ident == "1.6" and len(parts) >= 5:  # unzippedIntervalFaces/data/<name>/1.6/<yt>/<clip>
            ident = parts[-5]
        clips.setdefault((ident, yt, clip), []).append(p)
    rows = []
    for (ident, yt, clip), files in sorted(clips.items()):
        if len(files) < opts.min_frames:
            ctx.count(f"dropped: clips with < {opts.min_frames} frames")
            continue
        nums = [NUMBER.search(f.stem) for f in files]
        if all(nums) and len({int(m.group(1)) for m in nums if m}) == len(files):
            order = sorted(zip((int(m.group(1)) for m in nums if m), files))
        else:
            order = list(enumerate(sorted(files)))
        for num, f in order:
            rows.append({"path": f, "identity": ident, "clip": f"{ident}/{yt}/{clip}", "frame": num})
    return rows


BUILDER = Builder(
    name="voxceleb1", build=build, options=VoxCelebOptions,
    description="VoxCeleb1 face-track frames: unlabelled clips of 1,251 celebrities (SSL-FER pretraining)",
    citation="Nagrani, Chung, Zisserman. VoxCeleb: a large-scale speaker identification dataset. Interspeech 2017.",
    layout="ROOT/<id>/<youtube_id>/<clip>/<frame>.jpg",
)
