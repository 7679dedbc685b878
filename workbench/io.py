"""Small I/O helpers: atomic writes so a killed process never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then ``os.replace`` it onto ``path`` (same folder, so atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes 0600 files: give the mode a plain open() would (collaborators read run folders)
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (else set-and-restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def json_safe(v: Any) -> Any:
    """Plain JSON values: numpy arrays/scalars → lists/numbers, Paths → str, NaN/inf → None."""
    import math

    import numpy as np

    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, np.ndarray):
        return json_safe(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Path):
        return str(v)
    return v


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (numpy values and Paths converted, NaN/inf → null)."""
    return write_text_atomic(path, json.dumps(json_safe(obj), indent=2, allow_nan=False,
                                              default=_json_default) + "\n")


def write_npz(path: str | Path, arrays: dict[str, Any]) -> Path:
    """Atomically write a compressed ``.npz``."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a handle: numpy would append ".npz" to a temporary name
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | Path, what: str = "metrics log") -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a ``.jsonl`` file and how many lines were skipped (malformed, not an object,
    or the half-written last line of a killed process). A missing or unreadable file is one
    :class:`WorkbenchError` line."""
    from workbench.errors import WorkbenchError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig", errors="replace")
    except FileNotFoundError:
        raise WorkbenchError(f"{p}: no {what} (is this a run folder?)") from None
    except OSError as exc:
        raise WorkbenchError(f"{p}: cannot read the {what} ({exc.strerror or type(exc).__name__})") from None
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path`` (a UTF-8 byte-order mark is accepted), or one :class:`WorkbenchError`
    line naming ``what`` the file should be: not JSON, not an object, unreadable."""
    from workbench.errors import WorkbenchError

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WorkbenchError(f"{p}: not a valid {what} (not JSON: {type(exc).__name__})") from None
    except OSError as exc:
        raise WorkbenchError(f"{p}: cannot read the {what} ({exc.strerror or type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{p}: not a valid {what} (a JSON {type(data).__name__}, expected an object)")
    return data


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
