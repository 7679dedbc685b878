"""SSL-FER: clip sampling as used by the method, batch layout, FaceSwap, MaskFN, descriptors, training."""

import numpy as np
import pytest
import torch
from _helpers import DeviceReads, cuda_paths

from workbench.config import from_dict
from workbench.errors import CheckpointError, ConfigError, MissingMetadataError
from workbench.losses import (
    landmark_descriptor,
    maskfn_loss,
    nt_xent,
    pair_positive_index,
    select_false_negatives,
)
from workbench.methods import METHODS, Batch, get_method
from workbench.methods.sslfer import ABLATION_ROWS, SSLFER, SSLFERConfig, eye_mouth_crops
from workbench.models import Backbone

S = 32
TINY = {"proj_hidden_dim": 32, "proj_dim": 16}
FLAGS = ("time_aug", "hard_negatives", "face_swap", "mask_fn")




@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from workbench.data.cache import load_face_data
    from workbench.data.synth import SynthConfig, generate_dataset

    man = generate_dataset(SynthConfig(identities=4, images_per_identity=2, size=S, clips=True, clip_length=16),
                           tmp_path_factory.mktemp("sslfer-clips"), progress=False)
    return man, load_face_data(man, S, progress=False)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    from workbench.data.cache import load_face_data
    from workbench.data.synth import SynthConfig, generate_dataset

    man = generate_dataset(SynthConfig(identities=4, images_per_identity=4, size=S),
                           tmp_path_factory.mktemp("sslfer-plain"), progress=False)
    return man, load_face_data(man, S, progress=False)


def method(**over) -> SSLFER:
    torch.manual_seed(0)
    return SSLFER(from_dict(SSLFERConfig, {**TINY, **over}), Backbone("resnet10t", image_size=S), S)


def make_batch(data, rows: np.ndarray, seed: int = 0) -> Batch:
    """As the trainer builds it."""
    images, lm = data.batch(rows)
    flat = torch.from_numpy(rows.reshape(-1))
    codes = {c: torch.from_numpy(data.codes(c)[0])[flat].reshape(rows.shape)
             for c in ("identity", "clip", "group", "expression") if data.has(c)}
    return Batch(images=images, landmarks=lm, rows=torch.from_numpy(rows), codes=codes,
                 generator=torch.Generator().manual_seed(seed))


def first_batch(m: SSLFER, data, batch_size: int = 8, seed: int = 0) -> tuple[np.ndarray, Batch]:
    rows = next(iter(m.make_sampler(data, batch_size, 0).batches(0)))
    return rows, make_batch(data, rows, seed)


def test_registered_with_verified_defaults_presets_and_ablation_rows():
    assert METHODS["sslfer"] is SSLFER and get_method("SSL-FER".replace("-", "")) is SSLFER
    assert SSLFER.synth_mode == "clips" and SSLFER.paper and SSLFER.summary
    c = SSLFERConfig()
    assert all(getattr(c, f) for f in FLAGS) and c.landmark_mask
    assert (c.temperature, c.offsets, c.offset_weights, c.min_negative_distance) == \
        (0.07, (2, 3, 4, 5, 6), (5.0, 4.0, 3.0, 2.0, 1.0), 12)
    assert (c.swap.p, c.mask.p, c.mask.per_sample, c.maskfn_lambda) == (0.8, 0.8, True, 0.8)
    assert c.mask_shared and SSLFER.presets["paper"]["mask_shared"] is False  # shared = our default
    assert (c.proj_hidden_dim, c.proj_dim, c.proj_batch_norm) == (2048, 128, False)
    assert (c.anchor_view.jitter_p, c.positive_view.jitter_p, c.anchor_view.crop_scale) == (1.0, 0.8, (0.9, 1.0))
    from workbench.config import from_dict

    paper = from_dict(SSLFER.Config, SSLFER.presets["paper"])  # the code's views stay in the paper preset
    assert (paper.anchor_view.jitter_p, paper.positive_view.jitter_p, paper.anchor_view.blur_kernel) == (1.0, 0.8, 3)
    assert (c.descriptor, c.protect_hard_negatives, c.descriptor_crop) == ("landmarks", True, 64)
    for preset in ("paper", "cpu"):
        from_dict(SSLFERConfig, SSLFER.presets[preset])
    assert SSLFER.presets["paper"]["descriptor"] == "resnet18"
    assert set(ABLATION_ROWS) == {"simclr", "a", "b", "d", "e", "f", "g"}
    assert ABLATION_ROWS["d"] == {"time_aug": True, "hard_negatives": False, "face_swap": True, "mask_fn": True}
    for row in ABLATION_ROWS.values():
        from_dict(SSLFERConfig, row)
    assert not any(isinstance(mod, torch.nn.BatchNorm1d) for mod in method().projector.modules())


