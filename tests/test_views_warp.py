"""Local (landmark-driven) warping: no-op cases, locality, landmark consistency, randomness."""

from __future__ import annotations

import pytest
import torch

from workbench.config import describe
from workbench.data.landmarks import PARTS
from workbench.errors import ConfigError
from workbench.views import LocalWarpConfig, _ops, local_warp, render_faces, template_landmarks
from workbench.views.warp import MAX_SLOPE, _field, _field_at, _max_slope, face_size, sample_warp_params


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
    sigma = cfg.radius * face_size(lm)
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
    cfg = LocalWarpConfig(magnitude=0.12, radius=0.12, regions=("mouth",), points_per_region=3, pin=())
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
    grid = _ops.pixel_grid(64, 64, torch.device("cpu")).expand(8, 64, 64, 2)
    assert (_max_slope(_field(grid, ctrl, delta, sigma)) > 1).any()  # unscaled it would fold
    out, lm2 = local_warp(x, lm, cfg, gen(6))
    assert out.isfinite().all()
    # the applied backward map x -> x - d(x) has a positive Jacobian determinant everywhere
    g = gen(6)
    ctrl, delta, sigma = sample_warp_params(lm, cfg, g)
    disp = _field(grid, ctrl, delta, sigma)
    disp = disp * (MAX_SLOPE / _max_slope(disp)).clamp(max=1).view(-1, 1, 1, 1)
    mapped = grid - disp
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
    grid = _ops.pixel_grid(64, 64, torch.device("cpu")).expand(8, 64, 64, 2)
    delta = delta * (MAX_SLOPE / _max_slope(_field(grid, ctrl, delta, sigma))).clamp(max=1).view(-1, 1, 1)
    # output pixel y shows input pixel y - d(y): the displaced landmark must map back to the original
    back = lm2 - _field_at(lm2, ctrl, delta, sigma)[0]
    torch.testing.assert_close(back, lm, atol=1e-3, rtol=0)


def test_deterministic_and_per_sample():
    x, lm = faces(1)
    x8, lm8 = x.expand(8, -1, -1, -1).contiguous(), lm.expand(8, -1, -1).contiguous()
    a, la = local_warp(x8, lm8, LocalWarpConfig(), gen(7))
    b, lb = local_warp(x8, lm8, LocalWarpConfig(), gen(7))
    assert torch.equal(a, b) and torch.equal(la, lb)
    flat = a.flatten(1)
    assert ((torch.cdist(flat, flat) + 1e9 * torch.eye(8)) > 1e-4).all()  # each copy warped differently
    ctrl, delta, sigma = sample_warp_params(lm8, LocalWarpConfig(), gen(7))
    assert ctrl.shape == (8, 9, 2) and delta.shape == (8, 9, 2) and sigma.shape == (8, 9)
    size = face_size(lm8)[:, None]
    lengths = delta.norm(dim=-1)
    assert (lengths <= 0.06 * size + 1e-4).all() and (lengths <= sigma + 1e-4).all()
    assert (lengths >= torch.minimum(0.5 * 0.06 * size, sigma) - 1e-4).all()
    assert (sigma <= 0.1 * size + 1e-4).all()


def test_config_checks():
    x, lm = faces(2)
    with pytest.raises(ConfigError):
        local_warp(x, lm, LocalWarpConfig(regions=("ears",)), gen())
    with pytest.raises(ConfigError):
        local_warp(x, lm, LocalWarpConfig(pin=("neck",)), gen())
    with pytest.raises(ConfigError):
        local_warp(x, lm[:, :5], LocalWarpConfig(), gen())
    assert all(s.help for s in describe(LocalWarpConfig))
