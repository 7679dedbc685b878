"""3D face geometry: the 68-point template of an identity, head rotation and projection.

Face frame: x to the image right, y down, z towards the camera; origin between the eyes on the eye
line; unit = half the face width of an average identity. Pose angles are in degrees:

- yaw > 0 turns the face towards the image right (the nose points right),
- pitch > 0 tilts the head up (chin up),
- roll > 0 rotates the face clockwise in the image.

The head rotates about a pivot near the centre of the head; projection is weak perspective
(orthographic, then scale and shift to pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from workbench.data.synth.identity import Identity

#: the rotation pivot in the face frame (roughly the centre of the head)
PIVOT = np.array([0.0, 0.35, -0.6])
#: head (skull) ellipsoid, relative to face_w for x: centre and radii
SKULL_CENTRE = np.array([0.0, -0.35, -0.65])
SKULL_RADII = np.array([1.03, 1.45, 1.25])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation (roll after pitch after yaw) for angles in degrees, conventions as documented."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class Camera:
    """Pose + weak-perspective projection into an image of ``size`` pixels.

    ``scale`` multiplies the default face scale; ``shift`` moves the face by a fraction of the image.
    Output coordinates are pixel coordinates with pixel centres at integers (the workbench landmark
    convention, see :mod:`workbench.data.images`): pixel ``(i, j)`` spans ``[i-0.5, i+0.5]``.
    """

    size: int
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)

    @property
    def pixels_per_unit(self) -> float:
        return 0.265 * self.size * self.scale

    @property
    def centre(self) -> tuple[float, float]:
        return (self.size * (0.5 + self.shift[0]) - 0.5, self.size * (0.4 + self.shift[1]) - 0.5)

    @cached_property
    def matrix(self) -> np.ndarray:
        return rotation(self.yaw, self.pitch, self.roll)

    @cached_property
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(3, 2) matrix and (2,) offset taking face-frame points straight to pixels."""
        s = self.pixels_per_unit
        m = self.matrix[:2].T * s
        off = np.asarray(self.centre) + s * (PIVOT[:2] - self.matrix[:2] @ PIVOT)
        return m, off

    def rotate(self, pts: np.ndarray) -> np.ndarray:
        """Face frame -> camera frame (still in face units)."""
        return (pts - PIVOT) @ self.matrix.T + PIVOT

    def project(self, pts: np.ndarray, *, body: bool = False) -> np.ndarray:
        """(N, 3) face-frame points -> (N, 2) pixel coordinates (``body``: no head rotation)."""
        pts = np.asarray(pts, dtype=np.float64)
        if body:
            return np.asarray(self.centre) + self.pixels_per_unit * pts[:, :2]
        m, off = self._affine
        return pts @ m + off


