"""Face alignment geometry, the dlib pipeline's bookkeeping (failures, resume) and the overlay sheet."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PIL import Image

from workbench.cli.main import main
from workbench.data.faces import (
    POINT_SETS,
    FacesConfig,
    align_face,
    align_manifest,
    crop_names,
    landmark_overlay_sheet,
    warp_image,
)
from workbench.data.geometry import TEMPLATE_68, apply_transform, canonical_landmarks, similarity_transform
from workbench.data.manifest import Manifest
from workbench.errors import ConfigError, ManifestError

pytest.importorskip("dlib")


def _sim(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([r, [[tx], [ty]]])


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (68, 2))
    m = _sim(20, 1.7, 5, -8)
    est = similarity_transform(src, apply_transform(m, src))
    np.testing.assert_allclose(est, m, atol=1e-9)
    mirrored = src * [-1, 1]  # a reflection cannot be represented: result stays a proper rotation
    est = similarity_transform(src, mirrored)
    assert np.linalg.det(est[:, :2]) > 0
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))


def test_warp_moves_pixels_where_the_transform_says():
    img = np.zeros((80, 100, 3), np.uint8)
    x0, y0 = 61, 23
    img[y0 - 1:y0 + 2, x0 - 1:x0 + 2] = 255
    m = _sim(-15, 0.8, 10, 20)
    crop = warp_image(img, m, 96).astype(float)[..., 0]
    ys, xs = np.mgrid[:96, :96]
    got = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    np.testing.assert_allclose(got, apply_transform(m, np.array([x0, y0])), atol=0.35)


def test_canonical_template_geometry():
    t = canonical_landmarks(112, 0.7)
    assert t.shape == (68, 2) and (t > 0).all() and (t < 111).all()
    width = t[:, 0].max() - t[:, 0].min()
    assert abs(width - 0.7 * 112) < 1e-6
    eyes_l, eyes_r = t[36:42].mean(0), t[42:48].mean(0)
    assert abs(eyes_l[1] - eyes_r[1]) < 1.5 and eyes_l[0] < eyes_r[0] and t[8, 1] > t[33, 1] > eyes_l[1]
    assert TEMPLATE_68.shape == (68, 2) and set(POINT_SETS) == {"stable", "align", "all"}


@pytest.mark.parametrize("points", ["stable", "align", "all"])
def test_align_face_maps_landmarks_onto_template(points):
    canon = canonical_landmarks(64)
    m = _sim(25, 2.5, 40, 30)
    face_lm = apply_transform(m, canon)
    img = np.full((300, 300, 3), 50, np.uint8)
    crop, lm, _ = align_face(img, face_lm, 64, points=points)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(lm, canon, atol=1e-3)
    with pytest.raises(ConfigError):
        align_face(img, face_lm, 64, points="nose-only")


def test_crop_names_strip_prefix_sanitise_and_stay_unique():
    names = crop_names(["../../data/x/a.jpg", "../../data/x/sub/b.png", "../../data/x/a.png"])
    assert names == ["crops/a.png", "crops/sub/b.png", "crops/a__1.png"]
    assert crop_names(["a.jpg", "../b.jpg"]) == ["crops/a.png", "crops/_up/b.png"]
    assert all(".." not in n for n in crop_names(["../x.jpg", "y/../../z.jpg"], "jpg"))


def _noise_manifest(tmp_path, n=4, bad=True, blank=False):
    d = tmp_path / "src"
    d.mkdir()
    rows = ["path,expression,identity,meta_x"]
    for i in range(n):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
        rows.append(f"{i}.png,happy,s{i},{i}")
    if bad:
        (d / "broken.png").write_bytes(b"garbage" * 10)
        rows.append("broken.png,sad,s9,9")
    if blank:
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(d / "blank.png")
        rows.append("blank.png,sad,s8,8")
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    return d / "m.csv"


NO_CNN = dict(cnn_fallback=False, upsample=0)


def test_failures_are_listed_never_crash(tmp_path):
    m = _noise_manifest(tmp_path, blank=True)
    with pytest.raises(ManifestError, match="none of the 6 images could be aligned") as ei:
        align_manifest(m, tmp_path / "out", FacesConfig(**NO_CNN), progress=False)
    assert "\n" not in str(ei.value)
    with open(tmp_path / "out" / "failures.csv") as fh:
        fails = list(csv.DictReader(fh))
    assert len(fails) == 6 and {f["status"] for f in fails} == {"failed"}
    reasons = {f["path"]: f["reason"] for f in fails}
    assert reasons["0.png"] == "no face detected" and reasons["broken.png"].startswith("unreadable")
    assert reasons["blank.png"].startswith("blank image")  # all black: said as such, not "no face detected"


def test_whole_image_fallback_resume_and_settings(tmp_path):
    m = _noise_manifest(tmp_path)
    out = tmp_path / "out"
    cfg = FacesConfig(size=48, whole_image_fallback=True, **NO_CNN)
    rep = align_manifest(m, out, cfg, progress=False)
    assert (rep.n_rows, rep.n_aligned, rep.n_failed, rep.n_warnings) == (5, 4, 1, 4)
    assert "4 of 5 aligned" in rep.summary_line and "failures.csv" in rep.summary_line
    res = Manifest.load(out / "manifest.csv")
    assert len(res) == 4 and res.frame["meta_x"].tolist() == ["0", "1", "2", "3"]
    assert res.frame["path"].tolist()[0] == "crops/0.png" and res.frame["expression"][0] == "happiness"
    lms = res.landmarks()
    assert lms.shape == (4, 68, 2) and np.isfinite(lms).all()
    with Image.open(res.abs_paths()[0]) as im:
        assert im.size == (48, 48)
    with open(out / "failures.csv") as fh:
        statuses = sorted(r["status"] for r in csv.DictReader(fh))
    assert statuses == ["failed", "kept", "kept", "kept", "kept"]
    again = align_manifest(m, out, cfg, progress=False)
    assert again.n_resumed == 5 and again.n_aligned == 4
    (out / "crops" / "1.png").unlink()  # a lost crop is redone
    assert align_manifest(m, out, cfg, progress=False).n_resumed == 4
    with pytest.raises(ConfigError, match="other settings"):
        align_manifest(m, out, FacesConfig(size=64, whole_image_fallback=True, **NO_CNN), progress=False)
    assert align_manifest(m, out, FacesConfig(size=64, whole_image_fallback=True, **NO_CNN), progress=False,
                          restart=True).n_resumed == 0


def test_faces_cli_and_overlay(tmp_path, capsys):
    m = _noise_manifest(tmp_path, n=3, bad=False)
    out = tmp_path / "o"
    code = main(["faces", str(m), "--out", str(out), "--size", "40", "--upsample", "0", "--cnn-fallback", "false",
                 "--whole-image-fallback", "true", "--no-progress", "--overlay", str(tmp_path / "sheet.png")])
    assert code == 0
    text = capsys.readouterr().out
    assert "3 of 3 aligned" in text and "overlay:" in text
    with Image.open(tmp_path / "sheet.png") as im:
        assert im.size == (3 * 160, 160)
    with pytest.raises(ManifestError, match="no landmarks"):
        landmark_overlay_sheet(m, tmp_path / "x.png")
    assert main(["faces", str(m), "--out", str(out), "--size", "4"]) == 2
    assert ">= 16" in capsys.readouterr().err


def test_manifest_landmarks_skip_detection(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    canon = canonical_landmarks(64)
    rows = ["path,landmarks"]
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (120, 100, 3), dtype=np.uint8)).save(d / f"{i}.png")
        lm = apply_transform(_sim(10 * i, 1.2, 5, 12), canon)
        rows.append(f"{i}.png," + " ".join(f"{v:.4f}" for v in lm.reshape(-1)))
    (d / "m.csv").write_text("\n".join(rows) + "\n")
    rep = align_manifest(d / "m.csv", tmp_path / "out", FacesConfig(size=64, use_manifest_landmarks=True, **NO_CNN),
                         progress=False)
    assert rep.n_aligned == 3 and rep.n_warnings == 0
    np.testing.assert_allclose(Manifest.load(rep.manifest).landmarks(), np.repeat(canon[None], 3, 0), atol=0.02)
