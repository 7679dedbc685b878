"""Grad-CAM (captum) on tiny CNN and ViT encoders: shape, range, target dependence, ViT reshape, hooks."""

import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from workbench.data.geometry import template_landmarks
from workbench.errors import WorkbenchError
from workbench.explain.gradcam import GradCAM
from workbench.explain.targets import (
    FunctionTarget,
    IdentityCentroidSimilarity,
    OtherViewSimilarity,
    ProbeLogit,
    PrototypeSimilarity,
    class_prototypes,
)
from workbench.methods.simclr import SimCLR, SimCLRConfig
from workbench.models import Backbone


def _method(name: str, size: int, **kw) -> SimCLR:
    torch.manual_seed(0)
    return SimCLR(SimCLRConfig(proj_hidden_dim=32, proj_dim=16), Backbone(name, image_size=size, **kw),
                  size).eval()




@pytest.fixture(scope="module")
def resnet():
    return _method("resnet10t", 64)


@pytest.fixture(scope="module")
def vit():
    return _method("vit_tiny_patch16_224", 32, patch_size=8)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.3 + 0.35
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):  # a bright blob at a different place per image
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=g)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2).float()
        x[i, i % 3] = torch.maximum(x[i, i % 3], blob)
    return x


def _hook_count(*modules: nn.Module) -> int:
    n = 0
    for root in modules:
        for m in root.modules():
            n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            n += len(m._backward_pre_hooks) + len(getattr(m, "_forward_hooks_with_kwargs", {}))
    g = torch.nn.modules.module
    n += len(g._global_forward_hooks) + len(g._global_forward_pre_hooks) + len(g._global_backward_hooks)
    return n


@pytest.mark.parametrize("which", ["resnet", "vit"])
def test_heatmaps_shape_range_and_target_dependence(which, request):
    method = request.getfixturevalue(which)
    size = method.image_size
    x = _images(4, size)
    with torch.no_grad():
        feats = method(x)["feats"]
    protos = torch.stack([feats[0], feats[3]])
    with GradCAM(method) as cam:
        h0 = cam(x, PrototypeSimilarity(protos, 0))
        s0 = cam.last_scores.clone()
        h1 = cam(x, PrototypeSimilarity(protos, 1))
        hv = cam(x, OtherViewSimilarity(feats.flip(0)))
    for h in (h0, h1, hv):
        assert h.shape == (4, size, size) and h.dtype == torch.float32
        assert h.min() >= 0 and h.max() <= 1
        assert torch.isfinite(h).all()
    assert torch.allclose(s0, torch.nn.functional.cosine_similarity(feats, protos[0][None]), atol=1e-5)
    # non-trivial: most maps have a peak of exactly 1 and are not constant
    nontrivial = [bool(h.max() == 1.0 and h.std() > 1e-3) for h in h0]
    assert sum(nontrivial) >= 3
    assert (h0 - h1).abs().amax() > 0.05, "two targets must give different maps"
    method.train()
    with GradCAM(method) as cam:
        cam(x[:1], PrototypeSimilarity(protos, 0))
    assert method.training, "the call restores the model's train/eval mode"
    method.eval()


def test_explain_batch_matches_single_calls_and_indexes_targets(resnet):
    x = _images(5, 64, seed=1)
    with torch.no_grad():
        feats = resnet(x)["feats"]
    protos = class_prototypes(feats, torch.tensor([0, 1, 0, 1, 1]), 2)
    classes = torch.tensor([1, 0, 0, 1, 0])
    target = PrototypeSimilarity(protos, classes)
    with GradCAM(resnet) as cam:
        heat, scores = cam.explain_batch(x, target, batch_size=2)
        single = cam(x[3:4], PrototypeSimilarity(protos, 1))
    assert heat.shape == (5, 64, 64) and scores.shape == (5,)
    assert torch.allclose(heat[3], single[0], atol=1e-3)
    ref = torch.nn.functional.cosine_similarity(feats, protos[classes], dim=1)
    assert torch.allclose(scores, ref, atol=1e-5)


