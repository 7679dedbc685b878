"""Facial regions from landmarks and region scoring on constructed heatmaps."""

import math

import numpy as np
import pytest
import torch

from workbench.data.geometry import convex_hull, template_landmarks
from workbench.errors import WorkbenchError
from workbench.explain.regions import (
    FACS_REGIONS,
    REGION_INDEX,
    REGIONS,
    expected_mask,
    expected_regions,
    moving_region_share,
    moving_regions,
    pointing_game,
    region_masks,
    region_scores,
)

S = 64




def _faces(n: int = 6, size: int = S, seed: int = 0) -> torch.Tensor:
    """Template faces, randomly scaled / rotated / shifted / jittered."""
    rng = np.random.default_rng(seed)
    base = template_landmarks(size)[0].numpy()
    c = base.mean(0)
    out = []
    for _ in range(n):
        a = rng.uniform(-0.3, 0.3)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        p = (base - c) @ rot.T * rng.uniform(0.8, 1.1) + c + rng.uniform(-4, 4, 2)
        out.append(p + rng.normal(0, 0.4, p.shape))
    return torch.tensor(np.stack(out), dtype=torch.float32)


def test_regions_are_disjoint_and_cover_the_image():
    for size in (48, 37):
        m = region_masks(_faces(4, size=size, seed=size), size)
        assert m.shape == (4, len(REGIONS), size, size) and m.dtype == torch.bool
        assert torch.equal(m.sum(1), torch.ones(4, size, size, dtype=torch.long))
        assert (m.flatten(2).sum(2) > 0).all(), "every region is non-empty on a centred face"


def test_regions_sit_where_the_parts_are():
    lm = template_landmarks(S)[0]
    m = region_masks(lm, S)[0]
    for name, idx in (("mouth", range(48, 60)), ("eyes", range(36, 42)), ("eyes", range(42, 48)),
                      ("nose", range(31, 36))):
        c = lm[list(idx)].mean(0).round().long()
        assert m[REGION_INDEX[name], c[1], c[0]], name
    for i in (17, 19, 24, 26):  # brow points lie in the brow region
        x, y = lm[i].round().long()
        assert m[REGION_INDEX["brows"], y, x]
    assert m[REGION_INDEX["outside_face"], 0, 0] and m[REGION_INDEX["outside_face"], S - 1, S - 1]
    chin = lm[8].round().long()
    assert m[REGION_INDEX["cheeks_jaw"], chin[1], chin[0]]
    for i in (3, 13):  # cheeks: halfway between the jaw line and the nose wing
        x, y = ((lm[i] + lm[31 if i < 8 else 35]) / 2).round().long()
        assert m[REGION_INDEX["cheeks_jaw"], y, x]
    forehead = ((lm[19] + lm[24]) / 2 - torch.tensor([0.0, 6.0])).round().long()
    assert m[REGION_INDEX["rest_of_face"], forehead[1], forehead[0]]


def test_masks_follow_landmarks():
    lm = template_landmarks(S)
    m0 = region_masks(lm, S)
    m1 = region_masks(lm + torch.tensor([5.0, 3.0]), S)
    assert not torch.equal(m0, m1)
    shifted = torch.roll(m0, shifts=(3, 5), dims=(2, 3))
    for r in ("brows", "eyes", "nose", "mouth", "cheeks_jaw"):
        a, b = m1[0, REGION_INDEX[r]], shifted[0, REGION_INDEX[r]]
        assert (a != b).sum() <= 2, r  # identical up to boundary rounding


def test_masks_at_another_size_rescale_landmarks():
    lm = template_landmarks(32)
    small = region_masks(lm, 32)
    big = region_masks(lm, 64, image_size=32)
    down = big.float().reshape(1, len(REGIONS), 32, 2, 32, 2).mean((3, 5))
    agree = (down.argmax(1) == small.float().argmax(1)).float().mean()
    assert agree > 0.9


def test_convex_hull_and_degenerate_polygons():
    sq = np.array([[0, 0], [2, 0], [2, 2], [0, 2], [1, 1]], dtype=float)
    assert len(convex_hull(sq)) == 4
    assert len(convex_hull(np.array([[0, 0], [1, 1], [2, 2]], dtype=float))) == 2
    flat = template_landmarks(S)[0]
    flat[17:27, 1] = flat[17:27, 1].mean()  # perfectly straight brows still get a band
    m = region_masks(flat, S)
    assert m[0, REGION_INDEX["brows"]].sum() > 20


