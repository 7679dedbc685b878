"""read_image policy: every mode -> uint8 RGB, EXIF orientation, one-line errors for bad files."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from workbench.data.images import (
    ALPHA_BACKGROUND,
    ImageReadError,
    pad_to_square,
    read_image,
    read_image_resized,
)
from workbench.errors import WorkbenchError


def _ok(arr: np.ndarray, h: int, w: int) -> None:
    assert arr.dtype == np.uint8 and arr.shape == (h, w, 3) and arr.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGB", "CMYK", "YCbCr", "LA", "RGBA", "I", "F"])
def test_modes_become_rgb(tmp_path, mode):
    im = Image.new("RGB", (20, 12), (200, 100, 50)).convert(mode)
    fmt = {"CMYK": "JPEG", "YCbCr": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    p = tmp_path / f"x.{fmt.lower()}"
    im.save(p, format=fmt)
    _ok(read_image(p), 12, 20)


def test_grey_is_replicated(tmp_path):
    Image.new("L", (10, 10), 77).save(tmp_path / "g.png")
    arr = read_image(tmp_path / "g.png")
    assert (arr == 77).all()


def test_16bit_is_scaled(tmp_path):
    a = np.full((10, 12), 65535, dtype=np.uint16)
    a[0, 0] = 0
    Image.fromarray(a).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I")
    arr = read_image(tmp_path / "d.png")
    _ok(arr, 10, 12)
    assert arr[5, 5, 0] == 255 and arr[0, 0, 0] == 0


def test_alpha_composited_on_grey(tmp_path):
    im = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0, 255))
    im.save(tmp_path / "a.png")
    arr = read_image(tmp_path / "a.png")
    assert tuple(arr[5, 5]) == ALPHA_BACKGROUND and tuple(arr[0, 0]) == (255, 0, 0)


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (10, 10), 0)
    im.putpalette([0, 255, 0] * 256)
    im.info["transparency"] = 0
    im.save(tmp_path / "p.gif", transparency=0)
    arr = read_image(tmp_path / "p.gif")
    _ok(arr, 10, 10)
    assert tuple(arr[0, 0]) == ALPHA_BACKGROUND


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (30, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "o.jpg", exif=exif)
    _ok(read_image(tmp_path / "o.jpg"), 30, 10)


def test_wrong_extension_is_fine(tmp_path):
    Image.new("RGB", (16, 16), 9).save(tmp_path / "really_png.jpg", format="PNG")
    _ok(read_image(tmp_path / "really_png.jpg"), 16, 16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def _png_with_size(w: int, h: int) -> bytes:
    """A PNG header claiming w x h pixels (a decompression-bomb stand-in: tiny file, huge image)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


@pytest.mark.parametrize("case, reason", [
    ("missing", "not found"), ("dir", "directory"), ("empty", "empty"), ("garbage", "not a recognised"),
    ("truncated", "truncated"), ("tiny", "too small"), ("huge", "too large"),
    ("strip", "too long a side"), ("long_strip", "too long a side"),
])
def test_bad_files_raise_one_line(tmp_path, case, reason):
    p = tmp_path / "bad.png"
    if case == "dir":
        p.mkdir()
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "garbage":
        p.write_bytes(b"this is not an image at all" * 10)
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
        p.write_bytes(p.read_bytes()[:300])
    elif case == "tiny":
        Image.new("RGB", (1, 1)).save(p)
    elif case == "huge":
        p.write_bytes(_png_with_size(10000, 5000))
    elif case == "strip":  # 1.6 MP, but its padded square would be 40 GP (a bomb by aspect ratio)
        p.write_bytes(_png_with_size(8, 200_000))
    elif case == "long_strip":
        p.write_bytes(_png_with_size(20_000, 8))
    with pytest.raises(ImageReadError) as ei:
        read_image(p)
    assert isinstance(ei.value, WorkbenchError)
    assert reason in ei.value.reason and "\n" not in str(ei.value)
    assert ei.value.path == p


def test_pad_to_square_fill_modes():
    img = np.zeros((4, 8, 3), np.uint8)
    img[:, :, 0] = 10
    sq, (px, py) = pad_to_square(img, fill="edge")
    assert sq.shape == (8, 8, 3) and (px, py) == (0, 2) and (sq[..., 0] == 10).all()
    sq, _ = pad_to_square(img, fill="mean")
    assert sq.shape == (8, 8, 3)


@pytest.mark.parametrize("w, h", [(60, 40), (40, 60), (50, 50)])
def test_resized_transform_maps_points(tmp_path, w, h):
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0 = 13, 29
    img[y0 - 1:y0 + 2, x0 - 1:x0 + 2] = 255  # a 3x3 dot centred on (x0, y0)
    Image.fromarray(img).save(tmp_path / "dot.png")
    out, scale, offset = read_image_resized(tmp_path / "dot.png", 32)
    _ok(out, 32, 32)
    g = np.where(out[..., 0] > 20, out[..., 0], 0).astype(float)
    ys, xs = np.mgrid[:32, :32]
    cx, cy = (g * xs).sum() / g.sum(), (g * ys).sum() / g.sum()
    assert abs(cx - (x0 * scale[0] + offset[0])) < 0.5
    assert abs(cy - (y0 * scale[1] + offset[1])) < 0.5


def test_long_images_are_resized_before_padding(tmp_path):
    """A 12 x 6000 strip (under the side limit, but its padded square would be 36 MP) is resized first:
    the result and the landmark transform agree with pad-then-resize, without the big square."""
    import tracemalloc

    from workbench.data import images as images_module

    img = np.zeros((6000, 12, 3), np.uint8)
    img[2850:3150, :] = 255  # a bright band across the middle (3.2 rows at 64 px)
    Image.fromarray(img).save(tmp_path / "strip.png")
    tracemalloc.start()
    out, scale, offset = read_image_resized(tmp_path / "strip.png", 64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    _ok(out, 64, 64)
    assert peak < 50e6  # the padded square alone would be 6000 * 6000 * 3 = 108 MB
    assert 6000 ** 2 > images_module.MAX_PADDED_PIXELS
    # the band's centre (row 2999.5) maps to the image centre; the strip's centre column likewise
    assert abs(2999.5 * scale[1] + offset[1] - 31.5) < 0.1
    assert abs(5.5 * scale[0] + offset[0] - 31.5) <= 0.5 + 1e-9  # 12 px -> 1 px wide; pads are whole pixels
    rows = np.flatnonzero(out[:, 32, 0] > 100)
    assert rows.size and abs(rows.mean() - 31.5) < 1.0


@pytest.mark.parametrize("w, h", [(100, 50), (50, 100), (64, 64)])
def test_resize_first_uses_the_same_landmark_transform(tmp_path, w, h):
    from workbench.data.images import _resize_then_pad

    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    _, scale, offset = read_image_resized(tmp_path / "x.png", 40)
    small, scale2, offset2 = _resize_then_pad(img, 40, "edge", tmp_path / "x.png")
    _ok(small, 40, 40)
    np.testing.assert_allclose(scale2, scale, atol=1e-9)
    np.testing.assert_allclose(offset2, offset, atol=1e-9)
