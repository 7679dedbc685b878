"""Seeded tiny pretrain → evaluate runs, exact resume, fault handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.errors import ConfigError, MissingMetadataError, TrainingDiverged
from workbench.runs import load_run, pretrain
from workbench.train import RunConfig
from workbench.train.checkpoint import load_tensors


def _cfg(manifest, method="simclr", epochs=2, **train):
    return RunConfig.from_dict({
        "method": method,
        "data": {"manifest": str(manifest), "image_size": 32},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 1e-3, "seed": 0, "device": "cpu",
                  "log_every": 2, "knn_every": 1, **train},
        "method_config": {"proj_hidden_dim": 32, "proj_dim": 16},
    })


def _weights(run_dir):
    t = load_tensors(run_dir / "checkpoints" / "last.safetensors")
    return {k: v for k, v in t.items() if k.startswith("model.")}


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_tiny_pretrain_then_evaluate(tiny_synth, tmp_path, method):
    from workbench.evaluate.protocols import EvalConfig
    from workbench.runs import evaluate_run

    res = pretrain(_cfg(tiny_synth, method), tmp_path / method, progress=False)
    assert res.status == "finished" and res.epoch == 2
    lines = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    assert steps and all(np.isfinite(r["loss"]) for r in steps)
    assert any("collapse/effective_rank" in r for r in steps)
    epochs = [r for r in lines if r.get("event") == "epoch_end"]
    assert len(epochs) == 2 and "knn/expression" in epochs[-1]
    assert (tmp_path / method / "checkpoints" / "epoch-0002.safetensors").is_file()
    run = load_run(tmp_path / method)
    out = run.method(torch.rand(2, 3, 32, 32))
    assert set(out) >= {"feats", "z"} and out["z"].shape == (2, 16)
    r = evaluate_run(run, tiny_synth, EvalConfig(protocol="knn", target="expression"))
    assert 0.0 <= r.accuracy <= 1.0 and r.n_test > 0


def test_same_seed_same_weights_and_resume_is_exact(tiny_synth, tmp_path):
    pretrain(_cfg(tiny_synth, "byol", epochs=2, knn_every=0), tmp_path / "straight", progress=False)
    half = pretrain(_cfg(tiny_synth, "byol", epochs=2, knn_every=0, max_steps=3), tmp_path / "resumed",
                    progress=False)
    assert half.status == "max_steps" and half.step == 3  # stopped mid-epoch
    pretrain(_cfg(tiny_synth, "byol", epochs=2, knn_every=0), tmp_path / "resumed", resume=True, progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la if "loss" in r] == [r["loss"] for r in lb if "loss" in r]


def test_stop_saves_a_checkpoint_mid_epoch_and_resume_continues(tiny_synth, tmp_path):
    holder = {}

    def hook(trainer):
        holder["t"] = trainer
        trainer.callbacks.append(lambda rec: trainer.stop() if rec.get("step") == 3 else None)

    res = pretrain(_cfg(tiny_synth, epochs=2, knn_every=0, log_every=1), tmp_path / "r", progress=False,
                   trainer_hook=hook)
    assert res.status == "stopped" and res.step == 3
    side = json.loads((tmp_path / "r" / "checkpoints" / "last.safetensors.json").read_text())
    assert side["step"] == 3 and side["step_in_epoch"] == 3
    res2 = pretrain(_cfg(tiny_synth, epochs=2, knn_every=0, log_every=1), tmp_path / "r", resume=True,
                    progress=False)
    assert res2.status == "finished" and res2.step == 2 * holder["t"].steps_per_epoch


def test_ctrl_c_saves_a_checkpoint_and_the_cli_exits_130(tiny_synth, tmp_path, monkeypatch, capsys):
    from workbench.cli.main import main

    def interrupt_at_step_3(trainer):
        def cb(rec):
            if rec.get("step") == 3 and "loss" in rec:  # a training step's record, not the final event
                raise KeyboardInterrupt
        trainer.callbacks.append(cb)

    res = pretrain(_cfg(tiny_synth, epochs=2, knn_every=0, log_every=1), tmp_path / "r", progress=False,
                   trainer_hook=interrupt_at_step_3)
    assert res.status == "interrupted" and res.step == 3
    assert json.loads((tmp_path / "r" / "checkpoints" / "last.safetensors.json").read_text())["step"] == 3

    import workbench.runs as train_module

    original = train_module.pretrain
    monkeypatch.setattr(train_module, "pretrain",
                        lambda *a, **k: original(*a, **{**k, "trainer_hook": interrupt_at_step_3}))
    code = main(["pretrain", "--data", str(tiny_synth), "--epochs", "1", "--batch-size", "16", "--image-size",
                 "32", "--backbone", "resnet10t", "--device", "cpu", "--train-opt", "log_every=1", "--quiet",
                 "--out", str(tmp_path / "cli")])
    assert code == 130
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "cli" / "checkpoints" / "last.safetensors").is_file()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_synth, tmp_path, monkeypatch):
    from workbench.methods.simclr import SimCLR

    cfg = _cfg(tiny_synth, epochs=2, knn_every=0)
    pretrain(_cfg(tiny_synth, epochs=1, knn_every=0), tmp_path / "r", progress=False)
    good = (tmp_path / "r" / "checkpoints" / "last.safetensors").read_bytes()
    original = SimCLR.training_step

    def nan_step(self, batch):
        out = original(self, batch)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SimCLR, "training_step", nan_step)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        pretrain(cfg, tmp_path / "r", resume=True, progress=False)
    assert (tmp_path / "r" / "checkpoints" / "last.safetensors").read_bytes() == good
    with pytest.raises(TrainingDiverged, match="no checkpoint was written before it"):  # a fresh run
        pretrain(cfg, tmp_path / "fresh", progress=False)


def test_nan_on_the_last_step_of_an_epoch_is_caught_before_the_checkpoint(tiny_synth, tmp_path, monkeypatch):
    """The finiteness check runs one step late (no host-device sync per step); the epoch-end
    checkpoint must still never hold the weights of a NaN step."""
    from workbench.methods.simclr import SimCLR

    steps = pretrain(_cfg(tiny_synth, epochs=1, knn_every=0), tmp_path / "r", progress=False).step
    good = (tmp_path / "r" / "checkpoints" / "last.safetensors").read_bytes()
    original = SimCLR.training_step

    def nan_on_last_step(self, batch):
        out = original(self, batch)
        if batch.step == 2 * steps - 1:  # the last step of epoch 2
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SimCLR, "training_step", nan_on_last_step)
    with pytest.raises(TrainingDiverged, match=f"at step {2 * steps - 1} "):
        pretrain(_cfg(tiny_synth, epochs=2, knn_every=0), tmp_path / "r", resume=True, progress=False)
    assert (tmp_path / "r" / "checkpoints" / "last.safetensors").read_bytes() == good
    events = [json.loads(x).get("event") for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert events.count("epoch_end") == 1  # epoch 2 never ended


def test_only_logging_steps_and_checkpoints_read_metrics_from_the_device(tiny_synth, tmp_path, monkeypatch):
    from workbench.train.trainer import Trainer

    calls = []
    real = Trainer._read_metrics
    monkeypatch.setattr(Trainer, "_read_metrics", lambda self: calls.append(self.step) or real(self))
    res = pretrain(_cfg(tiny_synth, epochs=2, knn_every=0, log_every=1000), tmp_path / "r", progress=False)
    steps = res.step // 2
    # step 1 is logged; each epoch end reads the last step's metrics for the checkpoint
    assert calls == [0, steps, 2 * steps]  # (the step counter at the call)
    assert np.isfinite(res.last_metrics["loss"]) and res.last_metrics["lr"] >= 0


def test_user_errors_are_clear(tiny_synth, tmp_path):
    pretrain(_cfg(tiny_synth, epochs=1, knn_every=0, max_steps=1), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        pretrain(_cfg(tiny_synth, epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="larger than"):
        pretrain(_cfg(tiny_synth, epochs=1, batch_size=10_000), tmp_path / "big", progress=False)


def test_method_needing_missing_column_names_it(tiny_synth, tmp_path, monkeypatch):
    from workbench.methods.simclr import SimCLR

    monkeypatch.setattr(SimCLR, "requires", ("clip", "frame"))
    with pytest.raises(MissingMetadataError, match="'clip'"):
        pretrain(_cfg(tiny_synth, epochs=1), tmp_path / "r", progress=False)


def test_runs_write_tensorboard_scalars_that_match_the_metrics_log(tiny_synth, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "r"
    pretrain(_cfg(tiny_synth, epochs=1, knn_every=1, log_every=1), run, progress=False)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr"} <= tags and "knn/expression" in tags
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    events = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert [s for s, _ in events] == [s for s, _ in losses]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(events, losses, strict=True))
    # the embedding projector: every face of the training split (< 500), labelled, with thumbnails
    from workbench.data.cache import load_face_data

    n_train = len(load_face_data(tiny_synth, 32, progress=False).split("train"))
    config = (run / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "feats" in config and "sprite" in config and "metadata" in config
    meta = next((run / "tensorboard").glob("*/feats/metadata.tsv")).read_text().splitlines()
    assert meta[0].split("\t")[:2] == ["expression", "identity"] and len(meta) == 1 + n_train
    tensors = next((run / "tensorboard").glob("*/feats/tensors.tsv")).read_text().splitlines()
    assert len(tensors) == n_train and len(tensors[0].split("\t")) == 512
    off = tmp_path / "off"
    pretrain(_cfg(tiny_synth, epochs=1, knn_every=0, tensorboard=False), off, progress=False)
    assert not (off / "tensorboard").exists()
