"""Grad-CAM for SSL encoders (captum ``LayerGradCam``), CNNs and ViTs alike.

Usage::

    from workbench.explain import GradCAM, PrototypeSimilarity

    with GradCAM(method) as cam:                       # hooks method.backbone.cam_layer()
        heat = cam(images01, PrototypeSimilarity(protos, classes))   # (B, H, W) in [0, 1]

What it computes: captum ``LayerGradCam(...).attribute(x, relu_attributions=True)`` on the chosen
layer (channel weights = spatially averaged gradients of the target score, weighted sum of the
activations, ReLU), upsampled to the image size with ``LayerAttribution.interpolate(...,
interpolate_mode="bilinear")`` (captum's default ``"nearest"`` gives blocky maps on small faces).

**Normalisation**: each map is divided by its own maximum, so 1 marks the most attended pixel of
that image and maps are comparable in *shape* across images, not in strength (the raw maxima are
kept in ``cam.last_max``, the coarse un-normalised maps in ``cam.last_raw``, the target scores
in ``cam.last_scores``). A map with no positive
evidence (all zeros after the ReLU) stays all zeros.

**ViTs** (and any layer emitting tokens ``(B, N, C)``): captum's Grad-CAM averages gradients over
dims ``2+``, which for tokens would be the channels. While a call runs, a forward hook on the
token layer routes the patch tokens through a private identity module as a ``(B, C, h, w)`` grid
(prefix tokens dropped for the map, ``h, w`` = image size / patch size) and puts them back, so
captum hooks the grid and the model computes exactly what it computed before. Channel-last
feature maps (timm models with ``output_fmt == "NHWC"``, e.g. Swin stages) are permuted the
same way.

**Hooks**: the routing hook and captum's own hooks exist only *during* a call and are removed in
``finally`` blocks, even when the target raises; ``close()`` / leaving the ``with`` block drops
everything that might remain and the references to the model. Safe in a long-lived notebook.

Advice: the default layer (the last stage) has stride 32 on ResNets: 2x2 cells at 64 px. For
finer maps on small faces use an earlier stage, e.g. ``GradCAM(method, layer="layer3")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from workbench.errors import ConfigError, WorkbenchError
from workbench.explain.targets import Target


class _Grid(nn.Identity):
    """The module captum hooks: receives the layer's activations as a (B, C, h, w) grid."""


