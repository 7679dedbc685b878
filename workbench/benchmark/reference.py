"""The reference input pipeline the workbench is compared with: PNG/JPEG files decoded with PIL and
transformed by torchvision, two views per image, in a ``DataLoader`` (module level: picklable for workers).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


class PILGaussianBlur:
    """PIL's Gaussian blur with a random radius (what solo-learn and lightly use)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        from PIL import ImageFilter

        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def reference_transform(size: int):
    """SimCLR's view transform with torchvision on PIL images, ranges equal to the workbench's defaults."""
    from torchvision import transforms as T

    from workbench.models.backbone import IMAGENET_MEAN, IMAGENET_STD

    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([PILGaussianBlur((0.1, 2.0))], p=0.5),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class TwoViewFiles(torch.utils.data.Dataset):
    """Image files → two independently augmented views (decoded with PIL on every access)."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = list(paths), size
        self.transform = reference_transform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        return self.transform(img), self.transform(img)


def convert_to_jpeg(manifest: Path, out_dir: Path, quality: int = 90) -> Path:
    """Re-encode a manifest's images as JPEG files (same pixels, same rows) and return the new manifest."""
    from PIL import Image

    from workbench.data.manifest import Manifest

    src = Manifest.load(manifest)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    frame = src.frame.copy()
    paths = []
    for i, path in enumerate(src.abs_paths()):
        rel = f"images/{i:06d}.jpg"
        with Image.open(path) as im:
            im.convert("RGB").save(out_dir / rel, format="JPEG", quality=quality)
        paths.append(rel)
    frame["path"] = paths
    return Manifest.from_frame(frame, out_dir).save(out_dir / "manifest.csv")


def files_info(manifest: Path) -> dict[str, Any]:
    """Count, format, pixel size and mean byte size of the files a manifest lists."""
    from PIL import Image

    from workbench.data.manifest import Manifest

    paths = Manifest.load(manifest, validate=False).abs_paths()
    with Image.open(paths[0]) as im:
        fmt, wh = im.format, im.size
    return {"count": len(paths), "format": fmt, "width": wh[0], "height": wh[1],
            "mean_bytes": float(np.mean([p.stat().st_size for p in paths]))}


