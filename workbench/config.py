"""One dataclass per component; the CLI flags, YAML files and widget forms are generated from it.

Declare fields with :func:`param` so that each carries its help text (defaults and practical
advice) and optional choices / bounds::

    @dataclass
    class SimCLRConfig:
        temperature: float = param(0.1, "NT-Xent temperature; lower = harder negatives (0.07-0.5).", min=1e-3)

Helpers:
- :func:`to_dict` / :func:`from_dict` (strict: unknown keys and wrong types are clear errors),
- :func:`add_arguments` / :func:`from_args` for argparse,
- :func:`load_yaml`,
- :func:`describe` gives :class:`FieldSpec` rows for forms (the widgets use it).
"""

from __future__ import annotations

import argparse
import difflib
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from workbench.errors import ConfigError

T = TypeVar("T")

#: integers beyond int64 cannot reach torch or numpy; every int option is bounded by it
INT_LIMIT = 2**63 - 1
#: seeds (fields named ``seed`` or ``*_seed``) go to numpy, which takes 0 .. 2**32 - 1
SEED_MAX = 2**32 - 1


def param(default: Any, help: str, *, choices: typing.Sequence[Any] | None = None,
          min: float | None = None, max: float | None = None) -> Any:
    """A dataclass field with its help text, choices and bounds (used by CLI, YAML and widgets)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": min, "max": max}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """What a form needs to know about one config field."""

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    min: float | None
    max: float | None


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip Optional: returns (type, optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return args[0], optional
    return tp, False


def describe(cls_or_obj: Any) -> list[FieldSpec]:
    """Field specs of a config dataclass (class or instance), in declaration order."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    hints = _resolved_types(cls)
    out = []
    for f in fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        if not isinstance(cls_or_obj, type):
            default = getattr(cls_or_obj, f.name)
        m = f.metadata
        out.append(FieldSpec(f.name, hints.get(f.name, Any), default, m.get("help", ""),
                             m.get("choices"), m.get("min"), m.get("max")))
    return out


def _coerce(name: str, value: Any, tp: Any) -> Any:
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"'{name}' may not be empty")
    if isinstance(value, str) and optional and value.strip().lower() in ("none", "null", ""):
        return None
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if base is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            number = int(value)
            if not -INT_LIMIT <= number <= INT_LIMIT:
                raise ConfigError(f"'{name}' is out of range ({value!r}; at most {INT_LIMIT} in size)")
            return number
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(f"'{name}' must be a finite number, got {value!r}")
            return number
        if base is str:
            return str(value)
        if base is Path:
            return Path(value)
        if origin in (tuple, list):
            args = typing.get_args(base)
            item_t = args[0] if args else Any
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            items = [_coerce(name, v, item_t) if item_t is not Any and item_t is not Ellipsis else v
                     for v in value]
            return tuple(items) if origin is tuple else list(items)
        if origin is dict or base is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"'{name}' must be {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def _check_bounds(cls: type, obj: Any) -> None:
    for f in fields(cls):
        m = f.metadata
        v = getattr(obj, f.name)
        if v is None:
            continue
        if m.get("choices") and v not in m["choices"]:
            raise ConfigError(f"'{f.name}' must be one of {', '.join(map(str, m['choices']))}, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"'{f.name}' must be a finite number, got {v}")
            if f.name == "seed" or f.name.endswith("_seed"):
                if not 0 <= v <= SEED_MAX:
                    raise ConfigError(f"'{f.name}' must be between 0 and {SEED_MAX}, got {v}")
            if m.get("min") is not None and v < m["min"]:
                raise ConfigError(f"'{f.name}' must be >= {m['min']}, got {v}")
            if m.get("max") is not None and v > m["max"]:
                raise ConfigError(f"'{f.name}' must be <= {m['max']}, got {v}")


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "") -> T:
    """Build a config from a plain dict; unknown keys, wrong types and out-of-range values raise ConfigError."""
    data = dict(data or {})
    hints = _resolved_types(cls)
    names = [f.name for f in fields(cls) if f.init]
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        guess = difflib.get_close_matches(k, names, n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}unknown option '{k}'{hint}")
    kwargs = {}
    for k, v in data.items():
        tp = hints.get(k, Any)
        base, _ = _base_type(tp)
        if is_dataclass(base) and isinstance(v, dict):
            kwargs[k] = from_dict(base, v, where=f"{where}.{k}" if where else k)
        elif is_dataclass(base) and not is_dataclass(v):
            raise ConfigError(f"'{f'{where}.{k}' if where else k}' must be a mapping of option: value, got "
                              f"{type(v).__name__} {v!r}"[:200])
        else:
            kwargs[k] = _coerce(k, v, tp)
    obj = cls(**kwargs)
    _check_bounds(cls, obj)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON/YAML-friendly dict of a config dataclass (Paths become strings, tuples lists)."""

    def conv(v: Any) -> Any:
        if is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    return conv(obj)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear ConfigError when missing or malformed."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of option: value")
    return data


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "", *, title: str | None = None,
                  flags: dict[str, str] | None = None) -> None:
    """Add one ``--prefix.name`` flag per field (default None = keep the dataclass default), help text and
    default from the field. ``flags`` renames a field's flag (``{"manifest": "--data"}``). A bool flag alone means true (``--small-stem``); ``--small-stem false`` is accepted too."""
    group = parser.add_argument_group(title or prefix.rstrip(".") or cls.__name__)
    for spec in describe(cls):
        flag = (flags or {}).get(spec.name) or "--" + (prefix + spec.name).replace("_", "-")
        help_text = f"{spec.help} [default: {spec.default}]".replace("%", "%%")
        if spec.choices:
            help_text += f" {{{', '.join(map(str, spec.choices))}}}"
        extra: dict[str, Any] = {}
        if _base_type(spec.type)[0] is bool:
            extra = {"nargs": "?", "const": True}
        group.add_argument(flag, dest=(prefix + spec.name).replace(".", "__"), default=None,
                           metavar=_metavar(spec.type), help=help_text, **extra)


def _metavar(tp: Any) -> str:
    base, _ = _base_type(tp)
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR", Path: "PATH"}.get(base, "VALUE")


def args_to_dict(ns: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The flags the user actually gave for ``cls`` (others stay None and are left out)."""
    out = {}
    for spec in describe(cls):
        v = getattr(ns, (prefix + spec.name).replace(".", "__"), None)
        if v is not None:
            out[spec.name] = v
    return out
