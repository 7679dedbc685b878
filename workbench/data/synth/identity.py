"""Identities: the persistent face shape and appearance of one synthetic person.

An :class:`Identity` holds everything that stays fixed across a person's images: face and jaw shape,
feature sizes and spacing, skin tone, hair colour and style, brow thickness, eye colour, clothing,
glasses and facial hair. These are large, global cues, so identity dominates pixel variance while
expression only moves local geometry (as in real faces). :func:`make_identity` derives identity
``index`` from ``seed`` alone, so the same person appears in every dataset and preview with that seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

Colour = tuple[float, float, float]

#: seed-sequence tags that keep the random streams of identities, instances and images apart
TAG_IDENTITY, TAG_INSTANCE, TAG_IMAGE, TAG_SPLIT = 1, 2, 3, 4

HAIR_STYLES: tuple[str, ...] = ("short", "crop", "bob", "long", "curly", "bald")
_HAIR_STYLE_P = (0.3, 0.12, 0.16, 0.24, 0.12, 0.06)

_SKIN = np.array([(250, 222, 204), (238, 194, 165), (219, 168, 130), (188, 134, 96), (150, 100, 68),
                  (108, 70, 48), (80, 52, 38)], dtype=np.float64) / 255.0
_HAIR = np.array([(28, 24, 24), (58, 40, 30), (96, 64, 42), (138, 72, 38), (178, 130, 80),
                  (222, 190, 130), (168, 166, 160), (120, 40, 30)], dtype=np.float64) / 255.0
_HAIR_P = (0.24, 0.2, 0.16, 0.08, 0.1, 0.1, 0.07, 0.05)
_EYES = np.array([(78, 48, 28), (40, 28, 22), (70, 110, 160), (80, 115, 70), (120, 92, 48),
                  (112, 124, 136)], dtype=np.float64) / 255.0


@dataclass(frozen=True)
class Identity:
    """Persistent parameters of one synthetic person (face-frame units: 1 = half the face width)."""

    index: int
    # geometry
    face_w: float       # half-width of the face at the cheekbones (~1)
    jaw_px: float       # jaw squareness (lower = rounder, 0.55-0.95)
    jaw_py: float       # how late the jaw turns towards the chin (1.1-1.5)
    chin_y: float       # chin height below the eye line
    eye_sep: float      # half distance between the eye centres
    eye_w: float        # half eye width
    eye_up: float       # upper lid height above the corner line
    eye_lo: float       # lower lid depth below the corner line
    eye_tilt: float     # outer corners up (+) or down (-)
    brow_y: float       # brow height above the eye line (negative = up)
    brow_arch: float
    brow_thick: float
    brow_len: float     # how far out the brow reaches (x of the outer end)
    nose_len: float     # y of the nose base (point 33)
    nose_w: float       # half-width of the nostrils (points 31/35)
    nose_proj: float    # how far the tip sticks out
    mouth_y: float      # y of the lip corners
    mouth_w: float      # half mouth width
    lip_up: float       # upper lip height
    lip_lo: float       # lower lip height
    ear_size: float
    hairline: float     # y of the front hairline
    hair_volume: float
    fringe: float       # how far a fringe falls below the hairline (0 = none)
    part: float         # fringe/parting side (-1 .. 1)
    # appearance (RGB in [0, 1])
    skin: Colour
    hair: Colour
    brow: Colour
    lips: Colour
    iris: Colour
    clothing: Colour
    hair_style: str
    glasses: bool
    glasses_colour: Colour
    beard: float        # 0 = none, 0.3 = stubble, 1 = full beard
    mustache: bool

    @property
    def name(self) -> str:
        """Default identity label, e.g. ``id007``."""
        return f"id{self.index:03d}"


def _pick(rng: np.random.Generator, table: np.ndarray, p: tuple[float, ...] | None = None) -> np.ndarray:
    i = int(rng.choice(len(table), p=np.asarray(p) / np.sum(p) if p else None))
    return table[i]


def _interp(table: np.ndarray, t: float) -> np.ndarray:
    pos = t * (len(table) - 1)
    i = min(int(pos), len(table) - 2)
    f = pos - i
    return table[i] * (1 - f) + table[i + 1] * f


def _c(x: np.ndarray) -> Colour:
    v = np.clip(x, 0.0, 1.0)
    return (float(v[0]), float(v[1]), float(v[2]))


#: the population's average skin and hair colours (what ``diversity`` < 1 pulls every person towards)
_SKIN_MEAN = _interp(_SKIN, 1.3 / 2.9)
_HAIR_MEAN = (_HAIR * np.asarray(_HAIR_P)[:, None]).sum(axis=0) / np.sum(_HAIR_P)


def sample_identity(rng: np.random.Generator, index: int = 0, diversity: float = 1.0) -> Identity:
    """Draw one identity's parameters from ``rng`` (all draws happen in a fixed order).

    ``diversity`` scales how far skin and hair colours spread around the population mean (1 = the full
    world-wide range; 0.5 = a posed-expression set recorded in one place, such as JAFFE or CK+). It
    changes no random draw, so the same index is the same person (shape, style, extras) at any value.
    """
    u = rng.uniform
    face_w = u(0.9, 1.1)
    skin = _interp(_SKIN, float(rng.beta(1.3, 1.6))) * (1 + rng.normal(0, 0.03, 3))
    skin = skin * np.array([1.0, 1.0 + u(-0.03, 0.03), 1.0 + u(-0.05, 0.03)])
    skin = _SKIN_MEAN + diversity * (skin - _SKIN_MEAN)
    hair = _pick(rng, _HAIR, _HAIR_P) * u(0.8, 1.2) * (1 + rng.normal(0, 0.025, 3))
    hair = _HAIR_MEAN + diversity * (hair - _HAIR_MEAN)
    style = HAIR_STYLES[int(rng.choice(len(HAIR_STYLES), p=_HAIR_STYLE_P))]
    dark = hair.mean() < 0.3
    brow = (hair * 0.85 if dark else hair * 0.5 + np.array([0.1, 0.07, 0.05])) * (1 - 0.1 * float(u()))
    lips = skin * np.array([0.9, 0.62, 0.64]) + np.array([0.08, 0.0, 0.02]) * u(0.5, 1.2)
    iris = _pick(rng, _EYES) * u(0.8, 1.2) * (1 + rng.normal(0, 0.04, 3))
    hue = rng.uniform(0, 1)
    clothing = np.array([0.5 + 0.5 * np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)]) * u(0.25, 0.85)
    clothing = clothing * 0.8 + 0.2 * clothing.mean()
    glasses = bool(u() < 0.22)
    glasses_colour = _pick(rng, np.array([(0.08, 0.07, 0.07), (0.32, 0.2, 0.12), (0.62, 0.62, 0.64),
                                          (0.45, 0.12, 0.12)]))
    male_like = u() < 0.5
    beard = 0.0
    mustache = False
    if male_like and style in ("short", "crop", "bald", "curly"):
        r = u()
        beard = 1.0 if r < 0.22 else (0.35 if r < 0.4 else 0.0)
        mustache = bool(beard >= 1.0 or u() < 0.12)
    nose_len = u(0.62, 0.74)
    mouth_y = nose_len + u(0.22, 0.3)
    hairline = u(-1.1, -0.88) if style != "bald" else -1.2
    fringe = u(0.15, 0.42) if (style in ("bob", "long", "short") and u() < 0.4) else 0.0
    return Identity(
        index=index, face_w=face_w, jaw_px=u(0.55, 0.95), jaw_py=u(1.1, 1.5),
        chin_y=mouth_y + u(0.56, 0.7), eye_sep=u(0.42, 0.48), eye_w=u(0.185, 0.225),
        eye_up=u(0.065, 0.085), eye_lo=u(0.035, 0.05), eye_tilt=u(-0.015, 0.035),
        brow_y=u(-0.33, -0.25), brow_arch=u(0.03, 0.09), brow_thick=u(0.065, 0.13),
        brow_len=u(0.76, 0.86), nose_len=nose_len, nose_w=u(0.16, 0.23), nose_proj=u(0.28, 0.42),
        mouth_y=mouth_y, mouth_w=u(0.33, 0.43), lip_up=u(0.055, 0.09), lip_lo=u(0.09, 0.15),
        ear_size=u(0.85, 1.15), hairline=hairline,
        hair_volume=u(0.04, 0.14) if style != "curly" else u(0.22, 0.34),
        fringe=fringe, part=u(-1, 1),
        skin=_c(skin), hair=_c(hair), brow=_c(brow), lips=_c(lips), iris=_c(iris), clothing=_c(clothing),
        hair_style=style, glasses=glasses, glasses_colour=_c(glasses_colour), beard=beard,
        mustache=mustache,
    )


@lru_cache(maxsize=4096)
def make_identity(seed: int, index: int, diversity: float = 1.0) -> Identity:
    """Identity ``index`` of the population drawn with ``seed`` (colour spread ``diversity``, see
    :func:`sample_identity`; independent of every other setting)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, TAG_IDENTITY, int(index)])
    return sample_identity(np.random.Generator(np.random.PCG64(ss)), index, float(diversity))
