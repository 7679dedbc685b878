"""Generate the guided notebooks from this file (the notebooks are build outputs: edit here).

    python notebooks/_build.py           # (re)write notebooks/*.ipynb, without outputs
    python notebooks/_build.py --check   # exit 1 when a committed notebook differs from this source

Cell ids are deterministic (``<notebook number>-<cell index>``) so diffs stay readable. Every
notebook has a cell tagged ``parameters`` (papermill convention): the tests inject tiny settings
after it, and so can ``papermill -p EPOCHS 2 ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]  # ("md" | "code" | "params", source)

COMMON_PARAMS = '''\
OUT = "../runs/notebooks"   # data, runs and figures of all notebooks go here (shared between them)
IDENTITIES = 16             # synthetic people (subject-disjoint train/val/test splits)
IMAGES_PER_IDENTITY = 24    # images per person, balanced over the 8 expressions
SIZE = 48                   # image size in px (48-64 on a CPU)
METHODS = ["simclr", "byol"]
BACKBONE = "resnet18"       # any timm model name; "resnet10t" is faster
EPOCHS = 5
BATCH_SIZE = 32
MAX_STEPS = 0               # > 0 stops pretraining early (smoke tests)'''

SETUP = '''\
from pathlib import Path

from workbench.widgets import ensure_runs, ensure_synth, find_runs

OUT = Path(OUT)
DATA = OUT / "data" / f"synth-{IDENTITIES}x{IMAGES_PER_IDENTITY}-{SIZE}px"
manifest = ensure_synth(DATA, identities=IDENTITIES, images_per_identity=IMAGES_PER_IDENTITY, size=SIZE)
runs = ensure_runs(OUT / "runs", manifest, METHODS, backbone=BACKBONE, image_size=SIZE, epochs=EPOCHS,
                   batch_size=BATCH_SIZE, max_steps=MAX_STEPS)  # reused when an earlier notebook made them
more_runs = [r for r in find_runs(OUT) if r not in runs]  # e.g. trained in 03: listed in every run picker
[r.name for r in runs], [r.name for r in more_runs]'''

SETUP_NOTE = ("The next cell makes the synthetic face set and the runs this notebook needs, or reuses them "
              "when another notebook already made them under `OUT` with the same settings. Every other "
              "trained run under `OUT` (for example one trained in notebook 03) is listed in the run pickers, "
              "unselected; the *Add* box under a picker adds run folders from anywhere.")

NOTEBOOKS: dict[str, list[Cell]] = {}

NOTEBOOKS["01_quickstart"] = [
    ("md", """\
# Quickstart: the whole loop in five cells

You will generate a synthetic face set with ground truth, pretrain two self-supervised methods, and
evaluate them with frozen-feature probes, all from Python. You will learn:

- what the **manifest** is (one CSV row per image: labels, identity, split, 68 landmarks);
- how a **run** is configured (`RunConfig`) and where it is written (a run folder);
- why expression is evaluated on **subject-disjoint** splits, and what **identity leakage** means.

Everything runs on a CPU in a few minutes; the GPU is used when there is one."""),
    ("params", COMMON_PARAMS),
    ("md", """\
## 1. Synthetic faces
Identities × 8 expressions (from FACS action units), random pose, light and background, 68 landmarks
per image. The contact sheet shows identities (rows) × expressions (columns) at their apex."""),
    ("code", '''\
from pathlib import Path

from IPython.display import Image

from workbench.data.manifest import Manifest
from workbench.data.synth import SynthConfig, generate_dataset, write_contact_sheet

OUT = Path(OUT)
DATA = OUT / "data" / f"synth-{IDENTITIES}x{IMAGES_PER_IDENTITY}-{SIZE}px"
if not (DATA / "manifest.csv").is_file():
    generate_dataset(SynthConfig(identities=IDENTITIES, images_per_identity=IMAGES_PER_IDENTITY, size=SIZE),
                     DATA, progress=False)
manifest = Manifest.load(DATA / "manifest.csv")
print(manifest.summary())
Image(filename=str(write_contact_sheet(DATA / "contact_sheet.png", size=64, identities=3)))'''),
    ("md", """\
