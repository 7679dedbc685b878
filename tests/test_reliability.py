"""Reliability: bad images never crash training, SIGKILL leaves the last checkpoint intact,
same seed gives the same results, and user errors are one line."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.cli.main import main


def _copy_synth(src_manifest: Path, dst: Path) -> Path:
    shutil.copytree(src_manifest.parent, dst)
    return dst / "manifest.csv"


def test_bad_images_are_skipped_with_a_list_not_a_crash(tiny_synth, tmp_path):
    from workbench.data.cache import load_face_data

    manifest = _copy_synth(tiny_synth, tmp_path / "d")
    frame = pd.read_csv(manifest)
    paths = [manifest.parent / p for p in frame["path"][:3]]
    paths[0].write_bytes(b"")                                   # empty
    paths[1].write_bytes(paths[1].read_bytes()[:40])            # truncated
    paths[2].write_bytes(b"GIF89a not really")                  # corrupt
    with pytest.warns(UserWarning, match="3 of 192 images were skipped"):
        data = load_face_data(manifest, 32)
    assert len(data) == 189 and len(data.skipped) == 3
    assert (data.cache_dir / "skipped.csv").is_file()
    with pytest.warns(UserWarning, match="3 of 192 images were skipped"):  # said again, also without progress
        load_face_data(manifest, 32, progress=False)
    x, _ = data.batch(np.arange(8))
    assert x.shape == (8, 3, 32, 32) and float(x.max()) <= 1.0


def test_cache_is_invalidated_when_an_image_changes(tiny_synth, tmp_path):
    from PIL import Image

    from workbench.data.cache import load_face_data

    manifest = _copy_synth(tiny_synth, tmp_path / "d")
    a = load_face_data(manifest, 32, progress=False)
    first = manifest.parent / pd.read_csv(manifest)["path"][0]
    Image.new("RGB", (48, 48), (255, 0, 0)).save(first)
    b = load_face_data(manifest, 32, progress=False)
    assert a.cache_dir != b.cache_dir
    assert np.asarray(b.images[0])[..., 0].mean() > 250


_KILL_SCRIPT = """
import sys
from workbench.train import RunConfig
from workbench.runs import pretrain
cfg = RunConfig.from_dict({"method": "simclr", "data": {"manifest": sys.argv[1], "image_size": 32},
    "model": {"backbone": "resnet10t"}, "train": {"epochs": 200, "batch_size": 16, "device": "cpu",
    "knn_every": 0}, "method_config": {"proj_hidden_dim": 32, "proj_dim": 16}})
