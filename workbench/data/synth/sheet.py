"""Contact sheet: identities x expressions at apex, for eyeballing the generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from workbench.data.synth.dataset import identity_name
from workbench.data.synth.render import render_face
from workbench.data.vocabulary import EXPRESSIONS


def contact_sheet(*, size: int = 96, identities: int = 4, seed: int = 0, yaw: float = 0.0) -> Image.Image:
    """The sheet as a PIL image: one row per identity, one column per expression (apex, frontal)."""
    head, left = 16, 44
    sheet = Image.new("RGB", (left + size * len(EXPRESSIONS), head + size * identities), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for c, expr in enumerate(EXPRESSIONS):
        draw.text((left + c * size + 3, 2), expr, fill=(20, 20, 20), font=font)
    for r in range(identities):
        draw.text((3, head + r * size + size // 2 - 6), identity_name(r, identities), fill=(20, 20, 20),
                  font=font)
        for c, expr in enumerate(EXPRESSIONS):
            img, _ = render_face(r, expr, 1.0, size=size, seed=seed, yaw=yaw)
            sheet.paste(Image.fromarray(np.ascontiguousarray(img)), (left + c * size, head + r * size))
    return sheet


def write_contact_sheet(out_path: str | Path, *, size: int = 96, identities: int = 4, seed: int = 0) -> Path:
    """Write a labelled PNG grid (rows: identities ``id000``.. of ``seed``; columns: the 8 expressions
    at apex, frontal, clean light). Returns the path. Use it to check that expressions read at a glance.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(size=size, identities=identities, seed=seed).save(out, format="PNG")
    return out
