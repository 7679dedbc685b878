"""Shared fixtures: a tiny synthetic face set (generated once per session) and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("WORKBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Decoded-face caches go to a temporary folder, never the user's ~/.cache."""
    old = os.environ.get("WORKBENCH_CACHE")
    os.environ["WORKBENCH_CACHE"] = str(tmp_path_factory.mktemp("wb-cache"))
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield
    if old is None:
        os.environ.pop("WORKBENCH_CACHE", None)
    else:
        os.environ["WORKBENCH_CACHE"] = old


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread per test module: the tensors here are tiny, and on a shared 2-core runner
    extra threads only add contention (10x slower small ops were measured). Also more reproducible."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """12 identities x 16 images at 48 px (192 faces) with landmarks: the manifest path."""
    from workbench.data.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("synth")
    return generate_dataset(SynthConfig(identities=12, images_per_identity=16, size=48, seed=0), out,
                            progress=False)


@pytest.fixture(scope="session")
def tiny_clips(tmp_path_factory) -> Path:
    from workbench.data.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("synth-clips")
    return generate_dataset(SynthConfig(identities=6, images_per_identity=2, size=48, clips=True,
                                        clip_length=16, seed=1), out, progress=False)


@pytest.fixture(scope="session")
def tiny_views(tmp_path_factory) -> Path:
    from workbench.data.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("synth-views")
    return generate_dataset(SynthConfig(identities=8, images_per_identity=4, size=48, views=5, seed=2), out,
                            progress=False)


def shared_dataset(name: str) -> Path:
    """Path of a licensed real dataset in ../shared/data, or skip the test when absent."""
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"real dataset '{name}' not available at {p} (opt-in validation)")
    return p


@pytest.fixture(scope="session")
def tiny_run(tiny_synth, tmp_path_factory) -> Path:
    """A 2-epoch SimCLR run (resnet10t, 32 px) on the tiny synthetic set, with numbered checkpoints."""
    from workbench.runs import pretrain
    from workbench.train import RunConfig

    out = tmp_path_factory.mktemp("runs") / "simclr_tiny"
    cfg = RunConfig.from_dict({
        "method": "simclr", "data": {"manifest": str(tiny_synth), "image_size": 32},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 2, "batch_size": 32, "seed": 0, "device": "cpu", "knn_every": 1},
        "method_config": {"proj_hidden_dim": 32, "proj_dim": 16}})
    pretrain(cfg, out, progress=False)
    return out
