"""Modelfiles: parse and format, following Ollama's ``parser/parser.go``.

Grammar (one instruction per line; commands are case-insensitive)::

    FROM <model or path>     PARAMETER <name> <value>     MESSAGE <system|user|assistant> <content>
    TEMPLATE <value>   SYSTEM <value>   ADAPTER <path>   LICENSE <value>
    REQUIRES <version>   RENDERER <value>   PARSER <value>   DRAFT <value>

A value is the rest of the line, whitespace-trimmed, or a quoted ``"…"`` / ``\"\"\"…\"\"\"`` string that may
span lines. There are no escapes: a quote is closed when the trimmed text gathered so far (at a line end)
starts and ends with the same quote. ``#`` starts a comment only where an instruction could start.
Parameter values stay raw strings here; ``api.options`` types them. Repeated PARAMETERs (``stop``), LICENSEs,
ADAPTERs and MESSAGEs accumulate; a repeated FROM, TEMPLATE or SYSTEM replaces the earlier one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_MODELFILE_CHARS = 4 * 1024 * 1024
COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
            "message", "requires")
ROLES = ("system", "user", "assistant")
_SINGLE = ("template", "system", "requires", "renderer", "parser", "draft")
_WORD = {"command": re.compile(r"[A-Za-z]+"), "parameter": re.compile(r"[A-Za-z0-9_]+"),
         "message": re.compile(r"[A-Za-z]+")}


class ModelfileError(ValueError):
    """A Modelfile that does not parse (or a value that cannot be written); ``line`` is 1-based or None."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"(line {line}): {message}" if line is not None else message)
        self.line = line


@dataclass
class Modelfile:
    from_: str = ""
    parameters: list[tuple[str, str]] = field(default_factory=list)     # (name, raw value), in file order
    template: str | None = None
    system: str | None = None
    adapters: list[str] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)       # (role, content)
    requires: str | None = None
    renderer: str | None = None
    parser: str | None = None
    draft: str | None = None


def parse(text: str) -> Modelfile:
    """Parse Modelfile text; raises ModelfileError with the line number of the problem."""
    if len(text) > MAX_MODELFILE_CHARS:
        raise ModelfileError(f"Modelfile is longer than {MAX_MODELFILE_CHARS} characters")
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    mf, i, seen_from = Modelfile(), 0, False
    while i < len(lines):
        stripped = lines[i].lstrip(" \t")
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        command, args, value, i = _instruction(lines, i)
        seen_from |= command == "from"
        _apply(mf, command, args, value)
    if not seen_from:
        raise ModelfileError("no FROM line")
    return mf


def _instruction(lines: list[str], i: int) -> tuple[str, list[str], str, int]:
    """(command, [parameter name or role], value, index of the next line) for the instruction at line i."""
    rest = lines[i].lstrip(" \t")
    m = _WORD["command"].match(rest)
    command = m.group().lower() if m else ""
    if command not in COMMANDS:
        raise ModelfileError('command must be one of "' + '", "'.join(COMMANDS) + '"', i + 1)
    label = command.upper()
    what = {"parameter": "parameter name", "message": "message role"}.get(command, "value")
    rest = _after_word(rest, m.end(), f"missing {what} for {label}", i)
    args = []
    if command in ("parameter", "message"):
        m = _WORD[command].match(rest)
        if m is None:
            raise ModelfileError(f"invalid or missing {what}", i + 1)
        if command == "message" and m.group() not in ROLES:
            raise ModelfileError('message role must be one of "system", "user", or "assistant"', i + 1)
        args.append(m.group())
        label = f"{label} {m.group()}"
        rest = _after_word(rest, m.end(), f"missing value for {label}", i)
    value, nxt = _value(lines, i, rest, label)
    return command, args, value, nxt


def _after_word(rest: str, end: int, missing: str, i: int) -> str:
    """The text after a word, which must be followed by a space or tab (then the value)."""
    if rest[end:end + 1] not in (" ", "\t"):
        raise ModelfileError(missing if rest[end:].strip() == "" else f"unexpected {rest[end]!r}", i + 1)
    return rest[end + 1:]


def _value(lines: list[str], i: int, first: str, label: str) -> tuple[str, int]:
    """Gather lines until the trimmed text is a complete (or unquoted) value; return it unquoted."""
    start, buf = i, first
    while True:
        value = _unquote(buf.strip(" \t"))
        if value is not None:
            if buf.strip(" \t") == "":
                raise ModelfileError(f"missing value for {label}", start + 1)
            return value, i + 1
        i += 1
        if i >= len(lines):
            raise ModelfileError(f"unterminated quote in the value of {label} (unexpected EOF)", start + 1)
        buf += "\n" + lines[i]


def _unquote(s: str) -> str | None:
    """The value inside \"\"\"…\"\"\" or "…", the text itself if unquoted, None if a quote is still open."""
    if s.startswith('"""'):
        return s[3:-3] if len(s) >= 6 and s.endswith('"""') else None
    if s.startswith('"'):
        return s[1:-1] if len(s) >= 2 and s.endswith('"') else None
    return s


def _apply(mf: Modelfile, command: str, args: list[str], value: str) -> None:
    if command == "from":
        mf.from_ = value
    elif command == "parameter":
        mf.parameters.append((args[0], value))
    elif command == "message":
        mf.messages.append((args[0], value))
    elif command == "adapter":
        mf.adapters.append(value)
    elif command == "license":
        mf.licenses.append(value)
    else:
        setattr(mf, command, value)


def format(mf: Modelfile) -> str:
    """Modelfile text that parses back to ``mf`` (FROM first, then the rest in a fixed order)."""
    lines = [f"FROM {quote(mf.from_)}"]
    lines += [f"ADAPTER {quote(a)}" for a in mf.adapters]
    for command in _SINGLE:
        value = getattr(mf, command)
        if value is not None:
            lines.append(f"{command.upper()} {quote(value)}")
    lines += [f"PARAMETER {name} {quote(value)}" for name, value in mf.parameters]
    lines += [f"LICENSE {quote(text)}" for text in mf.licenses]
    lines += [f"MESSAGE {role} {quote(content)}" for role, content in mf.messages]
    return "\n".join(lines) + "\n"


def quote(value: str) -> str:
    """Write a value so that parsing gives it back: bare when safe, else "…", else \"\"\"…\"\"\".

    Values that no quoting can carry (a line that ends in \"\"\" inside a value that needs triple quotes)
    raise ModelfileError; the parser can never produce them.
    """
    if value and not any(c in value for c in "\r\n") and value == value.strip(" \t") and value[0] != '"':
        return value
    if '"' not in value:
        return f'"{value}"'
    text = f'"""{value}"""'
    prefixes = text.split("\n")[:-1]
    if any(_unquote("\n".join(prefixes[:k + 1]).strip(" \t")) is not None for k in range(len(prefixes))):
        raise ModelfileError("value cannot be written in a Modelfile (a line ends with a closing quote)")
    return text
