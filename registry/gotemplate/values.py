"""How Python values stand in for Go values: truthiness, ``%v`` printing and ``encoding/json`` output.

Plain Python values model ``map[string]any`` data: dict = map (sorted keys when printed or encoded), list =
slice, str/int/float/bool, None = nil. Ollama also passes Go structs whose printing and JSON differ from a
map's; :class:`GoStruct` models those (fields by Go name for templates, JSON by tag in declaration order),
and :class:`JSONMap`/:class:`JSONList` model Ollama types with a ``String()`` method that prints JSON.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from registry.gotemplate.errors import TemplateError

MAX_DEPTH = 100                      # nesting of maps/slices printed or encoded (bounds Python recursion)

@dataclass(frozen=True)
class StructField:
    go: str                          # the name templates use: .Function.Name
    json: str                        # the json tag name
    omitempty: bool = False


class GoStruct:
    """A Go struct value. ``stringer`` marks types with a String() method that returns their JSON."""

    __slots__ = ("type_name", "_schema", "_values", "stringer")

    def __init__(self, type_name: str, schema: tuple[StructField, ...], values: dict[str, Any],
                 *, stringer: bool = False) -> None:
        self.type_name = type_name
        self._schema = schema
        self._values = values
        self.stringer = stringer

    def has_field(self, name: str) -> bool:
        return name in self._values

    def field(self, name: str) -> Any:
        return self._values[name]

    def json_items(self) -> list[tuple[str, Any]]:
        return [(f.json, self._values[f.go]) for f in self._schema
                if not (f.omitempty and is_empty(self._values[f.go]))]

    def __eq__(self, other: object) -> bool:
        same = isinstance(other, GoStruct) and self.type_name == other.type_name
        return same and self._values == other._values

    def __repr__(self) -> str:
        return f"GoStruct({self.type_name}, {self._values!r})"


class JSONMap(dict):
    """An ordered map type whose String() is its JSON (Ollama's tool-call arguments and property maps)."""


class JSONList(list):
    """A slice type whose String() is its JSON (Ollama's ``api.Tools``)."""


class PropertyType(list):
    """Ollama's ``PropertyType`` ([]string): JSON is a bare string when it has one element."""


def is_empty(v: Any) -> bool:
    """encoding/json's omitempty test: false, 0, "", nil and empty slices/maps."""
    if v is None or v is False:
        return True
    if isinstance(v, (int, float)):
        return v == 0
    return isinstance(v, (str, list, tuple, dict)) and len(v) == 0


def truth(v: Any) -> bool:
    """Go template truthiness: false, 0, nil and empty strings/slices/maps are false; structs are true."""
    if isinstance(v, GoStruct):
        return True
    return not is_empty(v)


def type_name(v: Any) -> str:
    """A Go-like type name for error messages."""
    if isinstance(v, GoStruct):
        return v.type_name
    names = {bool: "bool", int: "int", float: "float64", str: "string", type(None): "nil"}
    for py, go in names.items():
        if type(v) is py:
            return go
    return "map[string]interface {}" if isinstance(v, dict) else "[]interface {}"


# -- %v printing --------------------------------------------------------------------------------------------
def sprint(v: Any, depth: int = 0) -> str:
    """Go's fmt ``%v`` of a value."""
    if depth > MAX_DEPTH:
        raise TemplateError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, str):
        return v
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float_g(v)
    if isinstance(v, (JSONMap, JSONList)) or (isinstance(v, GoStruct) and v.stringer):
        return to_json(v)
    if isinstance(v, PropertyType):
        return v[0] if len(v) == 1 else "[" + " ".join(v) + "]"
    if isinstance(v, GoStruct):
        return "{" + " ".join(sprint(v.field(f.go), depth + 1) for f in v._schema) + "}"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{sprint(k)}:{sprint(v[k], depth + 1)}" for k in sorted(v)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(sprint(x, depth + 1) for x in v) + "]"
    if isinstance(v, bytes):
        return "[" + " ".join(str(b) for b in v) + "]"
    return str(v)


def _digits(f: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of |f| and the decimal-point position (Go's digs.d, digs.dp)."""
    _, digits, exp = Decimal(repr(abs(f))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return text, len(text) + exp


def format_float_g(f: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 64), which is what %v prints for a float64."""
    special = _special_float(f)
    if special is not None:
        return special
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    digits, dp = _digits(f)
    if dp - 1 < -4 or dp - 1 >= 6:                   # shortest %g switches to %e at exponent 6
        return _format_e(f, digits, dp)
    return _format_f(f, digits, dp)


def _special_float(f: float) -> str | None:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return None


def _format_e(f: float, digits: str, dp: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    exp = dp - 1
    return f"{'-' if f < 0 else ''}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def _format_f(f: float, digits: str, dp: int) -> str:
    if dp <= 0:
        text = "0." + "0" * -dp + digits
    elif dp >= len(digits):
        text = digits + "0" * (dp - len(digits))
    else:
        text = digits[:dp] + "." + digits[dp:]
    return ("-" if f < 0 else "") + text


# -- encoding/json ------------------------------------------------------------------------------------------
_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
                 "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_string(s: str) -> str:
    """A JSON string as Go's json.Marshal writes it: HTML-escaped, other non-ASCII left as is."""
    out = ['"']
    for c in s:
        esc = _JSON_ESCAPES.get(c)
        if esc is not None:
            out.append(esc)
        elif c < " " or "\ud800" <= c <= "\udfff":
            out.append("\\ufffd" if c >= "\ud800" else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def json_float(f: float) -> str:
    """Go encodes float64 like ES6: plain digits unless |f| < 1e-6 or >= 1e21; 'e-07' becomes 'e-7'."""
    special = _special_float(f)
    if special is not None:
        raise ValueError(f"json: unsupported value: {special}")
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    digits, dp = _digits(f)
    if abs(f) < 1e-6 or abs(f) >= 1e21:
        text = _format_e(f, digits, dp)
        return text[:-2] + text[-1] if text[-4:-1] == "e-0" else text
    return _format_f(f, digits, dp)


def to_json(v: Any, depth: int = 0) -> str:
    """encoding/json.Marshal, compact: sorted keys for maps, tag order for structs, HTML-escaped strings."""
    if depth > MAX_DEPTH:
        raise ValueError(f"json: value nested deeper than {MAX_DEPTH} levels")
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return json_float(v)
    if isinstance(v, str):
        return json_string(v)
    if isinstance(v, bytes):
        return json_string(base64.b64encode(v).decode("ascii"))
    if isinstance(v, PropertyType) and len(v) == 1:
        return json_string(v[0])
    if isinstance(v, GoStruct):
        return _json_object(v.json_items(), depth)
    if isinstance(v, dict):
        keys = list(v) if isinstance(v, JSONMap) else sorted(v, key=str)
        return _json_object([(str(k), v[k]) for k in keys], depth)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(to_json(x, depth + 1) for x in v) + "]"
    raise ValueError(f"json: unsupported type: {type_name(v)}")


def _json_object(items: list[tuple[str, Any]], depth: int) -> str:
    return "{" + ",".join(f"{json_string(k)}:{to_json(x, depth + 1)}" for k, x in items) + "}"
