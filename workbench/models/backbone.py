"""timm backbones behind one small wrapper.

Any ``timm.create_model`` name works (``resnet18``, ``resnet50``, ``vit_tiny_patch16_224``,
``convnext_atto``...). Weights are never downloaded: ``pretrained=False`` always; to start from
weights, pass ``weights=PATH`` to a local ``.safetensors`` (or a tensor-only ``.pth``) file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from workbench.errors import CheckpointError, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A timm model with ``num_classes=0`` that maps ``[0, 1]`` RGB images to pooled features.

    Attributes:
        model: the timm model (``forward_features`` gives the feature map / tokens).
        dim: size of the pooled feature vector (``model.num_features``).
        is_vit: True for token-based models (ViT, DeiT...); Grad-CAM then reshapes tokens to a grid.
    """

    def __init__(self, name: str = "resnet18", *, image_size: int = 64, weights: str | Path | None = None,
                 mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD, **timm_kwargs):
        super().__init__()
        import timm

        if not timm.is_model(name):
            import difflib

            guess = difflib.get_close_matches(name, timm.list_models(), n=3)
            hint = f" (close: {', '.join(guess)})" if guess else ""
            raise ConfigError(f"unknown timm backbone '{name}'{hint}; see timm.list_models()")
        kwargs = dict(pretrained=False, num_classes=0, **timm_kwargs)
        if _accepts_img_size(name):
            kwargs.setdefault("img_size", image_size)
        self.name = name
        self.model = timm.create_model(name, **kwargs)
        self.dim = int(self.model.num_features)
        self.is_vit = hasattr(self.model, "patch_embed") and hasattr(self.model, "blocks")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if weights:
            load_backbone_weights(self.model, weights)

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        return (images01 - self.mean.to(images01.dtype)) / self.std.to(images01.dtype)

    def forward_map(self, images01: torch.Tensor) -> torch.Tensor:
        """Unpooled features: ``(B, C, h, w)`` for CNNs, ``(B, N, C)`` tokens for ViTs."""
        return self.model.forward_features(self.normalize(images01))

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(fmap, pre_logits=True)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, dim)``."""
        return self.pool(self.forward_map(images01))

    def cam_layer(self) -> nn.Module:
        """The module whose output Grad-CAM explains: the last feature stage.

        CNNs: the module producing the final feature map (``layer4`` for ResNets, ``stages[-1]``
        for ConvNeXt...); ViTs: the final norm of the last block (tokens, reshaped by the caller).
        """
        m = self.model
        if self.is_vit:
            return m.blocks[-1].norm1
        for attr in ("layer4", "stages", "features", "blocks", "layers"):
            mod = getattr(m, attr, None)
            if mod is None:
                continue
            if isinstance(mod, (nn.Sequential, nn.ModuleList)) and len(mod) > 0:
                return mod[-1] if attr != "layer4" else mod
            return mod
        raise ConfigError(f"cannot find the last feature stage of '{self.name}' for Grad-CAM")

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 1 if self.is_vit else 0))


def _accepts_img_size(name: str) -> bool:
    n = name.lower()
    return any(k in n for k in ("vit", "deit", "beit", "eva", "swin", "cait", "xcit", "pit_"))


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load tensor-only weights from a local file (safetensors or weights_only torch file)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"backbone weights not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        try:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling problem is a refusal
            raise CheckpointError(f"{p}: refused, not a tensor-only checkpoint ({type(exc).__name__})") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{p}: expected a mapping of parameter names to tensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = len(state) - len(unexpected)
    if loaded == 0:
        raise CheckpointError(f"{p}: none of its {len(state)} tensors match the backbone's parameter names")
