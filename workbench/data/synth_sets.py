"""Ready-made synthetic sets for methods that need particular metadata.

``workbench pretrain --method NAME`` without ``--data`` calls :func:`synthetic_manifest_for` with the
method's ``synth_mode``: ``plain`` (single images), ``clips`` (neutral → apex → neutral sequences
with ``clip``/``frame``, for SSL-FER's TimeAug/HardNeg) or ``views`` (multi-view groups with
``view``/``group``, for CL-MEx). Sets are generated once into ``$WORKBENCH_CACHE/../synth`` and reused.
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import ConfigError

#: SynthConfig overrides per mode (sizes chosen to train in minutes on a CPU)
SYNTH_MODES: dict[str, dict] = {
    "plain": {"identities": 24, "images_per_identity": 32},
    "clips": {"identities": 16, "images_per_identity": 4, "clips": True, "clip_length": 16},
    "views": {"identities": 16, "images_per_identity": 8, "views": 5},
}


def synthetic_manifest_for(mode: str = "plain", *, size: int = 64, seed: int = 0,
                           root: str | Path | None = None) -> Path:
    """Path of a generated synthetic manifest for ``mode`` (generated on first use)."""
    from workbench.data.cache import cache_root
    from workbench.data.synth import SynthConfig, generate_dataset

    if mode not in SYNTH_MODES:
        raise ConfigError(f"unknown synthetic mode '{mode}' (choose {', '.join(SYNTH_MODES)})")
    base = Path(root) if root else cache_root().parent / "synth"
    folder = base / f"{mode}-{size}px-seed{seed}"
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        generate_dataset(SynthConfig(size=size, seed=seed, **SYNTH_MODES[mode]), folder, progress=False)
    return manifest