class GradCAM:
    """Grad-CAM over a method that follows the output contract (``method(x) -> {"feats", "z"}``).

    Args:
        method: an SSL method (anything callable on ``[0, 1]`` images returning the output dict,
            with ``.backbone`` when ``layer`` is not given).
        layer: module to explain, its dotted name inside ``method.backbone.model`` (e.g.
            ``"layer3"``, ``"blocks.10.norm1"``) or inside ``method``; default
            ``method.backbone.cam_layer()`` (last stage; ViTs: ``blocks[-1].norm1``).
    """

    def __init__(self, method: Any, layer: nn.Module | str | None = None):
        self.method = method
        self.backbone = getattr(method, "backbone", None)
        self.layer = self._resolve_layer(layer)
        self.layer_name = self._name_of(self.layer)
        self._grid = _Grid()
        self._handles: list[Any] = []
        self._input_hw: tuple[int, int] = (0, 0)
        self.last_scores: torch.Tensor | None = None
        self.last_max: torch.Tensor | None = None
        self.last_raw: torch.Tensor | None = None
        self.closed = False

    # -- setup -------------------------------------------------------------------------------
    def _resolve_layer(self, layer: nn.Module | str | None) -> nn.Module:
        if isinstance(layer, nn.Module):
            return layer
        if layer is None:
            if self.backbone is None or not hasattr(self.backbone, "cam_layer"):
                raise ConfigError("GradCAM needs layer=... for a model without .backbone.cam_layer()")
            return self.backbone.cam_layer()
        if not str(layer).strip():
            raise ConfigError("the layer name is empty: give a module name such as 'layer3' (or leave it out for "
                              "the default stage)")
        roots = [getattr(self.backbone, "model", None), self.backbone, self.method]
        for root in roots:
            if isinstance(root, nn.Module):
                try:
                    return root.get_submodule(str(layer))
                except AttributeError:
                    continue
        raise ConfigError(f"no module '{layer}' in the backbone or the method; see "
                          "[n for n, _ in method.backbone.model.named_modules()]")

    def _name_of(self, layer: nn.Module) -> str:
        if isinstance(self.method, nn.Module):
            for name, mod in self.method.named_modules():
                if mod is layer:
                    return name
        return type(layer).__name__

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> GradCAM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this object may hold and drop the model references (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for hooks in (self._grid._forward_hooks, self._grid._forward_pre_hooks):
            hooks.clear()
        self.closed = True
        self.method = None
        self.backbone = None
        self.layer = None  # type: ignore[assignment]

    def __del__(self) -> None:  # last resort; the with-block is the supported way
        try:
            for h in self._handles:
                h.remove()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- routing hook ------------------------------------------------------------------------
    def _route(self, module: nn.Module, inputs: Any, out: Any) -> Any:
        if not isinstance(out, torch.Tensor):
            raise WorkbenchError(f"Grad-CAM layer '{self.layer_name}' returns {type(out).__name__}, not a "
                                 "tensor; choose another layer")
        if out.ndim == 3:  # tokens (B, N, C)
            return self._route_tokens(out)
        if out.ndim == 4 and self._channels_last():
            return self._grid(out.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if out.ndim == 4:
            return self._grid(out)
        raise WorkbenchError(f"Grad-CAM layer '{self.layer_name}' outputs shape {tuple(out.shape)}; "
                             "expected (B, C, h, w) maps or (B, N, C) tokens")

    def _channels_last(self) -> bool:
        model = getattr(self.backbone, "model", None)
        return str(getattr(model, "output_fmt", "NCHW")) == "NHWC"

    def _route_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        prefix = int(getattr(self.backbone, "num_prefix_tokens", 0) or 0)
        h, w = self._token_grid(n - prefix)
        grid = tokens[:, prefix:].transpose(1, 2).reshape(b, c, h, w)
        routed = self._grid(grid).reshape(b, c, h * w).transpose(1, 2)
        return torch.cat([tokens[:, :prefix], routed], dim=1)

    def _token_grid(self, n: int) -> tuple[int, int]:
        hh, ww = self._input_hw
        pe = getattr(getattr(self.backbone, "model", None), "patch_embed", None)
        ps = getattr(pe, "patch_size", None)
        if ps is not None:
            ph, pw = (ps, ps) if isinstance(ps, int) else (int(ps[0]), int(ps[1]))
            if (hh // ph) * (ww // pw) == n:
                return hh // ph, ww // pw
        side = int(round(n ** 0.5))
        if side * side == n:
            return side, side
        raise WorkbenchError(f"cannot reshape {n} patch tokens to a grid for a {hh}x{ww} image; "
                             "check num_prefix_tokens / patch size")

    @contextmanager
    def _hooked(self) -> Iterator[None]:
        handle = self.layer.register_forward_hook(self._route)
        self._handles.append(handle)
        try:
            yield
        finally:
            handle.remove()
            if handle in self._handles:
                self._handles.remove(handle)

    # -- compute -----------------------------------------------------------------------------
    def __call__(self, images01: torch.Tensor, target: Target, target_index: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Heatmaps for one batch.

        Args:
            images01: float (B, 3, H, W) in [0, 1] (moved to the model's device).
            target: ``target(outputs, index) -> (B,)`` score to explain (see :mod:`.targets`).
            target_index: (B,) rows of the target's per-image data for these images (default
                ``arange(B)``; :meth:`explain_batch` sets it per chunk).
        Returns:
            (B, H, W) float32 in [0, 1] on the model's device, each map divided by its maximum.
        """
        from captum.attr import LayerAttribution, LayerGradCam

        if self.closed:
            raise WorkbenchError("this GradCAM was closed; create a new one")
        if images01.ndim != 4 or images01.shape[1] != 3:
            raise WorkbenchError(f"images must be (B, 3, H, W) in [0, 1], got {tuple(images01.shape)}")
        model = self.method
        device = _device_of(model)
        x = images01.detach().to(device=device, dtype=torch.float32).requires_grad_(True)
        b, _, hh, ww = x.shape
        self._input_hw = (hh, ww)
        index = None if target_index is None else torch.as_tensor(target_index).long().reshape(-1)
        if index is not None and index.numel() != b:
            raise WorkbenchError(f"target_index has {index.numel()} entries for {b} images")

        def forward(inp: torch.Tensor) -> torch.Tensor:
            score = target(model(inp), index)
            if score.shape != (inp.shape[0],):
                raise WorkbenchError(f"the target must return one score per image ({inp.shape[0]},), "
                                     f"got {tuple(score.shape)}")
            self.last_scores = score.detach()
            return score

        was_training = bool(getattr(model, "training", False))
        if isinstance(model, nn.Module):
            model.eval()
        try:
            with torch.enable_grad(), self._hooked():
                attr = LayerGradCam(forward, self._grid).attribute(x, relu_attributions=True)
        finally:
            if isinstance(model, nn.Module):
                model.train(was_training)
        attr = attr.detach().float()
        self.last_raw = attr[:, 0].cpu()
        up = LayerAttribution.interpolate(attr, (hh, ww), interpolate_mode="bilinear")[:, 0].clamp_min(0)
        peak = up.flatten(1).amax(dim=1)
        self.last_max = peak.detach().cpu()
        return torch.where(peak[:, None, None] > 0, up / peak.clamp_min(1e-30)[:, None, None],
                           torch.zeros_like(up))

    def explain_batch(self, images01: torch.Tensor, target: Target, *, batch_size: int = 32,
                      index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmaps for many images, ``batch_size`` at a time (default 32; lower it on out-of-memory).

        Args:
            images01: (N, 3, H, W) in [0, 1] (any device; chunks are moved to the model's).
            target: the target; its per-image data is indexed by ``index`` (default ``arange(N)``).
        Returns:
            ``(heatmaps (N, H, W) float32 on the CPU, scores (N,) target values)``.
        """
        n = images01.shape[0]
        idx = torch.arange(n) if index is None else torch.as_tensor(index).long().reshape(-1)
        heat, scores = [], []
        for s in range(0, n, max(1, int(batch_size))):
            heat.append(self(images01[s:s + batch_size], target, idx[s:s + batch_size]).cpu())
            assert self.last_scores is not None
            scores.append(self.last_scores.float().cpu())
        if not heat:
            return torch.zeros(0, *images01.shape[2:]), torch.zeros(0)
        return torch.cat(heat), torch.cat(scores)


def _device_of(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def explain_batch(method: Any, images01: torch.Tensor, target: Target, *, layer: nn.Module | str | None = None,
                  batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """One-shot helper: ``with GradCAM(method, layer) as cam: return cam.explain_batch(...)``."""
    with GradCAM(method, layer) as cam:
        return cam.explain_batch(images01, target, batch_size=batch_size)
