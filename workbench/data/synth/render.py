"""Rendering: filled polygons with PIL at supersampling, then shading, lighting, blur and noise in numpy.

Drawing order is back to front (background, clothing, hair behind the head, neck, head, ears, hair
cap, face, wrinkles, beard, eyes, brows, mouth, nose, moustache, fringe, glasses), so features turned
away from the camera are covered sensibly. Landmarks are the projected 3D landmarks after pose,
scale and shift, in continuous pixel coordinates of the output image.
"""

from __future__ import annotations

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
                    scale_jitter: float = 0.06, shift_jitter: float = 0.04, blur_max: float = 0.6,
                    noise_max: float = 4.0) -> Nuisance:
    """Draw random nuisance from ``rng``; each strength 0 turns that factor off (fixed draw order)."""
    u = rng.uniform
    base = np.array([0.58, 0.6, 0.62])
    hue = u(0, 1)
    colour = np.array([0.5 + 0.5 * np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)])
    top = base + background * (0.35 * (colour - 0.5) * u(0, 1) + u(-0.25, 0.25))
    bottom = top * (1 - background * u(0.0, 0.35))
    ang = u(-np.pi, np.pi)
    light = (lighting * u(-1.0, 1.0), lighting * u(-0.9, 0.4))
    gradient = lighting * u(0.0, 0.3)
    gangle = u(-np.pi, np.pi)
    tint = 1 + lighting * np.array([u(-0.06, 0.06), 0.0, u(-0.06, 0.06)])
    brightness = 1 + lighting * u(-0.2, 0.12)
    scale = 1 + scale_jitter * u(-1, 1)
    shift = (shift_jitter * u(-1, 1), shift_jitter * u(-1, 1))
    blur = blur_max * u() ** 2
    noise = noise_max * u()
    return Nuisance(
        bg_top=_col(top), bg_bottom=_col(bottom), bg_angle=ang, light=light, shading=0.45,
        gradient=gradient, gradient_angle=gangle, tint=_col(tint, 2.0), brightness=brightness,
        scale=scale, shift=shift, blur=blur, noise=noise,
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
        self.draw = ImageDraw.Draw(self.img, "RGBA")
        self.mask = Image.new("L", (size * k, size * k), 0)
        self.mdraw = ImageDraw.Draw(self.mask)

    def _xy(self, pts: np.ndarray) -> list[float]:
        return (pts * self.k - 0.5).ravel().tolist()

    def poly(self, pts: np.ndarray, fill: Fill, *, mask: bool = False) -> None:
        if len(pts) < 3:
            return
        xy = self._xy(pts)
        self.draw.polygon(xy, fill=fill)
        if mask:
            self.mdraw.polygon(xy, fill=255)

    def line(self, pts: np.ndarray, fill: Fill, width: float, *, closed: bool = False) -> None:
        xy = self._xy(pts)
        if closed:
            xy = xy + xy[:2]
        self.draw.line(xy, fill=fill, width=max(1, int(round(width * self.k))), joint="curve")

    def ellipse(self, centre: np.ndarray, rx: float, ry: float, fill: Fill) -> None:
        cx, cy = centre * self.k - 0.5
        rx, ry = max(rx * self.k, 0.5), max(ry * self.k, 0.5)
        self.draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)


def _up(pts: np.ndarray, d: float | np.ndarray) -> np.ndarray:
    """Shift face-frame points along y (negative = up)."""
    out = pts.copy()
    out[:, 1] += d
    return out


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy + 0.5, xx + 0.5


