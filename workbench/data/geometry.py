"""Face geometry: the 68-point templates, the similarity (Umeyama) solver and the convex-hull /
polygon rasterisers shared by ``data/`` (alignment), ``views/`` (masks, template faces) and
``explain/`` (facial regions).

- templates: :data:`TEMPLATE_68` (a measured mean shape; what ``workbench faces`` aligns to, via
  :func:`canonical_landmarks`) and :func:`template_landmarks` (a schematic mirror-symmetric frontal face
  in pixel coordinates, with optional jitter: tests, benchmarks, demos, drawing the region layout);
- similarity: :func:`similarity_transform` (least squares, no reflection) and :func:`apply_transform`;
- hulls and polygons: :func:`convex_hull` (vertices), :func:`pad_polygons`, :func:`polygon_distance`
  (distance of pixels to convex polygons, 0 inside: dilated regions) and :func:`convex_hull_mask`
  (batched filled hulls at pixel centres).

Coordinates are (x, y) with pixel centres at integers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

# ----------------------------------------------------------------------------- templates

#: 68-point mean face shape (x, y), from OpenFace ``align_dlib.py`` (Copyright 2015-2016 Carnegie
#: Mellon University, Apache-2.0): dlib's 68-point layout, face width ~0.89, brow-to-chin ~0.87.
TEMPLATE_68 = np.array([
    (0.0792396913815, 0.339223741112), (0.0829219487236, 0.456955367943),
    (0.0967927109165, 0.575648016728), (0.122141515615, 0.691921601066),
    (0.168687863544, 0.800341263616), (0.239789390707, 0.895732504778),
    (0.325662452515, 0.977068762493), (0.422318282013, 1.04329000149),
    (0.531777802068, 1.06080371126), (0.641296298053, 1.03981924107),
    (0.738105872266, 0.972268833998), (0.824444363295, 0.889624082279),
    (0.894792677532, 0.792494155836), (0.939395486253, 0.681546643421),
    (0.96111933829, 0.562238253072), (0.970579841181, 0.441758925744),
    (0.971193274221, 0.322118743967), (0.163846223133, 0.249151738053),
    (0.21780354657, 0.204255863861), (0.291299351124, 0.192367318323),
    (0.367460241458, 0.203582210627), (0.4392945113, 0.233135599851),
    (0.586445962425, 0.228141644834), (0.660152671635, 0.195923841854),
    (0.737466449096, 0.182360984545), (0.813236546239, 0.192828009114),
    (0.8707571886, 0.235293377042), (0.51534533827, 0.31863546193),
    (0.516221448289, 0.396200446263), (0.517118861835, 0.473797687758),
    (0.51816430343, 0.553157797772), (0.433701156035, 0.604054457668),
    (0.475501237769, 0.62076344024), (0.520712933176, 0.634268222208),
    (0.565874114041, 0.618796581487), (0.607054002672, 0.60157671656),
    (0.252418718401, 0.331052263829), (0.298663015648, 0.302646354002),
    (0.355749724218, 0.303020650651), (0.403718978315, 0.33867711083),
    (0.352507175597, 0.349987615384), (0.296791759886, 0.350478978225),
    (0.631326076346, 0.334136672344), (0.679073381078, 0.29645404267),
    (0.73597236153, 0.294721285802), (0.782865376271, 0.321305281656),
    (0.740312274764, 0.341849376713), (0.68499850091, 0.343734332172),
    (0.353167761422, 0.746189164237), (0.414587777921, 0.719053835073),
    (0.477677654595, 0.706835892494), (0.522732900812, 0.717092275768),
    (0.569832064287, 0.705414478982), (0.635195811927, 0.71565572516),
    (0.69951672331, 0.739419187253), (0.639447159575, 0.805236879972),
    (0.576410514055, 0.835436670169), (0.525398405766, 0.841706377792),
    (0.47641545769, 0.837505914975), (0.41379548902, 0.810045601727),
    (0.380084785646, 0.749979603086), (0.477955996282, 0.74513234612),
    (0.523389793327, 0.748924302636), (0.571057789237, 0.74332894691),
    (0.672409137852, 0.744177032192), (0.572539621444, 0.776609286626),
    (0.5240106503, 0.783370783245), (0.477561227414, 0.778476346951),
], dtype=np.float64)


def canonical_landmarks(size: int = 112, face_fraction: float = 0.7) -> np.ndarray:
    """:data:`TEMPLATE_68` placed in a ``size`` crop: landmark box ``face_fraction`` of the width,
    centred horizontally, its centre at 0.54 of the height (room for the forehead). (68, 2) float64."""
    t = TEMPLATE_68
    lo, hi = t.min(axis=0), t.max(axis=0)
    scale = face_fraction * size / (hi[0] - lo[0])
    centre = (lo + hi) / 2.0
    target = np.array([0.5 * size, 0.54 * size]) - 0.5  # pixel-centre coordinates
    return (t - centre) * scale + target


def _unit_template() -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for i in range(17):  # jaw: ear (image left) -> chin -> ear
        t = math.pi * i / 16
        pts.append((0.5 - 0.38 * math.cos(t), 0.40 + 0.50 * math.sin(t)))
    for x0 in (0.20, 0.58):  # brows 17-21, 22-26
        for j in range(5):
            s = j / 4
            pts.append((x0 + 0.22 * s, 0.31 - 0.04 * math.sin(math.pi * s)))
    pts += [(0.5, 0.40), (0.5, 0.47), (0.5, 0.54), (0.5, 0.61)]  # nose bridge 27-30
    pts += [(0.43, 0.65), (0.465, 0.665), (0.5, 0.675), (0.535, 0.665), (0.57, 0.65)]  # lower nose 31-35
    pts += [(0.25, 0.40), (0.29, 0.37), (0.35, 0.37), (0.39, 0.40), (0.35, 0.43), (0.29, 0.43)]  # eye 36-41
    pts += [(0.61, 0.40), (0.65, 0.37), (0.71, 0.37), (0.75, 0.40), (0.71, 0.43), (0.65, 0.43)]  # eye 42-47
    pts += [(0.36, 0.77), (0.40, 0.74), (0.45, 0.725), (0.5, 0.73), (0.55, 0.725), (0.60, 0.74),
            (0.64, 0.77), (0.60, 0.81), (0.55, 0.83), (0.5, 0.835), (0.45, 0.83), (0.40, 0.81)]  # 48-59
    pts += [(0.38, 0.77), (0.45, 0.76), (0.5, 0.762), (0.55, 0.76), (0.62, 0.77),
            (0.55, 0.785), (0.5, 0.79), (0.45, 0.785)]  # inner lips 60-67
    return pts


def template_landmarks(size: int, batch: int = 1, *, jitter: float = 0.0, scale_jitter: float = 0.0,
                       generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> Tensor:
    """(B, 68, 2) mirror-symmetric frontal template in pixel-centre coordinates of a ``size`` image.

    ``jitter`` = per-point noise (fraction of ``size``); ``scale_jitter`` = per-face random zoom and
    shift (fraction); both drawn from ``generator``.
    """
    base = torch.tensor(_unit_template(), dtype=torch.float32, device=device)
    lm = base.expand(batch, 68, 2).clone()
    if scale_jitter > 0:
        s = 1 + _uniform((batch, 1, 1), scale_jitter, generator, lm.device)
        t = _uniform((batch, 1, 2), scale_jitter / 2, generator, lm.device)
        lm = (lm - 0.5) * s + 0.5 + t
    if jitter > 0:
        lm = lm + jitter * torch.randn(lm.shape, generator=generator, device=lm.device)
    return lm * size - 0.5


def _uniform(shape: tuple[int, ...], half: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """float32 samples from U(-half, half)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return -half + (half - -half) * u


