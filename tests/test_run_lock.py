"""One writer per run folder: a second trainer is refused with one line naming the holder; stale locks of
dead processes are taken over; nothing is left behind by a run that fails early."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from workbench.errors import ConfigError, WorkbenchError
from workbench.runs import pretrain
from workbench.runs.layout import LOCK as LOCK_NAME
from workbench.runs.lock import RunLock
from workbench.train import RunConfig


def _cfg(manifest, **train):
    return RunConfig.from_dict({
        "method": "simclr", "data": {"manifest": str(manifest), "image_size": 32},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 1, "batch_size": 16, "seed": 0, "device": "cpu", "knn_every": 0, "log_every": 1,
                  **train},
        "method_config": {"proj_hidden_dim": 32, "proj_dim": 16}})


def test_a_second_writer_is_refused_naming_the_holder(tiny_synth, tmp_path):
    out = tmp_path / "run"
    started, release = threading.Event(), threading.Event()

    def hold(trainer):
        def cb(rec):
            if rec.get("step") == 1 and "loss" in rec:
                started.set()
                release.wait(60)
        trainer.callbacks.append(cb)

    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(
        r=pretrain(_cfg(tiny_synth), out, progress=False, trainer_hook=hold)))
    worker.start()
    try:
        assert started.wait(120)
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(ConfigError, match="already being trained by this process"):
            pretrain(_cfg(tiny_synth), out, progress=False)
        # another process: refused with its pid, host and start time, exit 2, one line
        proc = subprocess.run([sys.executable, "-m", "workbench.cli.main", "pretrain", "--data", str(tiny_synth),
                               "--image-size", "32", "--backbone", "resnet10t", "--epochs", "1", "--device",
                               "cpu", "--quiet", "--out", str(out)], capture_output=True, text=True, timeout=300)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1, proc.stderr
        assert f"is being written by pid {os.getpid()} on {socket.gethostname()} since" in err[0]
    finally:
        release.set()
        worker.join(300)
    assert first["r"].status == "finished" and not (out / LOCK_NAME).exists()
    steps = [json.loads(x).get("step") for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # one writer: no interleaved second run


def test_a_stale_lock_of_a_dead_process_is_taken_over(tiny_synth, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "started": "x"}))
    assert pretrain(_cfg(tiny_synth, max_steps=1), out, progress=False).status == "max_steps"
    # a lock from another host is never broken automatically
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "y"}))
    with pytest.raises(ConfigError, match="pid 1 on elsewhere since y"):
        RunLock(out).acquire()


def test_a_run_that_fails_early_leaves_no_folder(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(WorkbenchError, match="manifest not found"):
        pretrain(_cfg(tmp_path / "missing.csv"), out, progress=False)
    assert not out.exists()


def test_resume_truncates_the_log_to_the_checkpoint_and_a_checkpointless_folder_starts_clean(tiny_synth, tmp_path):
    out = tmp_path / "run"
    pretrain(_cfg(tiny_synth, epochs=1), out, progress=False)
    side = json.loads((out / "checkpoints" / "last.safetensors.json").read_text())
    log = out / "metrics.jsonl"
    # a crash after the checkpoint: steps beyond it were logged, then the process died
    log.write_text(log.read_text() + json.dumps({"step": side["step"] + 1, "loss": 9.9}) + "\n{half")
    cfg = _cfg(tiny_synth, epochs=2)
    pretrain(cfg, out, resume=True, progress=False)
    steps = [r["step"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]
    assert 9.9 not in [r.get("loss") for r in map(json.loads, log.read_text().splitlines())]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 5.0}) + "\n")
    with pytest.warns(UserWarning, match="never saved a checkpoint: starting clean"):
        pretrain(_cfg(tiny_synth, max_steps=2), fresh, progress=False)
    first = json.loads((fresh / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] != 5.0 and (fresh / "metrics.previous.jsonl").is_file()
