"""Request parsing at the edge: JSON body → typed request dataclasses, or APIError(400) naming the field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask import request

from api.errors import bad_request

MAX_JSON_BYTES = 64 << 20        # a generate/chat body larger than this is refused before parsing
_NAMES = {str: "string", bool: "boolean", int: "integer", list: "array", dict: "object"}


def read_body() -> dict[str, Any]:
    """The request's JSON object, whatever its Content-Type says (curl sends a form type, litellm none)."""
    length = request.content_length
    if length is not None and length > MAX_JSON_BYTES:
        raise bad_request("request body too large")
    data = request.get_data(cache=False)
    if len(data) > MAX_JSON_BYTES:
        raise bad_request("request body too large")
    if not data.strip():
        raise bad_request("missing request body")
    try:                # bytes that are not UTF-8 (encoded surrogates too) become U+FFFD, as in Go's decoder
        body = json.loads(data.decode("utf-8-sig", "replace"))
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return _without_lone_surrogates(body) if _ESCAPED_SURROGATE.search(data) else body


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")      # JSON's only way to spell a lone surrogate
_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(body: dict) -> dict:
    """Every lone surrogate (a \\udXXX escape with no partner) in keys and strings replaced by U+FFFD, as Go's
    JSON decoder does: such a string cannot be encoded as UTF-8, so a file, a hash or a tokenizer would fail on it.
    Iterative: json.loads already accepted the nesting depth, a recursive walk might not."""
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return _SURROGATE.sub("\ufffd", value)
        if isinstance(value, dict):
            copy = {clean(k): v for k, v in value.items()}
            pending.append(copy)
            return copy
        if isinstance(value, list):
            copy = list(value)
            pending.append(copy)
            return copy
        return value

    pending: list = []
    root = clean(body)
    while pending:
        node = pending.pop()
        for key in (node if isinstance(node, dict) else range(len(node))):
            node[key] = clean(node[key])
    return root


def field(body: dict, name: str, kind: type, default: Any = None) -> Any:
    """body[name] checked against ``kind``; null or absent gives ``default``."""
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise bad_request(f"invalid type for field \"{name}\": expected {_NAMES.get(kind, kind.__name__)}")
    return value


def model_field(body: dict) -> str:
    """``model``, or the deprecated ``name`` older clients send."""
    return field(body, "model", str, "") or field(body, "name", str, "")


def token_list(body: dict, name: str) -> list[int]:
    values = field(body, name, list, [])
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise bad_request(f"invalid type for field \"{name}\": expected an array of integers")
    return values


THINK_LEVELS = ("high", "medium", "low", "max")
MAX_TOP_LOGPROBS = 20


def parse_format(body: dict) -> Any:
    """None, "json" or a JSON Schema object; "" and null mean none (400 for anything else)."""
    fmt = body.get("format")
    if fmt in (None, ""):
        return None
    if fmt != "json" and not isinstance(fmt, dict):
        raise bad_request(f"invalid format: {json.dumps(fmt)}; expected \"json\" or a valid JSON Schema object")
    return fmt


def parse_think(value: Any) -> bool | str | None:
    """``think``: true, false, a level, or None when it was not set."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value in THINK_LEVELS:
        return value
    shown = json.dumps(value) if isinstance(value, str) else value
    raise bad_request(f"invalid think value: {shown} (must be \"high\", \"medium\", \"low\", \"max\", true, or false)")


def parse_logprobs(body: dict) -> int | None:
    """How many alternatives to report per token when ``logprobs`` is on; None when it is off."""
    top = field(body, "top_logprobs", int, 0)
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise bad_request(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return top if field(body, "logprobs", bool, False) else None


@dataclass(frozen=True)
class GenerateRequest:
    model: str
    prompt: str
    system: str              # "" = the model's SYSTEM
    template: str            # "" = the model's TEMPLATE
    context: list[int]
    stream: bool
    raw: bool
    format: Any
    options: dict | None
    keep_alive: Any
    logprobs: int | None     # None: off; N: the chosen token's logprob and the N most likely
    suffix: str              # fill-in-the-middle: the text after the insertion (templates using .Suffix)
    think: bool | str | None  # None = not set


def parse_generate(body: dict) -> GenerateRequest:
    return GenerateRequest(
        model=model_field(body), prompt=field(body, "prompt", str, ""), system=field(body, "system", str, ""),
        template=field(body, "template", str, ""), context=token_list(body, "context"),
        stream=field(body, "stream", bool, True), raw=field(body, "raw", bool, False), format=parse_format(body),
        options=field(body, "options", dict), keep_alive=body.get("keep_alive"), logprobs=parse_logprobs(body),
        suffix=field(body, "suffix", str, ""), think=parse_think(body.get("think")),
    )
