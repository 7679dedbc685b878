"""Config dataclasses: strict parsing, coercion, bounds, argparse and YAML round trips."""

import argparse
from dataclasses import dataclass

import pytest

from workbench.config import add_arguments, args_to_dict, describe, from_dict, load_yaml, param, to_dict
from workbench.errors import ConfigError
from workbench.train import RunConfig


@dataclass
class Demo:
    temperature: float = param(0.1, "τ", min=1e-3)
    mode: str = param("a", "mode", choices=("a", "b"))
    sizes: tuple[int, ...] = param((1, 2), "sizes")
    flag: bool = param(False, "flag")


def test_from_dict_coerces_and_validates():
    cfg = from_dict(Demo, {"temperature": "0.5", "sizes": "3, 4", "flag": "yes"})
    assert cfg.temperature == 0.5 and cfg.sizes == (3, 4) and cfg.flag is True
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        from_dict(Demo, {"temprature": 1})
    with pytest.raises(ConfigError, match=">= 0.001"):
        from_dict(Demo, {"temperature": 0})
    with pytest.raises(ConfigError, match="one of a, b"):
        from_dict(Demo, {"mode": "c"})
    with pytest.raises(ConfigError, match="must be float"):
        from_dict(Demo, {"temperature": "hot"})


def test_argparse_and_describe():
    p = argparse.ArgumentParser()
    add_arguments(p, Demo)
    ns = p.parse_args(["--temperature", "0.2"])
    assert args_to_dict(ns, Demo) == {"temperature": "0.2"}
    specs = {s.name: s for s in describe(Demo)}
    assert specs["mode"].choices == ("a", "b") and specs["temperature"].help == "τ"


def test_run_config_round_trip_and_method_options(tmp_path):
    rc = RunConfig.from_dict({"method": "byol", "train": {"epochs": 3}, "method_config": {"momentum": 0.9}})
    again = RunConfig.from_dict(to_dict(rc))
    assert again == rc
    assert rc.build_method_config().momentum == 0.9
    bad = RunConfig.from_dict({"method": "byol", "method_config": {"momentm": 0.9}})
    with pytest.raises(ConfigError, match="did you mean 'momentum'"):
        bad.build_method_config()
    y = tmp_path / "c.yaml"
    y.write_text("method: simclr\ntrain:\n  epochs: 2\n")
    assert RunConfig.from_dict(load_yaml(y)).train.epochs == 2
    y.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(y)
