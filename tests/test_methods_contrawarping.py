"""ContraWarping: negative term vs loop references, identical global transform for anchor and warped
negative, locality of the warp, BYOL equivalence at weight 0, gradients, training, missing landmarks."""

import math

import numpy as np
import pytest
import torch
from _helpers import DeviceReads, cuda_paths

from workbench.config import from_dict
from workbench.errors import ConfigError, MissingMetadataError
from workbench.losses import masked_mean, warp_negative_loss
from workbench.methods import METHODS, Batch, get_method
from workbench.methods.byol import BYOL, BYOLConfig
from workbench.methods.contrawarping import ContraWarping, ContraWarpingConfig
from workbench.models import Backbone

S, B = 32, 4
TINY = {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32}




@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    from workbench.data.cache import load_face_data
    from workbench.data.synth import SynthConfig, generate_dataset

    man = generate_dataset(SynthConfig(identities=4, images_per_identity=4, size=S),
                           tmp_path_factory.mktemp("cw-plain"), progress=False)
    return man, load_face_data(man, S, progress=False)


def method(**over) -> ContraWarping:
    torch.manual_seed(0)
    return ContraWarping(from_dict(ContraWarpingConfig, {**TINY, **over}), Backbone("resnet10t", image_size=S), S)


def make_batch(data, seed: int = 0) -> Batch:
    rows = np.arange(B, dtype=np.int64)[:, None]
    images, lm = data.batch(rows)
    return Batch(images=images, landmarks=lm, rows=torch.from_numpy(rows), codes={},
                 generator=torch.Generator().manual_seed(seed))


# -- the pure negative term ------------------------------------------------------------------

def _cos(a, b):
    return float((a * b).sum()) / math.sqrt(float((a * a).sum()) * float((b * b).sum()))


def ref_negative(q, t, n, kind, margin, tau):
    out = []
    for b in range(q.shape[0]):
        cp = _cos(q[b], t[b])
        cn = [_cos(q[b], n[b, j]) for j in range(n.shape[1])]
        if kind == "margin":
            out.extend(max(0.0, c - cp + margin) for c in cn)
        else:
            den = math.exp(cp / tau) + sum(math.exp(c / tau) for c in cn)
            out.append(-math.log(math.exp(cp / tau) / den))
    return sum(out) / len(out)


@pytest.mark.parametrize("kind", ["margin", "infonce"])
@pytest.mark.parametrize("n", [1, 3])
def test_negative_term_matches_loop_reference(kind, n):
    g = torch.Generator().manual_seed(n)
    q, t = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    negs = torch.randn(5, n, 8, generator=g)
    got = float(warp_negative_loss(q, t, negs, kind, margin=0.7, temperature=0.3))
    assert got == pytest.approx(ref_negative(q, t, negs, kind, 0.7, 0.3), rel=1e-5)


@pytest.mark.parametrize("kind", ["margin", "infonce"])
def test_negative_term_grows_when_the_negative_is_the_positive(kind):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 16, generator=g)
    q = t + 0.1 * torch.randn(6, 16, generator=g)  # a prediction that matches its positive
    unrelated = torch.randn(6, 2, 16, generator=g)
    same = t[:, None].expand(6, 2, 16)
    low = float(warp_negative_loss(q, t, unrelated, kind))
    high = float(warp_negative_loss(q, t, same, kind))
    assert high > low + 0.1
    with pytest.raises(ConfigError):
        warp_negative_loss(q, t, unrelated, "triplet")
    with pytest.raises(ConfigError, match="reduction"):
        warp_negative_loss(q, t, unrelated, kind, reduction="sum")


