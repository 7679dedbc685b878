"""Pixel statistics (`workbench manifest stats`) and the calibration of the synthetic default set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_dataset

from workbench.analysis.pixel_stats import (
    PixelStats,
    compute_pixel_stats,
    manifest_pixel_stats,
    normalised_geometry,
    variance_shares,
)
from workbench.cli.main import main
from workbench.evaluate.intervals import person_bootstrap, person_folds


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    """The generator's defaults, 32 people x 16 images at 48 px (the size the reference figures use)."""
    from workbench.data.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("calibrated")
    return generate_dataset(SynthConfig(identities=32, images_per_identity=16, size=48, seed=0), out,
                            progress=False)


@pytest.fixture(scope="module")
def default_stats(default_set) -> PixelStats:
    return manifest_pixel_stats(default_set)


def test_variance_shares_match_a_hand_built_design():
    rng = np.random.default_rng(0)
    people, exprs, reps, dim = 6, 4, 3, 50
    a = rng.normal(0, 3.0, (people, dim))      # person effects
    b = rng.normal(0, 1.0, (exprs, dim))       # expression effects
    b -= b.mean(axis=0)
    pid = np.repeat(np.arange(people), exprs * reps)
    eid = np.tile(np.repeat(np.arange(exprs), reps), people)
    X = a[pid] + b[eid]                        # no noise: the two shares must add up to 1
    ident, expr, eta2 = variance_shares(X, pid, eid)
    total = ((X - X.mean(0)) ** 2).sum()
    ref_expr = (b[eid] ** 2).sum() / total
    assert expr == pytest.approx(ref_expr, rel=1e-9) and eta2 == pytest.approx(ref_expr, rel=1e-9)
    assert ident + expr == pytest.approx(1.0, abs=1e-9)


def test_person_bootstrap_brackets_the_mean_and_narrows_with_more_people():
    rng = np.random.default_rng(1)
    few = person_bootstrap(rng.uniform(size=4 * 32) < 0.5, np.repeat(np.arange(4), 32))
    many = person_bootstrap(rng.uniform(size=48 * 32) < 0.5, np.repeat(np.arange(48), 32))
    for s in (few, many):
        assert s.low <= s.mean <= s.high
    assert many.n_people == 48 and few.n_people == 4
    assert (many.high - many.low) < (few.high - few.low)
    # a perfectly separable person effect: each person all right or all wrong -> wide interval
    half = person_bootstrap(np.repeat([True, False] * 6, 10), np.repeat(np.arange(12), 10))
    assert half.mean == pytest.approx(0.5) and half.high - half.low > 0.4


def test_person_folds_keep_each_person_in_one_fold():
    people = np.repeat(np.array([f"p{i}" for i in range(11)]), 5)
    folds = person_folds(people, 5, seed=3)
    for p in np.unique(people):
        assert np.unique(folds[people == p]).size == 1
    assert set(folds.tolist()) == set(range(5))


def test_normalised_geometry_is_invariant_to_position_scale_and_roll():
    from workbench.data.synth import render_face

    _, lm = render_face(3, "happiness", 1.0, size=64)
    theta = np.deg2rad(12.0)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (lm @ rot.T) * 1.7 + np.array([5.0, -3.0])
    g = normalised_geometry(np.stack([lm, moved]))
    assert np.allclose(g[0], g[1], atol=1e-5)


def test_default_synthetic_set_is_calibrated_to_real_posed_faces(default_stats):
    s = default_stats
    assert s.n_people == 32 and s.n_classes == 8 and s.chance == pytest.approx(0.125)
    # expression visible like JAFFE/CK+ (0.063 / 0.047 within identity) ...
    assert s.expression_share >= 0.03
    assert s.pixel_probe.mean >= 0.40 and s.pixel_probe.low >= 0.35
    # ... while identity still dominates
    assert s.identity_share >= 5 * s.expression_share
    # the geometry carries the label almost perfectly (the ceiling)
    assert s.landmark_probe is not None and s.landmark_probe.mean >= 0.95
    # every expression moves the face visibly, contempt included
    assert min(s.mean_expression_change.values()) >= 2.0


