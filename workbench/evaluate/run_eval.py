"""Score a frozen-feature protocol on embeddings of a manifest's rows (a run's: ``workbench.runs.evaluate_run``).

Split rules:
- ``expression`` / ``valence`` / ``arousal`` targets: subject-disjoint — train on the manifest's
  ``train`` (+ ``val``) split, test on ``test``; without a split column a seeded subject-disjoint
  split is made from ``identity``. When that test set has fewer than ``min_test_people`` people (JAFFE's
  split tests 1 of 10), every labelled person is scored by person-wise k-fold cross-validation instead
  (``cv_folds``, pooled out-of-fold predictions, one person-bootstrap interval); the rule is recorded.
- ``identity`` target ("identity leakage"): identities cannot be unseen, so each identity's images
  are split in half (seeded) — see :func:`workbench.evaluate.protocols.identity_probe_split`.
"""

from __future__ import annotations

import numpy as np

from workbench.data.splits import assign_splits
from workbench.data.vocabulary import EXPRESSIONS
from workbench.errors import MissingMetadataError
from workbench.evaluate import protocols
from workbench.evaluate.intervals import person_bootstrap, person_folds
from workbench.evaluate.protocols import _encode_labels, result_from_predictions


def evaluate_embedding_set(X: np.ndarray, meta, cfg, *, evaluate_embeddings=None, identity_probe_split=None):
    """The protocol on an array of embeddings and the matching manifest rows (``meta``)."""
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
            # the data set's own classes, in the canonical order (7 for JAFFE/CK+/KDEF: no empty contempt row)
            present = set(meta["expression"].dropna().astype(str))
            classes = [c for c in EXPRESSIONS if c in present]
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
        return score_subject_disjoint(X, y, ids, tr, te, cfg, classes=classes, rule=rule,
                                      labelled=np.flatnonzero(valid), evaluate_embeddings=evaluate_embeddings)
    res = evaluate_embeddings(X[tr], y[tr], X[te], y[te], cfg, class_names=classes,
                              train_groups=groups_tr, test_groups=groups_te, split_rule=rule)
    res.test_rows = np.asarray(te)
    return res


def score_subject_disjoint(X, y, ids, tr, te, cfg, *, classes, rule: str, labelled=None, evaluate_embeddings=None):
    """Score a subject-disjoint expression/valence/arousal probe: train rows ``tr``, test rows ``te``; or,
    when the test rows hold fewer than ``cfg.min_test_people`` people, person-wise k-fold CV over
    ``labelled`` (default: ``tr`` and ``te``). ``workbench evaluate`` and ``separation`` both score here."""
    evaluate_embeddings = evaluate_embeddings or protocols.evaluate_embeddings
    tr, te = np.asarray(tr), np.asarray(te)
    if ids is not None:
        ids = np.asarray(ids).astype(str)
        n_people = len(set(ids[te].tolist()))
        rows = np.sort(np.concatenate([tr, te])) if labelled is None else np.asarray(labelled)
        if n_people < cfg.min_test_people and len(set(ids[rows].tolist())) >= 3:
            res = _person_cv(X, y, ids, rows, cfg, classes, evaluate_embeddings, n_people)
            res.test_rows = rows
            return res
    res = evaluate_embeddings(X[tr], y[tr], X[te], y[te], cfg, class_names=classes,
                              train_groups=None if ids is None else ids[tr],
                              test_groups=None if ids is None else ids[te], split_rule=rule)
    res.test_rows = te
    return res


def _person_cv(X, y, ids, rows, cfg, classes, evaluate_embeddings, split_people: int):
    """Person-wise k-fold CV over ``rows``: every labelled person is tested once, by a probe that never
    saw them; the pooled out-of-fold predictions get one person-bootstrap interval."""
    fold = person_folds(ids[rows], cfg.cv_folds, seed=cfg.seed)
    k = int(fold.max()) + 1
    preds = np.empty(rows.size, dtype=np.int64 if classes else np.float64)
    n_train = 0
    names = classes
    for f in range(k):
        tr, te = rows[fold != f], rows[fold == f]
        r = evaluate_embeddings(X[tr], y[tr], X[te], y[te], cfg, class_names=classes or None,
                                train_groups=ids[tr], test_groups=ids[te])
        preds[fold == f] = np.asarray(r.predictions)
        n_train += len(tr)
        names = r.class_names
    people = len(set(ids[rows].tolist()))
    rule = (f"person-wise {k}-fold cross-validation over all {people} labelled people (the split's test set "
            f"had {split_people} < {cfg.min_test_people} people); pooled out-of-fold predictions")
    if classes:
        _, yte, names = _encode_labels(y[rows], y[rows], classes, cfg.target)
    else:
        yte = y[rows]
    return result_from_predictions(cfg, names, yte, preds, n_train=round(n_train / k), test_groups=ids[rows],
                                   split_rule=rule)


def accuracy_by(result, meta, column: str) -> dict[str, dict[str, float]]:
    """Accuracy of a classification ``result`` per value of ``meta[column]`` over its test rows (e.g. per
    camera view): ``{value: {"accuracy", "ci_low", "ci_high", "n", "people"}}`` (95 % person bootstrap),
    values in natural order."""
    if column not in meta.columns:
        raise MissingMetadataError(f"--by {column}: the manifest has no '{column}' column")
    if result.test_rows is None or result.accuracy is None:
        return {}
    rows = np.asarray(result.test_rows)
    names = list(result.class_names)
    truth_col = meta[result.target].astype(str).to_numpy()[rows]
    truth = np.array([names.index(t) if t in names else -1 for t in truth_col])
    ok = np.asarray(result.predictions) == truth
    groups = meta[column].astype(str).to_numpy()[rows]
    people = meta["identity"].astype(str).to_numpy()[rows] if "identity" in meta.columns else None

    def order(v: str):
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    out = {}
    for g in sorted(set(groups.tolist()), key=order):
        m = groups == g
        score = person_bootstrap(ok[m], people[m] if people is not None else np.arange(int(m.sum())),
                                 seed=int((result.config or {}).get("seed", 0) or 0))
        out[g] = {"accuracy": float(ok[m].mean()), "ci_low": score.low, "ci_high": score.high, "n": int(m.sum()),
                  "people": int(len(set(people[m].tolist()))) if people is not None else None}
    return out