## 2. Pretrain
One run per method. `RunConfig` holds every setting (see `workbench methods simclr` for a method's
options); the run folder gets `config.json`, `metrics.jsonl` and checkpoints. A finished run is reused."""),
    ("code", '''\
from workbench.methods import get_method
from workbench.runs import RunFolder, pretrain
from workbench.train import RunConfig
from workbench.widgets import recipe_name

runs = []
for method in METHODS:
    cfg = RunConfig.from_dict({
        "method": method,
        "data": {"manifest": str(manifest.path), "image_size": SIZE},
        "model": {"backbone": BACKBONE},
        "method_config": get_method(method).presets.get("cpu", {}),   # small heads for small data
        "train": {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "max_steps": MAX_STEPS, "lr": 2e-3, "log_every": 1},
    })
    run_dir = OUT / "runs" / recipe_name(method, BACKBONE, BATCH_SIZE, EPOCHS, DATA.name)
    if not RunFolder(run_dir).is_trained():
        result = pretrain(cfg, run_dir)
        print(method, result.status, "after", result.step, "steps")
    runs.append(run_dir)'''),
    ("md", """\
## 3. Evaluate
Frozen features of the backbone, two protocols (linear probe, weighted kNN) and two targets:
**expression** on identities never seen in training, and **identity** ("leakage": how well the
person can be recognised from the same features; lower is better for an expression embedding)."""),
    ("code", '''\
import pandas as pd

from workbench.evaluate.protocols import EvalConfig
from workbench.runs import evaluate_run, load_run

rows = []
for run_dir in runs:
    run = load_run(run_dir)
    row = {"run": run.name}
    for protocol in ("linear", "knn"):
        for target in ("expression", "identity"):
            res = evaluate_run(run, manifest, EvalConfig(protocol=protocol, target=target))
            row[f"{target} {protocol}"] = f"{res.accuracy:.3f} [{res.ci_low:.3f}, {res.ci_high:.3f}]"
            row["test people"] = res.n_test_people  # the split rule: res.split_rule
    rows.append(row)
print("mean [95% person-bootstrap interval];", res.split_rule)
table = pd.DataFrame(rows).set_index("run")
table'''),
    ("md", """\
## 4. Compare
The same comparison as a widget (the table, plus bars; switch to macro-F1 or fewer labels). Next:
`02_data_and_views` (the data and augmentations), `03_pretrain` (train from a form with live curves),
`04`–`08` (compare, explore embeddings, identity vs expression, attention, paper figures)."""),
    ("code", '''\
from workbench.widgets import RunComparison

RunComparison(runs, manifest, protocols=["expr_linear", "expr_knn", "identity_linear"])'''),
]

NOTEBOOKS["02_data_and_views"] = [
    ("md", """\
# Data and views

You will browse a manifest (faces with their 68 landmarks, labels, filters by expression, identity
and split) and look at every **view family** the SSL methods use, on the same faces:

- **global** augmentations (crop, flip, colour, blur: SimCLR/BYOL style),
- **local warping** of the mouth, eyes and brows (ContraWarping),
- **FaceSwap**: the inner face on another person's head (SSL-FER positives keep the expression),
- **part masking** of an eye or the mouth (SSL-FER),

and the items two samplers draw: **clip** samples (anchor, temporal positive, hard negative pair from
the same clip) and **multi-view** samples (one expression instance from several yaw angles)."""),
    ("params", COMMON_PARAMS),
    ("md", "A plain set, a clip set and a multi-view set (small ones are enough to look at)."),
    ("code", '''\
from pathlib import Path

from workbench.widgets import ManifestBrowser, ViewPreview, ensure_synth

OUT = Path(OUT)
DATA = OUT / "data" / f"synth-{IDENTITIES}x{IMAGES_PER_IDENTITY}-{SIZE}px"
manifest = ensure_synth(DATA, identities=IDENTITIES, images_per_identity=IMAGES_PER_IDENTITY, size=SIZE)
clips = ensure_synth(OUT / "data" / f"synth-clips-{SIZE}px", identities=4, images_per_identity=1, size=SIZE,
                     clips=True, clip_length=16)
views = ensure_synth(OUT / "data" / f"synth-views-{SIZE}px", identities=4, images_per_identity=2, size=SIZE,
                     views=5)'''),
    ("md", """\
## Browse the manifest
Filter by any label column; the green dots are the landmarks (they drive warping, FaceSwap, masking
and the Grad-CAM region scores later)."""),
    ("code", '''\
browser = ManifestBrowser(manifest, size=96, per_page=16)
browser'''),
    ("md", "Filters also work from code; `browser.shown` lists the manifest rows on screen."),
    ("code", '''\
browser.set_filter(expression="surprise")
browser.shown[:8]'''),
    ("md", """\
## Every view family side by side
Columns: the original, then one column per family, with each family forced on. Change the seed for
other random draws, or pick an expression. The sampler tabs show what one training item holds."""),
    ("code", '''\
preview = ViewPreview({"plain": manifest, "clips": clips, "multi-view": views}, size=SIZE, samples=4)
preview'''),
]

NOTEBOOKS["03_pretrain"] = [
    ("md", """\
