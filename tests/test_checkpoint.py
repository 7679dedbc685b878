"""Checkpoints: round trip, atomicity, and refusal of pickles that carry code."""

import json
import os
import pickle

import pytest
import torch
from torch import nn

from workbench.errors import CheckpointError
from workbench.train.checkpoint import load_checkpoint, load_tensors, save_checkpoint


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


def test_round_trip_with_optimizer(tmp_path):
    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m(torch.randn(5, 4)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.safetensors", m, opt, {"epoch": 2, "step": 7})
    m2 = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    state = load_checkpoint(tmp_path / "c.safetensors", m2, opt2)
    assert state["epoch"] == 2 and state["step"] == 7
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-2
    for pid in s1["state"]:
        assert torch.equal(s1["state"][pid]["exp_avg"], s2["state"][pid]["exp_avg"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/workbench_pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"weight": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="refused"):
        load_tensors(path)
    assert not os.path.exists("/tmp/workbench_pwned")


def test_tensor_only_pth_is_accepted(tmp_path):
    m = _model()
    torch.save(m.state_dict(), tmp_path / "w.pth")
    m2 = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    load_checkpoint(tmp_path / "w.pth", m2)
    assert torch.equal(m[0].weight, m2[0].weight)


def test_mismatch_and_corrupt_are_clear_errors(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", _model(), None, {})
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path / "c.safetensors", nn.Linear(3, 3))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_tensors(tmp_path / "bad.safetensors")


def test_interrupted_write_keeps_previous(tmp_path, monkeypatch):
    m = _model()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, m, None, {"step": 1})
    before = path.read_bytes()
    import safetensors.torch as st

    def boom(*a, **k):
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, m, None, {"step": 2})
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    """Run folders are shared: files get the mode a plain open() gives, not mkstemp's private 0600."""
    import stat

    from workbench.io import write_json

    old = os.umask(umask)
    try:
        p = write_json(tmp_path / "x.json", {"a": 1})
        ck = save_checkpoint(tmp_path / "ck.safetensors", _model(), None, {"step": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == mode
    assert stat.S_IMODE(ck.stat().st_mode) == mode


def test_disk_full_while_saving_is_an_os_error_and_leaves_nothing(tmp_path, monkeypatch):
    """safetensors reports ENOSPC as SafetensorError('... Os { code: 28 ...}'): it becomes OSError(28), which
    the CLI prints as one line; the previous checkpoint stays and no temporary file is left."""
    import errno

    import safetensors.torch
    from safetensors import SafetensorError

    from workbench.cli.main import os_error_line

    path = tmp_path / "last.safetensors"
    save_checkpoint(path, _model(), None, {"step": 1})
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, _model(), None, {"step": 2})
    assert info.value.errno == errno.ENOSPC
    assert os_error_line(info.value).startswith("no space left on the device: ")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "last.safetensors", "last.safetensors.json"]


def test_a_kill_between_the_weights_and_the_sidecar_keeps_a_consistent_pair(tmp_path, monkeypatch):
    """The training state travels in the safetensors header: killed after the tensors but before the
    JSON sidecar, the checkpoint still loads with its own step (the stale sidecar is not used)."""
    import workbench.train.checkpoint as ck_module

    path = tmp_path / "last.safetensors"
    save_checkpoint(path, _model(), None, {"step": 1, "epoch": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck_module, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _model(), None, {"step": 2, "epoch": 2})
    monkeypatch.undo()
    assert json.loads((tmp_path / "last.safetensors.json").read_text())["step"] == 1  # stale sidecar
    state = load_checkpoint(path, _model())
    assert (state["step"], state["epoch"]) == (2, 2)
