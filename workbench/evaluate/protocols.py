"""Evaluation protocols: label-fraction subsets, subject-disjoint / identity splits, and
:func:`evaluate_embeddings` (linear probe or weighted kNN on frozen embeddings).

Splits that matter for FER:

- **Expression** targets must be scored on a **subject-disjoint** split
  (:func:`subject_disjoint_split`): with shared subjects a probe can recognise the person and
  remember their labels. For kNN, ``exclude_same_identity=True`` additionally drops same-identity
  neighbours, so even a leaky split cannot be rescued by identity matching.
- **Identity** targets cannot use disjoint subjects (you cannot classify a person never seen), so the
  identity probe uses :func:`identity_probe_split`: each identity's images are split half/half
  (seeded); a high score on an expression embedding means identity leaks into it.

Typical use::

    tr, te = subject_disjoint_split(identity, seed=0, test_fraction=0.3)
    res = evaluate_embeddings(X[tr], expr[tr], X[te], expr[te], EvalConfig(protocol="knn"),
                              class_names=EXPRESSIONS, train_groups=identity[tr], test_groups=identity[te])
    res.save(RunFolder(run_dir).analysis("knn-expression"))  # workbench.runs.RunFolder
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from workbench.config import param
from workbench.config import to_dict as config_to_dict
from workbench.data.vocabulary import EXPRESSIONS
from workbench.errors import ConfigError, WorkbenchError
from workbench.evaluate import metrics as M
from workbench.evaluate.intervals import person_bootstrap
from workbench.io import json_safe
from workbench.results import Results

CLASSIFICATION_TARGETS = ("expression", "identity")
REGRESSION_TARGETS = ("valence", "arousal")


# ----------------------------------------------------------------------------- subsets and splits

def label_fraction_subset(labels: Any, fraction: float, seed: int = 0, stratify: bool = True) -> np.ndarray:
    """Sorted row indices of a seeded ``fraction`` of ``labels`` (semi-supervised probe protocol).

    ``stratify=True`` draws ``round(fraction * n_c)`` rows from every class (at least 1 per class),
    so rare classes such as contempt survive a 1 % subset. ``fraction=1`` returns every row.
    Common fractions: 0.01, 0.1, 1.0.
    """
    y = np.asarray(labels)
    n = y.shape[0]
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"label fraction must be in (0, 1], got {fraction}")
    if n == 0:
        raise WorkbenchError("cannot take a label-fraction subset of an empty label array")
    if fraction >= 1.0:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if not stratify:
        m = max(1, int(round(fraction * n)))
        return np.sort(rng.choice(n, size=m, replace=False))
    keys = y.astype(str) if y.dtype.kind in "OUS" else y
    picked = []
    for cls in np.unique(keys):
        rows = np.flatnonzero(keys == cls)
        m = max(1, int(round(fraction * rows.size)))
        picked.append(rng.choice(rows, size=m, replace=False))
    return np.sort(np.concatenate(picked))


def subject_disjoint_split(identity: Any, seed: int = 0, test_fraction: float = 0.3
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)`` with no identity on both sides; ``test_fraction`` of the identities
    (at least 1, default 0.3) go to test, chosen with ``seed``."""
    ids = np.asarray(identity).astype(str)
    uniq = np.unique(ids)
    if uniq.size < 2:
        raise WorkbenchError(f"a subject-disjoint split needs at least 2 identities, got {uniq.size}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    n_test = min(uniq.size - 1, max(1, int(round(test_fraction * uniq.size))))
    test_ids = rng.permutation(uniq)[:n_test]
    is_test = np.isin(ids, test_ids)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def identity_probe_split(identity: Any, seed: int = 0, test_fraction: float = 0.5
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)`` for identity probes: every identity's images are split (seeded)
    ``1 - test_fraction`` / ``test_fraction`` (default half/half, at least one image on each side).

    Identities with a single image stay in train (a class the probe may predict, never tested).
    Identities are deliberately *shared* between sides: the question is whether the embedding
    lets a linear model recognise the person from another image.
    """
    ids = np.asarray(identity).astype(str)
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for ident in np.unique(ids):
        rows = rng.permutation(np.flatnonzero(ids == ident))
        if rows.size < 2:
            train.append(rows)
            continue
        n_test = min(rows.size - 1, max(1, int(round(test_fraction * rows.size))))
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    if not test:
        raise WorkbenchError("identity probe: every identity has a single image, nothing to test on")
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ----------------------------------------------------------------------------- config and results

@dataclass
class EvalConfig:
    """How to score frozen embeddings (one protocol x one target)."""

    protocol: str = param("linear", "linear = standardised logistic/ridge probe; knn = weighted cosine kNN "
                          "(no training, fast, sensitive to local identity clusters).", choices=("linear", "knn"))
    target: str = param("expression", "What to predict. identity = leakage probe (per-identity split).",
                        choices=CLASSIFICATION_TARGETS + REGRESSION_TARGETS)
    label_fraction: float = param(1.0, "Fraction of training labels used (stratified, >= 1 per class); "
                                  "0.01 / 0.1 / 1.0 are the usual semi-supervised points.", min=1e-6, max=1.0)
    k: int = param(20, "kNN neighbours (DINO/solo-learn use 20; 10-50 typical).", min=1)
    temperature: float = param(0.07, "kNN vote weight exp(sim/T); lower trusts the nearest more.", min=1e-4)
    exclude_same_identity: bool = param(True, "kNN on expression/valence/arousal: ignore neighbours of the "
                                        "query's own identity (needs identity codes). Keep on for FER.")
    seed: int = param(0, "Seed for the label-fraction subset and the probe.")
    feature: str = param("feats", "Which model output was embedded: feats (backbone, the usual choice) or z "
                         "(projection head, usually worse for probes).", choices=("feats", "z"))
    C: float = param(1.0, "Linear probe inverse L2 strength; lower (0.1) for few labels.", min=1e-8)
    ridge_alpha: float = param(1.0, "Ridge L2 strength for valence/arousal.", min=0.0)
    max_iter: int = param(1000, "L-BFGS iterations of the linear probe.", min=1)
    probe_backend: str = param("auto", "Linear probe solver: auto = torch L-BFGS when the features are on a "
                               "CUDA device (scikit-learn's BLAS threads fight torch's on GPU hosts), else "
                               "scikit-learn (CPU results unchanged); torch = torch on CUDA when available. "
                               "Same objective either way.",
                               choices=("auto", "sklearn", "torch"))
    min_test_people: int = param(12, "Expression/valence/arousal: when the split's test set has fewer people "
                                 "than this, score person-wise k-fold cross-validation over all labelled "
                                 "people instead (pooled out-of-fold predictions), so small sets such as "
                                 "JAFFE (10 people) still get an interval over every person. 0 = always "
                                 "use the split.", min=0)
    cv_folds: int = param(5, "Folds of that person-wise cross-validation (all images of a person in one "
                          "fold).", min=2)


@dataclass
class EvalResult(Results):
    """Scores of one :func:`evaluate_embeddings` call. Classification fields are ``None`` for
    regression targets and vice versa. ``chance`` is the majority-class rate of the test set.
    Persisted as a results folder (:class:`workbench.results.Results`, kind ``eval``)."""

    kind = "eval"
    version = 1

    protocol: str
    target: str
    label_fraction: float
    n_train: int
    n_test: int
    accuracy: float | None = None
    macro_f1: float | None = None
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    confusion: list[list[int]] | None = None
    class_names: list[str] = field(default_factory=list)
    chance: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_test_people: int | None = None
    split_rule: str = ""
    ccc: float | None = None
    rmse: float | None = None
    pcc: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    predictions: np.ndarray | None = None
    #: rows of the evaluated table (``meta``) that ``predictions`` belong to (set by evaluate_embedding_set)
    test_rows: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (without the per-row predictions)."""
        d = asdict(self)
        d.pop("predictions")
        d.pop("test_rows")
        return json_safe(d)

    def summary(self) -> str:
        """One line, e.g. ``knn expression (10% labels): acc 0.612  macro-F1 0.544  (chance 0.25)``."""
        head = f"{self.protocol} {self.target} ({self.label_fraction:.0%} labels, n={self.n_train}/{self.n_test}):"
        if self.target in REGRESSION_TARGETS:
            return f"{head} CCC {self.ccc:.3f}  RMSE {self.rmse:.3f}"
        ci = (f" [{self.ci_low:.3f}, {self.ci_high:.3f}] (95% CI, person bootstrap, {self.n_test_people} test "
              f"people)" if self.ci_low is not None else "")
        rule = f"; {self.split_rule}" if self.split_rule else ""
        few = "; few test people: read the interval" if (self.n_test_people or 99) < 12 else ""
        return (f"{head} acc {self.accuracy:.3f}{ci}  macro-F1 {self.macro_f1:.3f}  (chance {self.chance:.3f}"
                f"{rule}{few})")

    def _fields(self) -> dict[str, Any]:
        return self.to_dict()

    def _arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k in ("predictions", "test_rows") if (v := getattr(self, k)) is not None}

    @classmethod
    def _from_saved(cls, fields_: dict[str, Any], arrays: dict[str, np.ndarray]) -> EvalResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in fields_.items() if k in names}, **arrays)