@pytest.mark.parametrize("flags,cols", [
    ({}, ("clip", "frame", "landmarks", "identity")),
    ({"hard_negatives": False, "face_swap": False, "mask_fn": False, "landmark_mask": False}, ("clip", "frame")),
    ({"time_aug": False, "hard_negatives": False, "mask_fn": False, "landmark_mask": False},
     ("landmarks", "identity")),
    ({"time_aug": False, "hard_negatives": False, "face_swap": False, "landmark_mask": False}, ("landmarks",)),
    (ABLATION_ROWS["simclr"], ()),
])
def test_required_columns_follow_the_strategies(flags, cols):
    assert method(**flags).required_columns() == cols


def test_sampler_time_aug_offsets_and_hard_negative_distances(clips):
    _, data = clips
    frame = data.manifest.frame["frame"].to_numpy(dtype=np.int64)
    clip = data.manifest.frame["clip"].to_numpy()
    sampler = method().make_sampler(data, 4, seed=3)
    assert sampler.k == 4
    seen = set()
    for epoch in range(4):
        for rows in sampler.batches(epoch):
            a, p, na, np_ = (rows[:, j] for j in range(4))  # sampler columns [A, P, NA, NP]
            assert np.all(clip[a] == clip[p]) and np.all(clip[a] == clip[na]) and np.all(clip[a] == clip[np_])
            d_pos = np.abs(frame[p] - frame[a])
            assert set(d_pos.tolist()) <= {2, 3, 4, 5, 6}
            assert np.all(np.abs(frame[na] - frame[a]) >= 12)
            assert set(np.abs(frame[np_] - frame[na]).tolist()) <= {2, 3, 4, 5, 6}
            seen |= set(d_pos.tolist())
    assert len(seen) >= 2
    no_time = next(iter(method(time_aug=False).make_sampler(data, 4, 0).batches(0)))
    assert np.array_equal(no_time[:, 0], no_time[:, 1]) and np.array_equal(no_time[:, 2], no_time[:, 3])
    assert np.all(np.abs(frame[no_time[:, 2]] - frame[no_time[:, 0]]) >= 12)
    assert method(hard_negatives=False).make_sampler(data, 4, 0).k == 2
    from workbench.views.samplers import RandomSampler

    assert isinstance(method(**ABLATION_ROWS["simclr"]).make_sampler(data, 4, 0), RandomSampler)


def test_views_are_in_loss_order_A_NA_P_NP(clips):
    _, data = clips
    m = method(face_swap=False, landmark_mask=False)
    rows, batch = first_batch(m, data)
    b = rows.shape[0]
    v = m.make_views(batch)
    expected, _ = data.batch(rows[:, [0, 2, 1, 3]].T.reshape(-1))  # [A, NA, P, NP]
    assert torch.equal(v.raw, expected)
    assert v.images.shape == (4 * b, 3, S, S)
    assert torch.equal(v.positive_index, (torch.arange(4 * b) + 2 * b) % (4 * b))  # A<->P, NA<->NP
    assert torch.equal(v.item, torch.arange(b).repeat(4))
    assert not v.swapped.any()
    two = method(hard_negatives=False, face_swap=False, landmark_mask=False)
    _, batch2 = first_batch(two, data)
    v2 = two.make_views(batch2)
    assert v2.images.shape == (2 * b, 3, S, S) and torch.equal(v2.positive_index, pair_positive_index(b))


@pytest.mark.parametrize("hard_negatives", [True, False])
def test_part_mask_is_shared_by_the_pair_by_default_independent_as_ablation(clips, monkeypatch, hard_negatives):
    """Default: row i and its positive (i ± M/2: A/P, NA/NP) get the same part masked, or none in both.
    ``mask_shared=False`` (the official code) draws per view, so some pairs differ."""
    import workbench.methods.sslfer as mod

    _, data = clips
    chosen: list[torch.Tensor] = []
    real = mod.part_mask

    def spy(*args, **kw):
        out, c = real(*args, **kw)
        chosen.append(c)
        return out, c

    monkeypatch.setattr(mod, "part_mask", spy)
    for shared in (True, False):
        m = method(face_swap=False, hard_negatives=hard_negatives, mask={"p": 0.8},
                   **({} if shared else {"mask_shared": False}))
        _, batch = first_batch(m, data, batch_size=8, seed=2)
        v = m.make_views(batch)
        c = chosen[-1]
        assert c.shape == (v.images.shape[0],)
        same = c == c[v.positive_index]
        assert bool(same.all()) is shared, (shared, c)
        assert (c >= 0).any()


