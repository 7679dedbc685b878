"""Multi-process pretraining through Lightning Fabric: sharding, seeds, sync BN, and 2 gloo processes
giving the same run as one process on the same global batch."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from workbench.dist import all_reduce_, gather, gather_with_grad, is_distributed, rank_and_world
from workbench.errors import ConfigError, TrainingDiverged
from workbench.runs import load_run, pretrain
from workbench.train import RunConfig
from workbench.train.checkpoint import load_tensors
from workbench.train.distributed import GlobalBatchNorm, convert_sync_batchnorm, shard_rows, step_seed

#: views without randomness: the same item gives the same view whichever process draws it
FIXED_VIEWS = {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "hflip_p": 0.0, "jitter_p": 0.0,
               "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}

#: tiny heads and deterministic views per method (the methods whose loss compares items across the batch)
METHOD_CONFIGS = {
    "simclr": {"proj_hidden_dim": 32, "proj_dim": 16, "temperature": 0.2, "views": FIXED_VIEWS},
    # τ = 0.5: at 0.2 this tiny MoCo amplifies float summation-order noise fast (weights of 1 vs 2 processes
    # differ by 1e-6 after one step, 7e-4 after three, although one step's gradients agree to 1e-5); 5e-5 at 0.5
    "mocov3": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32, "temperature": 0.5,
               "view1": FIXED_VIEWS, "view2": FIXED_VIEWS},
    "barlow_twins": {"proj_hidden_dim": 32, "proj_dim": 16, "view1": FIXED_VIEWS, "view2": FIXED_VIEWS},
}


def _cfg(manifest, devices: int, method: str = "simclr", **train) -> RunConfig:
    return RunConfig.from_dict({
        "method": method,
        "data": {"manifest": str(manifest), "image_size": 32, "split": "all"},
        # test_efficientnet: 0.1 M parameters, BatchNormAct2d (the timm BN+activation layer), no max-pool
        # (ties in a max-pool turn 1e-7 float differences into different gradients)
        "model": {"backbone": "test_efficientnet"},
        "train": {"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "warmup_epochs": 0,
                  "seed": 0, "device": "cpu", "threads": 1, "log_every": 1, "knn_every": 0, "max_steps": 3,
                  "devices": devices, "strategy": "ddp_spawn",
                  # float32 everywhere: bf16 autocast ("auto" on CPUs with AVX512-BF16) breaks the tolerances
                  "amp": "off", "channels_last": "off", **train},
        "method_config": METHOD_CONFIGS[method],
    })


def _losses(run_dir) -> list[float]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if "loss" in r]


def test_single_process_helpers_are_identities():
    assert rank_and_world() == (0, 1) and not is_distributed()
    x = torch.randn(4, 3, requires_grad=True)
    assert gather_with_grad(x) is x and gather(x) is x
    y = torch.arange(3)
    assert all_reduce_(y) is y and y.tolist() == [0, 1, 2]


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


LAUNCHER_VARS = ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                 "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS")


def test_several_machines_without_a_launcher_stop_at_once(tmp_path, monkeypatch, capsys):
    """`--num-nodes 2` outside torchrun/SLURM used to wait forever with a store listening on every
    interface: now one line, exit 2, nothing started; under torchrun the check passes."""
    pytest.importorskip("lightning_fabric")
    from workbench.cli.main import main
    from workbench.train.distributed import launcher, make_fabric

    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    assert launcher() is None
    with pytest.raises(ConfigError, match="needs a launcher"):
        make_fabric(_cfg(tmp_path / "none.csv", devices=1, num_nodes=2))
    code = main(["pretrain", "--num-nodes", "2", "--device", "cpu", "--batch-size", "16", "--max-steps", "1",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs a launcher" in err[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
    for var, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "10.0.0.1"),
                       ("MASTER_PORT", "29500")):
        monkeypatch.setenv(var, value)
    assert launcher() == "torchrun"


def test_single_machine_runs_rendezvous_on_loopback(tmp_path, monkeypatch):
    pytest.importorskip("lightning_fabric")
    from workbench.train.distributed import make_fabric

    for var in LAUNCHER_VARS:
        monkeypatch.setenv(var, "x")  # recorded, so the original (absent) state comes back afterwards
        monkeypatch.delenv(var)
    make_fabric(_cfg(tmp_path / "none.csv", devices=2))
    assert os.environ["MASTER_ADDR"] == "127.0.0.1"


def test_cli_flags_reach_the_config():
    from workbench.cli.main import build_parser
    from workbench.cli.pretrain import build_config

    args = build_parser().parse_args(["pretrain", "--out", "x", "--devices", "4", "--strategy", "ddp_spawn",
                                      "--num-nodes", "2", "--batch-size", "64"])
    tc = build_config(args).train
    assert (tc.devices, tc.strategy, tc.num_nodes, tc.batch_size) == (4, "ddp_spawn", 2, 64)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
def test_two_gloo_processes_match_one_process(tiny_synth, tmp_path, method):
    """Global batch 16: 1 process vs 2 CPU processes (gloo, 8 items each) for 3 SGD steps.

    Equal logged losses and final weights need all the pieces: the exact shard of the same sampler
    order, BatchNorm statistics over the global batch (without sync, running variances and
    weights differ by 0.1-1), and the loss over the gathered batch: SimCLR's negatives, MoCo v3's
    keys, Barlow Twins' standardisation and cross-correlation (without the gather, the logged losses
    differ by up to 26 % for MoCo v3 and 130 % for Barlow Twins).
    """
    pytest.importorskip("lightning_fabric")
    one = pretrain(_cfg(tiny_synth, devices=1, method=method), tmp_path / "one", progress=False)
    two = pretrain(_cfg(tiny_synth, devices=2, method=method), tmp_path / "two", progress=False)
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


# -- stop / NaN agreement: one asynchronous all-reduce per step, read one step later ------------------

def _ddp_cfg(manifest, **train) -> RunConfig:
    """2 processes, global batch 48: 2 epochs of 4 steps on the 192 tiny faces; metrics at step 1 only."""
    return _cfg(manifest, devices=2, **{"batch_size": 48, "epochs": 2, "max_steps": 0, "log_every": 1000,
                                        "strategy": "ddp", **train})


#: name → (NaN loss at (rank, step), rank 0 asks to stop during step)
AGREEMENT_RUNS = {"nan_mid_epoch": ((1, 5), None), "nan_last_step_of_epoch": ((0, 7), None), "stop": (None, 4)}


def _trace_hook(trace: str, nan: tuple[int, int] | None, stop_at: int | None, trainer) -> None:
    """``trainer_hook``: the loss of ``nan = (rank, step)`` becomes NaN; rank 0 asks to stop during step
    ``stop_at``. Writes ``trace/rank{r}.json``: each agreement read (step counter, agreed step, inside
    ``_settle``), each blocking metric reduction (counter, inside ``_settle``), how ``fit`` ended."""
    rec: dict = {"reads": [], "sums": [], "steps_per_epoch": trainer.steps_per_epoch}
    settling = [False]
    forward, total, settle, fit = trainer._forward_step, trainer._sum, trainer._settle, trainer.fit
    read = getattr(trainer, "_read_agreement", None)

    def forward_(batch):
        out = forward(batch)
        if nan is not None and (trainer.rank, trainer.step) == tuple(nan):
            out = {**out, "loss": out["loss"] * float("nan")}
        if trainer.rank == 0 and trainer.step == stop_at:
            trainer.stop()
        return out

    def read_() -> None:
        if trainer._agreement is not None:
            rec["reads"].append([trainer.step, trainer._agreement.step, settling[0]])
        read()

    def sum_(values):
        rec["sums"].append([trainer.step, settling[0]])
        return total(values)

    def settle_() -> None:
        settling[0] = True
        try:
            settle()
        finally:
            settling[0] = False

    def fit_():
        try:
            res = fit()
            rec.update(status=res.status, step=res.step)
            return res
        except TrainingDiverged as e:
            rec["error"] = str(e)
            raise
        finally:
            (Path(trace) / f"rank{trainer.rank}.json").write_text(json.dumps(rec))

    trainer._forward_step, trainer._sum, trainer._settle, trainer.fit = forward_, sum_, settle_, fit_
    if read is not None:
        trainer._read_agreement = read_


def _agreement_worker(rank: int, world: int, port: int, manifest: str, root: str) -> None:
    """One process of every AGREEMENT_RUNS run in turn: the real per-process entry point
    (``workbench.runs.pretrain.distributed_worker``) in processes started once (as torchrun would)."""
    import os

    from workbench.runs.pretrain import distributed_worker
    from workbench.train.distributed import make_fabric

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    fabric = make_fabric(_ddp_cfg(manifest))
    fabric.launch()
    for name, (nan, stop_at) in AGREEMENT_RUNS.items():
        (Path(root) / name / "trace").mkdir(parents=True, exist_ok=True)
        hook = functools.partial(_trace_hook, str(Path(root) / name / "trace"), nan, stop_at)
        try:
            distributed_worker(fabric, _ddp_cfg(manifest), str(Path(root) / name / "run"), False, None, False, hook)
        except TrainingDiverged:
            pass  # in the trace
        fabric.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def agreement_runs(tiny_synth, tmp_path_factory) -> Path:
    """Every AGREEMENT_RUNS run by 2 gloo processes (started once: a process start costs more than a run)."""
    pytest.importorskip("lightning_fabric")
    import socket

    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("agreement")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_agreement_worker, args=(2, port, str(tiny_synth), str(root)), nprocs=2)
    return root


def _traces(run: Path) -> list[dict]:
    recs = [json.loads((run / "trace" / f"rank{r}.json").read_text()) for r in range(2)]
    assert recs[0]["steps_per_epoch"] == 4
    # symmetric collectives: every process read the same agreements and reduced metrics at the same points
    assert recs[0]["reads"] == recs[1]["reads"] and recs[0]["sums"] == recs[1]["sums"]
    return recs


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["nan_mid_epoch", "nan_last_step_of_epoch"])
def test_nan_on_one_process_stops_every_process_before_a_checkpoint(agreement_runs, name):
    """One process's loss is NaN at a step of epoch 2 (its NaN gradients reach every process): every
    process raises for that step (read a step late, or at the epoch end for the epoch's last step),
    and the checkpoint stays the one of epoch 1, with finite weights."""
    (_, nan_step), _ = AGREEMENT_RUNS[name]
    run = agreement_runs / name
    for rec in _traces(run):
        assert f"loss became nan at step {nan_step} on 1 of 2 processes (epoch 1)" in rec.get("error", ""), rec
    side = json.loads((run / "run" / "checkpoints" / "last.safetensors.json").read_text())
    assert side["step"] == 4 < nan_step
    weights = load_tensors(run / "run" / "checkpoints" / "last.safetensors")
    assert all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())
    events = [json.loads(x).get("event") for x in (run / "run" / "metrics.jsonl").read_text().splitlines()]
    assert events.count("epoch_end") == 1 and "stopped" not in events


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stop_on_rank0_is_agreed_a_step_later_without_blocking_reads(agreement_runs, tiny_synth):
    """Rank 0 asks to stop during step 4 (the first of epoch 2, counter 4 → 5): both processes stop at
    counter 5 or 6 with a checkpoint that resumes (here in one process). No step waits for the step
    just queued: the loop reads at most one agreement per step, launched a step earlier (counter ``c``
    reads a step ``<= c - 2``), and reduces metrics only on the logging step and when settling."""
    run = agreement_runs / "stop"
    recs = _traces(run)
    step = recs[0]["step"]
    assert step in (5, 6) and [(r["status"], r["step"]) for r in recs] == [("stopped", step)] * 2
    side = json.loads((run / "run" / "checkpoints" / "last.safetensors.json").read_text())
    assert (side["step"], side["step_in_epoch"], side["epoch"]) == (step, step - 4, 1)
    rec = recs[0]
    assert [c for c, settling in rec["sums"] if not settling] == [0], rec  # the logging step (1) only
    assert [c for c, settling in rec["sums"] if settling] == [4, step], rec  # epoch end, stop
    loop = [(c, s) for c, s, settling in rec["reads"] if not settling]
    assert [c for c, _ in loop] == sorted({c for c, _ in loop}), rec  # at most one read per step
    assert all(s is None or s <= c - 2 for c, s in loop), rec  # never of the step just queued
    assert len(loop) >= step - 1, rec
    done = pretrain(_cfg(tiny_synth, devices=1, batch_size=48, epochs=2, max_steps=0), run / "run",
                    resume=True, progress=False)
    assert done.status == "finished" and done.step == 8
