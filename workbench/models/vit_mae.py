"""MAE building blocks over timm ViTs (He et al., CVPR 2022; ``facebookresearch/mae``).

- :func:`sincos_pos_embed_2d`: MAE's fixed 2-D sin-cos position embedding.
- :func:`check_mae_vit` / :func:`fix_sincos_pos_embed_`: make a timm ``VisionTransformer`` usable as
  an MAE encoder (fixed, frozen sin-cos position embedding).
- :func:`encode_visible`: run a timm ``VisionTransformer`` on the visible patches only (MAE order:
  patch embedding + position embedding, then masking, then the prefix (CLS) tokens, blocks, norm).
- :class:`MAEDecoder`: MAE's light decoder (mask tokens, fixed sin-cos positions, timm ``Block``\\ s).
- :func:`build_mae_vit`: a fresh MAE-style ViT encoder (SimFLE's FaceMAE); never downloads weights.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from workbench.errors import ConfigError

# -- position embeddings --------------------------------------------------------------------------

def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = pos.reshape(-1, 1).double() * omega.view(1, -1)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed_2d(dim: int, grid: int | tuple[int, int], num_prefix: int = 0) -> torch.Tensor:
    """(num_prefix + h·w, dim) float32 fixed position embedding, MAE's ``get_2d_sincos_pos_embed``.

    The first half of the channels encodes the column (x) index, the second half the row (y)
    index (MAE's ``meshgrid(grid_w, grid_h)`` order); patches row-major; prefix rows are zero.
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    if dim % 4:
        raise ConfigError(f"the sin-cos position embedding needs an embedding width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, xs), _sincos_1d(dim // 2, ys)], dim=1)
    emb = torch.cat([torch.zeros(num_prefix, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


# -- timm ViT as MAE encoder ----------------------------------------------------------------------

def check_mae_vit(model: nn.Module, who: str = "MAE") -> None:
    """Raise ConfigError unless ``model`` is a plain timm VisionTransformer with a learnable-size
    absolute position embedding and square patches."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"{who} needs a plain timm VisionTransformer backbone (vit_*/deit_* names, e.g. "
                          f"vit_tiny_patch16_224), got {type(model).__name__}")
    if getattr(model, "pos_embed", None) is None:
        raise ConfigError(f"{who} needs a ViT with an absolute position embedding (pos_embed), "
                          f"{type(model).__name__} has none")
    p = model.patch_embed.patch_size
    if p[0] != p[1]:
        raise ConfigError(f"{who} needs square patches, got {tuple(p)}")


def patch_size_of(model: nn.Module) -> int:
    return int(model.patch_embed.patch_size[0])


def grid_of(model: nn.Module) -> tuple[int, int]:
    g = model.patch_embed.grid_size
    return int(g[0]), int(g[1])


def fix_sincos_pos_embed_(model: nn.Module) -> None:
    """Overwrite the ViT's position embedding with fixed 2-D sin-cos values and freeze it (MAE)."""
    n_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    pe = sincos_pos_embed_2d(model.embed_dim, grid_of(model), n_prefix)
    if tuple(model.pos_embed.shape[1:]) != tuple(pe.shape):
        raise ConfigError(f"unexpected position-embedding shape {tuple(model.pos_embed.shape)} for a "
                          f"{grid_of(model)} patch grid")
    with torch.no_grad():
        model.pos_embed.copy_(pe.unsqueeze(0).to(model.pos_embed))
    model.pos_embed.requires_grad_(False)


def encode_visible(model: nn.Module, images: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
    """Tokens (B, P + K, D) of a timm VisionTransformer that sees only the ``ids_keep`` patches.

    ``images`` are already normalised; ``ids_keep`` (B, K) (None = all patches). Follows MAE: add
    the patch position embedding, drop the masked patches, prepend the prefix (CLS / register)
    tokens with their position embedding, then ``norm_pre``, the blocks and the final norm.
    """
    x = model.patch_embed(images)
    b, d = x.shape[0], x.shape[-1]
    x = x.reshape(b, -1, d)  # (B, N, D) also for dynamic_img_size ViTs (NHWC patch embedding)
    pe = model.pos_embed
    n_prefix = model.num_prefix_tokens
    n_pos = pe.shape[1] - (0 if model.no_embed_class else n_prefix)
    if x.shape[1] != n_pos:
        raise ConfigError(f"the ViT was built for {n_pos} patches but the images give {x.shape[1]}; "
                          f"use the image size the model was created with")
    x = x + (pe if model.no_embed_class else pe[:, n_prefix:])
    if ids_keep is not None:
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    prefix = []
    if model.cls_token is not None:
        prefix.append(model.cls_token.expand(b, -1, -1))
    if getattr(model, "reg_token", None) is not None:
        prefix.append(model.reg_token.expand(b, -1, -1))
    if prefix:
        p = torch.cat(prefix, dim=1)
        if not model.no_embed_class:
            p = p + pe[:, :n_prefix]
        x = torch.cat([p, x], dim=1)
    x = model.pos_drop(x)
    x = model.norm_pre(x)
    x = model.blocks(x)
    return model.norm(x)


def mae_init_(module: nn.Module) -> None:
    """MAE's ``initialize_weights``: xavier-uniform Linear (bias 0), LayerNorm (1, 0), patch-embedding
    conv as a flattened Linear, CLS / mask tokens N(0, 0.02). Position embeddings are left alone."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    patch_embed = getattr(module, "patch_embed", None)
    if patch_embed is not None:
        w = patch_embed.proj.weight
        nn.init.xavier_uniform_(w.data.view(w.shape[0], -1))
    for name in ("cls_token", "mask_token"):
        t = getattr(module, name, None)
        if isinstance(t, nn.Parameter):
            nn.init.normal_(t, std=0.02)


def build_mae_vit(img_size: int, patch_size: int, dim: int, depth: int, heads: int,
                  mlp_ratio: float = 4.0) -> nn.Module:
    """A fresh MAE-style timm VisionTransformer encoder (CLS token, qkv bias, LayerNorm eps 1e-6,
    fixed sin-cos positions, MAE init, no head). SimFLE's FaceMAE: 112 px, patch 16, 768/12/12."""
    from timm.models.vision_transformer import VisionTransformer

    if img_size % patch_size:
        raise ConfigError(f"image size {img_size} is not divisible by the MAE patch size {patch_size}")
    if dim % heads:
        raise ConfigError(f"MAE width {dim} is not divisible by its {heads} heads")
    vit = VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=dim, depth=depth,
                            num_heads=heads, mlp_ratio=mlp_ratio, qkv_bias=True, num_classes=0,
                            global_pool="token", norm_layer=partial(nn.LayerNorm, eps=1e-6))
    mae_init_(vit)
    fix_sincos_pos_embed_(vit)
    return vit


def vit_with_patch_size(name: str, image_size: int, patch_size: int) -> nn.Module:
    """Re-create the timm ViT ``name`` at ``image_size`` with another patch size (random init)."""
    import timm

    if image_size % patch_size:
        raise ConfigError(f"image size {image_size} is not divisible by the patch size {patch_size}")
    return timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size, patch_size=patch_size)


# -- decoder ---------------------------------------------------------------------------------------

class MAEDecoder(nn.Module):
    """MAE's decoder: embed the visible tokens, insert a shared mask token at every removed
    position (``ids_restore``), add fixed sin-cos positions, run ``depth`` timm Blocks and predict
    the p·p·3 pixels of every patch.

    Args:
        grid: (h, w) patch grid; ``patch_size``: pixels per patch side.
        encoder_dim: width of the encoder tokens; ``dim`` / ``depth`` / ``heads``: decoder size
            (MAE / SimFLE: 512 / 8 / 16; a 1-2 block, 128-256 wide decoder is enough on CPU).
        num_prefix: prefix (CLS) tokens the encoder output starts with; passed through, dropped
            from the prediction.
    """

    def __init__(self, grid: tuple[int, int], patch_size: int, encoder_dim: int, *, dim: int = 512,
                 depth: int = 8, heads: int = 16, mlp_ratio: float = 4.0, num_prefix: int = 1,
                 in_chans: int = 3):
        super().__init__()
        from timm.models.vision_transformer import Block

        if dim % heads:
            raise ConfigError(f"MAE decoder width {dim} is not divisible by its {heads} heads")
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.num_prefix = num_prefix
        self.num_patches = grid[0] * grid[1]
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, grid, num_prefix).unsqueeze(0))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm)
                                      for _ in range(depth)])
        self.norm = norm(dim)
        self.pred = nn.Linear(dim, patch_size * patch_size * in_chans)
        mae_init_(self)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """(B, P + K, encoder_dim) encoder tokens → (B, L, p·p·3) pixel predictions for all patches."""
        x = self.embed(latent)
        b, _, d = x.shape
        p = self.num_prefix
        visible = x[:, p:]
        n_mask = ids_restore.shape[1] - visible.shape[1]
        full = torch.cat([visible, self.mask_token.to(x.dtype).expand(b, n_mask, -1)], dim=1)
        full = torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))
        x = torch.cat([x[:, :p], full], dim=1) + self.pos_embed.to(x.dtype)
        x = self.norm(self.blocks(x))
        return self.pred(x)[:, p:]
