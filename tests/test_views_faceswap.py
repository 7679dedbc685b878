"""FaceSwap: Procrustes, mask rasterisation, blending, colour correction, donor choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.data.geometry import convex_hull_mask, template_landmarks
from workbench.data.landmarks import ALIGN_POINTS
from workbench.errors import ConfigError
from workbench.views import (
    FaceSwapConfig,
    _ops,
    donor_landmarks,
    face_swap,
    face_swap_details,
    pick_donors,
    procrustes,
    render_faces,
    swap_with_donors,
)
from workbench.views import faceswap as fs
from workbench.views.faceswap import (
    OVERLAY_GROUPS,
    DonorPool,
    gather_donor_pool,
    invert_similarity,
    overlay_mask,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def faces(b: int = 8, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    lm = template_landmarks(size, b, jitter=0.004, scale_jitter=0.1, generator=g)
    return render_faces(lm, size, g), lm


def similarity(s: float, deg: float, tx: float, ty: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[s * math.cos(a), -s * math.sin(a), tx], [s * math.sin(a), s * math.cos(a), ty]])


def test_procrustes_recovers_a_known_similarity():
    src = torch.rand(4, 30, 2, generator=gen()) * 50
    true = torch.stack([similarity(1.3, 20, 5, -3), similarity(0.7, -45, 0, 10), similarity(1.0, 0, 2, 2),
                        similarity(2.0, 170, -8, 1)])
    dst = _ops.apply_affine(true, src)
    torch.testing.assert_close(procrustes(src, dst), true, atol=1e-4, rtol=1e-4)
    # a mirror image is NOT fitted by a reflection: det of the linear part stays positive
    mirrored = src * torch.tensor([-1.0, 1.0])
    assert torch.linalg.det(procrustes(src, mirrored)[:, :, :2]).min() >= 0


def _hull_reference(points: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Monotone-chain hull + signed distances; returns (inside, |distance to boundary|)."""
    pts = sorted(map(tuple, points.tolist()))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1])  # counter-clockwise (in x-right, y-up terms)
    ys, xs = np.mgrid[0:h, 0:w]
    dmin = np.full((h, w), np.inf)
    inside = np.ones((h, w), dtype=bool)
    for i in range(len(hull)):
        a, b = hull[i], hull[(i + 1) % len(hull)]
        e = b - a
        d = (e[0] * (ys - a[1]) - e[1] * (xs - a[0])) / np.linalg.norm(e)
        inside &= d >= 0
        dmin = np.minimum(dmin, np.abs(d))
    return inside, dmin


def test_convex_hull_rasterisation_matches_reference():
    g = gen(1)
    pts = torch.rand(6, 12, 2, generator=g) * 40 + 4
    pts[0, 5] = pts[0, 3]  # duplicate point
    pts[1, :4] = torch.tensor([[5.0, 5.0], [10.0, 10.0], [15.0, 15.0], [20.0, 20.0]])  # collinear run
    got = convex_hull_mask(pts, 48, 48).numpy()
    for b in range(6):
        ref, dist = _hull_reference(pts[b].numpy(), 48, 48)
        clear = dist > 1e-2  # ignore centres lying on the boundary
        assert np.array_equal(got[b][clear], ref[clear]), b
    line = torch.tensor([[[1.0, 1.0], [5.0, 5.0], [9.0, 9.0]]])
    assert not convex_hull_mask(line, 12, 12).any()  # degenerate hull has no area


def test_mask_covers_inner_face_only_and_output_is_head_outside():
    heads, hl = faces(8, seed=1)
    faces_, fl = faces(8, seed=2)
    res = face_swap_details(heads, hl, faces_, fl, FaceSwapConfig(p=1.0), gen())
    m = res.mask[:, 0]
    assert res.applied.all() and ((m == 0) | (m == 1)).all()  # hard mask by default
    # inside: eye centres and the mouth centre; outside: jaw contour points and image corners
    for b in range(8):
        for idx in (list(range(36, 42)), list(range(42, 48)), list(range(48, 60))):
            x, y = hl[b, idx].mean(0).round().long().tolist()
            assert m[b, y, x] == 1
        for j in (0, 4, 8, 12, 16):
            x, y = hl[b, j].round().long().clamp(0, 63).tolist()
            assert m[b, y, x] == 0
    assert (m[:, :3, :] == 0).all() and (m[:, :, :3] == 0).all()
    union = overlay_mask(hl, 64, 64) | overlay_mask(res.landmarks, 64, 64)
    assert torch.equal(m.bool(), union)  # exactly the union of the head and warped-face hulls
    outside = (m == 0)[:, None].expand_as(heads)
    assert torch.equal(res.images[outside], heads[outside])
    assert not torch.allclose(res.images, heads)


def test_swapping_a_face_onto_itself_is_identity():
    heads, hl = faces(4)
    out = face_swap(heads, hl, heads, hl, FaceSwapConfig(p=1.0), gen())
    torch.testing.assert_close(out, heads, atol=2e-4, rtol=0)  # transform = identity, blur ratio = 1


