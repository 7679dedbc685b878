"""ipywidgets panels for the guided notebooks: thin views over the tested library.

Each panel is a small class with a ``.widget`` (display the panel itself in a cell) and methods
that do what its buttons do, so it can be driven from code and tested without a browser:

=====================  ==================================================================
:class:`ConfigForm`    a form generated from any config dataclass (``value()`` validates)
:class:`TrainPanel`    method/data/model/training forms, Start/Stop, live curves
:class:`ManifestBrowser`  faces with landmarks, labels and filters
:class:`ViewPreview`   every view family side by side; clip and multi-view sampler items
:class:`RunComparison` probe / kNN table and bars of several runs
:class:`EmbeddingExplorer`  UMAP scatter: colour/facet, hover thumbnails, lasso gallery, epochs
:class:`SeparationPanel`  identity-vs-expression report across runs and over training
:class:`AttentionPanel`  Grad-CAM overlays with landmarks and region bars, runs side by side
:class:`FigurePanel`   export the paper figure set
=====================  ==================================================================

Set-up helpers for notebooks: :func:`ensure_synth`, :func:`ensure_runs`, :func:`find_runs`.
"""

from workbench.analysis.study import map_over_training
from workbench.runs import ensure_runs, ensure_synth, find_runs, recipe_name, run_config
from workbench.widgets._common import Gallery, LiveFigure, Panel, has_figure_widget
from workbench.widgets.data import ManifestBrowser, ViewPreview
from workbench.widgets.explorer import EmbeddingExplorer
from workbench.widgets.form import ConfigForm
from workbench.widgets.panels import AttentionPanel, FigurePanel, RunComparison, SeparationPanel
from workbench.widgets.train import TrainPanel

__all__ = [
    "AttentionPanel", "ConfigForm", "EmbeddingExplorer", "FigurePanel", "Gallery", "LiveFigure", "ManifestBrowser",
    "Panel", "RunComparison", "SeparationPanel", "TrainPanel", "ViewPreview", "ensure_runs", "ensure_synth",
    "find_runs", "has_figure_widget", "map_over_training", "recipe_name", "run_config",
]