def face_depth(ident: Identity, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth (z) of the face surface at (x, y): a rounded front that falls back at the sides."""
    r = np.clip(1.0 - (x / (1.02 * ident.face_w)) ** 2, 0.0, None)
    z = 0.95 * r ** 0.75 - 0.35
    return z - 0.12 * np.clip(-y - 0.45, 0.0, None) - 0.05 * np.clip(y - 1.2, 0.0, None)


def skull_surface(ident: Identity, x: np.ndarray, y: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """Front z of the (optionally grown) skull ellipsoid at (x, y); 0-clamped outside."""
    c = SKULL_CENTRE
    rad = SKULL_RADII * np.array([ident.face_w, 1.0, 1.0]) + grow
    q = 1.0 - (x / rad[0]) ** 2 - ((y - c[1]) / rad[1]) ** 2
    return c[2] + rad[2] * np.sqrt(np.clip(q, 0.0, None))


@lru_cache(maxsize=4096)
def base_landmarks(ident: Identity) -> np.ndarray:
    """The identity's neutral 68 landmarks in 3D, float64 (68, 3), iBUG order."""
    p = np.zeros((68, 3))
    fw = ident.face_w
    # jaw 0..16: superellipse from the right ear to the chin to the left ear
    t = np.linspace(0.0, np.pi, 17)
    c, s = np.cos(t), np.sin(t)
    y0 = 0.02
    p[0:17, 0] = -np.sign(c) * np.abs(c) ** ident.jaw_px * fw
    p[0:17, 1] = y0 + (ident.chin_y - y0) * s ** ident.jaw_py
    # brows 17..21 (outer -> inner, subject's right) and mirrored 22..26
    u = np.linspace(0.0, 1.0, 5)
    bx = -(ident.brow_len + (0.16 - ident.brow_len) * u) * fw ** 0.5
    by = ident.brow_y - ident.brow_arch * (1 - ((u - 0.42) / 0.62) ** 2) + 0.06 * (1 - u) ** 2
    p[17:22, 0], p[17:22, 1] = bx, by
    p[22:27, 0], p[22:27, 1] = -bx[::-1], by[::-1]
    # nose bridge 27..30 and base 31..35
    nl = ident.nose_len
    p[27:31, 1] = np.array([-0.03, 0.22, 0.47, 0.72]) * nl
    p[31:36, 0] = np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * ident.nose_w
    p[31:36, 1] = nl + np.array([-0.07, -0.025, 0.0, -0.025, -0.07])
    # eyes: 36 outer, 37/38 upper, 39 inner, 40/41 lower (subject's right); mirrored for the left
    ex, ew = ident.eye_sep, ident.eye_w
    right = np.array([
        [-ex - ew, -ident.eye_tilt], [-ex - 0.35 * ew, -ident.eye_up], [-ex + 0.38 * ew, -ident.eye_up * 0.95],
        [-ex + ew, 0.01], [-ex + 0.35 * ew, ident.eye_lo], [-ex - 0.38 * ew, ident.eye_lo * 0.95],
    ])
    p[36:42, :2] = right
    left = right.copy()
    left[:, 0] *= -1
    p[42:48, :2] = left[[3, 2, 1, 0, 5, 4]]
    # mouth: outer 48..59, inner 60..67
    my, mw, lu, ll = ident.mouth_y, ident.mouth_w, ident.lip_up, ident.lip_lo
    outer = np.array([
        [-mw, 0.0], [-0.58 * mw, -0.75 * lu], [-0.22 * mw, -lu], [0.0, -0.82 * lu], [0.22 * mw, -lu],
        [0.58 * mw, -0.75 * lu], [mw, 0.0], [0.62 * mw, 0.78 * ll + 0.02], [0.27 * mw, ll + 0.03],
        [0.0, ll + 0.035], [-0.27 * mw, ll + 0.03], [-0.62 * mw, 0.78 * ll + 0.02],
    ])
    inner = np.array([
        [-0.86 * mw, 0.005], [-0.3 * mw, 0.018], [0.0, 0.02], [0.3 * mw, 0.018],
        [0.86 * mw, 0.005], [0.3 * mw, 0.018], [0.0, 0.02], [-0.3 * mw, 0.018],
    ])
    p[48:60, 0], p[48:60, 1] = outer[:, 0], my + outer[:, 1]
    p[60:68, 0], p[60:68, 1] = inner[:, 0], my + inner[:, 1]
    # depth
    p[:, 2] = face_depth(ident, p[:, 0], p[:, 1])
    p[36:48, 2] -= 0.06
    p[17:27, 2] += 0.02
    p[27:31, 2] += np.array([0.06, 0.15, 0.26, 0.4]) * (ident.nose_proj / 0.35)
    p[31:36, 2] += np.array([0.05, 0.12, 0.2, 0.12, 0.05]) * (ident.nose_proj / 0.35)
    p[48:60, 2] += 0.05
    p[60:68, 2] += 0.03
    p[6:11, 2] += 0.05
    return p


def sphere_points(n_lon: int = 16, n_lat: int = 9) -> np.ndarray:
    """Unit-sphere sample points (used for convex-hull silhouettes of head and hair)."""
    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    pts = np.stack([np.cos(la) * np.cos(lo), np.sin(la), np.cos(la) * np.sin(lo)], axis=-1).reshape(-1, 3)
    return np.unique(np.round(pts, 9), axis=0)


_SPHERE = {False: sphere_points(12, 7), True: sphere_points(20, 11)}


def ellipsoid_points(centre: np.ndarray, radii: np.ndarray, y_max: float | None = None, *,
                     fine: bool = False) -> np.ndarray:
    """Sample points of an ellipsoid, optionally only those above ``y_max`` (y < y_max).

    ``fine`` samples densely (smooth silhouettes for large images, slower convex hulls).
    """
    pts = centre + _SPHERE[fine] * radii
    if y_max is not None:
        pts = pts[pts[:, 1] < y_max]
    return pts


@lru_cache(maxsize=64)
def _cr_matrix(k: int, n: int, closed: bool) -> np.ndarray:
    """Linear map from K control points to the sampled Catmull-Rom curve."""
    t = np.arange(n) / n
    basis = 0.5 * np.stack([-t + 2 * t ** 2 - t ** 3, 2 - 5 * t ** 2 + 3 * t ** 3,
                            t + 4 * t ** 2 - 3 * t ** 3, -t ** 2 + t ** 3], axis=1)  # (n, 4)
    # extended control points as a (K+3, K) map
    if closed:
        ext = np.eye(k)[[k - 1, *range(k), 0, 1]]
    else:
        e = np.eye(k)
        ext = np.concatenate([2 * e[:1] - e[1:2], e, 2 * e[-1:] - e[-2:-1]])
    segs = k if closed else k - 1
    rows = []
    for i in range(segs):
        rows.append(basis @ ext[i:i + 4])
    out = np.concatenate(rows)
    return out if closed else np.concatenate([out, np.eye(k)[-1:]])


def catmull_rom(pts: np.ndarray, n: int = 4, closed: bool = False) -> np.ndarray:
    """A smooth curve through ``pts`` (K, D) with ``n`` samples per segment."""
    pts = np.asarray(pts, dtype=np.float64)
    return _cr_matrix(len(pts), n, closed) @ pts


def convex_hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull of 2D points as an (M, 2) polygon (Qhull; monotone chain for degenerate input)."""
    try:
        return pts[ConvexHull(pts).vertices]
    except QhullError:
        return _monotone_chain(pts)


def _monotone_chain(pts: np.ndarray) -> np.ndarray:
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    p = pts[order].tolist()
    if len(p) < 3:
        return np.asarray(p)

    def cross(o: list[float], a: list[float], b: list[float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[list[float]] = []
    for q in p:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], q) <= 0:
            lower.pop()
        lower.append(q)
    upper: list[list[float]] = []
    for q in reversed(p):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], q) <= 0:
            upper.pop()
        upper.append(q)
    return np.asarray(lower[:-1] + upper[:-1])
