"""The method contract, checked for every registered method at its ``tiny`` preset (``presets["tiny"]``
on ``tiny_model``), on batches drawn by the method's own sampler from the synthetic set it needs:

- ``forward`` gives ``feats`` (B, D) and ``z`` (B, P); a training step a finite float32 loss;
- a few Adam steps on one fixed batch (same views every step) lower the loss;
- ``check_data`` raises MissingMetadataError naming each required column that a manifest lacks;
- a checkpoint round trip (``save_checkpoint`` / ``load_checkpoint``) gives identical outputs;
- a training step (forward and backward, views as on CUDA) reads nothing from the device
  (``_helpers.DeviceReads``: no host read, checked linear algebra, data-dependent shape or tensor
  built from Python data), with one image without landmarks;
- ``batch_level_terms`` methods: one step in 2 gloo processes (half the batch each, synchronised BN,
  gradients averaged as DDP does) gives the single-process loss and gradients. Random draws from the
  batch generator are made equal for every row there (``_row_constant_draws``), so that a row's views
  do not depend on how many rows a process draws for; ``ddp_check_overrides`` turns off random
  choices that depend on the order of the global batch's rows.

A new method needs nothing here: a ``tiny`` preset (and ``tiny_model`` when the default ResNet at 32 px
does not fit) and ``batch_level_terms`` when its loss compares items across the batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from _helpers import DeviceReads, cuda_paths

from workbench.config import from_dict
from workbench.data.manifest import Manifest
from workbench.errors import MissingMetadataError
from workbench.methods import METHODS, Batch, SSLMethod
from workbench.models import Backbone
from workbench.train.checkpoint import load_checkpoint, save_checkpoint
from workbench.train.distributed import convert_sync_batchnorm

B = 8  # items per batch
NAMES = sorted(METHODS)
BATCH_LEVEL = sorted(n for n, cls in METHODS.items() if cls.batch_level_terms)


def tiny_method(name: str, seed: int = 0, ddp_check: bool = False) -> SSLMethod:
    """The method at its tiny preset (with ``ddp_check_overrides`` when ``ddp_check``), weights seeded."""
    cls = METHODS[name]
    model = dict(cls.tiny_model)
    backbone, size = model.pop("backbone"), model.pop("image_size")
    options = {**cls.presets["tiny"], **(cls.ddp_check_overrides if ddp_check else {})}
    torch.manual_seed(seed)
    return cls(from_dict(cls.Config, options), Backbone(backbone, image_size=size, **model), size)


@pytest.fixture(scope="module")
def synthetic_sets(tiny_synth, tiny_clips, tiny_views) -> dict[str, Path]:
    return {"plain": tiny_synth, "clips": tiny_clips, "views": tiny_views}


def batches(m: SSLMethod, manifest: Path, seeds: tuple[int, ...]) -> list[Batch]:
    """Trainer-like batches from the method's own sampler (the first batch of epoch ``seed``); image
    (1, 0) has no landmarks."""
    from workbench.data.cache import load_face_data

    data = load_face_data(manifest, m.image_size, progress=False)
    sampler = m.make_sampler(data, B, 0)
    out = []
    for seed in seeds:
        rows = np.asarray(next(iter(sampler.batches(seed))))
        images, lm = data.batch(rows)
        flat = torch.from_numpy(rows.reshape(-1))
        codes = {c: torch.from_numpy(data.codes(c)[0])[flat].reshape(rows.shape)
                 for c in ("identity", "clip", "group", "expression") if data.has(c)}
        lm[1, 0] = float("nan")
        out.append(Batch(images=images, landmarks=lm, rows=torch.from_numpy(rows), codes=codes,
                         generator=torch.Generator().manual_seed(seed)))
    return out


def reseeded(batch: Batch, seed: int) -> Batch:
    """The same batch with a fresh generator (the same views again)."""
    return Batch(images=batch.images, landmarks=batch.landmarks, rows=batch.rows, codes=batch.codes,
                 generator=torch.Generator().manual_seed(seed), step=batch.step, epoch=batch.epoch)


def test_every_method_declares_a_tiny_preset():
    for name, cls in METHODS.items():
        assert "tiny" in cls.presets, f"{name}: add a 'tiny' preset"
        from_dict(cls.Config, cls.presets["tiny"])
        assert {"backbone", "image_size"} <= set(cls.tiny_model), name


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_loss_decreases_on_a_fixed_batch(name, synthetic_sets):
    m = tiny_method(name).train()
    (batch,) = batches(m, synthetic_sets[m.synth_mode], seeds=(0,))
    x = batch.images[:4, 0]
    out = m(x)
    assert out["feats"].ndim == 2 and out["feats"].shape[0] == 4
    assert out["z"].ndim == 2 and out["z"].shape[0] == 4

    opt = torch.optim.Adam(m.trainable_parameters(), lr=1e-3)
    losses = []
    for step in range(5):
        res = m.training_step(reseeded(batch, 7))
        loss = res["loss"]
        assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss), (name, loss)
        assert res["z"].shape[0] == B
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        m.after_optimizer_step((step + 1) / 5)
        losses.append(float(loss.detach()))
    assert np.mean(losses[-2:]) < losses[0], (name, losses)


@pytest.mark.parametrize("name", NAMES)
def test_check_data_names_each_missing_column(name, synthetic_sets):
    m = tiny_method(name)
    manifest = Manifest.load(synthetic_sets[m.synth_mode])
    m.check_data(manifest)  # its own synthetic set has everything
    for col in m.required_columns():
        lacking = Manifest(manifest.frame.drop(columns=[col]), manifest.root)
        with pytest.raises(MissingMetadataError, match=f"'{col}'"):
            m.check_data(lacking)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_gives_identical_outputs(name, tmp_path):
    m = tiny_method(name, seed=0).eval()
    other = tiny_method(name, seed=1).eval()
    x = torch.rand(2, 3, m.image_size, m.image_size, generator=torch.Generator().manual_seed(0))
    save_checkpoint(tmp_path / "m.safetensors", m, None, {"step": 0})
    load_checkpoint(tmp_path / "m.safetensors", other)
    a, b = m(x), other(x)
    for key in ("feats", "z"):
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    assert m.state_dict().keys() == other.state_dict().keys()


@pytest.mark.parametrize("name", NAMES)
def test_training_step_reads_nothing_from_the_device(name, synthetic_sets, monkeypatch):
    """A first step builds the per-device constants (``_ops.index_tensor``: landmark index lists, the
    flip permutation) once; the measured step, backward included, then has no entry at all."""
    m = tiny_method(name).train()
    cuda_paths(monkeypatch)
    warm, batch = batches(m, synthetic_sets[m.synth_mode], seeds=(0, 1))
    m.training_step(warm)["loss"].backward()
    m.zero_grad(set_to_none=True)
    with DeviceReads() as reads:
        out = m.training_step(batch)
        out["loss"].backward()
    assert reads.host + reads.checks + reads.shapes + reads.python_data == []
    assert torch.isfinite(out["loss"]) and out["z"].shape[0] == B
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# -- DDP: 2 gloo processes x B/2 items == 1 process x B items ------------------------------------------

@contextlib.contextmanager
def _row_constant_draws() -> Iterator[None]:
    """``torch.rand`` / ``randn`` / ``randint`` with a generator return the same draw for every row
    (dim 0), from a private stream that advances by one row per call: a row's draws then do not
    depend on the number of rows, so the views of 1 and 2 processes agree."""
    originals = {f: getattr(torch, f) for f in ("rand", "randn", "randint")}
    private = torch.Generator().manual_seed(123)

    def wrap(fname: str):
        orig = originals[fname]

        def draw(*args, generator=None, device=None, **kw):
            if generator is None:
                return orig(*args, device=device, **kw)
            if fname == "randint":
                *bounds, size = args
                size = tuple(size)
            else:
                bounds, size = [], tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else args
            row = orig(*bounds, tuple(size[1:]), generator=private, **kw)
            return row.expand(*size).clone().to(device) if size else row.to(device)

        return draw

    try:
        for f in originals:
            setattr(torch, f, wrap(f))
        yield
    finally:
        for f, fn in originals.items():
            setattr(torch, f, fn)


def _grads(m: SSLMethod, batch: Batch) -> torch.Tensor:
    """[loss, every parameter gradient] flattened (zeros for parameters without one)."""
    with _row_constant_draws():
        loss = m.training_step(batch)["loss"]
    loss.backward()
    grads = [p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in m.parameters()]
    return torch.cat([loss.detach().view(1), *grads])


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    n = batch.images.shape[0] // world
    part = slice(rank * n, (rank + 1) * n)
    return Batch(images=batch.images[part], landmarks=None if batch.landmarks is None else batch.landmarks[part],
                 rows=batch.rows[part], codes={k: v[part] for k, v in batch.codes.items()},
                 generator=torch.Generator().manual_seed(3))


def _plain(batch: Batch) -> dict[str, object]:
    """A batch as plain tensors (loadable with ``weights_only=True``); ``_shard`` gives each its generator."""
    return {"images": batch.images, "landmarks": batch.landmarks, "rows": batch.rows, "codes": batch.codes}


def _ddp_worker(rank: int, world: int, init: str, inputs: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        res = {}
        for name, plain in torch.load(inputs, weights_only=True).items():
            batch = Batch(**plain, generator=torch.Generator())
            m = convert_sync_batchnorm(tiny_method(name, ddp_check=True).train(), "cpu")
            flat = _grads(m, _shard(batch, rank, world))
            dist.all_reduce(flat)
            res[name] = flat / world  # DDP's gradient average (and the logged mean loss)
        if rank == 0:
            torch.save(res, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_give_the_single_process_step(synthetic_sets, tmp_path):
    """Every ``batch_level_terms`` method: loss and parameter gradients of 2 processes x B/2 items vs
    1 process x B items (without the losses' gathers they differ by 0.4-1.2 x their largest entry)."""
    import torch.multiprocessing as mp

    global_batches = {}
    for name in BATCH_LEVEL:
        m = tiny_method(name, ddp_check=True)
        (global_batches[name],) = batches(m, synthetic_sets[m.synth_mode], seeds=(0,))
    torch.save({name: _plain(b) for name, b in global_batches.items()}, tmp_path / "inputs.pt")
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path / "inputs.pt"),
                                str(tmp_path / "out.pt")), nprocs=2)
    two = torch.load(tmp_path / "out.pt", weights_only=True)
    for name in BATCH_LEVEL:
        one = _grads(tiny_method(name, ddp_check=True).train(), _shard(global_batches[name], 0, 1))
        assert float(two[name][0]) == pytest.approx(float(one[0]), rel=1e-5), name
        scale = float(one[1:].abs().max())  # theoretically-zero gradients (biases before a BN) are noise
        torch.testing.assert_close(two[name][1:], one[1:], rtol=1e-3, atol=1e-4 * scale,
                                   msg=lambda text, name=name: f"{name}: {text}")