def test_warp_direction_pastes_the_face_where_the_head_has_it():
    heads, hl = faces(4, size=64)
    shift = (5, -3)  # the same face drawn 5 px right, 3 px up
    shifted = torch.roll(heads, shifts=(shift[1], shift[0]), dims=(2, 3))
    sl = hl + torch.tensor([float(shift[0]), float(shift[1])])
    res = face_swap_details(heads, hl, shifted, sl, FaceSwapConfig(p=1.0, color_correct=False), gen())
    torch.testing.assert_close(res.affine[:, :, 2], torch.tensor([-5.0, 3.0]).expand(4, 2), atol=1e-3, rtol=0)
    inside = res.mask[:, 0].bool()[:, None].expand_as(heads)
    torch.testing.assert_close(res.images[inside], heads[inside], atol=1e-4, rtol=0)
    torch.testing.assert_close(res.landmarks, hl, atol=1e-3, rtol=0)


def test_colour_correction_matches_head_colour():
    heads, hl = faces(4, seed=3)
    darker = heads * 0.6
    plain = face_swap_details(heads, hl, darker, hl, FaceSwapConfig(p=1.0, color_correct=False), gen())
    fixed = face_swap_details(heads, hl, darker, hl, FaceSwapConfig(p=1.0), gen())
    inside = plain.mask.bool().expand_as(heads)
    err_plain = (plain.images - heads)[inside].abs().mean()
    err_fixed = (fixed.images - heads)[inside].abs().mean()
    assert err_fixed < 0.1 * err_plain


def test_feathered_mask_is_soft_and_p_selects():
    heads, hl = faces(8, seed=4)
    faces_, fl = faces(8, seed=5)
    soft = face_swap_details(heads, hl, faces_, fl, FaceSwapConfig(p=1.0, feather=0.1), gen())
    frac = ((soft.mask > 0.01) & (soft.mask < 0.99)).float().mean()
    assert frac > 0.01 and soft.mask.max() <= 1 and soft.mask.min() >= 0
    half = face_swap_details(heads, hl, faces_, fl, FaceSwapConfig(p=0.5), gen(11))
    assert half.applied.any() and not half.applied.all()
    keep = ~half.applied
    assert torch.equal(half.images[keep], faces_[keep])  # un-swapped rows return the face image
    assert torch.equal(half.landmarks[keep], fl[keep])
    none = face_swap(heads, hl, faces_, fl, FaceSwapConfig(p=0.0), gen())
    assert torch.equal(none, faces_)


def test_donors_have_another_identity():
    x, lm = faces(8)
    ids = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    for seed in range(5):
        out, donor = swap_with_donors(x, lm, ids, FaceSwapConfig(p=1.0), gen(seed))
        assert (donor >= 0).all() and (ids[donor] != ids).all()
        i = 2
        ref = face_swap(x[donor[i:i + 1]], lm[donor[i:i + 1]], x[i:i + 1], lm[i:i + 1], FaceSwapConfig(p=1.0))
        torch.testing.assert_close(out[i:i + 1], ref, atol=1e-5, rtol=0)
    # many draws: the choice is spread over all other identities
    donors = torch.stack([pick_donors(ids, gen(s)) for s in range(200)])
    assert set(donors[:, 7].tolist()) == set(range(7))
    same = torch.zeros(8, dtype=torch.long)
    out, donor = swap_with_donors(x, lm, same, FaceSwapConfig(p=1.0), gen())
    assert (donor == -1).all() and torch.equal(out, x)  # no other identity: unchanged
    out, donor = swap_with_donors(x, lm, ids, FaceSwapConfig(p=0.0), gen())
    assert (donor == -1).all() and torch.equal(out, x)
    out, donor = swap_with_donors(x, lm, ids, FaceSwapConfig(p=0.5), gen(2))
    assert torch.equal(out[donor < 0], x[donor < 0]) and (donor >= 0).any()
    lm_out = donor_landmarks(lm, donor)
    assert torch.equal(lm_out[donor < 0], lm[donor < 0])
    j = int(torch.nonzero(donor >= 0)[0])
    torch.testing.assert_close(lm_out[j, :17], lm[donor[j], :17])  # the donor head's jaw


def test_donor_pool_defaults_to_the_batch_and_can_hold_other_heads():
    x, lm = faces(6)
    ids = torch.tensor([0, 0, 1, 1, 2, 3])
    cfg = FaceSwapConfig(p=1.0)
    pool = gather_donor_pool(x, lm, ids)  # not distributed: the batch itself, no copy
    assert pool.images is x and pool.landmarks is lm and pool.offset == 0
    a, da = swap_with_donors(x, lm, ids, cfg, gen(5))
    b, db = swap_with_donors(x, lm, ids, cfg, gen(5), pool)
    assert torch.equal(a, b) and torch.equal(da, db)  # same random stream, same outputs
    px, plm = faces(4, seed=7)
    pid = torch.tensor([0, 5, 5, 1])
    out, donor = swap_with_donors(x, lm, ids, cfg, gen(1), DonorPool(px, plm, pid))
    assert (donor >= 0).all() and (pid[donor] != ids).all()
    torch.testing.assert_close(out, face_swap(px[donor], plm[donor], x, lm, cfg), atol=1e-5, rtol=0)
    torch.testing.assert_close(donor_landmarks(lm, donor, plm)[:, :17], plm[donor, :17])  # the head's jaw
    with pytest.raises(ConfigError):
        swap_with_donors(x, lm, ids, cfg, gen(), DonorPool(px, plm, pid[:3]))


