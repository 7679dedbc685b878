"""Identity-vs-expression analysis on embeddings: separation report, retrieval, variance
decomposition and 2-D maps. Each analysis computes once, returns a results object that saves
(JSON + npz), loads, ``.plot()``s (plotly) and ``.export()``s paper figures without recomputing."""

from workbench.analysis.retrieval import (
    average_precision_at_r,
    precision_at_k,
    r_precision,
    retrieval_scores,
)
from workbench.analysis.separation import SeparationReport, SeparationTrack, separation_report
from workbench.analysis.umap import (
    EmbeddingMap,
    aligned_embedding_map,
    compute_aligned_maps,
    compute_map,
    embedding_map,
)
from workbench.analysis.variance import additive_r2, between_group_share, two_factor_decomposition

__all__ = [
    "EmbeddingMap", "SeparationReport", "SeparationTrack", "additive_r2", "aligned_embedding_map",
    "average_precision_at_r", "between_group_share", "compute_aligned_maps", "compute_map", "embedding_map",
    "precision_at_k", "r_precision", "retrieval_scores", "separation_report", "two_factor_decomposition",
]
