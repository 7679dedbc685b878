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
    "multiview",
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
    "export",
    "benchmark",
    "lab",
)


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors on one line (``error: ... (see `workbench pretrain --help`)``), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        text = " ".join(str(message).split())
        self.exit(2, f"error: {text} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="workbench",
        description="FER-SSL Workbench: self-supervised facial-expression representations.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"workbench.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"workbench.cli.{name}":
                continue  # command not shipped in this build
            raise
        mod.register(sub)
    for name, command in sub.choices.items():
        if name in COMPUTING and not any("--threads" in a.option_strings for a in command._actions):
            command.add_argument("--threads", type=_threads_arg, default=None,
                                 help=f"CPU threads for torch and BLAS [default: the cores this process may use, "
                                      f"{available_cores()} here]")
    return parser


#: sub-commands that compute (they take --threads)
COMPUTING = ("demo", "study", "multiview", "synth", "manifest", "faces", "pretrain", "evaluate", "finetune", "separation",
             "umap", "attention", "figures", "export", "benchmark")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or a batch job's share)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _threads_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid thread count '{text}'") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"--threads must be between 1 and 4096, got {value}")
    return value


def limit_threads(threads: int | None) -> int:
    """Use ``threads`` (default: :func:`available_cores`) for torch's intra-op pool and every BLAS library
    (threadpoolctl): never more threads than cores, so scikit-learn and torch do not oversubscribe them."""
    import torch

    n = int(threads or available_cores())
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        _LIMITS.append(threadpool_limits(limits=n, user_api="blas"))  # torch's OpenMP pool is set above
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    return n


_LIMITS: list = []  # keeps the threadpoolctl limit alive for the command's lifetime


def main(argv: list[str] | None = None) -> int:
    from workbench.errors import WorkbenchError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    import torch

    previous_threads = torch.get_num_threads()
    if args.command in COMPUTING:
        limit_threads(getattr(args, "threads", None))
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
    except BrokenPipeError:  # `workbench methods | head -1`: the reader left; nothing to report
        _silence_stdout()
        return 0
    except OSError as exc:
        if debug:
            raise
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            raise
        print("error: out of memory (try a smaller --batch-size or --image-size)", file=sys.stderr)
        return 2
    finally:  # the limit lasts as long as the command (main() is also called in-process, by tests and notebooks)
        while _LIMITS:
            _LIMITS.pop().restore_original_limits()
        torch.set_num_threads(previous_threads)


def os_error_line(exc: OSError) -> str:
    """One line for a file-system error: what went wrong and on which path."""
    import errno

    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p)
    why = {
        errno.ENOENT: "not found", errno.EACCES: "permission denied (not writable or not readable)",
        errno.EPERM: "operation not permitted", errno.ENOTDIR: "a path component is a file, not a folder",
        errno.EISDIR: "is a folder, not a file", errno.ENOSPC: "no space left on the device",
        errno.EROFS: "read-only file system", errno.EEXIST: "already exists",
        errno.EDQUOT: "disk quota exceeded",
    }.get(exc.errno or -1, exc.strerror or type(exc).__name__)
    return f"{why}: {where}" if where else f"{why} ({type(exc).__name__})"


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
