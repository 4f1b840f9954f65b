"""Turning a request into prompt tokens: the model's template, system prompt, MESSAGE history and context."""

from __future__ import annotations

from api.errors import bad_request
from api.model_pool import ModelRecord
from engine.tokenizer import Tokenizer
from registry.template import JinjaTemplate, Template, TemplateError, load_template, render_prompt

DEFAULT_TEMPLATE = "{{ .Prompt }}"


def parse_template(source: str) -> Template | JinjaTemplate:
    try:
        return load_template(source)
    except TemplateError as exc:
        raise bad_request(f"template error: {exc}") from None


def insert_template(record: ModelRecord) -> Template | JinjaTemplate:
    """The model's own template when it can fill in the middle (it uses .Suffix: Ollama's "insert" capability)."""
    template = parse_template(record.template or DEFAULT_TEMPLATE)
    if not template.references("Suffix"):
        raise bad_request(f"{record.name} does not support insert")
    return template


def require_thinking(template: Template | JinjaTemplate, think: bool | str | None, model: str) -> None:
    """400 when ``think`` asks for thinking that the template cannot express (it has no .Thinking)."""
    if think and not template.references("Thinking"):
        raise bad_request(f"\"{model}\" does not support thinking")


def render(template: Template | JinjaTemplate, messages: list[dict], system: str | None = None,
           tokenizer: Tokenizer | None = None, *, prompt: str | None = None, suffix: str = "",
           think: bool | str | None = None) -> str:
    """The prompt text; ``tokenizer`` supplies bos/eos texts to Jinja templates. ``prompt`` is /api/generate's
    (the last user message, or with a ``suffix`` the template's FIM values {Prompt, Suffix})."""
    specials = special_texts(tokenizer) if tokenizer is not None else {}
    try:
        return render_prompt(template, messages, system=system, legacy_prompt=prompt, suffix=suffix or None,
                             think=think, **specials)
    except TemplateError as exc:
        raise bad_request(f"template error: {exc}") from None


def special_texts(tokenizer: Tokenizer) -> dict[str, str]:
    """``bos_token``/``eos_token`` for a Jinja template. BOS is "" when encode() adds the BOS token itself, so
    a template starting with ``{{ bos_token }}`` does not give two (llama.cpp strips it for the same reason)."""
    def text(token: int | None) -> str:
        return tokenizer.token_text(token) if token is not None else ""
    return {"bos_token": "" if tokenizer.add_bos else text(tokenizer.bos_id), "eos_token": text(tokenizer.eos_id)}


def generate_messages(record: ModelRecord, system: str, with_history: bool) -> list[dict]:
    """What comes before /api/generate's prompt: system (the request's, else the model's SYSTEM), then the
    MESSAGE history (not with context)."""
    messages: list[dict] = []
    if system or record.system:
        messages.append({"role": "system", "content": system or record.system})
    if with_history:
        messages.extend(record.messages)
    return messages


def encode(tokenizer: Tokenizer, text: str, context: list[int]) -> list[int]:
    """Context tokens from an earlier answer, then the new text (BOS only when there is no context)."""
    for token in context:
        if not tokenizer.is_valid(token):
            raise bad_request(f"context token {token} is outside the vocabulary")
    return list(context) + tokenizer.encode(text, add_special=not context, parse_special=True)
