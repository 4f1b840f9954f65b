"""Structured output and logprobs on the wire: `format`, the `grammar` option, `logprobs` / `top_logprobs`."""

from __future__ import annotations

import json
from typing import Any

from api.errors import bad_request
from api.schemas import field
from engine.constrained import Constraint, ConstraintError
from engine.generate import Step
from engine.tokenizer import Tokenizer

MAX_TOP_LOGPROBS = 20


def parse_format(body: dict) -> Any:
    """None, "json" or a JSON Schema object; "" and null mean none (400 for anything else)."""
    fmt = body.get("format")
    if fmt in (None, ""):
        return None
    if fmt != "json" and not isinstance(fmt, dict):
        raise bad_request(f"invalid format: {json.dumps(fmt)}; expected \"json\" or a valid JSON Schema object")
    return fmt


def parse_logprobs(body: dict) -> int | None:
    """How many alternatives to report per token when ``logprobs`` is on; None when it is off."""
    top = field(body, "top_logprobs", int, 0)
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise bad_request(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return top if field(body, "logprobs", bool, False) else None


def build_constraint(fmt: Any, grammar: str | None, tokenizer: Tokenizer) -> Constraint | None:
    """The decoding constraint for a request's format (or its `grammar` option); 400 when it does not compile."""
    try:
        if fmt == "json":
            return Constraint.json(tokenizer)
        if isinstance(fmt, dict):
            return Constraint.json_schema(tokenizer, fmt)
        if grammar:
            syntax = "lark" if _looks_like_lark(grammar) else "gbnf"
            return Constraint.grammar(tokenizer, grammar, syntax)
    except ConstraintError as exc:
        raise bad_request(f"invalid format: {exc}") from None
    return None


def logprobs_json(step: Step, tokenizer: Tokenizer) -> list[dict] | None:
    """Ollama's per-chunk logprobs: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]."""
    if step.logprob is None:
        return None

    def entry(token: int, logprob: float) -> dict:
        piece = tokenizer.token_bytes(token, render_special=True)
        return {"token": piece.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(piece)}

    lp = step.logprob
    return [{**entry(lp.token, lp.logprob), "top_logprobs": [entry(t, p) for t, p in lp.top]}]


def _looks_like_lark(text: str) -> bool:
    """GBNF rules read `name ::= ...`; Lark rules read `name: ...`."""
    return "::=" not in text