def test_nan_landmarks_are_a_clear_error():
    lm = template_landmarks(S).repeat(2, 1, 1)
    lm[1, 5] = float("nan")
    with pytest.raises(WorkbenchError, match="missing"):
        region_masks(lm, S)


def test_mouth_heatmap_scores_mouth_and_hits_for_happiness():
    lm = _faces(4)
    masks = region_masks(lm, S)
    heat = masks[:, REGION_INDEX["mouth"]].float()
    rs = region_scores(heat, masks)
    assert (rs.score.argmax(1) == REGION_INDEX["mouth"]).all()
    assert torch.allclose(rs.mass[:, REGION_INDEX["mouth"]], torch.ones(4))
    assert torch.allclose(rs.score[:, REGION_INDEX["mouth"]], 1 / rs.area[:, REGION_INDEX["mouth"]])
    assert pointing_game(heat, masks, expected_mask(["happiness"] * 4)).all()
    assert pointing_game(heat, masks, [["mouth"]] * 4).all()
    brows = masks[:, REGION_INDEX["brows"]].float()
    assert not pointing_game(brows, masks, expected_mask(["happiness"] * 4)).any()
    assert pointing_game(brows, masks, expected_mask(["sadness"] * 4)).all()
    assert not pointing_game(heat, masks, expected_mask(["neutral"] * 4)).any()  # nothing expected
    assert not pointing_game(torch.zeros_like(heat), masks, expected_mask(["happiness"] * 4)).any()


def test_uniform_heatmap_scores_one_everywhere():
    masks = region_masks(_faces(3), S)
    rs = region_scores(torch.ones(3, S, S), masks)
    assert torch.allclose(rs.score, torch.ones_like(rs.score), atol=1e-5)
    assert torch.allclose(rs.mass, rs.area, atol=1e-6)
    assert torch.allclose(rs.mass.sum(1), torch.ones(3)) and torch.allclose(rs.area.sum(1), torch.ones(3))
    zero = region_scores(torch.zeros(3, S, S), masks)
    assert torch.isnan(zero.score).all() and torch.isnan(zero.mass).all()


def test_peak_outside_face_is_a_miss_and_shape_errors():
    masks = region_masks(_faces(2), S)
    heat = torch.zeros(2, S, S)
    heat[:, 0, 0] = 1.0
    assert not pointing_game(heat, masks, expected_mask(["happiness", "fear"])).any()
    assert region_scores(heat, masks).score[:, REGION_INDEX["outside_face"]].gt(1).all()
    with pytest.raises(WorkbenchError, match="do not match"):
        region_scores(torch.ones(2, 32, 32), masks)
    with pytest.raises(WorkbenchError, match="unknown region"):
        pointing_game(heat, masks, [["lips"], ["mouth"]])


def test_facs_table_and_moving_share():
    assert set(expected_regions("happiness")) == {"mouth", "cheeks_jaw", "eyes"}
    assert set(expected_regions("happy")) == {"mouth", "cheeks_jaw", "eyes"}  # aliases accepted
    assert expected_regions("neutral") == () and expected_regions("???") == ()
    assert set(FACS_REGIONS["disgust"]) == {"nose", "mouth"}
    for e in FACS_REGIONS:
        assert set(moving_regions(e)) <= set(REGIONS)
    masks = region_masks(_faces(3), S)
    heat = masks[:, REGION_INDEX["mouth"]].float()
    share = moving_region_share(heat, masks, ["happiness", "contempt", "neutral"])
    assert torch.allclose(share[:2], torch.ones(2)) and math.isnan(share[2])
    half = heat + masks[:, REGION_INDEX["outside_face"]].float() * (heat.sum((1, 2)) /
                                                                      masks[:, 6].sum((1, 2)))[:, None, None]
    share = moving_region_share(half, masks, ["happiness", "disgust", "anger"])
    assert torch.allclose(share, torch.full((3,), 0.5), atol=1e-4)