def _background(size: int, nz: Nuisance) -> np.ndarray:
    yy, xx = _grid(size)
    d = np.array([np.sin(nz.bg_angle), np.cos(nz.bg_angle)], dtype=np.float32)
    t = ((xx - size / 2) * d[0] + (yy - size / 2) * d[1]) / size + 0.5
    t = np.clip(t, 0, 1)[..., None]
    top, bottom = np.asarray(nz.bg_top, np.float32), np.asarray(nz.bg_bottom, np.float32)
    return (np.clip(top * (1 - t) + bottom * t, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_aus(ident: Identity, aus: dict[str, float], camera: Camera, nuisance: Nuisance | None = None, *,
               supersample: int = 3, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render ``ident`` with AU activations ``aus`` seen by ``camera``: (uint8 (S,S,3), float32 (68,2)).

    ``rng`` only feeds the pixel noise (none when omitted).
    """
    nz = nuisance or Nuisance()
    size, k = camera.size, int(supersample)
    lm3 = base_landmarks(ident) + au_displacement(aus) * ident.face_w
    lm2 = camera.project(lm3)
    cv = _Canvas(size, k, _background(size, nz))
    _draw_face(cv, ident, aus, lm3, camera)
    img = cv.img.reduce(k) if k > 1 else cv.img
    mask = cv.mask.reduce(k) if k > 1 else cv.mask
    out = _finish(np.asarray(img, dtype=np.float32) / 255.0, np.asarray(mask, dtype=np.float32) / 255.0,
                  ident, camera, nz, rng)
    return out, lm2.astype(np.float32)


def render_face(identity: int | Identity = 0, expression: str = "neutral", intensity: float = 1.0, *,
                yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, size: int = 64, seed: int = 0,
                supersample: int = 3, nuisance: Nuisance | None = None, contempt_side: str = "right",
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render one face: returns uint8 RGB (size, size, 3) and float32 (68, 2) landmarks in pixels.

    ``identity`` is an :class:`Identity` or an index into the population of ``seed`` (the same person
    as ``idNNN`` in a dataset generated with that seed). ``expression`` accepts aliases; ``intensity``
    0..1 scales its action units (1 = apex). Pose in degrees (see :mod:`.geometry` for signs).
    ``nuisance`` defaults to a clean studio shot; ``rng`` only adds pixel noise. Use ``supersample``
    3-4 for smooth edges (2 is faster and a little jaggier).
    """
    ident = identity if isinstance(identity, Identity) else make_identity(seed, int(identity))
    expr = canonical_expression(expression)
    aus = expression_aus(expr, intensity, contempt_side=contempt_side)
    nz = nuisance or Nuisance()
    cam = Camera(size=int(size), yaw=yaw, pitch=pitch, roll=roll, scale=nz.scale, shift=nz.shift)
    return render_aus(ident, aus, cam, nz, supersample=supersample, rng=rng)


# --------------------------------------------------------------------------------------------- drawing


def _draw_face(cv: _Canvas, ident: Identity, aus: dict[str, float], lm: np.ndarray, cam: Camera) -> None:
    fw = ident.face_w
    s = cam.pixels_per_unit
    P = cam.project
    skin = np.asarray(ident.skin)
    hair = np.asarray(ident.hair)
    def A(name: str, side: str = "") -> float:
        """Activation of AU ``name``; with ``side`` ("R"/"L") including that side's unilateral AU,
        without it the mean over both sides."""
        if side:
            return aus.get(name, 0.0) + aus.get(name + side, 0.0)
        return aus.get(name, 0.0) + 0.5 * (aus.get(name + "R", 0.0) + aus.get(name + "L", 0.0))

    style = ident.hair_style
    vol = ident.hair_volume
    # ---- clothing / shoulders (body frame: not turned by the head)
    sh = np.array([[-2.6, 4.0], [-2.4, 2.55], [-1.7, 2.15], [-0.7, 1.98], [0.7, 1.98], [1.7, 2.15],
                   [2.4, 2.55], [2.6, 4.0]])
    sh[:, 0] *= 0.95 + 0.1 * fw
    cv.poly(P(np.c_[sh, np.zeros(len(sh))], body=True), _rgb(ident.clothing))
    # ---- hair behind the head (long, bob, curly)
    hc = SKULL_CENTRE + np.array([0.0, -0.45 * vol, 0.0])
    hr = SKULL_RADII * np.array([fw, 1.0, 1.0]) + np.array([vol * 0.9 + 0.04, vol + 0.06, vol + 0.05])
    if style in ("long", "bob", "curly"):
        length = {"long": 2.5, "bob": 1.25, "curly": 0.95}[style]
        back = ellipsoid_points(hc, hr, y_max=0.6)
        drop = np.array([[-1.0, length, -0.5], [1.0, length, -0.5], [-1.12, length - 0.25, -0.55],
                         [1.12, length - 0.25, -0.55]]) * np.array([fw + vol, 1.0, 1.0])
        cv.poly(convex_hull(P(np.concatenate([back, drop]))), _rgb(hair, 0.8))
    # ---- neck
    nw = 0.5 * fw
    neck = np.array([[-nw, 0.9, -0.6], [nw, 0.9, -0.6], [nw * 1.08, 2.1, -0.6], [-nw * 1.08, 2.1, -0.6]])
    cv.poly(P(neck, body=True), _rgb(skin, 0.78))
    collar = np.array([[-nw * 1.5, 2.0, 0], [nw * 1.5, 2.0, 0], [0.0, 2.35, 0]])
    cv.poly(P(collar, body=True), _rgb(skin, 0.85))
    # ---- hair sheets beside the head (long, bob): the one turned away goes behind the head
    near_sides: list[float] = []
    if style in ("long", "bob"):
        normal_z = cam.matrix[2, 0]  # camera-z of the face-frame +x axis
        for side in (-1.0, 1.0):
            if side * normal_z >= -0.02:
                near_sides.append(side)
            else:
                _side_sheet(cv, ident, P, hair, side)
    # ---- head skin silhouette (skull + jaw)
    if style in ("long", "bob"):  # hair falls beside the face: no skin at the sides of the head
        skull = ellipsoid_points(SKULL_CENTRE, SKULL_RADII * np.array([fw, 1.0, 1.0]), y_max=-0.2)
    else:
        skull = ellipsoid_points(SKULL_CENTRE, SKULL_RADII * np.array([fw, 1.0, 1.0]), y_max=0.7)
    cv.poly(convex_hull(P(np.concatenate([skull, lm[0:17]]))), _rgb(skin), mask=True)
    # ---- ears
    if style not in ("long", "bob"):
        _ears(cv, ident, P)
    # ---- hair cap
    if style != "bald":
        cap_bottom = {"crop": -0.15, "curly": 0.15}.get(style, 0.0)
        cap = ellipsoid_points(hc, hr * np.array([1.0, 1.0, 1.0]), y_max=cap_bottom)
        colour = hair if style != "crop" else hair * 0.75 + skin * 0.25
        cv.poly(convex_hull(P(cap)), _rgb(colour), mask=True)
    # ---- face (jaw + sideburns + hairline)
    hl = ident.hairline
    hx = np.array([-0.99, -0.95, -0.86, -0.62, -0.3, 0.0])
    hy = np.array([0.02, -0.3, -0.62, hl + 0.1, hl + 0.02, hl])
    if style == "bald":
        hy = np.array([0.02, -0.5, -1.0, -1.45, -1.6, -1.65])
    hx = np.concatenate([hx, -hx[-2::-1]]) * fw
    hy = np.concatenate([hy, hy[-2::-1]])
    hline = np.c_[hx, hy, skull_surface(ident, hx, hy, 0.0)]
    face = np.concatenate([lm[0:17], hline[::-1]])
    cv.poly(P(face), _rgb(skin), mask=True)
    for side in near_sides:
        _side_sheet(cv, ident, P, hair, side)
    # ---- cheeks and wrinkles (expression-driven, local)
    _wrinkles(cv, ident, lm, P, A, skin, s)
    # ---- beard
    if ident.beard > 0:
        _beard(cv, ident, lm, P, hair, skin)
    # ---- eyes and brows
    for idx in (range(36, 42), range(42, 48)):
        _eye(cv, ident, lm[list(idx)], P, cam, skin, s)
    for idx in (range(17, 22), range(22, 27)):
        _brow(cv, ident, lm[list(idx)], P, right=idx.start == 17)
    # ---- mouth, nose, moustache
    _mouth(cv, ident, lm, P, s)
    _nose(cv, ident, lm, P, skin, s)
    if ident.mustache:
        m = np.concatenate([lm[[31, 32, 33, 34, 35]] + [0, 0.03, -0.02], _up(lm[[54, 53, 52, 51, 50, 49, 48]],
                                                                               -0.005)])
        m[[0, 4], 0] += np.array([-0.05, 0.05])
        m[5:, 0] *= 1.08
        cv.poly(P(catmull_rom(m, 2, closed=True)), _rgb(hair, 0.9))
    # ---- fringe
    if ident.fringe > 0 and style != "bald":
        _fringe(cv, ident, P, hair)
    # ---- glasses
    if ident.glasses:
        _glasses(cv, ident, P, s)


def _ears(cv: _Canvas, ident: Identity, P) -> None:
    t = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    es = ident.ear_size
    for side in (-1.0, 1.0):
        y = 0.22 + 0.3 * es * np.cos(t) - 0.03
        z = -0.55 + 0.14 * es * np.sin(t)
        x = side * (ident.face_w * 0.95 + 0.09 * es * (0.6 + 0.4 * np.cos(t)))
        pts = np.c_[x, y, z]
        col = np.asarray(ident.skin)
        cv.poly(P(pts), _rgb(col, 0.93), mask=True)
        inner = np.c_[x - side * 0.02, 0.22 + 0.18 * es * np.cos(t), -0.53 + 0.07 * es * np.sin(t)]
        cv.poly(P(inner), _rgb(col, 0.75))


def _side_sheet(cv: _Canvas, ident: Identity, P, hair: np.ndarray, side: float) -> None:
    """A slab of hair falling beside the head on one side (x sign ``side``)."""
    fw, vol = ident.face_w, ident.hair_volume
    length = 1.3 if ident.hair_style == "bob" else 2.3
    x_in, x_out = 0.99 * fw, 1.03 * fw + vol + 0.08
    box = np.array([[x_in, -0.7, -0.12], [x_out, -0.7, -0.12], [x_in, -0.7, -1.5], [x_out, -0.7, -1.5],
                    [x_in, length, -0.3], [x_out + 0.1, length, -0.3], [x_in, length, -1.3],
                    [x_out + 0.1, length, -1.3]])
    box[:, 0] *= side
    cv.poly(convex_hull(P(box)), _rgb(hair, 0.92), mask=True)


def _fringe(cv: _Canvas, ident: Identity, P, hair: np.ndarray) -> None:
    fw, hl, fr, part = ident.face_w, ident.hairline, ident.fringe, ident.part
    xs = np.linspace(-0.9, 0.9, 9) * fw
    drop = fr * (1 - 0.6 * ((xs / fw - 0.4 * part) / 1.3) ** 2) * (1 + 0.25 * part * xs / fw)
    top_y = np.full_like(xs, hl - 0.1)
    low_y = hl + np.clip(drop, 0.03, None)
    xx = np.concatenate([xs, xs[::-1]])
    yy = np.concatenate([top_y, low_y[::-1]])
    pts = np.c_[xx, yy, skull_surface(ident, xx, yy, 0.04)]
    cv.poly(P(catmull_rom(pts, 2, closed=True)), _rgb(hair, 1.0))


def _wrinkles(cv: _Canvas, ident: Identity, lm: np.ndarray, P, A, skin: np.ndarray, s: float) -> None:
    dark = skin * 0.55
    w = 0.028 * s
    for side, sd in ((-1, "R"), (1, "L")):
        al, cor = lm[31 if side < 0 else 35], lm[48 if side < 0 else 54]
        # cheek raise (AU6/AU12): nasolabial fold and a rounded cheek highlight
        smile = min(1.0, A("AU12", sd) * 0.8 + A("AU6", sd) * 0.4)
        if smile > 0.05:
            fold = np.array([al + [side * 0.07, -0.02, -0.02], (al + cor) / 2 + [side * 0.12, 0.0, -0.02],
                             cor + [side * 0.06, 0.04, -0.02]])
            cv.line(P(catmull_rom(fold, 4)), _rgb(dark, alpha=0.55 * smile), w * 1.2)
            cheek = np.array([side * (ident.eye_sep + 0.1), 0.38 - 0.05 * smile, 0.45])
            cv.ellipse(P(cheek[None])[0], 0.16 * s, 0.1 * s, _rgb(skin, 1.12, alpha=0.45 * smile))
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
            seg = np.array([[dx, -0.3, lm[27, 2]], [dx * 1.3, -0.14, lm[27, 2]]])
            cv.line(P(seg), _rgb(dark, alpha=0.6 * min(1.0, au4)), w)
    au9 = A("AU9")
    if au9 > 0.05:  # nose-bridge wrinkles
        for yy in (0.06, 0.14, 0.22):
            seg = np.array([[-0.09, yy, 0], [0.0, yy - 0.02, 0], [0.09, yy, 0]]) + [0, 0, lm[28, 2]]
            cv.line(P(catmull_rom(seg, 3)), _rgb(dark, alpha=0.65 * min(1.0, au9)), w)
    brow_up = (A("AU1") + A("AU2")) / 2
    if brow_up > 0.05:  # forehead lines
        for yy in (-0.55, -0.68, -0.8):
            if yy < ident.hairline + 0.05:
                continue
            xs = np.linspace(-0.45, 0.45, 5)
            seg = np.c_[xs, yy + 0.04 * (xs / 0.45) ** 2, skull_surface(ident, xs, np.full(5, yy), 0.0)]
            cv.line(P(catmull_rom(seg, 3)), _rgb(dark, alpha=0.45 * min(1.0, brow_up)), w)


def _beard(cv: _Canvas, ident: Identity, lm: np.ndarray, P, hair: np.ndarray, skin: np.ndarray) -> None:
    jaw = lm[1:16].copy()
    jaw[:, 1] += 0.03
    c_r, c_l = lm[48], lm[54]
    upper_l = np.array([[ident.face_w * 0.97, 0.1, 0.0], [0.78 * ident.face_w, 0.55, 0.0],
                        c_l + [0.1, -0.02, -0.02]])
    upper_l[:2, 2] = face_depth(ident, upper_l[:2, 0], upper_l[:2, 1])
    upper_r = upper_l[::-1] * [-1, 1, 1]
    upper_r[0] = c_r + [-0.1, -0.02, -0.02]
    lower_lip = lm[[55, 56, 57, 58, 59]] + [0, 0.03, 0]
    pts = np.concatenate([jaw, upper_l, lower_lip, upper_r])
    if ident.beard >= 1.0:
        cv.poly(P(pts), _rgb(hair, 0.9))
    else:
        cv.poly(P(pts), _rgb(hair * 0.5 + skin * 0.5, 0.7, alpha=0.3))


def _eye(cv: _Canvas, ident: Identity, e: np.ndarray, P, cam: Camera, skin: np.ndarray, s: float) -> None:
    # e = 6 points: outer/inner corners are 0/3 for the right eye, 3/0 for the left; order is a loop
    upper = catmull_rom(e[[0, 1, 2, 3]], 4)
    lower = catmull_rom(e[[3, 4, 5, 0]], 4)
    cv.poly(P(np.concatenate([upper, lower[1:-1]])), _rgb((0.9, 0.88, 0.85)))
    # iris (faces the camera with the head), pupil, highlight
    centre = (e[0] + e[3]) / 2
    centre[1] = (e[1, 1] + e[2, 1]) / 2 * 0.35 + (e[4, 1] + e[5, 1]) / 2 * 0.65 - 0.01
    centre[1] = min(centre[1], (e[0, 1] + e[3, 1]) / 2 + 0.005)
    c2 = P(centre[None])[0]
    r = 0.42 * ident.eye_w * s
    fx = max(0.35, np.cos(np.deg2rad(cam.yaw)))
    iris = np.asarray(ident.iris)
    cv.ellipse(c2, r * fx, r, _rgb(iris, 0.55))
    cv.ellipse(c2, r * 0.8 * fx, r * 0.8, _rgb(iris))
    cv.ellipse(c2, r * 0.42 * fx, r * 0.42, (15, 12, 12))
    cv.ellipse(c2 + np.array([-0.3, -0.3]) * r, r * 0.2, r * 0.2, (250, 250, 250))
    # skin lids covering whatever spills out of the opening
    out = 0.06 * np.sign(e[0, 0] - e[3, 0])
    ext_u = np.concatenate([e[[0]] + [out, 0, 0], upper, e[[3]] - [out, 0, 0]])
    ext_l = np.concatenate([e[[3]] - [out, 0, 0], lower, e[[0]] + [out, 0, 0]])
    cv.poly(P(np.concatenate([ext_u, _up(ext_u[::-1], -0.14)])), _rgb(skin))
    cv.poly(P(np.concatenate([ext_l, _up(ext_l[::-1], 0.12)])), _rgb(skin))
    # lash line, crease, lower lid
    cv.line(P(upper), _rgb((0.1, 0.07, 0.06)), 0.045 * s)
    cv.line(P(_up(upper[2:-2], -0.045)), _rgb(skin, 0.72, alpha=0.6), 0.02 * s)
    cv.line(P(lower[1:-1]), _rgb(skin, 0.7, alpha=0.6), 0.018 * s)


def _brow(cv: _Canvas, ident: Identity, b: np.ndarray, P, right: bool) -> None:
    pts = b if right else b[::-1]  # outer -> inner
    c = catmull_rom(pts, 3)
    u = np.linspace(0, 1, len(c))
    t = ident.brow_thick * (0.45 + 0.55 * u ** 0.6) * (1 - 0.25 * u ** 6)
    poly = np.concatenate([_up(c, -t / 2), _up(c, t / 2)[::-1]])
    cv.poly(P(poly), _rgb(ident.brow))


def _mouth(cv: _Canvas, ident: Identity, lm: np.ndarray, P, s: float) -> None:
    lips = np.asarray(ident.lips)
    out_up = catmull_rom(lm[48:55], 3)
    out_lo = catmull_rom(lm[[54, 55, 56, 57, 58, 59, 48]], 3)
    in_up = catmull_rom(lm[60:65], 3)
    in_lo = catmull_rom(lm[[64, 65, 66, 67, 60]], 3)
    cv.poly(P(np.concatenate([out_up, in_up[::-1]])), _rgb(lips, 0.86))
    cv.poly(P(np.concatenate([in_lo, out_lo[::-1]])), _rgb(lips, 1.0))
    # interior, tongue, teeth
    lo_al = in_lo[::-1]  # 60 -> 64, aligned with in_up
    gap = lo_al[:, 1] - in_up[:, 1]
    if gap.max() > 0.012:
        cv.poly(P(np.concatenate([in_up, in_lo])), (55, 18, 24))
        g = np.clip(gap, 0, None)
        tongue = np.concatenate([lo_al, _up(lo_al[::-1], -np.minimum(0.35 * g, 0.07)[::-1])])
        if gap.max() > 0.08:
            cv.poly(P(tongue), (150, 62, 72))
        teeth = np.concatenate([in_up, _up(in_up[::-1], np.minimum(0.62 * g, 0.085)[::-1])])
        cv.poly(P(teeth), (226, 222, 208))
        if gap.max() > 0.12:
            lt = np.concatenate([lo_al[2:-2], _up(lo_al[2:-2][::-1], -np.minimum(0.2 * g, 0.04)[2:-2][::-1])])
            cv.poly(P(lt), (205, 200, 188))
    cv.line(P(in_up), (70, 25, 30, 200), 0.022 * s)
    # redraw the lips' outer edge softly so the shape reads at low resolution
    cv.line(P(out_lo[1:-1]), _rgb(lips, 0.8, alpha=0.35), 0.015 * s)


def _nose(cv: _Canvas, ident: Identity, lm: np.ndarray, P, skin: np.ndarray, s: float) -> None:
    nw = ident.nose_w
    al_r = lm[31] + [-0.045, -0.03, -0.06]
    al_l = lm[35] + [0.045, -0.03, -0.06]
    body = np.concatenate([lm[27:31], lm[31:36], al_r[None], al_l[None],
                           lm[[27]] + [-0.07, 0.05, -0.05], lm[[27]] + [0.07, 0.05, -0.05]])
    cv.poly(convex_hull(P(body)), _rgb(skin, 0.97))
    w = 0.03 * s
    for side, al, base in ((-1, al_r, lm[31]), (1, al_l, lm[35])):
        side_line = np.array([lm[28] + [side * 0.07, 0.0, -0.06], lm[29] + [side * 0.08, 0.0, -0.08],
                              al + [0, -0.04, 0]])
        cv.line(P(catmull_rom(side_line, 3)), _rgb(skin, 0.82, alpha=0.5), w * 0.8)
        wing = np.array([al + [0, -0.05, 0], al + [side * 0.015, 0.02, 0], base + [side * 0.0, 0.035, 0]])
        cv.line(P(catmull_rom(wing, 3)), _rgb(skin, 0.62, alpha=0.85), w)
        nostril = P(((base + lm[32 if side < 0 else 34]) / 2 + [0, 0.005, 0])[None])[0]
        cv.ellipse(nostril, 0.045 * nw / 0.2 * s, 0.024 * s, _rgb(skin, 0.35, alpha=0.9))
    cv.ellipse(P(lm[30][None] + [0, 0.04, 0])[0], 0.05 * s, 0.035 * s, _rgb(skin, 1.1, alpha=0.5))


def _glasses(cv: _Canvas, ident: Identity, P, s: float) -> None:
    base = base_landmarks(ident)
    col = _rgb(ident.glasses_colour)
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    rx, ry = ident.eye_w * 1.55, 0.17
    inner = []
    for eye in (base[36:42], base[42:48]):
        c = eye.mean(axis=0) + [0, 0.02, 0.13]
        ring = np.c_[c[0] + rx * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** 0.7,
                     c[1] + ry * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** 0.8, np.full_like(t, c[2])]
        cv.poly(P(ring), (200, 220, 235, 40))
        cv.line(P(ring), col, 0.035 * s, closed=True)
        inner.append(ring[np.argmin(np.abs(ring[:, 0]))])
        outer = ring[np.argmax(np.abs(ring[:, 0]))]
        arm = np.array([outer, [np.sign(outer[0]) * ident.face_w * 0.97, 0.0, -0.45]])
        cv.line(P(arm), col, 0.03 * s)
    bridge = np.array([inner[0], [0.0, -0.05, inner[0][2] + 0.05], inner[1]])
    cv.line(P(catmull_rom(bridge, 3)), col, 0.03 * s)


# --------------------------------------------------------------------------------------------- finishing


def _finish(img: np.ndarray, mask: np.ndarray, ident: Identity, cam: Camera, nz: Nuisance,
            rng: np.random.Generator | None) -> np.ndarray:
    size = cam.size
    if nz.shading > 0:
        img = img * (1 - mask[..., None] * (1 - _shade(ident, cam, nz)[..., None]))
    yy, xx = _grid(size)
    if nz.gradient > 0:
        d = (xx - size / 2) * np.cos(nz.gradient_angle) + (yy - size / 2) * np.sin(nz.gradient_angle)
        img = img * (1 + nz.gradient * d / size)[..., None]
    img = img * (np.asarray(nz.tint, np.float32) * nz.brightness)
    if nz.blur > 0.05:
        img = gaussian_filter(img, sigma=(nz.blur, nz.blur, 0), mode="nearest")
    img = img * 255.0
    if rng is not None and nz.noise > 0:
        img = img + rng.normal(0.0, nz.noise, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _shade(ident: Identity, cam: Camera, nz: Nuisance) -> np.ndarray:
    """Lambert shading of a head-sized ellipsoid, per output pixel (1 = fully lit)."""
    size = cam.size
    s = cam.pixels_per_unit
    cx, cy = cam.centre
    g = (np.arange(size, dtype=np.float64) + 0.5)
    X, Y = np.meshgrid((g - cx) / s, (g - cy) / s)
    c = np.array([0.0, 0.1, -0.6])
    rad = np.array([1.08 * ident.face_w, 2.0, 1.2])
    R = cam.matrix
    c2 = PIVOT + R @ (c - PIVOT)
    M = R @ np.diag(1.0 / rad ** 2) @ R.T
    dx, dy = X - c2[0], Y - c2[1]
    b = M[0, 2] * dx + M[1, 2] * dy
    cc = M[0, 0] * dx ** 2 + 2 * M[0, 1] * dx * dy + M[1, 1] * dy ** 2 - 1
    disc = np.clip(b ** 2 - M[2, 2] * cc, 0, None)
    t = (-b + np.sqrt(disc)) / M[2, 2]
    n = np.stack([M[0, 0] * dx + M[0, 1] * dy + M[0, 2] * t, M[1, 0] * dx + M[1, 1] * dy + M[1, 2] * t,
                  M[2, 0] * dx + M[2, 1] * dy + M[2, 2] * t], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-9
    L = np.array([nz.light[0], nz.light[1], 1.0])
    L /= np.linalg.norm(L)
    lam = np.clip(n @ L, 0, 1)
    return (1 - nz.shading + nz.shading * lam).astype(np.float32)
