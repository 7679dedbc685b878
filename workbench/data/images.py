"""Robust image reading: any image file -> uint8 RGB ``(H, W, 3)``, or a one-line :class:`ImageReadError`.

Policy of :func:`read_image` (every reader of the workbench goes through it):

- **Format**: whatever Pillow decodes; a wrong file extension is fine (the content decides).
- **Multi-frame files** (GIF, multi-page TIFF): the first frame.
- **EXIF orientation** is applied (phone photos come out upright).
- **Modes**: grey ``L``/``1``, palette ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` -> RGB (grey is
  replicated to 3 channels). 16-bit grey (``I;16*``) and 32-bit ``I`` are scaled to 8 bits
  (``v * 255 / 65535``; ``I`` values that all fit in 0..255 are kept as they are); float ``F`` images
  in [0, 1] are scaled by 255, others are clipped to 0..255.
- **Alpha** (``RGBA``, ``LA``, ``PA``, palette transparency) is composited on mid-grey (128), so
  transparent padding does not turn black or white.
- **Errors** (never a raw Pillow/OS traceback): missing file, a directory, empty file, not an
  image, corrupt or truncated data, fewer than :data:`MIN_SIDE` pixels on a side, more than
  :data:`MAX_SIDE` on a side or :data:`MAX_PIXELS` pixels in all (decompression bombs, also by aspect
  ratio) -> :class:`ImageReadError` with a short reason.

:func:`read_image_resized` pads to a centred square and resizes, returning the transform that maps
landmarks: ``new = old * scale + offset`` (per axis, pixel-centre convention).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError

#: smallest accepted side, in pixels (smaller images carry no usable face)
MIN_SIDE = 8
#: largest accepted image, in pixels (40 megapixels); larger files are refused as possible bombs
MAX_PIXELS = 40_000_000
#: longest accepted side, in pixels: an 8 x 200,000 strip is small in pixels but no face image
MAX_SIDE = 16_384
#: padded squares above this many pixels are not built: such images are resized before padding
MAX_PADDED_PIXELS = 4096 * 4096
#: file extensions the dataset builders treat as images (reading itself ignores extensions)
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".jfif"}
)
#: background used when compositing transparent pixels
ALPHA_BACKGROUND = (128, 128, 128)


class ImageReadError(WorkbenchError):
    """An image file cannot be used; ``.path`` and ``.reason`` say which and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())  # keep it on one line
        super().__init__(f"cannot read image {self.path}: {self.reason}")


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the file name has a common image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text[:120] + ("..." if len(text) > 120 else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _to_rgb(im):  # PIL.Image -> PIL.Image in mode RGB
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im)
        if arr.ndim == 3:  # some decoders give (H, W, 1)
            arr = arr[..., 0]
        arr = arr.astype(np.float64)
        if mode == "F":
            finite = arr[np.isfinite(arr)]
            if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
                arr = arr * 255.0
        elif mode.startswith("I;16") or (arr.size and arr.max() > 255):
            arr = arr * (255.0 / 65535.0)
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
        if mode == "RGB":
            return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "L" and "transparency" in im.info:
        return _to_rgb(im.convert("LA"))
    return im.convert("RGB")


def _open_rgb(path: Path):
    """Open, check and decode; returns a PIL RGB image or raises ImageReadError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(path, f"cannot access ({_short(exc)})") from None
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    with warnings.catch_warnings():
        # we enforce our own pixel limit below; Pillow's warning would only be noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")  # corrupt-metadata chatter
        try:
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageReadError(
                        path, f"too large ({w}x{h} = {w * h / 1e6:.0f} megapixels; limit {MAX_PIXELS / 1e6:.0f})")
                if max(w, h) > MAX_SIDE:
                    raise ImageReadError(path, f"too long a side ({w}x{h}; limit {MAX_SIDE} px per side)")
                if min(w, h) < MIN_SIDE:
                    raise ImageReadError(path, f"too small ({w}x{h}; need at least {MIN_SIDE} px per side)")
                im.load()
                im = ImageOps.exif_transpose(im) or im
                rgb = _to_rgb(im)
                rgb.load()
                return rgb
        except ImageReadError:
            raise
        except UnidentifiedImageError:
            raise ImageReadError(path, "not a recognised image format") from None
        except Image.DecompressionBombError:
            raise ImageReadError(path, f"too large (over {MAX_PIXELS / 1e6:.0f} megapixels)") from None
        except PermissionError:
            raise ImageReadError(path, "permission denied") from None
        except MemoryError:
            raise ImageReadError(path, "out of memory while decoding") from None
        except (OSError, SyntaxError, EOFError) as exc:
            raise ImageReadError(path, f"corrupt or truncated ({_short(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - third-party decoders on untrusted bytes raise anything
            raise ImageReadError(path, f"cannot decode ({_short(exc)})") from None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read any image file as a contiguous uint8 RGB array ``(H, W, 3)``.

    See the module docstring for the conversion policy. Raises :class:`ImageReadError` (a
    :class:`~workbench.errors.WorkbenchError`) with a short reason when the file cannot be used.
    """
    p = Path(path)
    rgb = _open_rgb(p)
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - defensive
        raise ImageReadError(p, f"unexpected decoded shape {arr.shape}")
    return np.ascontiguousarray(arr)


