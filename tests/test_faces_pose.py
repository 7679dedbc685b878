"""Pose-aware faces: landmark plausibility (ok / profile / implausible), the yaw-aware profile crop,
the status columns and overlay colours, HOG skipped on known profiles, batched CNN detection."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from workbench.data.faces import (
    PROFILE_ASYMMETRY,
    STATUS_COLOURS,
    FacesConfig,
    _make_tasks,
    align_manifest,
    check_landmarks,
    landmark_overlay_sheet,
)
from workbench.data.geometry import canonical_landmarks
from workbench.data.landmarks import nose_asymmetry, parse_landmarks
from workbench.data.manifest import Manifest

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    """2 people x 8 expressions x 5 views (yaw -60 .. 60), 128 px, with ground-truth landmarks."""
    import pandas as pd

    from workbench.data.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("views5")
    path = generate_dataset(SynthConfig(identities=2, images_per_identity=8, size=128, views=5, seed=3), out,
                            progress=False)
    pd.read_csv(path).drop(columns=["split"]).to_csv(path, index=False)  # 2 people: too few for a test split
    return path


def _frame(path):
    m = Manifest.load(path)
    return m, m.frame


def _box(lm):
    return (*lm.min(axis=0), *lm.max(axis=0))


def test_plausibility_classifies_synthetic_views(views):
    _, f = _frame(views)
    yaw = f["yaw"].astype(float).to_numpy()
    lms = [parse_landmarks(v) for v in f["landmarks"]]
    # without the yaw column: the landmarks alone say frontal vs profile
    status = np.array([check_landmarks(lm, _box(lm)).status for lm in lms])
    assert (status[yaw == 0] == "ok").all()
    assert (status[np.abs(yaw) == 60] == "profile").all()
    assert (status[np.abs(yaw) == 30] == "ok").all()  # half-profiles keep the similarity alignment
    asym = np.abs(nose_asymmetry(np.stack(lms)))
    assert asym[yaw == 0].max() < 0.1 < PROFILE_ASYMMETRY < asym[np.abs(yaw) == 60].min()
    # with it: a known profile is a profile whatever its landmarks say
    frontal = canonical_landmarks(128)
    assert check_landmarks(frontal, _box(frontal), yaw=-75.0).status == "profile"
    assert check_landmarks(frontal, _box(frontal), yaw=10.0).status == "ok"
    # ... and a frontal-looking set on a face of known half-profile yaw is a misfit
    chk = check_landmarks(frontal, _box(frontal), yaw=40.0)
    assert chk.status == "implausible" and "frontal-looking" in chk.reason
    # a frontal set with the eyes pulled together, or points thrown outside the box, is implausible
    bad = frontal.copy()
    bad[36:48, 0] = bad[36:48, 0].mean()
    chk = check_landmarks(bad, _box(frontal))
    assert chk.status == "implausible" and "eye distance" in chk.reason
    far = frontal.copy()
    far[8] += (0.0, 200.0)
    assert "outside the face box" in check_landmarks(far, _box(frontal)).reason


def test_profile_crop_keeps_scale_and_centre_across_groups(views, tmp_path):
    rep = align_manifest(views, tmp_path / "out", FacesConfig(size=96, use_manifest_landmarks=True,
                                                              cnn_fallback=False, upsample=0), progress=False)
    m, f = _frame(rep.manifest)
    assert rep.n_aligned == len(f) == 80
    yaw = f["yaw"].astype(float).to_numpy()
    status = f["meta_face_status"].to_numpy()
    assert (status[np.abs(yaw) == 60] == "profile").all() and (status[np.abs(yaw) < 60] == "ok").all()
    lms = m.landmarks()
    # eye line to chin: vertical, unchanged by yaw -> the same in profile and frontal crops of a group
    height = lms[:, 8, 1] - lms[:, 36:48, 1].mean(axis=1)
    centre_y = (lms[:, :, 1].min(1) + lms[:, :, 1].max(1)) / 2
    for _, g in f.groupby("group").groups.items():
        g = np.asarray(g)
        prof, front = g[np.abs(yaw[g]) == 60], g[yaw[g] == 0]
        assert len(prof) == 2 and len(front) == 1
        ratio = height[prof] / height[front]
        assert np.all(np.abs(ratio - 1) < 0.12), ratio
    prof = np.abs(yaw) == 60
    assert np.abs(centre_y[prof] - (0.54 * 96 - 0.5)).max() < 0.06 * 96
    assert height[prof].std() / height[prof].mean() < 0.08
    with open(tmp_path / "out" / "failures.csv") as fh:
        kept = [r for r in csv.DictReader(fh) if r["status"] == "kept"]
    assert len(kept) == prof.sum() and all(r["reason"].startswith("profile: manifest yaw") for r in kept)
    assert "profile" in rep.reasons and rep.reasons["profile"] == prof.sum()
    # the overlay colours each tile's frame by its status
    sheet = landmark_overlay_sheet(rep.manifest, tmp_path / "sheet.png", n=80, cols=10, cell=64)
    from PIL import Image

    px = np.asarray(Image.open(sheet))
    frames = {tuple(px[(k // 10) * 64, (k % 10) * 64 + 32]) for k in range(80)}
    assert {STATUS_COLOURS["ok"], STATUS_COLOURS["profile"]} <= frames


def test_pose_check_off_keeps_the_old_similarity_alignment(views, tmp_path):
    rep = align_manifest(views, tmp_path / "out", FacesConfig(size=64, use_manifest_landmarks=True,
                                                              pose_check=False), progress=False)
    _, f = _frame(rep.manifest)
    assert set(f["meta_face_status"]) == {"unchecked"} and rep.n_warnings == 0


def test_yaw_column_skips_hog_and_cnn_batches(views, tmp_path):
    _, f = _frame(views)
    pick = [int(np.flatnonzero(f["yaw"].astype(float) == y)[0]) for y in (0.0, 60.0, -60.0)]
    sub = f.iloc[pick].drop(columns=["landmarks"])
    sub.to_csv(views.parent / "sub.csv", index=False)
    rep = align_manifest(views.parent / "sub.csv", tmp_path / "out", FacesConfig(upsample=1), progress=False)
    recs = {}
    for line in (tmp_path / "out" / "progress.jsonl").read_text().splitlines():
        r = json.loads(line)
        recs[r["key"]] = r
    tried = [recs[p]["tried"] for p in sub["path"]]
    assert tried == ["hog", "cnn", "cnn"]  # the known profiles never ran HOG
    _, out = _frame(rep.manifest)
    assert out["meta_detector"].iloc[0] == "hog" and out["meta_face_status"].iloc[0] == "ok"


def test_batched_cnn_matches_single_calls(views):
    from workbench.data.faces import FaceDetector
    from workbench.data.images import read_image

    _, f = _frame(views)
    paths = [views.parent / p for p in f["path"].iloc[[2, 7, 12]]]  # frontal views of 3 instances
    images = [read_image(p) for p in paths]
    det = FaceDetector(upsample=0)
    batched = det.find_boxes(images, [True] * 3)
    single = [det.find_boxes([im], [True])[0] for im in images]
    assert [b[2] for b in batched] == ["cnn"] * 3 and batched == single
    assert all(b[0] for b in batched)


def test_groups_are_one_task_the_rest_chunks():
    todo = [(i, (f"k{i}",)) for i in range(7)]
    groups = ["a", "b", "a", "", "b", "", "nan"]
    tasks = _make_tasks(todo, groups, 2)
    assert [[t[0] for t in task] for task in tasks] == [["k0", "k2"], ["k1", "k4"], ["k3", "k5"], ["k6"]]
    assert len(_make_tasks(todo, None, 3)) == 3
