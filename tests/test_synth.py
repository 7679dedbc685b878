"""The synthetic face generator: determinism, manifest contract, views/clips, and the identity-vs-expression
structure the workbench relies on (identity dominates pixels, expression is in the geometry)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from workbench.cli.main import main
from workbench.data.landmarks import inter_ocular_distance, parse_landmarks
from workbench.data.synth import (
    ACTION_UNITS,
    AU_MOTION,
    MOVING_REGIONS,
    REGION_LANDMARKS,
    REGIONS,
    VALENCE_AROUSAL,
    SynthConfig,
    generate_dataset,
    make_identity,
    render_face,
    synth_item,
    write_contact_sheet,
)
from workbench.data.synth.expressions import au_displacement, expression_aus
from workbench.data.synth.geometry import base_landmarks
from workbench.data.validation import validate_manifest
from workbench.data.vocabulary import EXPRESSIONS
from workbench.errors import ConfigError, ManifestError

BASE_COLUMNS = ["path", "split", "expression", "identity", "intensity", "valence", "arousal", "yaw", "pitch",
                "roll", "landmarks"]


def _load(manifest) -> pd.DataFrame:
    return pd.read_csv(manifest, keep_default_na=False)


def _landmarks(df: pd.DataFrame) -> np.ndarray:
    return np.stack([parse_landmarks(s) for s in df["landmarks"]])


def _pixels(manifest, df: pd.DataFrame) -> np.ndarray:
    root = manifest.parent
    return np.stack([np.asarray(Image.open(root / p), dtype=np.float32).ravel() / 255.0 for p in df["path"]])


# --------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = SynthConfig(identities=3, images_per_identity=8, size=32, seed=5)
    a = generate_dataset(cfg, tmp_path / "a", progress=False)
    b = generate_dataset(cfg, tmp_path / "b", progress=False)
    assert a.read_bytes() == b.read_bytes()
    files = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert len(files) == 24 and files == sorted(p.name for p in (tmp_path / "b" / "images").iterdir())
    for name in files:
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()
    c = generate_dataset(SynthConfig(identities=3, images_per_identity=8, size=32, seed=6), tmp_path / "c",
                         progress=False)
    assert c.read_bytes() != a.read_bytes()
    diff = [(tmp_path / "a" / "images" / n).read_bytes() != (tmp_path / "c" / "images" / n).read_bytes()
            for n in files]
    assert all(diff)
    assert json.loads((tmp_path / "a" / "synth_config.json").read_text())["seed"] == 5


def test_any_image_regenerates_alone(tmp_path):
    cfg = SynthConfig(identities=2, images_per_identity=8, size=32, views=3, seed=1)
    manifest = generate_dataset(cfg, tmp_path, progress=False)
    df = _load(manifest)
    row = df.iloc[17]  # identity 0 has 8 x 3 = 24 rows: instance 5, view 2
    item = synth_item(cfg, 0, 5, 2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / row["path"])), item.image)
    assert np.allclose(parse_landmarks(row["landmarks"]), item.landmarks, atol=0.006)
    assert row["group"] == item.labels["group"] and row["expression"] == item.labels["expression"]
    # identities depend on (seed, index) only, not on the other settings
    assert make_identity(1, 0) == make_identity(1, 0)
    assert make_identity(1, 0) != make_identity(2, 0)


# --------------------------------------------------------------------------------------------- manifest


def test_manifest_columns_labels_and_splits(tiny_synth):
    df = _load(tiny_synth)
    assert list(df.columns) == BASE_COLUMNS
    assert len(df) == 12 * 16
    assert set(df["expression"]) == set(EXPRESSIONS)
    assert df["identity"].str.fullmatch(r"id\d{3}").all()
    # balanced expressions per identity (16 = 2 x 8)
    counts = df.groupby(["identity", "expression"]).size()
    assert counts.min() == counts.max() == 2
    # intensities, valence/arousal on the documented circumplex positions
    neu = df[df["expression"] == "neutral"]
    assert (neu[["intensity", "valence", "arousal"]] == 0).all().all()
    emo = df[df["expression"] != "neutral"]
    assert emo["intensity"].between(0.7, 1.0).all()
    for _, r in emo.iterrows():
        v, a = VALENCE_AROUSAL[r["expression"]]
        assert r["valence"] == pytest.approx(v * r["intensity"], abs=2e-3)
        assert r["arousal"] == pytest.approx(a * r["intensity"], abs=2e-3)
    assert df[["valence", "arousal"]].abs().le(1).all().all()
    assert df["yaw"].abs().le(4).all() and df["pitch"].abs().le(3).all() and df["roll"].abs().le(2).all()
    # subject-disjoint splits, all three present
    per_id = df.groupby("identity")["split"].nunique()
    assert (per_id == 1).all()
    ids = df.groupby("split")["identity"].nunique()
    assert set(ids.index) == {"train", "val", "test"} and ids["train"] >= 6
    # images and landmarks: 48 px RGB; in the default tight crop the brows, eyes, nose and mouth stay inside
    # the image, while the jaw contour may leave it when the mouth opens wide (as in aligned RAF-DB crops)
    first = Image.open(tiny_synth.parent / df["path"][0])
    assert first.size == (48, 48) and first.mode == "RGB"
    lm = _landmarks(df)
    assert lm.shape == (len(df), 68, 2)
    assert (lm[:, 17:] > -0.5).all() and (lm[:, 17:] < 47.5).all()
    assert (lm[:, :17] > -0.5).all() and (lm[:, :17] < 60).all()
    assert df["path"].str.fullmatch(r"images/\d{6}\.png").all()
    report = validate_manifest(tiny_synth, check_files=True)
    assert report.ok and not report.warnings, [str(p) for p in report.problems]


def test_landmarks_follow_the_pose_and_sit_on_the_face():
    img, lm = render_face(2, "neutral", size=64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and lm.shape == (68, 2) and lm.dtype == np.float32
    # frontal: symmetric about the nose bridge, eyes above the nose above the mouth above the chin
    assert abs(lm[36, 0] + lm[45, 0] - 2 * lm[27, 0]) < 0.5
    assert lm[36:48, 1].mean() < lm[33, 1] < lm[48:68, 1].mean() < lm[8, 1]
    # the eye landmarks sit on dark-ish, high-contrast pixels (iris / lashes), not on plain skin
    right_eye = lm[36:42].mean(0).round().astype(int)
    assert img[right_eye[1], right_eye[0]].mean() < img[int(lm[29, 1]), int(lm[29, 0])].mean()
    # yaw > 0 turns the nose towards the image right; pitch > 0 lifts it
    _, right = render_face(2, "neutral", size=64, yaw=30)
    _, up = render_face(2, "neutral", size=64, pitch=20)
    mid = lambda p: (p[36] + p[45]) / 2  # noqa: E731
    assert (right[30] - mid(right))[0] > (lm[30] - mid(lm))[0] + 2
    assert (up[30] - mid(up))[1] < (lm[30] - mid(lm))[1] - 1
    assert render_face(2, "happy", size=32)[0].shape == (32, 32, 3)  # aliases accepted
    with pytest.raises(ManifestError):
        render_face(2, "smirk")


def test_zoom_frames_a_tight_face_crop():
    """zoom scales the face (landmark box ~zoom x larger, still inside the frame, moved up so that the
    brows-to-chin box stays about centred); the default is a tight aligned crop."""
    base, tight = SynthConfig(size=64, identities=8, zoom=1.0), SynthConfig(size=64, identities=8, zoom=1.3)
    assert SynthConfig().zoom == pytest.approx(1.4)
    for identity, instance in ((0, 0), (3, 5), (7, 2)):
        lm0, lm1 = synth_item(base, identity, instance).landmarks, synth_item(tight, identity, instance).landmarks
        span0, span1 = np.ptp(lm0, axis=0), np.ptp(lm1, axis=0)
        assert np.allclose(span1 / span0, 1.3, atol=0.05)
        assert lm1.min() >= -0.5 and lm1.max() <= 63.5  # the whole face stays in the frame
        box_centre = (lm1.min(0) + lm1.max(0)) / 2
        assert np.allclose(box_centre, 31.5, atol=3.0)  # about centred in the 64 px frame
    with pytest.raises(ConfigError):
        generate_dataset(SynthConfig(zoom=0.1), "unused")


# --------------------------------------------------------------------------------------------- views and clips


def test_views_groups(tiny_views):
    df = _load(tiny_views)
    assert list(df.columns) == BASE_COLUMNS[:-1] + ["view", "group", "landmarks"]
    assert len(df) == 8 * 4 * 5
    yaws = np.linspace(-60, 60, 5)
    for g, rows in df.groupby("group"):
        assert len(rows) == 5
        assert rows["identity"].nunique() == 1 and rows["expression"].nunique() == 1
        assert rows["intensity"].nunique() == 1 and rows["split"].nunique() == 1
        assert g.startswith(rows["identity"].iloc[0] + "_g")
        assert np.allclose(np.sort(rows["view"].to_numpy(float)), yaws)
        assert np.allclose(rows["view"], rows["yaw"])
    assert validate_manifest(tiny_views, check_files=False).ok
    # the landmarks really turn: nose tip right of the eye midpoint at +60, left of it at -60
    lm = _landmarks(df)
    offset = lm[:, 30, 0] - (lm[:, 36, 0] + lm[:, 45, 0]) / 2
    assert (offset[df["view"] == 60] > 2).all() and (offset[df["view"] == -60] < -2).all()


def test_clips_ramp_neutral_apex_neutral(tiny_clips):
    df = _load(tiny_clips)
    assert {"clip", "frame"} <= set(df.columns) and list(df.columns)[-1] == "landmarks"
    assert len(df) == 6 * 2 * 16
    assert validate_manifest(tiny_clips, check_files=False).ok
    n_expressive = 0
    for _, rows in df.groupby("clip", sort=False):
        assert rows["frame"].tolist() == list(range(16))
        assert rows["identity"].nunique() == 1 and rows["meta_clip_expression"].nunique() == 1
        inten = rows["intensity"].to_numpy()
        label = rows["meta_clip_expression"].iloc[0]
        assert inten[0] == 0 and inten[-1] == 0
        assert rows["expression"].iloc[0] == rows["expression"].iloc[-1] == "neutral"
        if label != "neutral":
            n_expressive += 1
            assert int(np.argmax(inten)) in (7, 8) and inten.max() >= 0.4
            assert (np.diff(inten[:8]) >= 0).all() and (np.diff(inten[8:]) <= 0).all()
            assert (rows["expression"].iloc[1:-1] == label).all()
        # small head motion around a fixed pose
        assert np.ptp(rows["yaw"].to_numpy()) <= 6.5 and np.ptp(rows["yaw"].to_numpy()) > 0
    assert n_expressive >= 8


# --------------------------------------------------------------------------------------------- structure


def test_identity_dominates_raw_pixels(tiny_synth):
    """Leave-one-out 1-NN on raw pixels finds the person, not the expression (as with real faces)."""
    df = _load(tiny_synth)
    x = _pixels(tiny_synth, df)
    d = (x * x).sum(1)[:, None] + (x * x).sum(1)[None] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)
    nn = d.argmin(1)
    acc_id = (df["identity"].to_numpy()[nn] == df["identity"].to_numpy()).mean()
    acc_ex = (df["expression"].to_numpy()[nn] == df["expression"].to_numpy()).mean()
    assert acc_id >= 0.8, acc_id
    assert acc_ex <= acc_id - 0.3, (acc_id, acc_ex)


def test_landmark_geometry_recovers_expression(tmp_path):
    """Expression is clearly present: a linear classifier on normalised landmarks of held-out people."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = SynthConfig(identities=16, images_per_identity=16, size=32, yaw_range=0, pitch_range=0,
                      roll_range=0, seed=3)
    df = _load(generate_dataset(cfg, tmp_path, progress=False))
    lm = _landmarks(df)
    centre = lm[:, 36:48].mean(1, keepdims=True)
    feats = ((lm - centre) / inter_ocular_distance(lm)[:, None, None]).reshape(len(lm), -1)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    acc = cross_val_score(clf, feats, df["expression"], groups=df["identity"], cv=GroupKFold(4)).mean()
    assert acc > 0.7, acc


