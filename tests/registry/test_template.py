"""Ollama prompt templates: golden prompts for real templates, and Ollama's rendering rules.

Golden files live in golden/templates/<template>/<case>.txt. The eight bundled templates' outputs were checked
against Go's own text/template (go1.19, same data as maps) and by hand; the tool and legacy cases by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.chat_templates import TEMPLATES_DIR
from registry.template import DEFAULT_TEMPLATE, Limits, Template, TemplateError, collate, render_prompt

GOLDEN = Path(__file__).resolve().parent / "golden" / "templates"

U1, A1 = "Hello, how are you?", "I'm doing great. How can I help you today?"
U2, SYS = "I'd like to show off how chat templating works!", "You are a helpful assistant."
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather <now> & later",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": ["string", "null"], "enum": ["c", "f"]}}}}}]
CALL = {"role": "assistant", "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]}


def _msgs(*pairs: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in pairs]


# case name -> (messages, tools)
CONVERSATIONS = {
    "user": (_msgs(("user", U1)), None),
    "system-user": (_msgs(("system", SYS), ("user", U1)), None),
    "user-assistant-user": (_msgs(("user", U1), ("assistant", A1), ("user", U2)), None),
    "system-user-assistant-user": (_msgs(("system", SYS), ("user", U1), ("assistant", A1), ("user", U2)), None),
    "user-user": (_msgs(("user", U1), ("user", U2)), None),
    "user-assistant": (_msgs(("user", U1), ("assistant", "The answer is")), None),
    "tools-user": (_msgs(("user", "Weather in Paris?")), TOOLS),
    "tools-call-result": (_msgs(("system", "Be brief."), ("user", "Weather in Paris?")) + [CALL] + [
        {"role": "tool", "content": "18C, sunny", "tool_name": "get_weather"}], TOOLS),
}
BUNDLED = ["chatml", "llama3-instruct", "llama2-chat", "mistral-instruct", "gemma-instruct", "gemma3-instruct",
           "phi-3", "zephyr"]
STANDARD = ["user", "system-user", "user-assistant-user", "system-user-assistant-user"]
EXTRA = {  # templates that exist only as test fixtures: golden/templates/<name>/template.gotmpl
    "qwen2.5-tools": ["system-user", "tools-user", "tools-call-result", "user-assistant"],
    "chatml-legacy": ["user", "system-user-assistant-user", "user-assistant", "user-user"],
}


def golden_cases() -> list[tuple[str, str]]:
    cases = [(name, case) for name in BUNDLED for case in STANDARD] + [("chatml", "user-user")]
    return cases + [(name, case) for name, extra in EXTRA.items() for case in extra]


def template_source(name: str) -> str:
    path = GOLDEN / name / "template.gotmpl" if name in EXTRA else TEMPLATES_DIR / f"{name}.gotmpl"
    return path.read_text(encoding="utf-8")


def render_case(name: str, case: str) -> str:
    messages, tools = CONVERSATIONS[case]
    return render_prompt(Template(template_source(name)), messages, tools=tools)


@pytest.mark.parametrize("name, case", golden_cases())
def test_golden_prompt(name, case):
    expected = (GOLDEN / name / f"{case}.txt").read_text(encoding="utf-8")
    assert render_case(name, case) == expected


def test_golden_files_have_no_strays():
    on_disk = {(p.parent.name, p.stem) for p in GOLDEN.glob("*/*.txt")}
    assert on_disk == set(golden_cases())


# -- which mode, and the appended {{ .Response }} ------------------------------------------------------------
def test_modes_and_references():
    chat = Template(template_source("qwen2.5-tools"))
    assert chat.uses_messages and chat.references("Tools") and chat.references("tools")
    assert not chat.references("Suffix")
    legacy = Template(template_source("chatml-legacy"))
    assert not legacy.uses_messages and legacy.references("System") and legacy.references("Response")


def test_response_is_appended_when_template_has_neither_messages_nor_response():
    t = Template("{{ .System }}:{{ .Prompt }}")
    assert t.references("Response")
    assert t.render({"System": "s", "Prompt": "p", "Response": "r"}) == "s:pr"
    assert Template("{{ .Prompt }}{{ .Response }}!").render({"Prompt": "p", "Response": "r"}) == "pr!"
    assert Template("{{ range .Messages }}{{ end }}").render({"Response": "r"}) == ""


def test_default_template_renders_plain_prompts():
    t = Template(DEFAULT_TEMPLATE)
    assert render_prompt(t, _msgs(("user", "just this"))) == "just this"
    assert render_prompt(t, _msgs(("user", "q1"), ("assistant", "a1"), ("user", "q2"))) == "q1a1q2"


# -- Messages mode -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("msgs, system, merged", [
    (_msgs(("user", "a"), ("user", "b")), "", [("user", "a\n\nb")]),
    (_msgs(("system", "s1"), ("system", "s2"), ("user", "u")), "s1\n\ns2", [("system", "s1\n\ns2"), ("user", "u")]),
    (_msgs(("tool", "t1"), ("tool", "t2")), "", [("tool", "t1"), ("tool", "t2")]),
    (_msgs(("system", "s"), ("user", "u"), ("system", "late")), "s\n\nlate",
     [("system", "s"), ("user", "u"), ("system", "late")]),
])
def test_collate(msgs, system, merged):
    got_system, got = collate(msgs)
    assert got_system == system
    assert [(m["role"], m["content"]) for m in got] == merged
    assert msgs[0]["content"] in ("a", "s1", "t1", "s")           # the input is not modified


def test_collate_keeps_images_of_merged_messages():
    _, got = collate([{"role": "user", "content": "a", "images": ["i1"]},
                      {"role": "user", "content": "b", "images": ["i2"]}])
    assert got == [{"role": "user", "content": "a\n\nb", "images": ["i1", "i2"]}]


def test_messages_mode_values():
    t = Template("{{ .System }}|{{ range .Messages }}{{ .Role }}:{{ .Content }}"
                 "[{{ .ToolName }}{{ len .ToolCalls }}{{ len .Images }}{{ .Thinking }}];{{ end }}|{{ .Response }}")
    msgs = [*_msgs(("system", "s1"), ("system", "s2")), {"role": "user", "content": "u", "images": ["b64"]},
            {"role": "assistant", "content": "a", "thinking": "hmm"},
            {"role": "tool", "content": "r", "tool_name": "f"}]
    assert render_prompt(t, msgs) == "s1\n\ns2|system:s1\n\ns2[00];user:u[01];assistant:a[00hmm];tool:r[f00];|"


def test_model_system_is_prepended_unless_the_chat_starts_with_one():
    t = Template("{{ range .Messages }}{{ .Role }}={{ .Content }};{{ end }}")
    assert render_prompt(t, _msgs(("user", "u")), system="M") == "system=M;user=u;"
    assert render_prompt(t, _msgs(("system", "R"), ("user", "u")), system="M") == "system=R;user=u;"
    assert render_prompt(t, [], system="M") == "system=M;"


def test_tools_print_as_json_and_calls_expose_arguments():
    t = Template("{{ $.Tools }}|{{ range .Tools }}{{ .Function.Name }}:{{ .Function.Parameters.Properties }}"
                 "{{ end }}|{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Index }}"
                 "{{ .Function.Arguments }}{{ .Function.Arguments.city }}{{ end }}{{ end }}")
    out = render_prompt(t, [CALL], tools=TOOLS)
    tools_json, per_tool, calls = out.split("|")
    assert tools_json.startswith('[{"type":"function","function":{"name":"get_weather","description":'
                                 '"Get the weather \\u003cnow\\u003e \\u0026 later","parameters":{"type":"object",'
                                 '"required":["city"],"properties":{"city":')
    assert per_tool == ('get_weather:{"city":{"type":"string","description":"City name"},'
                        '"unit":{"type":["string","null"],"enum":["c","f"]}}')
    assert calls == '0{"city":"Paris","unit":"c"}Paris'


MESSAGES = "{{ range .Messages }}{{ end }}"                     # makes a template a Messages-mode one


def test_no_tools_is_nil_and_json_of_tools_matches_printing():
    t = Template("{{ if .Tools }}T{{ else }}none{{ end }}{{ json .Tools }}" + MESSAGES)
    assert render_prompt(t, _msgs(("user", "u"))) == "nonenull"
    printed = render_prompt(Template("{{ .Tools }}" + MESSAGES), [], tools=TOOLS)
    assert render_prompt(t, [], tools=TOOLS) == "T" + printed


def test_to_typescript_type_of_tool_properties():
    t = Template("{{ range .Tools }}{{ range $k, $v := .Function.Parameters.Properties }}"
                 "{{ $k }}: {{ toTypeScriptType $v }}; {{ end }}{{ end }}" + MESSAGES)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": ["string", "null"]}, "c": {"type": "array"},
        "d": {"anyOf": [{"type": "boolean"}, {"type": "object"}]}, "e": {}}}}}]
    assert render_prompt(t, [], tools=tools) == (
        "a: number; b: string | null; c: any[]; d: boolean | Record<string, any>; e: any; ")


@pytest.mark.parametrize("think, expected", [
    (None, "false||false"), (True, "true||true"), (False, "false||true"), ("high", "true|high|true")])
def test_think_flags(think, expected):
    t = Template("{{ .Think }}|{{ .ThinkLevel }}|{{ .IsThinkSet }}" + MESSAGES)
    assert render_prompt(t, [], think=think) == expected


def test_fim_mode_uses_prompt_and_suffix():
    t = Template("{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n{{- else }}{{ .Prompt }}\n{{- end }}")
    assert render_prompt(t, [], legacy_prompt="def add(", suffix="return x") == "<PRE> def add( <SUF>return x <MID>"
    assert render_prompt(t, [], legacy_prompt="hello") == "hello"
    messages_t = Template("{{ range .Messages }}{{ .Role }}:{{ .Content }}{{ end }}")
    assert render_prompt(messages_t, [], system="s", legacy_prompt="p") == "system:suser:p"


# -- legacy mode ---------------------------------------------------------------------------------------------
LEGACY = Template("[{{ .System }}|{{ .Prompt }}|{{ .Response }}]")


@pytest.mark.parametrize("msgs, expected", [
    (_msgs(("user", "u")), "[|u|"),
    (_msgs(("system", "s"), ("user", "u"), ("assistant", "a")), "[s|u|a"),
    (_msgs(("user", "u1"), ("assistant", "a1"), ("user", "u2")), "[|u1|a1][|u2|"),
    (_msgs(("user", "u1"), ("system", "s2"), ("user", "u2")), "[|u1|][s2|u2|"),
    (_msgs(("assistant", "a0"), ("user", "u1")), "[||a0][|u1|"),
    (_msgs(("system", "s1"), ("assistant", "a"), ("system", "s2")), "[s1||a][s2||"),
    ([{"role": "tool", "content": "ignored"}, *_msgs(("user", "u"))], "[|u|"),
])
def test_legacy_turns(msgs, expected):
    """Every turn but the last runs whole; the last stops right after .Response (so no closing "]")."""
    assert render_prompt(LEGACY, msgs) == expected


@pytest.mark.parametrize("source, expected", [
    ("<{{ .Prompt }}>{{ .Response }}<END>{{ .System }}", "<u>pre"),
    ("{{ if .Prompt }}<{{ .Prompt }}>{{ end }}{{ .Response }}{{ if .Response }}!{{ end }}", "<u>pre"),
    ("{{ if .Response }}has{{ end }}:{{ .Response }}tail", "has:pre"),          # conditions do not cut
    ("{{ $.Response }}:{{ .Prompt }}{{ .Response }}x", "pre:upre"),            # only .Field nodes cut
    ("{{ .Prompt }}{{ .Response | printf \"%s\" }}z", "u"),          # Ollama drops the whole pipeline
    ("{{ if true }}a{{ .Response }}b{{ else }}c{{ end }}d", "apre"),           # the else after a cut is dropped
])
def test_legacy_final_turn_is_cut_after_first_response(source, expected):
    t = Template(source)
    assert render_prompt(t, _msgs(("user", "u"), ("assistant", "pre"))) == expected


def test_legacy_earlier_turns_run_the_whole_template():
    t = Template("<{{ .Prompt }}>{{ .Response }}<END>")
    assert render_prompt(t, _msgs(("user", "u1"), ("assistant", "a1"), ("user", "u2"))) == "<u1>a1<END><u2>"


def test_legacy_first_flag():
    t = Template("{{ if .First }}F{{ end }}{{ .Prompt }}{{ .Response }}")
    assert render_prompt(t, _msgs(("user", "u1"), ("assistant", "a1"), ("user", "u2"))) == "Fu1a1u2"


# -- errors and limits ---------------------------------------------------------------------------------------
def test_template_errors_are_value_errors_with_positions():
    with pytest.raises(TemplateError) as err:
        Template("line one\n{{ if .A }}x")
    assert isinstance(err.value, ValueError) and err.value.line == 2


def test_budget_is_shared_across_legacy_turns():
    t = Template("{{ .Prompt }}{{ .Response }}", limits=Limits(max_output_chars=10))
    assert render_prompt(t, _msgs(("user", "12345"))) == "12345"
    with pytest.raises(TemplateError, match="longer than 10"):
        render_prompt(t, _msgs(("user", "12345"), ("assistant", "678"), ("user", "90abc")))


def test_render_is_repeatable_and_thread_free_of_state():
    t = Template(template_source("gemma-instruct"))
    msgs = CONVERSATIONS["system-user-assistant-user"][0]
    assert render_prompt(t, msgs) == render_prompt(t, msgs)