# ----------------------------------------------------------------------------- evaluation

def _encode_labels(train_y: Any, test_y: Any, class_names: Sequence[str] | None, target: str
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    tr, te = np.asarray(train_y), np.asarray(test_y)
    numeric = tr.dtype.kind in "iub" and te.dtype.kind in "iub"
    if class_names is None:
        if target == "expression" and (numeric or set(map(str, np.concatenate([tr, te]))) <= set(EXPRESSIONS)):
            names = list(EXPRESSIONS)
        elif numeric:
            names = [str(i) for i in range(int(max(tr.max(), te.max())) + 1)]
        else:
            names = sorted(set(map(str, np.concatenate([tr, te]))))
    else:
        names = [str(c) for c in class_names]
    if numeric:
        for a in (tr, te):
            if a.size and (a.min() < 0 or a.max() >= len(names)):
                raise WorkbenchError(f"{target} labels must be indices in [0, {len(names) - 1}]")
        return tr.astype(np.int64), te.astype(np.int64), names
    index = {n: i for i, n in enumerate(names)}
    out = []
    for a in (tr, te):
        s = a.astype(str)
        unknown = sorted(set(s) - set(index))
        if unknown:
            raise WorkbenchError(f"{target} label '{unknown[0]}' is not in class_names ({len(unknown)} unknown)")
        out.append(np.array([index[v] for v in s], dtype=np.int64))
    return out[0], out[1], names


def evaluate_embeddings(
    train_X: Any,
    train_y: Any,
    test_X: Any,
    test_y: Any,
    cfg: EvalConfig | None = None,
    *,
    class_names: Sequence[str] | None = None,
    train_groups: Any = None,
    test_groups: Any = None,
    split_rule: str = "",
) -> EvalResult:
    """Score frozen embeddings with one protocol on one target.

    Args:
        train_X, test_X: ``(N, D)`` features (numpy or torch; ``cfg.feature`` records which output).
        train_y, test_y: class indices or names (expression, identity) or floats (valence, arousal).
        class_names: class order (default: EXPRESSIONS for expression, sorted codes for identity).
        train_groups, test_groups: identity codes, required for kNN with ``exclude_same_identity``; the
            accuracy's 95 % interval resamples these test people (the identity target resamples its own
            labels; without either, every image counts as its own person).
        split_rule: how train and test were chosen, recorded with the result.

    The training labels are first reduced to ``cfg.label_fraction`` (stratified for classes).
    """
    from workbench.evaluate.knn import knn_predict, knn_regress
    from workbench.evaluate.probe import linear_probe, ridge_probe

    cfg = cfg or EvalConfig()
    if cfg.protocol not in ("linear", "knn"):
        raise ConfigError(f"'protocol' must be one of linear, knn, got {cfg.protocol!r}")
    if cfg.target not in CLASSIFICATION_TARGETS + REGRESSION_TARGETS:
        raise ConfigError(f"'target' must be one of {', '.join(CLASSIFICATION_TARGETS + REGRESSION_TARGETS)}, "
                          f"got {cfg.target!r}")
    trX = np.asarray(train_X.detach().cpu() if hasattr(train_X, "detach") else train_X, dtype=np.float32)
    teX = np.asarray(test_X.detach().cpu() if hasattr(test_X, "detach") else test_X, dtype=np.float32)
    if not (np.isfinite(trX).all() and np.isfinite(teX).all()):
        raise WorkbenchError("features contain NaN or inf (a diverged or damaged checkpoint?); nothing to score")
    if len(train_y) != len(trX) or len(test_y) != len(teX):
        raise WorkbenchError("labels must have one entry per feature row (train and test)")
    regression = cfg.target in REGRESSION_TARGETS
    exclude = cfg.protocol == "knn" and cfg.exclude_same_identity and cfg.target != "identity"
    if exclude and (train_groups is None or test_groups is None):
        raise ConfigError("kNN with exclude_same_identity needs train_groups/test_groups (identity codes); "
                          "pass them or set exclude_same_identity=False")
    tg = None if train_groups is None else np.asarray(train_groups)

    if regression:
        ytr = np.asarray(train_y, dtype=np.float64)
        yte = np.asarray(test_y, dtype=np.float64)
        names: list[str] = []
    else:
        ytr, yte, names = _encode_labels(train_y, test_y, class_names, cfg.target)
        if cfg.target == "identity":
            missing = set(yte.tolist()) - set(ytr.tolist())
            if missing:
                raise WorkbenchError(f"identity probe: {len(missing)} test identities never occur in training; "
                                     "split with identity_probe_split(), not a subject-disjoint split")

    sub = label_fraction_subset(ytr, cfg.label_fraction, cfg.seed, stratify=not regression)
    trX, ytr = trX[sub], ytr[sub]
    tg = None if tg is None else tg[sub]

    if cfg.protocol == "linear":
        pred = (ridge_probe(trX, ytr, teX, alpha=cfg.ridge_alpha) if regression
                else linear_probe(trX, ytr, teX, C=cfg.C, max_iter=cfg.max_iter, seed=cfg.seed,
                                  backend=cfg.probe_backend,
                                  device=train_X.device if hasattr(train_X, "detach") else None))
    elif regression:
        pred = knn_regress(trX, ytr, teX, k=cfg.k, temperature=cfg.temperature, train_groups=tg,
                           query_groups=test_groups, exclude_same_group=exclude)
    else:
        pred = knn_predict(trX, ytr, teX, k=cfg.k, temperature=cfg.temperature, n_classes=len(names),
                           train_groups=tg, query_groups=test_groups, exclude_same_group=exclude)

    return result_from_predictions(cfg, names, yte, pred, n_train=len(trX), test_groups=test_groups,
                                   split_rule=split_rule)


def result_from_predictions(cfg: EvalConfig, names: list[str], yte: np.ndarray, pred: Any, *, n_train: int,
                            test_groups: Any = None, split_rule: str = "") -> EvalResult:
    """The :class:`EvalResult` of predictions ``pred`` for encoded test labels ``yte`` (with the person
    bootstrap interval over ``test_groups``)."""
    regression = cfg.target in REGRESSION_TARGETS
    res = EvalResult(protocol=cfg.protocol, target=cfg.target, label_fraction=cfg.label_fraction,
                     n_train=int(n_train), n_test=int(len(yte)), class_names=names,
                     config=config_to_dict(cfg), predictions=np.asarray(pred))
    if regression:
        s = M.regression_summary(yte, pred)
        res.ccc, res.rmse, res.pcc = s["ccc"], s["rmse"], s["pcc"]
    else:
        s = M.classification_summary(yte, pred, names)
        res.accuracy, res.macro_f1 = s["accuracy"], s["macro_f1"]
        res.per_class, res.confusion = s["per_class"], s["confusion"]
        res.chance = float(np.bincount(yte).max() / yte.size)
        people = (test_groups if test_groups is not None
                  else (yte if cfg.target == "identity" else np.arange(yte.size)))
        score = person_bootstrap(np.asarray(pred) == yte, people, seed=cfg.seed)
        res.ci_low, res.ci_high, res.n_test_people = score.low, score.high, score.n_people
        res.split_rule = split_rule
    return res
