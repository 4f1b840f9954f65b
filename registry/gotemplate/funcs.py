"""The template functions: Go's builtins plus Ollama's ``json``, ``currentDate``, ``yesterdayDate`` and
``toTypeScriptType``. ``and`` and ``or`` short-circuit, so the executor evaluates them itself.

Comparisons follow Go's ``eq``/``lt`` rules: values of different kinds are an error, except that nil
compares unequal to anything but nil. Ints and floats count as one kind here (Go would reject ``eq 1 1.0``).
String length, indexing and slicing are by UTF-8 bytes, as in Go.
"""

from __future__ import annotations

import datetime
import html as _html
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

from registry.gotemplate.errors import TemplateError
from registry.gotemplate.printf import sprintf
from registry.gotemplate.values import GoStruct, sprint, to_json, truth, type_name


def _kind(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "string" if isinstance(v, str) else "other"


def _equal(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        if "nil" in (ka, kb):
            return False
        raise TemplateError("error calling eq: incompatible types for comparison")
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        raise TemplateError(f"error calling eq: non-comparable type {type_name(a)}")
    return a == b


def eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("error calling eq: missing argument for comparison")
    return any(_equal(a, b) for b in others)


def ne(a: Any, b: Any) -> bool:
    return not _equal(a, b)


def _ordered(name: str, a: Any, b: Any) -> tuple[Any, Any]:
    ka, kb = _kind(a), _kind(b)
    if ka not in ("number", "string") or kb not in ("number", "string"):
        raise TemplateError(f"error calling {name}: invalid type for comparison")
    if ka != kb:
        raise TemplateError(f"error calling {name}: incompatible types for comparison")
    return a, b


def lt(a: Any, b: Any) -> bool:
    a, b = _ordered("lt", a, b)
    return a < b


def le(a: Any, b: Any) -> bool:
    a, b = _ordered("le", a, b)
    return a <= b


def gt(a: Any, b: Any) -> bool:
    a, b = _ordered("gt", a, b)
    return a > b


def ge(a: Any, b: Any) -> bool:
    a, b = _ordered("ge", a, b)
    return a >= b


def not_(v: Any) -> bool:
    return not truth(v)


def length(v: Any) -> int:
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, (list, tuple, dict, bytes)):
        return len(v)
    raise TemplateError(f"error calling len: len of {'nil pointer' if v is None else 'type ' + type_name(v)}")


def _int_index(name: str, i: Any) -> int:
    if not isinstance(i, int) or isinstance(i, bool):
        raise TemplateError(f"error calling {name}: cannot index slice/array with type {type_name(i)}")
    return i


def index(item: Any, *keys: Any) -> Any:
    v = item
    for key in keys:
        if isinstance(v, dict):
            if not isinstance(key, str):
                raise TemplateError(f"error calling index: value has type {type_name(key)}; should be string")
            v = v.get(key)
        elif isinstance(v, (list, tuple, str)):
            seq = v.encode() if isinstance(v, str) else v
            i = _int_index("index", key)
            if not 0 <= i < len(seq):
                raise TemplateError(f"error calling index: index out of range: {i}")
            v = seq[i]
        elif v is None:
            raise TemplateError("error calling index: index of untyped nil")
        else:
            raise TemplateError(f"error calling index: can't index item of type {type_name(v)}")
    return v


def slice_(item: Any, *idx: Any) -> Any:
    if not isinstance(item, (list, tuple, str)):
        what = "untyped nil" if item is None else f"type {type_name(item)}"
        raise TemplateError(f"error calling slice: can't slice item of {what}")
    if len(idx) > 3 or (isinstance(item, str) and len(idx) > 2):
        raise TemplateError(f"error calling slice: too many slice indexes: {len(idx)}")
    seq = item.encode() if isinstance(item, str) else item
    bounds = [_int_index("slice", i) for i in idx]
    for i in bounds:
        if not 0 <= i <= len(seq):
            raise TemplateError(f"error calling slice: index out of range: {i}")
    start = bounds[0] if bounds else 0
    stop = bounds[1] if len(bounds) > 1 else len(seq)
    if start > stop or (len(bounds) == 3 and bounds[2] < stop):
        raise TemplateError(f"error calling slice: invalid slice index: {start} > {stop}")
    part = seq[start:stop]
    return part.decode("utf-8", "replace") if isinstance(item, str) else list(part)


def print_(*args: Any) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(sprint(a))
    return "".join(out)


def println_(*args: Any) -> str:
    return " ".join(sprint(a) for a in args) + "\n"


def printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise TemplateError(f"error calling printf: format has type {type_name(fmt)}; should be string")
    return sprintf(fmt, *args)


def _joined(args: tuple[Any, ...]) -> str:
    return args[0] if len(args) == 1 and isinstance(args[0], str) else print_(*args)


def html_escape(*args: Any) -> str:
    text = _html.escape(_joined(args), quote=False).replace('"', "&#34;").replace("'", "&#39;")
    return text.replace("\0", "\ufffd")


def js_escape(*args: Any) -> str:
    named = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026",
             "=": "\\u003D"}
    out = []
    for c in _joined(args):
        if c in named:
            out.append(named[c])
        elif c < " " or not c.isprintable():
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def urlquery(*args: Any) -> str:
    return quote_plus(_joined(args), safe="")


def json_(v: Any) -> str:
    try:
        return to_json(v)
    except ValueError:
        return ""                                   # Ollama ignores the Marshal error and prints nothing


def current_date(*_: Any) -> str:
    return datetime.date.today().isoformat()


def yesterday_date(*_: Any) -> str:
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}


def to_typescript_type(prop: Any) -> str:
    """A tool parameter's JSON-schema type as a TypeScript type (anyOf and type lists become unions)."""
    if not isinstance(prop, GoStruct) or not prop.has_field("AnyOf"):
        return "any"
    if prop.field("AnyOf"):
        return " | ".join(to_typescript_type(p) for p in prop.field("AnyOf"))
    types = prop.field("Type") or []
    return " | ".join(_TS_TYPES.get(t, "any") for t in types) if types else "any"


# name -> (function, minimum arguments, maximum arguments or None for variadic)
FUNCS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "eq": (eq, 1, None), "ne": (ne, 2, 2), "lt": (lt, 2, 2), "le": (le, 2, 2), "gt": (gt, 2, 2),
    "ge": (ge, 2, 2),
    "not": (not_, 1, 1), "len": (length, 1, 1), "index": (index, 1, None), "slice": (slice_, 1, None),
    "print": (print_, 0, None), "println": (println_, 0, None), "printf": (printf, 1, None),
    "html": (html_escape, 0, None), "js": (js_escape, 0, None), "urlquery": (urlquery, 0, None),
    "json": (json_, 1, 1), "currentDate": (current_date, 0, None), "yesterdayDate": (yesterday_date, 0, None),
    "toTypeScriptType": (to_typescript_type, 1, 1),
}
SHORT_CIRCUIT = frozenset({"and", "or"})
NAMES = frozenset(FUNCS) | SHORT_CIRCUIT
