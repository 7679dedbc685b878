"""``ConfigForm``: an ipywidgets form generated from a config dataclass (:func:`workbench.config.describe`).

One row per field: name, input, and the field's help with its default and bounds. Choices become
dropdowns, booleans checkboxes, numbers number boxes, tuples comma-separated text, nested config
dataclasses a collapsible sub-form. Values are validated with the same rules as the CLI and YAML
(:func:`workbench.config.from_dict`): a bad value shows a red message next to the field (as you
type) and :meth:`ConfigForm.value` raises :class:`~workbench.errors.ConfigError` with it::

    form = ConfigForm(SimCLR.Config)
    form                                  # shows the form
    form.set_values({"temperature": 0.2})
    cfg = form.value()                    # a validated SimCLRConfig
"""

from __future__ import annotations

import html
import json
import re
import typing
from collections.abc import Callable, Iterable
from dataclasses import is_dataclass
from typing import Any

import ipywidgets as W

from workbench.config import FieldSpec, _base_type, describe, from_dict, to_dict
from workbench.errors import ConfigError
from workbench.widgets._common import message_html

_LABEL_WIDTH = "170px"
_INPUT_WIDTH = "230px"


def _fmt(v: Any, exact: bool = False) -> str:
    """Display text of a value; ``exact`` keeps every float digit (for input boxes that round-trip)."""
    if isinstance(v, (tuple, list)):
        return ", ".join(_fmt(x, exact) for x in v)
    if isinstance(v, float):
        return repr(v) if exact else f"{v:g}"
    return str(v)


def _help_html(spec: FieldSpec) -> str:
    bits = []
    if not is_dataclass(_base_type(spec.type)[0]):
        bits.append(f"default {_fmt(spec.default) if spec.default not in ('', None) else '—'}")
    if spec.min is not None or spec.max is not None:
        lo = _fmt(spec.min) if spec.min is not None else "−∞"
        hi = _fmt(spec.max) if spec.max is not None else "∞"
        bits.append(f"range {lo} … {hi}")
    extra = f" <span style='color:#999'>({'; '.join(bits)})</span>" if bits else ""
    return (f"<span style='color:#555;font-size:12px;line-height:14px'>{html.escape(spec.help or '')}"
            f"{extra}</span>")


