"""CL-MEx stage 2: fine-tuning with per-view scores, from-scratch comparison, persistence, CLI."""

import json

import numpy as np
import pytest
import torch

from workbench.errors import MissingMetadataError, WorkbenchError
from workbench.evaluate.finetune import FinetuneResult, build_classifier, finetune
from workbench.runs import finetune_run

S = 32




@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    from workbench.data.synth import SynthConfig, generate_dataset
    from workbench.runs import load_run, pretrain
    from workbench.train import RunConfig

    root = tmp_path_factory.mktemp("finetune")
    man = generate_dataset(SynthConfig(identities=4, images_per_identity=8, size=S, views=5), root / "data",
                           progress=False)
    cfg = RunConfig.from_dict({
        "method": "clmex", "data": {"manifest": str(man), "image_size": S, "split": "train"},
        "model": {"backbone": "resnet10t"},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "knn_every": 0, "device": "cpu"},
        "method_config": {"proj_hidden_dim": 32, "proj_dim": 16}})
    pretrain(cfg, root / "run", progress=False)
    return load_run(root / "run"), man


def test_finetune_scores_every_view_and_is_saved(run_and_data):
    import pandas as pd

    run, man = run_and_data
    res = finetune_run(run, man, epochs=1, lr=1e-3, seed=0, device="cpu", batch_size=16, min_test_people=0)
    frame = pd.read_csv(man)
    test_views = sorted({str(v) for v in frame.loc[frame["split"] == "test", "view"]}, key=float)
    assert list(res.per_view) == test_views and len(test_views) == 5
    assert sum(d["n"] for d in res.per_view.values()) == res.n_test == int((frame["split"] == "test").sum())
    assert res.n_train == int(frame["split"].isin(["train", "val"]).sum())
    for d in res.per_view.values():
        assert 0.0 <= d["accuracy"] <= 1.0 and 0.0 <= d["macro_f1"] <= 1.0
    assert 0.0 <= res.accuracy <= 1.0 and len(res.train_loss) == 1 and np.isfinite(res.train_loss[0])
    assert not res.from_scratch and res.checkpoint == "last"
    saved = run.folder.analysis("x").parent
    files = sorted(p.name for p in saved.glob("finetune-*"))
    assert res.path and res.path.endswith(files[0]) and "finetune-last-" in files[0]
    back = FinetuneResult.load(res.path)
    assert back.per_view == res.per_view and back.accuracy == res.accuracy
    assert json.loads((saved / files[0] / "result.json").read_text())["kind"] == "finetune"
    assert "per view acc" in res.summary()


def test_from_scratch_uses_the_same_architecture_with_random_weights(run_and_data):
    run, man = run_and_data
    pre = build_classifier(run, 8, from_scratch=False, seed=0)
    scratch = build_classifier(run, 8, from_scratch=True, seed=0)
    run_sd = run.method.backbone.state_dict()
    assert all(torch.equal(v, run_sd[k]) for k, v in pre.backbone.state_dict().items())
    assert scratch.backbone.state_dict().keys() == run_sd.keys()
    assert not all(torch.equal(v, run_sd[k]) for k, v in scratch.backbone.state_dict().items())
    assert all(p.requires_grad for p in pre.parameters())  # the whole encoder is fine-tuned
    res = finetune_run(run, man, epochs=1, from_scratch=True, label_fraction=0.5, device="cpu", batch_size=16,
                   min_test_people=0)
    assert res.from_scratch and res.checkpoint == "scratch" and res.label_fraction == 0.5
    assert len(res.per_view) == 5 and res.n_train < 120
    saved = sorted(p.name for p in run.folder.analysis("x").parent.glob("finetune-scratch-*"))
    assert len(saved) == 1 and "-lf0.5-e1-lr0.001-b16-" in saved[0] and saved[0].endswith("-s0")
    # a longer fine-tune of the same run and data is a different result, not an overwrite
    finetune_run(run, man, epochs=2, from_scratch=True, label_fraction=0.5, device="cpu", batch_size=16,
             min_test_people=0)
    again = sorted(p.name for p in run.folder.analysis("x").parent.glob("finetune-scratch-*"))
    assert len(again) == 2 and any("-e2-" in name for name in again)


def test_finetune_errors(run_and_data, tmp_path):
    import pandas as pd

    run, man = run_and_data
    no_expr = man.parent / "no_expression.csv"
    pd.read_csv(man).drop(columns=["expression"]).to_csv(no_expr, index=False)
    with pytest.raises(MissingMetadataError, match="'expression'"):
        finetune(run, no_expr, epochs=1, device="cpu")
    with pytest.raises(WorkbenchError):
        finetune(run, man, epochs=0, device="cpu")
    with pytest.raises(WorkbenchError):
        FinetuneResult.load(tmp_path / "missing")


def test_cli_finetune_json(run_and_data, capsys):
    from workbench.cli.main import main

    run, man = run_and_data
    rc = main(["finetune", str(run.path), "--data", str(man), "--epochs", "1", "--label-fraction", "0.5",
               "--batch-size", "16", "--device", "cpu", "--seed", "1", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["kind"] == "finetune" and set(d["per_view"]) == {"-60.0", "-30.0", "0.0", "30.0", "60.0"}
    assert d["seed"] == 1 and "finetune-last-" in d["path"] and d["path"].endswith("-lf0.5-e1-lr0.001-b16-wd0.0001-aug-s1")


def test_few_test_people_are_scored_by_person_wise_cross_validation(run_and_data):
    """4 people, 1 of them in the test split: every person is scored once by a model that never saw them."""
    import pandas as pd

    run, man = run_and_data
    res = finetune(run, man, epochs=1, from_scratch=True, device="cpu", batch_size=16)
    assert "4-fold cross-validation over all 4" in res.split_rule and "1 < 12" in res.split_rule
    assert res.n_test == len(pd.read_csv(man)) and res.n_test_people == 4
    assert res.ci_low <= res.accuracy <= res.ci_high and len(res.train_loss) == 1
