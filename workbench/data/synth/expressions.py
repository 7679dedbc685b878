"""Expressions as action units (AUs): prototypes, landmark motion per AU, circumplex positions.

Each canonical expression is a weighted set of FACS action units (EMFACS-style prototypes, see
:data:`ACTION_UNITS`). An AU moves a fixed set of the 68 iBUG landmarks in the frontal face frame
(x to the image right, y down, z towards the camera; unit = half the face width); the motion at
intensity ``i`` is ``i * weight * displacement``. Unilateral AUs carry a side suffix: ``AU12R`` is the
subject's right side (image left in a frontal view), ``AU12L`` the subject's left.
"""

from __future__ import annotations

import numpy as np

from workbench.data.vocabulary import EXPRESSIONS

#: Facial regions used as ground truth for attention scoring, in display order.
REGIONS: tuple[str, ...] = ("brows", "eyes", "nose", "mouth", "cheeks_jaw")

#: Landmark indices of each region ("cheeks_jaw" holds the jaw contour; the cheeks carry no landmark).
REGION_LANDMARKS: dict[str, tuple[int, ...]] = {
    "brows": tuple(range(17, 27)),
    "eyes": tuple(range(36, 48)),
    "nose": tuple(range(27, 36)),
    "mouth": tuple(range(48, 68)),
    "cheeks_jaw": tuple(range(0, 17)),
}

#: Expression -> AU weights (intensity 1 = apex). EMFACS prototypes as commonly cited, with the
#: variants noted: happiness 6+12 (+25 lips parted, so teeth show); sadness 1+4+15 (+17 chin raiser);
#: surprise 1+2+5+26; fear 1+2+4+5+7+20+26; disgust 9+15+16 (+10 upper lip raiser); anger
#: 4+5+7+23; contempt unilateral 12+14 (subject's right side by default); neutral none.
ACTION_UNITS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happiness": {"AU6": 1.0, "AU12": 1.0, "AU25": 0.7},
    "sadness": {"AU1": 1.0, "AU4": 0.6, "AU15": 1.0, "AU17": 0.5},
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU26": 1.0},
    "fear": {"AU1": 1.0, "AU2": 0.7, "AU4": 0.7, "AU5": 1.0, "AU7": 0.4, "AU20": 1.0, "AU26": 0.55},
    "disgust": {"AU9": 1.0, "AU10": 0.8, "AU15": 0.5, "AU16": 0.7},
    "anger": {"AU4": 1.0, "AU5": 0.5, "AU7": 1.0, "AU23": 1.0},
    "contempt": {"AU12R": 1.0, "AU14R": 1.0},
}

#: Expression -> (valence, arousal) at apex on Russell's circumplex, both in [-1, 1]. A convention of
#: this generator (placed after the usual circumplex drawings), not a measurement; images carry
#: ``intensity * position`` and neutral sits at the origin.
VALENCE_AROUSAL: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happiness": (0.8, 0.45),
    "sadness": (-0.65, -0.4),
    "surprise": (0.15, 0.85),
    "fear": (-0.6, 0.75),
    "disgust": (-0.7, 0.35),
    "anger": (-0.65, 0.7),
    "contempt": (-0.5, 0.2),
}

#: AU -> regions it moves (the drawn cheek raise of AU6/AU12 and jaw drop of AU26 count as cheeks_jaw).
AU_REGIONS: dict[str, tuple[str, ...]] = {
    "AU1": ("brows",), "AU2": ("brows",), "AU4": ("brows",),
    "AU5": ("eyes",), "AU6": ("eyes", "cheeks_jaw"), "AU7": ("eyes",),
    "AU9": ("nose", "mouth"), "AU10": ("mouth",),
    "AU12": ("mouth", "cheeks_jaw"), "AU14": ("mouth",), "AU15": ("mouth",), "AU16": ("mouth",),
    "AU17": ("mouth",), "AU20": ("mouth",), "AU23": ("mouth",), "AU25": ("mouth",),
    "AU26": ("mouth", "cheeks_jaw"),
}


def _au_base(name: str) -> str:
    return name[:-1] if name[-1] in "RL" else name


def _moving_regions(aus: dict[str, float]) -> tuple[str, ...]:
    hit = {r for au in aus for r in AU_REGIONS[_au_base(au)]}
    if any(_au_base(au) == "AU12" for au in aus) and all(au.endswith(("R", "L")) for au in aus):
        hit.discard("cheeks_jaw")  # a one-sided smirk barely lifts the cheek
    return tuple(r for r in REGIONS if r in hit)


