"""Property-based robustness: malformed manifests and image files give a result or a WorkbenchError,
never another exception (bounded: ~200 examples in total, a few seconds)."""

from __future__ import annotations

import csv
import io
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from workbench.data.images import ImageReadError, read_image
from workbench.data.manifest import Manifest
from workbench.data.validation import COLUMNS, validate_manifest
from workbench.errors import WorkbenchError

FAST = settings(max_examples=70, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

column_names = st.one_of(
    st.sampled_from(list(COLUMNS)), st.sampled_from(["meta_x", "expresion", "Path", "", "path ", "file"]),
    st.text(max_size=8))
weird_paths = st.sampled_from(["a.png", "img/b.jpg", "../up.png", "/abs.png", "C:\\win.png", "a\x00b.png", "",
                               " ", "./a.png", "a//b/../c.png", "é/ü.png", "..", "x" * 300])
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                    st.sampled_from(["nan", "inf", "-inf", "1e999", "0x10", "1,5", "", "  3 "]))
labels = st.sampled_from(["happy", "HAPPINESS", "hapy", "AN", "none", "0", "", "contempt", "😀"])
landmark_strings = st.one_of(
    st.just(" ".join(["1.0"] * 136)), st.just(" ".join(["1.0"] * 135)), st.just(" ".join(["nan"] * 136)),
    st.lists(st.floats(allow_nan=False, width=32), min_size=0, max_size=140).map(lambda v: " ".join(map(str, v))))
cells = st.one_of(st.text(max_size=12), weird_paths, numbers, labels, landmark_strings)


@st.composite
def manifest_bytes(draw) -> bytes:
    header = draw(st.lists(column_names, min_size=0, max_size=6))
    if draw(st.booleans()):
        header = ["path"] + header
    n = draw(st.integers(0, 6))
    rows = [[draw(cells) for _ in range(len(header) + draw(st.sampled_from([0, 0, 0, 1, -1])))] for _ in range(n)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8", errors="surrogatepass")
    mode = draw(st.sampled_from(["plain", "plain", "bytes", "inject", "truncate"]))
    if mode == "bytes":
        return draw(st.binary(max_size=200))
    if mode == "inject" and data:
        pos = draw(st.integers(0, len(data)))
        return data[:pos] + draw(st.binary(min_size=1, max_size=4)) + data[pos:]
    if mode == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    return data


def _exercise(path: Path) -> None:
    for validate in (True, False):
        try:
            m = Manifest.load(path, validate=validate)
        except WorkbenchError:
            continue
        for col in ("expression", "identity"):
            if col in m.frame.columns:
                codes, names = m.labels(col)
                assert len(codes) == len(m) and codes.max(initial=-1) < len(names)
        lms = m.landmarks()
        assert lms is None or lms.shape == (len(m), 68, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for s in ("train", "val", "test"):
                m.split(s)
        assert len(m.fingerprint()) == 64
        if validate:  # a valid manifest round-trips through save
            again = Manifest.load(m.save(path.parent / "copy.csv"))
            assert len(again) == len(m)
    for check_files in (True, False):
        report = validate_manifest(path, check_files=check_files)
        assert report.ok or report.errors
        assert all("\n" not in p.message for p in report.problems)


@FAST
@given(manifest_bytes())
def test_malformed_manifests_never_crash(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.csv"
        p.write_bytes(data)
        (Path(d) / "a.png").write_bytes(b"")  # an unreadable image some manifests point to
        try:
            _exercise(p)
        except WorkbenchError:
            pass


@FAST
@given(st.dictionaries(column_names, st.lists(st.one_of(cells, st.floats(), st.integers(), st.none(),
                                                          st.just(np.zeros((68, 2)))), min_size=3, max_size=3),
                       max_size=5))
def test_from_frame_never_crashes(columns):
    frame = pd.DataFrame(columns) if columns else pd.DataFrame({"path": []})
    try:
        m = Manifest.from_frame(frame, "/tmp")
    except WorkbenchError:
        return
    assert len(m) == len(frame)


@st.composite
def image_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "png", "png16", "rgba", "tiny", "palette", "jpeg", "gif", "tiff_f"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    buf = io.BytesIO()
    if kind == "png16":
        Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16)).save(buf, format="PNG")
    elif kind == "rgba":
        Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), "RGBA").save(buf, format="PNG")
    elif kind == "tiny":
        Image.new("RGB", (1, 1)).save(buf, format="PNG")
    elif kind == "palette":
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert("P").save(buf, format="PNG")
    elif kind == "gif":
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), "L").save(buf, format="GIF")
    elif kind == "tiff_f":
        Image.fromarray(rng.normal(size=(h, w)).astype(np.float32), "F").save(buf, format="TIFF")
    else:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            buf, format="JPEG" if kind == "jpeg" else "PNG")
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]
    return data


@FAST
@given(image_bytes(), st.sampled_from([".png", ".jpg", ".tiff", ".bin"]))
def test_malformed_images_never_crash(data, ext):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x{ext}"
        p.write_bytes(data)
        try:
            arr = read_image(p)
        except ImageReadError as exc:
            assert exc.reason and "\n" not in str(exc)
            return
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 8
        assert not math.isnan(float(arr.mean()))
