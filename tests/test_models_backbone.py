"""Backbone wrapper: the small-image stem option for timm ResNets (map sizes, output contract,
module names for checkpoints and Grad-CAM, weights, run config)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.errors import ConfigError
from workbench.models import Backbone


def _before_layer1(bb: Backbone, x: torch.Tensor) -> torch.Tensor:
    m = bb.model
    return m.maxpool(m.act1(m.bn1(m.conv1(bb.normalize(x)))))


@pytest.mark.parametrize("name", ["resnet10t", "resnet18"])
def test_small_stem_keeps_the_input_resolution_before_layer1(name):
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = Backbone(name, image_size=48)
    torch.manual_seed(0)
    small = Backbone(name, image_size=48, small_stem=True)
    with torch.no_grad():
        assert _before_layer1(plain, x).shape[2:] == (12, 12)  # ImageNet stem: stride 4
        assert _before_layer1(small, x).shape[2:] == (48, 48)  # small stem: stride 1
        fp, fs = plain.forward_map(x), small.forward_map(x)
        assert fp.shape == (2, plain.dim, 2, 2) and fs.shape == (2, small.dim, 6, 6)  # stride 32 -> 8
    out = small(x)
    # output contract unchanged: pooled (B, dim), same dim, same module names / parameter names
    assert small.dim == plain.dim and out.shape == (2, small.dim) and torch.isfinite(out).all()
    assert isinstance(small.model.maxpool, nn.Identity) and small.small_stem and not plain.small_stem
    assert small.cam_layer() is small.model.layer4
    assert list(small.state_dict()) == list(plain.state_dict())
    assert [f["reduction"] for f in small.model.feature_info] == [1, 1, 2, 4, 8]
    convs = [m for m in small.model.conv1.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.stride == (1, 1) and c.kernel_size == (3, 3) for c in convs)
    out.sum().backward()
    assert all(p.grad is not None for p in small.parameters())


def test_resnet50_single_conv_stem_and_non_resnets_refused():
    bb = Backbone("resnet50", image_size=16, small_stem=True)
    c = bb.model.conv1
    assert isinstance(c, nn.Conv2d) and (c.kernel_size, c.stride, c.padding) == ((3, 3), (1, 1), (1, 1))
    with torch.no_grad():
        assert bb.forward_map(torch.rand(1, 3, 16, 16)).shape == (1, 2048, 2, 2)
    with pytest.raises(ConfigError, match="small_stem"):
        Backbone("test_vit", image_size=32, small_stem=True)


def test_imagenet_stem_weights_load_as_their_centre(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = Backbone("resnet18", image_size=32)
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(path))
    small = Backbone("resnet18", image_size=32, weights=path, small_stem=True)
    torch.testing.assert_close(small.model.conv1.weight, src.model.conv1.weight[:, :, 2:5, 2:5])
    torch.testing.assert_close(small.model.layer1[0].conv1.weight, src.model.layer1[0].conv1.weight)
    deep_src = Backbone("resnet10t", image_size=32)  # deep stem: same shapes, loads as is
    deep_path = tmp_path / "r10t.safetensors"
    save_file({k: v.contiguous() for k, v in deep_src.model.state_dict().items()}, str(deep_path))
    deep = Backbone("resnet10t", image_size=32, weights=deep_path, small_stem=True)
    torch.testing.assert_close(deep.model.conv1[0].weight, deep_src.model.conv1[0].weight)


def test_run_config_option_reaches_the_backbone_and_grad_cam():
    from workbench.config import describe
    from workbench.explain.gradcam import GradCAM
    from workbench.explain.targets import FunctionTarget
    from workbench.runs import build_method
    from workbench.train import ModelConfig, RunConfig

    assert ModelConfig().small_stem is False
    assert any(s.name == "small_stem" and s.help for s in describe(ModelConfig))
    rc = RunConfig.from_dict({"method": "simclr", "data": {"image_size": 32},
                              "model": {"backbone": "resnet10t", "small_stem": True},
                              "method_config": {"proj_hidden_dim": 32, "proj_dim": 16}})
    m = build_method(rc).eval()
    assert m.backbone.small_stem and isinstance(m.backbone.model.maxpool, nn.Identity)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with GradCAM(m) as cam:
        h = cam(x, FunctionTarget(lambda o: o["feats"].sum(1)))
        assert cam.layer_name == "backbone.model.layer4"
        assert cam.last_raw.shape == (2, 4, 4)  # 32 px / 8 (ImageNet stem: 1x1)
    assert h.shape == (2, 32, 32) and torch.isfinite(h).all()
    with GradCAM(m, layer="layer3") as cam:  # names unchanged
        cam(x, FunctionTarget(lambda o: o["feats"].sum(1)))
        assert cam.last_raw.shape == (2, 8, 8)
