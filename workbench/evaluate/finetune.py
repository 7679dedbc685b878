"""Supervised fine-tuning of a pretrained encoder (CL-MEx stage 2), scored overall and per view.

``finetune(run, manifest)`` copies the run's backbone (or builds the same architecture from random
weights with ``from_scratch=True``, the comparison CL-MEx makes), adds a linear head over the pooled
features and trains BOTH with cross-entropy on ``expression``:

- split: subject-disjoint (:func:`workbench.data.splits.assign_splits`: the manifest's ``split``
  column when present, else identities shuffled with ``seed``); training uses ``train`` + ``val``
  (a seeded, class-stratified ``label_fraction`` of them), scoring uses ``test``; the last epoch is
  scored (no model selection on the test set);
- optimiser: AdamW (``lr``, ``weight_decay``), cosine decay per step, batch ``batch_size``, light
  augmentation (crop 0.8-1, flip, mild colour jitter) unless ``augment=False``;
- result: accuracy and macro-F1 overall, per class and **per view** (column ``view``, e.g. the 5
  KDEF/DDCF angles), persisted by :func:`workbench.runs.finetune_run` in the run folder, keyed by every setting.

The recipe (head, optimiser, epochs, split protocol) of the CL-MEx paper is UNVERIFIED; this is the
library's protocol, applied identically to pretrained and from-scratch encoders. Advice: lr 1e-4 to
1e-3 (lower for large pretrained backbones), 10-30 epochs on KDEF-sized sets, several seeds.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.device import select_device
from workbench.errors import ConfigError, MissingMetadataError
from workbench.evaluate.intervals import person_bootstrap, person_folds
from workbench.io import json_safe
from workbench.results import Results

#: below this many test people the split gives no usable interval: person-wise CV (as EvalConfig.min_test_people)
MIN_TEST_PEOPLE = 12
#: folds of that cross-validation
CV_FOLDS = 5


def finetune_view():
    """Light augmentation used while fine-tuning (crop 0.8-1, flip, jitter p 0.5, no blur)."""
    from workbench.views.global_aug import GlobalViewConfig

    return GlobalViewConfig(crop_scale=(0.8, 1.0), hflip_p=0.5, jitter_p=0.5, brightness=0.2, contrast=0.2,
                            saturation=0.1, hue=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


class Classifier(nn.Module):
    """Backbone + linear head: ``[0, 1]`` images → class logits."""

    def __init__(self, backbone: nn.Module, dim: int, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(dim, n_classes)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images01))


@dataclass
class FinetuneResult(Results):
    """Scores of one fine-tuning run (overall, per class, per view). ``path`` is the results folder it
    was saved in (kind ``finetune``)."""

    kind = "finetune"
    version = 1

    run: str
    checkpoint: str
    manifest: str
    from_scratch: bool
    label_fraction: float
    epochs: int
    lr: float
    seed: int
    n_train: int
    n_test: int
    accuracy: float
    macro_f1: float
    chance: float
    ci_low: float | None = None
    ci_high: float | None = None
    n_test_people: int | None = None
    per_view: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    split_rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (with ``kind``)."""
        return {"kind": self.kind, **json_safe(asdict(self))}

    def summary(self) -> str:
        """One line, e.g. ``finetune (pretrained, 10% labels): acc 0.712  macro-F1 0.70  | -60: 0.55 ...``."""
        init = "scratch" if self.from_scratch else "pretrained"
        views = "  ".join(f"{v}: {d['accuracy']:.3f}" for v, d in self.per_view.items())
        tail = f"  | per view acc {views}" if views else ""
        ci = (f" [{self.ci_low:.3f}, {self.ci_high:.3f}] (95% CI, person bootstrap, {self.n_test_people} test "
              f"people)" if self.ci_low is not None else "")
        rule = f"; {self.split_rule}" if self.split_rule else ""
        return (f"finetune ({init}, {self.label_fraction:.0%} labels, n={self.n_train}/{self.n_test}): "
                f"acc {self.accuracy:.3f}{ci}  macro-F1 {self.macro_f1:.3f}  (chance {self.chance:.3f}{rule}){tail}")

    def save(self, folder: str | Path) -> Path:
        """Write the results folder (and remember it in ``path``)."""
        self.path = str(Path(folder))
        return super().save(folder)

    def _fields(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def _from_saved(cls, fields_: dict[str, Any], arrays: dict[str, np.ndarray]) -> FinetuneResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in fields_.items() if k in names})


def _view_key(v: str) -> tuple[int, float, str]:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _per_view(views: np.ndarray, y: np.ndarray, pred: np.ndarray, people: np.ndarray, seed: int = 0
              ) -> dict[str, dict[str, Any]]:
    """Accuracy, macro-F1 and a 95 % person-bootstrap interval per view."""
    from workbench.evaluate import metrics as M

    out: dict[str, dict[str, Any]] = {}
    for v in sorted({str(x) for x in views}, key=_view_key):
        rows = np.flatnonzero(views == v)
        score = person_bootstrap(y[rows] == pred[rows], people[rows], seed=seed)
        out[v] = {"accuracy": M.accuracy(y[rows], pred[rows]), "ci_low": score.low, "ci_high": score.high,
                  "macro_f1": M.macro_f1(y[rows], pred[rows]), "n": int(rows.size),
                  "people": int(score.n_people)}
    return out


