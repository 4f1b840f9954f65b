"""Sandboxed Jinja chat templates: HF-equivalent rendering, kind detection, and limits on hostile templates."""

from __future__ import annotations

import json
import time

import pytest

from engine.gguf import GGUFFile
from registry import chat_templates
from registry.jinja_template import JinjaLimits, JinjaTemplate, render_jinja_prompt
from registry.template import Template, TemplateError, is_jinja, load_template, render_prompt

SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Qwen2.5-Instruct's template (tools branch and tool messages), as HF ships it; the long instruction text of
# the tools preamble is shortened and one long tag is split over two lines
QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first)
        or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city (°C)",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def smollm_jinja(smollm2_path) -> str:
    with GGUFFile(smollm2_path) as gguf:
        return gguf.metadata["tokenizer.chat_template"]


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}],
])
def test_smollm2_jinja_renders_as_the_chatml_go_template(smollm_jinja, messages):
    jinja = load_template(smollm_jinja)
    assert isinstance(jinja, JinjaTemplate)
    go = Template(chat_templates.load("chatml").template)
    # SmolLM2's Jinja adds its own default system prompt; give the Go template the same one
    assert render_prompt(jinja, messages) == render_prompt(go, messages, system=SMOLLM_SYSTEM)


def test_model_system_is_prepended_only_without_a_system_message(smollm_jinja):
    template = JinjaTemplate(smollm_jinja)
    with_system = render_jinja_prompt(template, [{"role": "user", "content": "x"}], system="Model system")
    assert with_system.startswith("<|im_start|>system\nModel system<|im_end|>\n<|im_start|>user\nx")
    own = render_jinja_prompt(template, [{"role": "system", "content": "Mine"}, {"role": "user", "content": "x"}],
                              system="Model system")
    assert "Model system" not in own and own.startswith("<|im_start|>system\nMine<|im_end|>")


def test_qwen25_template_with_tools_and_tool_calls():
    template = load_template(QWEN25)
    assert isinstance(template, JinjaTemplate) and template.uses_messages
    assert template.references("Tools") and not template.references("Thinking")
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "18", "tool_name": "get_weather"}]
    text = render_prompt(template, messages, tools=[WEATHER])
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(WEATHER, ensure_ascii=False) + "\n</tools><|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n18\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert "°C" in text                                  # HF's tojson does not escape non-ASCII


def test_special_tokens_and_generation_prompt_variables():
    template = JinjaTemplate("{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"
                             "{% if add_generation_prompt %}>{% endif %}")
    text = render_jinja_prompt(template, [{"role": "user", "content": "q"}], bos_token="<s>", eos_token="</s>")
    assert text == "<s>q</s>>"


@pytest.mark.parametrize(("source", "jinja"), [
    ("{{ .Prompt }}", False),
    ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}", False),
    ("plain text with messages in it", False),
    ("{% for message in messages %}{{ message['content'] }}{% endfor %}", True),
    ("{{ bos_token }}{{ messages[0].content }}", True),
    ("{# comment #}hi", True),
])
def test_template_kind_rule(source, jinja):
    assert is_jinja(source) is jinja
    assert isinstance(load_template(source), JinjaTemplate if jinja else Template)


FAST = JinjaLimits(max_seconds=0.3, max_output_chars=100_000, max_range=50_000)


@pytest.mark.parametrize(("source", "message"), [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{{ messages.__class__.__name__ }}", "unsafe"),
    ("{{ cycler.__init__.__globals__ }}", "unsafe"),
    ("{{ messages.append(1) }}", "unsafe"),
    ("{% for i in range(1000000) %}{% endfor %}", "exceeds"),
    ("{% for i in range(60000) %}{% endfor %}", "range of 60000 items"),
    ("{% for a in range(49999) %}{% for b in range(49999) %}{% endfor %}{% endfor %}", "took too long"),
    # output cap or time limit, whichever this machine reaches first: both refuse it
    ("{% for a in range(49999) %}{% for b in range(49999) %}x{% endfor %}{% endfor %}",
     "rendered prompt exceeds|took too long"),
    ("{{ 'x' * 1000000000 }}", "repeated value exceeds"),
    ("{{ 'x' | center(1000000000) }}", "integer argument exceeds"),
    ("{{ 2 ** (10 ** 10) }}", "power too large"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
     "concatenation exceeds"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "RecursionError"),
    ("{{ raise_exception('Only user and assistant roles are supported!') }}",
     "raise_exception: Only user and assistant roles are supported!"),
    ("{{ messages[0].content.nope() }}", "jinja: "),
])
def test_hostile_or_failing_templates_raise_template_error_quickly(source, message):
    started = time.monotonic()
    with pytest.raises(TemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        JinjaTemplate(source, limits=FAST).render({"messages": [{"role": "user", "content": "x"}]})
    assert time.monotonic() - started < 1.5


def test_syntax_error_and_source_size_are_checked_at_parse_time():
    with pytest.raises(TemplateError, match="syntax error at line 2"):
        JinjaTemplate("ok\n{% for m in messages %}")
    with pytest.raises(TemplateError, match="too long"):
        JinjaTemplate("{% if x %}{% endif %}" + "x" * 300_000)


def test_trace_function_is_restored_after_a_render():
    import sys
    before = sys.gettrace()
    with pytest.raises(TemplateError):
        JinjaTemplate("{% for a in range(49999) %}{% for b in range(49999) %}{% endfor %}{% endfor %}",
                      limits=FAST).render({})
    JinjaTemplate("{{ 1 }}").render({})
    assert sys.gettrace() is before
