"""timm backbones behind one small wrapper.

Any ``timm.create_model`` name works (``resnet18``, ``resnet50``, ``vit_tiny_patch16_224``,
``convnext_atto``...). Weights are never downloaded: ``pretrained=False`` always; to start from
weights, pass ``weights=PATH`` to a local ``.safetensors`` (or a tensor-only ``.pth``) file.

Output contract (whatever the model and options): ``forward`` gives pooled ``(B, dim)`` features with
``dim = model.num_features``; ``forward_map`` the unpooled ``(B, C, h, w)`` map (CNNs) or ``(B, N, C)``
tokens (ViTs); ``cam_layer()`` the last feature stage. ``small_stem`` (timm ResNets) only changes the
spatial size of the maps (stride 8 instead of 32), never these shapes' meaning or the module names
(``conv1``, ``maxpool``, ``layer1``..``layer4`` stay; checkpoints and Grad-CAM layer names still apply).
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
                 std: tuple[float, float, float] = IMAGENET_STD, small_stem: bool = False, **timm_kwargs):
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
        self.small_stem = bool(small_stem)
        if small_stem:
            use_small_stem(self.model, name)
        self.dim = int(self.model.num_features)
        self.is_vit = hasattr(self.model, "patch_embed") and hasattr(self.model, "blocks")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if weights:
            load_backbone_weights(self.model, weights, crop_stem=self.small_stem)

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


def use_small_stem(model: nn.Module, name: str = "") -> None:
    """Turn a timm ResNet's ImageNet stem into a small-image stem, in place: stride 1 before ``layer1``.

    Single-conv stems (``resnet18``, ``resnet50``: 7x7 stride 2) get a 3x3 stride-1 conv (same
    channels, fresh init); deep stems (``resnet10t``, ``*d``: three 3x3 convs, the first stride 2) keep
    their convs with every stride set to 1; the max-pool becomes ``nn.Identity``. A 48 px face then
    keeps a 48x48 map before ``layer1`` (12x12 with the ImageNet stem) and 6x6 after ``layer4`` (2x2).
    Compute grows ~13x (resnet18 at 48 px: 37 -> 479 GFLOP per forward+backward of 64 images). ``feature_info`` reductions
    are updated. Other models: :class:`ConfigError`.
    """
    conv1, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if conv1 is None or pool is None or not hasattr(model, "layer1"):
        raise ConfigError(f"small_stem is for timm ResNets (conv1 + maxpool + layer1..4); '{name or type(model).__name__}' "
                          "has no such stem")
    if isinstance(conv1, nn.Conv2d):
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, kernel_size=3, stride=1, padding=1,
                                bias=conv1.bias is not None)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # timm's ResNet init
    else:
        for m in conv1.modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
    model.maxpool = nn.Identity()
    for info in getattr(model, "feature_info", None) or []:
        if isinstance(info, dict) and "reduction" in info:
            info["reduction"] = max(1, int(info["reduction"]) // 4)


def _accepts_img_size(name: str) -> bool:
    n = name.lower()
    return any(k in n for k in ("vit", "deit", "beit", "eva", "swin", "cait", "xcit", "pit_"))


def load_backbone_weights(model: nn.Module, path: str | Path, *, crop_stem: bool = False) -> None:
    """Load tensor-only weights from a local file (safetensors or weights_only torch file).

    ``crop_stem`` (a :func:`use_small_stem` model): a ``conv1.weight`` with a larger kernel than the
    model's (ImageNet 7x7 into the small stem's 3x3) is loaded as its centre crop."""
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
    own = getattr(model, "conv1", None)
    w = state.get("conv1.weight")
    if crop_stem and isinstance(own, nn.Conv2d) and isinstance(w, torch.Tensor) and w.ndim == 4 \
            and w.shape[:2] == own.weight.shape[:2] and w.shape[2] > own.weight.shape[2]:
        k, big = own.weight.shape[2], w.shape[2]
        lo = (big - k) // 2
        state = {**state, "conv1.weight": w[:, :, lo:lo + k, lo:lo + k].contiguous()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = len(state) - len(unexpected)
    if loaded == 0:
        raise CheckpointError(f"{p}: none of its {len(state)} tensors match the backbone's parameter names")
