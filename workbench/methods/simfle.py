"""SimFLE (Moon, Jang, Park, IEEE TAFFC 2024): BYOL on global views + FaceMAE with semantic masking,
distilled into the CNN backbone."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import param, to_dict
from workbench.errors import ConfigError
from workbench.losses import byol_loss
from workbench.losses.distill import kd_to_mean
from workbench.losses.mae import mae_loss, patchify
from workbench.losses.masking import Masking, group_patch_scores, grouping_loss, num_visible, semantic_masking
from workbench.methods.base import Batch, MethodConfig, MomentumMethod, two_views
from workbench.models import mlp
from workbench.models.vit_mae import MAEDecoder, build_mae_vit, encode_visible
from workbench.views.global_aug import GlobalViewConfig


def simfle_view() -> GlobalViewConfig:
    """SimFLE's GFL view (official ``data/dataset.py``): RandomResizedCrop (scale 0.08-1) + flip,
    colour jitter (0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale 0.2, Gaussian blur σ ∈ [0.1, 2] always."""
    return GlobalViewConfig(crop_scale=(0.08, 1.0), jitter_p=0.8, brightness=0.8, contrast=0.8, saturation=0.8,
                            hue=0.2, grayscale_p=0.2, blur_p=1.0, blur_sigma=(0.1, 2.0), solarize_p=0.0)


def _view_dict(**changes) -> dict:
    return to_dict(dataclasses.replace(simfle_view(), **changes))


@dataclass
class SimFLEConfig(MethodConfig):
    proj_hidden_dim: int = param(4096, "Hidden width of the GFL projector (code 4096).", min=8)
    proj_dim: int = param(256, "Output of the projector / predictor (code 256).", min=2)
    pred_hidden_dim: int = param(4096, "Hidden width of the BYOL predictor (code 4096).", min=8)
    momentum: float = param(0.99, "EMA momentum of the target network (code 0.99, constant).", min=0.0, max=1.0)
    cosine_momentum: bool = param(False, "Ramp the momentum to 1 with a cosine (BYOL). Off = SimFLE's code.")
    kd_hidden_dim: int = param(4096, "Hidden width of the two D-projectors (code 4096).", min=8)
    kd_dim: int = param(256, "Output of the D-projectors, the distillation 'logits' (code 256).", min=2)
    kd_temperature: float = param(4.0, "Distillation temperature T (code 4).", min=1e-3)
    alpha: float = param(0.3, "Weight α of the distillation loss L_d (code 0.3).", min=0.0)
    beta: float = param(0.03, "Weight β of the squared grouping loss (code 0.03).", min=0.0)
    groups: int = param(32, "Channel groups of the semantic masking (code 32 for 2048 channels; must divide the "
                            "backbone's channels, e.g. 8 for resnet18's 512).", min=1)
    mask_ratio: float = param(0.75, "FaceMAE mask ratio; int(L·(1 − r)) most activated patches stay visible "
                                    "(code 0.75: 12 of 49).", min=0.05, max=0.95)
    ffl_scale: float = param(0.5, "FFL image size as a fraction of the run's image size (code: 112 px FFL for "
                                  "224 px GFL = 0.5). Use 1.0 at 48-64 px so the CNN map is at least 2x2.",
                             min=0.1, max=2.0)
    mae_patch_size: int = param(16, "FaceMAE patch size (code 16; 8 for 32-64 px FFL images).", min=1)
    mae_dim: int = param(768, "FaceMAE encoder width (code ViT-B: 768).", min=8)
    mae_depth: int = param(12, "FaceMAE encoder blocks (code 12).", min=1)
    mae_heads: int = param(12, "FaceMAE encoder heads (code 12).", min=1)
    decoder_dim: int = param(512, "FaceMAE decoder width (code 512).", min=8)
    decoder_depth: int = param(8, "FaceMAE decoder blocks (code 8).", min=1)
    decoder_heads: int = param(16, "FaceMAE decoder heads (code 16).", min=1)
    norm_pix: bool = param(True, "Reconstruct per-patch normalised pixels (code: on).")
    ffl_updates_bn: bool = param(False, "Let the no-grad FFL pass of the backbone update BatchNorm running "
                                         "statistics (official-code quirk). Off = intended: the pass uses batch "
                                         "statistics but the running statistics are restored afterwards.")
    view1: GlobalViewConfig = field(default_factory=simfle_view,
                                    metadata={"help": "GFL view 1 (SimFLE: RRC 0.08-1, strong jitter, blur always)."})
    view2: GlobalViewConfig = field(default_factory=simfle_view,
                                    metadata={"help": "GFL view 2 (same family as view 1)."})


@contextmanager
def _bn_stats_preserved(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Restore every BatchNorm's running statistics after the block (outputs still use batch stats)."""
    saved = []
    if enabled:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                saved.append((m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()))
    try:
        yield
    finally:
        for m, mean, var, count in saved:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)


