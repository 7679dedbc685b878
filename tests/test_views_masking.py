"""Landmark part masking and per-part region masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.geometry import template_landmarks
from workbench.data.landmarks import PARTS
from workbench.errors import ConfigError
from workbench.views import PartMaskConfig, part_mask, render_faces


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def faces(b: int = 8, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    lm = template_landmarks(size, b, jitter=0.004, scale_jitter=0.1, generator=g)
    return render_faces(lm, size, g), lm


def _ellipse(points: np.ndarray, margin: float, size: int) -> np.ndarray:
    x0, y0 = points.min(0) - margin
    x1, y1 = points.max(0) + margin
    ys, xs = np.mgrid[0:size, 0:size]
    cx, cy, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1.0


def test_only_the_chosen_part_ellipse_changes():
    x, lm = faces(16)
    cfg = PartMaskConfig(p=1.0)
    out, chosen = part_mask(x, lm, cfg, gen(1))
    assert out.shape == x.shape and (chosen >= 0).all()
    assert len(set(chosen.tolist())) > 1  # per-sample choice
    margin = cfg.margin * 64
    for b in range(16):
        part = cfg.parts[int(chosen[b])]
        ell = _ellipse(lm[b, list(PARTS[part])].numpy(), margin, 64)
        changed = (out[b] != x[b]).any(0).numpy()
        assert not (changed & ~ell).any()  # nothing outside the ellipse
        mean = x[b].mean(dim=(1, 2))
        filled = out[b].permute(1, 2, 0).numpy()[ell]
        np.testing.assert_allclose(filled, np.broadcast_to(mean.numpy(), filled.shape), atol=1e-6)
        assert ell.sum() > 20


def test_probability_and_per_run_mode():
    x, lm = faces(32)
    out, chosen = part_mask(x, lm, PartMaskConfig(p=0.0), gen())
    assert torch.equal(out, x) and (chosen == -1).all()
    out, chosen = part_mask(x, lm, PartMaskConfig(p=0.5), gen(3))
    assert (chosen == -1).any() and (chosen >= 0).any()
    assert torch.equal(out[chosen == -1], x[chosen == -1])
    _, chosen = part_mask(x, lm, PartMaskConfig(p=1.0, per_sample=False), gen(4))
    assert len(set(chosen.tolist())) == 1
    _, c1 = part_mask(x, lm, PartMaskConfig(), gen(9))
    _, c2 = part_mask(x, lm, PartMaskConfig(), gen(9))
    assert torch.equal(c1, c2)
    out, _ = part_mask(x, lm, PartMaskConfig(p=1.0, fill="zero", parts=("mouth",)), gen())
    assert (out == 0).any()


def test_margin_scales_with_image_size():
    x, lm = faces(4, size=64)
    big = torch.nn.functional.interpolate(x, size=128, mode="bilinear", align_corners=False)
    lm_big = (lm + 0.5) * 2 - 0.5
    cfg = PartMaskConfig(p=1.0, parts=("mouth",))
    small_out, _ = part_mask(x, lm, cfg, gen())
    big_out, _ = part_mask(big, lm_big, cfg, gen())
    a_small = (small_out != x).any(1).float().mean(dim=(1, 2))
    a_big = (big_out != big).any(1).float().mean(dim=(1, 2))
    torch.testing.assert_close(a_small, a_big, atol=0.01, rtol=0.05)  # same fraction of the image


def test_config_is_documented():
    from workbench.config import describe, from_dict, to_dict

    assert all(spec.help for spec in describe(PartMaskConfig))
    cfg = from_dict(PartMaskConfig, to_dict(PartMaskConfig()))
    assert cfg == PartMaskConfig()


def test_given_draws_mask_the_same_part_in_two_views():
    """``draw_part_mask`` + ``draws=``: what part_mask would draw itself (same stream), and one draw
    reused for two batches masks the same part with the same coin in both (SSL-FER's shared pair mask)."""
    from workbench.views.masking import draw_part_mask

    x, lm = faces(12)
    cfg = PartMaskConfig(p=0.6)
    own, c_own = part_mask(x, lm, cfg, gen(5))
    drawn = draw_part_mask(12, cfg, gen(5))
    given, c_given = part_mask(x, lm, cfg, gen(123), draws=drawn)
    assert torch.equal(own, given) and torch.equal(c_own, c_given)
    assert (c_own == -1).any() and (c_own >= 0).any()
    choice, apply = draw_part_mask(6, cfg, gen(7))
    _, pair = part_mask(x, lm, cfg, gen(), draws=(choice.repeat(2), apply.repeat(2)))
    assert torch.equal(pair[:6], pair[6:])
    with pytest.raises(ConfigError, match="draws"):
        part_mask(x, lm, cfg, gen(), draws=(choice, apply))


def test_unknown_part_is_a_config_error():
    with pytest.raises(ConfigError):
        part_mask(*faces(2), PartMaskConfig(parts=("ear",)), gen())
