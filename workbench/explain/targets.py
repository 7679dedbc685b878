"""What to explain: small callables mapping a model's output dict to one score per image.

An SSL encoder has no class logits, so Grad-CAM needs a scalar per image that depends on the
embedding. Each target here is ``target(outputs, index=None) -> (B,)`` where ``outputs`` is the
method's output dict (``{"feats", "z", ...}``) and ``index`` (``(B,)`` long, default
``arange(B)``) selects the rows of the target's *per-image* data (chosen class, identity, other
view) that belong to the current batch, so one target object serves a whole data set explained
in chunks (``GradCAM.explain_batch`` passes it for you).

- :class:`PrototypeSimilarity`: cosine to the mean embedding of the image's expression class
  ("what makes this face look like *happiness* to the encoder");
- :class:`IdentityCentroidSimilarity`: cosine to the image's identity centroid ("what makes it
  *this person*": compare with the expression maps to see identity leakage);
- :class:`OtherViewSimilarity`: cosine to another view of the same face (what the SSL objective
  itself rewards);
- :class:`ProbeLogit`: a linear probe's logit (closest to classic classifier Grad-CAM).

Cosine targets work on ``feats`` by default (what probes and kNN use); pass ``feature="z"`` to
explain the projection space the SSL loss sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from workbench.errors import WorkbenchError

ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


class Target(Protocol):
    """``target(outputs, index=None) -> (B,)`` scores (see the module docstring)."""

    def __call__(self, outputs: dict[str, torch.Tensor], index: torch.Tensor | None = None) -> torch.Tensor: ...


def _tensor(x: ArrayLike, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(dtype)
    if dtype.is_floating_point and not torch.isfinite(t).all() and name != "prototypes":
        raise WorkbenchError(f"{name} contains NaN or inf")
    return t


def _feature(outputs: dict[str, torch.Tensor], feature: str) -> torch.Tensor:
    if feature not in outputs:
        raise WorkbenchError(f"the model output has no '{feature}' (keys: {', '.join(outputs)})")
    return outputs[feature]


def _rows(per_image: torch.Tensor, index: torch.Tensor | None, batch: int, name: str) -> torch.Tensor:
    """Select the rows of per-image data for this batch (a 0-d value applies to every image)."""
    if per_image.ndim == 0:
        return per_image.expand(batch)
    idx = torch.arange(batch) if index is None else index.detach().cpu().long()
    if idx.numel() != batch:
        raise WorkbenchError(f"index has {idx.numel()} entries for a batch of {batch}")
    if idx.numel() and (idx.min() < 0 or idx.max() >= per_image.shape[0]):
        raise WorkbenchError(f"index out of range for {per_image.shape[0]} rows of {name}")
    return per_image[idx]


def class_prototypes(feats: ArrayLike, labels: ArrayLike, n_classes: int, *, normalize: bool = True
                     ) -> torch.Tensor:
    """``(C, D)`` mean embedding per class; rows of classes without samples are NaN.

    Args:
        feats: (N, D) embeddings.
        labels: (N,) integer class codes in ``[0, n_classes)``; negative codes (missing) are ignored.
        n_classes: C (e.g. ``len(EXPRESSIONS)``, or the number of identities).
        normalize: average L2-normalised embeddings (default True: the prototype of a cosine space;
            a few large-norm samples then cannot dominate).
    """
    f = _tensor(feats, "feats")
    y = _tensor(labels, "labels", torch.long).reshape(-1)
    if f.ndim != 2 or f.shape[0] != y.shape[0]:
        raise WorkbenchError(f"feats (N, D) and labels (N,) do not match: {tuple(f.shape)} vs {tuple(y.shape)}")
    if normalize:
        f = F.normalize(f, dim=1)
    keep = (y >= 0) & (y < n_classes)
    f, y = f[keep], y[keep]
    sums = torch.zeros(n_classes, f.shape[1], dtype=f.dtype).index_add_(0, y, f)
    counts = torch.bincount(y, minlength=n_classes).to(f.dtype)[:, None]
    protos = sums / counts.clamp_min(1)
    protos[counts[:, 0] == 0] = float("nan")
    return protos


class _CosineTo:
    """Cosine between ``outputs[feature]`` and one reference vector per image."""

    def __init__(self, feature: str):
        self.feature = feature

    def references(self, index: torch.Tensor | None, batch: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, outputs: dict[str, torch.Tensor], index: torch.Tensor | None = None) -> torch.Tensor:
        f = _feature(outputs, self.feature)
        ref = self.references(index, f.shape[0]).to(device=f.device, dtype=f.dtype)
        return F.cosine_similarity(f, ref, dim=1)


class PrototypeSimilarity(_CosineTo):
    """Cosine of each image's embedding to the prototype of its chosen class.

    Args:
        prototypes: (C, D) class prototypes (:func:`class_prototypes` of training embeddings).
        classes: the class to explain: one int for every image, or (N,) ints, one per image
            (typically the true expression; use the predicted one to explain mistakes).
        feature: output key compared (default ``"feats"``).
    """

    def __init__(self, prototypes: ArrayLike, classes: int | ArrayLike, *, feature: str = "feats"):
        super().__init__(feature)
        self.prototypes = _tensor(prototypes, "prototypes")
        self.classes = _tensor(classes, "classes", torch.long)
        c = self.classes.reshape(-1)
        if c.numel() and (c.min() < 0 or c.max() >= self.prototypes.shape[0]):
            raise WorkbenchError(f"classes must be in [0, {self.prototypes.shape[0]})")
        empty = ~torch.isfinite(self.prototypes[c]).all(dim=1)
        if empty.any():
            raise WorkbenchError(f"no prototype for class {int(c[empty][0])} (no training sample of it)")

    def references(self, index: torch.Tensor | None, batch: int) -> torch.Tensor:
        return self.prototypes[_rows(self.classes, index, batch, "classes")]


class IdentityCentroidSimilarity(PrototypeSimilarity):
    """Cosine of each image's embedding to its identity's centroid.

    Args:
        centroids: (K, D) mean embedding per identity (:func:`class_prototypes` over identity codes).
        identities: (N,) identity code per image (or one int for all).
        feature: output key compared (default ``"feats"``).
    """

    def __init__(self, centroids: ArrayLike, identities: int | ArrayLike, *, feature: str = "feats"):
        super().__init__(centroids, identities, feature=feature)


class OtherViewSimilarity(_CosineTo):
    """Cosine of each image's embedding to the (fixed, detached) embedding of another view of it.

    Args:
        other_feats: (N, D) embeddings of the other views, row i for image i (compute them with
            ``method(view(images))["feats"]`` under ``torch.no_grad()``).
        feature: output key compared (default ``"feats"``; must match how ``other_feats`` was made).
    """

    def __init__(self, other_feats: ArrayLike, *, feature: str = "feats"):
        super().__init__(feature)
        self.other = _tensor(other_feats, "other_feats")
        if self.other.ndim != 2:
            raise WorkbenchError(f"other_feats must be (N, D), got {tuple(self.other.shape)}")

    def references(self, index: torch.Tensor | None, batch: int) -> torch.Tensor:
        return _rows(self.other, index, batch, "other_feats")


class ProbeLogit:
    """The logit of a linear probe ``W f + b`` for each image's chosen class.

    Args:
        weight: (C, D) probe weights acting on raw ``feats``.
        bias: (C,) biases.
        classes: probe column to explain: one int for all images or (N,) ints (the true class:
            "what supports the right answer"; the predicted class: "what drove the decision").
        feature: output key the probe reads (default ``"feats"``).
    """

    def __init__(self, weight: ArrayLike, bias: ArrayLike, classes: int | ArrayLike, *, feature: str = "feats"):
        self.weight = _tensor(weight, "weight")
        self.bias = _tensor(bias, "bias").reshape(-1)
        if self.weight.ndim != 2 or self.bias.shape[0] != self.weight.shape[0]:
            raise WorkbenchError(f"weight (C, D) and bias (C,) do not match: {tuple(self.weight.shape)} "
                                 f"vs {tuple(self.bias.shape)}")
        self.classes = _tensor(classes, "classes", torch.long)
        c = self.classes.reshape(-1)
        if c.numel() and (c.min() < 0 or c.max() >= self.weight.shape[0]):
            raise WorkbenchError(f"classes must be in [0, {self.weight.shape[0]})")
        self.feature = feature

    @classmethod
    def from_probe(cls, probe: Any, classes: int | ArrayLike, *, feature: str = "feats") -> ProbeLogit:
        """From a fitted :class:`~workbench.evaluate.probe.LinearProbe` (standardiser + logistic regression).

        ``classes`` are label *values* as seen by the probe (``probe.classes``), mapped to its
        columns. A binary probe (one weight row) explains the positive class's logit and its
        negation for the other class.
        """
        mean = np.asarray(probe.scaler.mean_, dtype=np.float64)
        scale = np.asarray(probe.scaler.scale_, dtype=np.float64)
        coef = np.asarray(probe.model.coef_, dtype=np.float64)
        inter = np.asarray(probe.model.intercept_, dtype=np.float64)
        if coef.shape[0] == 1:  # binary: logit of class 1 = z, of class 0 = -z
            coef, inter = np.concatenate([-coef, coef]), np.concatenate([-inter, inter])
        w = coef / scale[None]
        b = inter - w @ mean
        values = list(np.asarray(probe.classes).tolist())
        wanted = np.atleast_1d(np.asarray(classes)).tolist()
        missing = [v for v in wanted if v not in values]
        if missing:
            raise WorkbenchError(f"class {missing[0]!r} was not among the probe's training classes {values}")
        cols = [values.index(v) for v in wanted]
        col_t: int | list[int] = cols[0] if np.ndim(classes) == 0 else cols
        return cls(w, b, col_t, feature=feature)

    def __call__(self, outputs: dict[str, torch.Tensor], index: torch.Tensor | None = None) -> torch.Tensor:
        f = _feature(outputs, self.feature)
        c = _rows(self.classes, index, f.shape[0], "classes").to(f.device)
        w = self.weight.to(device=f.device, dtype=f.dtype)[c]
        b = self.bias.to(device=f.device, dtype=f.dtype)[c]
        return (f * w).sum(dim=1) + b


class FunctionTarget:
    """Wrap any ``fn(outputs) -> (B,)`` (no per-image data) as a target, e.g.
    ``FunctionTarget(lambda o: o["z"].norm(dim=1))``."""

    def __init__(self, fn: Any):
        self.fn = fn

    def __call__(self, outputs: dict[str, torch.Tensor], index: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(outputs)
