"""The ``workbench`` console script.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds a parser
with ``set_defaults(func=run)``; ``run(args) -> int`` returns the exit code. User errors
(:class:`~workbench.errors.WorkbenchError`) print one line and exit non-zero; ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command modules, in the order ``workbench --help`` lists them
COMMANDS = (
    "demo",
    "study",
    "synth",
    "manifest",
    "faces",
    "methods",
    "pretrain",
    "evaluate",
    "finetune",
    "separation",
    "umap",
    "attention",
    "figures",
    "benchmark",
    "lab",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="FER-SSL Workbench: self-supervised facial-expression representations.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"workbench.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"workbench.cli.{name}":
                continue  # command not shipped in this build
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from workbench.errors import WorkbenchError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except FileNotFoundError as exc:
        if debug:
            raise
        print(f"error: file not found: {exc.filename or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
