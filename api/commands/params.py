"""Parameter values typed from their text (Modelfile PARAMETER lines, `/set parameter`), as JSON for the server.

The client cannot see the server's option table (it lives beside the engine), so it types by the value's form
and lets the server validate: "true"/"false" → bool, an integer → int, a number → float, else the text.
``stop`` is the one list-valued parameter and gathers every value given for it.
"""

from __future__ import annotations

import math
from typing import Any

LIST_PARAMETERS = ("stop",)


def typed(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if math.isfinite(value):      # "nan" and "inf" stay text: JSON has no such numbers
            return value
    return text


def parameters(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """{name: value} from (name, text) pairs in order; a repeated list parameter accumulates, others replace."""
    out: dict[str, Any] = {}
    for name, text in pairs:
        if name in LIST_PARAMETERS:
            out.setdefault(name, []).append(text)
        else:
            out[name] = typed(text)
    return out
