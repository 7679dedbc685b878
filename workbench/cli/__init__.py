"""The ``workbench`` command line: one module per sub-command (see :mod:`workbench.cli.main`)."""

from __future__ import annotations

import argparse

from workbench.config import SEED_MAX


def seed_arg(text: str) -> int:
    """argparse type of every ``--seed``: an integer in 0 .. 2**32 - 1 (what numpy accepts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed '{text}' (an integer 0-{SEED_MAX})") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed {text} is out of range (0-{SEED_MAX})")
    return value