def test_identity_knn_far_above_expression_knn_on_raw_pixels(default_set):
    from workbench.data.cache import load_face_data
    from workbench.evaluate.knn import knn_predict

    data = load_face_data(default_set, 48, progress=False)
    X = np.asarray(data.images, dtype=np.float32).reshape(len(data), -1) / 255.0
    ids, _ = data.codes("identity")
    ex, _ = data.codes("expression")
    half = np.arange(len(X)) % 2 == 0
    id_acc = (knn_predict(X[half], ids[half], X[~half], k=1, n_classes=int(ids.max()) + 1) == ids[~half]).mean()
    ex_pred = knn_predict(X[half], ex[half], X[~half], k=1, n_classes=8, train_groups=ids[half],
                          query_groups=ids[~half], exclude_same_group=True)
    ex_acc = (ex_pred == ex[~half]).mean()
    assert id_acc >= 0.6 and id_acc > ex_acc + 0.3


def test_contempt_is_drawn_on_either_side(default_set):
    from workbench.data.synth import SynthConfig
    from workbench.data.synth.dataset import _instance

    cfg = SynthConfig(identities=32, images_per_identity=16, size=48)
    sides = {next(k[-1] for k in _instance(cfg, i, k).aus) for i in range(32) for k in range(16)
             if _instance(cfg, i, k).expression == "contempt"}
    assert sides == {"R", "L"}


def test_stats_cli_prints_and_saves(default_set, tmp_path, capsys):
    out = tmp_path / "stats"
    assert main(["manifest", "stats", str(default_set), "--size", "32", "--folds", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "expression variance share" in text and "95% CI" in text and "32 test people" in text
    again = PixelStats.load(out)
    assert again.size == 32 and again.folds == 3 and again.pixel_probe.n_people == 32
    assert main(["manifest", "stats", str(default_set), "--json", "--folds", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 512


def test_stats_cli_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "m.csv"
    bad.write_text("path\nimages/a.png\n")
    assert main(["manifest", "stats", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "identity" in err[0]
    assert main(["manifest", "stats", str(bad), "--folds", "1"]) == 2


def test_compute_pixel_stats_without_signal_finds_none():
    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(12), 16)
    expr = np.tile(np.arange(8), 24)
    faces = rng.normal(120, 10, (12, 16, 16)).clip(0, 255)[people]
    imgs = (faces + rng.normal(0, 8, faces.shape)).clip(0, 255).astype(np.uint8)
    s = compute_pixel_stats(imgs, people, expr, folds=4)
    assert s.expression_share < 0.02 and s.pixel_probe.low < 0.125 + 0.05


@pytest.mark.parametrize("name,builder,expected", [
    ("jaffe", "jaffe", {"expression_share": 0.063, "probe": (0.30, 0.45)}),
    ("ckplus48", "ckplus48", {"expression_share": 0.047, "probe": (0.74, 0.85)}),
])
def test_real_sets_match_the_reference_figures(name, builder, expected, tmp_path):
    from workbench.data.builders import build_manifest

    folder = shared_dataset(name)
    build_manifest(builder, folder.resolve() / "images", tmp_path / f"{name}.csv")
    s = manifest_pixel_stats(tmp_path / f"{name}.csv")
    assert s.expression_share == pytest.approx(expected["expression_share"], abs=0.01)
    lo, hi = expected["probe"]
    assert lo <= s.pixel_probe.mean <= hi


def test_face_views_keep_the_expression_probe_while_views_differ(default_set, default_stats):
    """Face-scaled default views: the raw-pixel probe on augmented faces stays within 0.05 of the clean
    probe, yet two views of one face differ (no identity shortcut); the ImageNet-style view loses far more."""
    import torch

    from workbench.analysis.pixel_stats import cv_probe
    from workbench.data.cache import load_face_data
    from workbench.views.global_aug import GlobalViewConfig, global_augment, imagenet_view

    data = load_face_data(default_set, 48, progress=False)
    x = torch.from_numpy(np.array(data.images)).permute(0, 3, 1, 2).float() / 255.0
    ids = data.manifest.frame["identity"].astype(str).to_numpy()
    ex = data.manifest.frame["expression"].astype(str).to_numpy()

    def probe(cfg):
        g = torch.Generator().manual_seed(0)
        v1, v2 = global_augment(x, cfg, g).images, global_augment(x, cfg, g).images
        grey = (v1.permute(0, 2, 3, 1).numpy() @ np.array([0.299, 0.587, 0.114])).reshape(len(x), -1)
        return cv_probe(grey, ex, ids).mean, float((v1 - v2).abs().mean()) * 255

    face, face_diff = probe(GlobalViewConfig())
    assert face >= default_stats.pixel_probe.mean - 0.05
    assert face_diff > 10.0
    imagenet, _ = probe(imagenet_view())
    assert imagenet < face - 0.2
