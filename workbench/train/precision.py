"""Which numeric precision and memory format a training step uses when the config says ``auto``.

- **bf16 autocast** pays off wherever the hardware multiplies bf16 natively: CUDA GPUs with bf16
  (Ampere and newer) and CPUs with AVX512-BF16 or AMX (Intel Cooper Lake / Sapphire Rapids and newer,
  AMD Zen 4 and newer). Measured on a 2-core AMD EPYC (Zen 4): a SimCLR step of resnet10t / resnet18
  at 64 px is 1.7x / 2.6x faster than float32 (``benchmarks/README.md``). Elsewhere bf16 is emulated
  and slower, so ``auto`` keeps float32. Losses, normalisations and softmaxes stay float32 inside
  autocast; weights and optimiser state are always float32.
- **channels_last** helps convolutions on CUDA, and on CPU only together with bf16 (oneDNN's bf16
  kernels prefer NHWC; in float32 it was slower on the machine above). ViTs gain nothing from it.
"""

from __future__ import annotations

import torch

__all__ = ["auto_amp_dtype", "auto_channels_last", "cpu_has_native_bf16", "resolve_amp", "resolve_channels_last"]


def cpu_has_native_bf16() -> bool:
    """True when this CPU has AVX512-BF16 or AMX tiles (False if torch cannot tell)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # older / other builds of torch
        return False


def auto_amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on bf16-capable CUDA GPUs and CPUs, else None (float32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None


def auto_channels_last(device: torch.device, is_vit: bool, amp_dtype: torch.dtype | None) -> bool:
    """channels_last for CNNs on CUDA, and on CPU when the step runs in bf16."""
    if is_vit:
        return False
    return device.type == "cuda" or (device.type == "cpu" and amp_dtype is not None)


def resolve_amp(setting: str, device: torch.device) -> torch.dtype | None:
    """``'off'`` → None, ``'bf16'`` → bfloat16, ``'auto'`` → :func:`auto_amp_dtype`."""
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    return auto_amp_dtype(device)


def resolve_channels_last(setting: str, device: torch.device, is_vit: bool, amp_dtype: torch.dtype | None) -> bool:
    """``'on'`` / ``'off'`` as given, ``'auto'`` → :func:`auto_channels_last`."""
    if setting in ("on", "off"):
        return setting == "on"
    return auto_channels_last(device, is_vit, amp_dtype)
