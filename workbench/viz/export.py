"""Paper-figure export: vector PDF + SVG, 300-dpi PNG, source data CSV and a JSON "figure card".

:func:`export_figure` accepts a plotly or a matplotlib figure.

- **plotly**: restyled with the preset, written as interactive HTML that loads ONE shared
  ``plotly.min.js`` by a relative path (written once into ``plotlyjs_dir``, default the output folder,
  so the HTML works offline and a figure set holds one 4.8 MB copy, not one per folder), then rendered by Kaleido **in a child process with a
  timeout** (Kaleido 1.x drives Chromium and is known to hang: plotly/Kaleido #80, #110, #134).
  On timeout or failure the same figure is drawn with matplotlib - by the caller's ``mpl_fallback(preset)``
  when given, else by a generic converter for scatter/line/bar traces - and the card records
  ``renderer="matplotlib-fallback"`` and why.
- **matplotlib**: saved directly (TrueType fonts in PDF, text kept as text in SVG).

The card holds the caller's ``card`` dict (run config, seed...) under ``"run"``, the seed at top
level, ``workbench.__version__``, the git sha (when the code is in a git checkout), a UTC timestamp,
the renderer and the file names. Kaleido needs Chrome/Chromium: set ``BROWSER_PATH`` if it is not
found automatically; without it every plotly export falls back to matplotlib.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.io import atomic_write, write_text_atomic
from workbench.viz.style import (
    PX_PER_IN,
    StylePreset,
    apply_plotly_style,
    get_preset,
    mpl_style,
)

FORMATS = ("pdf", "svg", "png")

# Run in a child process: argv[1] = JSON spec {"figure", "paths", "width", "height", "scales"}.
_KALEIDO_SCRIPT = """
import json, sys
import plotly.io as pio
spec = json.load(open(sys.argv[1], encoding="utf-8"))
fig = pio.from_json(spec["figure"], skip_invalid=True)
n = len(spec["paths"])
pio.write_images([fig] * n, spec["paths"], width=spec["width"], height=spec["height"], scale=spec["scales"])
"""


class ExportError(WorkbenchError):
    """A figure could not be exported in any renderer."""


def _is_plotly(fig: Any) -> bool:
    return hasattr(fig, "to_plotly_json") and hasattr(fig, "write_html")


def _is_mpl(fig: Any) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover
        return False
    return isinstance(fig, Figure)


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The commit of the workbench checkout (``None`` outside git, or before the first commit)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def render_with_kaleido(fig: Any, paths: Sequence[Path], *, width_px: int, height_px: int,
                        scales: Sequence[float], timeout: float) -> str | None:
    """Render ``fig`` to ``paths`` (format from the suffix) in a child process.

    Returns ``None`` on success, else a one-line reason (timeout, Kaleido/Chromium error). Outputs are
    written to temporary names and moved into place only when every file was produced.
    """
    paths = [Path(p) for p in paths]
    tmp_paths = [p.with_name(f".{p.stem}.kaleido-tmp{p.suffix}") for p in paths]
    fd, spec_path = tempfile.mkstemp(suffix=".json", prefix="kaleido-spec-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"figure": fig.to_json(), "paths": [str(p) for p in tmp_paths], "width": width_px,
                   "height": height_px, "scales": list(scales)}, fh)
    try:
        proc = subprocess.Popen([sys.executable, "-c", _KALEIDO_SCRIPT, spec_path], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=max(timeout, 1e-3))
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            proc.communicate()
            return f"kaleido timed out after {timeout:g} s"
        if proc.returncode != 0:
            lines = [ln for ln in (err or "").strip().splitlines() if ln.strip()]
            return f"kaleido failed: {lines[-1] if lines else f'exit code {proc.returncode}'}"
        missing = [p.name for p in tmp_paths if not p.is_file() or p.stat().st_size == 0]
        if missing:
            return f"kaleido produced no {', '.join(missing)}"
        for tmp, final in zip(tmp_paths, paths):
            os.replace(tmp, final)
        return None
    finally:
        Path(spec_path).unlink(missing_ok=True)
        for tmp in tmp_paths:
            tmp.unlink(missing_ok=True)


def shared_plotlyjs(folder: str | Path) -> Path:
    """``folder/plotly.min.js`` (plotly's offline bundle), written only when missing or of another version."""
    from plotly.offline import get_plotlyjs

    js = Path(folder) / "plotly.min.js"
    text = get_plotlyjs()
    if not js.is_file() or js.stat().st_size != len(text.encode("utf-8")):
        write_text_atomic(js, text)
    return js


def write_plotly_html(fig: Any, path: str | Path, *, plotlyjs_dir: str | Path | None = None) -> Path:
    """Interactive HTML of a plotly figure that references the shared ``plotly.min.js`` in ``plotlyjs_dir``
    (default: the HTML's folder) by a relative path instead of embedding or copying it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    js = shared_plotlyjs(plotlyjs_dir if plotlyjs_dir is not None else path.parent)
    src = os.path.relpath(js, path.parent).replace(os.sep, "/")
    return atomic_write(path, lambda t: fig.write_html(t, include_plotlyjs=src, full_html=True))


def _set_png_dpi(path: Path, dpi: int) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        im.save(path, dpi=(dpi, dpi))


def save_mpl(fig: Any, paths: dict[str, Path], preset: str | StylePreset = "single") -> None:
    """Save a matplotlib figure to each ``{format: path}`` (PNG at the preset's dpi)."""
    p = get_preset(preset)
    with mpl_style(p):
        for fmt, path in paths.items():
            fig.savefig(path, format=fmt, dpi=p.dpi if fmt == "png" else None, facecolor="white")


def plotly_figure_data(fig: Any) -> Any:
    """A long DataFrame (``trace, x, y`` + ``text`` when present) of a plotly figure's data."""
    import pandas as pd

    frames = []
    for i, tr in enumerate(fig.data):
        x = getattr(tr, "x", None)
        y = getattr(tr, "y", None)
        if x is None and y is None:
            continue
        n = len(x) if x is not None else len(y)
        f = pd.DataFrame({"trace": [tr.name if tr.name is not None else f"trace{i}"] * n,
                          "type": tr.type,
                          "x": list(x) if x is not None else list(range(n)),
                          "y": list(y) if y is not None else list(range(n))})
        text = getattr(tr, "text", None)
        if text is not None and not isinstance(text, str) and len(text) == n:
            f["text"] = list(text)
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trace", "type", "x", "y"])


def _axis_title(ax_layout: Any) -> str:
    try:
        return ax_layout.title.text or ""
    except AttributeError:
        return ""


def plotly_to_mpl(fig: Any, preset: str | StylePreset = "single") -> Any:
    """Best-effort matplotlib redraw of a plotly figure (scatter, line and bar traces; facets as a grid).

    Used when Kaleido is unavailable and no figure-specific fallback was given.
    """
    import matplotlib.pyplot as plt

    p = get_preset(preset)
    keys: list[tuple[str, str]] = []
    for tr in fig.data:
        k = (getattr(tr, "xaxis", None) or "x", getattr(tr, "yaxis", None) or "y")
        if k not in keys:
            keys.append(k)

    def dom(axname: str, letter: str) -> float:
        lay = fig.layout[f"{letter}axis{axname[1:]}"] if len(axname) > 1 else fig.layout[f"{letter}axis"]
        d = lay.domain
        return float(d[0]) if d else 0.0

    cols = sorted({round(dom(k[0], "x"), 3) for k in keys})
    rows = sorted({round(dom(k[1], "y"), 3) for k in keys}, reverse=True)
    with mpl_style(p):
        mfig, axes = plt.subplots(len(rows), len(cols), squeeze=False, sharex=True, sharey=True,
                                  figsize=(p.width_in, p.height_in))
    where = {k: axes[rows.index(round(dom(k[1], "y"), 3))][cols.index(round(dom(k[0], "x"), 3))] for k in keys}
    bar_traces = [t for t in fig.data if t.type == "bar"]
    seen_labels: set[str] = set()
    for tr in fig.data:
        ax = where[(getattr(tr, "xaxis", None) or "x", getattr(tr, "yaxis", None) or "y")]
        label = tr.name if tr.name and tr.showlegend is not False and tr.name not in seen_labels else None
        if label:
            seen_labels.add(label)
        if tr.type in ("scatter", "scattergl"):
            x, y = np.asarray(tr.x), np.array(list(tr.y), dtype=float)
            mode = tr.mode or "lines+markers"
            color = tr.marker.color if isinstance(tr.marker.color, str) else None
            if "lines" in mode:
                lc = tr.line.color if isinstance(tr.line.color, str) else color
                ax.plot(x, y, color=lc, label=label, lw=p.line_width,
                        marker="o" if "markers" in mode else None, ms=p.marker_size)
            elif "markers" in mode:
                c = tr.marker.color if tr.marker.color is not None and not isinstance(tr.marker.color, str) else color
                ax.scatter(x, y, c=c, s=p.marker_size ** 2, label=label, linewidths=0)
        elif tr.type == "bar":
            n = len(bar_traces) if fig.layout.barmode == "group" else 1
            j = bar_traces.index(tr) if n > 1 else 0
            cats = list(tr.x)
            pos = np.arange(len(cats)) + (j - (n - 1) / 2) * (0.8 / n)
            ax.bar(pos, np.array(list(tr.y), dtype=float), width=0.8 / n, color=tr.marker.color if isinstance(tr.marker.color, str)
                   else None, label=label)
            from workbench.viz.figures import _wrap
            from workbench.viz.style import METRIC_LABELS, metric_label

            room = p.width_in / max(1, len(cols)) / max(1, len(cats))
            ax.set_xticks(np.arange(len(cats)), [_wrap(metric_label(c) if str(c) in METRIC_LABELS else str(c),
                                                       room, p.tick_size) for c in cats])
    ax0 = axes[-1][0]
    ax0.set_xlabel(_axis_title(fig.layout.xaxis))
    ax0.set_ylabel(_axis_title(fig.layout.yaxis))
    if fig.layout.title.text:
        mfig.suptitle(re.sub(r"<[^>]+>", " ", fig.layout.title.text))
    if seen_labels:  # one legend under the plot area (never over the data)
        from workbench.viz.figures import _legend_below

        handles, labels = [], []
        for ax in mfig.axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        _legend_below(mfig, handles, labels, p)
    if bar_traces:  # last, once titles and legend took their room
        from workbench.viz.figures import fit_tick_labels

        for ax in mfig.axes:
            fit_tick_labels(mfig, ax)
    return mfig


def export_figure(
    fig: Any,
    out_dir: str | Path,
    name: str,
    *,
    preset: str | StylePreset = "single",
    data: Any = None,
    card: dict[str, Any] | None = None,
    timeout: float = 60.0,
    mpl_fallback: Callable[[StylePreset], Any] | None = None,
    formats: Sequence[str] = FORMATS,
    html: bool = True,
    plotlyjs_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Write ``name.{pdf,svg,png}`` (+ ``.html`` for plotly, ``.csv`` data, ``.json`` card) to ``out_dir``.

    Args:
        fig: a plotly ``Figure`` or a matplotlib ``Figure``.
        preset: ``"single"`` (3.5 in), ``"double"`` (7.16 in), ``"slide"`` or a :class:`StylePreset`.
        data: the figure's source data (written as CSV); for plotly figures defaults to the traces' x/y.
        card: run config / seed / anything to record with the figure (JSON-serialisable).
        timeout: seconds Kaleido may take for all formats together (default 60; the first call
            starts Chromium, 2-5 s). On timeout the matplotlib fallback is used.
        mpl_fallback: ``f(preset) -> matplotlib Figure`` drawing the same data; used when Kaleido fails.
        formats: subset of ``("pdf", "svg", "png")``.
        html: also write the interactive HTML (plotly only).
        plotlyjs_dir: folder of the one shared ``plotly.min.js`` the HTML loads (default ``out_dir``;
            give the figure-set root when figures go to several folders).

    Returns ``{"pdf": path, "svg": ..., "png": ..., "html": ..., "csv": ..., "json": ...}``.
    """
    p = get_preset(preset)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ExportError(f"figure name '{name}' must be a plain file stem (letters, digits, . _ -)")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ExportError(f"unknown figure format '{bad[0]}'; choose from {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {fmt: out / f"{name}.{fmt}" for fmt in formats}
    written: dict[str, Path] = {}
    reason: str | None = None

    if _is_plotly(fig):
        import plotly.graph_objects as go

        pfig = apply_plotly_style(go.Figure(fig), p)
        if data is None:
            data = plotly_figure_data(pfig)
        if html:
            written["html"] = out / f"{name}.html"
            write_plotly_html(pfig, written["html"], plotlyjs_dir=plotlyjs_dir)
        width_px, height_px = round(p.width_in * PX_PER_IN), round(p.height_in * PX_PER_IN)
        scales = [p.dpi / PX_PER_IN if fmt == "png" else 1.0 for fmt in paths]
        reason = render_with_kaleido(pfig, list(paths.values()), width_px=width_px, height_px=height_px,
                                     scales=scales, timeout=timeout)
        if reason is None:
            renderer = "kaleido"
            if "png" in paths:
                _set_png_dpi(paths["png"], p.dpi)
        else:
            import matplotlib.pyplot as plt

            renderer = "matplotlib-fallback"
            with mpl_style(p):
                mfig = mpl_fallback(p) if mpl_fallback is not None else plotly_to_mpl(pfig, p)
            try:
                save_mpl(mfig, paths, p)
            finally:
                plt.close(mfig)
    elif _is_mpl(fig):
        renderer = "matplotlib"
        save_mpl(fig, paths, p)
    else:
        raise ExportError(f"cannot export a {type(fig).__name__}; pass a plotly or matplotlib Figure")
    written.update(paths)

    if data is not None:
        written["csv"] = out / f"{name}.csv"
        atomic_write(written["csv"], lambda t: data.to_csv(t, index=False))
    user = dict(card or {})
    meta = {
        "figure": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "workbench_version": _version(),
        "git_sha": git_sha(),
        "renderer": renderer,
        "fallback_reason": reason,
        "preset": asdict(p),
        "seed": user.get("seed"),
        "files": {k: v.name for k, v in written.items()},
        "run": user,
    }
    written["json"] = out / f"{name}.json"
    from workbench.io import write_json

    write_json(written["json"], meta)
    return written


def _version() -> str:
    import workbench

    return str(getattr(workbench, "__version__", "unknown"))