def test_faceswap_swaps_positives_with_other_identities_never_anchors(clips):
    _, data = clips
    m = method(swap={"p": 1.0})
    rows, batch = first_batch(m, data)
    b = rows.shape[0]
    ident = batch.codes["identity"]
    assert len(set(ident[:, 0].tolist())) > 1
    x, lm, ids = batch.images, batch.landmarks, ident
    out, _, donors = m.swap_positives(x, lm, ids, torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out[:, 2], x[:, 2])  # A, NA untouched
    assert torch.all(donors[:, [0, 2]] == -1) and torch.all(donors[:, [1, 3]] >= 0)
    flat_ids = ids.reshape(-1)
    for col in (1, 3):
        assert torch.all(flat_ids[donors[:, col]] != ids[:, col])  # donor = another identity
        assert all(not torch.equal(out[i, col], x[i, col]) for i in range(b))
    v = m.make_views(batch)
    assert not v.swapped[: 2 * b].any() and v.swapped[2 * b:].all()  # loss rows [A, NA | P, NP]
    assert torch.all(v.item[v.donor[2 * b:]] != v.item[2 * b:])
    none = method(swap={"p": 0.0})
    out0, lm0, d0 = none.swap_positives(x, lm, ids, torch.Generator().manual_seed(1))
    assert torch.equal(out0, x) and torch.equal(lm0, lm) and torch.all(d0 == -1)
    assert not none.make_views(batch).swapped.any()


def test_training_step_is_maskfn_over_the_views_with_protected_hard_negatives(clips):
    _, data = clips
    m = method()
    _, batch = first_batch(m, data, seed=5)
    out = m.training_step(batch)
    assert torch.isfinite(out["loss"]) and float(out["maskfn_same_item"]) == 0.0
    # the same step recomputed from its views and the pure loss functions
    _, batch = first_batch(m, data, seed=5)
    v = m.make_views(batch)
    z = m(v.images)["z"]
    protect = v.item[:, None] == v.item[None, :]
    fn = select_false_negatives(landmark_descriptor(v.raw_landmarks), v.positive_index, protect)
    assert torch.all(v.item[fn] != v.item)
    expected = maskfn_loss(z, v.positive_index, fn, 0.07, 0.8)
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    quirk = method(protect_hard_negatives=False)
    _, batch = first_batch(quirk, data, seed=5)
    assert torch.isfinite(quirk.training_step(batch)["loss"])
    plain_nt = method(mask_fn=False)
    _, batch = first_batch(plain_nt, data, seed=5)
    v = plain_nt.make_views(batch)
    _, batch = first_batch(plain_nt, data, seed=5)
    got = plain_nt.training_step(batch)["loss"].detach()
    want = nt_xent(plain_nt(v.images)["z"], v.positive_index, 0.07).detach()
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def _expected_maskfn_loss(m: SSLFER, v, z, per_person: bool):
    from workbench.losses.maskfn import person_residual

    desc = landmark_descriptor(v.raw_landmarks)
    if per_person:
        desc = person_residual(desc, v.identity)
    has = desc.abs().sum(1) > 0
    protect = (v.item[:, None] == v.item[None, :]) | ~has[None, :]
    fn = select_false_negatives(desc, v.positive_index, protect)
    fn = torch.where(has, fn, torch.full_like(fn, -1))
    return maskfn_loss(z, v.positive_index, fn, m.cfg.temperature, m.cfg.maskfn_lambda), fn


