"""Small helpers shared by test modules (imported as ``from _helpers import ...``)."""

from __future__ import annotations

import functools
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from workbench.methods import Batch
from workbench.views import _ops


def random_image_batch(batch: int, size: int, seed: int = 0) -> Batch:
    """A trainer-like Batch of ``batch`` random [0, 1] images (k = 1) with its own seeded generator."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, 3, size, size, generator=g)
    return Batch(images=images, landmarks=None, rows=torch.arange(batch).view(batch, 1), codes={},
                 generator=torch.Generator().manual_seed(seed + 1))


# -- device-read detector -------------------------------------------------------------------------

#: ops that return a host value (``.item()``, ``bool()``, ``int()``, ``float()``, ``.tolist()``, ...)
HOST_READS = {"aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.equal.default"}
#: ops that read a device error flag on the host (``torch.linalg.inv`` and other checked linear algebra)
CHECKS = {"aten._linalg_check_errors.default"}
#: ops whose output shape depends on the values (a device read on CUDA), besides boolean-mask indexing
DATA_SHAPES = {"aten.nonzero.default", "aten.masked_select.default", "aten._unique2.default",
               "aten.unique_dim.default", "aten.unique_consecutive.default", "aten.repeat_interleave.Tensor",
               "aten.masked_scatter.default", "aten.masked_scatter_.default"}


class DeviceReads(TorchDispatchMode):
    """Records, per op of the block (backward included), what would stall a CUDA stream.

    ``host``: host reads of tensor values; ``checks``: device error flags read on the host (checked
    linear algebra); ``shapes``: data-dependent output shapes (boolean-mask indexing, nonzero, unique,
    masked_select, ...); ``python_data``: non-scalar tensors built from Python data (a Python-list
    index or ``torch.tensor(list)``: a synchronous host-to-device copy on CUDA). Each entry is
    ``"op @ file:line"`` of the innermost ``workbench`` frame (``?`` in backward).
    """

    def __init__(self) -> None:
        super().__init__()
        self.host: list[str] = []
        self.checks: list[str] = []
        self.shapes: list[str] = []
        self.python_data: list[str] = []

    @staticmethod
    def _where() -> str:
        frames = [f for f in traceback.extract_stack() if "/workbench/" in f.filename.replace("\\", "/")]
        if not frames:
            return "?"
        f = frames[-1]
        return f"{f.filename.replace(chr(92), '/').split('/workbench/')[-1]}:{f.lineno}"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name in HOST_READS:
            self.host.append(f"{name} @ {self._where()}")
        elif name in CHECKS:
            self.checks.append(f"{name} @ {self._where()}")
        elif name in DATA_SHAPES:
            self.shapes.append(f"{name} @ {self._where()}")
        elif name.startswith(("aten.index.", "aten.index_put")) and any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
            self.shapes.append(f"{name}[mask] @ {self._where()}")
        elif name == "aten.lift_fresh.default" and args[0].dim() > 0:
            self.python_data.append(f"{name} @ {self._where()}")
        return func(*args, **(kwargs or {}))

    def in_files(self, *files: str) -> list[str]:
        """The entries of every kind whose source is one of ``files`` (paths under workbench/)."""
        return [e for e in self.host + self.checks + self.shapes + self.python_data
                if e.split(" @ ")[1].split(":")[0] in files]


def cuda_paths(monkeypatch) -> None:
    """Run the views as on CUDA: ``_ops.apply_where`` computes on the whole batch with ``torch.where``
    (its CPU default, ``subset``, gathers the selected rows with ``nonzero``: cheaper on a CPU, where a
    read costs nothing)."""
    monkeypatch.setattr(_ops, "apply_where", functools.partial(_ops.apply_where, subset=False))