def build_classifier(run: Any, n_classes: int, *, from_scratch: bool = False, seed: int = 0) -> Classifier:
    """Backbone + fresh linear head (seeded): a copy of the run's backbone, or with ``from_scratch`` the
    same timm architecture (and stem) at the run's image size with random weights (``model.weights`` is
    ignored)."""
    from workbench.models import Backbone

    torch.manual_seed(seed)
    if from_scratch:
        backbone = Backbone(run.config.model.backbone, image_size=run.image_size,
                            small_stem=bool(getattr(run.config.model, "small_stem", False)))
    else:
        backbone = copy.deepcopy(run.method.backbone)
    model = Classifier(backbone, backbone.dim, n_classes)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _train_and_predict(loaded: Any, data: Any, y: np.ndarray, train: np.ndarray, test: np.ndarray, *,
                       from_scratch: bool, seed: int, dev: torch.device, lr: float, weight_decay: float,
                       batch_size: int, epochs: int, augment: bool, progress: bool) -> tuple[np.ndarray, list[float]]:
    """Fine-tune a fresh classifier on rows ``train``; predicted class indices of rows ``test`` and the
    per-epoch training loss."""
    from tqdm.auto import tqdm

    from workbench.data.vocabulary import EXPRESSIONS
    from workbench.views.global_aug import global_augment

    model = build_classifier(loaded, len(EXPRESSIONS), from_scratch=from_scratch, seed=seed).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(train.size / batch_size))
    total = steps_per_epoch * int(epochs)
    view = finetune_view()
    gen = torch.Generator(device=dev)
    y_t = torch.from_numpy(y)
    losses: list[float] = []
    step = 0
    bar = tqdm(range(int(epochs)), desc=f"fine-tuning ({'scratch' if from_scratch else loaded.checkpoint.stem})",
               unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = train[np.random.default_rng((seed, epoch)).permutation(train.size)]
        run_loss, n_seen = 0.0, 0
        for s in range(0, order.size, batch_size):
            rows = order[s:s + batch_size]
            if rows.size < 2:  # BatchNorm cannot train on one image
                continue
            x, _ = data.batch(rows, dev)
            if augment:
                gen.manual_seed(int(seed) * 1_000_003 + step)
                x = global_augment(x, view, gen).images
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
            loss = F.cross_entropy(model(x), y_t[rows].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run_loss += float(loss.detach()) * rows.size
            n_seen += rows.size
        losses.append(run_loss / max(n_seen, 1))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()

    model.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, test.size, 256):
            x, _ = data.batch(test[s:s + 256], dev)
            preds.append(model(x).argmax(dim=1).cpu().numpy())
    return np.concatenate(preds).astype(np.int64), losses


def finetune(loaded: Any, manifest: Any, *, epochs: int = 10, lr: float = 1e-3, label_fraction: float = 1.0,
             seed: int = 0, device: str | torch.device = "auto", from_scratch: bool = False, batch_size: int = 32,
             weight_decay: float = 1e-4, augment: bool = True, progress: bool = False,
             min_test_people: int = MIN_TEST_PEOPLE) -> FinetuneResult:
    """Fine-tune encoder + linear head on ``expression``; score overall and per ``view`` on the test split.

    Args:
        loaded: a loaded run (:class:`workbench.runs.LoadedRun`: ``method``, ``config``, ``path``,
            ``checkpoint``); ``workbench.runs.finetune_run`` loads a run folder and saves the result.
        manifest: Manifest or CSV path with ``expression`` (and ``identity`` or ``split`` for a
            subject-disjoint split; ``view`` for per-view scores).
        epochs: passes over the (label-fraction) training rows (default 10).
        lr: AdamW peak learning rate, cosine to 0 (default 1e-3; 1e-4 for big pretrained backbones).
        label_fraction: stratified fraction of the training labels (e.g. 0.1; at least 1 per class).
        seed: split (when there is no split column), label subset, head init, batch order, augmentation.
        device: 'auto' (CUDA > MPS > CPU), 'cpu', 'cuda'...
        from_scratch: same architecture with random weights (the paper's comparison), not the run's.
        batch_size: images per step (default 32).
        weight_decay: AdamW weight decay (default 1e-4).
        augment: light augmentation while training (default on).
        min_test_people: when the split's test set has fewer people, every labelled person is scored by
            person-wise 5-fold cross-validation instead (5 fine-tunes; pooled predictions, one interval),
            as the frozen-feature probes do; 0 = always the split.
    """
    from workbench.config import to_dict
    from workbench.data.cache import load_face_data
    from workbench.data.manifest import Manifest
    from workbench.data.splits import assign_splits
    from workbench.data.vocabulary import EXPRESSIONS
    from workbench.evaluate import metrics as M
    from workbench.evaluate.protocols import label_fraction_subset

    if int(epochs) < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if int(batch_size) < 2:
        raise ConfigError(f"batch_size must be >= 2 (BatchNorm), got {batch_size}")
    if not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    dev = select_device(device) if isinstance(device, str) else torch.device(device)
    size = loaded.image_size
    data = load_face_data(manifest, size, progress=progress)
    data.manifest.require("expression", purpose="fine-tuning on expression")
    y = data.codes("expression")[0]
    split = assign_splits(data.manifest.frame, seed=seed).to_numpy()
    train = np.flatnonzero(np.isin(split, ["train", "val"]) & (y >= 0))
    test = np.flatnonzero((split == "test") & (y >= 0))
    if train.size == 0 or test.size == 0:
        raise MissingMetadataError("fine-tuning needs labelled rows in both the training (train/val) and the "
                                   "test split; give the manifest a split or identity column")
    people_all = (data.manifest.frame["identity"].astype(str).to_numpy() if data.has("identity")
                  else np.arange(len(y)).astype(str))
    n_test_people = len(set(people_all[test].tolist()))
    labelled = np.flatnonzero(y >= 0)
    train_kw = dict(from_scratch=from_scratch, seed=seed, dev=dev, lr=lr, weight_decay=weight_decay,
                    batch_size=batch_size, epochs=epochs, augment=augment, progress=progress)
    if data.has("identity") and n_test_people < min_test_people and len(set(people_all[labelled].tolist())) >= 3:
        # too few test people for an interval: person-wise k-fold CV over every labelled person instead
        fold = person_folds(people_all[labelled], CV_FOLDS, seed=seed)
        k = int(fold.max()) + 1
        pred_all = np.empty(labelled.size, dtype=np.int64)
        fold_losses, n_train_total = [], 0
        for f in range(k):
            tr = labelled[fold != f]
            tr = tr[label_fraction_subset(y[tr], label_fraction, seed=seed)]
            pred_all[fold == f], fl = _train_and_predict(loaded, data, y, tr, labelled[fold == f], **train_kw)
            fold_losses.append(fl)
            n_train_total += tr.size
        test, pred = labelled, pred_all
        losses = [float(np.mean(v)) for v in zip(*fold_losses, strict=True)]
        n_train = round(n_train_total / k)
        split_rule = (f"person-wise {k}-fold cross-validation over all {len(set(people_all[labelled].tolist()))} "
                      f"labelled people (the split's test set had {n_test_people} < {min_test_people} people)")
    else:
        train = train[label_fraction_subset(y[train], label_fraction, seed=seed)]
        pred, losses = _train_and_predict(loaded, data, y, train, test, **train_kw)
        n_train = int(train.size)
        split_rule = f"manifest split: train+val -> test, {n_test_people} test people"
    y_te = y[test]
    summary = M.classification_summary(y_te, pred, EXPRESSIONS)
    per_view: dict[str, dict[str, Any]] = {}
    people = (data.manifest.frame["identity"].astype(str).to_numpy()[test] if data.has("identity")
              else np.arange(test.size).astype(str))
    if data.has("view"):
        views = np.array([("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
                          for v in data.manifest.frame["view"].tolist()], dtype=object)[test]
        known = views != ""
        per_view = _per_view(views[known].astype(str), y_te[known], pred[known], people[known], seed=seed)
    counts = np.bincount(y_te, minlength=len(EXPRESSIONS))
    score = person_bootstrap(pred == y_te, people, seed=seed)
    result = FinetuneResult(
        run=str(loaded.path), checkpoint="scratch" if from_scratch else loaded.checkpoint.stem,
        manifest=str(manifest.path), from_scratch=bool(from_scratch), label_fraction=float(label_fraction),
        epochs=int(epochs), lr=float(lr), seed=int(seed), n_train=int(n_train), n_test=int(test.size),
        accuracy=summary["accuracy"], macro_f1=summary["macro_f1"], chance=float(counts.max() / counts.sum()),
        ci_low=score.low, ci_high=score.high, n_test_people=score.n_people, per_view=per_view,
        per_class=summary["per_class"], confusion=summary["confusion"],
        class_names=list(EXPRESSIONS), train_loss=losses, split_rule=split_rule,
        config={"batch_size": int(batch_size), "weight_decay": float(weight_decay), "augment": bool(augment),
                "optimizer": "adamw", "schedule": "cosine", "head": "linear",
                "backbone": loaded.config.model.backbone, "image_size": int(size),
                "augmentation": to_dict(finetune_view()) if augment else None, "device": str(dev)})
    return result


__all__ = ["Classifier", "FinetuneResult", "build_classifier", "finetune", "finetune_view"]
