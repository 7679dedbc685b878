"""`amp=auto` / `channels_last=auto`: bf16 and NHWC only where the hardware multiplies bf16 natively."""

from __future__ import annotations

import torch

from workbench.train import precision
from workbench.train.precision import auto_amp_dtype, resolve_amp, resolve_channels_last

CPU = torch.device("cpu")


def test_explicit_settings_win():
    assert resolve_amp("off", CPU) is None and resolve_amp("bf16", CPU) is torch.bfloat16
    assert resolve_channels_last("on", CPU, True, None) is True
    assert resolve_channels_last("off", torch.device("cuda"), False, torch.bfloat16) is False


def test_auto_follows_the_cpu_capability(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_amp("auto", CPU) is torch.bfloat16
    assert resolve_channels_last("auto", CPU, False, torch.bfloat16) is True
    assert resolve_channels_last("auto", CPU, True, torch.bfloat16) is False  # ViTs: never NHWC
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_amp("auto", CPU) is None  # emulated bf16 is slower than float32
    assert resolve_channels_last("auto", CPU, False, None) is False  # NHWC float32 was slower on CPU
    assert auto_amp_dtype(torch.device("mps")) is None


def test_capability_probe_answers_a_bool():
    assert isinstance(precision.cpu_has_native_bf16(), bool)


def test_trainer_uses_the_resolved_precision(tiny_synth, tmp_path, monkeypatch):
    from workbench.data.cache import load_face_data
    from workbench.runs import RunFolder, build_method
    from workbench.train import RunConfig
    from workbench.train.trainer import Trainer

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    rc = RunConfig.from_dict({"method": "simclr", "data": {"manifest": str(tiny_synth), "image_size": 32},
                              "model": {"backbone": "resnet10t"},
                              "train": {"batch_size": 8, "device": "cpu", "knn_every": 0},
                              "method_config": {"proj_hidden_dim": 32, "proj_dim": 16}})
    data = load_face_data(tiny_synth, 32, progress=False)
    t = Trainer(rc, build_method(rc), data, RunFolder(tmp_path / "r"), progress=False)
    assert t.amp_dtype is torch.bfloat16 and t._channels_last()
    conv = next(m for m in t.method.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert t._train_step(t._make_batch(next(iter(t.sampler.batches(0))), _batch_cls()))["loss"] > 0


def _batch_cls():
    from workbench.methods.base import Batch

    return Batch
