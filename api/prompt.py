"""Turning a request into prompt tokens: the model's template, system prompt, MESSAGE history and context."""

from __future__ import annotations

from api.errors import bad_request
from api.model_pool import ModelRecord
from engine.tokenizer import Tokenizer
from registry.template import Template, TemplateError, render_prompt

DEFAULT_TEMPLATE = "{{ .Prompt }}"


def parse_template(source: str) -> Template:
    try:
        return Template(source)
    except TemplateError as exc:
        raise bad_request(f"template error: {exc}") from None


def render(template: Template, messages: list[dict], system: str | None = None) -> str:
    try:
        return render_prompt(template, messages, system=system)
    except TemplateError as exc:
        raise bad_request(f"template error: {exc}") from None


def generate_messages(record: ModelRecord, prompt: str, system: str, with_history: bool) -> list[dict]:
    """system (the request's, else the model's SYSTEM), the MESSAGE history (not with context), then the prompt."""
    messages: list[dict] = []
    if system or record.system:
        messages.append({"role": "system", "content": system or record.system})
    if with_history:
        messages.extend(record.messages)
    messages.append({"role": "user", "content": prompt})
    return messages


def encode(tokenizer: Tokenizer, text: str, context: list[int]) -> list[int]:
    """Context tokens from an earlier answer, then the new text (BOS only when there is no context)."""
    for token in context:
        if not tokenizer.is_valid(token):
            raise bad_request(f"context token {token} is outside the vocabulary")
    return list(context) + tokenizer.encode(text, add_special=not context, parse_special=True)
