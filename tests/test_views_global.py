"""Global (SimCLR/BYOL) view family: geometry, colour ops, landmarks, randomness."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from workbench.config import describe, from_dict, to_dict
from workbench.data.geometry import template_landmarks
from workbench.errors import ConfigError
from workbench.views import (
    FLIP_PERMUTATION,
    GlobalViewConfig,
    _ops,
    byol_views,
    global_augment,
    render_faces,
    simclr_views,
    simfle_views,
    sslfer_views,
)
from workbench.views.global_aug import adjust_colour

PLAIN = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)




def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def faces(b: int = 8, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    lm = template_landmarks(size, b, jitter=0.003, scale_jitter=0.08, generator=g)
    return render_faces(lm, size, g), lm


def test_shapes_dtype_range_and_out_size():
    x, lm = faces()
    res = global_augment(x, GlobalViewConfig(rotate_deg=10, max_translate=0.05, solarize_p=0.5), gen(), out_size=48,
                         landmarks=lm)
    assert res.images.shape == (8, 3, 48, 48) and res.images.dtype == torch.float32
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert res.landmarks is not None and res.landmarks.shape == (8, 68, 2)
    assert res.affine.shape == (8, 2, 3) and res.flipped.shape == (8,)
    assert global_augment(x, GlobalViewConfig(), gen()).landmarks is None


def test_same_seed_same_output_other_seed_differs():
    x, lm = faces()
    a = global_augment(x, GlobalViewConfig(), gen(3), landmarks=lm)
    b = global_augment(x, GlobalViewConfig(), gen(3), landmarks=lm)
    c = global_augment(x, GlobalViewConfig(), gen(4), landmarks=lm)
    assert torch.equal(a.images, b.images) and torch.equal(a.landmarks, b.landmarks)
    assert not torch.allclose(a.images, c.images)


def test_per_sample_parameters_differ():
    x, _ = faces(1)
    x = x.expand(8, -1, -1, -1).contiguous()
    res = global_augment(x, GlobalViewConfig(), gen(1))
    flat = res.images.flatten(1)
    dists = torch.cdist(flat, flat)
    assert (dists + torch.eye(8) * 1e9).min() > 1e-3  # every pair of copies got a different view
    assert len({tuple(a.round(decimals=4).tolist()) for a in res.affine.flatten(1)}) == 8


def test_identity_and_flip_are_exact():
    x, _ = faces(4)
    ident = GlobalViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, **PLAIN)
    res = global_augment(x, ident, gen())
    torch.testing.assert_close(res.images, x, atol=1e-5, rtol=0)
    flip = dataclasses.replace(ident, hflip_p=1.0)
    res = global_augment(x, flip, gen())
    torch.testing.assert_close(res.images, torch.flip(x, dims=[3]), atol=1e-5, rtol=0)
    assert res.flipped.all()
    # known affine: x_in = W - 1 - x_out
    expected = torch.tensor([[-1.0, 0.0, 63.0], [0.0, 1.0, 0.0]]).expand(4, 2, 3)
    torch.testing.assert_close(res.affine, expected, atol=1e-4, rtol=0)


def test_downscale_of_full_image_matches_area_average():
    x = torch.rand(2, 3, 64, 64, generator=gen())
    ident = GlobalViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0, **PLAIN)
    res = global_augment(x, ident, gen(), out_size=32)
    # with align_corners=False, a 2x bilinear downscale samples between 4 pixels = 2x2 average
    torch.testing.assert_close(res.images, torch.nn.functional.avg_pool2d(x, 2), atol=1e-5, rtol=0)


def test_affine_is_what_was_sampled():
    x, _ = faces(4)
    cfg = GlobalViewConfig(rotate_deg=20, max_translate=0.1, **PLAIN)
    res = global_augment(x, cfg, gen(5), out_size=40)
    # manual bilinear sampling of the input at affine @ [q, 1] for a few output pixels
    xs = x.numpy()
    for b in range(4):
        for qx, qy in [(0, 0), (13, 27), (39, 39), (20, 5)]:
            px, py = (res.affine[b] @ torch.tensor([qx, qy, 1.0])).tolist()
            px = min(max(px, 0), 63)
            py = min(max(py, 0), 63)  # interior check only: reflection padding aside
            x0, y0 = int(np.floor(px)), int(np.floor(py))
            x1, y1 = min(x0 + 1, 63), min(y0 + 1, 63)
            fx, fy = px - x0, py - y0
            v = (xs[b, :, y0, x0] * (1 - fx) * (1 - fy) + xs[b, :, y0, x1] * fx * (1 - fy)
                 + xs[b, :, y1, x0] * (1 - fx) * fy + xs[b, :, y1, x1] * fx * fy)
            if 0 < px < 63 and 0 < py < 63:
                np.testing.assert_allclose(res.images[b, :, qy, qx].numpy(), v, atol=1e-4)


def _blob(size: int, centre: torch.Tensor, sigma: float = 1.2) -> torch.Tensor:
    grid = _ops.pixel_grid(size, size, torch.device("cpu"))
    d2 = ((grid - centre) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma**2))


def test_returned_landmarks_track_the_image():
    size = 64
    lm = template_landmarks(size, 8, scale_jitter=0.05, generator=gen(2))
    idx = [36, 54, 30]  # eye corner, mouth corner, nose tip: one channel each
    x = torch.zeros(8, 3, size, size)
    for b in range(8):
        for c, i in enumerate(idx):
            x[b, c] = _blob(size, lm[b, i])
    cfg = GlobalViewConfig(crop_scale=(0.7, 1.0), rotate_deg=25, max_translate=0.05, hflip_p=0.5,
                           padding="zeros", mirror_landmark_ids=False, **PLAIN)
    res = global_augment(x, cfg, gen(9), out_size=48, landmarks=lm)
    grid = _ops.pixel_grid(48, 48, torch.device("cpu"))
    assert res.flipped.any() and not res.flipped.all()
    for b in range(8):
        for c, i in enumerate(idx):
            target = res.landmarks[b, i]
            if not ((target > 3).all() and (target < 44).all()):
                continue  # blob cropped away
            w = res.images[b, c].clamp_min(0)
            w = w * (((grid - target) ** 2).sum(-1) < 36)  # the blob near the prediction
            centroid = (grid * w[..., None]).sum((0, 1)) / w.sum()
            assert (centroid - target).norm() < 0.35, (b, i, centroid, target)


def test_flip_relabels_landmarks_to_ibug_order():
    size = 64
    lm = template_landmarks(size, 2)  # mirror-symmetric template
    cfg = GlobalViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=1.0, **PLAIN)
    res = global_augment(render_faces(lm, size, gen()), cfg, gen(), landmarks=lm)
    torch.testing.assert_close(res.landmarks, lm, atol=1e-4, rtol=0)  # relabelled: same as before
    raw = global_augment(render_faces(lm, size, gen()), dataclasses.replace(cfg, mirror_landmark_ids=False), gen(),
                         landmarks=lm)
    assert raw.landmarks[0, 36, 0] > size / 2  # physical right-eye corner is now on the image right
    perm = torch.tensor(FLIP_PERMUTATION)
    assert torch.equal(perm[perm], torch.arange(68))  # an involution


def test_colour_ops():
    x, _ = faces(4)
    geo = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0)
    gray = global_augment(x, GlobalViewConfig(**geo, **{**PLAIN, "grayscale_p": 1.0}), gen()).images
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    sol = global_augment(x, GlobalViewConfig(**geo, **{**PLAIN, "solarize_p": 1.0}), gen()).images
    torch.testing.assert_close(sol, torch.where(x >= 0.5, 1 - x, x), atol=1e-5, rtol=0)
    flat = torch.full((2, 3, 32, 32), 0.3)
    blur = global_augment(flat, GlobalViewConfig(**geo, **{**PLAIN, "blur_p": 1.0}), gen()).images
    torch.testing.assert_close(blur, flat, atol=1e-5, rtol=0)  # blur keeps constants (normalised kernel)
    noisy = torch.rand(2, 3, 32, 32, generator=gen())
    blur = global_augment(noisy, GlobalViewConfig(**geo, **{**PLAIN, "blur_p": 1.0, "blur_sigma": (1.5, 2.0)}),
                          gen()).images
    assert blur.std() < 0.6 * noisy.std()
    jit = global_augment(x, GlobalViewConfig(**geo, **{**PLAIN, "jitter_p": 1.0}), gen()).images
    assert jit.min() >= 0 and jit.max() <= 1 and not torch.allclose(jit, x, atol=1e-3)


def test_colour_formulas_match_torchvision():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = torch.rand(3, 3, 16, 16, generator=gen())
    fb, fc, fs, fh = torch.tensor([0.7, 1.2, 1.0]), torch.tensor([1.3, 0.6, 1.0]), \
        torch.tensor([0.8, 1.2, 1.0]), torch.tensor([0.1, -0.08, 0.0])
    ours = adjust_colour(x, fb, fc, fs, fh)
    for i in range(3):
        ref = tvf.adjust_brightness(x[i], float(fb[i]))
        ref = tvf.adjust_contrast(ref, float(fc[i]))
        ref = tvf.adjust_saturation(ref, float(fs[i]))
        ref = tvf.adjust_hue(ref, float(fh[i]))
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_hsv_round_trip():
    x = torch.rand(3, 3, 16, 16, generator=gen())
    torch.testing.assert_close(_ops.hsv_to_rgb(_ops.rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_shift_hue_equals_the_hsv_round_trip_with_shifted_hue():
    x = torch.rand(4, 3, 16, 16, generator=gen())
    x[0] = 0.5  # grey: hue undefined, must stay grey
    shift = torch.tensor([0.3, -0.45, 0.0, 0.49])
    hsv = _ops.rgb_to_hsv(x)
    ref = _ops.hsv_to_rgb(torch.cat([torch.remainder(hsv[:, :1] + shift.view(-1, 1, 1, 1), 1.0), hsv[:, 1:]], 1))
    torch.testing.assert_close(_ops.shift_hue(x, shift), ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(_ops.shift_hue(x, torch.zeros(4)), x, atol=2e-6, rtol=0)


def _pixel_to_norm_matrix(h: int, w: int) -> torch.Tensor:
    """3x3 matrix mapping pixel-centre coordinates to grid_sample's normalised coordinates."""
    return torch.tensor([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]],
                        dtype=torch.float64)


