"""The 68-point iBUG 300-W landmark layout, facial parts, and the manifest encoding.

Indices are 0-based. "Right" is the subject's right (image left in a frontal view).
Landmarks are always (x, y) in pixel coordinates of the image they belong to; arrays have shape
``(68, 2)`` per face or ``(N, 68, 2)`` for a batch.

In a manifest, landmarks live in one column ``landmarks`` holding 136 numbers
``"x0 y0 x1 y1 ... x67 y67"`` (space separated), see :func:`format_landmarks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

N_LANDMARKS = 68

JAW = tuple(range(0, 17))
RIGHT_BROW = tuple(range(17, 22))
LEFT_BROW = tuple(range(22, 27))
NOSE_BRIDGE = tuple(range(27, 31))
LOWER_NOSE = tuple(range(31, 36))
NOSE = NOSE_BRIDGE + LOWER_NOSE
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_LIPS = tuple(range(48, 60))
INNER_LIPS = tuple(range(60, 68))
MOUTH = OUTER_LIPS + INNER_LIPS
BROWS = RIGHT_BROW + LEFT_BROW
EYES = RIGHT_EYE + LEFT_EYE

#: Named parts, used by part masking, local warping and attention scoring.
PARTS: dict[str, tuple[int, ...]] = {
    "jaw": JAW,
    "right_brow": RIGHT_BROW,
    "left_brow": LEFT_BROW,
    "brows": BROWS,
    "nose": NOSE,
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "eyes": EYES,
    "mouth": MOUTH,
}

#: Points used for similarity alignment (Matthew Earl's face swap ALIGN_POINTS: brows, eyes, nose, mouth).
ALIGN_POINTS: tuple[int, ...] = BROWS + EYES + NOSE + tuple(range(48, 61))


def index_span(idx: Sequence[int]) -> slice | None:
    """``idx`` as a slice when it is a contiguous ascending range (e.g. every PARTS entry but
    ALIGN_POINTS), else None. Indexing a tensor with the slice gives a view: no index tensor to
    copy to the device."""
    idx = tuple(int(i) for i in idx)
    if idx and idx == tuple(range(idx[0], idx[-1] + 1)):
        return slice(idx[0], idx[-1] + 1)
    return None


def format_landmarks(points: np.ndarray) -> str:
    """Encode a (68, 2) array as the manifest string ``"x0 y0 ... x67 y67"`` (2 decimals)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1)
    if pts.size != 2 * N_LANDMARKS:
        raise ValueError(f"expected 68 landmarks (136 numbers), got {pts.size} numbers")
    return " ".join(f"{v:.2f}" for v in pts)


#: largest accepted landmark coordinate magnitude in pixels (images are at most 16,384 px a side); larger
#: values are typos or hostile (1e300 would become inf in the float32 cache)
COORDINATE_LIMIT = 1e6


def parse_landmarks(value: object) -> np.ndarray | None:
    """Decode the manifest string into a float32 (68, 2) array; empty / NaN gives None.

    Raises ``ValueError`` with a short message when the string is malformed.
    """
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        nums = np.array([float(t) for t in text.replace(",", " ").split()], dtype=np.float64)
    except ValueError:
        raise ValueError("landmarks must be 136 numbers 'x0 y0 x1 y1 ...'") from None
    if nums.size != 2 * N_LANDMARKS:
        raise ValueError(f"landmarks must be 136 numbers, got {nums.size}")
    if not np.all(np.isfinite(nums)):
        raise ValueError("landmarks contain NaN or inf")
    if np.abs(nums).max() > COORDINATE_LIMIT:
        raise ValueError(f"landmark coordinates must lie within +-{COORDINATE_LIMIT:.0e} px")
    return nums.astype(np.float32).reshape(N_LANDMARKS, 2)


def inter_ocular_distance(points: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (36 and 45); works on (68,2) or (N,68,2)."""
    pts = np.asarray(points)
    return np.linalg.norm(pts[..., 36, :] - pts[..., 45, :], axis=-1)


def nose_asymmetry(points: np.ndarray) -> np.ndarray:
    """Where the nose tip (30) lies along the jaw line from point 0 to point 16, mapped to -1 .. 1
    (0 = half way, a frontal face; +-1 = at a jaw end; beyond +-1 = outside the jaw span). A yaw
    proxy that ignores in-plane rotation; works on (68, 2) or (N, 68, 2)."""
    pts = np.asarray(points, dtype=np.float64)
    axis = pts[..., 16, :] - pts[..., 0, :]
    t = ((pts[..., 30, :] - pts[..., 0, :]) * axis).sum(-1) / np.maximum((axis * axis).sum(-1), 1e-12)
    return 2.0 * t - 1.0