# ----------------------------------------------------------------------------- similarity

def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    ``src`` (N, 2) onto ``dst`` (N, 2) (Umeyama 1991). Returns a (2, 3) matrix ``[sR | t]``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N>=2, 2) point sets of equal shape, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("source points are all identical")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (..., 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


# ----------------------------------------------------------------------------- hulls and polygons

def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of ``(K, 2)`` points (Andrew's monotone chain), counter-clockwise in (x, y);
    degenerate inputs give 1 or 2 vertices."""
    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if len(pts) <= 2:
        return pts

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    lower: list[np.ndarray] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[np.ndarray] = []
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1])


def pad_polygons(polys: list[np.ndarray]) -> torch.Tensor:
    """List of (K_i, 2) polygons → (B, K, 2), padded by repeating the last vertex (zero-length edges)."""
    k = max(len(p) for p in polys)
    out = np.zeros((len(polys), k, 2), dtype=np.float32)
    for i, p in enumerate(polys):
        out[i, : len(p)] = p
        out[i, len(p):] = p[-1]
    return torch.from_numpy(out)


def polygon_distance(polys: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Distance from each grid point to each convex polygon (0 inside).

    Args:
        polys: (B, K, 2) convex polygons in either orientation (padded with repeated vertices).
        grid: (P, 2) points.
    Returns:
        (B, P) distances.
    """
    a = polys                                    # (B, K, 2)
    b = torch.roll(polys, shifts=-1, dims=1)     # next vertex
    e = b - a                                    # (B, K, 2)
    d = grid[None, None] - a[:, :, None]         # (B, K, P, 2)
    cross = e[..., None, 0] * d[..., 1] - e[..., None, 1] * d[..., 0]  # (B, K, P)
    valid = (e.norm(dim=-1) > 1e-6)[..., None]   # ignore zero-length edges
    eps = 1e-4
    pos = torch.where(valid, cross >= -eps, torch.ones_like(cross, dtype=torch.bool)).all(dim=1)
    neg = torch.where(valid, cross <= eps, torch.ones_like(cross, dtype=torch.bool)).all(dim=1)
    n_valid = valid.squeeze(-1).sum(dim=1)       # polygons with < 3 real edges have no interior
    inside = (pos | neg) & (n_valid >= 3)[:, None]
    ee = (e * e).sum(-1).clamp_min(1e-12)[..., None]                    # (B, K, 1)
    t = ((d * e[:, :, None]).sum(-1) / ee).clamp(0.0, 1.0)             # (B, K, P)
    closest = a[:, :, None] + t[..., None] * e[:, :, None]
    dist = (grid[None, None] - closest).norm(dim=-1).amin(dim=1)       # (B, P)
    return torch.where(inside, torch.zeros_like(dist), dist)


def convex_hull_mask(points: Tensor, h: int, w: int, *, tolerance: float = 1e-3) -> Tensor:
    """(B, H, W) bool: pixel centres inside the filled convex hull of each (B, K, 2) point set.

    Batched and hull-free: an edge (i, j) supports the hull when every point lies on its left
    (cross product >= 0); the hull is the intersection of those half-planes. For each point we keep
    one supporting edge (hull vertices have one, interior points none), so the pixel test is one
    (K x 3) @ (3 x HW) product per sample. ``tolerance`` (pixels) includes centres on the boundary.
    Work is chunked over the batch to bound memory.
    """
    pts = points.float()
    b, k, _ = pts.shape
    grid = _pixel_centres(h, w, pts.device)
    homog = torch.cat([grid, torch.ones_like(grid[:, :1])], dim=1).T  # (3, HW)
    chunk = max(1, min(2**23 // max(k**3, 1), 2**24 // max(k * h * w, 1)))
    out = []
    for s in range(0, b, chunk):  # chunks of the batch, not single samples
        out.append(_hull_chunk(pts[s:s + chunk], homog, tolerance).view(-1, h, w))
    return torch.cat(out, dim=0) if out else torch.zeros((0, h, w), dtype=torch.bool, device=pts.device)


def _hull_chunk(pts: Tensor, homog: Tensor, tolerance: float) -> Tensor:
    d = pts[:, None, :, :] - pts[:, :, None, :]  # d[b, i, j] = p_j - p_i
    cross = d[:, :, :, None, 0] * d[:, :, None, :, 1] - d[:, :, :, None, 1] * d[:, :, None, :, 0]  # (B,i,j,m)
    length = d.norm(dim=-1)  # (B, i, j)
    supporting = ((cross / length.clamp_min(1e-6)[..., None]) >= -tolerance).all(dim=-1) & (length > 1e-4)
    # keep the longest supporting edge per start point (collinear candidates give the same line)
    score = torch.where(supporting, length, torch.full_like(length, -1.0))
    best = score.argmax(dim=2)  # (B, K)
    valid = score.amax(dim=2) > 0  # (B, K)
    e = torch.gather(d, 2, best[..., None, None].expand(-1, -1, 1, 2)).squeeze(2)  # (B, K, 2)
    norm = e.norm(dim=-1).clamp_min(1e-6)
    # signed distance of x to edge i: (e_x (y - p_y) - e_y (x - p_x)) / |e| = a x + b y + c
    a = -e[..., 1] / norm
    bb = e[..., 0] / norm
    c = (e[..., 1] * pts[..., 0] - e[..., 0] * pts[..., 1]) / norm
    # points without a supporting edge get the always-true constraint 0 x + 0 y + 1 >= 0
    coef = torch.stack([torch.where(valid, a, 0.0), torch.where(valid, bb, 0.0), torch.where(valid, c, 1.0)],
                       dim=-1)
    inside = (coef @ homog).amin(dim=1) >= -tolerance  # (B, HW)
    return inside & valid.any(dim=1)[:, None] & _hull_area_positive(pts)[:, None]


def _hull_area_positive(pts: Tensor) -> Tensor:
    """(B,) True when the points are not all (nearly) collinear."""
    c = pts - pts.mean(dim=1, keepdim=True)
    sxx = (c[..., 0] * c[..., 0]).sum(1)
    syy = (c[..., 1] * c[..., 1]).sum(1)
    sxy = (c[..., 0] * c[..., 1]).sum(1)
    return sxx * syy - sxy * sxy > 1e-6 * ((sxx + syy) ** 2).clamp_min(1e-12)


def _pixel_centres(h: int, w: int, device: torch.device) -> Tensor:
    """(H * W, 2) pixel-centre coordinates (x, y), row-major."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


__all__ = ["TEMPLATE_68", "apply_transform", "canonical_landmarks", "convex_hull", "convex_hull_mask",
           "pad_polygons", "polygon_distance", "similarity_transform", "template_landmarks"]
