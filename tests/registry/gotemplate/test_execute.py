"""Execution beyond the Go-parity table: deliberate differences, newer Go features, errors and hostile input."""

from __future__ import annotations

import time

import pytest

from registry.gotemplate import MAX_NESTING, MAX_SOURCE_CHARS, Budget, Limits, TemplateError, execute, parse

DEFAULT_LIMITS = Limits()


def render(source: str, data: dict | None = None, limits: Limits = DEFAULT_LIMITS) -> str:
    return execute(parse(source), data or {}, Budget(limits), source)


# -- deliberate differences from Go ------------------------------------------------------------------------
@pytest.mark.parametrize("source, data, expected", [
    ("[{{ .Missing }}]", {}, "[]"),                                   # Go prints "<no value>"
    ("[{{ index .M \"nope\" }}]", {"M": {}}, "[]"),
    ("[{{ .Missing.Deep.Deeper }}]", {}, "[]"),                        # Go: "nil pointer evaluating"
    ("{{ if .Missing.Deep }}y{{ else }}n{{ end }}", {}, "n"),
    ("{{ eq 1 1.0 }}", {}, "true"),                                   # Go: incompatible int/float kinds
    ("{{ print .Missing }}", {}, "<nil>"),                            # inside print, nil is still <nil>
])
def test_lenient_nil_and_numbers(source, data, expected):
    assert render(source, data) == expected


# -- newer Go features (1.22 range over int, 1.23 else with) -----------------------------------------------
@pytest.mark.parametrize("source, expected", [
    ("{{ range 3 }}{{ . }}{{ end }}", "012"),
    ("{{ range $i := 3 }}{{ $i }}{{ end }}", "012"),
    ("{{ range 0 }}x{{ else }}none{{ end }}", "none"),
    ("{{ with .A }}a{{ else with .B }}b={{ . }}{{ else }}c{{ end }}", "b=bee"),
    ("{{ with .A }}a{{ else with .Z }}z{{ else }}c{{ end }}", "c"),
])
def test_newer_go_forms(source, expected):
    assert render(source, {"B": "bee"}) == expected


def test_range_over_int_rejects_two_variables():
    with pytest.raises(TemplateError, match="more than one variable"):
        render("{{ range $i, $v := 3 }}{{ end }}")


@pytest.mark.parametrize("source", ["{{ range .S }}{{ end }}", "{{ range true }}{{ end }}"])
def test_range_over_non_iterables_fails(source):
    with pytest.raises(TemplateError, match="range can't iterate over"):
        render(source, {"S": "string"})


# -- variables ---------------------------------------------------------------------------------------------
def test_variables_are_scoped_to_their_control_structure():
    with pytest.raises(TemplateError, match='undefined variable "\\$x"'):
        parse("{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}")
    with pytest.raises(TemplateError, match='undefined variable "\\$i"'):
        parse("{{ range $i, $v := .L }}{{ end }}{{ $i }}")
    assert render("{{ if $x := .A }}{{ else }}{{ $x }}{{ end }}", {"A": ""}) == ""


def test_range_variables_are_reset_each_iteration_and_assignment_reaches_outside():
    source = "{{ $last := \"\" }}{{ range $i, $m := .L }}{{ $x := $m }}{{ $last = $x }}{{ end }}{{ $last }}"
    assert render(source, {"L": ["a", "b"]}) == "b"


# -- calling things ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("source, message", [
    ("{{ .A 1 }}", "can't give argument to non-function"),
    ("{{ \"x\" | .A }}", "can't give argument to non-function"),
    ("{{ nil }}", "nil is not a command"),
    ("{{ len }}", "wrong number of args for len: want 1 got 0"),
    ("{{ ne 1 }}", "wrong number of args for ne: want 2 got 1"),
    ("{{ and }}", "wrong number of args for and: want at least 1 got 0"),
    ("{{ printf 3 }}", "format has type int"),
])
def test_call_errors(source, message):
    with pytest.raises(TemplateError, match=message):
        render(source, {"A": "a"})


def test_and_or_short_circuit():
    # the second operand would fail (len of nil) if it were evaluated
    assert render("{{ and .Missing (len .Missing) }}|{{ or \"x\" (len .Missing) }}") == "|x"


def test_identifier_used_as_an_argument_is_called():
    assert render("{{ len currentDate }}") == "10"


