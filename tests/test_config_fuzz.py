"""Property-based fuzzing of every configuration dataclass: any value for any option either builds the
config or raises one ConfigError with a one-line message; nothing else escapes (NaN, inf, huge and
negative numbers, wrong types, nested junk)."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.comparison import StudyConfig
from workbench.config import SEED_MAX, from_dict
from workbench.data.synth import SynthConfig
from workbench.demo import DemoConfig
from workbench.errors import ConfigError
from workbench.evaluate.protocols import EvalConfig
from workbench.methods import METHODS
from workbench.train.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.views.global_aug import GlobalViewConfig
from workbench.views.warp import LocalWarpConfig

CONFIGS = [DataConfig, ModelConfig, TrainConfig, SynthConfig, EvalConfig, DemoConfig, StudyConfig,
           GlobalViewConfig, LocalWarpConfig, *(cls.Config for cls in METHODS.values())]

#: hostile values: non-finite and huge numbers, negative, wrong types, nested structures, odd strings
VALUES = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), "nan", "inf", "-inf", 10**20, -(10**20), -1,
                     -5, 0, 1e300, -1e300, "", " ", None, True, [], {}, [1, 2], {"a": 1}, "none", "1e999",
                     "0x10", "\x00", "💥", 2**63, 2**32]),
    st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=4)), max_size=4),
)


def _config_field(data):
    cls = data.draw(st.sampled_from(CONFIGS), label="config")
    name = data.draw(st.sampled_from([f.name for f in fields(cls) if f.init]), label="field")
    return cls, name


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=VALUES)
def test_any_value_builds_or_raises_one_config_error(data, value):
    cls, name = _config_field(data)
    try:
        cfg = from_dict(cls, {name: value})
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    got = getattr(cfg, name)
    if isinstance(got, float):
        assert math.isfinite(got), (cls.__name__, name, value)
    if (name == "seed" or name.endswith("_seed")) and isinstance(got, int):
        assert 0 <= got <= SEED_MAX


@settings(max_examples=150, deadline=None)
@given(section=st.sampled_from(["data", "model", "train", "method_config"]), value=VALUES)
def test_run_config_sections_of_the_wrong_type(section, value):
    try:
        RunConfig.from_dict({"method": "simclr", section: value})
    except ConfigError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan"])
def test_nan_never_slips_past_a_bound(value):
    """NaN compares False with every bound: grad_clip=nan used to disable clipping silently."""
    with pytest.raises(ConfigError, match="finite"):
        from_dict(TrainConfig, {"grad_clip": value})
    with pytest.raises(ConfigError, match="finite"):
        from_dict(TrainConfig, {"lr": value})


def test_every_config_is_a_dataclass_with_help():
    for cls in CONFIGS:
        assert is_dataclass(cls)
        for f in fields(cls):
            if f.init:
                assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


PRETRAIN_FLAGS = ["--epochs", "--batch-size", "--image-size", "--lr", "--seed", "--device", "--max-steps",
                  "--devices", "--num-nodes", "--backbone", "--method", "--preset", "--split"]


@settings(max_examples=300, deadline=None)
@given(flag=st.sampled_from(PRETRAIN_FLAGS), text=st.one_of(
    st.text(min_size=1, max_size=16).filter(lambda t: not t.startswith("-")),
    st.sampled_from(["nan", "inf", "1e400", "99999999999999999999", "0", "1.5", "cuda:99", "meta", "mps"])))
def test_pretrain_flags_build_a_config_or_say_why_in_one_line(flag, text):
    """Arguments as a user (or a script) might mistype them: parsing + config building either succeeds or
    ends in one ``error:`` line (exit 2), never another exception."""
    import contextlib
    import io

    from workbench.cli.main import build_parser
    from workbench.cli.pretrain import build_config
    from workbench.device import select_device

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(["pretrain", "--out", "x", flag, text])
    except SystemExit as exc:
        err = stderr.getvalue().strip().splitlines()
        assert exc.code == 2 and len(err) == 1 and err[0].startswith("error:")
        return
    try:
        config = build_config(args)
        select_device(config.train.device)
    except ConfigError as exc:
        assert "\n" not in str(exc)
