"""The guided notebooks: built from ``notebooks/_build.py`` and executed headlessly with tiny settings.

Each notebook runs in a fresh kernel (nbclient) with parameters injected after its ``parameters``
cell; any error output, or a traceback on stderr, fails the test. The notebooks share one ``OUT``
folder in notebook order (as a user would): notebook 01 makes the runs the others reuse (each also
creates them when missing, see ``ensure_runs`` in test_widgets and the browser test's fresh folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))

#: tiny settings: 6 identities x 8 images at 32 px, resnet10t, 2 epochs of 2 steps (so that aligned
#: maps and tracks over training have 2 checkpoints)
TINY: dict[str, Any] = {"IDENTITIES": 6, "IMAGES_PER_IDENTITY": 8, "SIZE": 32, "BACKBONE": "resnet10t",
                        "EPOCHS": 2, "BATCH_SIZE": 16, "MAX_STEPS": 0}
EXTRA: dict[str, dict[str, Any]] = {
    "03_pretrain.ipynb": {"RUN_NOW": True},
    "05_embedding_explorer.ipynb": {"MAP_METHOD": "pca"},
    "07_attention.ipynb": {"FACES_PER_EXPRESSION": 1},
    "08_paper_figures.ipynb": {"EXPORT": True, "MAP_METHOD": "pca", "TIMEOUT": 30.0,
                               "FIGURES": ["training_curves", "probe_comparison", "separation_bars"]},
}
CELL_TIMEOUT = 240


def kernel_env(tmp: Path) -> dict[str, str]:
    """Environment for a test kernel: this interpreter's kernelspec, the repo importable, an isolated cache."""
    spec = tmp / "jupyter-data" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (workbench tests)", "language": "python"}), encoding="utf-8")
    env = {
        "JUPYTER_PATH": str(tmp / "jupyter-data"),
        "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"),
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "MPLCONFIGDIR": str(tmp / "mpl"),
        "WORKBENCH_CACHE": os.environ.get("WORKBENCH_CACHE") or str(tmp / "cache"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    return env


def with_parameters(nb: Any, params: dict[str, Any]) -> Any:
    """Insert an ``injected-parameters`` cell after the ``parameters`` cell (papermill's convention)."""
    import nbformat

    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, id="injected-parameters")
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(idx + 1, cell)
    return nb


def problems(nb: Any) -> list[str]:
    """Error outputs and stderr tracebacks of an executed notebook."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("output_type") == "stream" and out.get("name") == "stderr" and \
                    "Traceback (most recent call last)" in out.get("text", ""):
                found.append(f"cell {i}: traceback on stderr:\n{out['text'][-2000:]}")
            data = out.get("data", {})
            if "text/html" in data and "wb-msg-error" in str(data["text/html"]):
                found.append(f"cell {i}: error message shown: {str(data['text/html'])[:300]}")
    return found


def widget_errors(nb: Any) -> list[str]:
    """Red panel messages (``wb-msg-error``) left in the saved widget state."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return [str(m.get("state", {}).get("value"))[:300] for m in state.values()
            if "wb-msg-error" in str(m.get("state", {}).get("value", ""))]


def run_notebook(name: str, out: Path, tmp: Path, params: dict[str, Any] | None = None) -> tuple[Any, float]:
    """Execute ``notebooks/name`` with the tiny settings (+ ``params``); returns (notebook, seconds)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    with_parameters(nb, {"OUT": str(out), **TINY, **EXTRA.get(name, {}), **(params or {})})
    old = dict(os.environ)
    os.environ.update(kernel_env(tmp))
    t0 = time.perf_counter()
    try:
        NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=True, store_widget_state=True,
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb, time.perf_counter() - t0


def test_notebooks_are_built_from_source():
    """The committed notebooks equal what ``notebooks/_build.py`` writes (and carry no outputs)."""
    res = subprocess.run([sys.executable, str(NOTEBOOKS / "_build.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(NAMES) == 8
    for name in NAMES:
        nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
        tags = [c.get("metadata", {}).get("tags", []) for c in nb["cells"]]
        assert sum("parameters" in t for t in tags) == 1, name
        assert nb["cells"][0]["cell_type"] == "markdown", name
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb["cells"] if c["cell_type"] == "code"), name


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-out")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, shared_out, tmp_path):
    nb, seconds = run_notebook(name, shared_out, tmp_path)
    found = problems(nb) + widget_errors(nb)
    assert not found, "\n".join(found)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "not every cell ran"
    views = sum("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                for c in code for o in c.get("outputs", []))
    assert views >= 1, f"{name}: no widget displayed"
    print(f"{name}: {seconds:.1f} s")
