"""The GPU check's CPU rehearsal: every step runs, is time-boxed and reported (benchmarks/gpu_check.sh)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cpu_rehearsal_runs_every_step(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=840, cwd=ROOT)
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report["steps"]) == {"env", "pytest", "methods", "bench", "study"}
    failed = {k: v["tail"][-600:] for k, v in report["steps"].items() if v["status"] != "ok"}
    assert not failed and proc.returncode == 0, failed
    methods = report["steps"]["methods"]["methods"]
    from workbench.methods import METHODS

    assert set(methods) == set(METHODS) and all(r["status"] == "ok" for r in methods.values())
    assert methods["simfle"]["image_size"] >= 96 and methods["mae"]["backbone"].startswith("vit")
    md = (out / "gpu_check.md").read_text()
    assert "| methods | ok |" in md and "## benchmark" in md and "## study" in md
    assert report["env"]["torch"]


def test_a_step_that_overruns_is_reported_not_fatal(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    res = gpu_check._run_step("sleep", [sys.executable, "-c", "import time; print('started', flush=True); "
                                        "time.sleep(30)"], 2, tmp_path)
    assert res["status"] == "timed out after 2 s" and res["seconds"] < 20
    assert (tmp_path / "sleep.log").is_file()
