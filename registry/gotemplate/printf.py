"""Go's ``fmt.Sprintf`` for the verbs templates use: %v %s %d %q %t %f %e %g %x %X %c %%.

Width and precision are capped so a template cannot ask for a gigabyte of padding in one call.
"""

from __future__ import annotations

import re
from typing import Any

from registry.gotemplate.errors import TemplateError
from registry.gotemplate.values import sprint, type_name

MAX_WIDTH = 10_000
_DIRECTIVE = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d*))?([a-zA-Z%])")


def sprintf(fmt: str, *args: Any) -> str:
    """Format like Go: missing operands print %!v(MISSING), unused ones %!(EXTRA type=value)."""
    out, pos, used = [], 0, 0
    for m in _DIRECTIVE.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_directive(flags, _cap(width), _cap(prec), verb, args[used]))
        used += 1
    out.append(fmt[pos:])
    if used < len(args):
        extra = ", ".join(f"{type_name(a)}={sprint(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _cap(digits: str | None) -> int | None:
    if digits is None:
        return None
    value = int(digits or "0")
    if value > MAX_WIDTH:
        raise TemplateError(f"printf width or precision {value} exceeds {MAX_WIDTH}")
    return value


def _directive(flags: str, width: int | None, prec: int | None, verb: str, arg: Any) -> str:
    text = _verb(flags, prec, verb, arg)
    if width is None or len(text) >= width:
        return text
    if "-" in flags:
        return text.ljust(width)
    numeric = verb in "dfegxX" and not isinstance(arg, str)
    if "0" in flags and numeric and text[:1] in "+- ":
        return text[0] + text[1:].rjust(width - 1, "0")
    return text.rjust(width, "0" if "0" in flags and numeric else " ")


def _verb(flags: str, prec: int | None, verb: str, arg: Any) -> str:
    is_num = isinstance(arg, (int, float)) and not isinstance(arg, bool)
    sign = "+" if "+" in flags else (" " if " " in flags else "")
    if verb in "vs":
        text = sprint(arg)
        return text[:prec] if prec is not None and isinstance(arg, str) else text
    if verb == "d" and isinstance(arg, int) and not isinstance(arg, bool):
        return format(arg, sign + "d")
    if verb in "feg" and is_num:
        return _float(float(arg), sign, prec, verb)
    if verb in "xX" and (isinstance(arg, str) or (is_num and isinstance(arg, int))):
        text = arg.encode().hex() if isinstance(arg, str) else format(arg, "x")
        return text.upper() if verb == "X" else text
    if verb == "t" and isinstance(arg, bool):
        return sprint(arg)
    if verb == "q" and isinstance(arg, str):
        return quote(arg)
    if verb == "c" and isinstance(arg, int) and 0 <= arg < 0x110000:
        return chr(arg)
    return f"%!{verb}({type_name(arg)}={sprint(arg)})"


def _float(f: float, sign: str, prec: int | None, verb: str) -> str:
    if verb == "g" and prec is None:
        text = sprint(f)
        return sign + text if sign and not text.startswith("-") else text
    return format(f, f"{sign}.{6 if prec is None else prec}{verb}")


def quote(s: str) -> str:
    """strconv.Quote: a double-quoted Go string literal with escapes for non-printable characters."""
    out = ['"']
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
             "\\": "\\\\", '"': '\\"'}
    for c in s:
        if c in named:
            out.append(named[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) < 0x80:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)