class ConfigForm:
    """A form over a config dataclass (class or instance for starting values).

    Args:
        cls_or_obj: the dataclass (defaults shown) or an instance (its values shown).
        values: starting values overriding the defaults (a dict, nested dicts for sub-configs).
        exclude: field names to leave out (they keep their defaults / ``values``).
        title: optional heading.
        on_change: ``fn(form)`` called after any valid change.

    Attributes:
        inputs: field name → input widget (or nested :class:`ConfigForm`).
        errors: field name → the current message of an invalid field.
        message: the form-level message (HTML widget).
    """

    def __init__(self, cls_or_obj: Any, *, values: dict[str, Any] | None = None,
                 exclude: Iterable[str] = (), title: str | None = None,
                 on_change: Callable[[ConfigForm], None] | None = None) -> None:
        self.cls: type = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
        if not is_dataclass(self.cls):
            raise ConfigError(f"ConfigForm needs a config dataclass, got {self.cls.__name__}")
        self.exclude = set(exclude)
        self.specs = describe(cls_or_obj)
        self._hidden: dict[str, Any] = {s.name: s.default for s in self.specs if s.name in self.exclude}
        self.inputs: dict[str, Any] = {}
        self.field_messages: dict[str, W.HTML] = {}
        self.errors: dict[str, str] = {}
        self.on_change = on_change
        self.message = W.HTML()
        self._quiet = False
        rows: list[W.Widget] = [W.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        for spec in self.specs:
            if spec.name in self.exclude:
                continue
            rows.append(self._row(spec))
        rows.append(self.message)
        self.widget = W.VBox(rows, layout=W.Layout(width="100%"))
        if values:
            self.set_values(values)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ building
    def _input(self, spec: FieldSpec) -> Any:
        base, optional = _base_type(spec.type)
        layout = W.Layout(width=_INPUT_WIDTH, flex="0 0 auto")
        v = spec.default
        if is_dataclass(base):
            return ConfigForm(v if is_dataclass(v) else base, on_change=lambda _f: self._changed(spec.name))
        if spec.choices:
            return W.Dropdown(options=[(str(c), c) for c in spec.choices], value=v, layout=layout)
        if base is bool:
            return W.Checkbox(value=bool(v), indent=False, layout=layout)
        if base is int and not optional:
            return W.IntText(value=int(v), layout=layout)
        if base is float and not optional:
            return W.FloatText(value=float(v), layout=layout)
        origin = typing.get_origin(base)
        if origin is dict or base is dict:
            return W.Textarea(value=json.dumps(v or {}), layout=W.Layout(width=_INPUT_WIDTH, height="48px",
                                                                         flex="0 0 auto"))
        if origin in (tuple, list):
            return W.Text(value=_fmt(v, exact=True), placeholder="comma-separated", layout=layout)
        return W.Text(value="" if v is None else str(v), layout=layout)

    def _row(self, spec: FieldSpec) -> W.Widget:
        inp = self._input(spec)
        self.inputs[spec.name] = inp
        msg = W.HTML()
        self.field_messages[spec.name] = msg
        if isinstance(inp, ConfigForm):
            acc = W.Accordion(children=[W.VBox([W.HTML(_help_html(spec)), inp.widget])])
            acc.set_title(0, f"{spec.name} ({_base_type(spec.type)[0].__name__})")
            acc.selected_index = None
            return W.VBox([acc, msg])
        inp.observe(lambda _c, name=spec.name: self._changed(name), names=["value"])
        label = W.HTML(f"<code>{html.escape(spec.name)}</code>", layout=W.Layout(width=_LABEL_WIDTH, flex="0 0 auto"))
        helpw = W.HTML(_help_html(spec), layout=W.Layout(flex="1 1 auto", width="auto"))
        return W.VBox([W.HBox([label, inp, helpw], layout=W.Layout(align_items="center")), msg],
                      layout=W.Layout(margin="0 0 2px 0"))

    # ------------------------------------------------------------------ values
    def raw(self) -> dict[str, Any]:
        """Field values as entered (strings for tuples; nested dicts for sub-forms), before validation."""
        out: dict[str, Any] = dict(self._hidden)
        for name, inp in self.inputs.items():
            if isinstance(inp, ConfigForm):
                out[name] = inp.raw()
            elif isinstance(inp, W.Textarea):
                try:
                    out[name] = json.loads(inp.value or "{}")
                except json.JSONDecodeError:
                    out[name] = inp.value  # from_dict reports the wrong type
            else:
                out[name] = inp.value
        return out

    def value(self) -> Any:
        """The validated config dataclass; raises :class:`ConfigError` (also shown in the form)."""
        try:
            obj = from_dict(self.cls, self.raw())
        except ConfigError as exc:
            self._show(str(exc))
            raise
        self._show(None)
        return obj

    def to_dict(self) -> dict[str, Any]:
        """``to_dict(value())``: the validated values as plain JSON-friendly data."""
        return to_dict(self.value())

    def is_valid(self) -> bool:
        """Validate without raising (messages are updated)."""
        try:
            self.value()
        except ConfigError:
            return False
        return True

    def set_values(self, values: dict[str, Any]) -> None:
        """Put values into the inputs (unknown names raise ConfigError; nested dicts fill sub-forms)."""
        names = {s.name for s in self.specs}
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ConfigError(f"{self.cls.__name__}: unknown option '{unknown[0]}'")
        self._quiet = True
        try:
            for k, v in values.items():
                if k in self._hidden:
                    self._hidden[k] = v
                    continue
                inp = self.inputs[k]
                if isinstance(inp, ConfigForm):
                    inp.set_values(to_dict(v) if is_dataclass(v) else dict(v))
                elif isinstance(inp, W.Textarea):
                    inp.value = json.dumps(v or {})
                elif isinstance(inp, W.Dropdown):
                    choices = [c for _, c in inp.options]
                    if v not in choices:
                        raise ConfigError(f"'{k}' must be one of {', '.join(map(str, choices))}, got {v!r}")
                    inp.value = v
                elif isinstance(inp, W.Checkbox):
                    inp.value = bool(v)
                elif isinstance(inp, (W.IntText, W.FloatText)):
                    inp.value = v
                else:
                    inp.value = _fmt(v, exact=True) if isinstance(v, (tuple, list)) else ("" if v is None else str(v))
        finally:
            self._quiet = False
        self._validate_all()

    def reset(self) -> None:
        """Back to the dataclass defaults."""
        self.set_values({s.name: s.default for s in self.specs})

    def changed(self) -> dict[str, Any]:
        """Only the validated values that differ from the defaults (compact overrides)."""
        current = self.to_dict()
        defaults = {s.name: to_dict(s.default) for s in self.specs}
        return {k: v for k, v in current.items() if v != defaults.get(k)}

    # ------------------------------------------------------------------ validation display
    def _show(self, text: str | None) -> None:
        for m in self.field_messages.values():
            m.value = ""
        self.errors = {}
        if text is None:
            self.message.value = ""
            return
        m = re.match(r"^(?:[\w.]+: )?'([\w.]+)'", text) or re.search(r"unknown option '([\w.]+)'", text)
        name = m.group(1).split(".")[0] if m else None
        if name in self.field_messages:
            self.errors[name] = text
            self.field_messages[name].value = message_html(text, "error")
        self.message.value = message_html(f"{self.cls.__name__}: {text}", "error")

    def _validate_all(self) -> bool:
        try:
            from_dict(self.cls, self.raw())
        except ConfigError as exc:
            self._show(str(exc))
            return False
        self._show(None)
        return True

    def _changed(self, name: str) -> None:
        if self._quiet:
            return
        if self._validate_all() and self.on_change is not None:
            self.on_change(self)


__all__ = ["ConfigForm"]