# -- parse errors carry positions --------------------------------------------------------------------------
@pytest.mark.parametrize("source, line, col, message", [
    ("ok\n  {{ if .A }}", 2, 6, "unexpected EOF"),
    ("{{ .A }}\n{{ end }}", 2, 4, "unexpected {{end}}"),
    ("a\nb {{ bogus }}", 2, 6, 'function "bogus" not defined'),
    ("{{ \"open }}", 1, 4, "unterminated quoted string"),
    ("{{ range .L }}{{ end }}{{ break }}", 1, 27, "{{break}} outside {{range}}"),
    ("{{ define \"t\" }}{{ end }}", 1, 4, "{{define}} is not supported"),
    ("{{ 0x }}", 1, 4, "bad number syntax"),
])
def test_parse_errors_have_positions(source, line, col, message):
    with pytest.raises(TemplateError) as err:
        parse(source)
    assert (err.value.line, err.value.col) == (line, col)
    assert message in str(err.value)


def test_execution_errors_have_positions():
    with pytest.raises(TemplateError) as err:
        render("line1\n  {{ index .L 9 }}", {"L": []})
    assert (err.value.line, err.value.col) == (2, 6)


# -- trimming edge cases not covered by the parity table ---------------------------------------------------
@pytest.mark.parametrize("source, expected", [
    ("a {{- \"\" }} b", "a b"),                 # only the left side is trimmed
    ("a\t\n {{- \"\" -}} \t\nb", "ab"),
    ("{{- \"\" }}  lead", "  lead"),            # nothing before the first action to trim
    ("x {{- /* c */}}  y", "x  y"),
    ("x  {{/* c */ -}}  y", "x  y"),
    ("a {{-\t\"t\" }}", "at"),                  # a tab also makes "{{-" a trim marker
    ("{{ \"a\" }}{{-1}}", "a-1"),              # "{{-1" is a negative number, not a trim marker
])
def test_trim_markers(source, expected):
    assert render(source) == expected


# -- hostile templates hit a cap quickly --------------------------------------------------------------------
def _fails_fast(source: str, data: dict | None = None, match: str = "", limits: Limits = DEFAULT_LIMITS) -> None:
    start = time.perf_counter()
    with pytest.raises(TemplateError, match=match):
        render(source, data, limits)
    assert time.perf_counter() - start < 5


def test_deep_nesting_is_refused_at_parse_time():
    depth = MAX_NESTING + 1
    _fails_fast("{{ if true }}" * depth + "x" + "{{ end }}" * depth, match="nesting deeper")
    _fails_fast("{{ " + "(" * depth + "1" + ")" * depth + " }}", match="nesting deeper")
    _fails_fast("{{ if .A }}" + "{{ else if .A }}" * depth + "{{ end }}", match="nesting deeper")


def test_maximum_allowed_nesting_still_renders():
    depth = MAX_NESTING - 1
    assert render("{{ if true }}" * depth + "x" + "{{ end }}" * depth) == "x"
    assert render("{{ " + "(" * depth + "print 1" + ")" * depth + " }}") == "1"


def test_oversized_source_is_refused():
    with pytest.raises(TemplateError, match="longer than"):
        parse("x" * (MAX_SOURCE_CHARS + 1))


def test_huge_range_hits_the_step_cap():
    _fails_fast("{{ range 1000000000 }}{{ end }}", match="steps")


def test_nested_ranges_hit_the_step_cap():
    source = "{{ range $.L }}" * 5 + "{{ .A }}" + "{{ end }}" * 5
    _fails_fast(source, {"L": [{"A": "y"}] * 100}, match="steps")


def test_doubling_string_hits_the_size_cap():
    _fails_fast('{{ $x := "ab" }}{{ range 100 }}{{ $x = printf "%s%s" $x $x }}{{ end }}', match="too large")


def test_printf_padding_is_capped():
    _fails_fast('{{ printf "%999999999d" 1 }}', match="width")


def test_output_is_capped():
    _fails_fast("{{ range 1000 }}{{ $.Big }}{{ end }}", {"Big": "x" * 100_000}, match="output is longer")


def test_small_limits_apply():
    limits = Limits(max_output_chars=5, max_steps=50)
    assert render("12345", limits=limits) == "12345"
    with pytest.raises(TemplateError, match="output"):
        render("123456", limits=limits)
    with pytest.raises(TemplateError, match="steps"):
        render("{{ range 100 }}{{ end }}", limits=limits)


def test_deeply_nested_data_does_not_overflow_the_stack():
    data: dict = {}
    cursor = data
    for _ in range(900):
        cursor["a"] = {}
        cursor = cursor["a"]
    assert render("{{ json .D }}", {"D": data}) == ""                  # Ollama prints nothing on a json error
    with pytest.raises(TemplateError, match="nested deeper"):
        render("{{ .D }}", {"D": data})


def test_parsed_tree_is_reusable():
    tree = parse("{{ range .L }}{{ . }}{{ end }}")
    assert execute(tree, {"L": [1]}, Budget(Limits())) == "1"
    assert execute(tree, {"L": [2, 3]}, Budget(Limits())) == "23"
