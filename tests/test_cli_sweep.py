"""CLI sweep: every sub-command with missing, wrong-typed and out-of-range arguments and with an output
folder that cannot be created. Each must end in exactly one ``error:`` line on stderr, a non-zero exit
and no traceback (argparse usage errors included)."""

from __future__ import annotations

import pytest

from workbench.cli.main import COMMANDS, main

MISSING = [
    ["pretrain"], ["evaluate"], ["finetune"], ["separation"], ["umap", "{run}"], ["attention", "{run}",
    "--data", "{synth}"], ["figures"], ["faces"], ["manifest", "build", "jaffe"], ["manifest", "stats"],
    ["manifest", "validate"], ["benchmark"], ["methods", "nosuch"], ["nosuch"], ["export", "{run}"],
    ["multiview", "--out", "{tmp}/mv", "--manifest", "{tmp}/nope.csv"],
]
WRONG_TYPE = [
    ["synth", "--out", "{tmp}/s", "--identities", "many"],
    ["demo", "--out", "{tmp}/d", "--epochs", "x"],
    ["study", "--out", "{tmp}/st", "--seeds", "a,b"],
    ["study", "--out", "{tmp}/st", "--synthetic", "perhaps"],
    ["multiview", "--out", "{tmp}/mv", "--views", "many"],
    ["finetune", "{run}", "--data", "{synth}", "--epochs", "x"],
    ["attention", "{run}", "--data", "{synth}", "--out", "{tmp}/a", "--per-expression", "x"],
    ["umap", "{run}", "--data", "{synth}", "--out", "{tmp}/u", "--seed", "x"],
    ["faces", "{synth}", "--out", "{tmp}/f", "--size", "big"],
    ["benchmark", "--out", "{tmp}/b", "--images", "x"],
    ["evaluate", "{run}", "--data", "{synth}", "--label-fraction", "x"],
    ["pretrain", "--data", "{synth}", "--out", "{tmp}/p", "--lr", "fast"],
    ["separation", "{run}", "--data", "{synth}", "--seed", "x"],
    ["figures", "{run}", "--data", "{synth}", "--out", "{tmp}/g", "--seed", "1.5"],
    ["lab", "--port", "http", "--dry-run"],
]
OUT_OF_RANGE = [
    ["synth", "--out", "{tmp}/s", "--identities", "-3"],
    ["synth", "--out", "{tmp}/s", "--zoom", "inf"],
    ["demo", "--out", "{tmp}/d", "--lr", "nan"],
    ["demo", "--out", "{tmp}/d", "--seed", "-1"],
    ["study", "--out", "{tmp}/st", "--seeds", "-1"],
    ["multiview", "--out", "{tmp}/mv", "--views", "1"],
    ["multiview", "--out", "{tmp}/mv", "--label-fraction", "0"],
    ["evaluate", "{run}", "--data", "{synth}", "--label-fraction", "7"],
    ["evaluate", "{run}", "--data", "{synth}", "--seed", "-4"],
    ["finetune", "{run}", "--data", "{synth}", "--epochs", "-1"],
    ["finetune", "{run}", "--data", "{synth}", "--label-fraction", "0"],
    ["finetune", "{run}", "--data", "{synth}", "--lr", "nan"],
    ["attention", "{run}", "--data", "{synth}", "--out", "{tmp}/a", "--per-expression", "0"],
    ["umap", "{run}", "--data", "{synth}", "--out", "{tmp}/u", "--seed", "-1"],
    ["separation", "{run}", "--data", "{synth}", "--seed", "99999999999999999999"],
    ["pretrain", "--data", "{synth}", "--out", "{tmp}/p", "--epochs", "0"],
    ["pretrain", "--data", "{synth}", "--out", "{tmp}/p", "--batch-size", "-2"],
    ["faces", "{synth}", "--out", "{tmp}/f", "--size", "0"],
    ["benchmark", "--out", "{tmp}/b", "--images", "-5"],
    ["lab", "--port", "0", "--dry-run"],
]
UNWRITABLE = [  # {file} is a regular file, so nothing can be created below it
    ["synth", "--out", "{file}/s", "--identities", "2", "--images-per-identity", "8", "--size", "32"],
    ["pretrain", "--data", "{synth}", "--out", "{file}/p", "--max-steps", "1", "--backbone", "resnet10t",
     "--image-size", "32", "--batch-size", "16", "--device", "cpu", "--quiet"],
    ["faces", "{synth}", "--out", "{file}/f"],
    ["umap", "{run}", "--data", "{synth}", "--out", "{file}/u", "--method", "pca"],
    ["attention", "{run}", "--data", "{synth}", "--out", "{file}/a", "--per-expression", "1"],
    ["figures", "{run}", "--data", "{synth}", "--out", "{file}/g", "--figures", "training_curves"],
    ["demo", "--out", "{file}/d"],
    ["study", "--out", "{file}/st"],
    ["multiview", "--out", "{file}/mv"],
    ["benchmark", "--out", "{file}/b"],
    ["manifest", "build", "folder", "--root", "{tmp}", "--out", "{file}/m.csv"],
    ["export", "{run}", "--out", "{file}/b.safetensors"],
]


def _run(argv, tiny_run, tiny_synth, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    argv = [a.format(tmp=tmp_path, file=afile, run=tiny_run, synth=tiny_synth) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    err = [x for x in captured.err.strip().splitlines() if x.strip()]
    assert code not in (0, None), (argv, captured.out[-300:], captured.err[-300:])
    assert "Traceback" not in captured.err, captured.err[-2000:]
    assert len(err) == 1 and err[0].startswith("error:"), (argv, err)
    return err[0]


@pytest.mark.parametrize("argv", MISSING + WRONG_TYPE + OUT_OF_RANGE, ids=lambda a: " ".join(a)[:60])
def test_bad_arguments_are_one_line(argv, tiny_run, tiny_synth, tmp_path, capsys):
    _run(argv, tiny_run, tiny_synth, tmp_path, capsys)


@pytest.mark.parametrize("argv", UNWRITABLE, ids=lambda a: a[0] + (" " + a[1] if a[0] == "manifest" else ""))
def test_an_output_that_cannot_be_created_is_one_line(argv, tiny_run, tiny_synth, tmp_path, capsys):
    line = _run(argv, tiny_run, tiny_synth, tmp_path, capsys)
    assert "afile" in line, line


def test_the_sweep_covers_every_command():
    swept = {a[0] for a in MISSING + WRONG_TYPE + OUT_OF_RANGE + UNWRITABLE}
    assert set(COMMANDS) <= swept, set(COMMANDS) - swept
