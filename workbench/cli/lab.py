"""`workbench lab`: JupyterLab on the notebooks, always on loopback and always with a token.

The token never appears on a command line (``/proc/PID/cmdline`` is readable by every local user): it
reaches JupyterLab through the ``JUPYTER_TOKEN`` environment variable of the child process, and a chosen
token is read from ``JUPYTER_TOKEN`` or a ``--token-file`` (not a flag). Terminals (a shell for whoever
holds the token) are off unless ``--terminals`` asks for them.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from workbench.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("lab", help="open the guided notebooks in JupyterLab (loopback + token)",
                       description="Start JupyterLab on notebooks/. It only listens on a loopback address "
                                   "and always requires a token (printed with the URL, passed to JupyterLab "
                                   "through its environment, never on a command line).")
    p.add_argument("--notebooks", default="notebooks", help="folder to open [default: notebooks]")
    p.add_argument("--ip", default="127.0.0.1", help="loopback address to bind [default: 127.0.0.1]")
    p.add_argument("--port", type=int, default=8888, help="TCP port, 1024-65535 [default: 8888]")
    p.add_argument("--token-file", default=None,
                   help="file holding the token to require (keep it mode 0600) [default: $JUPYTER_TOKEN, "
                        "else a random one]")
    p.add_argument("--terminals", action="store_true",
                   help="enable JupyterLab terminals (a shell for whoever has the token) [default: off]")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of starting JupyterLab")
    p.set_defaults(func=run)


def read_token_file(path: str | Path) -> str:
    """The token in ``path`` (stripped); refuses missing files and files other users can read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --token-file {p}: {type(exc).__name__}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"--token-file {p} is readable by other users: chmod 600 {p}")
    return text


def lab_command(notebooks: str | Path, *, ip: str = "127.0.0.1", port: int = 8888, token: str | None = None,
                terminals: bool = False) -> tuple[list[str], dict[str, str], str]:
    """``(command, environment, token)`` for JupyterLab; refuses non-loopback addresses, ports outside
    1024-65535 and short tokens. The token is only in the environment, never in the command."""
    try:
        addr = ipaddress.ip_address("127.0.0.1" if ip == "localhost" else ip)
    except ValueError:
        raise ConfigError(f"--ip must be a loopback address such as 127.0.0.1, got '{ip}'") from None
    if not addr.is_loopback:
        raise ConfigError(f"refusing to serve notebooks on non-loopback address {ip}: use 127.0.0.1 and an "
                          "SSH tunnel (ssh -L 8888:127.0.0.1:8888 host) to reach it from elsewhere")
    if not isinstance(port, int) or not 1024 <= port <= 65535:
        raise ConfigError(f"--port must be between 1024 and 65535, got {port}")
    if token is not None and (len(token) < 16 or any(c.isspace() for c in token)):
        raise ConfigError("the token must be at least 16 characters without spaces (or leave it out for a "
                          "random one)")
    token = token or secrets.token_urlsafe(24)
    nb = Path(notebooks)
    if not nb.is_dir():
        raise ConfigError(f"notebook folder not found: {nb}")
    # an absolute path in a --key=value option: a folder named '--something' cannot become an option
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={nb.resolve()}",
           f"--ServerApp.ip={addr}", f"--ServerApp.port={port}", "--ServerApp.open_browser=False",
           "--ServerApp.allow_remote_access=False", f"--ServerApp.terminals_enabled={bool(terminals)}",
           # offline: no extension-manager calls to PyPI, no news feed, no update check
           "--LabApp.extension_manager=readonly", "--LabApp.news_url=",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root; safe here: loopback + token only
    env = {**os.environ, "JUPYTER_TOKEN": token}
    return cmd, env, token


def run(args: argparse.Namespace) -> int:
    token = read_token_file(args.token_file) if args.token_file else (os.environ.get("JUPYTER_TOKEN") or None)
    cmd, env, token = lab_command(args.notebooks, ip=args.ip, port=args.port, token=token,
                                  terminals=args.terminals)
    url = f"http://{args.ip}:{args.port}/lab?token={token}"
    if args.dry_run:
        print("JUPYTER_TOKEN=<token> " + " ".join(cmd))
        return 0
    if shutil.which("jupyter") is None and not (Path(sys.executable).parent / "jupyter").exists():
        raise ConfigError("JupyterLab is not installed: run `bash bootstrap.sh lab` or pip install jupyterlab")
    print(f"JupyterLab: {url}")
    return subprocess.call(cmd, env=env)
