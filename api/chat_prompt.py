"""/api/chat requests and their prompts: parsing, Ollama's message assembly and truncation to num_ctx."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api import prompt
from api.errors import bad_request
from api.model_pool import ModelRecord
from api.schemas import field, model_field, parse_format, parse_logprobs, parse_think
from engine.tokenizer import Tokenizer
from registry.template import JinjaTemplate, Template, TemplateError, render_prompt

_MESSAGE_TEXT = ("content", "thinking", "tool_name", "tool_call_id")


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict]
    tools: list[dict]           # [] = not a tools request (ollama-python always sends "tools": [])
    stream: bool
    format: Any                 # None, "json" or a JSON schema (api/formats.py builds the constraint)
    options: dict | None
    keep_alive: Any
    think: bool | str | None    # None = not set
    debug_render_only: bool     # answer with the rendered prompt instead of generating
    logprobs: int | None = None  # None: off; N: the chosen token's logprob and the N most likely


def parse_chat(body: dict) -> ChatRequest:
    tools = field(body, "tools", list, [])
    if not all(isinstance(t, dict) for t in tools):
        raise bad_request("invalid type for field \"tools\": expected an array of objects")
    return ChatRequest(
        model=model_field(body), messages=parse_messages(body.get("messages")), tools=tools,
        stream=field(body, "stream", bool, True), format=parse_format(body), options=field(body, "options", dict),
        keep_alive=body.get("keep_alive"), think=parse_think(body.get("think")),
        debug_render_only=field(body, "_debug_render_only", bool, False), logprobs=parse_logprobs(body),
    )


def parse_messages(value: Any) -> list[dict]:
    """Chat messages with checked field types and lower-cased roles; null fields are dropped."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise bad_request("invalid type for field \"messages\": expected an array of objects")
    return [_message(m) for m in value]


def _message(m: dict) -> dict:
    out = {k: v for k, v in m.items() if v is not None}
    for name in ("role", *_MESSAGE_TEXT):
        if not isinstance(out.get(name, ""), str):
            raise bad_request(f"invalid type for message field \"{name}\": expected string")
    for name in ("images", "tool_calls"):
        if not isinstance(out.get(name, []), list):
            raise bad_request(f"invalid type for message field \"{name}\": expected array")
    out["role"] = out.get("role", "").lower()
    out.setdefault("content", "")
    return out


def check_capabilities(template: Template | JinjaTemplate, req: ChatRequest, record: ModelRecord) -> None:
    """400 when the request needs something the model's template cannot express (tools, thinking)."""
    if req.tools and not template.references("Tools"):
        raise bad_request(f"{record.name} does not support tools")
    prompt.require_thinking(template, req.think, req.model)


def chat_messages(record: ModelRecord, messages: list[dict]) -> list[dict]:
    """Ollama's order: the model's SYSTEM (unless the request starts with a system message), the Modelfile
    MESSAGE history, then the request's messages."""
    assembled = [*record.messages, *messages]
    if record.system and (not messages or messages[0].get("role") != "system"):
        assembled.insert(0, {"role": "system", "content": record.system})
    return assembled


def render_chat(template: Template | JinjaTemplate, messages: list[dict], *, tools: list[dict],
                think: bool | str | None, count_tokens: Callable[[str], int], num_ctx: int,
                specials: dict[str, str] | None = None) -> str:
    """The prompt for ``messages``, dropping the oldest non-system messages until it fits ``num_ctx``.

    As Ollama's chatPrompt: keep messages[i:] plus every system message before i, for the smallest i that
    fits; the last message is always kept (the engine truncates tokens if even that is too long). The prompt
    grows with the number of kept messages, so the smallest i is found by bisection: O(log n) renders.
    ``specials``: bos_token/eos_token texts for a Jinja template (api.prompt.special_texts).
    """
    def render(i: int) -> str:
        kept = [m for m in messages[:i] if m.get("role") == "system"] + messages[i:]
        try:
            return render_prompt(template, kept, tools=tools or None, think=think, **(specials or {}))
        except TemplateError as exc:
            raise bad_request(f"template error: {exc}") from None

    def fits(text: str) -> bool:
        return count_tokens(text) < num_ctx      # one slot left to generate, as engine.generate.fit_prompt

    text = render(0)
    if fits(text) or len(messages) <= 1:
        return text
    lo, hi = 1, len(messages) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(render(mid)):
            hi = mid
        else:
            lo = mid + 1
    return render(lo)


def chat_prompt_tokens(record: ModelRecord, req: ChatRequest, template: Template | JinjaTemplate,
                       tokenizer: Tokenizer, num_ctx: int) -> tuple[str, list[int]]:
    """The rendered chat prompt (old turns dropped to fit num_ctx) and its tokens."""
    text = render_chat(template, chat_messages(record, req.messages), tools=req.tools, think=req.think,
                       count_tokens=lambda t: len(prompt.encode(tokenizer, t, [])), num_ctx=num_ctx,
                       specials=prompt.special_texts(tokenizer))
    return text, prompt.encode(tokenizer, text, [])
