"""keep_alive values: a number of seconds, or a Go duration string ("5m", "1h30m", "300ms", "-1m", "0")."""

from __future__ import annotations

import math
import re

from api.errors import bad_request

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
FOREVER = math.inf


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string; ValueError with Go's wording when it has no unit or is malformed."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        m = _PART.match(body, pos)
        if not m:
            unitless = re.fullmatch(r"[\d.]+", body[pos:])
            raise ValueError(f'time: {"missing unit" if unitless else "invalid"} in duration "{text}"')
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def keep_alive_seconds(value, default: str) -> float:
    """Seconds to keep a model loaded after a request; FOREVER for any negative value; 400 on a bad value.

    ``default`` is the server setting (POLLAMA_KEEP_ALIVE), where a bare number of seconds is also accepted.
    """
    if value is None:
        value = float(default) if re.fullmatch(r"[+-]?\d+(\.\d*)?", default.strip()) else default
    if isinstance(value, bool):
        raise bad_request("Unsupported type: 'bool' for keep_alive")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
    else:
        raise bad_request(f"Unsupported type: '{type(value).__name__}' for keep_alive")
    if math.isnan(seconds):
        raise bad_request("keep_alive must be a number")
    return FOREVER if seconds < 0 else seconds
