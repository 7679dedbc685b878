"""CLI: one-line errors, non-zero exits, --debug, lab safety."""

import pytest

from workbench.cli.lab import lab_command
from workbench.cli.main import main
from workbench.errors import ConfigError


def test_methods_lists_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "simclr" in out and "byol" in out and "Grill" in out


def test_methods_detail_and_unknown(capsys):
    assert main(["methods", "byol"]) == 0
    assert "momentum" in capsys.readouterr().out
    assert main(["methods", "byl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "did you mean 'byol'" in err and len(err.strip().splitlines()) == 1


def test_debug_flag_shows_traceback():
    with pytest.raises(ConfigError):
        main(["--debug", "methods", "nope"])


def test_evaluate_on_missing_run_is_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "--data", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and len(err.strip().splitlines()) == 1


def test_lab_refuses_remote_and_weak_token(tmp_path):
    with pytest.raises(ConfigError, match="non-loopback"):
        lab_command(tmp_path, ip="0.0.0.0")
    with pytest.raises(ConfigError, match="16 characters"):
        lab_command(tmp_path, token="abc")
    cmd, token = lab_command(tmp_path)
    assert "--ServerApp.ip=127.0.0.1" in cmd and f"--IdentityProvider.token={token}" in cmd and len(token) >= 16