#: Expression -> facial regions its AUs move: the ground truth for "attention on the moving regions".
MOVING_REGIONS: dict[str, tuple[str, ...]] = {e: _moving_regions(ACTION_UNITS[e]) for e in EXPRESSIONS}

# mirrored landmark pairs (subject's right, subject's left)
_MIRROR = {
    **{i: 16 - i for i in range(17)},
    17: 26, 18: 25, 19: 24, 20: 23, 21: 22,
    31: 35, 32: 34,
    36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46,
    48: 54, 49: 53, 50: 52, 59: 55, 58: 56, 60: 64, 61: 63, 67: 65,
}
_MIRROR.update({v: k for k, v in list(_MIRROR.items())})
for _i in (27, 28, 29, 30, 33, 51, 57, 62, 66, 8):
    _MIRROR[_i] = _i


def _motion(spec: dict[int, tuple[float, float, float]], side: str = "both") -> np.ndarray:
    """Build a (68, 3) displacement from right-side (or midline) indices -> (outward dx, dy, dz).

    ``outward`` is away from the midline (negative x on the subject's right). ``side`` restricts the
    motion to one half ("R" = subject's right, "L" = subject's left) for unilateral AUs.
    """
    d = np.zeros((68, 3), dtype=np.float64)
    for i, (dx, dy, dz) in spec.items():
        j = _MIRROR[i]
        if i == j:  # midline point: no sideways motion unless unilateral
            shift = 0.0 if side == "both" else (-dx if side == "R" else dx) * 0.5
            d[i] += (shift, dy * (1.0 if side == "both" else 0.5), dz)
            continue
        if side in ("both", "R"):
            d[i] += (-dx, dy, dz)
        if side in ("both", "L"):
            d[j] += (dx, dy, dz)
    return d


