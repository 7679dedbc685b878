"""MAE (He et al., CVPR 2022): reconstruct the pixels of randomly masked patches from the visible ones."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.config import param
from workbench.errors import ConfigError
from workbench.losses.mae import mae_loss, patchify
from workbench.losses.masking import num_visible, random_masking
from workbench.methods.base import Batch, MethodConfig, SSLMethod
from workbench.models.vit_mae import (
    MAEDecoder,
    check_mae_vit,
    encode_visible,
    fix_sincos_pos_embed_,
    grid_of,
    patch_size_of,
    vit_with_patch_size,
)
from workbench.views.global_aug import GlobalViewConfig, global_augment


def mae_view() -> GlobalViewConfig:
    """MAE's augmentation: RandomResizedCrop(scale 0.2-1) + horizontal flip, nothing else."""
    return GlobalViewConfig(crop_scale=(0.2, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


@dataclass
class MAEConfig(MethodConfig):
    mask_ratio: float = param(0.75, "Fraction of patches removed (paper 0.75); the encoder sees "
                                    "int(L·(1 − r)) patches.", min=0.05, max=0.95)
    norm_pix: bool = param(True, "Reconstruct per-patch normalised pixels (paper: better features).")
    patch_size: int = param(0, "0 = keep the backbone's patch size. N = re-create the backbone ViT with N-px "
                               "patches at the run's image size (random init; e.g. 8 at 64 px → 8x8 patches "
                               "instead of vit_*_patch16's 4x4). Do not combine with --weights.", min=0)
    decoder_dim: int = param(512, "Decoder width (paper 512; 128 is enough on CPU).", min=8)
    decoder_depth: int = param(8, "Decoder blocks (paper 8; 1-2 on CPU).", min=1)
    decoder_heads: int = param(16, "Decoder attention heads (paper 16).", min=1)
    view: GlobalViewConfig = field(default_factory=mae_view,
                                   metadata={"help": "Augmentation (MAE: random resized crop 0.2-1 + flip only)."})


class MAE(SSLMethod):
    """MAE baseline: the backbone must be a timm ViT (its encoder); patches are masked uniformly at
    random per sample, the encoder runs on the visible ones (+ CLS), a light decoder inserts mask
    tokens and predicts every patch's pixels; the MSE counts removed patches only.

    Verified against ``facebookresearch/mae`` (``models_mae.py``, ``main_pretrain.py``): masking
    (``int(L·(1−r))`` kept, ``ids_restore``, mask 1 = removed), fixed 2-D sin-cos position embeddings
    in encoder and decoder, position embedding added before masking and CLS appended after,
    decoder 512/8/16, norm_pix loss (unbiased variance, eps 1e-6) on the normalised input image,
    mask ratio 0.75, augmentation RRC(0.2-1) + flip. Choices made here: the encoder is the run's timm
    ViT (``--backbone``) with its own init (MAE's xavier init is applied to the decoder only);
    ``patch_size`` may re-create it with smaller patches for small images; output contract
    ``feats`` = mean of the (final-norm) patch tokens of the full, unmasked image, ``z`` = ``feats``
    (MAE has no projection head; ``proj_*`` options are unused); the logged ``z`` of a training step
    is the mean of the visible tokens.
    Practical: paper optimiser AdamW lr 1.5e-4·batch/256, betas (0.9, 0.95), wd 0.05, 40-epoch warm-up;
    MAE needs long training (hundreds of epochs) before linear probes become competitive.
    """

    name = "mae"
    paper = "He, Chen, Xie, Li, Dollár, Girshick, Masked Autoencoders Are Scalable Vision Learners, CVPR 2022"
    summary = "Masked autoencoder on a ViT backbone: reconstruct 75% randomly masked patches (baseline)."
    Config = MAEConfig
    requires = ()
    presets = {"paper": {"mask_ratio": 0.75, "norm_pix": True, "patch_size": 0, "decoder_dim": 512,
                         "decoder_depth": 8, "decoder_heads": 16},
               "cpu": {"mask_ratio": 0.75, "norm_pix": True, "patch_size": 8, "decoder_dim": 128,
                       "decoder_depth": 2, "decoder_heads": 4},
               "tiny": {"mask_ratio": 0.75, "norm_pix": True, "patch_size": 0, "decoder_dim": 32,
                        "decoder_depth": 1, "decoder_heads": 2}}
    tiny_model = {"backbone": "test_vit", "image_size": 32, "patch_size": 8}

    def __init__(self, cfg: MAEConfig, backbone, image_size: int):
        if not backbone.is_vit:
            raise ConfigError(f"method 'mae' needs a ViT backbone (e.g. --backbone vit_tiny_patch16_224), "
                              f"got '{getattr(backbone, 'name', type(backbone.model).__name__)}' (a CNN)")
        if cfg.patch_size:
            check_mae_vit(backbone.model, "method 'mae'")
            backbone.model = vit_with_patch_size(backbone.name, image_size, cfg.patch_size)
        check_mae_vit(backbone.model, "method 'mae'")
        super().__init__(cfg, backbone, image_size)
        vit = backbone.model
        self.patch = patch_size_of(vit)
        if image_size % self.patch:
            raise ConfigError(f"method 'mae': image size {image_size} is not divisible by the patch size {self.patch}")
        self.num_patches = grid_of(vit)[0] * grid_of(vit)[1]
        if num_visible(self.num_patches, cfg.mask_ratio) < 1:
            raise ConfigError(f"method 'mae': mask_ratio {cfg.mask_ratio} leaves no visible patch of "
                              f"{self.num_patches}")
        fix_sincos_pos_embed_(vit)
        self.decoder = MAEDecoder(grid_of(vit), self.patch, vit.embed_dim, dim=cfg.decoder_dim,
                                  depth=cfg.decoder_depth, heads=cfg.decoder_heads,
                                  num_prefix=vit.num_prefix_tokens)

    def build_projector(self) -> nn.Module:
        return nn.Identity()

    @property
    def num_prefix(self) -> int:
        return int(self.backbone.model.num_prefix_tokens)

    def forward(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        """``feats`` = mean of the encoder's patch tokens on the full image; ``z`` = ``feats``."""
        tokens = self.backbone.forward_map(images01)
        feats = tokens[:, self.num_prefix:].mean(dim=1)
        return {"feats": feats, "z": self.projector(feats)}

    @torch.no_grad()
    def embed(self, images01: torch.Tensor) -> torch.Tensor:
        return self(images01)["feats"]

    def reconstruct(self, images01: torch.Tensor, generator: torch.Generator | None):
        """(loss, pred (B, L, p·p·3), masking, latent tokens) for ``[0, 1]`` images."""
        xn = self.backbone.normalize(images01)
        masking = random_masking(xn.shape[0], self.num_patches, self.cfg.mask_ratio, generator, xn.device)
        latent = encode_visible(self.backbone.model, xn, masking.ids_keep)
        pred = self.decoder(latent, masking.ids_restore)
        loss = mae_loss(pred, patchify(xn, self.patch), masking.mask, norm_pix=self.cfg.norm_pix)
        return loss, pred, masking, latent

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.images[:, 0]
        v = global_augment(x, self.cfg.view, batch.generator).images
        loss, _, _, latent = self.reconstruct(v, batch.generator)
        return {"loss": loss, "z": latent[:, self.num_prefix:].mean(dim=1).detach()}
