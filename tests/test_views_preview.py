"""Preview grids, the throughput helper, and the same ops on CUDA (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data.geometry import convex_hull_mask, template_landmarks
from workbench.data.landmarks import PARTS
from workbench.errors import ConfigError
from workbench.views import (
    FaceSwapConfig,
    GlobalViewConfig,
    LocalWarpConfig,
    PartMaskConfig,
    face_swap,
    global_augment,
    local_warp,
    part_mask,
    preview_grid,
    render_faces,
    save_preview,
    swap_with_donors,
)
from workbench.views.bench import view_throughput


def faces(b: int = 4, size: int = 48, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    lm = template_landmarks(size, b, jitter=0.004, scale_jitter=0.1, generator=g, device=device)
    return render_faces(lm, size, g), lm


def _border(masks: torch.Tensor) -> torch.Tensor:
    """Pixels of (B, R, H, W) bool masks whose 3x3 neighbourhood holds both values (on a region's edge)."""
    f = masks.float().flatten(0, 1)[:, None]
    hi = torch.nn.functional.max_pool2d(f, 3, stride=1, padding=1)
    lo = -torch.nn.functional.max_pool2d(-f, 3, stride=1, padding=1)
    return (hi != lo).view_as(masks)


def test_preview_grid_layout(tmp_path):
    x, lm = faces(3)
    grid = preview_grid(x, lm, n=2, seed=1)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 48 + 2, 5 * 48 + 4 * 2, 3)
    assert np.array_equal(grid, preview_grid(x, lm, n=2, seed=1))  # seeded
    # landmark dots are drawn in green on the original column
    tile = grid[:48, :48]
    assert ((tile[..., 1] == 255) & (tile[..., 0] == 0)).sum() > 30
    no_lm = preview_grid(x, n=3)  # only the original and the global family
    assert no_lm.shape == (3 * 48 + 4, 2 * 48 + 2, 3)
    uint8 = (x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    assert preview_grid(uint8, lm.numpy(), families=("mask",), n=2).shape == (98, 98, 3)
    path = save_preview(tmp_path / "sub" / "views.png", x, lm, n=2)
    assert Image.open(path).size == (grid.shape[1], grid.shape[0])
    with pytest.raises(ConfigError):
        preview_grid(x, lm, families=("cutmix",))


def test_view_throughput_reports_every_family():
    out = view_throughput("cpu", batch_size=4, size=32, repeats=1)
    assert set(out) == {"global", "warp", "faceswap", "mask"} and all(v > 0 for v in out.values())


def test_generator_on_another_device_is_a_clear_error():
    from workbench.views import _ops

    with pytest.raises(ConfigError, match="generator"):
        _ops.check_generator(torch.Generator(), torch.device("meta"))
    _ops.check_generator(None, torch.device("cpu"))  # None = torch's default generator


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_all_views_run_on_cuda_and_match_cpu_where_deterministic():
    xc, lmc = faces(8, 64)
    x, lm = xc.cuda(), lmc.cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    res = global_augment(x, GlobalViewConfig(rotate_deg=10), g, landmarks=lm, out_size=48)
    assert res.images.is_cuda and res.images.shape == (8, 3, 48, 48) and 0 <= res.images.min() <= res.images.max() <= 1
    warped, lm2 = local_warp(x, lm, LocalWarpConfig(), g)
    assert warped.is_cuda and lm2.is_cuda and not torch.equal(warped, x)
    ids = torch.arange(8, device="cuda") % 3
    swapped, donor = swap_with_donors(x, lm, ids, FaceSwapConfig(p=1.0), g)
    assert swapped.is_cuda and (ids[donor] != ids).all()
    masked, chosen = part_mask(x, lm, PartMaskConfig(), g)
    assert masked.is_cuda and chosen.is_cuda
    # deterministic paths give the CPU result
    ident = GlobalViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=1.0, jitter_p=0.0,
                             grayscale_p=0.0, blur_p=0.0)
    gpu = global_augment(x, ident, g).images.cpu()
    torch.testing.assert_close(gpu, torch.flip(xc, dims=[3]), atol=1e-5, rtol=0)
    roll = (1, 0)
    gpu = face_swap(x, lm, x.roll(*roll), lm.roll(*roll), FaceSwapConfig(p=1.0)).cpu()
    cpu = face_swap(xc, lmc, xc.roll(*roll), lmc.roll(*roll), FaceSwapConfig(p=1.0))
    assert (gpu - cpu).abs().gt(1e-3).float().mean() < 0.002  # same up to float rounding at mask edges
    # the same regions, up to pixel centres within rounding of a hull edge (the edge distances are a matmul:
    # cuBLAS and the CPU BLAS round them differently)
    def hulls(points: torch.Tensor) -> torch.Tensor:
        return torch.stack([convex_hull_mask(points[:, list(PARTS[p])], 64, 64)
                            for p in ("brows", "eyes", "nose", "mouth")], dim=1)

    gpu_m, cpu_m = hulls(lm).cpu(), hulls(lmc)
    assert not ((gpu_m != cpu_m) & ~(_border(gpu_m) | _border(cpu_m))).any()
    assert (gpu_m != cpu_m).float().mean() < 1e-3
    one = PartMaskConfig(p=1.0, parts=("mouth",))
    torch.testing.assert_close(part_mask(x, lm, one, g)[0].cpu(), part_mask(xc, lmc, one, torch.Generator())[0])
    out = view_throughput("cuda", batch_size=16, size=64, repeats=1)
    assert all(v > 0 for v in out.values())
