"""Rendering: filled polygons with PIL at supersampling, then shading, lighting, blur and noise in numpy.

Drawing goes back to front (background, clothing, hair behind the head, neck, head, ears, hair cap,
face, hair beside the face, wrinkles, beard, eyes, brows, mouth, nose, moustache, fringe, glasses), so
parts turned away from the camera end up covered. Landmarks are the projected 3D landmarks after
pose, scale and shift, in pixel coordinates of the output image with pixel centres at integers (the
workbench convention); points turned away from the camera are still given (projected through).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from workbench.data.synth.expressions import au_displacement, expression_aus
from workbench.data.synth.geometry import (
    PIVOT,
    SKULL_CENTRE,
    SKULL_RADII,
    Camera,
    base_landmarks,
    catmull_rom,
    convex_hull,
    ellipsoid_points,
    face_depth,
    skull_surface,
)
from workbench.data.synth.identity import Colour, Identity, make_identity
from workbench.data.vocabulary import canonical_expression

Fill = tuple[int, int, int] | tuple[int, int, int, int]
Project = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Nuisance:
    """Per-image conditions that carry neither identity nor expression. Defaults = a clean studio shot."""

    bg_top: Colour = (0.62, 0.64, 0.66)       # background colour at the gradient start (RGB 0..1)
    bg_bottom: Colour = (0.5, 0.52, 0.55)     # ... and at its end
    bg_angle: float = 0.0                     # gradient direction (radians, 0 = top to bottom)
    light: tuple[float, float] = (-0.35, -0.35)  # light direction (x, y) in the image; z = 1 (frontal)
    shading: float = 0.45                     # strength of the 3D shading on the head (0 = flat)
    gradient: float = 0.0                     # linear lighting gradient across the image (0..0.4)
    gradient_angle: float = 0.0
    tint: Colour = (1.0, 1.0, 1.0)            # colour temperature multipliers
    brightness: float = 1.0
    scale: float = 1.0                        # face scale multiplier
    shift: tuple[float, float] = (0.0, 0.0)   # face shift, fraction of the image size
    blur: float = 0.0                         # Gaussian blur sigma in output pixels
    noise: float = 0.0                        # Gaussian noise std in 0..255 units


def sample_nuisance(rng: np.random.Generator, *, background: float = 0.5, lighting: float = 0.5,
                    scale_jitter: float = 0.05, shift_jitter: float = 0.03, blur_max: float = 0.6,
                    noise_max: float = 4.0) -> Nuisance:
    """Draw random nuisance from ``rng``; a strength of 0 turns that factor off (fixed draw order)."""
    u = rng.uniform
    hue = u(0, 1)
    colour = np.array([0.5 + 0.5 * np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)])
    top = np.array([0.58, 0.6, 0.62]) + background * (0.3 * (colour - 0.5) * u(0, 1) + u(-0.2, 0.2))
    bottom = top * (1 - background * u(0.0, 0.35))
    ang = u(-np.pi, np.pi)
    light = (lighting * u(-1.0, 1.0), lighting * u(-0.9, 0.4) - 0.1)
    gradient = lighting * u(0.0, 0.3)
    gangle = u(-np.pi, np.pi)
    tint = 1 + lighting * np.array([u(-0.06, 0.06), 0.0, u(-0.06, 0.06)])
    brightness = 1 + lighting * u(-0.2, 0.12)
    scale = 1 + scale_jitter * u(-1, 1)
    shift = (shift_jitter * u(-1, 1), shift_jitter * u(-1, 1))
    blur = blur_max * u() ** 2
    noise = noise_max * u()
    return Nuisance(
        bg_top=_col(top), bg_bottom=_col(bottom), bg_angle=float(ang), light=light, shading=0.45,
        gradient=float(gradient), gradient_angle=float(gangle), tint=_col(tint, 2.0),
        brightness=float(brightness), scale=float(scale), shift=shift, blur=float(blur), noise=float(noise),
    )


def _col(x: np.ndarray, hi: float = 1.0) -> Colour:
    v = np.clip(x, 0.0, hi)
    return (float(v[0]), float(v[1]), float(v[2]))


def _u8(x: float) -> int:
    return 0 if x <= 0 else (255 if x >= 255 else int(x + 0.5))


def _rgb(c: Colour | np.ndarray, f: float = 1.0, alpha: float | None = None) -> Fill:
    r, g, b = (float(c[0]) * f * 255.0, float(c[1]) * f * 255.0, float(c[2]) * f * 255.0)
    if alpha is None:
        return (_u8(r), _u8(g), _u8(b))
    return (_u8(r), _u8(g), _u8(b), _u8(alpha * 255.0))


class _Canvas:
    """PIL canvas at ``k``x supersampling taking continuous output-pixel coordinates."""

    def __init__(self, size: int, k: int, bg: np.ndarray):
        self.k = k
        self.img = Image.fromarray(bg)
        if k > 1:
            self.img = self.img.resize((size * k, size * k), Image.Resampling.NEAREST)
        self.opaque = ImageDraw.Draw(self.img)
        self.blend = ImageDraw.Draw(self.img, "RGBA")  # alpha compositing: twice as slow, only for RGBA fills
        self.mask = Image.new("L", (size * k, size * k), 0)
        self.mdraw = ImageDraw.Draw(self.mask)

    def _xy(self, pts: np.ndarray) -> list[float]:
        # output pixel centre i sits at k*i + (k-1)/2 on the supersampled canvas
        return ((pts + 0.5) * self.k - 0.5).ravel().tolist()

    def poly(self, pts: np.ndarray, fill: Fill, *, mask: bool = False) -> None:
        if len(pts) < 3:
            return
        xy = self._xy(pts)
        (self.blend if len(fill) == 4 else self.opaque).polygon(xy, fill=fill)
        if mask:
            self.mdraw.polygon(xy, fill=255)

    def line(self, pts: np.ndarray, fill: Fill, width: float, *, closed: bool = False) -> None:
        xy = self._xy(pts)
        if closed:
            xy = xy + xy[:2]
        draw = self.blend if len(fill) == 4 else self.opaque
        draw.line(xy, fill=fill, width=max(1, int(round(width * self.k))), joint="curve")

    def ellipse(self, centre: np.ndarray, rx: float, ry: float, fill: Fill) -> None:
        cx, cy = (float(centre[0]) + 0.5) * self.k - 0.5, (float(centre[1]) + 0.5) * self.k - 0.5
        rx, ry = max(rx * self.k, 0.5), max(ry * self.k, 0.5)
        (self.blend if len(fill) == 4 else self.opaque).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)


def _up(pts: np.ndarray, d: float | np.ndarray) -> np.ndarray:
    """Shift face-frame points along y (negative = up)."""
    out = pts.copy()
    out[:, 1] += d
    return out


def _xyz(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)], axis=1)


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _background(size: int, nz: Nuisance) -> np.ndarray:
    yy, xx = _grid(size)
    t = ((xx - size / 2) * np.sin(nz.bg_angle) + (yy - size / 2) * np.cos(nz.bg_angle)) / size + 0.5
    t = np.clip(t, 0, 1)[..., None]
    top, bottom = np.asarray(nz.bg_top, np.float32), np.asarray(nz.bg_bottom, np.float32)
    return (np.clip(top * (1 - t) + bottom * t, 0, 1) * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------- public


def render_aus(ident: Identity, aus: dict[str, float], camera: Camera, nuisance: Nuisance | None = None, *,
               supersample: int = 3, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render ``ident`` with AU activations ``aus`` seen by ``camera``: (uint8 (S,S,3), float32 (68,2)).

    ``rng`` only feeds the pixel noise (none when omitted).
    """
    nz = nuisance or Nuisance()
    size, k = camera.size, int(supersample)
    lm3 = base_landmarks(ident) + au_displacement(aus) * ident.face_w
    cv = _Canvas(size, k, _background(size, nz))
    _draw_face(cv, ident, aus, lm3, camera)
    img = cv.img.reduce(k) if k > 1 else cv.img
    mask = cv.mask.reduce(k) if k > 1 else cv.mask
    out = _finish(np.asarray(img, dtype=np.float32) / 255.0, np.asarray(mask, dtype=np.float32) / 255.0,
                  ident, camera, nz, rng)
    return out, camera.project(lm3).astype(np.float32)