@pytest.mark.parametrize("per_person", [False, True])
def test_descriptor_per_person_option_and_rows_without_a_descriptor(clips, per_person):
    """``descriptor_per_person`` (off by default, measured): MaskFN compares each row's deviation from
    its person's mean descriptor in the batch (identity codes of the rows, in loss order). Either way a
    row without landmarks neither gets nor becomes a false negative."""
    _, data = clips
    assert SSLFERConfig().descriptor_per_person is False
    m = method(descriptor_per_person=per_person, face_swap=False)
    rows, batch = first_batch(m, data, seed=6)
    batch.landmarks[0, 2] = float("nan")  # item 0's NA: loss row b
    b = rows.shape[0]
    v = m.make_views(batch)
    ident = torch.from_numpy(data.codes("identity")[0])
    order = torch.from_numpy(rows[:, [0, 2, 1, 3]].T.reshape(-1))  # [A, NA, P, NP]
    assert torch.equal(v.identity, ident[order])
    z = m(v.images)["z"]
    expected, fn = _expected_maskfn_loss(m, v, z, per_person)
    assert fn[b] == -1 and not (fn == b).any()
    _, batch = first_batch(m, data, seed=6)
    batch.landmarks[0, 2] = float("nan")
    out = m.training_step(batch)
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    _, other = _expected_maskfn_loss(m, v, z, not per_person)
    assert not torch.equal(fn, other)  # the option changes which rows are promoted


def test_step_maskfn_terms_are_the_library_terms_with_a_masked_l2_mean():
    """The step's MaskFN terms are ``maskfn_terms`` (no boolean-mask indexing); its L2 term is the
    masked mean = the mean over rows with a false negative, 0 with a gradient path when there is none."""
    from workbench.losses import masked_mean, maskfn_terms

    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 6, generator=g, requires_grad=True)
    pos = pair_positive_index(6)
    fn = torch.tensor([3, -1, 0, 7, -1, 2, 11, 4, -1, 1, 5, 8])
    l1, l2, has = maskfn_terms(z, pos, fn, 0.1)
    torch.testing.assert_close(masked_mean(l2, has), l2[has].mean())
    l1, l2, has = maskfn_terms(z, pos, torch.full_like(fn, -1), 0.1)
    none = masked_mean(l2, has)
    assert float(none.detach()) == 0.0 and none.requires_grad


@pytest.mark.parametrize("over", [{"swap": {"p": 1.0}},
                                  {"swap": {"p": 1.0, "feather": 0.1}, "hard_negatives": False}])
def test_training_step_reads_nothing_from_the_device(clips, monkeypatch, over):
    """One step (forward and backward, views as on CUDA) with FaceSwap, MaskFN and a positive without
    landmarks (it used to stop ``linalg.inv``): no host read and no data-dependent shape anywhere;
    nothing of the kind (nor a tensor built from Python data) in the method or FaceSwap code, after a
    first step that builds the per-device landmark indices (``_ops.index_tensor``)."""
    _, data = clips
    cuda_paths(monkeypatch)
    m = method(**over)
    m.training_step(first_batch(m, data, batch_size=4)[1])
    _, batch = first_batch(m, data, batch_size=4, seed=1)
    batch.landmarks[0, 1] = float("nan")
    with DeviceReads() as reads:
        out = m.training_step(batch)
        out["loss"].backward()
    assert reads.host == [] and reads.shapes == [] and reads.checks == []  # in the whole step
    assert reads.in_files("methods/sslfer.py", "views/faceswap.py") == []
    assert torch.isfinite(out["loss"])


def test_training_step_backpropagates(clips):
    _, data = clips
    m = method()
    _, batch = first_batch(m, data, batch_size=4)
    out = m.training_step(batch)
    out["loss"].backward()
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and out["z"].shape == (4, 16)


def test_resnet18_descriptor_from_local_weights_and_loud_failures(clips, tmp_path):
    import timm
    from safetensors.torch import save_file

    _, data = clips
    with pytest.raises(ConfigError, match="descriptor_weights"):
        method(descriptor="resnet18")
    weights = tmp_path / "r18.safetensors"
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    m = method(descriptor="resnet18", descriptor_weights=str(weights), descriptor_crop=32)
    m.check_data(data.manifest)
    _, batch = first_batch(m, data, batch_size=2)
    v = m.make_views(batch)
    d = m.descriptors(v.raw, v.raw_landmarks)
    assert d.shape == (8, 1024) and torch.allclose(d.norm(dim=1), torch.ones(8), atol=1e-5)
    assert not any("descriptor" in k for k in m.state_dict())  # frozen, not checkpointed
    assert torch.isfinite(m.training_step(first_batch(m, data, batch_size=2)[1])["loss"])
    gone = method(descriptor="resnet18", descriptor_weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match="not found"):
        gone.check_data(data.manifest)
    with pytest.raises(CheckpointError, match="not found"):
        gone.descriptors(v.raw, v.raw_landmarks)


