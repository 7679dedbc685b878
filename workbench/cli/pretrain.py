"""`workbench pretrain`: self-supervised pretraining of one method into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: the run config's sections whose fields become flags (every field, with its help text and default)
_SECTIONS = ("data", "model", "train")
#: fields whose flag is not ``--field-name``
_FLAG_NAMES = {"manifest": "--data"}


def _section_classes() -> dict[str, type]:
    from workbench.train.config import DataConfig, ModelConfig, TrainConfig

    return {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def register(sub) -> None:
    from workbench.config import add_arguments

    p = sub.add_parser(
        "pretrain", help="pretrain an SSL method into a run folder",
        description="Pretrain an SSL method. Options come from --config YAML, then --preset, then flags "
                    "(later wins). Without --data a synthetic face set suited to the method is generated. "
                    "Every option of the run config has a flag below (from the config's own help).",
        epilog="method options (--opt KEY=VALUE): `workbench methods NAME` lists them with their help.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    p.add_argument("--method", default=None, help="method name (see `workbench methods`) [default: simclr]")
    p.add_argument("--config", help="YAML file with a RunConfig (method, data, model, train, method_config)")
    p.add_argument("--preset", help="method preset: 'cpu' (minutes on a CPU), 'paper' (published defaults), "
                                    "'tiny' (tests)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="method option (repeatable), e.g. --opt temperature=0.2")
    p.add_argument("--train-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="training option as KEY=VALUE (repeatable; the same as its flag below)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    titles = {"data": "data (DataConfig)", "model": "model (ModelConfig)", "train": "training (TrainConfig)"}
    for section, cls in _section_classes().items():
        add_arguments(p, cls, title=titles[section], flags=_FLAG_NAMES)
    p.set_defaults(func=run)


def parse_kv(items: list[str], what: str) -> dict[str, str]:
    from workbench.errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{what} must look like KEY=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def build_config(args: argparse.Namespace):
    """RunConfig from YAML + preset + flags (in that order of precedence, lowest first)."""
    from workbench.config import load_yaml
    from workbench.errors import ConfigError
    from workbench.methods import get_method
    from workbench.train.config import RunConfig

    d = load_yaml(args.config) if args.config else {}
    for section in ("data", "model", "train", "method_config"):
        value = d.setdefault(section, {})
        if value is None:
            d[section] = {}
        elif not isinstance(value, dict):
            raise ConfigError(f"{args.config}: '{section}' must be a mapping of option: value, got "
                              f"{type(value).__name__} {value!r}"[:200])
    if args.method:
        d["method"] = args.method
    method = get_method(d.get("method", "simclr"))
    d["method"] = method.name
    if args.preset:
        if args.preset not in method.presets:
            raise ConfigError(f"method '{method.name}' has no preset '{args.preset}' "
                              f"(available: {', '.join(method.presets) or 'none'})")
        d["method_config"] = {**method.presets[args.preset], **d["method_config"]}
    d["method_config"].update(parse_kv(args.opt, "--opt"))
    from workbench.config import args_to_dict

    d["train"].update(parse_kv(args.train_opt, "--train-opt"))
    for section, cls in _section_classes().items():  # a flag wins over --train-opt
        d[section].update(args_to_dict(args, cls))
    return RunConfig.from_dict(d)


def run(args: argparse.Namespace) -> int:
    from workbench.device import select_device
    from workbench.runs import pretrain

    config = build_config(args)
    select_device(config.train.device)  # checks before a synthetic set is generated
    if config.train.num_nodes > 1:
        from workbench.train.distributed import check_launch

        check_launch(config)
    if not config.data.manifest:
        from workbench.data.synth_sets import synthetic_manifest_for
        from workbench.methods import get_method

        manifest = synthetic_manifest_for(get_method(config.method).synth_mode, size=config.data.image_size)
        print(f"no --data given: using the synthetic set {manifest}")
        config.data.manifest = str(manifest)
    result = pretrain(config, Path(args.out), resume=args.resume, progress=not args.quiet)
    from workbench.train.distributed import global_rank

    if global_rank() != 0:  # a DDP worker started by `--strategy ddp`: rank 0 reports
        return 0
    m = result.last_metrics
    print(f"{result.status}: {config.method} epoch {result.epoch} step {result.step} "
          f"loss {m.get('loss', float('nan')):.4f} -> {result.run_dir}")
    if result.status == "interrupted":
        print(f"interrupted: checkpoint saved; continue with --resume --out {result.run_dir}", file=sys.stderr)
        return 130
    return 0