class ChannelGrouping(nn.Module):
    """DBTNet/SimFLE channel grouping: ``ReLU(BN(Conv1x1_{C→C}(F)))``, conv weight 1.0, bias 0.1."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.constant_(self.conv.weight, 1.0)
        nn.init.constant_(self.conv.bias, 0.1)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(fmap)))


class SimFLE(MomentumMethod):
    """SimFLE = GFL + FFL on one CNN backbone.

    - **GFL** (global): BYOL on two strongly augmented views at the run's image size: online
      backbone + projector + predictor vs. an EMA target (backbone + projector), ``2 − 2cos``,
      symmetrised (``L_s``).
    - **FFL** (fine-grained): the un-augmented image resized to ``ffl_scale × S`` goes through the
      online backbone without gradients; its last-stage map (``backbone.forward_map``) feeds a
      trainable channel grouping (1×1 conv + BN + ReLU) trained by the block-diagonal grouping
      loss ``g`` (``L_g = g²``). Per sample one random group's channels are summed, upsampled
      bilinearly to the FFL image, averaged per patch, and the ``int(L·(1−r))`` most activated
      patches are the visible ones of a FaceMAE (ViT MAE, fixed sin-cos positions, norm-pix loss
      ``L_r`` on the removed patches).
    - **Distillation**: D-projectors map the pooled online features of both views and the mean of
      the FaceMAE's visible tokens (no CLS) to ``kd_dim`` logits; each is distilled (KL, T = 4)
      towards the detached mean of the three (``L_d``).
    - ``L = L_s + L_r + α L_d + β L_g`` with α = 0.3, β = 0.03.

    Verified from ``jymoon0613/simfle`` (commit 2048df0; research brief §4): everything above, and
    the defaults of this config (ResNet-50 sizes, ViT-B FaceMAE 768/12/12 + decoder 512/8/16 at
    112 px for 224 px GFL, patch 16, 32 groups, r = 0.75, T = 4, α = 0.3, β = 0.03, constant EMA
    0.99, GFL views = ``simfle_view()``, views encoded in separate passes, conv init 1.0 / 0.1,
    grouping loss ``Σ 0.001·(Co − GT)² / (C/512)²``, bilinear upsampling without corner alignment,
    descending sort, MAE initialisation of the FaceMAE). Official optimiser: SGD lr 0.05·B/256,
    momentum 0.9, wd 1e-4, cosine, 100 epochs, B 256 (the trainer's AdamW 1e-3 is fine for small runs).

    Differences from the official code (documented choices):
    - Quirk §4.10.1: the no-grad FFL pass runs in train mode, so the official code also updates BN
      running statistics with un-augmented FFL images. Default here: the pass still normalises with
      batch statistics (same features as the code) but the running statistics are restored
      afterwards; ``ffl_updates_bn=True`` reproduces the code. The FFL pass runs before the GFL
      passes (code: after), because restoring BN buffers after them would invalidate their autograd
      graph; losses and gradients are unchanged.
    - The group index per sample is drawn from the batch generator (code: global RNG); ties in the
      patch scores keep the lower patch index (stable sort; the code's order is unspecified).
    - Images are normalised with the backbone's mean/std (code: face statistics
      0.5795/0.4522/0.3957, 0.2769/0.2473/0.2412); the FFL image is an antialiased bilinear resize of
      the cached face (code: PIL ``Resize(112)`` of the file).
    - ``ema_update`` also copies the online BN running statistics to the target (code: the target
      keeps its own; they are not used in training since the target runs in train mode).
    - The ``cpu`` preset (UNVERIFIED light configuration): small MLPs, FaceMAE 128/4/4 + decoder
      64/2/4, patch 8, FFL at the run's size (``ffl_scale`` 1.0, so resnet18 at 64 px gives a 2×2 map
      and 64 patches of which 16 stay visible), 8 groups, milder crops and blur for 64 px.
    A BYOL-only ablation (the paper's functional check) is ``--method byol`` with the same views,
    ``cosine_momentum=False`` and the same MLP sizes.
    """

    name = "simfle"
    paper = ("Moon, Jang, Park, SimFLE: Simple Facial Landmark Encoding for Self-Supervised Facial Expression "
             "Recognition in the Wild, IEEE Transactions on Affective Computing 2024 (arXiv 2303.07648)")
    summary = "BYOL on global views + FaceMAE with semantic masking, distilled into the CNN (seed method)."
    Config = SimFLEConfig
    requires = ()
    presets = {
        "paper": {"proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "momentum": 0.99,
                  "cosine_momentum": False, "kd_hidden_dim": 4096, "kd_dim": 256, "kd_temperature": 4.0,
                  "alpha": 0.3, "beta": 0.03, "groups": 32, "mask_ratio": 0.75, "ffl_scale": 0.5,
                  "mae_patch_size": 16, "mae_dim": 768, "mae_depth": 12, "mae_heads": 12, "decoder_dim": 512,
                  "decoder_depth": 8, "decoder_heads": 16, "ffl_updates_bn": False},
        "cpu": {"proj_hidden_dim": 256, "proj_dim": 64, "pred_hidden_dim": 256, "momentum": 0.99,
                "cosine_momentum": False, "kd_hidden_dim": 256, "kd_dim": 64, "kd_temperature": 4.0,
                "alpha": 0.3, "beta": 0.03, "groups": 8, "mask_ratio": 0.75, "ffl_scale": 1.0,
                "mae_patch_size": 8, "mae_dim": 128, "mae_depth": 4, "mae_heads": 4, "decoder_dim": 64,
                "decoder_depth": 2, "decoder_heads": 4, "ffl_updates_bn": False,
                "view1": _view_dict(crop_scale=(0.35, 1.0), blur_sigma=(0.1, 0.6)),
                "view2": _view_dict(crop_scale=(0.35, 1.0), blur_sigma=(0.1, 0.6))},
        # timm's test ResNet at 64 px (``tiny_model``) gives a 2x2 map for the semantic masking
        "tiny": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32, "momentum": 0.99,
                 "cosine_momentum": False, "kd_hidden_dim": 32, "kd_dim": 16, "groups": 8, "ffl_scale": 1.0,
                 "mae_patch_size": 8, "mae_dim": 32, "mae_depth": 1, "mae_heads": 2, "decoder_dim": 32,
                 "decoder_depth": 1, "decoder_heads": 2},
    }
    tiny_model = {"backbone": "test_resnet", "image_size": 64}
    batch_level_terms = True

    def __init__(self, cfg: SimFLEConfig, backbone, image_size: int):
        if backbone.is_vit:
            raise ConfigError(f"method 'simfle' needs a CNN backbone with a spatial feature map (e.g. resnet18, "
                              f"resnet50), got the ViT '{getattr(backbone, 'name', '?')}'; use 'mae' for ViTs")
        super().__init__(cfg, backbone, image_size)
        c = backbone.dim
        if c % cfg.groups:
            raise ConfigError(f"method 'simfle': groups={cfg.groups} does not divide the backbone's {c} channels")
        self.ffl_size = int(round(image_size * cfg.ffl_scale))
        if self.ffl_size % cfg.mae_patch_size:
            raise ConfigError(f"method 'simfle': FFL size {self.ffl_size} px (image {image_size} × ffl_scale "
                              f"{cfg.ffl_scale}) is not divisible by mae_patch_size {cfg.mae_patch_size}")
        reduction = _reduction(backbone.model)
        if reduction and math.ceil(self.ffl_size / reduction) < 2:
            raise ConfigError(f"method 'simfle': the backbone's last map would be 1x1 at the {self.ffl_size} px FFL "
                              f"size (stride {reduction}), so semantic masking cannot rank patches; raise "
                              f"--image-size or ffl_scale (FFL >= {reduction + 1} px)")
        self.num_patches = (self.ffl_size // cfg.mae_patch_size) ** 2
        if num_visible(self.num_patches, cfg.mask_ratio) < 1:
            raise ConfigError(f"method 'simfle': mask_ratio {cfg.mask_ratio} leaves no visible patch of "
                              f"{self.num_patches}")
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, layers=2)
        self.add_target("backbone")
        self.add_target("projector")
        self.grouping = ChannelGrouping(c)
        self.mae_encoder = build_mae_vit(self.ffl_size, cfg.mae_patch_size, cfg.mae_dim, cfg.mae_depth,
                                         cfg.mae_heads)
        grid = self.ffl_size // cfg.mae_patch_size
        self.mae_decoder = MAEDecoder((grid, grid), cfg.mae_patch_size, cfg.mae_dim, dim=cfg.decoder_dim,
                                      depth=cfg.decoder_depth, heads=cfg.decoder_heads, num_prefix=1)
        self.distill_gfl = mlp(c, cfg.kd_hidden_dim, cfg.kd_dim, layers=2)
        self.distill_ffl = mlp(cfg.mae_dim, cfg.kd_hidden_dim, cfg.kd_dim, layers=2)

    # -- GFL --------------------------------------------------------------------------------
    def online(self, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features y, projection z) of the online network."""
        y = self.backbone(images01)
        return y, self.projector(y)

    @torch.no_grad()
    def target_z(self, images01: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(images01))

    # -- FFL --------------------------------------------------------------------------------
    def ffl_image(self, images01: torch.Tensor) -> torch.Tensor:
        """The un-augmented FFL copy at ``ffl_size`` (antialiased bilinear resize)."""
        if images01.shape[-1] == self.ffl_size and images01.shape[-2] == self.ffl_size:
            return images01
        return F.interpolate(images01, size=(self.ffl_size, self.ffl_size), mode="bilinear",
                             align_corners=False, antialias=True).clamp(0, 1)

    @torch.no_grad()
    def ffl_feature_map(self, ffl01: torch.Tensor) -> torch.Tensor:
        """Online backbone's last-stage map (B, C, h, w) of the FFL image, without gradients; BN
        running statistics are left untouched unless ``ffl_updates_bn`` (official quirk)."""
        with _bn_stats_preserved(self.backbone, enabled=not self.cfg.ffl_updates_bn):
            fmap = self.backbone.forward_map(ffl01)
        if fmap.ndim != 4 or fmap.shape[1] != self.backbone.dim:
            raise ConfigError(f"method 'simfle' needs a CNN whose forward_features gives (B, C, h, w) with "
                              f"C = {self.backbone.dim}; '{getattr(self.backbone, 'name', '?')}' gives "
                              f"{tuple(fmap.shape)}")
        return fmap.detach()

    def semantic_mask(self, fmap: torch.Tensor, generator: torch.Generator | None
                      ) -> tuple[Masking, torch.Tensor, torch.Tensor]:
        """(masking, grouping loss g, per-patch scores) from the FFL feature map."""
        act = self.grouping(fmap)
        g = grouping_loss(act, self.cfg.groups)  # the global batch's channel co-activation under DDP
        group = torch.randint(0, self.cfg.groups, (fmap.shape[0],), generator=generator, device=fmap.device)
        scores = group_patch_scores(act.detach(), group, self.cfg.groups, self.ffl_size, self.cfg.mae_patch_size)
        return semantic_masking(scores, self.cfg.mask_ratio), g, scores

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        x = batch.images[:, 0]
        v1, v2 = two_views(x, c.view1, c.view2, batch.generator)
        # FFL map first: restoring BN running stats after the GFL passes would invalidate their autograd
        # graph (the running buffers are saved for backward); the order changes nothing else.
        ffl = self.ffl_image(x)
        masking, g, _ = self.semantic_mask(self.ffl_feature_map(ffl), batch.generator)

        y1, z1 = self.online(v1)
        y2, z2 = self.online(v2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        t1, t2 = self.target_z(v1), self.target_z(v2)
        loss_s = byol_loss(p1, t2) + byol_loss(p2, t1)

        xn = self.backbone.normalize(ffl)
        latent = encode_visible(self.mae_encoder, xn, masking.ids_keep)
        pred = self.mae_decoder(latent, masking.ids_restore)
        loss_r = mae_loss(pred, patchify(xn, c.mae_patch_size), masking.mask, norm_pix=c.norm_pix)

        kd = [self.distill_gfl(y1), self.distill_gfl(y2), self.distill_ffl(latent[:, 1:].mean(dim=1))]
        loss_d = kd_to_mean(kd, c.kd_temperature)
        loss_g = g.pow(2)
        loss = loss_s + loss_r + c.alpha * loss_d + c.beta * loss_g
        return {"loss": loss, "z": z1.detach(), "loss_byol": loss_s.detach(), "loss_recon": loss_r.detach(),
                "loss_distill": loss_d.detach(), "loss_group": loss_g.detach()}


def _reduction(model: nn.Module) -> int:
    """Total stride of a timm CNN's last stage (0 when unknown)."""
    info = getattr(model, "feature_info", None)
    try:
        return int(info[-1]["reduction"])  # type: ignore[index]
    except (TypeError, KeyError, IndexError, ValueError):
        return 0
