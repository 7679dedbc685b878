"""Does an embedding encode expression, or just identity?

:func:`separation_report` scores one ``(N, D)`` embedding on both factors with the same tools:

============================  ===================================================================
expression probes             linear probe + weighted kNN on a **subject-disjoint** split
                              (kNN also drops same-identity neighbours)
identity leakage              linear probe + kNN for identity on a per-identity half/half split
cross-identity retrieval      mAP@R, R-precision, precision@1/5/10 for expression, never
                              retrieving the query's own identity
variance decomposition        share of variance explained by identity / expression, and the
                              additive two-factor split (unique, shared, residual)
silhouette                    cosine silhouette by expression and by identity
headline                      ``expression_over_identity`` = kappa(expression probe) -
                              kappa(identity probe), kappa = (acc - chance) / (1 - chance)
                              clipped to [0, 1]; +1 = pure expression, -1 = pure identity
============================  ===================================================================

Results persist (``save``/``load``: a results folder, :mod:`workbench.results`) and plot without
recomputation::

    rep = separation_report(X, expression, identity, seed=0, out_dir=RunFolder(run).analysis("epoch-10"))
    print(rep.summary())
    rep.plot().show(); rep.export(run / "figures", style="single")

    track = SeparationTrack()
    for epoch, X in embeddings_by_epoch.items():
        track.add(epoch, separation_report(X, expression, identity))
    track.plot()   # probe accuracies, leakage and variance shares across checkpoints

Cost: two logistic regressions (the identity one has one class per subject: with thousands of
subjects and 2k-dim features expect minutes), two kNN passes, one retrieval pass (all O(N^2 D),
chunked) and a silhouette on at most ``silhouette_samples`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.vocabulary import EXPRESSIONS, canonical_expression
from workbench.errors import WorkbenchError
from workbench.io import json_safe
from workbench.results import Results
from workbench.viz.style import FACTOR_COLORS, StylePreset, get_preset

_ARRAYS = ("expression_confusion", "retrieval_ap")


def _kappa(acc: float | None, chance: float | None) -> float:
    if acc is None or chance is None or chance >= 1.0:
        return 0.0
    return float(min(1.0, max(0.0, (acc - chance) / (1.0 - chance))))


@dataclass
class SeparationReport(Results):
    """Identity-vs-expression scores of one embedding (see the module docstring for definitions).
    Persisted as a results folder (kind ``separation``; the arrays in ``arrays.npz``)."""

    kind = "separation"
    version = 1

    expression_linear_acc: float
    expression_linear_f1: float
    expression_knn_acc: float
    expression_knn_f1: float
    expression_chance: float
    identity_linear_acc: float
    identity_knn_acc: float
    identity_chance: float
    retrieval: dict[str, float]
    variance: dict[str, float]
    silhouette_expression: float | None
    silhouette_identity: float | None
    expression_over_identity: float
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    expression_confusion: np.ndarray | None = None
    retrieval_ap: np.ndarray | None = None
    #: 95 % person-bootstrap intervals: {"expression_linear": {"low", "high", "n_people"}, ...}
    intervals: dict[str, dict[str, float]] = field(default_factory=dict)
    split_rule: str = ""

    # ------------------------------------------------------------------ views
    def metrics(self) -> dict[str, float | None]:
        """Flat ``{name: value}`` of every scalar (what :class:`SeparationTrack` plots)."""
        out: dict[str, float | None] = {
            k: getattr(self, k) for k in (
                "expression_linear_acc", "expression_linear_f1", "expression_knn_acc", "expression_knn_f1",
                "expression_chance", "identity_linear_acc", "identity_knn_acc", "identity_chance",
                "silhouette_expression", "silhouette_identity", "expression_over_identity")}
        out.update({f"retrieval_{k}": v for k, v in self.retrieval.items() if not k.startswith("n_")})
        out.update({f"var_{k}": v for k, v in self.variance.items()})
        return out

    def summary(self) -> str:
        """One-line headline for logs and notebooks."""
        v = self.variance

        def ci(name: str) -> str:
            iv = self.intervals.get(name) or {}
            return f" [{iv['low']:.3f}, {iv['high']:.3f}]" if iv.get("low") is not None else ""

        people = (self.intervals.get("expression_linear") or {}).get("n_people")
        where = f"; {self.split_rule}" if self.split_rule else (f"; {people} test people" if people else "")
        return (f"expression-over-identity {self.expression_over_identity:+.2f} | expression: linear "
                f"{self.expression_linear_acc:.3f}{ci('expression_linear')} / kNN {self.expression_knn_acc:.3f}"
                f"{ci('expression_knn')} (95% CI, person bootstrap; chance {self.expression_chance:.3f}{where}), "
                f"cross-identity mAP@R {self.retrieval['map_at_r']:.3f} | "
                f"identity leakage: linear {self.identity_linear_acc:.3f}{ci('identity_linear')} / kNN {self.identity_knn_acc:.3f} "
                f"(chance {self.identity_chance:.3f}) | variance: identity {v['identity']:.0%}, expression "
                f"{v['expression']:.0%}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict without the arrays."""
        d = asdict(self)
        for k in _ARRAYS:
            d.pop(k)
        return d

    def to_frame(self) -> Any:
        """Long DataFrame ``measure, factor, value, chance`` - the data behind :meth:`plot`."""
        import pandas as pd

        rows = [
            ("linear acc", "expression", self.expression_linear_acc, self.expression_chance),
            ("linear acc", "identity", self.identity_linear_acc, self.identity_chance),
            ("kNN acc", "expression", self.expression_knn_acc, self.expression_chance),
            ("kNN acc", "identity", self.identity_knn_acc, self.identity_chance),
            ("variance share", "expression", self.variance["expression"], None),
            ("variance share", "identity", self.variance["identity"], None),
            ("silhouette", "expression", self.silhouette_expression, None),
            ("silhouette", "identity", self.silhouette_identity, None),
            ("x-id mAP@R", "expression", self.retrieval["map_at_r"], None),
        ]
        return pd.DataFrame(rows, columns=["measure", "factor", "value", "chance"])

    # ------------------------------------------------------------------ figures
    def plot(self, *, title: str | None = None) -> Any:
        """Grouped bars expression vs identity (probe accuracies with chance ticks, variance shares,
        silhouettes, cross-identity mAP@R); a plotly Figure."""
        import plotly.graph_objects as go

        df = self.to_frame()
        measures = list(dict.fromkeys(df["measure"]))
        fig = go.Figure()
        for factor in ("expression", "identity"):
            sub = df[df["factor"] == factor].set_index("measure")
            y = [sub["value"].get(m) if m in sub.index else None for m in measures]
            fig.add_trace(go.Bar(x=measures, y=y, name=factor, marker_color=FACTOR_COLORS[factor],
                                 offsetgroup=factor))
        for factor in ("expression", "identity"):  # chance ticks over the bar of their factor
            ch = df[(df["factor"] == factor) & df["chance"].notna()]
            fig.add_trace(go.Scatter(
                x=ch["measure"], y=ch["chance"], mode="markers", name="chance", offsetgroup=factor,
                legendgroup="chance", showlegend=factor == "expression",
                marker={"symbol": "line-ew-open", "size": 14, "color": "black", "line": {"width": 2}},
                hovertemplate=f"{factor} chance %{{y:.3f}}<extra></extra>"))
        fig.update_layout(barmode="group", scattermode="group",
                          title=title or f"expression-over-identity {self.expression_over_identity:+.2f}",
                          yaxis_title="score", yaxis_range=[min(0.0, float(np.nanmin(df["value"].astype(float))))
                                                            - 0.02, 1.12],
                          xaxis_tickangle=0, bargap=0.25,
                          legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": -0.22, "yanchor": "top"})
        fig.update_xaxes(tickmode="array", tickvals=measures, ticktext=[m.replace(" ", "<br>", 1) for m in measures])
        return fig

    def plot_mpl(self, preset: str | StylePreset = "single", *, title: str | None = None) -> Any:
        """The same figure with matplotlib (used as the export fallback)."""
        import matplotlib.pyplot as plt

        from workbench.viz.style import mpl_style

        df = self.to_frame()
        measures = list(dict.fromkeys(df["measure"]))
        p = get_preset(preset)
        with mpl_style(p):
            fig, ax = plt.subplots()
            for j, factor in enumerate(("expression", "identity")):
                sub = df[df["factor"] == factor].set_index("measure")
                pos = np.arange(len(measures)) + (j - 0.5) * 0.4
                vals = [float(sub["value"][m]) if m in sub.index and sub["value"][m] is not None else np.nan
                        for m in measures]
                ax.bar(pos, vals, width=0.4, color=FACTOR_COLORS[factor], label=factor)
                for m_i, m in enumerate(measures):
                    if m in sub.index and sub["chance"][m] is not None and not np.isnan(sub["chance"][m]):
                        ax.hlines(float(sub["chance"][m]), pos[m_i] - 0.18, pos[m_i] + 0.18, color="black",
                                  lw=1.5, label="chance" if (j, m_i) == (0, 0) else None)
            ax.set_xticks(np.arange(len(measures)), [m.replace(" ", "\n", 1) for m in measures])
            ax.set_ylabel("score")
            ax.set_title(title or f"expression-over-identity {self.expression_over_identity:+.2f}")
            fig.legend(ncols=3, loc="outside lower center")
        return fig

    def export(self, out_dir: str | Path, *, style: str | StylePreset = "single", name: str = "separation",
               card: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Path]:
        """Write the figure (PDF/SVG/PNG/HTML), its data (CSV) and a card (JSON) via
        :func:`workbench.viz.export_figure`."""
        from workbench.viz.export import export_figure

        card = {**self.config, **(card or {})}
        return export_figure(self.plot(), out_dir, name, preset=style, data=self.to_frame(), card=card,
                             timeout=timeout, mpl_fallback=lambda p: self.plot_mpl(p))

    # ------------------------------------------------------------------ persistence
    def _fields(self) -> dict[str, Any]:
        return json_safe(self.to_dict())

    def _arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k in _ARRAYS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeparationReport:
        """Rebuild from :meth:`to_dict` output (extra keys ignored)."""
        names = {f.name for f in fields(cls)} - set(_ARRAYS)
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def _from_saved(cls, fields_: dict[str, Any], arrays: dict[str, np.ndarray]) -> SeparationReport:
        rep = cls.from_dict(fields_)
        for k, v in arrays.items():
            if k in _ARRAYS:
                setattr(rep, k, v)
        return rep


def _expression_codes(expression: Any, class_names: Sequence[str]) -> np.ndarray:
    e = np.asarray(expression)
    if e.dtype.kind in "iu":
        if e.size and (e.min() < 0 or e.max() >= len(class_names)):
            raise WorkbenchError(f"expression indices must lie in [0, {len(class_names) - 1}]")
        return e.astype(np.int64)
    index = {str(c): i for i, c in enumerate(class_names)}
    out = np.empty(e.shape[0], dtype=np.int64)
    for value in np.unique(e.astype(str)):
        key = value if value in index or tuple(class_names) != EXPRESSIONS else canonical_expression(value)
        if key not in index:
            raise WorkbenchError(f"expression label '{value}' is not in class_names")
        out[e.astype(str) == value] = index[key]
    return out


def _silhouette(X: np.ndarray, labels: np.ndarray, n_samples: int, seed: int) -> float | None:
    from sklearn.metrics import silhouette_score

    n = X.shape[0]
    if np.unique(labels).size < 2 or np.unique(labels).size >= n:
        return None
    try:
        return float(silhouette_score(X, labels, metric="cosine",
                                      sample_size=min(n, n_samples) if n > n_samples else None,
                                      random_state=seed))
    except ValueError:  # a sample with a single label
        return None


def separation_report(
    X: Any,
    expression: Any,
    identity: Any,
    *,
    seed: int = 0,
    k: int = 20,
    temperature: float = 0.07,
    class_names: Sequence[str] = EXPRESSIONS,
    test_fraction: float = 0.3,
    split: Any = None,
    C: float = 1.0,
    retrieval_ks: Sequence[int] = (1, 5, 10),
    silhouette_samples: int = 4000,
    normalize_variance: bool = True,
    device: str = "cpu",
    out_dir: str | Path | None = None,
) -> SeparationReport:
    """Score how much ``X`` encodes expression versus identity.

    Args:
        X: ``(N, D)`` embedding (``feats`` usually; numpy or torch).
        expression: class indices into ``class_names`` or expression names (aliases accepted with the
            default vocabulary).
        identity: subject codes (any hashable; compared as strings). Needs >= 2 subjects and, for the
            identity probe, >= 2 images per subject.
        seed: drives both splits and the probes (default 0).
        k, temperature: kNN settings (defaults 20, 0.07 as DINO/solo-learn).
        test_fraction: share of *subjects* held out for the expression probes when there is no ``split``
            (default 0.3).
        split: the manifest's ``train``/``val``/``test`` per row: when given (as ``workbench evaluate``
            does), the expression probes train on train+val and test on the test people, so both commands
            give the same numbers for one checkpoint.
        C: linear-probe inverse L2 strength (default 1.0 on standardised features).
        retrieval_ks: precision@k cut-offs.
        silhouette_samples: rows sampled for the O(N^2) silhouette (default 4000).
        normalize_variance: L2-normalise rows before the variance decomposition (default True).
        out_dir: when given, the report is saved there (``separation.json`` + ``.npz``).
    """
    from workbench.analysis.retrieval import retrieval_scores
    from workbench.analysis.variance import two_factor_decomposition
    from workbench.evaluate.protocols import (
        EvalConfig,
        evaluate_embeddings,
        identity_probe_split,
        subject_disjoint_split,
    )
    from workbench.evaluate.run_eval import score_subject_disjoint

    Xa = np.asarray(X.detach().cpu().numpy() if hasattr(X, "detach") else X, dtype=np.float32)
    if Xa.ndim != 2:
        raise WorkbenchError(f"embedding must be (N, D), got shape {Xa.shape}")
    n = Xa.shape[0]
    names = [str(c) for c in class_names]
    expr = _expression_codes(expression, names)
    ident = np.asarray(identity).astype(str)
    if expr.shape[0] != n or ident.shape[0] != n:
        raise WorkbenchError(f"expression and identity need one entry per embedding row ({n})")

    # expression: subject-disjoint split (the manifest's when given)
    sp = None if split is None else np.asarray(split, dtype=object)
    if sp is not None and (sp == "test").any() and np.isin(sp, ["train", "val"]).any():
        tr, te = np.flatnonzero(np.isin(sp, ["train", "val"])), np.flatnonzero(sp == "test")
        rule = "manifest split: train+val -> test"
    else:
        tr, te = subject_disjoint_split(ident, seed=seed, test_fraction=test_fraction)
        rule = f"seeded subject-disjoint split ({test_fraction:.0%} of people, seed {seed})"
    rule += f", {np.unique(ident[te]).size} test people"
    # the same rule as `workbench evaluate`: person-wise k-fold CV when the test rows hold < 12 people
    lin = score_subject_disjoint(Xa, expr, ident, tr, te,
                                 EvalConfig(protocol="linear", target="expression", seed=seed, C=C),
                                 classes=names, rule=rule)
    knn = score_subject_disjoint(Xa, expr, ident, tr, te,
                                 EvalConfig(protocol="knn", target="expression", seed=seed, k=k,
                                            temperature=temperature, exclude_same_identity=True),
                                 classes=names, rule=rule)
    rule = lin.split_rule
    # identity leakage: per-identity split
    itr, ite = identity_probe_split(ident, seed=seed)
    id_names = sorted(set(ident.tolist()))
    ilin = evaluate_embeddings(Xa[itr], ident[itr], Xa[ite], ident[ite],
                               EvalConfig(protocol="linear", target="identity", seed=seed, C=C),
                               class_names=id_names)
    iknn = evaluate_embeddings(Xa[itr], ident[itr], Xa[ite], ident[ite],
                               EvalConfig(protocol="knn", target="identity", seed=seed, k=k,
                                          temperature=temperature, exclude_same_identity=False),
                               class_names=id_names)
    ret = retrieval_scores(Xa, expr, groups=ident, exclude_same_group=True, ks=retrieval_ks, device=device,
                           return_per_query=True)
    ap = ret.pop("ap_at_r")
    var = two_factor_decomposition(Xa, ident, expr, normalize=normalize_variance)

    rep = SeparationReport(
        expression_linear_acc=lin.accuracy, expression_linear_f1=lin.macro_f1,
        expression_knn_acc=knn.accuracy, expression_knn_f1=knn.macro_f1, expression_chance=lin.chance,
        identity_linear_acc=ilin.accuracy, identity_knn_acc=iknn.accuracy, identity_chance=ilin.chance,
        retrieval=ret, variance=var,
        silhouette_expression=_silhouette(Xa, expr, silhouette_samples, seed),
        silhouette_identity=_silhouette(Xa, ident, silhouette_samples, seed),
        expression_over_identity=_kappa(lin.accuracy, lin.chance) - _kappa(ilin.accuracy, ilin.chance),
        per_class=lin.per_class,
        counts={"n": n, "n_identities": len(id_names), "n_expressions": int(np.unique(expr).size),
                "expression_train": int(tr.size), "expression_test": int(te.size),
                "identity_train": int(itr.size), "identity_test": int(ite.size)},
        config={"seed": seed, "k": k, "temperature": temperature, "test_fraction": test_fraction, "C": C,
                "retrieval_ks": list(retrieval_ks), "silhouette_samples": silhouette_samples,
                "normalize_variance": normalize_variance, "class_names": names},
        expression_confusion=np.asarray(lin.confusion, dtype=np.int64),
        retrieval_ap=ap,
        intervals={name: {"low": r.ci_low, "high": r.ci_high, "n_people": r.n_test_people}
                   for name, r in (("expression_linear", lin), ("expression_knn", knn), ("identity_linear", ilin),
                                   ("identity_knn", iknn))},
        split_rule=rule,
    )
    if out_dir is not None:
        rep.save(out_dir)
    return rep


DEFAULT_TRACK_METRICS: tuple[str, ...] = (
    "expression_linear_acc", "expression_knn_acc", "retrieval_map_at_r",
    "identity_linear_acc", "identity_knn_acc", "var_expression", "var_identity",
)
TRACK_LABELS: dict[str, str] = {
    "expression_linear_acc": "expr. linear", "expression_knn_acc": "expr. kNN", "retrieval_map_at_r": "x-id mAP@R",
    "identity_linear_acc": "id. linear", "identity_knn_acc": "id. kNN", "var_expression": "expr. variance",
    "var_identity": "id. variance", "expression_over_identity": "expr.-over-id.",
}
_DASH = {"linear": "solid", "knn": "dash", "map": "dot", "var": "dashdot", "silhouette": "longdash"}


def _line_style(metric: str) -> tuple[str, str]:
    factor = "identity" if "identity" in metric else "expression"
    kind = next((k for k in ("linear", "knn", "map", "var", "silhouette") if k in metric), "linear")
    return FACTOR_COLORS.get(factor, "#000000"), _DASH[kind]


@dataclass
class SeparationTrack(Results):
    """Separation reports across checkpoints (``epoch -> report``), plotted as lines. Persisted as a
    results folder (kind ``separation-track``: the scalars of every report; per-query arrays are not kept)."""

    kind = "separation-track"
    version = 1

    reports: dict[int, SeparationReport] = field(default_factory=dict)

    def add(self, epoch: int, report: SeparationReport) -> SeparationTrack:
        """Add (or replace) the report of ``epoch``; returns self."""
        self.reports[int(epoch)] = report
        return self

    def to_frame(self) -> Any:
        """Long DataFrame ``epoch, metric, value`` sorted by epoch."""
        import pandas as pd

        rows = [(e, m, v) for e in sorted(self.reports) for m, v in self.reports[e].metrics().items()]
        return pd.DataFrame(rows, columns=["epoch", "metric", "value"])

    def _data(self, metrics: Sequence[str]) -> Any:
        df = self.to_frame()
        if df.empty:
            raise WorkbenchError("the separation track is empty; add() reports first")
        unknown = [m for m in metrics if m not in set(df["metric"])]
        if unknown:
            raise WorkbenchError(f"unknown metric '{unknown[0]}'; available: {', '.join(sorted(set(df['metric'])))}")
        return df[df["metric"].isin(metrics)]

    def plot(self, metrics: Sequence[str] = DEFAULT_TRACK_METRICS, *, title: str | None = None) -> Any:
        """Lines per metric over epochs (expression blue, identity vermillion; dash = kind of score)."""
        import plotly.graph_objects as go

        df = self._data(metrics)
        fig = go.Figure()
        for m in metrics:
            sub = df[df["metric"] == m]
            color, dash = _line_style(m)
            fig.add_trace(go.Scatter(x=sub["epoch"], y=sub["value"], name=TRACK_LABELS.get(m, m), mode="lines+markers",
                                     line={"color": color, "dash": dash}, marker={"color": color}))
        fig.update_layout(title=title or "identity vs expression across checkpoints", xaxis_title="epoch",
                          yaxis_title="score", legend={"orientation": "h", "y": -0.3, "x": 0.5, "xanchor": "center"})
        epochs = sorted(set(df["epoch"].tolist()))
        if len(epochs) <= 12:
            fig.update_xaxes(tickmode="array", tickvals=epochs)
        return fig

    def plot_mpl(self, preset: str | StylePreset = "single", metrics: Sequence[str] = DEFAULT_TRACK_METRICS,
                 *, title: str | None = None) -> Any:
        """The same lines with matplotlib."""
        import matplotlib.pyplot as plt

        from workbench.viz.style import mpl_style

        df = self._data(metrics)
        mpl_dash = {"solid": "-", "dash": "--", "dot": ":", "dashdot": "-.", "longdash": (0, (6, 2))}
        with mpl_style(preset):
            fig, ax = plt.subplots()
            for m in metrics:
                sub = df[df["metric"] == m]
                color, dash = _line_style(m)
                ax.plot(sub["epoch"], sub["value"].astype(float), color=color, ls=mpl_dash[dash], marker="o",
                        label=TRACK_LABELS.get(m, m))
            ax.set_xlabel("epoch")
            ax.set_ylabel("score")
            ax.set_title(title or "identity vs expression across checkpoints")
            ax.xaxis.get_major_locator().set_params(integer=True)
            fig.legend(loc="outside lower center", ncols=3, fontsize="small")
        return fig

    def export(self, out_dir: str | Path, *, style: str | StylePreset = "single", name: str = "separation-track",
               metrics: Sequence[str] = DEFAULT_TRACK_METRICS, card: dict[str, Any] | None = None,
               timeout: float = 60.0) -> dict[str, Path]:
        """Write the line figure, its data and a card via :func:`workbench.viz.export_figure`."""
        from workbench.viz.export import export_figure

        return export_figure(self.plot(metrics), out_dir, name, preset=style, data=self._data(metrics),
                             card=card, timeout=timeout, mpl_fallback=lambda p: self.plot_mpl(p, metrics))

    def _fields(self) -> dict[str, Any]:
        return {"reports": {str(e): json_safe(r.to_dict()) for e, r in sorted(self.reports.items())}}

    @classmethod
    def _from_saved(cls, fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> SeparationTrack:
        return cls({int(e): SeparationReport.from_dict(r) for e, r in fields["reports"].items()})