@pytest.mark.parametrize("kind", ["margin", "infonce"])
def test_masked_negative_term_equals_the_boolean_index_formula(kind):
    """The step's masked mean over rows with landmarks = the former ``warp_negative_loss(p[ok], ...)``
    sum of both views; with no valid row it is 0 and still differentiable (zero gradient)."""
    g = torch.Generator().manual_seed(0)
    b, n, d = 7, 3, 8
    p1, p2, t1, t2 = (torch.randn(b, d, generator=g, requires_grad=True) for _ in range(4))
    n1, n2 = torch.randn(b, n, d, generator=g), torch.randn(b, n, d, generator=g)
    kw = {"margin": 0.7, "temperature": 0.3}
    for ok in (torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.bool), torch.ones(b, dtype=torch.bool),
               torch.arange(b) == 4):
        old = (warp_negative_loss(p1[ok], t2[ok], n1[ok], kind, **kw)
               + warp_negative_loss(p2[ok], t1[ok], n2[ok], kind, **kw))
        per = (warp_negative_loss(p1, t2, n1, kind, reduction="none", **kw)
               + warp_negative_loss(p2, t1, n2, kind, reduction="none", **kw))
        new = masked_mean(per, ok)
        torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-7)
        g_old = torch.autograd.grad(old, [p1, p2])
        g_new = torch.autograd.grad(new, [p1, p2])
        for a, e in zip(g_new, g_old):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-7)
    per = warp_negative_loss(p1, t2, n1, kind, reduction="none", **kw)
    assert per.shape == (b,)
    torch.testing.assert_close(per.mean(), warp_negative_loss(p1, t2, n1, kind, **kw), rtol=1e-6, atol=0)
    none = masked_mean(per, torch.zeros(b, dtype=torch.bool))
    assert float(none.detach()) == 0.0 and none.requires_grad
    grad = torch.autograd.grad(none, p1)[0]
    assert torch.equal(grad, torch.zeros_like(grad))


# -- the method ------------------------------------------------------------------------------

def test_registered_with_documented_unverified_defaults():
    assert METHODS["contrawarping"] is ContraWarping and get_method("ContraWarping") is ContraWarping
    assert issubclass(ContraWarping, BYOL) and ContraWarping.requires == ("landmarks",)
    assert ContraWarping.synth_mode == "plain" and ContraWarping.paper_run == {"backbone": "resnet18", "epochs": 50}
    c = ContraWarpingConfig()
    assert (c.negatives, c.negative_weight, c.negative_loss, c.negative_encoder) == (1, 1.0, "margin", "target")
    # warp sized in inter-ocular distances, expression-sized (see tests/test_views_warp.py), jaw pinned
    assert (c.warp.unit, c.warp.magnitude, c.warp.radius, c.warp.pin) == ("iod", 0.2, 0.3, ("jaw",))
    assert "UNVERIFIED" in ContraWarping.__doc__ and "m6" in ContraWarping.__doc__
    for preset in ("paper", "cpu"):
        from_dict(ContraWarpingConfig, ContraWarping.presets[preset])


def test_negatives_share_the_anchor_views_global_transform(plain):
    _, data = plain
    still = method(warp={"magnitude": 0.0}, negatives=2, negative_blur=True)
    v = still.make_views(make_batch(data, seed=3))
    assert v.neg1.shape == (2, B, 3, S, S)
    for j in range(2):  # no warp: the negative IS the anchor view, bit for bit
        assert torch.equal(v.neg1[j], v.v1) and torch.equal(v.neg2[j], v.v2)
    assert not torch.equal(v.v1, v.v2)
    moved = method(warp={"magnitude": 0.15}).make_views(make_batch(data, seed=3))
    assert torch.equal(moved.v1, v.v1) and torch.equal(moved.v2, v.v2)  # warps come after the views
    assert not torch.equal(moved.neg1[0], moved.v1)


def test_negatives_skip_the_anchor_views_blur_by_default(plain):
    """Default ``negative_blur=False``: a negative is its anchor view's transform without the blur (same
    crop, flip, jitter, grayscale, solarize draws), so the blur cannot smooth the warp away."""
    _, data = plain
    assert ContraWarpingConfig().negative_blur is False
    still = method(warp={"magnitude": 0.0}, negatives=2)
    assert still.cfg.view1.blur_p == 1.0  # BYOL view 1 always blurs: the anchor view is blurred
    v = still.make_views(make_batch(data, seed=3))
    from workbench.config import to_dict

    unblurred = {f"view{i}": {**to_dict(getattr(still.cfg, f"view{i}")), "blur_p": 0.0} for i in (1, 2)}
    sharp = method(warp={"magnitude": 0.0}, negatives=2, **unblurred)
    u = sharp.make_views(make_batch(data, seed=3))
    for j in range(2):  # no warp: the negative is the un-blurred anchor view, bit for bit
        assert torch.equal(v.neg1[j], u.v1) and torch.equal(v.neg2[j], u.v2)
    assert not torch.equal(v.neg1[0], v.v1)  # ... which differs from the blurred anchor view