def test_layer_by_name_gives_a_finer_map(resnet):
    x = _images(2, 64)
    t = FunctionTarget(lambda o: o["feats"].sum(1))
    with GradCAM(resnet) as cam:
        hc = cam(x, t)
        coarse = cam.last_raw.shape
    assert hc[0].unique().numel() > 16, "2x2 cells are upsampled bilinearly, not to 4 flat blocks"
    with GradCAM(resnet, layer="layer3") as cam:
        h = cam(x, t)
        fine = cam.last_raw.shape
        assert cam.layer_name == "backbone.model.layer3"
    assert coarse == (2, 2, 2) and fine == (2, 4, 4) and h.shape == (2, 64, 64)
    with pytest.raises(WorkbenchError, match="no module"):
        GradCAM(resnet, layer="layer9")


def test_vit_token_reshape_matches_a_manual_reference(vit):
    """The routed grid must map token k to cell (k // w, k % w), prefix tokens excluded."""
    x = _images(2, 32, seed=3)
    with torch.no_grad():
        ref_feats = vit(x)["feats"]
    target = OtherViewSimilarity(ref_feats.roll(1, 0))
    with GradCAM(vit) as cam:
        with cam._hooked():
            routed = vit(x)["feats"]
        cam(x, target)
        raw = cam.last_raw
    assert torch.allclose(routed, ref_feats, atol=1e-6), "routing must not change the model's output"
    # manual Grad-CAM on the tokens of blocks[-1].norm1
    layer = vit.backbone.cam_layer()
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.update(tokens=o))
    try:
        score = target(vit(x.clone().requires_grad_(True)))
        grads = torch.autograd.grad(score.sum(), store["tokens"])[0]
    finally:
        handle.remove()
    p = vit.backbone.num_prefix_tokens
    acts, grads = store["tokens"][:, p:].detach(), grads[:, p:]
    weights = grads.mean(dim=1, keepdim=True)                      # mean over patch positions
    manual = torch.relu((weights * acts).sum(-1)).reshape(2, 4, 4)
    assert raw.shape == (2, 4, 4)
    assert torch.allclose(raw, manual, atol=1e-6 + 1e-4 * manual.abs().max())


def test_hooks_are_released_after_use_errors_and_many_runs(resnet, vit):
    for method in (resnet, vit):
        size = method.image_size
        x = _images(2, size)
        base = _hook_count(method)
        assert base == 0
        seen = []

        def spy(o, index=None, m=method, seen=seen):
            seen.append(_hook_count(m))
            return o["feats"].sum(1)

        with GradCAM(method) as cam:
            cam(x, spy)
            grid = cam._grid
        assert seen and seen[-1] > 0, "hooks exist while a call runs (the check can see them)"
        assert _hook_count(method, grid) == 0

        def boom(o, index=None):
            raise RuntimeError("target failed")

        with pytest.raises(RuntimeError, match="target failed"):
            with GradCAM(method) as cam:
                cam(x, boom)
        assert _hook_count(method, cam._grid) == 0
        with pytest.raises(ValueError):
            with GradCAM(method) as cam:
                cam(x, FunctionTarget(lambda o: o["feats"].sum(1)))
                raise ValueError("user code failed inside the with block")
        assert _hook_count(method, cam._grid) == 0 and cam.closed
        with pytest.raises(WorkbenchError, match="closed"):
            cam(x, spy)

        refs = []
        for _ in range(20):
            with GradCAM(method) as cam:
                cam(x, FunctionTarget(lambda o: o["feats"].sum(1)))
            refs.append(weakref.ref(cam))
            assert _hook_count(method) == 0
        del cam
        gc.collect()
        assert sum(r() is not None for r in refs) == 0, "closed explainers must not be kept alive"


def test_bad_target_output_is_a_clear_error(resnet):
    with GradCAM(resnet) as cam, pytest.raises(WorkbenchError, match="one score per image"):
        cam(_images(2, 64), FunctionTarget(lambda o: o["feats"]))
    assert _hook_count(resnet) == 0