def blank_reason(image: np.ndarray, *, tolerance: int = 2) -> str | None:
    """``"blank image (...)"`` when every pixel has the same colour (within ``tolerance`` levels), else
    None: a blank file is a data problem, not a face the detector missed."""
    a = np.asarray(image)
    if a.size == 0:
        return "blank image (no pixels)"
    flat = a.reshape(-1, a.shape[-1]) if a.ndim == 3 else a.reshape(-1, 1)
    spread = int((flat.max(axis=0).astype(np.int32) - flat.min(axis=0).astype(np.int32)).max())
    if spread <= tolerance:
        colour = ",".join(str(int(v)) for v in flat[0])
        return f"blank image (one colour everywhere: {colour})"
    return None


def pad_to_square(image: np.ndarray, *, fill: str = "edge") -> tuple[np.ndarray, tuple[int, int]]:
    """Pad ``(H, W, 3)`` to a centred square; returns ``(square, (pad_x, pad_y))``.

    ``fill``: ``"edge"`` (replicate border pixels, default: no artificial edges for the model) or
    ``"mean"`` (the image's mean colour).
    """
    h, w = image.shape[:2]
    side = max(h, w)
    px, py = (side - w) // 2, (side - h) // 2
    if px == 0 and py == 0 and h == w:
        return image, (0, 0)
    pads = ((py, side - h - py), (px, side - w - px), (0, 0))
    if fill == "edge":
        out = np.pad(image, pads, mode="edge")
    elif fill == "mean":
        colour = image.reshape(-1, image.shape[2]).mean(axis=0)
        out = np.empty((side, side, image.shape[2]), dtype=image.dtype)
        out[...] = np.rint(colour).astype(image.dtype)
        out[py:py + h, px:px + w] = image
    else:
        raise ValueError(f"fill must be 'edge' or 'mean', got {fill!r}")
    return out, (px, py)


def read_image_resized(
    path: str | os.PathLike[str], size: int, *, fill: str = "edge"
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Read, pad to a centred square (``fill`` = ``"edge"`` or ``"mean"``) and resize to ``size``.

    Returns ``(image uint8 (size, size, 3), scale_xy, offset_xy)`` such that a landmark ``old``
    (pixel coordinates of the original file, pixel centres at integers) maps to
    ``new = old * scale + offset`` in the returned image.
    """
    from PIL import Image

    if int(size) < 1:
        raise ValueError(f"size must be positive, got {size}")
    size = int(size)
    img = read_image(path)
    h, w = img.shape[:2]
    if max(h, w) ** 2 > MAX_PADDED_PIXELS:
        return _resize_then_pad(img, size, fill, path)
    square, (px, py) = pad_to_square(img, fill=fill)
    side = square.shape[0]
    s = size / side
    if side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC))
    # pixel centres: (old + pad + 0.5) * s - 0.5
    offset = ((px + 0.5) * s - 0.5, (py + 0.5) * s - 0.5)
    return np.ascontiguousarray(square), (s, s), offset


def _resize_then_pad(img: np.ndarray, size: int, fill: str, path: str | os.PathLike[str]
                     ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """:func:`read_image_resized` for images whose padded square would be huge: resize first (each side
    to ``round(side * size / longest)``, at least 1), then pad to ``size``; memory stays ~ the input's."""
    from PIL import Image

    h, w = img.shape[:2]
    nw, nh = max(1, round(w * size / max(h, w))), max(1, round(h * size / max(h, w)))
    try:
        small = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BICUBIC))
    except MemoryError:
        raise ImageReadError(path, "out of memory while resizing") from None
    square, (px, py) = pad_to_square(small, fill=fill)  # the long side is already ``size``
    sx, sy = nw / w, nh / h
    # pixel centres: (old + 0.5) * s_axis - 0.5 + pad
    return np.ascontiguousarray(square), (sx, sy), (0.5 * sx - 0.5 + px, 0.5 * sy - 0.5 + py)
