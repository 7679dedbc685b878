"""Facial regions from 68 landmarks, and attention scores per region.

Regions (:data:`REGIONS`, in this order) are **disjoint and cover the image**:

=================  ==========================================================================
``brows``          dilated convex hull of each brow (17-21, 22-26)
``eyes``           dilated convex hull of each eye (36-41, 42-47)
``nose``           dilated convex hull of the nose (27-35)
``mouth``          dilated convex hull of the outer lips (48-59)
``cheeks_jaw``     convex hull of the jaw line (0-16) minus the parts above: cheeks, chin, jaw
``rest_of_face``   face minus everything above: forehead, temples, glabella
``outside_face``   not face: hair, background, neck
=================  ==========================================================================

The *face* is the convex hull of the jaw points, the brows and a forehead extension: the brow
points shifted "up" (from the mouth towards the eyes) by ``forehead`` x inter-ocular distance.
Part hulls are grown by ``dilate`` x inter-ocular distance (distance-to-polygon test, so thin
hulls such as a brow arc become bands). Where dilated parts overlap, pixels go to the first of
``eyes, brows, mouth, nose`` (the expressive parts win over the nose).

Rasterisation is batched in torch: point-in-convex-polygon by half-planes plus point-to-segment
distances, pixel centres at integer coordinates (as in the landmark convention of
:mod:`workbench.data.images`).

Scores (:func:`region_scores`): ``mass`` = share of the heatmap's total mass inside a region,
``area`` = share of the image's pixels, ``score = mass / area``: **1 = as much attention as a
uniform map would give**, > 1 = the region attracts attention, < 1 = it is ignored. The pointing
game asks whether the heatmap's maximum falls inside one of the regions an expression moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from workbench.data.geometry import convex_hull, pad_polygons, polygon_distance
from workbench.data.landmarks import (
    BROWS,
    EYES,
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    NOSE,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
)
from workbench.errors import WorkbenchError

#: Region names, in the order of the mask / score axis.
REGIONS: tuple[str, ...] = ("brows", "eyes", "nose", "mouth", "cheeks_jaw", "rest_of_face", "outside_face")
REGION_INDEX: dict[str, int] = {r: i for i, r in enumerate(REGIONS)}
#: The named facial parts (the first four regions).
PART_REGIONS: tuple[str, ...] = REGIONS[:4]

#: Regions each canonical expression moves, from its EMFACS action units (see
#: ``shared/design/synthetic-faces.md``): happiness AU6+12 (cheeks, lid/crow's feet, lip corners),
#: sadness AU1+4+15, surprise AU1+2+5+26, fear AU1+2+4+5+7+20+26, anger AU4+5+7+23,
#: disgust AU9+15+16, contempt unilateral AU12+14; neutral moves nothing (excluded from the
#: pointing game).
FACS_REGIONS: dict[str, tuple[str, ...]] = {
    "neutral": (),
    "happiness": ("mouth", "cheeks_jaw", "eyes"),
    "sadness": ("brows", "mouth"),
    "surprise": ("brows", "eyes", "mouth"),
    "fear": ("brows", "eyes", "mouth"),
    "disgust": ("nose", "mouth"),
    "anger": ("brows", "eyes", "mouth"),
    "contempt": ("mouth",),
}

# names a colleague's table might use for our regions
_REGION_ALIASES: dict[str, str] = {
    "brow": "brows", "eyebrows": "brows", "eyebrow": "brows", "eye": "eyes", "lids": "eyes", "eyelids": "eyes",
    "lips": "mouth", "lip": "mouth", "cheeks": "cheeks_jaw", "cheek": "cheeks_jaw", "jaw": "cheeks_jaw",
    "chin": "cheeks_jaw", "forehead": "rest_of_face", "nose": "nose", "mouth": "mouth", "eyes": "eyes",
    "brows": "brows", "cheeks_jaw": "cheeks_jaw", "rest_of_face": "rest_of_face",
}

# priority where dilated parts overlap (first wins)
_PART_PRIORITY: tuple[str, ...] = ("eyes", "brows", "mouth", "nose")
_PART_POLYGONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "brows": (RIGHT_BROW, LEFT_BROW),
    "eyes": (RIGHT_EYE, LEFT_EYE),
    "nose": (NOSE,),
    "mouth": (OUTER_LIPS,),
}


# ---------------------------------------------------------------------------------------------
# expected regions
# ---------------------------------------------------------------------------------------------

def _canonical_regions(names: Iterable[object]) -> tuple[str, ...]:
    out: list[str] = []
    for n in names:
        r = _REGION_ALIASES.get(str(n).strip().lower())
        if r is not None and r not in out:
            out.append(r)
    return tuple(r for r in REGIONS if r in out)


def expected_regions(expression: str) -> tuple[str, ...]:
    """Regions the canonical ``expression`` moves by the FACS table :data:`FACS_REGIONS`
    (``()`` for neutral and unknown labels: such images are excluded from the pointing game)."""
    from workbench.data.vocabulary import suggest_expression

    name = suggest_expression(expression) if isinstance(expression, str) else None
    return FACS_REGIONS.get(name or "", ())


def moving_regions(expression: str) -> tuple[str, ...]:
    """Regions the *synthetic generator* moves for ``expression``.

    Uses ``workbench.data.synth.MOVING_REGIONS`` (or ``workbench.data.synth.expressions``'s) when
    the generator provides it (exact ground truth
    of the synthetic set; its region names are mapped onto :data:`REGIONS` with common aliases,
    e.g. ``lips`` → ``mouth``, ``cheeks`` → ``cheeks_jaw``); otherwise, or for expressions it
    does not list, the FACS table (:func:`expected_regions`).
    """
    table = _synth_table()
    if table:
        from workbench.data.vocabulary import suggest_expression

        name = suggest_expression(expression) if isinstance(expression, str) else None
        if name in table:
            return table[name]
    return expected_regions(expression)


def _synth_table() -> dict[str, tuple[str, ...]]:
    import importlib

    raw = None
    for mod in ("workbench.data.synth", "workbench.data.synth.expressions"):
        try:
            raw = getattr(importlib.import_module(mod), "MOVING_REGIONS", None)
        except Exception:  # noqa: BLE001 - the generator is optional here
            raw = None
        if isinstance(raw, dict):
            break
    if not isinstance(raw, dict):
        return {}
    table: dict[str, tuple[str, ...]] = {}
    for expr, names in raw.items():
        if isinstance(names, str):
            names = (names,)
        try:
            table[str(expr)] = _canonical_regions(names)
        except TypeError:
            continue
    return table


def expected_mask(expressions: Sequence[str], table: str = "facs") -> torch.Tensor:
    """``(B, R)`` bool: which regions each image's expression moves.

    Args:
        expressions: canonical expression names, one per image.
        table: ``"facs"`` (:func:`expected_regions`, default) or ``"synth"`` (:func:`moving_regions`).
    """
    if table not in ("facs", "synth"):
        raise WorkbenchError(f"table must be 'facs' or 'synth', got '{table}'")
    lookup = expected_regions if table == "facs" else moving_regions
    out = torch.zeros(len(expressions), len(REGIONS), dtype=torch.bool)
    for i, e in enumerate(expressions):
        for r in lookup(e):
            out[i, REGION_INDEX[r]] = True
    return out


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------

def _check_landmarks(landmarks: torch.Tensor | np.ndarray) -> torch.Tensor:
    lm = torch.as_tensor(landmarks, dtype=torch.float32).detach().cpu()
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise WorkbenchError(f"landmarks must be (B, 68, 2), got shape {tuple(lm.shape)}")
    if not torch.isfinite(lm).all():
        bad = int((~torch.isfinite(lm)).flatten(1).any(1).sum())
        raise WorkbenchError(f"{bad} faces have missing (NaN) landmarks; region masks need all 68 points "
                             "(select images with landmarks, e.g. via `workbench faces`)")
    return lm


def region_masks(landmarks: torch.Tensor | np.ndarray, size: int | tuple[int, int], *,
                 image_size: int | tuple[int, int] | None = None, dilate: float = 0.1,
                 forehead: float = 0.6, chunk: int = 16) -> torch.Tensor:
    """Disjoint masks of :data:`REGIONS` for a batch of faces.

    Args:
        landmarks: (B, 68, 2) or (68, 2) (x, y) pixel coordinates of the image they belong to.
        size: mask size ``H`` or ``(H, W)`` (use the heatmap size).
        image_size: size of the image the landmarks belong to when it differs from ``size``
            (default: same); coordinates are rescaled with pixel centres at integers.
        dilate: growth of the brow/eye/nose/mouth hulls, as a fraction of the inter-ocular
            distance (default 0.1, about one brow thickness; 0 = bare hulls).
        forehead: height of the forehead extension above the brows, as a fraction of the
            inter-ocular distance (default 0.6; raise it for faces with high foreheads).
        chunk: faces rasterised at once (bounds memory: chunk x 20 x H x W floats).
    Returns:
        (B, R, H, W) bool on the CPU; every pixel belongs to exactly one region.
    """
    lm = _check_landmarks(landmarks)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if image_size is not None:
        ih, iw = (image_size, image_size) if isinstance(image_size, int) else image_size
        scale = torch.tensor([w / iw, h / ih], dtype=torch.float32)
        lm = (lm + 0.5) * scale - 0.5
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    out = [_masks_chunk(lm[s:s + chunk], grid, dilate, forehead) for s in range(0, lm.shape[0], chunk)]
    return torch.cat(out).reshape(lm.shape[0], len(REGIONS), h, w)


def _masks_chunk(lm: torch.Tensor, grid: torch.Tensor, dilate: float, forehead: float) -> torch.Tensor:
    pts = lm.numpy().astype(np.float64)
    iod = np.linalg.norm(pts[:, 36] - pts[:, 45], axis=-1)                       # (B,)
    radius = torch.from_numpy((dilate * iod).astype(np.float32))[:, None]      # (B, 1)
    parts: dict[str, torch.Tensor] = {}
    for name, groups in _PART_POLYGONS.items():
        m = torch.zeros(lm.shape[0], grid.shape[0], dtype=torch.bool)
        for idx in groups:
            polys = pad_polygons([convex_hull(p[list(idx)]) for p in pts])
            m |= polygon_distance(polys, grid) <= radius + 1e-4
        parts[name] = m
    # "up" = from the mouth centre towards the eye centre
    eyes_c = pts[:, list(EYES)].mean(1)
    mouth_c = pts[:, list(OUTER_LIPS)].mean(1)
    up = eyes_c - mouth_c
    up /= np.maximum(np.linalg.norm(up, axis=-1, keepdims=True), 1e-6)
    brows = pts[:, list(BROWS)]
    top = brows + (forehead * iod)[:, None, None] * up[:, None, :]
    face_pts = np.concatenate([pts[:, list(JAW)], brows, top], axis=1)
    face = polygon_distance(pad_polygons([convex_hull(p) for p in face_pts]), grid) <= 1e-4
    lower = polygon_distance(pad_polygons([convex_hull(p[list(JAW)]) for p in pts]), grid) <= 1e-4
    taken = torch.zeros_like(face)
    named: dict[str, torch.Tensor] = {}
    for name in _PART_PRIORITY:
        named[name] = parts[name] & ~taken
        taken |= named[name]
    named["cheeks_jaw"] = lower & ~taken
    taken |= named["cheeks_jaw"]
    named["rest_of_face"] = face & ~taken
    taken |= named["rest_of_face"]
    named["outside_face"] = ~taken
    return torch.stack([named[r] for r in REGIONS], dim=1)


# ---------------------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------------------

class RegionScores(NamedTuple):
    """Per-image, per-region attention statistics, each ``(B, R)`` float (order :data:`REGIONS`).

    Attributes:
        score: ``mass / area`` (1 = as much as a uniform map; NaN for empty regions or all-zero maps).
        mass: share of the heatmap's total mass in the region (rows sum to 1; NaN for all-zero maps).
        area: share of the image's pixels in the region (rows sum to 1).
    """

    score: torch.Tensor
    mass: torch.Tensor
    area: torch.Tensor


def _check_pair(heatmaps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hm = torch.as_tensor(heatmaps).detach().float().cpu()
    mk = torch.as_tensor(masks).detach().cpu().bool()
    if hm.ndim == 2:
        hm = hm[None]
    if mk.ndim == 3:
        mk = mk[None]
    if hm.ndim != 3 or mk.ndim != 4 or hm.shape[0] != mk.shape[0] or hm.shape[1:] != mk.shape[2:]:
        raise WorkbenchError(f"heatmaps (B, H, W) and masks (B, R, H, W) do not match: "
                             f"{tuple(hm.shape)} vs {tuple(mk.shape)}; build masks at the heatmap size")
    return hm, mk


def region_scores(heatmaps: torch.Tensor, masks: torch.Tensor) -> RegionScores:
    """Attention per region: area-normalised score, mass share and area share (see :class:`RegionScores`).

    Negative heatmap values are clipped to 0 (Grad-CAM maps are already >= 0).
    """
    hm, mk = _check_pair(heatmaps, masks)
    hm = hm.clamp_min(0)
    mkf = mk.float()
    total = hm.flatten(1).sum(1)                                             # (B,)
    mass = (mkf * hm[:, None]).flatten(2).sum(2) / total[:, None]            # NaN when total == 0
    mass = torch.where(total[:, None] > 0, mass, torch.full_like(mass, float("nan")))
    area = mkf.flatten(2).mean(2)
    score = torch.where(area > 0, mass / area.clamp_min(1e-12), torch.full_like(mass, float("nan")))
    return RegionScores(score, mass, area)


def _as_region_mask(expected: torch.Tensor | Sequence[Sequence[str]], n: int) -> torch.Tensor:
    if isinstance(expected, torch.Tensor):
        exp = expected.detach().cpu().bool()
    else:
        exp = torch.zeros(n, len(REGIONS), dtype=torch.bool)
        for i, names in enumerate(expected):
            if isinstance(names, str):
                names = (names,)
            for r in names:
                if r not in REGION_INDEX:
                    raise WorkbenchError(f"unknown region '{r}'; regions are {', '.join(REGIONS)}")
                exp[i, REGION_INDEX[r]] = True
    if exp.shape != (n, len(REGIONS)):
        raise WorkbenchError(f"expected regions must be (B, {len(REGIONS)}), got {tuple(exp.shape)}")
    return exp


def pointing_game(heatmaps: torch.Tensor, masks: torch.Tensor,
                  expected_regions: torch.Tensor | Sequence[Sequence[str]]) -> torch.Tensor:
    """``(B,)`` bool: is the heatmap's maximum (first arg-max) inside one of the expected regions?

    Args:
        expected_regions: ``(B, R)`` bool (e.g. :func:`expected_mask`) or one list of region names
            per image. Images with no expected region (neutral) and all-zero heatmaps count as
            misses; exclude the former before averaging (``AttentionResult`` stores NaN for them).
    """
    hm, mk = _check_pair(heatmaps, masks)
    exp = _as_region_mask(expected_regions, hm.shape[0])
    flat = hm.flatten(1)
    arg = flat.argmax(dim=1)
    region_at_max = mk.flatten(2)[torch.arange(hm.shape[0]), :, arg]         # (B, R)
    hit = (region_at_max & exp).any(dim=1)
    return hit & (flat.amax(dim=1) > 0)


def moving_region_share(heatmaps: torch.Tensor, masks: torch.Tensor, expressions: Sequence[str]) -> torch.Tensor:
    """``(B,)`` share of each heatmap's mass on the regions its expression moves (:func:`moving_regions`:
    the synthetic generator's exact table when available, else FACS). NaN for neutral / all-zero maps.

    Compare with the same regions' area share to see whether it beats a uniform map.
    """
    hm, mk = _check_pair(heatmaps, masks)
    if len(expressions) != hm.shape[0]:
        raise WorkbenchError(f"{len(expressions)} expressions for {hm.shape[0]} heatmaps")
    exp = expected_mask(list(expressions), table="synth")
    mass = region_scores(hm, mk).mass
    share = (mass * exp.float()).nansum(dim=1)
    bad = ~exp.any(dim=1) | torch.isnan(mass).any(dim=1)
    return torch.where(bad, torch.full_like(share, float("nan")), share)
