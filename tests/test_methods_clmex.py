"""CL-MEx: one instance per batch row, a loss over group codes only (never expression), training."""

import numpy as np
import pytest
import torch

from workbench.config import from_dict
from workbench.errors import MissingMetadataError
from workbench.losses import multi_positive_nt_xent
from workbench.methods import METHODS, Batch, get_method
from workbench.methods.base import flatten_items
from workbench.methods.clmex import CLMEx, CLMExConfig
from workbench.models import Backbone

S = 32
TINY = {"proj_hidden_dim": 32, "proj_dim": 16}




@pytest.fixture(scope="module")
def views(tmp_path_factory):
    from workbench.data.cache import load_face_data
    from workbench.data.synth import SynthConfig, generate_dataset

    man = generate_dataset(SynthConfig(identities=4, images_per_identity=4, size=S, views=5),
                           tmp_path_factory.mktemp("clmex-views"), progress=False)
    return man, load_face_data(man, S, progress=False)


class GuardedCodes(dict):
    """A codes dict that records every key read (and any bulk read)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def values(self):
        self.read.update(self.keys())
        return super().values()

    def items(self):
        self.read.update(self.keys())
        return super().items()


def method(**over) -> CLMEx:
    torch.manual_seed(0)
    return CLMEx(from_dict(CLMExConfig, {**TINY, **over}), Backbone("resnet10t", image_size=S), S)


def make_batch(data, rows: np.ndarray, seed: int = 0) -> Batch:
    images, lm = data.batch(rows)
    flat = torch.from_numpy(rows.reshape(-1))
    codes = GuardedCodes({c: torch.from_numpy(data.codes(c)[0])[flat].reshape(rows.shape)
                          for c in ("identity", "clip", "group", "expression") if data.has(c)})
    return Batch(images=images, landmarks=lm, rows=torch.from_numpy(rows), codes=codes,
                 generator=torch.Generator().manual_seed(seed))


def test_registered_with_presets():
    assert METHODS["clmex"] is CLMEx and get_method("CL-MEx".replace("-", "")) is CLMEx
    assert CLMEx.requires == ("group",) and CLMEx.synth_mode == "views"
    assert "UNVERIFIED" in CLMEx.__doc__ and CLMExConfig().augment
    for preset in ("paper", "cpu"):
        from_dict(CLMExConfig, CLMEx.presets[preset])


def test_batch_rows_hold_all_views_of_one_instance_never_mixed(views):
    _, data = views
    group = data.manifest.frame["group"].to_numpy()
    view = data.manifest.frame["view"].to_numpy()
    ident = data.manifest.frame["identity"].to_numpy()
    sampler = method().make_sampler(data, 4, seed=0)
    assert sampler.k == 5
    n_rows = 0
    for epoch in range(2):
        for rows in sampler.batches(epoch):
            for r in rows:
                assert len(set(group[r])) == 1 and len(set(view[r])) == 5  # one instance, all 5 angles
            assert len({group[r[0]] for r in rows}) == len(rows)  # distinct instances per batch
            assert all(len(set(ident[r])) == 1 for r in rows)
            n_rows += len(rows)
    assert n_rows == 2 * len(sampler) * 4


def test_loss_uses_group_codes_only_never_expression(views):
    _, data = views
    m = method(augment=False)
    rows = next(iter(m.make_sampler(data, 4, 0).batches(0)))
    batch = make_batch(data, rows)
    out = m.training_step(batch)
    assert "expression" not in batch.codes.read and batch.codes.read == {"group"}
    z = m(flatten_items(batch.images))["z"]
    want = multi_positive_nt_xent(z, dict.__getitem__(batch.codes, "group").reshape(-1), m.cfg.temperature)
    assert float(out["loss"].detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    # relabelling the groups (same partition) changes nothing; a different partition changes the loss
    relabelled = make_batch(data, rows)
    dict.__setitem__(relabelled.codes, "group", dict.__getitem__(relabelled.codes, "group") * 7 + 3)
    dict.__setitem__(relabelled.codes, "expression", torch.zeros(rows.shape, dtype=torch.long))
    assert float(m.training_step(relabelled)["loss"].detach()) == pytest.approx(float(out["loss"].detach()), rel=1e-5)
    mixed = make_batch(data, rows)
    g = dict.__getitem__(mixed.codes, "group").clone()
    g[:, 0] = g[0, 0]  # pretend the first view of every row belongs to row 0's instance
    dict.__setitem__(mixed.codes, "group", g)
    assert float(m.training_step(mixed)["loss"].detach()) != pytest.approx(float(out["loss"].detach()), rel=1e-3)


def test_augmented_step_is_finite_with_gradients(views):
    _, data = views
    m = method()
    rows = next(iter(m.make_sampler(data, 3, 0).batches(0)))
    out = m.training_step(make_batch(data, rows))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["z"].shape == (3, 16)
    assert all(torch.isfinite(p.grad).all() for p in m.backbone.parameters() if p.grad is not None)


def _cfg(man, mc):
    from workbench.train import RunConfig

    return RunConfig.from_dict({
        "method": "clmex", "data": {"manifest": str(man), "image_size": S, "split": "all"},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "knn_every": 0, "log_every": 1, "device": "cpu"},
        "method_config": mc})


def test_pretrain_steps_and_missing_group(views, tmp_path):
    import pandas as pd

    from workbench.runs import pretrain

    man, _ = views
    res = pretrain(_cfg(man, {**CLMEx.presets["cpu"], **TINY}), tmp_path / "r", progress=False)
    assert res.step == 2 and np.isfinite(res.last_metrics["loss"])
    no_group = man.parent / "no_group.csv"
    pd.read_csv(man).drop(columns=["group"]).to_csv(no_group, index=False)
    with pytest.raises(MissingMetadataError, match="'group'"):
        pretrain(_cfg(no_group, TINY), tmp_path / "r2", progress=False)
