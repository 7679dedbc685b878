"""MAE / SimFLE masking, grouping loss, patchify, MAE loss and sin-cos positions vs hand-written references."""

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.losses import (
    group_patch_scores,
    grouping_loss,
    grouping_target,
    mae_loss,
    patchify,
    random_masking,
    semantic_masking,
)
from workbench.losses.masking import group_heatmap, grouping_correlation, num_visible
from workbench.models.vit_mae import sincos_pos_embed_2d


def check_masking_invariants(m, n_patches, keep):
    b = m.mask.shape[0]
    assert m.ids_keep.shape == (b, keep) and m.mask.shape == (b, n_patches)
    # ids_restore inverts ids_shuffle
    ar = torch.arange(n_patches).expand(b, -1)
    assert torch.equal(torch.gather(m.ids_shuffle, 1, m.ids_restore), ar)
    assert torch.equal(torch.gather(m.ids_restore, 1, m.ids_shuffle), ar)
    assert torch.equal(m.ids_keep, m.ids_shuffle[:, :keep])
    # 1 = removed, 0 = kept, exactly keep zeros per row, at the kept indices
    assert torch.equal(m.mask.sum(1), torch.full((b,), float(n_patches - keep)))
    assert torch.all(torch.gather(m.mask, 1, m.ids_keep) == 0)
    removed = m.ids_shuffle[:, keep:]
    assert torch.all(torch.gather(m.mask, 1, removed) == 1)


# -- grouping ------------------------------------------------------------------------------------

def official_gt(c, groups):
    """SimFLE's construction (model/layer.py) without the hard-coded .cuda()."""
    gt = torch.ones(groups).diag().reshape(1, 1, groups, groups)
    gt = gt.repeat((1, int((c / groups) * (c / groups)), 1, 1))
    return F.pixel_shuffle(gt, upscale_factor=int(c / groups)).reshape(c, c)


