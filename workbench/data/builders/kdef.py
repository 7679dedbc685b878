"""KDEF (Karolinska Directed Emotional Faces): 70 people x 7 expressions x 5 camera angles x 2
series. File code ``AF01ANFL.JPG`` = series A, female, person 01, expression AN, angle FL.

``view`` holds the camera angle as yaw in degrees, by the convention of the angle codes (not a
measured pose): **negative = the subject's left side of the face is shown** (FL full left profile
-90, HL half left -45), ``S`` straight 0, positive = the right side is shown (HR +45, FR +90).
``group`` = identity + series + expression (the 5 simultaneous views of one expression instance),
the positive set of CL-MEx-style multi-view contrastive learning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workbench.config import param
from workbench.data.builders.base import BuildContext, Builder, SplitOptions

EXPRESSIONS = {"AF": "fear", "AN": "anger", "DI": "disgust", "HA": "happiness", "NE": "neutral",
               "SA": "sadness", "SU": "surprise"}
ANGLES = {"FL": -90, "HL": -45, "S": 0, "HR": 45, "FR": 90}
PATTERN = re.compile(
    r"^(?P<series>[AB])(?P<sex>[FM])(?P<number>\d{2})(?P<code>[A-Z]{2})(?P<angle>FL|HL|S|HR|FR)\.\w+$",
    re.IGNORECASE)


@dataclass
class KDEFOptions(SplitOptions):
    views: str = param("degrees", "How to write the view column: 'degrees' (yaw -90..90, see the module "
                       "docstring for the sign) or 'codes' (FL, HL, S, HR, FR).", choices=("degrees", "codes"))


def build(ctx: BuildContext, opts: KDEFOptions) -> list[dict[str, Any]]:
    rows = []
    for p in ctx.images():
        m = PATTERN.match(p.name)
        if not m:
            ctx.problem(p, "file name does not follow KDEF naming 'AF01ANFL.JPG'")
            continue
        code, angle = m["code"].upper(), m["angle"].upper()
        if code not in EXPRESSIONS:
            ctx.problem(p, f"unknown KDEF expression code '{code}'")
            continue
        series, identity = m["series"].upper(), f"{m['sex'].upper()}{m['number']}"
        rows.append({
            "path": p, "expression": EXPRESSIONS[code], "identity": identity,
            "view": str(ANGLES[angle]) if opts.views == "degrees" else angle,
            "group": f"{identity}_{series}_{code}",
            "meta_series": series, "meta_sex": m["sex"].upper(), "meta_angle": angle,
        })
    return rows


def expected_names() -> set[str]:
    """The 4,900 file names of the full release: series A/B x 70 people (35 F, 35 M) x 7 x 5 angles."""
    return {f"{series}{sex}{number:02d}{code}{angle}" for series in "AB" for sex in "FM" for number in range(1, 36)
            for code in EXPRESSIONS for angle in ANGLES}


BUILDER = Builder(
    name="kdef", build=build, options=KDEFOptions, expected=4900, expected_names=expected_names,
    description="KDEF: 70 people x 7 expressions x 5 angles x 2 series (multi-view groups)",
    citation="Lundqvist, Flykt, Ohman. The Karolinska Directed Emotional Faces (KDEF). Karolinska Institutet, 1998.",
    layout="ROOT/**/AF01ANFL.JPG (series A/B, sex F/M, number, expression, angle FL/HL/S/HR/FR)",
)
