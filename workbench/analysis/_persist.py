"""Persistence helpers shared by the analysis results objects (JSON + npz in one folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.io import write_json, write_npz

__all__ = ["write_json", "read_json", "write_npz", "read_npz"]


def read_json(path: Path, kind: str) -> dict[str, Any]:
    """Read a results JSON and check its ``kind`` tag."""
    if not path.is_file():
        raise WorkbenchError(f"no saved {kind} at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WorkbenchError(f"{path}: not valid JSON (interrupted save?)") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise WorkbenchError(f"{path}: not a saved {kind}")
    return data


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an npz file (no pickles); an empty dict when the file is absent."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
