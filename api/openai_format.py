"""OpenAI's wire format ↔ pollama's native requests and Steps, as Ollama's openai/openai.go translates them.

Requests become native /api/chat bodies (so parse_chat validates them like any chat request) or native options;
Steps become chat.completion / text_completion objects and their stream chunks.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Response, jsonify

from api.errors import APIError
from api.formats import logprobs_json
from api.schemas import MAX_TOP_LOGPROBS, field
from engine.generate import Metrics, Step
from engine.runner import EngineError
from engine.tokenizer import Tokenizer

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
_DATA_URL = re.compile(r"data:(?:image/(?:jpeg|jpg|png|webp))?;base64,(.*)", re.DOTALL)
_REASONING = {"high": "high", "medium": "medium", "low": "low", "none": False}


class InvalidParam(APIError):
    """A 400 that names the offending request field in OpenAI's ``param``."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(400, message)
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict:
    """OpenAI's error object: 400 → invalid_request_error, 404 → not_found_error, anything else → api_error."""
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "api_error"), "param": param,
                      "code": None}}


def error_response(status: int, message: str, param: str | None = None) -> Response:
    response = jsonify(error_body(status, message, param))
    response.status_code = status
    return response


def sse(chunks: Iterator[dict], headers: dict) -> Response:
    """Server-sent events ending in [DONE]. An error before the first chunk gets its real status; after it, an
    in-band error event (the openai SDK raises on it). Closing the response closes ``chunks``, cancelling the run."""
    try:
        first = next(chunks, None)
    except APIError as exc:
        return error_response(exc.status, exc.message, getattr(exc, "param", None))
    except EngineError as exc:
        return error_response(500, str(exc))

    def events() -> Iterable[str]:
        try:
            if first is not None:
                yield _event(first)
            for chunk in chunks:
                yield _event(chunk)
            yield "data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001 - reported in-band once streaming has begun
            yield _event(error_body(500, str(exc)))
        finally:
            chunks.close()

    return Response(events(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache", **headers})


def _event(obj: dict) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


# ---- requests ---------------------------------------------------------------------------------------------------

def sampling_options(body: dict) -> dict[str, Any]:
    """Native options from OpenAI's sampling fields.

    temperature and top_p default to 1.0 when absent (OpenAI's defaults, which Ollama forces over the model's own);
    max_completion_tokens (the newer name) or max_tokens → num_predict.
    """
    if field(body, "n", int, 1) != 1:
        raise InvalidParam("n other than 1 is not supported", "n")
    opts: dict[str, Any] = {"temperature": field(body, "temperature", float, 1.0),
                            "top_p": field(body, "top_p", float, 1.0)}
    for name in ("frequency_penalty", "presence_penalty"):
        opts[name] = field(body, name, float)
    opts["seed"] = field(body, "seed", int)
    opts["num_predict"] = field(body, "max_completion_tokens", int, field(body, "max_tokens", int))
    opts["stop"] = _stop(body.get("stop"))
    return {k: v for k, v in opts.items() if v is not None}


def include_usage(body: dict) -> bool:
    return field(field(body, "stream_options", dict, {}), "include_usage", bool, False)


def native_chat_body(body: dict) -> dict:
    """The /api/chat body equivalent to an OpenAI chat completion request."""
    messages = body.get("messages")
    if messages == []:
        raise InvalidParam("[] is too short - 'messages'", "messages")
    if not isinstance(messages, list):
        raise InvalidParam("invalid type for field \"messages\": expected an array of objects", "messages")
    native = {"model": field(body, "model", str, ""), "messages": _messages(messages),
              "tools": field(body, "tools", list), "stream": field(body, "stream", bool, False),
              "format": _format(field(body, "response_format", dict)), "options": sampling_options(body),
              "logprobs": body.get("logprobs"), "top_logprobs": body.get("top_logprobs")}
    effort = field(body, "reasoning_effort", str) or field(field(body, "reasoning", dict, {}), "effort", str)
    if effort is not None:
        if effort not in _REASONING:
            raise InvalidParam(f"invalid reasoning_effort: {json.dumps(effort)}", "reasoning_effort")
        native["think"] = _REASONING[effort]
    return native


def completion_logprobs(body: dict) -> int | None:
    """/v1/completions' ``logprobs``: how many alternatives to report per token (0-20), or null for none."""
    top = field(body, "logprobs", int)
    if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
        raise InvalidParam(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}", "logprobs")
    return top


def completion_prompt(body: dict) -> str:
    """/v1/completions takes one prompt string, used as is (no template); echo is not supported."""
    if field(body, "echo", bool, False):
        raise InvalidParam("echo is not supported", "echo")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidParam("invalid type for field \"prompt\": expected string", "prompt")
    return prompt


def embedding_inputs(value: Any) -> list[str]:
    """input: a string or a list of strings ("" is one empty input); [], null and token arrays are refused."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise InvalidParam("invalid input", "input")


def encoding_format(body: dict) -> str:
    fmt = field(body, "encoding_format", str, "float")
    if fmt not in ("float", "base64"):
        raise InvalidParam(f"invalid encoding format: {json.dumps(fmt)} (must be \"float\" or \"base64\")",
                           "encoding_format")
    return fmt


def _stop(value: Any) -> list[str] | None:
    if value is None or isinstance(value, str):
        return None if value is None else [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise InvalidParam("invalid type for field \"stop\": expected a string or an array of strings", "stop")


def _format(response_format: dict | None) -> Any:
    """text → none, json_object → "json", json_schema → its schema (any JSON object when it has none)."""
    kind = (response_format or {}).get("type", "text")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = field(response_format, "json_schema", dict, {}).get("schema")
        return "json" if schema is None else schema
    if kind != "text":
        raise InvalidParam(f"invalid response_format type: {json.dumps(kind)}", "response_format")
    return None


def _messages(messages: list) -> list[dict]:
    """Native messages: one per text part, images attached, tool call arguments parsed, tool names looked up."""
    out: list[dict] = []
    tool_names: dict[str, str] = {}                      # tool_call_id → function name
    for m in messages:
        if not isinstance(m, dict):
            raise InvalidParam("invalid type for field \"messages\": expected an array of objects", "messages")
        base = {"role": m.get("role")}
        if m.get("reasoning") is not None:
            base["thinking"] = m["reasoning"]
        if m.get("tool_calls"):
            base["tool_calls"] = _tool_calls(m["tool_calls"], tool_names)
        if base["role"] == "tool":
            base["tool_name"] = m.get("name") or tool_names.get(m.get("tool_call_id"), "")
        _content(m.get("content"), base, out)
    return out


def _content(content: Any, base: dict, out: list[dict]) -> None:
    if content is None or isinstance(content, str):
        out.append({**base, "content": content or ""})
        return
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise InvalidParam("invalid message content: expected a string or an array of parts", "messages")
    for part in content:
        if part.get("type") == "text":
            out.append({**base, "content": part.get("text")})
        elif part.get("type") == "image_url":
            image = _image(part.get("image_url"))
            if out and out[-1]["role"] == base["role"] and not out[-1].get("images"):
                out[-1]["images"] = [image]
            else:
                out.append({**base, "content": "", "images": [image]})
        else:
            raise InvalidParam(f"invalid message part type: {json.dumps(part.get('type'))}", "messages")


def _image(value: Any) -> str:
    """The base64 payload of a data URL (http URLs are refused, as Ollama does)."""
    url = value.get("url") if isinstance(value, dict) else value
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise InvalidParam("invalid image input: expected a base64 data URL", "messages")
    try:
        base64.b64decode(match.group(1), validate=True)
    except binascii.Error:
        raise InvalidParam("invalid image input: bad base64 data", "messages") from None
    return match.group(1)


def _tool_calls(calls: Any, tool_names: dict[str, str]) -> list[dict]:
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise InvalidParam("invalid type for field \"tool_calls\": expected an array of objects", "messages")
    native = []
    for call in calls:
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise InvalidParam("invalid tool call arguments: expected a JSON string", "messages") from None
        if isinstance(call.get("id"), str):
            tool_names[call["id"]] = function.get("name", "")
        native.append({"function": {"name": function.get("name", ""), "arguments": arguments}})
    return native


# ---- responses --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Envelope:
    """The fields shared by every chunk of one response; ``created`` stays fixed across a stream."""

    id: str
    object: str
    created: int            # unix seconds
    model: str              # as the request spelled it

    @classmethod
    def new(cls, prefix: str, object_: str, model: str) -> Envelope:
        return cls(f"{prefix}-{secrets.token_hex(6)}", object_, int(time.time()), model)

    def wrap(self, choices: list[dict], **extra: Any) -> dict:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "system_fingerprint": "fp_ollama", "choices": choices, **extra}


def usage(metrics: Metrics | None) -> dict:
    prompt, completion = (metrics.prompt_eval_count, metrics.eval_count) if metrics else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(step: Step) -> str:
    """"length" when num_predict (max_tokens) ran out; a stop string, EOS or a cancellation are "stop"."""
    return "length" if step.done_reason == "length" else "stop"


@dataclass
class Generated:
    """A whole generation: its text, final step and, when asked for, each token's Ollama logprobs entry."""

    text: str
    last: Step
    logprobs: list[dict] | None


def collect(steps: Iterator[Step], tokenizer: Tokenizer, with_logprobs: bool) -> Generated:
    parts, entries, last = [], [], None
    with closing(steps):
        for last in steps:
            parts.append(last.text)
            entries += logprobs_json(last, tokenizer) or []
    return Generated("".join(parts), last, entries if with_logprobs else None)


def chat_completion(env: Envelope, done: Generated) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": done.text},
              "logprobs": _chat_logprobs(done.logprobs), "finish_reason": finish_reason(done.last)}
    return env.wrap([choice], usage=usage(done.last.metrics))


def chat_chunks(env: Envelope, steps: Iterator[Step], with_usage: bool, tokenizer: Tokenizer) -> Iterator[dict]:
    """Content deltas (the first one carries the role; empty ones without logprobs are skipped), a finish chunk,
    then usage."""
    with closing(steps):
        for i, step in enumerate(steps):
            entries = logprobs_json(step, tokenizer)
            if step.text or i == 0 or entries:
                delta = {"role": "assistant", "content": step.text} if i == 0 else {"content": step.text}
                yield env.wrap([{"index": 0, "delta": delta, "logprobs": _chat_logprobs(entries),
                                 "finish_reason": None}])
            if step.done_reason is not None:
                yield env.wrap([{"index": 0, "delta": {}, "finish_reason": finish_reason(step)}])
                if with_usage:
                    yield env.wrap([], usage=usage(step.metrics))


def _chat_logprobs(entries: list[dict] | None) -> dict | None:
    """OpenAI's chat logprobs: Ollama's entries ({token, logprob, bytes, top_logprobs}) under ``content``."""
    return None if entries is None else {"content": entries}


def text_completion(env: Envelope, done: Generated, prompt_chars: int) -> dict:
    choice = {"index": 0, "text": done.text, "logprobs": _legacy_logprobs(done.logprobs, prompt_chars),
              "finish_reason": finish_reason(done.last)}
    return env.wrap([choice], usage=usage(done.last.metrics))


def completion_chunks(env: Envelope, steps: Iterator[Step], with_usage: bool, tokenizer: Tokenizer,
                      prompt_chars: int) -> Iterator[dict]:
    """One chunk per step with text or logprobs; the final one carries finish_reason (as Ollama's), then usage."""
    offset = prompt_chars
    with closing(steps):
        for step in steps:
            done, entries = step.done_reason is not None, logprobs_json(step, tokenizer)
            if step.text or done or entries:
                yield env.wrap([{"index": 0, "text": step.text, "logprobs": _legacy_logprobs(entries, offset),
                                 "finish_reason": finish_reason(step) if done else None}])
            offset += sum(len(e["token"]) for e in entries or [])
            if done and with_usage:
                yield env.wrap([], usage=usage(step.metrics))


def _legacy_logprobs(entries: list[dict] | None, offset: int) -> dict | None:
    """The completions API's logprobs: parallel lists of tokens, their logprobs, {token: logprob} of the
    alternatives, and each token's character offset (counted from the prompt's start, as OpenAI's)."""
    if entries is None:
        return None
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def model_card(model_id: str, created: int, owner: str) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


def embedding_list(model: str, vectors: np.ndarray, fmt: str, n_tokens: int) -> dict:
    """vectors: (n, dim) float32; base64 is the little-endian float32 bytes (what the openai SDK asks for)."""
    def encode(v: np.ndarray) -> list[float] | str:
        return v.tolist() if fmt == "float" else base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")

    data = [{"object": "embedding", "embedding": encode(v), "index": i} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