def test_expressions_are_local_and_move_their_regions():
    """Apex vs neutral of the same person: nothing changes outside the face, and the landmark regions that
    move are exactly those MOVING_REGIONS lists (the ground truth of attention scoring)."""
    assert set(ACTION_UNITS) == set(EXPRESSIONS) == set(MOVING_REGIONS) == set(VALENCE_AROUSAL)
    assert MOVING_REGIONS["neutral"] == () and all(set(r) <= set(REGIONS) for r in MOVING_REGIONS.values())
    ident = make_identity(0, 4)
    base = base_landmarks(ident)
    iod = np.linalg.norm(base[36, :2] - base[45, :2])
    neutral, _ = render_face(ident, "neutral", size=64)
    for expr in EXPRESSIONS[1:]:
        moved = np.linalg.norm(au_displacement(expression_aus(expr, 1.0))[:, :2], axis=1) / iod
        for region in ("brows", "eyes", "nose", "mouth"):
            peak = moved[list(REGION_LANDMARKS[region])].max()
            if region in MOVING_REGIONS[expr]:
                assert peak > 0.03, (expr, region, peak)
            else:
                assert peak < 0.025, (expr, region, peak)
        if moved[list(REGION_LANDMARKS["cheeks_jaw"])].max() > 0.025:
            assert "cheeks_jaw" in MOVING_REGIONS[expr]
        apex, _ = render_face(ident, expr, 1.0, size=64)
        diff = np.abs(apex.astype(int) - neutral.astype(int)).sum(-1)
        assert diff.sum() > 0
        assert diff[:8].sum() == 0 and diff[:, :8].sum() == 0 and diff[:, -8:].sum() == 0, expr
    assert all(name in AU_MOTION for aus in ACTION_UNITS.values() for name in aus)


