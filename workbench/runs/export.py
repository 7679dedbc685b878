"""Export a run's trained backbone as a plain timm state dict (safetensors) plus a JSON card.

The file loads into ``timm.create_model(NAME, num_classes=0)`` with ``strict=True`` (the two lines are in
the card and the README); the card holds what a user needs to feed it (input size, RGB in [0, 1], mean and
std) and where it came from (run, checkpoint, method, epoch, step, code version).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from workbench.errors import CheckpointError, ConfigError
from workbench.io import atomic_write, write_json
from workbench.models.backbone import _accepts_img_size
from workbench.runs.load import load_run, read_run_meta


def export_backbone(run_dir: str | Path, out: str | Path, *, checkpoint: str = "last") -> tuple[Path, Path]:
    """Write ``out`` (``.safetensors``) and ``out`` with ``.json``; returns both paths."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got {out}")
    run = load_run(run_dir, checkpoint)
    backbone = run.method.backbone
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.model.state_dict().items()}
    size = int(run.image_size)
    card: dict[str, Any] = {
        "format": "timm state dict (safetensors)",
        "model": backbone.name,
        "timm_kwargs": {"num_classes": 0, **({"img_size": size} if _accepts(backbone.name) else {})},
        "small_stem": bool(getattr(backbone, "small_stem", False)),
        "input": {"size": [3, size, size], "range": "RGB in [0, 1], then (x - mean) / std",
                  "mean": backbone.mean.flatten().tolist(), "std": backbone.std.flatten().tolist()},
        "feature_dim": int(backbone.dim),
        "load": _load_lines(backbone.name, out.name, size, bool(getattr(backbone, "small_stem", False))),
        "provenance": {"run": str(Path(run_dir).resolve()), "checkpoint": run.checkpoint.name,
                       "method": run.config.method, "epoch": run.state.get("epoch"), "step": run.state.get("step"),
                       "data": run.config.data.manifest, "version": _version(Path(run_dir))},
    }
    atomic_write(out, lambda p: save_file(tensors, str(p), metadata={"timm_model": backbone.name}))
    card_path = write_json(out.with_suffix(".json"), card)
    return out, card_path


def _load_lines(name: str, file: str, size: int, small_stem: bool) -> list[str]:
    extra = f", img_size={size}" if _accepts(name) else ""
    lines = ["import timm, safetensors.torch",
             f"model = timm.create_model({name!r}, num_classes=0{extra})"]
    if small_stem:
        lines.append("from workbench.models.backbone import use_small_stem; use_small_stem(model, "
                     f"{name!r})  # 3x3 stride-1 stem")
    lines.append(f"model.load_state_dict(safetensors.torch.load_file({file!r}), strict=True)")
    return lines


def _accepts(name: str) -> bool:
    return bool(_accepts_img_size(name))


def _version(run_dir: Path) -> Any:
    try:
        return read_run_meta(run_dir).get("version")
    except CheckpointError:
        return None


__all__ = ["export_backbone"]