def test_targets_compute_what_they_say():
    torch.manual_seed(0)
    feats = torch.randn(6, 5)
    out = {"feats": feats, "z": feats[:, :3]}
    labels = torch.tensor([0, 0, 1, 1, 2, -1])
    protos = class_prototypes(feats, labels, 4)
    assert torch.isnan(protos[3]).all()
    unit = torch.nn.functional.normalize(feats, dim=1)
    assert torch.allclose(protos[1], unit[2:4].mean(0))
    t = PrototypeSimilarity(protos, torch.tensor([0, 1, 2, 0, 1, 2]))
    ref = torch.nn.functional.cosine_similarity(feats, protos[[0, 1, 2, 0, 1, 2]], dim=1)
    assert torch.allclose(t(out), ref)
    assert torch.allclose(t({"feats": feats[4:]}, torch.tensor([4, 5])), ref[4:])
    with pytest.raises(WorkbenchError, match="no prototype"):
        PrototypeSimilarity(protos, 3)
    ident = IdentityCentroidSimilarity(protos[:3], 2)
    assert torch.allclose(ident(out), torch.nn.functional.cosine_similarity(feats, protos[2][None], dim=1))
    zt = PrototypeSimilarity(class_prototypes(feats[:, :3], labels, 3), 0, feature="z")
    assert zt(out).shape == (6,)
    with pytest.raises(WorkbenchError, match="no 'emb'"):
        PrototypeSimilarity(protos[:3], 0, feature="emb")(out)


def test_probe_logit_equals_the_sklearn_decision_function():
    from workbench.evaluate.probe import fit_linear_probe

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)) * [1, 5, 0.2, 2] + 3
    y = np.repeat([2, 5, 7], 20)
    X[y == 5, 0] += 2
    probe = fit_linear_probe(X, y)
    t = ProbeLogit.from_probe(probe, [2, 5, 7, 5])
    got = t({"feats": torch.tensor(X[:4], dtype=torch.float64)})
    dec = probe.model.decision_function(probe.scaler.transform(X[:4]))
    assert np.allclose(got.numpy(), dec[np.arange(4), [0, 1, 2, 1]], atol=1e-6)
    with pytest.raises(WorkbenchError, match="not among"):
        ProbeLogit.from_probe(probe, [3])
    yb = np.repeat([0, 1], 30)
    pb = fit_linear_probe(X, yb)
    tb = ProbeLogit.from_probe(pb, 1)
    assert np.allclose(tb({"feats": torch.tensor(X[:3])}).numpy(),
                       pb.model.decision_function(pb.scaler.transform(X[:3])), atol=1e-6)


class _RedDetector(nn.Module):
    """Channel 0 fires on red pixels only (r - g - b > 0); features = global average of the map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, :, 0, 0] = torch.tensor([1.0, -1.0, -1.0])
            self.conv.weight[1, :, 0, 0] = torch.tensor([0.0, 1.0, 0.0])
        self.act = nn.ReLU()

    def forward(self, x):
        f = self.act(self.conv(x)).mean((2, 3))
        return {"feats": f, "z": f}


def test_gradcam_finds_what_the_model_uses_and_regions_score_it():
    from workbench.explain.regions import (
        REGION_INDEX,
        expected_mask,
        pointing_game,
        region_masks,
        region_scores,
    )

    lm = template_landmarks(48).repeat(2, 1, 1)
    lm[1] += torch.tensor([3.0, -2.0])
    masks = region_masks(lm, 48)
    x = torch.full((2, 3, 48, 48), 0.5)
    mouth = masks[:, REGION_INDEX["mouth"]]
    x[:, 0][mouth] = 1.0
    x[:, 1][mouth] = 0.1
    x[:, 2][mouth] = 0.1
    model = _RedDetector()
    with GradCAM(model, layer=model.act) as cam:
        heat = cam(x, FunctionTarget(lambda o: o["feats"][:, 0]))
    assert torch.equal(heat > 0, mouth), "the map is exactly the red mouth"
    rs = region_scores(heat, masks)
    assert (rs.score.argmax(1) == REGION_INDEX["mouth"]).all()
    assert pointing_game(heat, masks, expected_mask(["happiness", "disgust"])).all()
    assert _hook_count(model) == 0
