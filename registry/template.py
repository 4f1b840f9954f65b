"""Ollama prompt templates: parse a TEMPLATE and turn a conversation into the prompt text, as Ollama does.

The engine is :mod:`registry.gotemplate` (Go's text/template subset). This module adds Ollama's rules
(``template/template.go``):

* a template that mentions neither ``.Messages`` nor ``.Response`` gets ``{{ .Response }}`` appended;
* **Messages mode** (the template mentions ``.Messages``): one execution with ``.System`` (all system
  messages joined by a blank line), ``.Messages`` (consecutive same-role messages merged, tool messages
  excepted; system messages stay in), ``.Tools``, ``.Response`` = "" and the thinking flags;
* **legacy mode** (no ``.Messages``): the conversation is cut into System/Prompt/Response turns, the template
  runs once per turn, and the last turn runs a copy of the tree cut just after the first ``.Response``
  field, so a trailing assistant message acts as a prefill;
* **FIM mode**: a prompt plus a suffix executes ``{Prompt, Suffix, Response: ""}``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from registry.gotemplate import Budget, Limits, TemplateError, execute, nodes, parse
from registry.gotemplate.ollama_types import message_value, tools_value
from registry.jinja_template import JinjaTemplate, render_jinja_prompt

__all__ = ["DEFAULT_TEMPLATE", "JinjaTemplate", "Limits", "Template", "TemplateError", "collate", "is_jinja",
           "load_template", "render_prompt"]

DEFAULT_TEMPLATE = "{{ .Prompt }}"          # a model without a template layer
_DEFAULT_LIMITS = Limits()
# Go templates name Ollama's capitalised fields (.Messages, .Prompt …); Jinja uses {% %} blocks, {# #} comments or
# HF's lower-case variables inside {{ }}
_GO_FIELD = re.compile(r"\.(?:Messages|Prompt|System|Response|Tools|Suffix|Content|Role)\b")
_JINJA_MARK = re.compile(r"\{%|\{#|\{\{[^}]*\b(?:messages|message|add_generation_prompt|bos_token|eos_token)\b")
_RESPONSE = nodes.Action(0, nodes.Pipe(0, (), False, (nodes.Command(0, (nodes.Field(0, ("Response",)),)),)))


class Template:
    """A parsed Ollama template. Parsing validates it (TemplateError with line:col) and caps its size."""

    def __init__(self, source: str, *, limits: Limits = _DEFAULT_LIMITS) -> None:
        self.source = source
        self.limits = limits
        tree = parse(source)
        names = {name.lower() for name in identifiers(tree)}
        if "messages" not in names and "response" not in names:
            tree = nodes.ListNode(tree.pos, tree.nodes + (_RESPONSE,))
            names.add("response")
        self._tree = tree
        self._names = frozenset(names)
        self._final_turn = _cut_after_response(tree)

    def __str__(self) -> str:
        return self.source

    def render(self, data: dict[str, Any]) -> str:
        """Execute once with ``data`` as dot, within the output and step limits."""
        return self.execute(data, Budget(self.limits))

    def execute(self, data: dict[str, Any], budget: Budget, *, final_turn: bool = False) -> str:
        """Execute with a shared budget; ``final_turn`` runs the legacy tree cut after ``.Response``."""
        return execute(self._final_turn if final_turn else self._tree, data, budget, self.source)

    @property
    def uses_messages(self) -> bool:
        """True when the template reads ``.Messages`` (Messages mode), False for legacy templates."""
        return "messages" in self._names

    def references(self, field: str) -> bool:
        """Whether a field or variable name (any case) occurs in the template, e.g. "Tools", "Suffix"."""
        return field.lower() in self._names


def is_jinja(source: str) -> bool:
    """The rule telling the two kinds apart: a template is Jinja when it names no Go field (``.Messages``,
    ``.Prompt``, ``.System``, ``.Response``, ``.Tools``, ``.Suffix``, ``.Content``, ``.Role``) and has a Jinja
    marker: a ``{%`` block, a ``{#`` comment, or ``messages``/``message``/``add_generation_prompt``/``bos_token``/
    ``eos_token`` inside ``{{ }}``. Anything else (plain text, ``{{ .Prompt }}``) is a Go template."""
    return not _GO_FIELD.search(source) and bool(_JINJA_MARK.search(source))


def load_template(source: str) -> Template | JinjaTemplate:
    """A Go template or, by :func:`is_jinja`, a sandboxed Jinja one; TemplateError when it does not parse."""
    return JinjaTemplate(source) if is_jinja(source) else Template(source)


def render_prompt(template: Template | JinjaTemplate, messages: list[dict[str, Any]], *, system: str | None = None,
                  tools: list[dict[str, Any]] | None = None, legacy_prompt: str | None = None,
                  suffix: str | None = None, think: bool | str | None = None, bos_token: str = "",
                  eos_token: str = "") -> str:
    """Render a conversation (chat message dicts: role, content, images, tool_calls, tool_name, thinking).

    ``system`` is the model's SYSTEM: it is prepended unless the conversation starts with a system message.
    ``legacy_prompt`` is /api/generate's prompt: with a non-empty ``suffix`` the template gets FIM values
    ``{Prompt, Suffix}``, otherwise it is appended as the last user message. ``think`` is the request's
    think value (bool, or a level such as "high"); None means it was not set. A JinjaTemplate gets the
    conversation as HF's ``apply_chat_template`` (no FIM: ``suffix`` is ignored) with ``bos_token``/``eos_token``.
    """
    if isinstance(template, JinjaTemplate):
        extra = [{"role": "user", "content": legacy_prompt}] if legacy_prompt is not None else []
        return render_jinja_prompt(template, [*messages, *extra], system=system, tools=tools, think=think,
                                   bos_token=bos_token, eos_token=eos_token)
    budget = Budget(template.limits)
    flags = _think_values(think)
    if legacy_prompt and suffix:
        return template.execute({"Prompt": legacy_prompt, "Suffix": suffix, "Response": "", **flags}, budget)
    msgs = list(messages)
    if legacy_prompt is not None:
        msgs.append({"role": "user", "content": legacy_prompt})
    if system and (not msgs or msgs[0].get("role") != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    system_text, collated = collate(msgs)
    if template.uses_messages or template.references("Document"):
        data = {"System": system_text, "Messages": [message_value(m) for m in collated],
                "Tools": tools_value(tools), "Response": "", **flags}
        return template.execute(data, budget)
    return _render_legacy(template, collated, flags, budget)


def collate(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(all system contents joined by a blank line, messages with consecutive same-role ones merged).

    Tool messages are never merged. Merging joins the contents with "\\n\\n" and keeps both messages'
    images. The input dicts are not modified.
    """
    system = [m.get("content") or "" for m in messages if m.get("role") == "system"]
    out: list[dict[str, Any]] = []
    for m in messages:
        if out and out[-1].get("role") == m.get("role") and m.get("role") != "tool":
            prev = out[-1]
            out[-1] = {**prev, "content": f"{prev.get('content') or ''}\n\n{m.get('content') or ''}",
                       "images": list(prev.get("images") or []) + list(m.get("images") or [])}
        else:
            out.append(dict(m))
    return "\n\n".join(system), out


def _think_values(think: bool | str | None) -> dict[str, Any]:
    if think is None:
        return {"Think": False, "ThinkLevel": "", "IsThinkSet": False}
    if isinstance(think, str):
        return {"Think": True, "ThinkLevel": think, "IsThinkSet": True}
    return {"Think": bool(think), "ThinkLevel": "", "IsThinkSet": True}


def _render_legacy(template: Template, messages: list[dict[str, Any]], flags: dict[str, Any],
                   budget: Budget) -> str:
    """One execution per System/Prompt/Response turn; the last turn stops after ``.Response``."""
    parts: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush(final: bool = False) -> None:
        data = {**turn, **flags, "First": not parts}       # .First: templates from Ollama ≤ 0.1.2x
        parts.append(template.execute(data, budget, final_turn=final))
        turn.update(System="", Prompt="", Response="")

    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = content
        elif role == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = content
        elif role == "assistant":
            turn["Response"] = content
    flush(final=True)
    return "".join(parts)


def identifiers(node: Any) -> list[str]:
    """Field and variable names in actions and branch conditions (Ollama's ``Identifiers``)."""
    if isinstance(node, nodes.ListNode):
        return [name for child in node.nodes for name in identifiers(child)]
    if isinstance(node, nodes.Action):
        return identifiers(node.pipe)
    if isinstance(node, nodes.BRANCHES):
        return identifiers(node.pipe) + identifiers(node.list) + identifiers(node.else_list)
    if isinstance(node, nodes.Pipe):
        return [name for cmd in node.cmds for arg in cmd.args for name in identifiers(arg)]
    if isinstance(node, nodes.Field):
        return list(node.idents)
    if isinstance(node, nodes.Variable):
        return [node.name, *node.fields]
    return []


def _cut_after_response(root: nodes.ListNode) -> nodes.ListNode:
    """A copy of the tree without every node after the first ``.Response`` field (Ollama's deleteNode).

    Like Ollama, the walk is pre-order through lists, branch bodies and action pipelines, but not through
    branch conditions, so ``{{ if .Response }}`` does not cut; an else branch reached after the cut is
    dropped (Ollama panics there).
    """
    cut = False

    def keep(node: Any) -> bool:
        nonlocal cut
        if isinstance(node, nodes.Field) and "Response" in node.idents:
            cut = True
            return True
        return not cut

    def walk(node: Any) -> Any:
        if not keep(node):
            return None
        if isinstance(node, nodes.ListNode):
            return replace(node, nodes=tuple(c for c in map(walk, node.nodes) if c is not None))
        if isinstance(node, nodes.BRANCHES):
            body = walk(node.list)
            rest = walk(node.else_list) if node.else_list is not None else None
            return replace(node, list=body or nodes.ListNode(node.pos, ()), else_list=rest)
        if isinstance(node, nodes.Action):
            pipe = walk_pipe(node.pipe)
            return None if pipe is None else replace(node, pipe=pipe)
        return node

    def walk_pipe(pipe: nodes.Pipe) -> nodes.Pipe | None:
        if not keep(pipe):
            return None
        cmds = []
        for cmd in pipe.cmds:
            args = [a for a in map(walk_arg, cmd.args) if a is not None]
            if not args:
                return None
            cmds.append(replace(cmd, args=tuple(args)))
        return replace(pipe, cmds=tuple(cmds))

    def walk_arg(arg: Any) -> Any:
        if not keep(arg):
            return None
        return walk_pipe(arg) if isinstance(arg, nodes.Pipe) else arg

    return walk(root)
