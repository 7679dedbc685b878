"""User-facing errors.

Every problem caused by the user's input (a bad manifest, a missing column, an unknown method...)
raises :class:`WorkbenchError` with a one-line, actionable message. The CLI prints the message and
exits non-zero; ``--debug`` shows the traceback. Anything else is a bug in the workbench.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """A user error with a clear one-line message (printed by the CLI without a traceback)."""

    exit_code: int = 2

    def __str__(self) -> str:
        # one line whatever the message quotes (a newline typed into --device, a file name with a tab...)
        return " ".join(super().__str__().split())


class ManifestError(WorkbenchError):
    """The manifest (or the files it points to) cannot be used as given."""


class ConfigError(WorkbenchError):
    """A configuration value is invalid or inconsistent."""


class MissingMetadataError(WorkbenchError):
    """A method needs a manifest column (e.g. ``clip``) that the data does not provide."""


class CheckpointError(WorkbenchError):
    """A checkpoint is missing, corrupt, or not a safe tensor-only file."""


class ResultsError(WorkbenchError):
    """A saved results folder is missing, damaged, of another kind or from a newer workbench."""


class TrainingDiverged(WorkbenchError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


class OptionalDependencyError(WorkbenchError):
    """An optional heavy dependency is missing; the message says what to install."""


def require(module: str, extra: str | None = None, purpose: str = ""):
    """Import an optional module lazily, or raise an actionable :class:`OptionalDependencyError`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only when missing
        hint = f"pip install 'workbench[{extra}]'" if extra else f"pip install {module}"
        why = f" (needed for {purpose})" if purpose else ""
        raise OptionalDependencyError(f"'{module}' is not installed{why}: run {hint}") from exc
