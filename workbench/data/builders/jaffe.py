"""JAFFE (Japanese Female Facial Expression): ``KA.AN1.39.tiff`` = identity KA, expression AN, take 1,
image number 39. 213 grey 256x256 images of 10 women, 7 posed expressions, frontal."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workbench.data.builders.base import BuildContext, Builder, SplitOptions

CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral",
         "SA": "sadness", "SU": "surprise"}
PATTERN = re.compile(r"^(?P<identity>[A-Za-z]{2})\.(?P<code>[A-Za-z]{2})(?P<take>\d+)\.(?P<number>\d+)\.\w+$")


@dataclass
class JaffeOptions(SplitOptions):
    """JAFFE has no official split: by default a seeded subject-disjoint one is written."""


def build(ctx: BuildContext, opts: JaffeOptions) -> list[dict[str, Any]]:
    rows = []
    for p in ctx.images():
        m = PATTERN.match(p.name)
        if not m:
            ctx.problem(p, "file name does not follow JAFFE naming 'KA.AN1.39.tiff'")
            continue
        code = m["code"].upper()
        if code not in CODES:
            ctx.problem(p, f"unknown JAFFE expression code '{code}'")
            continue
        rows.append({"path": p, "expression": CODES[code], "identity": m["identity"].upper(), "view": "0",
                     "meta_take": int(m["take"]), "meta_image_no": int(m["number"])})
    return rows


BUILDER = Builder(
    name="jaffe", expected=213, build=build, options=JaffeOptions,
    description="JAFFE: 213 posed images of 10 Japanese women, 7 expressions (file-name labels)",
    citation="Lyons, Akamatsu, Kamachi, Gyoba. Coding facial expressions with Gabor wavelets. FG 1998.",
    layout="ROOT/**/KA.AN1.39.tiff (identity.expression+take.number.tiff)",
)
