"""Multi-process pretraining through Lightning Fabric: sharding, seeds, sync BN, and 2 gloo processes
giving the same run as one process on the same global batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from workbench.errors import ConfigError
from workbench.methods.base import all_gather_with_grad, process_rank_and_world
from workbench.train import RunConfig, load_run, pretrain
from workbench.train.checkpoint import load_tensors
from workbench.train.distributed import GlobalBatchNorm, convert_sync_batchnorm, shard_rows, step_seed

#: views without randomness: the same item gives the same view whichever process draws it
FIXED_VIEWS = {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "hflip_p": 0.0, "jitter_p": 0.0,
               "grayscale_p": 0.0, "blur_p": 0.0}


def _cfg(manifest, devices: int, **train) -> RunConfig:
    return RunConfig.from_dict({
        "method": "simclr",
        "data": {"manifest": str(manifest), "image_size": 32, "split": "all"},
        # test_efficientnet: 0.1 M parameters, BatchNormAct2d (the timm BN+activation layer), no max-pool
        # (ties in a max-pool turn 1e-7 float differences into different gradients)
        "model": {"backbone": "test_efficientnet"},
        "train": {"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "warmup_epochs": 0,
                  "seed": 0, "device": "cpu", "threads": 1, "log_every": 1, "knn_every": 0, "max_steps": 3,
                  "devices": devices, "strategy": "ddp_spawn", **train},
        "method_config": {"proj_hidden_dim": 32, "proj_dim": 16, "temperature": 0.2, "views": FIXED_VIEWS},
    })


def _losses(run_dir) -> list[float]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if "loss" in r]


def test_single_process_helpers_are_identities():
    assert process_rank_and_world() == (0, 1)
    x = torch.randn(4, 3, requires_grad=True)
    assert all_gather_with_grad(x) is x


def test_shards_are_disjoint_exact_and_ordered():
    rows = np.arange(24).reshape(12, 2)
    parts = [shard_rows(rows, r, 3) for r in range(3)]
    assert all(p.shape == (4, 2) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), rows)
    with pytest.raises(ConfigError, match="split exactly"):
        shard_rows(rows, 0, 5)


def test_step_seeds_rank0_matches_single_process_and_ranks_differ():
    assert step_seed(7, 11, 0) == 7 * 1_000_003 + 11  # = Trainer._generator_seed of one process
    seeds = {step_seed(7, 11, r) for r in range(8)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(7, 11, 3) == step_seed(7, 11, 3) != step_seed(7, 12, 3)


def test_sync_batchnorm_conversion_keeps_parameters_buffers_and_activation():
    from timm.layers import BatchNormAct2d

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), BatchNormAct2d(4, act_layer=nn.ReLU),
                        nn.Flatten(), nn.LazyLinear(5), nn.BatchNorm1d(5))
    x = torch.randn(6, 3, 8, 8)
    ref = net(x)
    keys, w = set(net.state_dict()), net[1].weight
    conv = convert_sync_batchnorm(net, "cpu")
    assert isinstance(conv[1], GlobalBatchNorm) and isinstance(conv[5], GlobalBatchNorm)
    assert isinstance(conv[2], GlobalBatchNorm) and isinstance(conv[2].act, nn.ReLU)
    assert conv[1].weight is w and set(conv.state_dict()) == keys
    conv.load_state_dict(conv.state_dict())
    # not distributed: plain BatchNorm (same outputs, same running statistics update)
    torch.testing.assert_close(conv(x), ref)


def test_batch_must_divide_over_processes(tmp_path):
    pytest.importorskip("lightning_fabric")
    from workbench.train.distributed import make_fabric

    cfg = _cfg(tmp_path / "none.csv", devices=3)  # 16 items cannot be split over 3 processes
    with pytest.raises(ConfigError, match="divisible"):
        make_fabric(cfg)


def test_cli_flags_reach_the_config():
    from workbench.cli.main import build_parser
    from workbench.cli.pretrain import build_config

    args = build_parser().parse_args(["pretrain", "--out", "x", "--devices", "4", "--strategy", "ddp_spawn",
                                      "--num-nodes", "2", "--batch-size", "64"])
    tc = build_config(args).train
    assert (tc.devices, tc.strategy, tc.num_nodes, tc.batch_size) == (4, "ddp_spawn", 2, 64)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tiny_synth, tmp_path):
    """SimCLR, global batch 16: 1 process vs 2 CPU processes (gloo, 8 items each) for 3 SGD steps.

    Equal logged losses and final weights need all three pieces: the exact shard of the same sampler
    order, BatchNorm statistics over the global batch (without sync, running variances and
    weights differ by 0.1-1), and NT-Xent over the gathered batch (else the first loss differs).
    """
    pytest.importorskip("lightning_fabric")
    one = pretrain(_cfg(tiny_synth, devices=1), tmp_path / "one", progress=False)
    two = pretrain(_cfg(tiny_synth, devices=2), tmp_path / "two", progress=False)
    assert one.status == two.status == "max_steps" and one.step == two.step == 3

    la, lb = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(la) == len(lb) == 3  # rank 0 alone logs: no duplicated lines
    np.testing.assert_allclose(lb, la, rtol=2e-4)

    a = load_tensors(tmp_path / "one" / "checkpoints" / "last.safetensors")
    b = load_tensors(tmp_path / "two" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys()
    model_keys = [k for k in a if k.startswith("model.") and a[k].is_floating_point()]
    assert any("running_var" in k for k in model_keys)
    for k in model_keys:  # observed differences ~1e-4 (float summation order), 1e-3 allowed
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-3, msg=k)
    saved = json.loads((tmp_path / "two" / "config.json").read_text())["config"]["train"]
    assert saved["devices"] == 2
    run = load_run(tmp_path / "two")  # a multi-process checkpoint loads into a plain (BatchNorm) method
    assert not any(isinstance(m, GlobalBatchNorm) for m in run.method.modules())
    assert run.method(torch.rand(2, 3, 32, 32))["z"].shape == (2, 16)
