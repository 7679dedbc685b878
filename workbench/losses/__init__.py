"""Pure loss functions (each tested against a hand-written reference)."""

from workbench.losses.contrastive import byol_loss, multi_positive_nt_xent, nt_xent, pair_positive_index

__all__ = ["byol_loss", "multi_positive_nt_xent", "nt_xent", "pair_positive_index"]
