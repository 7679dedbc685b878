"""`workbench pretrain`: self-supervised pretraining of one method into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.cli import seed_arg


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain an SSL method into a run folder",
        description="Pretrain an SSL method. Options come from --config YAML, then --preset, then flags "
                    "(later wins). Without --data a synthetic face set suited to the method is generated.",
        epilog=_options_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="manifest CSV (default: a generated synthetic set)")
    p.add_argument("--method", default=None, help="method name (see `workbench methods`) [default: simclr]")
    p.add_argument("--backbone", default=None, help="timm model name [default: resnet18]")
    p.add_argument("--weights", default=None, help="local backbone weights (.safetensors) to start from")
    p.add_argument("--small-stem", action="store_true", default=None,
                   help="timm ResNets: 3x3 stride-1 stem without max-pool, for 1-2 px cues at 48-64 px "
                        "(ModelConfig.small_stem) [default: off]")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=seed_arg, default=None)
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps (smoke tests)")
    p.add_argument("--devices", type=int, default=None,
                   help="processes per node (GPUs, or CPU processes with --device cpu); > 1 = DDP through "
                        "Lightning Fabric, --batch-size stays the global batch [default: 1]")
    p.add_argument("--strategy", default=None,
                   help="ddp (default: re-runs this command per extra device; under torchrun/SLURM nothing is "
                        "launched) | ddp_spawn | ddp_fork | ddp_find_unused_parameters_true")
    p.add_argument("--num-nodes", type=int, default=None,
                   help="machines; > 1 needs torchrun or SLURM srun (see docs/SCALING.md) [default: 1]")
    p.add_argument("--split", default=None, help="split to train on: train (default) | all")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--config", help="YAML file with a RunConfig (method, data, model, train, method_config)")
    p.add_argument("--preset", help="method preset: 'cpu' (minutes on a CPU) or 'paper' (published defaults)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="method option (repeatable), e.g. --opt temperature=0.2")
    p.add_argument("--train-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="training option (repeatable), e.g. --train-opt warmup_epochs=0")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _options_epilog() -> str:
    """Every training option (``--train-opt KEY=VALUE`` / YAML ``train:``), generated from TrainConfig with
    its help text; method options: ``workbench methods NAME``."""
    import textwrap

    from workbench.config import describe
    from workbench.train.config import TrainConfig

    lines = ["training options (--train-opt KEY=VALUE, or the YAML section train:):"]
    for spec in describe(TrainConfig):
        choices = f" {{{', '.join(map(str, spec.choices))}}}" if spec.choices else ""
        text = f"{spec.name} [default: {spec.default}]{choices}: {spec.help}"
        lines += textwrap.wrap(text, width=100, initial_indent="  ", subsequent_indent="      ")
    lines += ["", "method options (--opt KEY=VALUE): `workbench methods NAME` lists them with their help."]
    return "\n".join(lines)


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
    from workbench.train import RunConfig

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
    for key, attr in (("manifest", "data"), ("image_size", "image_size"), ("split", "split")):
        v = getattr(args, attr, None)
        if v is not None:
            d["data"][key] = v
    for key in ("backbone", "weights", "small_stem"):
        if getattr(args, key) is not None:
            d["model"][key] = getattr(args, key)
    for key in ("epochs", "batch_size", "lr", "seed", "device", "max_steps", "devices", "strategy", "num_nodes"):
        if getattr(args, key) is not None:
            d["train"][key] = getattr(args, key)
    d["train"].update(parse_kv(args.train_opt, "--train-opt"))
    return RunConfig.from_dict(d)


def run(args: argparse.Namespace) -> int:
    from workbench.train import pretrain

    config = build_config(args)
    from workbench.train.trainer import select_device

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
