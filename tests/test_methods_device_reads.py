"""Every registered method: one training step (forward and backward, views as on CUDA) stalls no CUDA
stream. ``DeviceReads`` sees no host read of a device value, no checked linear algebra, no
data-dependent shape and no tensor built from Python data (a synchronous host-to-device copy) in the
step, on batches drawn by the method's own sampler from the synthetic set it needs, with one image
without landmarks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _helpers import DeviceReads, cuda_paths

from workbench.config import from_dict
from workbench.methods import METHODS, Batch, SSLMethod
from workbench.models import Backbone

B = 8
HEAD = {"proj_hidden_dim": 32, "proj_dim": 16}
PRED = {**HEAD, "pred_hidden_dim": 32}
#: per method: (backbone, image size, backbone kwargs, tiny config)
SPECS: dict[str, tuple[str, int, dict[str, Any], dict[str, Any]]] = {
    "simclr": ("resnet10t", 32, {}, HEAD),
    "byol": ("resnet10t", 32, {}, PRED),
    "mocov3": ("resnet10t", 32, {}, PRED),
    "barlow_twins": ("resnet10t", 32, {}, HEAD),
    "mae": ("test_vit", 32, {"patch_size": 8}, {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}),
    # SimFLE ranks patches on the CNN's last map: timm's test ResNet at 64 px gives 2x2
    "simfle": ("test_resnet", 64, {}, {**PRED, "kd_hidden_dim": 32, "kd_dim": 16, "groups": 8, "ffl_scale": 1.0,
                                       "mae_patch_size": 8, "mae_dim": 32, "mae_depth": 1, "mae_heads": 2,
                                       "decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}),
    "sslfer": ("resnet10t", 32, {}, {**HEAD, "swap": {"p": 1.0}}),  # every positive swapped
    "contrawarping": ("resnet10t", 32, {}, {**PRED, "negatives": 2}),
    "clmex": ("resnet10t", 32, {}, HEAD),
}

@pytest.fixture(scope="module")
def synthetic_sets(tiny_synth, tiny_clips, tiny_views):
    return {"plain": tiny_synth, "clips": tiny_clips, "views": tiny_views}


def _method(name: str) -> SSLMethod:
    backbone, size, kw, cfg = SPECS[name]
    cls = METHODS[name]
    torch.manual_seed(0)
    return cls(from_dict(cls.Config, cfg), Backbone(backbone, image_size=size, **kw), size)


def _batches(m: SSLMethod, manifest, seeds: tuple[int, ...]) -> list[Batch]:
    """Trainer-like batches from the method's own sampler; image (1, 0) has no landmarks."""
    from workbench.data.cache import load_face_data

    data = load_face_data(manifest, m.image_size, progress=False)
    sampler = m.make_sampler(data, B, 0)
    out = []
    for seed in seeds:  # the first batch of epoch ``seed``
        rows = np.asarray(next(iter(sampler.batches(seed))))
        images, lm = data.batch(rows)
        flat = torch.from_numpy(rows.reshape(-1))
        codes = {c: torch.from_numpy(data.codes(c)[0])[flat].reshape(rows.shape)
                 for c in ("identity", "clip", "group", "expression") if data.has(c)}
        lm[1, 0] = float("nan")
        out.append(Batch(images=images, landmarks=lm, rows=torch.from_numpy(rows), codes=codes,
                         generator=torch.Generator().manual_seed(seed)))
    return out


def test_every_registered_method_has_a_tiny_spec():
    assert set(SPECS) == set(METHODS), "add a tiny configuration for the new method to SPECS"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_step_reads_nothing_from_the_device(name, synthetic_sets, monkeypatch):
    """A first step builds the per-device constants (``_ops.index_tensor``: landmark index lists, the
    flip permutation) once; the measured step, backward included, then has no entry at all."""
    m = _method(name)
    cuda_paths(monkeypatch)
    warm, batch = _batches(m, synthetic_sets[m.synth_mode], seeds=(0, 1))
    m.training_step(warm)["loss"].backward()
    m.zero_grad(set_to_none=True)
    with DeviceReads() as reads:
        out = m.training_step(batch)
        out["loss"].backward()
    assert reads.host + reads.checks + reads.shapes + reads.python_data == []
    assert torch.isfinite(out["loss"]) and out["z"].shape[0] == B
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