def test_similarity_inverse_in_closed_form():
    true = torch.stack([similarity(1.3, 20, 5, -3), similarity(0.7, -45, 0, 10), similarity(2.0, 170, -8, 1)])
    torch.testing.assert_close(invert_similarity(true), _ops.invert_affine(true), atol=1e-6, rtol=1e-6)
    zero = invert_similarity(torch.zeros(1, 2, 3))  # missing (zero-filled) landmarks: no error, zeros
    assert torch.equal(zero, torch.zeros(1, 2, 3))


def _odd_kernels_dynamic(iod: torch.Tensor, frac: float, limit: int) -> tuple[torch.Tensor, int]:
    """The former colour-correction kernels: width = the batch's largest kernel, read from the device."""
    k = torch.floor(frac * iod).clamp(min=1)
    k = torch.where(k % 2 == 0, k + 1, k)
    lim = limit if limit % 2 == 1 else limit - 1
    k = k.clamp(max=lim)
    return k, (int(k.amax().item()) if k.numel() else 1)


def _feather_kernels_dynamic(sigma: torch.Tensor, limit: int) -> torch.Tensor:
    """The former feathering kernels: ~3 sigma of the largest sigma, read from the device."""
    return _ops.gaussian_kernels(sigma, _ops.auto_kernel_size(float(sigma.amax()), limit) if sigma.numel() else 1)


@pytest.mark.parametrize("hw", [(48, 48), (33, 40)])
def test_static_blur_kernels_blur_as_the_former_dynamic_ones(hw, monkeypatch):
    h, w = hw
    x = torch.rand(5, 3, h, w, generator=gen(3))
    widths = set()
    # small distances (0 included: the former width is much smaller) and one beyond the image
    for iod in (torch.tensor([0.0, 3.0, 7.5, 12.0, 16.0]), torch.tensor([0.0, 3.0, 12.0, 30.0, 200.0])):
        for frac in (0.6, 0.1, 2.0):
            ks, width = fs._odd_kernels(iod, frac, min(h, w))
            ks_old, kmax = _odd_kernels_dynamic(iod, frac, min(h, w))
            assert torch.equal(ks, ks_old) and width >= kmax and width % 2 == 1
            widths.add(kmax)
            sigma, radius = fs._opencv_sigma(ks), (ks - 1) / 2
            new = _ops.separable_blur(x, _ops.gaussian_kernels(sigma, width, radius=radius))
            old = _ops.separable_blur(x, _ops.gaussian_kernels(sigma, kmax, radius=radius))
            torch.testing.assert_close(new, old, atol=1e-6, rtol=0)
        for feather in (0.0, 0.05, 0.3):
            new = _ops.separable_blur(x, fs._feather_kernels(feather * iod, min(h, w)))
            old = _ops.separable_blur(x, _feather_kernels_dynamic(feather * iod, min(h, w)))
            torch.testing.assert_close(new, old, atol=1e-6, rtol=0)
    assert min(widths) < 10 and max(widths) == min(h, w) - (min(h, w) + 1) % 2  # both regimes covered
    heads, hl = faces(4, 48, seed=1)
    faces_, fl = faces(4, 48, seed=2)
    for cfg in (FaceSwapConfig(p=1.0), FaceSwapConfig(p=1.0, feather=0.1, blur_frac=1.5)):
        new = face_swap(heads, hl, faces_, fl, cfg)
        with monkeypatch.context() as mp:
            mp.setattr(fs, "_odd_kernels", _odd_kernels_dynamic)
            mp.setattr(fs, "_feather_kernels", _feather_kernels_dynamic)
            old = face_swap(heads, hl, faces_, fl, cfg)
        torch.testing.assert_close(new, old, atol=1e-5, rtol=0)


def test_shapes_and_errors():
    x, lm = faces(2)
    with pytest.raises(ConfigError):
        face_swap(x, lm, x[:1], lm[:1], FaceSwapConfig())
    with pytest.raises(ConfigError):
        swap_with_donors(x, lm, torch.tensor([0, 1, 2]), FaceSwapConfig(), gen())
    assert set(OVERLAY_GROUPS[0]) == set(range(17, 27)) | set(range(36, 48))
    assert set(OVERLAY_GROUPS[1]) == set(range(27, 36)) | set(range(48, 61))
    assert set(ALIGN_POINTS) <= set(range(17, 61))


def test_config_is_documented():
    from workbench.config import describe, from_dict, to_dict

    assert all(spec.help for spec in describe(FaceSwapConfig))
    cfg = from_dict(FaceSwapConfig, to_dict(FaceSwapConfig()))
    assert cfg == FaceSwapConfig()
