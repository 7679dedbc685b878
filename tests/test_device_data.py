"""Decoded faces kept on the training device: batches gathered there equal the host path's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.data.cache import keep_on_device, load_face_data
from workbench.runs import load_run, pretrain
from workbench.train import RunConfig


def test_a_device_batch_equals_the_host_batch(tiny_synth):
    data = load_face_data(tiny_synth, 32, progress=False)
    rows = np.random.default_rng(0).integers(0, len(data), size=(6, 2))
    host_x, host_lm = data.batch(rows, "cpu")
    up = data.to_device("cpu")
    assert up.on_device("cpu") and not data.on_device("cpu") and up.nbytes == data.nbytes > 0
    dev_x, dev_lm = up.batch(rows, "cpu")
    assert dev_x.shape == (6, 2, 3, 32, 32) and torch.equal(dev_x, host_x)
    assert torch.equal(torch.nan_to_num(dev_lm, -1.0), torch.nan_to_num(host_lm, -1.0))
    assert up.codes("identity")[1] == data.codes("identity")[1]
    assert not up.split("test").on_device("cpu")  # a subset gathers on the host again


def test_auto_uploads_only_on_cuda(tiny_synth):
    data = load_face_data(tiny_synth, 32, progress=False)
    cpu = torch.device("cpu")
    assert keep_on_device(data, cpu, "auto") is data and keep_on_device(data, cpu, "off") is data
    assert keep_on_device(data, cpu, "on").on_device(cpu)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_uploads_on_cuda_when_it_fits(tiny_synth):
    data = load_face_data(tiny_synth, 32, progress=False)
    dev = torch.device("cuda")
    assert keep_on_device(data, dev, "auto").on_device(dev)
    assert not keep_on_device(data, dev, "auto", share=0.0).on_device(dev)
    x, _ = keep_on_device(data, dev, "on").batch(np.arange(8), dev)
    assert torch.equal(x.cpu(), data.batch(np.arange(8), "cpu")[0])


def test_training_on_device_data_gives_the_same_weights(tiny_synth, tmp_path):
    def run(mode: str):
        cfg = RunConfig.from_dict({
            "method": "simclr", "data": {"manifest": str(tiny_synth), "image_size": 32},
            "model": {"backbone": "resnet10t"}, "method_config": {"proj_hidden_dim": 32, "proj_dim": 16},
            "train": {"epochs": 1, "batch_size": 16, "max_steps": 3, "device": "cpu", "knn_every": 0,
                      "amp": "off", "device_data": mode}})
        pretrain(cfg, tmp_path / mode, progress=False,
                 trainer_hook=lambda t: uploaded.append(t.data.on_device(t.device)))
        return load_run(tmp_path / mode).method.state_dict()

    uploaded: list[bool] = []
    host, device = run("off"), run("on")
    assert uploaded == [False, True]
    for key, value in host.items():
        if value.is_floating_point():
            torch.testing.assert_close(device[key], value, rtol=1e-5, atol=1e-6)