_AU_SPECS: dict[str, dict[int, tuple[float, float, float]]] = {
    # brows
    "AU1": {21: (0.0, -0.15, 0.0), 20: (0.0, -0.11, 0.0), 19: (0.0, -0.05, 0.0)},
    "AU2": {17: (0.0, -0.14, 0.0), 18: (0.0, -0.13, 0.0), 19: (0.0, -0.09, 0.0), 20: (0.0, -0.04, 0.0)},
    "AU4": {21: (-0.06, 0.12, 0.0), 20: (-0.045, 0.105, 0.0), 19: (-0.03, 0.08, 0.0),
            18: (-0.01, 0.055, 0.0), 17: (0.0, 0.035, 0.0), 37: (0.0, 0.012, 0.0), 38: (0.0, 0.012, 0.0)},
    # lids
    "AU5": {37: (0.0, -0.065, 0.0), 38: (0.0, -0.07, 0.0)},
    "AU6": {40: (0.0, -0.045, 0.0), 41: (0.0, -0.045, 0.0), 36: (0.0, -0.012, 0.0)},
    "AU7": {40: (0.0, -0.05, 0.0), 41: (0.0, -0.05, 0.0), 37: (0.0, 0.015, 0.0), 38: (0.0, 0.015, 0.0)},
    # nose and upper lip
    "AU9": {31: (0.02, -0.08, 0.0), 32: (0.0, -0.065, 0.0), 33: (0.0, -0.045, 0.0), 30: (0.0, -0.025, 0.0),
            49: (0.0, -0.05, 0.0), 50: (0.0, -0.055, 0.0), 51: (0.0, -0.05, 0.0),
            61: (0.0, -0.03, 0.0), 62: (0.0, -0.03, 0.0),
            21: (0.0, 0.025, 0.0), 20: (0.0, 0.015, 0.0), 40: (0.0, -0.015, 0.0), 41: (0.0, -0.015, 0.0)},
    "AU10": {49: (0.0, -0.075, 0.0), 50: (0.0, -0.085, 0.0), 51: (0.0, -0.08, 0.0),
             61: (0.0, -0.075, 0.0), 62: (0.0, -0.075, 0.0), 48: (0.0, -0.02, 0.0), 60: (0.0, -0.025, 0.0),
             31: (0.0, -0.015, 0.0)},
    # lip corners and lips
    "AU12": {48: (0.08, -0.12, -0.03), 60: (0.07, -0.11, -0.03), 49: (0.04, -0.05, 0.0),
             59: (0.04, -0.05, 0.0), 50: (0.01, -0.015, 0.0), 58: (0.015, -0.01, 0.0),
             61: (0.02, -0.03, 0.0), 67: (0.02, -0.03, 0.0)},
    "AU14": {48: (-0.035, -0.015, -0.03), 60: (-0.03, -0.012, -0.03), 49: (-0.015, 0.0, 0.0),
             59: (-0.015, 0.0, 0.0)},
    "AU15": {48: (0.0, 0.095, 0.0), 60: (0.0, 0.085, 0.0), 49: (0.0, 0.03, 0.0), 59: (0.0, 0.04, 0.0),
             61: (0.0, 0.02, 0.0), 67: (0.0, 0.02, 0.0)},
    "AU16": {57: (0.0, 0.06, 0.0), 58: (0.0, 0.06, 0.0), 59: (0.0, 0.035, 0.0),
             66: (0.0, 0.055, 0.0), 67: (0.0, 0.05, 0.0)},
    "AU17": {57: (0.0, -0.03, 0.03), 58: (0.0, -0.025, 0.02), 59: (0.0, -0.01, 0.0),
             66: (0.0, -0.01, 0.0), 67: (0.0, -0.01, 0.0), 8: (0.0, -0.03, 0.02), 7: (0.0, -0.02, 0.0)},
    "AU20": {48: (0.09, 0.015, 0.0), 60: (0.08, 0.01, 0.0), 49: (0.05, 0.0, 0.0), 59: (0.05, 0.0, 0.0),
             50: (0.02, 0.015, 0.0), 58: (0.02, -0.015, 0.0), 51: (0.0, 0.015, 0.0), 57: (0.0, -0.015, 0.0)},
    "AU23": {48: (-0.055, 0.0, 0.0), 60: (-0.045, 0.0, 0.0), 49: (-0.03, 0.025, 0.0),
             59: (-0.03, -0.025, 0.0), 50: (0.0, 0.035, 0.0), 51: (0.0, 0.035, 0.0),
             58: (0.0, -0.04, 0.0), 57: (0.0, -0.04, 0.0), 61: (0.0, 0.005, 0.0), 62: (0.0, 0.005, 0.0),
             67: (0.0, -0.01, 0.0), 66: (0.0, -0.01, 0.0)},
    "AU25": {66: (0.0, 0.045, 0.0), 67: (0.0, 0.04, 0.0), 57: (0.0, 0.04, 0.0), 58: (0.0, 0.04, 0.0),
             59: (0.0, 0.025, 0.0), 61: (0.0, -0.01, 0.0), 62: (0.0, -0.01, 0.0)},
    # jaw drop: chin, lower lip and mouth opening
    "AU26": {8: (0.0, 0.26, -0.06), 7: (0.0, 0.245, -0.06), 6: (0.0, 0.2, -0.05), 5: (0.0, 0.14, -0.04),
             4: (0.0, 0.08, -0.02), 3: (0.0, 0.035, 0.0),
             57: (0.0, 0.25, -0.04), 58: (0.0, 0.24, -0.04), 59: (0.0, 0.19, -0.03),
             66: (0.0, 0.22, -0.05), 67: (0.0, 0.2, -0.05),
             48: (-0.04, 0.09, 0.0), 60: (-0.035, 0.09, 0.0), 49: (0.0, 0.01, 0.0),
             61: (0.0, -0.01, 0.0), 62: (0.0, -0.01, 0.0)},
}

#: AU name -> (68, 3) landmark displacement at weight 1 (face-frame units, see the module docstring).
AU_MOTION: dict[str, np.ndarray] = {}
for _name, _spec in _AU_SPECS.items():
    AU_MOTION[_name] = _motion(_spec)
for _name in ("AU12", "AU14", "AU15", "AU20"):
    AU_MOTION[_name + "R"] = _motion(_AU_SPECS[_name], side="R")
    AU_MOTION[_name + "L"] = _motion(_AU_SPECS[_name], side="L")


def expression_aus(expression: str, intensity: float = 1.0, *, contempt_side: str = "right") -> dict[str, float]:
    """AU activations of ``expression`` at ``intensity`` (0..1); ``contempt_side``: "right" or "left"."""
    aus = {k: v * float(intensity) for k, v in ACTION_UNITS[expression].items()}
    if contempt_side == "left":
        aus = {(k[:-1] + "L" if k.endswith("R") else k): v for k, v in aus.items()}
    return aus


def au_displacement(aus: dict[str, float]) -> np.ndarray:
    """Sum of the (68, 3) landmark displacements of the given AU activations."""
    d = np.zeros((68, 3), dtype=np.float64)
    for name, w in aus.items():
        if w:
            d += w * AU_MOTION[name]
    return d


def valence_arousal(expression: str, intensity: float) -> tuple[float, float]:
    """The circumplex position of ``expression`` scaled by ``intensity`` (neutral: (0, 0))."""
    v, a = VALENCE_AROUSAL[expression]
    return v * float(intensity), a * float(intensity)
