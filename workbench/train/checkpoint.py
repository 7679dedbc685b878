"""Checkpoints: tensors in safetensors, everything else in a JSON sidecar; atomic writes.

``save_checkpoint(path, method, optimizer, state)`` writes ``path`` (``.safetensors``: model
weights under ``model.*``, optimiser tensors under ``optim.*``, RNG state under ``rng.*``) and
``path.json`` (epoch, step, optimiser hyper-parameters, metrics). Both are written to a temporary
file and renamed, so a process killed mid-write leaves the previous checkpoint intact.

Loading never unpickles: safetensors holds tensors only. A legacy ``.pt/.pth`` file is read with
``torch.load(weights_only=True)`` and a pickle carrying code is refused with a clear error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.errors import CheckpointError, WorkbenchError
from workbench.io import atomic_write, json_safe, read_json_object, write_json


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any]) -> Path:
    """Atomically write model (+ optimiser, + RNG) tensors and a JSON sidecar with ``state``."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    sidecar: dict[str, Any] = dict(state)
    if optimizer is not None:
        opt_state = optimizer.state_dict()
        plain_state: dict[str, dict[str, Any]] = {}
        for pid, slots in opt_state["state"].items():
            for name, val in slots.items():
                if torch.is_tensor(val):
                    tensors[f"optim.{pid}.{name}"] = val.detach().cpu().contiguous()
                else:
                    plain_state.setdefault(str(pid), {})[name] = val
        sidecar["optimizer"] = {"param_groups": opt_state["param_groups"], "plain_state": plain_state}
    tensors["rng.torch"] = torch.get_rng_state()
    # deduplicate shared storage (safetensors refuses aliasing tensors)
    tensors = {k: (v.clone() if _shares_storage(v, tensors, k) else v) for k, v in tensors.items()}

    # the state also travels inside the safetensors header: the tensors and their state are one file, so
    # a kill between this write and the sidecar's can never pair epoch-N weights with an older state
    header = {"format": "workbench-v1", "state": json.dumps(json_safe(sidecar), allow_nan=False)}

    def write(p: Path) -> None:
        try:
            save_file(tensors, str(p), metadata=header)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors reports I/O errors as SafetensorError
            raise _as_os_error(exc, path) from None

    atomic_write(path, write)
    write_json(path.with_suffix(path.suffix + ".json"), sidecar)
    return path


def _as_os_error(exc: Exception, path: Path) -> Exception:
    """safetensors' ``SafetensorError(... Os { code: 28 ...})`` as the OSError it is (disk full, ...)."""
    import errno
    import re

    text = str(exc)
    code = re.search(r"code:\s*(\d+)", text)
    if type(exc).__name__ == "SafetensorError" and code:
        number = int(code.group(1))
        return OSError(number, os.strerror(number) if number in errno.errorcode else text[:120], str(path))
    return exc


def _shares_storage(v: torch.Tensor, all_tensors: dict[str, torch.Tensor], key: str) -> bool:
    ptr = v.untyped_storage().data_ptr()
    for k, o in all_tensors.items():
        if k == key:
            return False
        if o.untyped_storage().data_ptr() == ptr and ptr != 0:
            return True
    return False


def header_state(path: str | Path) -> dict[str, Any] | None:
    """The training state stored in a workbench checkpoint's safetensors header (None when absent)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if "state" not in meta:
        return None
    try:
        state = json.loads(meta["state"])
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: its stored training state is not valid JSON") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: its stored training state is not a mapping")
    return state


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors safely (safetensors, or ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a refusal
        raise CheckpointError(
            f"{path}: refused to load: it is not a tensor-only checkpoint and may carry code "
            f"({type(exc).__name__}); convert it to .safetensors from a trusted environment") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a mapping of names to tensors")
    return {f"model.{k}" if not k.startswith(("model.", "optim.", "rng.")) else k: v for k, v in obj.items()}


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    *, strict: bool = True) -> dict[str, Any]:
    """Load weights (and optimiser state when given) into place; returns the sidecar state."""
    path = Path(path)
    tensors = load_tensors(path)
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    bad = [k for k, v in model_state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # the trainer never saves a diverged step: this file was damaged or written elsewhere
        raise CheckpointError(f"{path}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]}); use an "
                              "earlier checkpoint")
    try:
        model.load_state_dict(model_state, strict=strict)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: does not match the model ({first})") from None
    side_path = path.with_suffix(path.suffix + ".json")
    state = header_state(path)
    if state is None:  # checkpoints written before the state moved into the header
        try:
            state = read_json_object(side_path, "checkpoint sidecar") if side_path.is_file() else {}
        except WorkbenchError as exc:
            raise CheckpointError(str(exc)) from None
    if optimizer is not None and "optimizer" in state:
        try:
            opt = state["optimizer"]
            slots: dict[int, dict[str, Any]] = {}
            for k, v in tensors.items():
                if k.startswith("optim."):
                    _, pid, name = k.split(".", 2)
                    slots.setdefault(int(pid), {})[name] = v
            for pid, plain in opt.get("plain_state", {}).items():
                slots.setdefault(int(pid), {}).update(plain)
            optimizer.load_state_dict({"state": slots, "param_groups": opt["param_groups"]})
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
            raise CheckpointError(f"{side_path}: the optimiser state does not match this run "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"[:300]
                                  ) from None
    if "rng.torch" in tensors:
        state["_rng_torch"] = tensors["rng.torch"]
    return state