def test_warped_negatives_differ_only_near_expression_regions(plain):
    from workbench.data.landmarks import PARTS
    from workbench.views.warp import warp_unit

    _, data = plain
    m = method(warp={"magnitude": 0.2, "radius": 0.15})
    batch = make_batch(data, seed=1)
    v = m.make_views(batch)
    x, lm = batch.images[:, 0], batch.landmarks[:, 0]
    changed = (v.warped[0] != x).any(dim=1)  # (B, S, S)
    assert changed.flatten(1).any(dim=1).all()
    expr = sorted({i for r in m.cfg.warp.regions for i in PARTS[r]})
    ys, xs = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    pix = torch.stack([xs, ys], -1).float().view(1, -1, 2)
    dist = torch.cdist(pix.expand(B, -1, -1), lm[:, expr]).amin(dim=2).view(B, S, S)
    reach = 3 * m.cfg.warp.radius * warp_unit(lm, m.cfg.warp) + 1.5  # bumps end at 3 sigma (+ bilinear footprint)
    assert torch.all(dist[changed] <= reach.view(B, 1, 1).expand(B, S, S)[changed])
    jaw = lm[:, list(PARTS["jaw"])].round().long().clamp(0, S - 1)
    far_jaw = dist[torch.arange(B)[:, None], jaw[..., 1], jaw[..., 0]] > reach[:, None]
    assert not changed[torch.arange(B)[:, None], jaw[..., 1], jaw[..., 0]][far_jaw].any()


def test_loss_is_finite_with_gradients_and_extra_terms(plain):
    _, data = plain
    m = method()
    out = m.training_step(make_batch(data))
    assert torch.isfinite(out["loss"]) and float(out["loss_negative"]) >= 0
    assert float(out["loss"].detach()) == pytest.approx(
        float(out["loss_byol"]) + float(out["loss_negative"]), rel=1e-5)
    out["loss"].backward()
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in m.target_backbone.parameters())
    online = method(negative_loss="infonce", negative_encoder="online", negatives=2)
    out2 = online.training_step(make_batch(data))
    assert torch.isfinite(out2["loss"]) and out2["z"].shape == (B, 16)


def test_weight_zero_is_plain_byol_and_rows_without_landmarks_skip_the_negative(plain):
    _, data = plain
    m = method(negative_weight=0.0)
    byol = BYOL(from_dict(BYOLConfig, TINY), Backbone("resnet10t", image_size=S), S)
    byol.load_state_dict(m.state_dict())
    a = m.training_step(make_batch(data, seed=2))["loss"].detach()
    b = byol.training_step(make_batch(data, seed=2))["loss"].detach()
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    batch = make_batch(data)
    batch.landmarks[1] = float("nan")
    w = method()
    v = w.make_views(batch)
    assert v.valid.tolist() == [True, False, True, True]
    assert torch.isfinite(w.training_step(batch)["loss"])


@pytest.mark.parametrize("over", [{}, {"negative_loss": "infonce", "negative_encoder": "online"}])
def test_training_step_reads_nothing_from_the_device(plain, monkeypatch, over):
    """One step (forward and backward, views as on CUDA) with a row without landmarks: no host read, no
    checked linear algebra and no data-dependent shape anywhere; nothing of the kind (nor a tensor built
    from Python data) in the method's own code."""
    _, data = plain
    cuda_paths(monkeypatch)
    batch = make_batch(data, seed=4)
    batch.landmarks[2] = float("nan")
    m = method(negatives=2, **over)
    with DeviceReads() as reads:
        out = m.training_step(batch)
        out["loss"].backward()
    assert reads.host == [] and reads.shapes == [] and reads.checks == []  # in the whole step
    assert reads.in_files("methods/contrawarping.py", "methods/byol.py") == []
    assert torch.isfinite(out["loss"]) and float(out["loss_negative"]) > 0


def _cfg(man, mc):
    from workbench.train import RunConfig

    return RunConfig.from_dict({
        "method": "contrawarping", "data": {"manifest": str(man), "image_size": S, "split": "all"},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "knn_every": 0, "log_every": 1, "device": "cpu"},
        "method_config": mc})


def test_pretrain_steps_and_missing_landmarks(plain, tmp_path):
    import pandas as pd

    from workbench.runs import pretrain

    man, _ = plain
    res = pretrain(_cfg(man, {**ContraWarping.presets["cpu"], **TINY}), tmp_path / "r", progress=False)
    assert res.step == 2 and np.isfinite(res.last_metrics["loss"]) and "loss_negative" in res.last_metrics
    no_lm = man.parent / "no_landmarks.csv"
    pd.read_csv(man).drop(columns=["landmarks"]).to_csv(no_lm, index=False)
    with pytest.raises(MissingMetadataError, match="'landmarks'"):
        pretrain(_cfg(no_lm, TINY), tmp_path / "r2", progress=False)
