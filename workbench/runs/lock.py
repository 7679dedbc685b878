"""One writer per run folder: ``OUT/.lock`` names the process that trains into it.

A second ``pretrain`` on the same ``--out`` (another terminal, a notebook's second Start) stops at once
with one line naming the holder (pid, host, start time) instead of interleaving its metrics and
checkpoints with the first. A lock left by a process that died (same host, pid gone) is stale and
taken over; a lock from another host is never broken automatically (the folder may be shared).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError
from workbench.runs.layout import LOCK


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Exclusive writer lock of ``folder`` (a context manager; re-entrant within one process)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.held = False
        self.created = False

    def holder(self) -> dict[str, Any] | None:
        """The lock's content (pid, host, started), ``{}`` when unreadable, None when there is no lock."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _stale(self, info: dict[str, Any]) -> bool:
        if not info:  # garbled: a writer killed while writing it, or one writing it right now
            try:
                return time.time() - self.path.stat().st_mtime > 10
            except FileNotFoundError:
                return True
        if info.get("host") != socket.gethostname():
            return False
        pid = info.get("pid")
        return not isinstance(pid, int) or (pid != os.getpid() and not _alive(pid))

    def acquire(self) -> RunLock:
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue  # released in between
                if info.get("pid") == os.getpid() and info.get("host") == me["host"]:
                    raise ConfigError(f"{self.folder} is already being trained by this process (a run "
                                      "started earlier here has not finished: stop it first)") from None
                if self._stale(info):
                    self.path.unlink(missing_ok=True)
                    continue
                who = (f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}" if info
                       else "another process")
                raise ConfigError(f"{self.folder} is being written by {who}: wait for it, or choose another "
                                  f"--out (if that process is gone, delete {self.path})") from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise ConfigError(f"cannot take the lock {self.path} (it keeps changing); try again")

    def release(self) -> None:
        if self.held:
            info = self.holder()
            if info and info.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
            if self.created:  # a run that failed before writing anything leaves no empty folder behind
                try:
                    self.folder.rmdir()
                except OSError:
                    pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_rank_zero_process() -> bool:
    """False in the extra processes of a multi-process run (their rank 0 holds the lock)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))