def _to3x3(affine: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) -> (B, 3, 3) homogeneous matrices."""
    bottom = torch.zeros_like(affine[:, :1, :])
    bottom[:, 0, 2] = 1
    return torch.cat([affine, bottom], dim=1)


def test_closed_form_affine_helpers_match_the_matrix_formulas():
    """``warp_affine``'s normalised theta is the former ``N_in @ A @ inv(N_out)`` and ``invert_affine`` is
    the matrix inverse, both without ``linalg.inv`` (its device error-flag read). Compared with tolerances:
    the matrix product's reduction order depends on the machine's BLAS (bit-exact on one CPU, not another)."""
    g = gen(3)
    for (h, w), (ho, wo) in (((64, 64), (64, 64)), ((37, 90), (112, 17)), ((5, 300), (1, 2))):
        aff = torch.randn(32, 2, 3, generator=g) * torch.tensor([0.5, 0.3, 10.0]) + torch.eye(2, 3)
        ref = (_pixel_to_norm_matrix(h, w) @ _to3x3(aff.double()) @ torch.linalg.inv(_pixel_to_norm_matrix(ho, wo)))[:, :2]
        torch.testing.assert_close(_ops._norm_theta(aff, (h, w), (ho, wo)).double(), ref, rtol=1e-6, atol=1e-6)
        inv = torch.linalg.inv(_to3x3(aff.double()))[:, :2]
        torch.testing.assert_close(_ops.invert_affine(aff.double()), inv, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(_ops.invert_affine(aff), inv.float(), rtol=1e-5, atol=1e-5)
        pts = torch.rand(32, 5, 2, generator=g, dtype=torch.float64) * 64
        back = _ops.apply_affine(_ops.invert_affine(aff.double()), _ops.apply_affine(aff.double(), pts))
        torch.testing.assert_close(back, pts, rtol=0, atol=1e-9)


def test_global_augment_with_landmarks_reads_nothing_from_the_device(monkeypatch):
    """Views as on CUDA, landmarks mapped and re-indexed on flips: no entry of ``DeviceReads`` after a
    first call that builds the flip permutation on the device."""
    from _helpers import DeviceReads, cuda_paths

    cuda_paths(monkeypatch)
    x, lm = faces(4, 32)
    cfg = GlobalViewConfig(hflip_p=0.5, rotate_deg=10.0, solarize_p=0.5)
    global_augment(x, cfg, gen(1), landmarks=lm)
    with DeviceReads() as reads:
        global_augment(x, cfg, gen(2), landmarks=lm)
    assert reads.host + reads.checks + reads.shapes + reads.python_data == []


def test_landmark_indices_are_slices_or_cached_device_tensors():
    from workbench.data.landmarks import ALIGN_POINTS, MOUTH

    lm = torch.randn(3, 68, 2)
    assert _ops.point_index(MOUTH, lm.device) == slice(48, 68)
    idx = _ops.point_index(ALIGN_POINTS, lm.device)  # not contiguous: one tensor per device, reused
    assert isinstance(idx, torch.Tensor) and idx is _ops.point_index(list(ALIGN_POINTS), lm.device)
    for points in (MOUTH, ALIGN_POINTS, FLIP_PERMUTATION, (5,)):
        assert torch.equal(_ops.take_points(lm, points), lm[:, list(points)])


@pytest.mark.parametrize("pattern", ["none", "all", "some"])
def test_apply_where_subset_and_full_batch_paths_agree(pattern):
    x = torch.rand(6, 3, 8, 8, generator=gen())
    mask = {"none": torch.zeros(6, dtype=torch.bool), "all": torch.ones(6, dtype=torch.bool),
            "some": torch.tensor([True, False, False, True, True, False])}[pattern]
    scale = torch.arange(1.0, 7.0)
    fn = lambda s, sel: s * scale[sel].view(-1, 1, 1, 1)  # noqa: E731 - per-sample parameter
    full = _ops.apply_where(x.clone(), mask, fn, subset=False)
    sub = _ops.apply_where(x.clone(), mask, fn, subset=True)
    torch.testing.assert_close(sub, full, atol=0, rtol=0)
    expected = torch.where(mask.view(-1, 1, 1, 1), x * scale.view(-1, 1, 1, 1), x)
    torch.testing.assert_close(full, expected, atol=0, rtol=0)


def test_global_augment_identical_with_subset_and_full_batch_stages(monkeypatch):
    """CPU computes jitter / grey / blur / solarize on the selected samples only; CUDA on all
    (no host sync). Both must give the same views from the same generator state."""
    x = torch.rand(16, 3, 24, 24, generator=gen())
    lm = torch.rand(16, 68, 2, generator=gen()) * 23
    cfg = GlobalViewConfig(solarize_p=0.3, rotate_deg=10.0, grayscale_p=0.4)
    a = global_augment(x, cfg, gen(), landmarks=lm)
    real = _ops.apply_where
    monkeypatch.setattr(_ops, "apply_where", lambda im, m, f, subset=None: real(im, m, f, subset=False))
    b = global_augment(x, cfg, gen(), landmarks=lm)
    torch.testing.assert_close(a.images, b.images, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.landmarks, b.landmarks, atol=0, rtol=0)
    assert not torch.equal(x, a.images)  # the input is never modified in place
    assert torch.equal(x, torch.rand(16, 3, 24, 24, generator=gen()))


def test_views_stay_float32_inside_the_training_steps_bf16_autocast():
    """The trainer runs training_step (views included) under autocast; views must not drop to bf16."""
    from workbench.views.warp import LocalWarpConfig, local_warp

    x = torch.rand(8, 3, 32, 32, generator=gen())
    lm = torch.rand(8, 68, 2, generator=gen()) * 20 + 6
    cfg = GlobalViewConfig(rotate_deg=10.0)
    plain = global_augment(x, cfg, gen(), landmarks=lm)
    warped = local_warp(x, lm, LocalWarpConfig(), gen())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = global_augment(x, cfg, gen(), landmarks=lm)
        auto_warped = local_warp(x, lm, LocalWarpConfig(), gen())
    assert auto.images.dtype == auto.landmarks.dtype == auto.affine.dtype == torch.float32
    torch.testing.assert_close(auto.images, plain.images, atol=0, rtol=0)
    torch.testing.assert_close(auto.landmarks, plain.landmarks, atol=0, rtol=0)
    assert auto_warped[0].dtype == auto_warped[1].dtype == torch.float32
    torch.testing.assert_close(auto_warped[0], warped[0], atol=0, rtol=0)
    torch.testing.assert_close(auto_warped[1], warped[1], atol=0, rtol=0)


def test_view_pairs():
    a, b = simclr_views()
    assert a == b and a.blur_p == 0.3 and a.solarize_p == 0.0 and a.crop_scale == (0.9, 1.0)
    pa, pb = simclr_views(paper=True)
    assert pa == pb and pa.blur_p == 0.5 and pa.crop_scale == (0.35, 1.0) and pa.blur_sigma == (0.1, 2.0)
    for paper in (False, True):
        v1, v2 = byol_views(paper=paper)
        assert (v1.blur_p, v2.blur_p, v1.solarize_p, v2.solarize_p) == (1.0, 0.1, 0.0, 0.2)
        assert v1.crop_scale == ((0.35, 1.0) if paper else (0.9, 1.0))


def test_official_view_recipes():
    anchor, positive = sslfer_views()
    assert (anchor.jitter_p, positive.jitter_p) == (1.0, 0.8) and anchor.blur_kernel == 3
    x, _ = faces(2, size=128)
    res = global_augment(x, anchor, gen(), out_size=112)
    torch.testing.assert_close(res.affine[:, 0, 0].abs(), torch.ones(2), atol=1e-5, rtol=0)  # crop, no resize
    v1, v2 = simfle_views()
    assert v1 == v2 and v1.crop_scale == (0.08, 1.0) and v1.blur_p == 1.0 and v1.blur_kernel == 23


def test_same_generator_state_gives_same_transform_on_other_images():
    # ContraWarping: anchor and its warped negative share the global transform
    x, _ = faces(4)
    y = torch.rand_like(x)
    g = gen(8)
    state = g.get_state()
    a = global_augment(x, GlobalViewConfig(rotate_deg=10), g)
    g.set_state(state)
    b = global_augment(y, GlobalViewConfig(rotate_deg=10), g)
    assert torch.equal(a.affine, b.affine) and torch.equal(a.flipped, b.flipped)
    g.set_state(state)
    c = global_augment(x, GlobalViewConfig(rotate_deg=10), g)
    assert torch.equal(a.images, c.images)


def test_config_fields_documented_and_round_trip():
    for spec in describe(GlobalViewConfig):
        assert spec.help, spec.name
    cfg = from_dict(GlobalViewConfig, {"crop_scale": [0.5, 1.0], "blur_p": "0.3"})
    assert cfg.crop_scale == (0.5, 1.0) and cfg.blur_p == 0.3
    assert from_dict(GlobalViewConfig, to_dict(cfg)) == cfg


def test_bad_inputs_raise_config_error():
    x, _ = faces(2)
    with pytest.raises(ConfigError):
        global_augment(x, GlobalViewConfig(crop_scale=(0.0, 1.0)), gen())
    with pytest.raises(ConfigError):
        global_augment(x[:, :1], GlobalViewConfig(), gen())
    with pytest.raises(ConfigError):
        global_augment(x, GlobalViewConfig(), gen(), landmarks=torch.zeros(2, 5, 2))
