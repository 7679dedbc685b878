"""`workbench lab`: JupyterLab on the notebooks, always on loopback and always with a token."""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from workbench.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("lab", help="open the guided notebooks in JupyterLab (loopback + token)",
                       description="Start JupyterLab on notebooks/. It only listens on a loopback address "
                                   "and always requires a token (printed with the URL).")
    p.add_argument("--notebooks", default="notebooks", help="folder to open [default: notebooks]")
    p.add_argument("--ip", default="127.0.0.1", help="loopback address to bind [default: 127.0.0.1]")
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--token", default=None, help="token to require [default: a random one]")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of starting JupyterLab")
    p.set_defaults(func=run)


def lab_command(notebooks: str | Path, *, ip: str = "127.0.0.1", port: int = 8888,
                token: str | None = None) -> tuple[list[str], str]:
    """The JupyterLab command line; refuses non-loopback addresses and empty tokens."""
    try:
        addr = ipaddress.ip_address("127.0.0.1" if ip == "localhost" else ip)
    except ValueError:
        raise ConfigError(f"--ip must be a loopback address such as 127.0.0.1, got '{ip}'") from None
    if not addr.is_loopback:
        raise ConfigError(f"refusing to serve notebooks on non-loopback address {ip}: use 127.0.0.1 and an "
                          "SSH tunnel (ssh -L 8888:127.0.0.1:8888 host) to reach it from elsewhere")
    if token is not None and len(token) < 16:
        raise ConfigError("the token must be at least 16 characters (or leave it out for a random one)")
    token = token or secrets.token_urlsafe(24)
    nb = Path(notebooks)
    if not nb.is_dir():
        raise ConfigError(f"notebook folder not found: {nb}")
    cmd = [sys.executable, "-m", "jupyter", "lab", str(nb), f"--ServerApp.ip={ip}", f"--ServerApp.port={port}",
           f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
           "--ServerApp.allow_remote_access=False",
           "--LabApp.extension_manager=readonly"]  # no extension-manager calls to PyPI (offline)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root; safe here: loopback + token only
    return cmd, token


def run(args: argparse.Namespace) -> int:
    cmd, token = lab_command(args.notebooks, ip=args.ip, port=args.port, token=args.token)
    url = f"http://{args.ip}:{args.port}/lab?token={token}"
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    if shutil.which("jupyter") is None and not (Path(sys.executable).parent / "jupyter").exists():
        raise ConfigError("JupyterLab is not installed: run `bash bootstrap.sh lab` or pip install jupyterlab")
    print(f"JupyterLab: {url}")
    return subprocess.call(cmd)
