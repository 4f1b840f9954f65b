"""Structured output and logprobs on the wire: `format`, the `grammar` option, `logprobs` / `top_logprobs`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from api.errors import bad_request
from api.options import RunOptions
from engine.constrained import Constraint, ConstraintError
from engine.generate import Step
from engine.tokenizer import Tokenizer


def prepare_output(run: RunOptions, fmt: Any, logprobs: int | None,
                   tokenizer: Tokenizer) -> tuple[RunOptions, Constraint | None]:
    """The run options with logprobs set, and the decoding constraint for ``fmt`` or the grammar option."""
    return replace(run, limits=replace(run.limits, logprobs=logprobs)), build_constraint(fmt, run.grammar, tokenizer)


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