# Pretrain from a form, with live curves

You will configure a run from forms generated from the method's own config (defaults, help and
bounds come from the library; choices are dropdowns; a value out of range is rejected with a red
message), start it, and watch it train while the notebook stays usable:

- **loss** per step;
- **online kNN** expression accuracy on the validation identities after each epoch;
- the **collapse monitor**: std ratio of the normalised projections (near 1 = healthy, near 0 =
  collapsed) and their effective rank (how many dimensions are actually used).

**Stop** saves a checkpoint (`last.safetensors`): tick *resume* and press Start to continue."""),
    ("params", COMMON_PARAMS + '''
METHOD = "simclr"
RUN_NOW = False             # True: start from code and wait (what the tests do); otherwise press Start'''),
    ("md", SETUP_NOTE.replace(" and the runs this notebook needs", "")),
    ("code", '''\
from pathlib import Path

from workbench.widgets import TrainPanel, ensure_synth

OUT = Path(OUT)
DATA = OUT / "data" / f"synth-{IDENTITIES}x{IMAGES_PER_IDENTITY}-{SIZE}px"
manifest = ensure_synth(DATA, identities=IDENTITIES, images_per_identity=IMAGES_PER_IDENTITY, size=SIZE)'''),
    ("md", """\
Pick a method (its presets: `cpu` for minutes on a laptop, `paper` for the published settings),
check the Data / Model / Training tabs, then press **Start**."""),
    ("code", '''\
panel = TrainPanel(manifest, OUT / "runs", method=METHOD, backbone=BACKBONE, image_size=SIZE,
                   train={"epochs": EPOCHS, "batch_size": BATCH_SIZE, "max_steps": MAX_STEPS, "lr": 2e-3},
                   name=f"{METHOD}_{BACKBONE}_from-form")
panel'''),
    ("md", "From code: the same panel can be started, stopped and read (`panel.records`, `panel.metrics_frame()`)."),
    ("code", '''\
if RUN_NOW:
    panel.set_method(METHOD, preset="cpu")
    panel.start()
    result = panel.wait()
    print(result.status, "->", panel.run_dir)
    display(panel.metrics_frame().tail())'''),
]

NOTEBOOKS["04_evaluate_compare"] = [
    ("md", """\
# Evaluate and compare runs

You will compare runs with the standard frozen-feature protocols, in one table and one plot:

| protocol | what it measures |
|---|---|
| `expr_linear` | linear probe on expression, **subject-disjoint** (test identities never seen) |
| `expr_knn` | weighted cosine kNN on expression, same-identity neighbours excluded |
| `identity_linear`, `identity_knn` | identity leakage: how well the person is recognised (lower = better for FER) |

*Labels* evaluates with 10 % or 1 % of the training labels (stratified): the semi-supervised view."""),
    ("params", COMMON_PARAMS),
    ("md", SETUP_NOTE),
    ("code", SETUP),
    ("code", '''\
from workbench.widgets import RunComparison

comparison = RunComparison(runs, manifest, more_runs=more_runs)
comparison'''),
    ("md", "The table is a DataFrame (`comparison.table`), e.g. for your own plots or a LaTeX table."),
    ("code", '''\
comparison.table.set_index("run").filter(like="_", axis=1).round(3)'''),
]

NOTEBOOKS["05_embedding_explorer"] = [
    ("md", """\
# Embedding explorer

You will look at the embedding space itself: a 2-D map (UMAP, or PCA for an instant linear view)
of every face under each run. Colour or facet by expression, identity or run; **hover** a point to
see the face; **box- or lasso-select** a cluster to see its faces and label counts. Clusters of one
identity mean the model encodes the person; clusters of one expression across people are what FER wants.

The second map follows one run **over training** (aligned UMAP keeps the axes comparable between
epochs): move the epoch slider."""),
    ("params", COMMON_PARAMS + '''
MAP_METHOD = "umap"         # "umap" or "pca" (instant; over training: one PCA per checkpoint)'''),
    ("md", SETUP_NOTE),
    ("code", SETUP),
    ("code", '''\
from workbench.analysis.study import umap_for_runs
from workbench.widgets import EmbeddingExplorer

emap = umap_for_runs(runs, manifest, method=MAP_METHOD, progress=True)   # cached in the run folders
explorer = EmbeddingExplorer(emap, color="expression", facet="run")
explorer'''),
    ("md", "Selections come back to Python (`explorer.selected` = map rows); you can also select from code:"),
    ("code", '''\
happy = emap.meta.index[(emap.meta["expression"] == "happiness") & (emap.meta["run"] == runs[0].name)]
explorer.select(happy[:12])
emap.meta.iloc[explorer.selected][["run", "expression", "identity", "split"]].head()'''),
    ("md", "## Over training"),
    ("code", '''\
from workbench.widgets import map_over_training

over = map_over_training(runs[0], manifest, method=MAP_METHOD, progress=True)
EmbeddingExplorer(over, color="expression")'''),
]

NOTEBOOKS["06_identity_vs_expression"] = [
    ("md", """\
