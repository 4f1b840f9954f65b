"""Rendering a GGUF's own Jinja chat template (``tokenizer.chat_template``) the way HF ``apply_chat_template`` does.

Used when no Ollama Go template matches the model's Jinja (registry.chat_templates.detect returned None). The
template comes from a file or a request, so it runs in jinja2's ImmutableSandboxedEnvironment (no attribute
access to ``__class__`` & co., no mutation of the passed values) with these limits, all raising TemplateError:

* source size: ``max_source_chars``;
* output size: the render is streamed (``Template.generate``) with a running total; ``*``/``+`` on strings and
  lists, ``**`` and the integer arguments of filters and calls are checked *before* they run, so a single
  operation cannot allocate gigabytes;
* time: a trace function installed for the render checks the deadline on every line of the compiled template
  and every Python call it makes, so loops with empty bodies are stopped too; ``range`` is capped.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from registry.gotemplate.errors import TemplateError

__all__ = ["JinjaLimits", "JinjaTemplate", "render_jinja_prompt"]

_TEMPLATE_FILE = "<template>"           # co_filename of code jinja2 compiles from a string
_ALIASES = {"thinking": ("thinking", "enable_thinking", "reasoning_content")}


@dataclass(frozen=True)
class JinjaLimits:
    max_source_chars: int = 256 * 1024
    max_output_chars: int = 8 * 1024 * 1024     # as the Go templates' Limits
    max_seconds: float = 2.0
    max_range: int = 100_000


class JinjaTemplate:
    """A parsed Jinja chat template. Parsing validates it (TemplateError) and caps its size."""

    def __init__(self, source: str, *, limits: JinjaLimits = JinjaLimits()) -> None:
        if len(source) > limits.max_source_chars:
            raise TemplateError(f"jinja: the template is too long ({len(source)} > {limits.max_source_chars} chars)")
        self.source = source
        self.limits = limits
        self._env = _Sandbox(limits)
        try:
            self._template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"jinja: syntax error at line {exc.lineno}: {exc.message}") from None
        self._names = frozenset(re.findall(r"[A-Za-z_]\w*", source))

    def __str__(self) -> str:
        return self.source

    @property
    def uses_messages(self) -> bool:
        """Always: HF templates get the whole conversation in one render."""
        return True

    def references(self, field: str) -> bool:
        """Whether the Go field name ``field`` has a Jinja counterpart here ("Tools" ↔ ``tools``)."""
        names = _ALIASES.get(field.lower(), (field.lower(),))
        return any(name in self._names for name in names)

    def render(self, variables: dict[str, Any]) -> str:
        """Render with ``variables`` within the output-size and time limits."""
        try:
            with _watchdog(time.monotonic() + self.limits.max_seconds):
                return _collect(self._template.generate(variables), self.limits)
        except TemplateError:
            raise
        except jinja2.TemplateError as exc:             # includes sandbox SecurityError and UndefinedError
            raise TemplateError(f"jinja: {exc}") from None
        except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError, RecursionError) as exc:
            raise TemplateError(f"jinja: {type(exc).__name__}: {exc}") from None


def render_jinja_prompt(template: JinjaTemplate, messages: list[dict[str, Any]], *, system: str | None = None,
                        tools: list[dict[str, Any]] | None = None, think: bool | str | None = None,
                        bos_token: str = "", eos_token: str = "") -> str:
    """The prompt for a conversation, as HF ``apply_chat_template(..., add_generation_prompt=True)``.

    ``system`` (the model's SYSTEM) is prepended unless the conversation starts with a system message.
    ``bos_token``/``eos_token`` are the tokenizer's texts for those ids. ``think``, when set, becomes
    ``enable_thinking`` (Qwen3-style templates).
    """
    msgs = [_message(m) for m in messages]
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    variables: dict[str, Any] = {"messages": msgs, "add_generation_prompt": True, "bos_token": bos_token,
                                 "eos_token": eos_token, "tools": tools or None}
    if think is not None:
        variables["enable_thinking"] = bool(think)
    return template.render(variables)


def _message(m: dict[str, Any]) -> dict[str, Any]:
    out = {"role": m.get("role", ""), "content": m.get("content") or ""}
    for name in ("tool_calls", "tool_name"):
        if m.get(name):
            out[name] = m[name]
    return out


class _Sandbox(ImmutableSandboxedEnvironment):
    """HF's environment, with size checks on the operations that can allocate a lot in one step."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, limits: JinjaLimits) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        self.limits = limits
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, range=self._range)
        self.filters["tojson"] = _tojson
        self.filters = {name: self._checked(f) for name, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > 4096 or isinstance(left, int) and left.bit_length() > 4096:
                raise TemplateError("jinja: power too large")
        elif operator == "*":
            _check_size(self.limits, _size(left) * _size(right), "a repeated value")
        else:
            _check_size(self.limits, _size(left) + _size(right), "a concatenation")
        return super().call_binop(context, operator, left, right)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_args(self.limits, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def _range(self, *args: int) -> range:
        rng = range(*args)
        if len(rng) > self.limits.max_range:
            raise TemplateError(f"jinja: range of {len(rng)} items (limit {self.limits.max_range})")
        return rng

    def _checked(self, f: Callable[..., Any]) -> Callable[..., Any]:
        marker = getattr(f, "jinja_pass_arg", None)       # @pass_context & co.: the context comes first
        skip = 2 if marker is not None else 1               # the filtered value itself is not checked

        def checked(*args: Any, **kwargs: Any) -> Any:
            _check_args(self.limits, args[skip:], kwargs)
            return f(*args, **kwargs)
        if marker is not None:
            checked.jinja_pass_arg = marker  # type: ignore[attr-defined]
        return checked


def _size(value: Any) -> int:
    """Length of a str/list/tuple; an int counts as itself (the factor of a repetition)."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return abs(value)
    return len(value) if isinstance(value, str | list | tuple) else 1


def _check_size(limits: JinjaLimits, n: int, what: str) -> None:
    if n > limits.max_output_chars:
        raise TemplateError(f"jinja: {what} exceeds {limits.max_output_chars} characters")


def _check_args(limits: JinjaLimits, args: tuple, kwargs: dict) -> None:
    """Integer arguments (widths, counts) above the output cap could allocate that much in one C call."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool):
            _check_size(limits, abs(value), "an integer argument")


def _collect(chunks: Iterator[str], limits: JinjaLimits) -> str:
    parts: list[str] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        _check_size(limits, total, "the rendered prompt")
        parts.append(chunk)
    return "".join(parts)


class _watchdog:
    """sys.settrace for the duration of a render: TemplateError once ``deadline`` passes.

    Only frames of compiled template code get line events, so the overhead on jinja's runtime is one
    check per Python call. The previous trace function (a debugger, coverage) is restored afterwards.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __enter__(self) -> None:
        self.previous = sys.gettrace()
        sys.settrace(self._trace)

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self.previous)

    def _trace(self, frame: Any, event: str, arg: Any) -> Any:
        self._check()
        return self._line if frame.f_code.co_filename == _TEMPLATE_FILE else None

    def _line(self, frame: Any, event: str, arg: Any) -> Any:
        self._check()
        return self._line

    def _check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateError("jinja: rendering took too long")


def _raise_exception(message: str) -> None:
    raise TemplateError(f"jinja: raise_exception: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    """HF's tojson: plain json.dumps (jinja's own escapes <, >, & and ' for HTML)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