# --------------------------------------------------------------------------------------------- sheet, CLI, errors


def test_contact_sheet(tmp_path):
    out = write_contact_sheet(tmp_path / "sheet.png", size=32, identities=2, seed=0)
    im = Image.open(out)
    assert im.size[0] > 8 * 32 and im.size[1] > 2 * 32 and im.mode == "RGB"


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), "--identities", "2", "--images-per-identity", "8", "--size", "24",
                 "--clips", "--clip-length", "4", "--contact-sheet", "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and "64 images" in line and "manifest.csv" in line
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 64 and {r["frame"] for r in rows} == {"0", "1", "2", "3"}
    assert (out / "contact_sheet.png").is_file()
    sheet_only = tmp_path / "sheet"
    assert main(["synth", "--out", str(sheet_only), "--sheet-only", "--identities", "1", "--size", "16"]) == 0
    assert (sheet_only / "contact_sheet.png").is_file() and not (sheet_only / "manifest.csv").exists()
    capsys.readouterr()
    for bad, word in ((["--size", "8"], "size"), (["--identities", "0"], "identities"),
                      (["--views", "3", "--clips"], "views"), (["--size", "big"], "size")):
        assert main(["synth", "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and word in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError):
        generate_dataset(SynthConfig(size=8), tmp_path / "x", progress=False)
