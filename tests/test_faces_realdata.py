"""dlib detection + alignment on the real JAFFE images (opt-in: needs ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from workbench.cli.main import main
from workbench.data.faces import POINT_SETS, landmark_overlay_sheet
from workbench.data.geometry import canonical_landmarks
from workbench.data.manifest import Manifest

SHARED = Path(os.environ.get("WORKBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

pytestmark = pytest.mark.realdata


def test_jaffe_faces_detected_and_aligned(tmp_path, capsys):
    images = SHARED / "jaffe" / "images"
    if not images.is_dir():
        pytest.skip(f"real dataset 'jaffe' not available at {images}")
    pytest.importorskip("dlib")
    src = tmp_path / "jaffe.csv"
    assert main(["manifest", "build", "jaffe", "--root", str(images), "--out", str(src)]) == 0
    out = tmp_path / "faces"
    # upsample 0 keeps the test fast; JAFFE faces are ~120 px, well above HOG's minimum
    assert main(["faces", str(src), "--out", str(out), "--upsample", "0", "--no-progress"]) == 0
    assert "aligned" in capsys.readouterr().out
    m = Manifest.load(out / "manifest.csv")
    assert len(m) >= 0.95 * 213
    assert set(m.frame["identity"]) == set(Manifest.load(src).frame["identity"])
    lms = m.landmarks()
    assert np.isfinite(lms).all()
    # frontal real faces pass the plausibility checks (measured: |nose asymmetry| <= 0.29, residual <= 0.07)
    assert set(m.frame["meta_face_status"]) == {"ok"} and set(m.frame["meta_detector"]) == {"hog"}
    # the aligned landmarks sit on the template: stable points within a few pixels of it at 112 px
    stable = list(POINT_SETS["stable"])
    err = np.linalg.norm(lms[:, stable] - canonical_landmarks(112)[stable], axis=-1).mean(axis=1)
    assert np.median(err) < 3.0 and err.max() < 8.0
    # anatomy: eyes above the nose tip above the mouth above the chin, subject's right eye on image left
    assert (lms[:, 36:42, 1].mean(1) < lms[:, 33, 1]).all() and (lms[:, 33, 1] < lms[:, 62, 1]).all()
    assert (lms[:, 62, 1] < lms[:, 8, 1]).all() and (lms[:, 36, 0] < lms[:, 45, 0]).all()
    sheet = landmark_overlay_sheet(m, tmp_path / "overlay.png", n=12)
    assert sheet.is_file()


def test_several_faces_keep_largest_and_record(tmp_path):
    images = SHARED / "jaffe" / "images"
    if not images.is_dir():
        pytest.skip(f"real dataset 'jaffe' not available at {images}")
    pytest.importorskip("dlib")
    from PIL import Image

    from workbench.data.faces import FacesConfig, align_manifest
    from workbench.data.images import read_image

    a, b = read_image(images / "KA.AN1.39.tiff"), read_image(images / "KL.HA1.158.tiff")
    small = np.asarray(Image.fromarray(b).resize((192, 192)))
    canvas = np.zeros((256, 256 + 192, 3), np.uint8)  # a temporary composite, never kept
    canvas[:, :256], canvas[32:224, 256:] = a, small
    d = tmp_path / "two"
    d.mkdir()
    Image.fromarray(canvas).save(d / "two.png")
    (d / "m.csv").write_text("path\ntwo.png\n")
    rep = align_manifest(d / "m.csv", tmp_path / "out", FacesConfig(upsample=0, cnn_fallback=False), progress=False)
    assert rep.n_aligned == 1 and rep.n_warnings == 1
    fails = (tmp_path / "out" / "failures.csv").read_text()
    assert "kept" in fails and "2 faces detected, kept the largest" in fails
    lm = Manifest.load(rep.manifest).landmarks()[0]
    assert np.isfinite(lm).all()
