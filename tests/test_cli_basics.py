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
    cmd, env, token = lab_command(tmp_path)
    assert "--ServerApp.ip=127.0.0.1" in cmd and len(token) >= 16
    assert env["JUPYTER_TOKEN"] == token and not any(token in part for part in cmd)  # never on a command line
    assert "--ServerApp.terminals_enabled=False" in cmd
    assert "--ServerApp.terminals_enabled=True" in lab_command(tmp_path, terminals=True)[0]
    for port in (0, 80, 70000):
        with pytest.raises(ConfigError, match="--port"):
            lab_command(tmp_path, port=port)


def test_lab_folder_named_like_an_option_stays_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "--debug").mkdir()
    cmd, _, _ = lab_command("--debug")
    assert f"--ServerApp.root_dir={tmp_path / '--debug'}" in cmd and "--debug" not in cmd


def test_lab_token_file_must_be_private(tmp_path, capsys):
    from workbench.cli.lab import read_token_file

    f = tmp_path / "token"
    f.write_text("a-token-of-enough-length\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_token_file(f)
    f.chmod(0o600)
    assert read_token_file(f) == "a-token-of-enough-length"
    assert main(["lab", "--notebooks", str(tmp_path), "--token-file", str(f), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "a-token-of-enough-length" not in out and "JUPYTER_TOKEN=<token>" in out


def test_computing_commands_take_threads_and_restore_them(tmp_path, monkeypatch):
    """--threads on every command that computes; the limit (torch + BLAS) lasts as long as the command."""
    import torch
    from threadpoolctl import threadpool_info

    from workbench.cli.main import COMPUTING, available_cores, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in COMPUTING:
        assert any("--threads" in a.option_strings for a in sub.choices[name]._actions), name
    seen = {}

    def spy(args):
        seen["torch"] = torch.get_num_threads()
        seen["blas"] = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
        return 0

    before = torch.get_num_threads()
    monkeypatch.setattr("workbench.cli.synth.run", spy)  # register() binds the module's run at parse time
    assert main(["synth", "--out", str(tmp_path), "--threads", "1"]) == 0
    assert seen["torch"] == 1 and seen["blas"] <= {1}
    assert torch.get_num_threads() == before and available_cores() >= 1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "r", "--data", "m", "--threads", "0"])