def test_eye_mouth_crops_are_square_padded_boxes():
    from workbench.data.geometry import template_landmarks

    lm = torch.as_tensor(template_landmarks(64), dtype=torch.float32).view(1, 68, 2)
    white = torch.ones(1, 3, 64, 64)
    eyes, mouth = eye_mouth_crops(white, lm, size=32, margin=2 / 64)
    assert eyes.shape == mouth.shape == (1, 3, 32, 32)
    for crop in (eyes, mouth):  # wider than tall: black bands above and below, image in the middle
        assert crop[0, :, 16, 16].eq(1).all() and crop[0, :, 0].eq(0).all() and crop[0, :, -1].eq(0).all()
    missing = eye_mouth_crops(white, torch.full((1, 68, 2), float("nan")), size=16)
    assert all(torch.all(c == 0) for c in missing)


def _cfg(man, method_name, mc):
    from workbench.train import RunConfig

    return RunConfig.from_dict({
        "method": method_name, "data": {"manifest": str(man), "image_size": S, "split": "all"},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "knn_every": 0, "log_every": 1, "device": "cpu"},
        "method_config": mc})


def test_pretrain_two_steps_records_the_descriptor(clips, tmp_path):
    from workbench.io import read_json
    from workbench.runs import pretrain

    man, _ = clips
    res = pretrain(_cfg(man, "sslfer", {**SSLFER.presets["cpu"], **TINY}), tmp_path / "r", progress=False)
    assert res.step == 2 and np.isfinite(res.last_metrics["loss"])
    resolved = read_json(tmp_path / "r" / "config.json")["method_config_resolved"]
    assert resolved["descriptor"] == "landmarks" and resolved["mask_fn"] and resolved["face_swap"]


def test_missing_clip_metadata_stops_with_the_column_named(plain, tmp_path):
    from workbench.runs import pretrain

    man, data = plain
    with pytest.raises(MissingMetadataError, match="'clip'"):
        pretrain(_cfg(man, "sslfer", TINY), tmp_path / "r", progress=False)
    simclr = method(**ABLATION_ROWS["simclr"])
    simclr.check_data(data.manifest)  # everything off = SimCLR: no special column needed
    rows = next(iter(simclr.make_sampler(data, 4, 0).batches(0)))
    out = simclr.training_step(make_batch(data, rows))
    assert torch.isfinite(out["loss"]) and out["z"].shape == (4, 16)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(clips, tmp_path):
    """Under DDP the loss spans the global batch (gathered rows, shifted positive/item indices, MaskFN
    candidates from every process): 2 CPU processes x 2 items = 1 process x 4 items, for 2 SGD steps
    (the second loss also checks the gradient scale). Views without randomness, FaceSwap off (each
    process draws its own donors from its own generator; the global donor pool is tested in
    ``test_methods_ddp_views.py``)."""
    import json

    from workbench.runs import pretrain
    from workbench.train import RunConfig

    pytest.importorskip("lightning_fabric")
    man, _ = clips
    fixed = {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "hflip_p": 0.0, "jitter_p": 0.0,
             "grayscale_p": 0.0, "blur_p": 0.0}
    losses = []
    for devices in (1, 2):
        cfg = RunConfig.from_dict({
            "method": "sslfer", "data": {"manifest": str(man), "image_size": S, "split": "all"},
            "model": {"backbone": "test_efficientnet"},
            "train": {"epochs": 1, "batch_size": 4, "optimizer": "sgd", "lr": 0.05, "warmup_epochs": 0,
                      "device": "cpu", "threads": 1, "log_every": 1, "knn_every": 0, "max_steps": 2,
                      "devices": devices, "strategy": "ddp_spawn", "amp": "off", "channels_last": "off"},
            "method_config": {**TINY, "temperature": 0.2, "face_swap": False, "landmark_mask": False,
                              "anchor_view": fixed, "positive_view": fixed}})
        pretrain(cfg, tmp_path / str(devices), progress=False)
        recs = [json.loads(x) for x in (tmp_path / str(devices) / "metrics.jsonl").read_text().splitlines()]
        losses.append([r["loss"] for r in recs if "loss" in r])
    assert len(losses[0]) == 2
    np.testing.assert_allclose(losses[1], losses[0], rtol=2e-4)
