"""Evaluate a run (any checkpoint) on a manifest with a frozen-feature protocol.

Split rules:
- ``expression`` / ``valence`` / ``arousal`` targets: subject-disjoint — train on the manifest's
  ``train`` (+ ``val``) split, test on ``test``; without a split column a seeded subject-disjoint
  split is made from ``identity``.
- ``identity`` target ("identity leakage"): identities cannot be unseen, so each identity's images
  are split in half (seeded) — see :func:`workbench.evaluate.protocols.identity_probe_split`.
"""

from __future__ import annotations

import numpy as np

from workbench.errors import MissingMetadataError


def evaluate_run(run, manifest, cfg=None, *, embeddings=None):
    """Run one protocol (:class:`EvalConfig`) on a run's embeddings of ``manifest``; returns EvalResult."""
    from workbench.data.manifest import Manifest
    from workbench.evaluate.embeddings import extract_embeddings
    from workbench.evaluate.protocols import EvalConfig, evaluate_embeddings, identity_probe_split

    cfg = cfg or EvalConfig()
    if embeddings is None:
        if not isinstance(manifest, Manifest):
            manifest = Manifest.load(manifest)
        embeddings = extract_embeddings(run, manifest)
    return evaluate_embedding_set(embeddings.get(cfg.feature), embeddings.meta, cfg,
                                  evaluate_embeddings=evaluate_embeddings,
                                  identity_probe_split=identity_probe_split)


def evaluate_embedding_set(X: np.ndarray, meta, cfg, *, evaluate_embeddings=None, identity_probe_split=None):
    """The protocol on an array of embeddings and the matching manifest rows (``meta``)."""
    from workbench.data.splits import assign_splits
    from workbench.data.vocabulary import EXPRESSIONS
    from workbench.evaluate import protocols

    evaluate_embeddings = evaluate_embeddings or protocols.evaluate_embeddings
    identity_probe_split = identity_probe_split or protocols.identity_probe_split
    target = cfg.target
    if target not in meta.columns or meta[target].isna().all():
        raise MissingMetadataError(f"evaluating '{target}' needs a '{target}' column in the manifest")
    ids = meta["identity"].astype(str).to_numpy() if "identity" in meta.columns else None
    if target == "identity":
        y_names = meta["identity"].astype(str)
        classes = sorted(y_names.unique())
        y = y_names.map({c: i for i, c in enumerate(classes)}).to_numpy()
        tr, te = identity_probe_split(y, seed=cfg.seed)
        groups_tr = groups_te = None
        rule = "identity probe: each person's images split half/half (seeded)"
    else:
        if target == "expression":
            classes = list(EXPRESSIONS)
            y = meta["expression"].map({c: i for i, c in enumerate(classes)}).fillna(-1).to_numpy().astype(int)
        else:
            classes = []
            y = meta[target].astype(float).to_numpy()
        has_split = "split" in meta.columns and meta["split"].notna().any()
        split = assign_splits(meta, seed=cfg.seed).to_numpy()
        valid = (y >= 0) if target == "expression" else np.isfinite(y)
        tr = np.flatnonzero(np.isin(split, ["train", "val"]) & valid)
        te = np.flatnonzero((split == "test") & valid)
        if te.size == 0 or tr.size == 0:
            raise MissingMetadataError("evaluation needs both training (train/val) and test rows with labels")
        groups_tr = ids[tr] if ids is not None else None
        groups_te = ids[te] if ids is not None else None
        n_people = len(set(groups_te.tolist())) if groups_te is not None else 0
        rule = (f"{'manifest split' if has_split else f'seeded subject-disjoint split (seed {cfg.seed})'}: "
                f"train+val -> test, {n_people} test people")
    return evaluate_embeddings(X[tr], y[tr], X[te], y[te], cfg, class_names=classes,
                               train_groups=groups_tr, test_groups=groups_te, split_rule=rule)