@pytest.mark.parametrize("c,groups", [(8, 4), (12, 3), (64, 32), (2048, 32)])
def test_grouping_target_is_block_diagonal(c, groups):
    gt = grouping_target(c, groups)
    m = c // groups
    if c <= 64:
        for i in range(c):
            for j in range(c):
                assert gt[i, j] == (1.0 if i // m == j // m else 0.0)
    assert gt.sum() == groups * m * m
    assert torch.equal(gt, torch.block_diag(*[torch.ones(m, m)] * groups))
    assert torch.equal(gt, official_gt(c, groups))


def test_grouping_target_rejects_uneven_groups():
    with pytest.raises(ValueError):
        grouping_target(10, 4)


def official_co(act):
    tmp = act + 0.001
    b, c, w, h = tmp.shape
    tmp = F.normalize(tmp.view(int(b * c * w * h / (w * w)), w * w), p=2)
    tmp = tmp.view(b, c, w * w).permute(1, 0, 2).reshape(c, b * w * h)
    return tmp.mm(tmp.t()) / b


def test_grouping_loss_matches_loop_reference_and_official_correlation():
    g = torch.Generator().manual_seed(0)
    act = torch.rand(3, 8, 2, 2, generator=g, dtype=torch.float64)
    assert torch.allclose(grouping_correlation(act), official_co(act))
    b, c = 3, 8
    maps = [[[float(v) + 1e-3 for v in act[i, ch].flatten()] for ch in range(c)] for i in range(b)]
    maps = [[[v / math.sqrt(sum(x * x for x in mp)) for v in mp] for mp in row] for row in maps]
    ref = 0.0
    for c1 in range(c):
        for c2 in range(c):
            co = sum(sum(a * bb for a, bb in zip(maps[i][c1], maps[i][c2])) for i in range(b)) / b
            gt = 1.0 if c1 // 2 == c2 // 2 else 0.0
            ref += 0.001 * (co - gt) ** 2
    ref /= (c / 512) ** 2
    assert float(grouping_loss(act, groups=4)) == pytest.approx(ref, rel=1e-9)


def test_grouping_loss_is_zero_when_co_equals_gt():
    c, groups = 8, 4
    act = torch.zeros(2, c, 2, 2, dtype=torch.float64)
    for ch in range(c):
        act[:, ch].view(2, -1)[:, ch // 2] = 1.0  # group k's channels all light up position k only
    act = act - 1e-3  # the loss adds 0.001 before normalising
    assert torch.allclose(grouping_correlation(act), grouping_target(c, groups, dtype=torch.float64))
    assert float(grouping_loss(act, groups)) == pytest.approx(0.0, abs=1e-12)


# -- semantic masking ----------------------------------------------------------------------------

def test_semantic_masking_keeps_top_patches_of_the_upsampled_group_map():
    g = torch.Generator().manual_seed(0)
    b, c, groups, size, p, ratio = 3, 64, 32, 112, 16, 0.75
    act = torch.rand(b, c, 4, 4, generator=g)  # ResNet-50 layer-4 at 112 px, scaled-down channels
    group = torch.tensor([0, 5, 31])
    scores = group_patch_scores(act, group, groups, size, p)
    m = semantic_masking(scores, ratio)
    n_patches, keep = 49, 12
    assert num_visible(n_patches, ratio) == keep
    check_masking_invariants(m, n_patches, keep)
    mm = c // groups
    for i in range(b):
        summed = act[i, group[i] * mm:(group[i] + 1) * mm].sum(0)  # loop-free but explicit channel range
        up = F.interpolate(summed[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
        ref_scores = []
        for r in range(7):
            for col in range(7):
                ref_scores.append(float(up[r * p:(r + 1) * p, col * p:(col + 1) * p].mean()))
        assert scores[i].tolist() == pytest.approx(ref_scores, rel=1e-5)
        top = sorted(range(49), key=lambda k: -ref_scores[k])[:keep]
        assert set(m.ids_keep[i].tolist()) == set(top)
        assert min(ref_scores[k] for k in top) > max(ref_scores[k] for k in range(49) if k not in top)


def test_group_heatmap_sums_contiguous_channels():
    act = torch.arange(2 * 6 * 2 * 2, dtype=torch.float32).view(2, 6, 2, 2)
    hm = group_heatmap(act, torch.tensor([2, 0]), groups=3, size=2)  # same size: no resampling
    assert torch.allclose(hm[0, 0], act[0, 4] + act[0, 5])
    assert torch.allclose(hm[1, 0], act[1, 0] + act[1, 1])


def test_random_masking_invariants_and_determinism():
    m = random_masking(4, 64, 0.75, torch.Generator().manual_seed(3))
    check_masking_invariants(m, 64, 16)
    again = random_masking(4, 64, 0.75, torch.Generator().manual_seed(3))
    assert torch.equal(m.ids_keep, again.ids_keep)
    assert not torch.equal(m.ids_keep[0].sort().values, m.ids_keep[1].sort().values)
    with pytest.raises(ValueError):
        random_masking(2, 4, 0.9, None)


# -- patchify / MAE loss -------------------------------------------------------------------------

def test_patchify_matches_loops():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 8, 12, generator=g)
    p = 4
    out = patchify(img, p)
    assert out.shape == (2, 6, p * p * 3)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                ref = [float(img[b, ch, i * p + y, j * p + x]) for y in range(p) for x in range(p) for ch in range(3)]
                assert out[b, i * 3 + j].tolist() == pytest.approx(ref)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_matches_loops_and_ignores_visible_patches(norm_pix):
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    target = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.float64)
    num = 0.0
    for b in range(2):
        for l_ in range(5):
            if not mask[b, l_]:
                continue
            t = target[b, l_].tolist()
            if norm_pix:
                mu = sum(t) / 6
                var = sum((v - mu) ** 2 for v in t) / 5  # unbiased, as MAE's target.var()
                t = [(v - mu) / math.sqrt(var + 1e-6) for v in t]
            num += sum((a - b_) ** 2 for a, b_ in zip(pred[b, l_].tolist(), t)) / 6
    ref = num / 5
    assert float(mae_loss(pred, target, mask, norm_pix=norm_pix)) == pytest.approx(ref, rel=1e-9)
    changed = pred.clone()
    changed[mask == 0] += 10.0
    assert float(mae_loss(changed, target, mask, norm_pix=norm_pix)) == pytest.approx(ref, rel=1e-9)


def test_sincos_pos_embed_matches_mae_formula():
    dim, gs = 16, 3
    pe = sincos_pos_embed_2d(dim, gs, num_prefix=1)
    assert pe.shape == (1 + gs * gs, dim) and torch.all(pe[0] == 0)

    def emb_1d(d, pos):
        omega = [1.0 / 10000 ** (i / (d / 2)) for i in range(d // 2)]
        return [math.sin(pos * o) for o in omega] + [math.cos(pos * o) for o in omega]

    for r in range(gs):
        for c in range(gs):
            ref = emb_1d(dim // 2, c) + emb_1d(dim // 2, r)  # MAE: first half from the column index
            assert pe[1 + r * gs + c].tolist() == pytest.approx(ref, abs=1e-6)
