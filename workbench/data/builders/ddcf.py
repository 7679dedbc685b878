"""DDCF (Dartmouth Database of Children's Faces): 80 children, 8 expressions, 5 camera angles,
2 lighting conditions.

**UNVERIFIED layout**: the file naming of the distribution (download on request) could not be
checked, so the builder parses file names with a configurable regular expression whose named
groups become columns: ``identity`` and ``expression`` (required), and optionally ``view``,
``lighting``, ``session``, ``take``. Check the first rows of the result against a few images.
``group`` = identity x expression x lighting x session (the simultaneous views of one shot).
"""

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
from workbench.errors import ConfigError

DEFAULT_PATTERN = (r"^(?P<identity>[A-Za-z]*\d+)[_-](?P<expression>[A-Za-z]+)[_-](?P<view>[A-Za-z0-9+-]+)"
                   r"(?:[_-](?P<lighting>[A-Za-z0-9]+))?\.\w+$")
#: guessed view codes -> yaw degrees (negative = subject's left side shown, as for KDEF)
DEFAULT_VIEWS = "left=-90,halfleft=-45,frontal=0,front=0,center=0,halfright=45,right=90"


@dataclass
class DDCFOptions(SplitOptions):
    pattern: str = param(DEFAULT_PATTERN, "Regex on the file name with named groups identity, expression "
                         "(required) and optional view, lighting, session, take. UNVERIFIED default.")
    label_map: str = param("", "Expression code mapping 'code=expression,...' (e.g. 'content=happiness' if "
                           "you decide so); common names/aliases are understood.")
    view_map: str = param(DEFAULT_VIEWS, "View code -> degrees 'code=deg,...'; codes not listed are kept as text.")


def build(ctx: BuildContext, opts: DDCFOptions) -> list[dict[str, Any]]:
    try:
        pattern = re.compile(opts.pattern)
    except re.error as exc:
        raise ConfigError(f"ddcf: --pattern is not a valid regular expression ({exc})") from None
    missing = {"identity", "expression"} - set(pattern.groupindex)
    if missing:
        raise ConfigError(f"ddcf: --pattern needs named groups {sorted(missing)} like (?P<identity>...)")
    labels = parse_mapping(opts.label_map)
    views = {k.lower(): v for k, v in parse_mapping(opts.view_map, what="view map").items()}
    rows = []
    for p in ctx.images():
        m = pattern.search(p.name)
        if not m:
            ctx.problem(p, "file name does not match --pattern")
            continue
        g = m.groupdict()
        expr, why = expression_or_none(g["expression"], labels)
        if expr is None:
            ctx.problem(p, why)
            continue
        row: dict[str, Any] = {"path": p, "expression": expr, "identity": g["identity"]}
        if g.get("view"):
            row["view"] = views.get(g["view"].lower(), g["view"])
        parts = [g["identity"], g["expression"]] + [g[k] for k in ("lighting", "session") if g.get(k)]
        row["group"] = "_".join(parts)
        for k in ("lighting", "session", "take"):
            if g.get(k):
                row[f"meta_{k}"] = g[k]
        rows.append(row)
    return rows


BUILDER = Builder(
    name="ddcf", build=build, options=DDCFOptions,
    description="DDCF: children's faces, 8 expressions x 5 angles x 2 lightings (UNVERIFIED naming: regex)",
    citation="Dalrymple, Gomez, Duchaine. The Dartmouth Database of Children's Faces. PLoS ONE 8(11), 2013.",
    layout="ROOT/**/<file names matched by --pattern (identity, expression, view, lighting)>",
)