# Identity vs expression

Does the embedding encode the expression, or just the person? You will score each run on both
factors with the same tools and read the headline:

- **expression**: linear probe and kNN on unseen identities, cross-identity retrieval (mAP@R: the
  nearest faces with the same expression must come from other people);
- **identity leakage**: linear probe and kNN for identity;
- **variance shares**: how much of the embedding's variance identity and expression explain;
- **expression-over-identity** = κ(expression) − κ(identity), from +1 (pure expression) to −1 (pure identity).

On the plane, good FER embeddings sit **top-left** (high expression accuracy, low identity leakage)."""),
    ("params", COMMON_PARAMS),
    ("md", SETUP_NOTE),
    ("code", SETUP),
    ("code", '''\
from workbench.widgets import SeparationPanel

separation = SeparationPanel(runs, manifest, more_runs=more_runs)
separation'''),
    ("md", "One run's full report, and the same scores at every checkpoint (does training remove identity?):"),
    ("code", '''\
name = runs[0].name
print(separation.reports[name].summary())
separation.track(name).plot(title=f"{name} over training")'''),
]

NOTEBOOKS["07_attention"] = [
    ("md", """\
# Where does the model look?

You will compute Grad-CAM maps for SSL encoders (no classifier needed: the target is the cosine
similarity to the face's expression prototype, to its identity centroid, to another view of itself,
or a linear-probe logit) and score them per facial region from the 68 landmarks:

- overlays with landmarks, runs side by side;
- region bars: attention mass / area (1 = uniform) per expression; an expression model should
  look at the mouth for happiness and at the brows and eyes for surprise;
- the **pointing game**: is the peak inside a region the expression moves?"""),
    ("params", COMMON_PARAMS + '''
TARGET = "prototype"        # prototype | identity | view | probe
FACES_PER_EXPRESSION = 2'''),
    ("md", SETUP_NOTE),
    ("code", SETUP),
    ("code", '''\
from workbench.widgets import AttentionPanel

attention = AttentionPanel(runs, manifest, more_runs=more_runs, target=TARGET, n_per_expression=FACES_PER_EXPRESSION)
attention'''),
    ("md", "Per-expression region scores of one run as a table (`AttentionResult.summary()`):"),
    ("code", '''\
attention.results[runs[0].name].summary().round(2)'''),
]

NOTEBOOKS["08_paper_figures"] = [
    ("md", """\
# Paper figures

You will export the standard figure set for the chosen runs: training curves, probe comparison,
identity-vs-expression bars, map panels and Grad-CAM grids. Each figure is written as **PDF, SVG
and 300-dpi PNG**, with its **source data as CSV** and a **JSON card** (run configs, seed, code
version), plus `results.tex` (a booktabs table). Styles: `single` / `double` column, `slide`."""),
    ("params", COMMON_PARAMS + '''
FIGURES = None              # None = all; or e.g. ["training_curves", "probe_comparison"]
MAP_METHOD = "umap"
EXPORT = False              # True: export from code (what the tests do); otherwise press Export
TIMEOUT = 60.0              # seconds per static export before the matplotlib fallback'''),
    ("md", SETUP_NOTE),
    ("code", SETUP),
    ("code", '''\
from workbench.widgets import FigurePanel

figures = FigurePanel(runs, manifest, OUT / "figures", more_runs=more_runs, figures=FIGURES, umap_method=MAP_METHOD, timeout=TIMEOUT)
figures'''),
    ("code", '''\
if EXPORT:
    written = figures.export()
    print("\\n".join(f"{k}: {v}" for k, v in written.items()))'''),
]


def build(stem: str, cells: list[Cell]) -> nbformat.NotebookNode:
    """One notebook with deterministic cell ids and no outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    prefix = stem.split("_")[0]
    for i, (kind, source) in enumerate(cells):
        cid = f"{prefix}-{i:02d}"
        if kind == "md":
            cell = nbformat.v4.new_markdown_cell(source, id=cid)
        else:
            cell = nbformat.v4.new_code_cell(source, id=cid)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for stem, cells in NOTEBOOKS.items():
        path = HERE / f"{stem}.ipynb"
        text = render(build(stem, cells))
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if check and stale:
        print("out of date (run python notebooks/_build.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
