"""Local (landmark-driven) warping: no-op cases, locality, landmark consistency, randomness, and
equality with the original (per-bump, unvectorised) implementation kept below as a reference."""

from __future__ import annotations

import pytest
import torch
from _helpers import DeviceReads
from torch import Tensor

from workbench.config import describe
from workbench.data.geometry import template_landmarks
from workbench.data.landmarks import PARTS
from workbench.errors import ConfigError
from workbench.views import LocalWarpConfig, _ops, local_warp, render_faces, warp
from workbench.views.warp import (
    _CUT,
    MAX_SLOPE,
    _field,
    _field_at,
    face_size,
    inter_ocular,
    sample_warp_params,
    warp_unit,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def faces(b: int = 8, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    lm = template_landmarks(size, b, jitter=0.003, scale_jitter=0.08, generator=g)
    x = render_faces(lm, size, g)
    return x + 0.02 * torch.rand(x.shape, generator=g), lm  # texture everywhere


def test_noop_at_zero_magnitude_and_zero_p():
    x, lm = faces()
    out, lm2 = local_warp(x, lm, LocalWarpConfig(magnitude=0.0), gen())
    assert torch.equal(out, x) and torch.equal(lm2, lm)
    out, lm2 = local_warp(x, lm, LocalWarpConfig(p=0.0), gen())
    assert torch.equal(out, x) and torch.equal(lm2, lm)


@pytest.mark.parametrize("pin", [("jaw", "nose"), ()])
def test_changes_pixels_only_near_chosen_regions(pin):
    x, lm = faces()
    cfg = LocalWarpConfig(magnitude=0.08, radius=0.1, pin=pin)
    out, lm2 = local_warp(x, lm, cfg, gen(1))
    changed = (out != x).any(dim=1)  # (B, H, W); untouched pixels are copied bit-exactly
    assert changed.flatten(1).any(dim=1).all()  # every face was warped
    # allowed zone: within 3 sigma of any landmark of the warp regions
    idx = sorted({i for r in cfg.regions for i in PARTS[r]})
    sigma = cfg.radius * warp_unit(lm, cfg)
    grid = _ops.pixel_grid(64, 64, torch.device("cpu"))
    d2 = ((grid[None, :, :, None] - lm[:, None, None, idx]) ** 2).sum(-1).amin(-1)
    zone = d2 <= (3 * sigma[:, None, None]) ** 2 + 1e-3
    assert not (changed & ~zone).any()
    rigid = list(PARTS["jaw"]) + list(PARTS["nose"])
    if pin:  # contour and nose pinned by construction
        assert torch.equal(lm2[:, rigid], lm[:, rigid])
        below_chin = grid[None, :, :, 1] > lm[:, 8, 1, None, None] + 1
        assert not (changed & below_chin).any()
    else:  # only those beyond 3 sigma of every expression landmark are guaranteed still
        far = torch.cdist(lm[:, rigid], lm[:, idx]).amin(-1) > 3 * sigma[:, None]
        assert far.any()
        assert torch.equal(lm2[:, rigid][far], lm[:, rigid][far])
    # expression landmarks did move
    assert (lm2[:, idx] - lm[:, idx]).norm(dim=-1).amax(dim=1).gt(0.5).all()


def test_landmarks_follow_the_warped_image():
    size = 64
    lm = template_landmarks(size, 6, scale_jitter=0.05, generator=gen(3))
    cfg = LocalWarpConfig(magnitude=0.12, radius=0.12, regions=("mouth",), points_per_region=3, pin=(), unit="face")
    grid = _ops.pixel_grid(size, size, torch.device("cpu"))
    for i in (48, 54, 57):  # mouth corners and lower lip
        blob = torch.exp(-((grid[None] - lm[:, None, None, i]) ** 2).sum(-1) / (2 * 1.0**2))
        x = blob[:, None].expand(-1, 3, -1, -1).contiguous()
        out, lm2 = local_warp(x, lm, cfg, gen(4))
        assert (lm2[:, i] - lm[:, i]).norm(dim=-1).max() > 1.5  # the point really moved
        w = out[:, 0] * (((grid[None] - lm2[:, None, None, i]) ** 2).sum(-1) < 25)
        centroid = (grid[None] * w[..., None]).sum((1, 2)) / w.sum((1, 2))[:, None]
        err = (centroid - lm2[:, i]).norm(dim=-1)
        assert err.max() < 0.5, err


def test_dense_control_points_never_fold():
    x, lm = faces(8)
    cfg = LocalWarpConfig(magnitude=0.3, radius=0.2, regions=("mouth",), points_per_region=20, pin=())
    g = gen(6)
    ctrl, delta, sigma = sample_warp_params(lm, cfg, g)
    assert (_field(64, 64, ctrl, delta, sigma)[1] > 1).any()  # unscaled it would fold
    out, lm2 = local_warp(x, lm, cfg, gen(6))
    assert out.isfinite().all()
    # the applied backward map x -> x - d(x) has a positive Jacobian determinant everywhere
    g = gen(6)
    ctrl, delta, sigma = sample_warp_params(lm, cfg, g)
    disp, slope = _field(64, 64, ctrl, delta, sigma)
    disp = disp.permute(0, 2, 3, 1) * (MAX_SLOPE / slope).clamp(max=1).view(-1, 1, 1, 1)
    mapped = _ops.pixel_grid(64, 64, torch.device("cpu")) - disp
    jx = mapped[:, :-1, 1:] - mapped[:, :-1, :-1]
    jy = mapped[:, 1:, :-1] - mapped[:, :-1, :-1]
    det = jx[..., 0] * jy[..., 1] - jx[..., 1] * jy[..., 0]
    assert det.min() > 0.1


def test_landmarks_invert_the_backward_map():
    x, lm = faces(8)
    cfg = LocalWarpConfig(magnitude=0.1)
    g = gen(5)
    state = g.get_state()
    _, lm2 = local_warp(x, lm, cfg, g)
    g.set_state(state)
    ctrl, delta, sigma = sample_warp_params(lm, cfg, g)
    delta = delta * (MAX_SLOPE / _field(64, 64, ctrl, delta, sigma)[1]).clamp(max=1).view(-1, 1, 1)
    # output pixel y shows input pixel y - d(y): the displaced landmark must map back to the original
    back = lm2 - _field_at(lm2.transpose(1, 2).contiguous(), ctrl, delta, sigma)[:, :, 0].transpose(1, 2)
    torch.testing.assert_close(back, lm, atol=1e-3, rtol=0)


def test_deterministic_and_per_sample():
    x, lm = faces(1)
    x8, lm8 = x.expand(8, -1, -1, -1).contiguous(), lm.expand(8, -1, -1).contiguous()
    a, la = local_warp(x8, lm8, LocalWarpConfig(), gen(7))
    b, lb = local_warp(x8, lm8, LocalWarpConfig(), gen(7))
    assert torch.equal(a, b) and torch.equal(la, lb)
    flat = a.flatten(1)
    assert ((torch.cdist(flat, flat) + 1e9 * torch.eye(8)) > 1e-4).all()  # each copy warped differently
    cfg = LocalWarpConfig()
    ctrl, delta, sigma = sample_warp_params(lm8, cfg, gen(7))
    assert ctrl.shape == (8, 9, 2) and delta.shape == (8, 9, 2) and sigma.shape == (8, 9)
    size = inter_ocular(lm8)[:, None]  # the default unit
    lengths = delta.norm(dim=-1)
    assert (lengths <= cfg.magnitude * size + 1e-4).all() and (lengths <= sigma + 1e-4).all()
    assert (lengths >= torch.minimum(0.5 * cfg.magnitude * size, sigma) - 1e-4).all()
    assert (sigma <= cfg.radius * size + 1e-4).all()


def test_magnitude_and_radius_are_in_inter_ocular_distances():
    """Default unit: each face's IOD (outer eye corners 36-45). The same face at twice the size gets
    exactly twice the displacements and sigmas, a wider face in the same image wider bumps; 'face'
    keeps the former unit (landmark box size)."""
    from workbench.data.landmarks import inter_ocular_distance

    _, lm = faces(6, size=48)
    iod = inter_ocular(lm)
    torch.testing.assert_close(iod, torch.as_tensor(inter_ocular_distance(lm.numpy())), rtol=1e-6, atol=1e-5)
    cfg = LocalWarpConfig()
    torch.testing.assert_close(warp_unit(lm, cfg, (48, 48)), iod)
    _, d1, s1 = sample_warp_params(lm, cfg, gen(2), (48, 48))
    _, d2, s2 = sample_warp_params(lm * 2, cfg, gen(2), (96, 96))
    torch.testing.assert_close(d2, 2 * d1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2, 2 * s1, rtol=1e-5, atol=1e-5)
    unpinned = LocalWarpConfig(pin=())  # sigma = radius x IOD exactly
    _, _, s = sample_warp_params(lm, unpinned, gen(2), (48, 48))
    torch.testing.assert_close(s, (0.3 * iod)[:, None].expand_as(s))
    wide = lm.clone()
    wide[..., 0] = 24 + 2 * (lm[..., 0] - 24)  # eye corners about twice as far apart, same image
    assert (inter_ocular(wide) > 1.9 * iod).all()
    _, _, s_wide = sample_warp_params(wide, unpinned, gen(2), (48, 48))
    torch.testing.assert_close(s_wide, (0.3 * inter_ocular(wide))[:, None].expand_as(s_wide))
    torch.testing.assert_close(warp_unit(lm, LocalWarpConfig(unit="face")), face_size(lm))


def test_rows_without_an_inter_ocular_distance_fall_back_to_the_image_size():
    _, lm = faces(4, size=48)
    lm = lm.clone()
    lm[1, 36] = float("nan")  # a missing eye corner
    lm[2] = 0.0  # placeholder landmarks (ContraWarping zeroes rows without landmarks)
    cfg = LocalWarpConfig(fallback_iod=0.4)
    unit = warp_unit(lm, cfg, (48, 48))
    assert torch.isfinite(unit).all()
    torch.testing.assert_close(unit[[1, 2]], torch.full((2,), 0.4 * 48))
    torch.testing.assert_close(unit[[0, 3]], inter_ocular(lm[[0, 3]]))
    assert (warp_unit(lm, cfg) >= 1).all()  # without the image size: landmark box based, still >= 1 px


def test_default_warp_moves_landmarks_like_an_expression():
    """Defaults (0.2 / 0.3 IOD, jaw pinned): at 48 px the most-moved landmark of a face moves about
    0.1-0.25 IOD (expressions: 0.13-0.30), several px; the former defaults (0.06 / 0.1 face size, jaw and
    nose pinned) moved it < 0.1 IOD (~2 px), less than any expression."""
    x, lm = faces(16, size=48, seed=4)
    iod = inter_ocular(lm)

    def moved(cfg):
        _, lm2 = local_warp(x, lm, cfg, gen(9))
        return (lm2 - lm).norm(dim=-1).amax(dim=1) / iod

    new = moved(LocalWarpConfig())
    old = moved(LocalWarpConfig(unit="face", magnitude=0.06, radius=0.1, pin=("jaw", "nose")))
    assert 0.1 < float(new.mean()) < 0.25, new
    assert float(old.mean()) < 0.1 and float(new.mean()) > 1.4 * float(old.mean())
    assert float((new * iod).mean()) > 2.5  # pixels at 48 px
    _, lm2 = local_warp(x, lm, LocalWarpConfig(), gen(9))
    jaw = list(PARTS["jaw"])
    assert torch.equal(lm2[:, jaw], lm[:, jaw])  # the jaw is still pinned


def test_config_checks():
    x, lm = faces(2)
    with pytest.raises(ConfigError):
        local_warp(x, lm, LocalWarpConfig(regions=("ears",)), gen())
    with pytest.raises(ConfigError):
        local_warp(x, lm, LocalWarpConfig(pin=("neck",)), gen())
    with pytest.raises(ConfigError):
        local_warp(x, lm[:, :5], LocalWarpConfig(), gen())
    with pytest.raises(ConfigError, match="unit"):
        local_warp(x, lm, LocalWarpConfig(unit="px"), gen())
    assert all(s.help for s in describe(LocalWarpConfig))


# --------------------------------------------------------------------------- reference implementation
# The original per-bump implementation (before vectorisation): the fast one must match it up to
# float rounding (images 1e-5, landmarks 1e-4 px).
def ref_field(points: Tensor, centres: Tensor, delta: Tensor, sigma: Tensor) -> Tensor:
    """Displacement at (B, H, W, 2) grid points from K bumps: centres / delta (B, K, 2), sigma (B, K)."""
    disp = torch.zeros_like(points)
    for k in range(centres.shape[1]):
        diff = points - centres[:, k, None, None, :]
        r2 = (diff * diff).sum(-1)
        s2 = sigma[:, k, None, None] ** 2
        phi = ((torch.exp(-r2 / (2 * s2)) - _CUT) / (1 - _CUT)).clamp_min(0)
        disp = disp + phi[..., None] * delta[:, k, None, None, :]
    return disp


def ref_field_at(points: Tensor, centres: Tensor, delta: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """Displacement (B, P, 2) and its Jacobian (B, P, 2, 2) at points (B, P, 2)."""
    diff = points[:, :, None, :] - centres[:, None, :, :]
    r2 = (diff * diff).sum(-1)
    s2 = sigma[:, None, :] ** 2
    g = torch.exp(-r2 / (2 * s2))
    inside = g > _CUT
    phi = torch.where(inside, (g - _CUT) / (1 - _CUT), torch.zeros_like(g))
    dphi = torch.where(inside, -g / ((1 - _CUT) * s2), torch.zeros_like(g))[..., None] * diff
    return (phi[..., None] * delta[:, None]).sum(2), torch.einsum("bkd,bpke->bpde", delta, dphi)


def ref_forward_points(points: Tensor, centres: Tensor, delta: Tensor, sigma: Tensor, steps: int = 8) -> Tensor:
    y = points + ref_field_at(points, centres, delta, sigma)[0]
    eye = torch.eye(2)
    for _ in range(steps):
        d, jac = ref_field_at(y, centres, delta, sigma)
        r = y - d - points
        a = eye - jac
        det = (a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]).clamp_min(1e-6)
        step_x = (a[..., 1, 1] * r[..., 0] - a[..., 0, 1] * r[..., 1]) / det
        step_y = (-a[..., 1, 0] * r[..., 0] + a[..., 0, 0] * r[..., 1]) / det
        y = y - torch.stack([step_x, step_y], -1)
    return y


def ref_near_cut(points: Tensor, centres: Tensor, delta: Tensor, sigma: Tensor, rtol: float) -> Tensor:
    """(B, H, W) bool: where the strongest moving bump is within ``rtol`` of the 3-sigma cut (in float64).

    Only there may the two float32 implementations disagree on whether a pixel moves at all: the fast
    one multiplies two per-axis exponentials, the reference takes one exponential of the squared
    distance, a few ulp apart, and which side of the cut such a value rounds to depends on the CPU's
    exp / SIMD code (bit-exact agreement on one machine is luck, not a property).
    """
    diff = points[..., None, :].double() - centres[:, None, None].double()  # (B, H, W, K, 2)
    g = torch.exp(-(diff * diff).sum(-1) / (2 * sigma[:, None, None].double() ** 2))
    g = torch.where((delta != 0).any(-1)[:, None, None], g, 0.0).amax(-1)
    return (g - _CUT).abs() <= rtol * _CUT


def ref_max_slope(disp: Tensor) -> Tensor:
    gx = disp[:, :-1, 1:] - disp[:, :-1, :-1]
    gy = disp[:, 1:, :-1] - disp[:, :-1, :-1]
    return torch.sqrt((gx * gx).sum(-1) + (gy * gy).sum(-1)).flatten(1).amax(dim=1)


def ref_local_warp(images: Tensor, landmarks: Tensor, cfg: LocalWarpConfig,
                   generator: torch.Generator) -> tuple[Tensor, Tensor]:
    b, _, h, w = images.shape
    ctrl, delta, sigma = sample_warp_params(landmarks, cfg, generator)
    grid = _ops.pixel_grid(h, w, images.device).expand(b, h, w, 2)
    disp = ref_field(grid, ctrl, delta, sigma)
    scale = (MAX_SLOPE / ref_max_slope(disp).clamp_min(1e-12)).clamp(max=1.0)
    disp = disp * scale.view(-1, 1, 1, 1)
    delta = delta * scale.view(-1, 1, 1)
    warped = _ops.sample_at_pixels(images, grid - disp, padding="border")
    out = torch.where((disp != 0).any(dim=-1)[:, None], warped, images)
    return out, ref_forward_points(landmarks.float(), ctrl, delta, sigma).to(landmarks.dtype)


CONFIGS = {
    "default": LocalWarpConfig(),
    "half": LocalWarpConfig(p=0.5, magnitude=0.1),
    "off": LocalWarpConfig(magnitude=0.0),
    "unpinned": LocalWarpConfig(magnitude=0.2, radius=0.15, pin=()),
    "dense": LocalWarpConfig(magnitude=0.3, radius=0.2, regions=("mouth",), points_per_region=20, pin=()),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_field_matches_reference(name):
    lm = template_landmarks(48, 12, jitter=0.01, scale_jitter=0.1, generator=gen(11))
    lm = lm * torch.tensor([1.0, 40 / 48])  # non-square: 48 wide, 40 high
    ctrl, delta, sigma = sample_warp_params(lm, CONFIGS[name], gen(12))
    disp, slope = _field(40, 48, ctrl, delta, sigma)
    grid = _ops.pixel_grid(40, 48, torch.device("cpu")).expand(12, 40, 48, 2)
    ref = ref_field(grid, ctrl, delta, sigma)
    torch.testing.assert_close(disp.permute(0, 2, 3, 1), ref, atol=1e-5, rtol=0)
    # same support (untouched pixels stay exact), except where the strongest bump is within float32
    # rounding (~1e-6) of the cut: there either side of the cut is right
    near_cut = ref_near_cut(grid, ctrl, delta, sigma, rtol=1e-5)
    assert near_cut.float().mean() < 1e-3
    assert not (((disp.permute(0, 2, 3, 1) != 0) != (ref != 0)) & ~near_cut[..., None]).any()
    torch.testing.assert_close(slope, ref_max_slope(ref), atol=1e-6, rtol=1e-5)
    if name == "off":
        assert not disp.any()


@pytest.mark.parametrize("name", CONFIGS)
def test_local_warp_matches_reference(name, monkeypatch):
    x, lm = faces(12, seed=13)
    cfg = CONFIGS[name]
    ref, ref_lm = ref_local_warp(x, lm, cfg, gen(14))
    # "dense" overlaps 20 bumps (unscaled field up to ~60 px): there the reference's own float32 error
    # is already ~1e-5 px, and the resampling turns a few ulp of the field into ~1e-5 of intensity
    atol = 3e-5 if name == "dense" else 1e-5
    # the fringe of the support, where the field is below ~1e-5 of a bump's displacement: one implementation
    # may copy such a pixel and the other move it by < 1e-4 px (which may or may not round back to the input)
    ctrl, delta, sigma = sample_warp_params(lm, cfg, gen(14))
    fringe = ref_near_cut(_ops.pixel_grid(64, 64, torch.device("cpu")).expand(12, 64, 64, 2), ctrl, delta, sigma,
                          rtol=1e-3)
    assert fringe.float().mean() < 1e-3
    for chunk in (1, warp._CPU_CHUNK, 1 << 40):  # one sample per chunk, the default, one chunk (as on CUDA)
        monkeypatch.setattr(warp, "_CPU_CHUNK", chunk)
        out, lm2 = local_warp(x, lm, cfg, gen(14))
        torch.testing.assert_close(out, ref, atol=atol, rtol=0)
        torch.testing.assert_close(lm2, ref_lm, atol=1e-4, rtol=0)
        # the same pixels are copied bit-exactly (outside that rounding fringe)
        assert not (((out == x) != (ref == x)) & ~fringe[:, None]).any()
    if name == "off":
        assert torch.equal(out, x) and torch.equal(lm2, lm)


@pytest.mark.parametrize("chunk", [1, 1 << 40])  # CPU chunks / one chunk, as on CUDA
def test_no_device_reads_and_autocast_is_off(monkeypatch, chunk):
    monkeypatch.setattr(warp, "_CPU_CHUNK", chunk)
    x, lm = faces(4)
    local_warp(x, lm, LocalWarpConfig(p=0.5), gen(2))  # builds the per-device landmark index tensors once
    with DeviceReads() as reads:  # no .item(), no data-dependent shapes: nothing would stall a CUDA stream
        a = local_warp(x, lm, LocalWarpConfig(p=0.5), gen(3))
    assert reads.host + reads.checks + reads.shapes + reads.python_data == []
    with torch.autocast("cpu", dtype=torch.bfloat16):  # switched off inside: bit-identical float32 results
        b = local_warp(x, lm, LocalWarpConfig(p=0.5), gen(3))
    assert all(torch.equal(u, v) and v.dtype == torch.float32 for u, v in zip(a, b))
