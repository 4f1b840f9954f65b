"""Go literal syntax inside actions: interpreted strings, raw strings, character constants and numbers."""

from __future__ import annotations

import re

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_HEX_LEN = {"x": 2, "u": 4, "U": 8}
_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[oO]?[0-7_]+|0[bB][01_]+|[0-9][0-9_]*)")
_FLOAT = re.compile(r"[+-]?(([0-9][0-9_]*)?\.?[0-9_]*([eE][+-]?[0-9_]+)?"
                    r"|0[xX][0-9a-fA-F_.]+[pP][+-]?[0-9_]+)")


def unquote(text: str) -> str | None:
    """The value of a Go string literal ("..." or `...`), or None when the syntax is invalid."""
    if text.startswith("`"):
        return text[1:-1].replace("\r", "")              # Go drops carriage returns from raw strings
    return _unescape(text[1:-1], '"')


def char_value(text: str) -> int | None:
    """The code point of a Go character constant such as 'a' or '\\n', or None when invalid."""
    body = _unescape(text[1:-1], "'")
    return ord(body) if body is not None and len(body) == 1 else None


def _unescape(body: str, quote: str) -> str | None:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == quote:
            return None
        if c != "\\":
            out.append(c)
            i += 1
            continue
        value, i = _escape(body, i + 1, quote)
        if value is None:
            return None
        out.append(value)
    return "".join(out)


def _escape(body: str, i: int, quote: str) -> tuple[str | None, int]:
    """Decode the escape after a backslash at body[i]; returns (text or None, next index)."""
    c = body[i:i + 1]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], i + 1
    if c == quote:
        return quote, i + 1
    if c in _HEX_LEN:
        digits = body[i + 1:i + 1 + _HEX_LEN[c]]
        if len(digits) != _HEX_LEN[c] or not all(d in "0123456789abcdefABCDEF" for d in digits):
            return None, i
        code = int(digits, 16)
        return (chr(code) if code < 0x110000 and not 0xD800 <= code < 0xE000 else None), i + 1 + len(digits)
    digits = body[i:i + 3]
    if len(digits) == 3 and all(d in "01234567" for d in digits) and int(digits, 8) < 256:
        return chr(int(digits, 8)), i + 3
    return None, i


def number_value(text: str) -> int | float | None:
    """An int, or a float when the text has a fraction or exponent (Go's ideal-constant rule); None if bad."""
    if _INT.fullmatch(text):
        body = text.replace("_", "")
        sign = "-" if body[0] == "-" else ""
        body = body.lstrip("+-")
        if len(body) > 1 and body[0] == "0" and body[1].isdigit():
            body = "0o" + body[1:]                       # Go: a leading 0 means octal
        try:
            return int(sign + body, 0)
        except ValueError:
            return None
    if _FLOAT.fullmatch(text) and any(ch.isdigit() for ch in text):
        try:
            cleaned = text.replace("_", "")
            return float.fromhex(cleaned) if "x" in cleaned.lower() else float(cleaned)
        except ValueError:
            return None
    return None