pretrain(cfg, sys.argv[2], progress=False)
"""


def test_sigkill_leaves_the_last_checkpoint_loadable(tiny_synth, tmp_path):
    from workbench.runs import load_run

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tiny_synth), str(run_dir)])
    last = run_dir / "checkpoints" / "last.safetensors"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (last.is_file() and (run_dir / "checkpoints" / "epoch-0002.safetensors").is_file()):
            time.sleep(0.2)
        assert last.is_file(), "no checkpoint was written in time"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = load_run(run_dir)  # loads: never a half-written file
    assert run.state["epoch"] >= 2


def test_same_seed_same_evaluation(tiny_run, tiny_synth):
    from workbench.evaluate.protocols import EvalConfig
    from workbench.runs import evaluate_run, load_run

    run = load_run(tiny_run)
    for protocol in ("linear", "knn"):
        a = evaluate_run(run, tiny_synth, EvalConfig(protocol=protocol, seed=3)).to_dict()
        b = evaluate_run(run, tiny_synth, EvalConfig(protocol=protocol, seed=3)).to_dict()
        assert a["accuracy"] == b["accuracy"] and a["macro_f1"] == b["macro_f1"]


@pytest.mark.parametrize("argv,needle", [
    (["pretrain", "--data", "nope.csv", "--out", "{tmp}/r"], "nope.csv"),
    (["pretrain", "--method", "simclrr", "--out", "{tmp}/r"], "did you mean 'simclr'"),
    (["pretrain", "--data", "{synth}", "--backbone", "resnet999", "--out", "{tmp}/r"], "unknown timm backbone"),
    (["pretrain", "--data", "{synth}", "--opt", "temperature=hot", "--out", "{tmp}/r"], "temperature"),
    (["pretrain", "--data", "{synth}", "--image-size", "8", "--out", "{tmp}/r"], "image_size"),
    (["evaluate", "{tmp}", "--data", "{synth}"], "not a run folder"),
    (["synth", "--out", "{tmp}/s", "--size", "8"], "size"),
    (["manifest", "validate", "{tmp}/missing.csv"], "missing.csv"),
    (["lab", "--ip", "0.0.0.0", "--dry-run"], "non-loopback"),
    (["lab", "--port", "99999", "--dry-run"], "--port"),
])
def test_user_errors_are_one_line_and_nonzero(argv, needle, tiny_synth, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, synth=tiny_synth) for a in argv]
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code != 0
    assert err and err[-1].startswith("error:") and needle in err[-1], captured.err
    assert "Traceback" not in captured.err


CONFIG_DAMAGE = {
    "not JSON": b"{not json",
    "a list": b"[1, 2]",
    "no config key": b'{"version": {}}',
    "config a string": b'{"config": "simclr"}',
    "wrong option type": b'{"config": {"method": "simclr", "train": {"epochs": "many"}}}',
    "unknown method": b'{"config": {"method": "nosuch"}}',
    "binary": b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("damage", sorted(CONFIG_DAMAGE))
@pytest.mark.parametrize("command", ["evaluate", "umap", "attention"])
def test_damaged_run_metadata_is_one_line(damage, command, tiny_run, tiny_synth, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.json").write_bytes(CONFIG_DAMAGE[damage])
    argv = {"evaluate": ["evaluate", str(run), "--data", str(tiny_synth)],
            "umap": ["umap", str(run), "--data", str(tiny_synth), "--out", str(tmp_path / "u"), "--method", "pca"],
            "attention": ["attention", str(run), "--data", str(tiny_synth), "--out", str(tmp_path / "a")]}[command]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error:") and "config.json" in err[0], err


def test_a_config_with_a_byte_order_mark_still_loads(tiny_run, tmp_path):
    import shutil

    from workbench.runs import load_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = run / "config.json"
    cfg.write_bytes(b"\xef\xbb\xbf" + cfg.read_bytes())
    assert load_run(run).config.method == "simclr"


@pytest.mark.parametrize("damage", ["not JSON", "a list", "bad optimiser", "bad generator", "negative step"])
def test_resume_with_a_damaged_sidecar_is_one_line(damage, tiny_run, tiny_synth, tmp_path, capsys):
    import json
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ck = run / "checkpoints" / "last.safetensors"
    tensors = load_file(ck)
    with safe_open(str(ck), framework="pt") as fh:
        header = dict(fh.metadata())
    state = json.loads(header["state"])  # the state the checkpoint carries in its own header
    if damage == "not JSON":
        header["state"] = "{"
    elif damage == "a list":
        header["state"] = "[]"
    elif damage == "bad optimiser":
        state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:1] * 7
        header["state"] = json.dumps(state)
    elif damage == "negative step":
        state["step"] = -4
        header["state"] = json.dumps(state)
    else:
        tensors["rng.torch"] = tensors["rng.torch"][:10].clone()
    save_file(tensors, ck, metadata=header)
    from dataclasses import replace

    from workbench.errors import CheckpointError
    from workbench.runs import pretrain, read_run_config

    config = read_run_config(run)
    config.train = replace(config.train, epochs=3)
    with pytest.raises(CheckpointError, match="last.safetensors") as info:
        pretrain(config, run, resume=True, progress=False)
    assert "\n" not in str(info.value)


def test_figures_survive_a_malformed_metrics_log(tiny_run, tmp_path):
    import shutil
    import warnings

    from workbench.analysis.study import training_curves

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    log = run / "metrics.jsonl"
    good = log.read_text().splitlines()
    log.write_text("\n".join([good[0], "{half a line", "[1, 2]", '{"step": "x", "loss": 1}', *good[1:],
                              '{"step": 99, "epoch": 9, "lo']) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, rows = training_curves([run])
    assert any("3 malformed line(s) skipped" in str(w.message) for w in caught)
    n_loss = sum(1 for x in good if '"loss"' in x)
    assert int(rows["loss"].notna().sum()) == n_loss  # the data behind the figure (a DataFrame)


def test_attention_with_an_empty_layer_name_is_one_line(tiny_run, tiny_synth, tmp_path, capsys):
    code = main(["attention", str(tiny_run), "--data", str(tiny_synth), "--out", str(tmp_path / "a"),
                 "--layer", ""])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "layer name is empty" in err[0]


def test_a_checkpoint_with_nan_weights_is_refused_everywhere(tiny_run, tiny_synth, tmp_path, capsys):
    """evaluate used to score NaN features as 'accuracy 0.125' with exit 0; umap and attention refused."""
    import shutil

    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ck = run / "checkpoints" / "last.safetensors"
    tensors = load_file(ck)
    name = next(k for k, v in tensors.items() if k.startswith("model.") and v.is_floating_point())
    tensors[name] = tensors[name] * float("nan")
    save_file(tensors, ck)
    for argv in (["evaluate", str(run), "--data", str(tiny_synth)],
                 ["umap", str(run), "--data", str(tiny_synth), "--out", str(tmp_path / "u"), "--method", "pca"]):
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "NaN or inf" in err[0], (argv[0], err)


def test_nan_features_are_not_scored():
    import numpy as np

    from workbench.errors import WorkbenchError
    from workbench.evaluate.protocols import evaluate_embeddings

    X = np.ones((8, 4), np.float32)
    X[0, 0] = np.nan
    with pytest.raises(WorkbenchError, match="NaN or inf"):
        evaluate_embeddings(X, [0, 1] * 4, X, [0, 1] * 4)


def test_the_face_cache_lives_next_to_the_manifest_and_says_where(tiny_synth, tmp_path, monkeypatch, capsys):
    """Without $WORKBENCH_CACHE the decoded pixels stay with the data set (never a shared home folder), in
    a folder named after it, announced once."""
    from workbench.data.cache import CACHE_DIR_NAME, load_face_data

    monkeypatch.delenv("WORKBENCH_CACHE", raising=False)
    manifest = _copy_synth(tiny_synth, tmp_path / "my-set")
    data = load_face_data(manifest, 32)
    assert data.cache_dir.parent == manifest.parent / CACHE_DIR_NAME
    assert data.cache_dir.name.startswith("my-set-manifest-32px-")
    assert str(data.cache_dir) in capsys.readouterr().out
    load_face_data(manifest, 32)
    assert str(data.cache_dir) not in capsys.readouterr().out  # reused silently


def test_concurrent_cache_builders_keep_one_complete_cache(tiny_synth, tmp_path):
    """The second builder of the same cache finds the first one's complete folder and keeps it (no rmtree
    under a reader); a leftover without meta.json from a killed build is replaced."""
    from workbench.data.cache import _build_cache, load_face_data
    from workbench.data.manifest import Manifest

    manifest = _copy_synth(tiny_synth, tmp_path / "d")
    data = load_face_data(manifest, 32, cache_dir=tmp_path / "c")
    first = (data.cache_dir / "images.u8").stat().st_ino
    _build_cache(Manifest.load(manifest), 32, data.cache_dir, progress=False, workers=1)  # the slower builder
    assert (data.cache_dir / "images.u8").stat().st_ino == first
    assert not [p for p in data.cache_dir.parent.iterdir() if ".tmp" in p.name]
    (data.cache_dir / "meta.json").unlink()  # a killed build's leftover
    again = load_face_data(manifest, 32, cache_dir=tmp_path / "c")
    assert len(again) == len(data) and (again.cache_dir / "meta.json").is_file()