def render_face(identity: int | Identity = 0, expression: str = "neutral", intensity: float = 1.0, *,
                yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, size: int = 64, seed: int = 0,
                supersample: int = 3, nuisance: Nuisance | None = None, contempt_side: str = "right",
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render one face: returns uint8 RGB (size, size, 3) and float32 (68, 2) landmarks in pixels.

    ``identity`` is an :class:`Identity` or an index into the population of ``seed`` (the same person
    as ``idNNN`` in a dataset generated with that seed). ``expression`` accepts aliases; ``intensity``
    0..1 scales its action units (1 = apex). Pose in degrees (signs: see :mod:`.geometry`).
    ``nuisance`` defaults to a clean studio shot; ``rng`` only adds pixel noise. Use ``supersample``
    3-4 for smooth edges (2 is faster and a little jaggier).
    """
    ident = identity if isinstance(identity, Identity) else make_identity(seed, int(identity))
    expr = canonical_expression(expression)
    aus = expression_aus(expr, intensity, contempt_side=contempt_side)
    nz = nuisance or Nuisance()
    cam = Camera(size=int(size), yaw=yaw, pitch=pitch, roll=roll, scale=nz.scale, shift=nz.shift)
    return render_aus(ident, aus, cam, nz, supersample=supersample, rng=rng)


# --------------------------------------------------------------------------------------------- identity parts


@dataclass(frozen=True)
class _Parts:
    """Face-frame geometry that depends on the identity only (computed once per identity)."""

    shoulders: np.ndarray
    neck: np.ndarray
    collar: np.ndarray
    back_hair: np.ndarray | None
    skull: np.ndarray
    cap: np.ndarray | None
    ears: tuple[tuple[np.ndarray, np.ndarray], ...]
    hairline: np.ndarray
    sheets: dict[float, np.ndarray]
    fringe: np.ndarray | None
    glasses: tuple[np.ndarray, ...]
    beard_cheeks: np.ndarray


@lru_cache(maxsize=4096)
def _parts(ident: Identity, fine: bool) -> _Parts:
    fw, vol, style = ident.face_w, ident.hair_volume, ident.hair_style
    sh = np.array([[-2.6, 4.0], [-2.4, 2.55], [-1.7, 2.15], [-0.7, 1.98], [0.7, 1.98], [1.7, 2.15],
                   [2.4, 2.55], [2.6, 4.0]])
    sh[:, 0] *= 0.95 + 0.1 * fw
    shoulders = _xyz(sh[:, 0], sh[:, 1], np.zeros(len(sh)))
    nw = 0.5 * fw
    neck = np.array([[-nw, 0.9, -0.6], [nw, 0.9, -0.6], [nw * 1.08, 2.1, -0.6], [-nw * 1.08, 2.1, -0.6]])
    collar = np.array([[-nw * 1.5, 2.0, 0], [nw * 1.5, 2.0, 0], [0.0, 2.35, 0]])
    skull_r = SKULL_RADII * np.array([fw, 1.0, 1.0])
    hc = SKULL_CENTRE + np.array([0.0, -0.45 * vol, 0.0])
    hr = skull_r + np.array([vol * 0.9 + 0.04, vol + 0.06, vol + 0.05])
    back = None
    if style in ("long", "bob", "curly"):
        length = {"long": 2.5, "bob": 1.25, "curly": 0.95}[style]
        drop = np.array([[-1.0, length, -0.5], [1.0, length, -0.5], [-1.12, length - 0.25, -0.55],
                         [1.12, length - 0.25, -0.55]]) * np.array([fw + vol, 1.0, 1.0])
        back = np.concatenate([ellipsoid_points(hc, hr, y_max=0.6, fine=fine), drop])
    # long hair falls beside the face, so the sides of the head need no skin there
    skull = ellipsoid_points(SKULL_CENTRE, skull_r, y_max=-0.2 if style in ("long", "bob") else 0.7, fine=fine)
    cap = None
    if style != "bald":
        cap = ellipsoid_points(hc, hr, y_max={"crop": -0.15, "curly": 0.15}.get(style, 0.0), fine=fine)
    ears = []
    if style not in ("long", "bob"):
        t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        es = ident.ear_size
        for side in (-1.0, 1.0):
            x = side * (fw * 0.95 + 0.09 * es * (0.6 + 0.4 * np.cos(t)))
            outer = _xyz(x, 0.19 + 0.3 * es * np.cos(t), -0.55 + 0.14 * es * np.sin(t))
            inner = _xyz(x - side * 0.02, 0.22 + 0.18 * es * np.cos(t), -0.53 + 0.07 * es * np.sin(t))
            ears.append((outer, inner))
    hl = ident.hairline
    hx = np.array([-0.99, -0.95, -0.86, -0.62, -0.3, 0.0])
    hy = np.array([0.02, -0.3, -0.62, hl + 0.1, hl + 0.02, hl])
    if style == "bald":
        hy = np.array([0.02, -0.5, -1.0, -1.45, -1.6, -1.65])
    hx = np.concatenate([hx, -hx[-2::-1]]) * fw
    hy = np.concatenate([hy, hy[-2::-1]])
    hairline = _xyz(hx, hy, skull_surface(ident, hx, hy, 0.0))
    sheets = {}
    if style in ("long", "bob"):
        length = 1.3 if style == "bob" else 2.3
        x_in, x_out = 0.99 * fw, 1.03 * fw + vol + 0.08
        box = np.array([[x_in, -0.7, -0.3], [x_out, -0.7, -0.3], [x_in, -0.7, -1.5], [x_out, -0.7, -1.5],
                        [x_in, length, -0.45], [x_out + 0.1, length, -0.45], [x_in, length, -1.3],
                        [x_out + 0.1, length, -1.3]])
        for side in (-1.0, 1.0):
            sheets[side] = box * np.array([side, 1.0, 1.0])
    fringe = None
    if ident.fringe > 0 and style != "bald":
        xs = np.linspace(-0.9, 0.9, 9) * fw
        drop_y = ident.fringe * (1 - 0.6 * ((xs / fw - 0.4 * ident.part) / 1.3) ** 2) \
            * (1 + 0.25 * ident.part * xs / fw)
        xx = np.concatenate([xs, xs[::-1]])
        yy = np.concatenate([np.full_like(xs, hl - 0.1), (hl + np.clip(drop_y, 0.03, None))[::-1]])
        fringe = catmull_rom(_xyz(xx, yy, skull_surface(ident, xx, yy, 0.04)), 2, closed=True)
    glasses: tuple[np.ndarray, ...] = ()
    if ident.glasses:
        base = base_landmarks(ident)
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        rx, ry = ident.eye_w * 1.55, 0.17
        parts = []
        inner_pts = []
        for eye in (base[36:42], base[42:48]):
            c = eye.mean(axis=0) + [0, 0.02, 0.13]
            ring = _xyz(c[0] + rx * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** 0.7,
                        c[1] + ry * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** 0.8, np.full_like(t, c[2]))
            outer = ring[np.argmax(np.abs(ring[:, 0]))]
            parts += [ring, np.array([outer, [np.sign(outer[0]) * fw * 0.97, 0.0, -0.45]])]
            inner_pts.append(ring[np.argmin(np.abs(ring[:, 0]))])
        parts.append(catmull_rom(np.array([inner_pts[0], [0.0, -0.05, inner_pts[0][2] + 0.05], inner_pts[1]]), 3))
        glasses = tuple(parts)
    bx = np.array([0.97, 0.78]) * fw
    by = np.array([0.1, 0.55])
    beard_cheeks = _xyz(bx, by, face_depth(ident, bx, by))
    return _Parts(shoulders, neck, collar, back, skull, cap, tuple(ears), hairline, sheets, fringe, glasses,
                  beard_cheeks)


# --------------------------------------------------------------------------------------------- drawing


def _draw_face(cv: _Canvas, ident: Identity, aus: dict[str, float], lm: np.ndarray, cam: Camera) -> None:
    parts = _parts(ident, cam.size > 96)
    s = cam.pixels_per_unit
    P = cam.project
    skin = np.asarray(ident.skin)
    hair = np.asarray(ident.hair)
    style = ident.hair_style

    def A(name: str, side: str = "") -> float:
        """Activation of AU ``name``; with ``side`` ("R"/"L") adding that side's unilateral AU,
        without it half of each side's."""
        if side:
            return aus.get(name, 0.0) + aus.get(name + side, 0.0)
        return aus.get(name, 0.0) + 0.5 * (aus.get(name + "R", 0.0) + aus.get(name + "L", 0.0))

    cv.poly(P(parts.shoulders, body=True), _rgb(ident.clothing))
    if parts.back_hair is not None:
        cv.poly(convex_hull(P(parts.back_hair)), _rgb(hair, 0.8))
    cv.poly(P(parts.neck, body=True), _rgb(skin, 0.78))
    cv.poly(P(parts.collar, body=True), _rgb(skin, 0.85))
    # hair sheets beside the head: the one turned away from the camera goes behind the head
    near: list[np.ndarray] = []
    normal_z = cam.matrix[2, 0]  # camera-z of the face-frame +x axis
    for side, box in parts.sheets.items():
        if side * normal_z >= -0.02:
            near.append(box)
        else:
            cv.poly(convex_hull(P(box)), _rgb(hair, 0.92), mask=True)
    cv.poly(convex_hull(P(np.concatenate([parts.skull, lm[0:17]]))), _rgb(skin), mask=True)
    for outer, inner in parts.ears:
        cv.poly(P(outer), _rgb(skin, 0.93), mask=True)
        cv.poly(P(inner), _rgb(skin, 0.75))
    if parts.cap is not None:
        colour = hair if style != "crop" else hair * 0.75 + skin * 0.25
        cv.poly(convex_hull(P(parts.cap)), _rgb(colour), mask=True)
    cv.poly(P(np.concatenate([lm[0:17], parts.hairline[::-1]])), _rgb(skin), mask=True)
    for box in near:
        cv.poly(convex_hull(P(box)), _rgb(hair, 0.92), mask=True)
    _wrinkles(cv, ident, lm, P, A, skin, s)
    if ident.beard > 0:
        _beard(cv, ident, parts, lm, P, hair, skin)
    for idx in (slice(36, 42), slice(42, 48)):
        _eye(cv, ident, lm[idx], P, cam, skin, s)
    _brow(cv, ident, lm[17:22], P)
    _brow(cv, ident, lm[26:21:-1], P)
    _mouth(cv, ident, lm, P, s)
    _nose(cv, ident, lm, P, skin, s)
    if ident.mustache:
        m = np.concatenate([lm[31:36] + [0, 0.03, -0.02], _up(lm[[54, 53, 52, 51, 50, 49, 48]], -0.005)])
        m[[0, 4], 0] += np.array([-0.05, 0.05])
        m[5:, 0] *= 1.08
        cv.poly(P(catmull_rom(m, 2, closed=True)), _rgb(hair, 0.9))
    if parts.fringe is not None:
        cv.poly(P(parts.fringe), _rgb(hair))
    if parts.glasses:
        col = _rgb(ident.glasses_colour)
        ring_r, arm_r, ring_l, arm_l, bridge = parts.glasses
        for ring, arm in ((ring_r, arm_r), (ring_l, arm_l)):
            pr = P(ring)
            cv.poly(pr, (200, 220, 235, 40))
            cv.line(pr, col, 0.035 * s, closed=True)
            cv.line(P(arm), col, 0.03 * s)
        cv.line(P(bridge), col, 0.03 * s)


def _wrinkles(cv: _Canvas, ident: Identity, lm: np.ndarray, P: Project, A: Callable[..., float],
              skin: np.ndarray, s: float) -> None:
    dark = skin * 0.55
    w = 0.028 * s
    for side, sd in ((-1, "R"), (1, "L")):
        al, cor = lm[31 if side < 0 else 35], lm[48 if side < 0 else 54]
        # cheek raise (AU6/AU12): nasolabial fold and a rounded cheek highlight
        smile = min(1.0, A("AU12", sd) * 0.8 + A("AU6", sd) * 0.4)
        if smile > 0.05:
            fold = np.array([al + [side * 0.06, 0.0, -0.02], (al + cor) / 2 + [side * 0.11, 0.0, -0.02],
                             cor + [side * 0.05, 0.03, -0.02]])
            cv.line(P(catmull_rom(fold, 4)), _rgb(dark, alpha=0.45 * smile), w)
            cheek = np.array([side * (ident.eye_sep + 0.08), 0.36 - 0.05 * smile, 0.42])
            cv.ellipse(P(cheek[None])[0], 0.15 * s, 0.09 * s, _rgb(skin, 1.12, alpha=0.45 * smile))
        dimple = A("AU14", sd)
        if dimple > 0.05:  # dimple next to the corner that tightens
            seg = np.array([cor + [side * 0.05, -0.05, 0], cor + [side * 0.075, 0.0, 0],
                            cor + [side * 0.05, 0.05, 0]])
            cv.line(P(catmull_rom(seg, 3)), _rgb(dark, alpha=0.6 * min(1.0, dimple)), w)
        down = A("AU15", sd) + 0.5 * A("AU17")
        if down > 0.05:  # lines below the corners
            seg = np.array([cor + [side * 0.03, 0.04, 0], cor + [side * 0.05, 0.16, -0.02]])
            cv.line(P(seg), _rgb(dark, alpha=0.35 * min(1.0, down)), w)
    au4 = A("AU4")
    if au4 > 0.05:  # vertical lines between the brows
        for dx in (-0.05, 0.05):
            seg = np.array([[dx, -0.3, lm[27, 2]], [dx * 1.3, -0.12, lm[27, 2]]])
            cv.line(P(seg), _rgb(dark, alpha=0.7 * min(1.0, au4)), w)
    au9 = A("AU9")
    if au9 > 0.05:  # nose-bridge wrinkles
        for yy in (0.05, 0.13, 0.21):
            seg = np.array([[-0.1, yy, 0], [0.0, yy - 0.025, 0], [0.1, yy, 0]]) + [0, 0, lm[28, 2]]
            cv.line(P(catmull_rom(seg, 3)), _rgb(dark, alpha=0.75 * min(1.0, au9)), w * 1.2)
    brow_up = (A("AU1") + A("AU2")) / 2
    if brow_up > 0.05:  # forehead lines
        xs = np.linspace(-0.45, 0.45, 5)
        for yy in (-0.55, -0.68, -0.8):
            if yy < ident.hairline + 0.05:
                continue
            seg = _xyz(xs, yy + 0.04 * (xs / 0.45) ** 2, skull_surface(ident, xs, np.full(5, yy), 0.0))
            cv.line(P(catmull_rom(seg, 3)), _rgb(dark, alpha=0.45 * min(1.0, brow_up)), w)


def _beard(cv: _Canvas, ident: Identity, parts: _Parts, lm: np.ndarray, P: Project, hair: np.ndarray,
           skin: np.ndarray) -> None:
    jaw = _up(lm[1:16], 0.03)
    cheeks_l = parts.beard_cheeks
    cheeks_r = cheeks_l[::-1] * [-1, 1, 1]
    pts = np.concatenate([jaw, cheeks_l, lm[[54]] + [0.08, -0.02, -0.02], _up(lm[55:60], 0.03),
                          lm[[48]] + [-0.08, -0.02, -0.02], cheeks_r])
    if ident.beard >= 1.0:
        cv.poly(P(pts), _rgb(hair, 0.9))
    else:
        cv.poly(P(pts), _rgb(hair * 0.5 + skin * 0.5, 0.7, alpha=0.25))


def _eye(cv: _Canvas, ident: Identity, e: np.ndarray, P: Project, cam: Camera, skin: np.ndarray,
         s: float) -> None:
    # e: 6 points in iBUG order; corners at 0 and 3, upper lid 1-2, lower lid 4-5
    upper = catmull_rom(e[[0, 1, 2, 3]], 4)
    lower = catmull_rom(e[[3, 4, 5, 0]], 4)
    cv.poly(P(np.concatenate([upper, lower[1:-1]])), _rgb((0.9, 0.88, 0.85)))
    # iris (looks ahead with the head), pupil, highlight
    centre = (e[0] + e[3]) / 2
    centre[1] = min((e[1, 1] + e[2, 1]) / 2 * 0.35 + (e[4, 1] + e[5, 1]) / 2 * 0.65 - 0.01,
                    (e[0, 1] + e[3, 1]) / 2 + 0.005)
    c2 = P(centre[None])[0]
    r = 0.44 * ident.eye_w * s
    fx = max(0.35, float(np.cos(np.deg2rad(cam.yaw))))
    iris = np.asarray(ident.iris)
    cv.ellipse(c2, r * fx, r, _rgb(iris, 0.55))
    cv.ellipse(c2, r * 0.8 * fx, r * 0.8, _rgb(iris))
    cv.ellipse(c2, r * 0.42 * fx, r * 0.42, (15, 12, 12))
    cv.ellipse(c2 + np.array([-0.3, -0.3]) * r, r * 0.2, r * 0.2, (250, 250, 250))
    # skin lids covering whatever spills out of the opening
    out = np.array([0.06 * np.sign(e[0, 0] - e[3, 0]), 0.0, 0.0])
    ext_u = np.concatenate([e[[0]] + out, upper, e[[3]] - out])
    ext_l = np.concatenate([e[[3]] - out, lower, e[[0]] + out])
    cv.poly(P(np.concatenate([ext_u, _up(ext_u[::-1], -0.14)])), _rgb(skin))
    cv.poly(P(np.concatenate([ext_l, _up(ext_l[::-1], 0.12)])), _rgb(skin))
    # lash line, lid crease, lower lid
    cv.line(P(upper), _rgb((0.1, 0.07, 0.06)), 0.045 * s)
    cv.line(P(_up(upper[2:-2], -0.045)), _rgb(skin, 0.72, alpha=0.6), 0.02 * s)
    cv.line(P(lower[1:-1]), _rgb(skin, 0.7, alpha=0.6), 0.018 * s)


def _brow(cv: _Canvas, ident: Identity, b: np.ndarray, P: Project) -> None:
    # b: 5 brow points, outer -> inner
    c = catmull_rom(b, 3)
    u = np.linspace(0, 1, len(c))
    t = ident.brow_thick * (0.45 + 0.55 * u ** 0.6) * (1 - 0.25 * u ** 6)
    cv.poly(P(np.concatenate([_up(c, -t / 2), _up(c, t / 2)[::-1]])), _rgb(ident.brow))


def _mouth(cv: _Canvas, ident: Identity, lm: np.ndarray, P: Project, s: float) -> None:
    lips = np.asarray(ident.lips)
    out_up = catmull_rom(lm[48:55], 3)
    out_lo = catmull_rom(lm[[54, 55, 56, 57, 58, 59, 48]], 3)
    in_up = catmull_rom(lm[60:65], 3)
    in_lo = catmull_rom(lm[[64, 65, 66, 67, 60]], 3)
    cv.poly(P(np.concatenate([out_up, in_up[::-1]])), _rgb(lips, 0.86))
    cv.poly(P(np.concatenate([in_lo, out_lo[::-1]])), _rgb(lips, 1.0))
    # interior, tongue, teeth
    lo_al = in_lo[::-1]  # 60 -> 64, aligned with in_up
    gap = np.clip(lo_al[:, 1] - in_up[:, 1], 0, None)
    if gap.max() > 0.012:
        cv.poly(P(np.concatenate([in_up, in_lo])), (55, 18, 24))
        if gap.max() > 0.08:
            cv.poly(P(np.concatenate([lo_al, _up(lo_al[::-1], -np.minimum(0.35 * gap, 0.07)[::-1])])),
                    (150, 62, 72))
        cv.poly(P(np.concatenate([in_up, _up(in_up[::-1], np.minimum(0.8 * gap, 0.085)[::-1])])),
                (226, 222, 208))
        if gap.max() > 0.12:
            mid = lo_al[2:-2]
            cv.poly(P(np.concatenate([mid, _up(mid[::-1], -np.minimum(0.2 * gap, 0.04)[2:-2][::-1])])),
                    (205, 200, 188))
    cv.line(P(in_up), (70, 25, 30, 200), 0.022 * s)
    cv.line(P(out_lo[1:-1]), _rgb(lips, 0.8, alpha=0.35), 0.015 * s)


def _nose(cv: _Canvas, ident: Identity, lm: np.ndarray, P: Project, skin: np.ndarray, s: float) -> None:
    nw = ident.nose_w
    al_r = lm[31] + [-0.045, -0.03, -0.06]
    al_l = lm[35] + [0.045, -0.03, -0.06]
    body = np.concatenate([lm[27:36], al_r[None], al_l[None], lm[[27]] + [-0.07, 0.05, -0.05],
                           lm[[27]] + [0.07, 0.05, -0.05]])
    cv.poly(convex_hull(P(body)), _rgb(skin, 0.97))
    w = 0.03 * s
    for side, al, base, mid in ((-1, al_r, lm[31], lm[32]), (1, al_l, lm[35], lm[34])):
        side_line = np.array([lm[28] + [side * 0.07, 0.0, -0.06], lm[29] + [side * 0.08, 0.0, -0.08],
                              al + [0, -0.04, 0]])
        cv.line(P(catmull_rom(side_line, 3)), _rgb(skin, 0.82, alpha=0.5), w * 0.8)
        wing = np.array([al + [0, -0.05, 0], al + [side * 0.015, 0.02, 0], base + [0.0, 0.035, 0]])
        cv.line(P(catmull_rom(wing, 3)), _rgb(skin, 0.62, alpha=0.85), w)
        nostril = P(((base + mid) / 2 + [0, 0.005, 0])[None])[0]
        cv.ellipse(nostril, 0.045 * nw / 0.2 * s, 0.024 * s, _rgb(skin, 0.35, alpha=0.9))
    cv.ellipse(P(lm[30][None] + [0, 0.04, 0])[0], 0.05 * s, 0.035 * s, _rgb(skin, 1.1, alpha=0.5))


# --------------------------------------------------------------------------------------------- finishing


def _finish(img: np.ndarray, mask: np.ndarray, ident: Identity, cam: Camera, nz: Nuisance,
            rng: np.random.Generator | None) -> np.ndarray:
    size = cam.size
    if nz.shading > 0:
        img = img * (1 - mask * (1 - _shade(ident, cam, nz)))[..., None]
    if nz.gradient > 0:
        yy, xx = _grid(size)
        d = (xx - size / 2) * np.cos(nz.gradient_angle) + (yy - size / 2) * np.sin(nz.gradient_angle)
        img = img * (1 + nz.gradient * d / size)[..., None]
    img = img * (np.asarray(nz.tint, np.float32) * (255.0 * nz.brightness))
    if nz.blur > 0.05:
        img = gaussian_filter(img, sigma=(nz.blur, nz.blur, 0), mode="nearest")
    if rng is not None and nz.noise > 0:
        img = img + rng.normal(0.0, nz.noise, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _shade(ident: Identity, cam: Camera, nz: Nuisance) -> np.ndarray:
    """Lambert shading of a head-sized ellipsoid, per output pixel (1 = fully lit)."""
    s = cam.pixels_per_unit
    cx, cy = cam.centre
    yy, xx = _grid(cam.size)
    R = cam.matrix
    c = np.array([0.0, 0.1, -0.6])
    c2 = PIVOT + R @ (c - PIVOT)
    M = (R @ np.diag(1.0 / np.array([1.08 * ident.face_w, 2.0, 1.2]) ** 2) @ R.T).astype(np.float32)
    dx = (xx - cx) / s - np.float32(c2[0])
    dy = (yy - cy) / s - np.float32(c2[1])
    b = M[0, 2] * dx + M[1, 2] * dy
    cc = M[0, 0] * dx * dx + 2 * M[0, 1] * dx * dy + M[1, 1] * dy * dy - 1
    t = (-b + np.sqrt(np.maximum(b * b - M[2, 2] * cc, 0))) / M[2, 2]
    L = np.array([nz.light[0], nz.light[1], 1.0], dtype=np.float32)
    L /= np.linalg.norm(L)
    Lm = M @ L  # n = M d, so n.L = d.(M L) with M symmetric
    dot = dx * Lm[0] + dy * Lm[1] + t * Lm[2]
    nx, ny, nzz = (M[0, 0] * dx + M[0, 1] * dy + M[0, 2] * t, M[1, 0] * dx + M[1, 1] * dy + M[1, 2] * t,
                   M[2, 0] * dx + M[2, 1] * dy + M[2, 2] * t)
    lam = np.clip(dot / (np.sqrt(nx * nx + ny * ny + nzz * nzz) + 1e-6), 0, 1)
    return 1 - nz.shading + nz.shading * lam
