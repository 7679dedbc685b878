"""Backbones (any timm model, no downloads) and MLP heads."""

from workbench.models.backbone import Backbone, load_backbone_weights
from workbench.models.heads import mlp

__all__ = ["Backbone", "load_backbone_weights", "mlp"]
