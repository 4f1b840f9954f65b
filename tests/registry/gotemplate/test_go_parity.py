"""Parity with Go's text/template: every expected value below is what Go 1.19 printed for the same template
and data (``template.New("").Option("missingkey=zero")`` plus Ollama's ``json``), data decoded from JSON.

Cases where this implementation differs on purpose are in test_execute.py (nil prints as "", a field of nil
is nil, ``define`` is unsupported).
"""

from __future__ import annotations

import pytest

from registry.gotemplate import Budget, Limits, TemplateError, execute, parse

MSGS = [{"Role": "system", "Content": "S"}, {"Role": "user", "Content": "U1"},
        {"Role": "assistant", "Content": "A1"}, {"Role": "user", "Content": "U2"}]

# (template, data, output of Go)
GO_OUTPUTS = [
    ('{{ .A }}',
     {'A': 'x'}, 'x'),
    ('{{ .A.B.C }}',
     {'A': {'B': {'C': 'deep'}}}, 'deep'),
    ('{{ if .Missing }}yes{{ else }}no{{ end }}',
     {}, 'no'),
    ('{{ with .A }}{{ .B }}{{ end }}',
     {'A': {'B': 'in'}}, 'in'),
    ('{{ with .Missing }}x{{ else }}none{{ end }}',
     {}, 'none'),
    ('{{ range .L }}{{ $.P }}{{ . }}{{ end }}',
     {'L': ['a', 'b'], 'P': '-'}, '-a-b'),
    ('{{ . }}',
     {'A': 'x', 'B': ['y', True]}, 'map[A:x B:[y true]]'),
    ('a  {{- .A }}  b',
     {'A': 'x'}, 'ax  b'),
    ('a  {{ .A -}}  \n\t b',
     {'A': 'x'}, 'a  xb'),
    ('a \n {{- .A -}} \n b',
     {'A': 'x'}, 'axb'),
    ('x\n{{- /* comment */ -}}\ny',
     {}, 'xy'),
    ('x {{/* comment */}} y',
     {}, 'x  y'),
    ('x\n  {{- /* c\nmulti */}}\ny',
     {}, 'x\ny'),
    ('{{- .A -}}',
     {'A': ' x '}, ' x '),
    ('{{ -3 }}|{{-3}}',
     {}, '-3|-3'),
    ('a{{- "b" -}}c',
     {}, 'abc'),
    ('a\r\n{{- .A }}',
     {'A': 'x'}, 'ax'),
    ('{{ .A\n}}',
     {'A': 'nl'}, 'nl'),
    ('{{\n.A -}}\n\n z',
     {'A': 'nl'}, 'nlz'),
    ('{{ if eq .R "a" }}A{{ else if eq .R "b" }}B{{ else }}C{{ end }}',
     {'R': 'b'}, 'B'),
    ('{{ if eq .R "a" }}A{{ else if eq .R "b" }}B{{ else }}C{{ end }}',
     {'R': 'z'}, 'C'),
    ('{{ if and .A .B }}both{{ end }}{{ if or .A .C }}|either{{ end }}',
     {'A': '1', 'B': [1], 'C': ''}, 'both|either'),
    ('{{ if not .A }}empty{{ end }}',
     {'A': []}, 'empty'),
    ('{{ if .M }}m{{ end }}{{ if .E }}e{{ end }}',
     {'M': {'k': 'v'}, 'E': {}}, 'm'),
    ('{{ if false }}f{{ else }}{{ if true }}t{{ end }}{{ end }}',
     {}, 't'),
    ('{{ and "a" "" "c" }}|{{ and "a" "b" }}|{{ or "" "" }}|{{ or "" "x" "y" }}',
     {}, '|b||x'),
    ('{{ .A | and "first" }}|{{ "" | or "first" }}',
     {'A': 'piped'}, 'piped|first'),
    ('{{ $x := "a" }}{{ $x }}{{ $x = "b" }}{{ $x }}',
     {}, 'ab'),
    ('{{ $x := "out" }}{{ if true }}{{ $x := "in" }}{{ $x }}{{ end }}{{ $x }}',
     {}, 'inout'),
    ('{{ $x := "out" }}{{ if true }}{{ $x = "set" }}{{ end }}{{ $x }}',
     {}, 'set'),
    ('{{ $n := "" }}{{ range .L }}{{ $n = . }}{{ end }}{{ $n }}',
     {'L': ['a', 'b', 'c']}, 'c'),
    ('{{ if $v := .A }}{{ $v }}{{ else }}none{{ end }}',
     {'A': 'val'}, 'val'),
    ('{{ with $v := .A }}{{ $v }}{{ . }}{{ end }}',
     {'A': 'w'}, 'ww'),
    ('{{ $ }}',
     {'K': 'root'}, 'map[K:root]'),
    ('{{ range $i, $m := .Messages }}{{ $i }}:{{ $m.Role }}={{ .Content }};{{ end }}',
     {'Messages': MSGS}, '0:system=S;1:user=U1;2:assistant=A1;3:user=U2;'),
    ('{{ range $m := .Messages }}{{ $m.Role }},{{ end }}',
     {'Messages': MSGS}, 'system,user,assistant,user,'),
    ('{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}',
     {'M': {'b': '2', 'a': '1', 'c': '3'}}, 'a=1;b=2;c=3;'),
    ('{{ range .M }}{{ . }}{{ end }}',
     {'M': {'b': '2', 'a': '1'}}, '12'),
    ('{{ range .E }}x{{ else }}empty{{ end }}',
     {'E': []}, 'empty'),
    ('{{ range .Missing }}x{{ else }}nil{{ end }}',
     {}, 'nil'),
    ('{{ $i := "" }}{{ $v := "" }}{{ range $i, $v = .L }}{{ end }}{{ $i }}{{ $v }}',
     {'L': ['a', 'b']}, '1b'),
    ('{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}'
     '{{ if $last }}LAST:{{ .Role }}{{ end }}{{ end }}',
     {'Messages': MSGS}, 'LAST:user'),
    ('{{ range .L }}{{ if eq . "c" }}{{ break }}{{ end }}{{ . }}{{ end }}',
     {'L': ['a', 'b', 'c', 'd']}, 'ab'),
    ('{{ range .L }}{{ if eq . "b" }}{{ continue }}{{ end }}{{ . }}{{ end }}',
     {'L': ['a', 'b', 'c']}, 'ac'),
    ('{{ range .L }}{{ range .In }}{{ if eq . "x" }}{{ break }}{{ end }}{{ . }}{{ end }};{{ end }}',
     {'L': [{'In': ['1', 'x', '2']}, {'In': ['3']}]}, '1;3;'),
    ('{{ eq "a" "b" "a" }} {{ ne "a" "b" }} {{ lt "a" "b" }} {{ le 2 2 }} {{ gt 3 2 }} {{ ge 1 2 }}',
     {}, 'true true true true true false'),
    ('{{ eq .Missing "x" }}',
     {}, 'false'),
    ('{{ len .L }} {{ len .S }} {{ len .M }}',
     {'L': ['a', 'b'], 'S': 'héllo', 'M': {'a': '1'}}, '2 6 1'),
    ('{{ index .S 1 }}',
     {'S': 'abc'}, '98'),
    ('{{ slice .L 1 }} {{ slice .L 1 2 }} {{ slice .L }} {{ slice .S 1 3 }}',
     {'L': ['a', 'b', 'c'], 'S': 'hello'}, '[b c] [b] [a b c] el'),
    ('{{ print "a" "b" }}|{{ print 1 2 }}|{{ print "a" 1 2 "b" }}|{{ print .L }}|{{ print .M }}',
     {'L': ['x', 'y'], 'M': {'b': '2', 'a': '1'}}, 'ab|1 2|a1 2b|[x y]|map[a:1 b:2]'),
    ('{{ println "a" "b" }}|',
     {}, 'a b\n|'),
    ('{{ printf "%s-%d-%v-%q-%t" "s" 42 "v" "q\\"" true }}',
     {}, 's-42-v-"q\\""-true'),
    ('{{ printf "%5s|%-5s|%05d|%x|%X|%.2f|%8.3f|%e|%g" "ab" "cd" 42 255 "hi" 3.14159 2.5 1234.5678'
     ' 0.000012 }}',
     {}, '   ab|cd   |00042|ff|6869|3.14|   2.500|1.234568e+03|1.2e-05'),
    ('{{ printf "%s %s" "only" }}|{{ printf "%s" "a" "extra" }}|{{ printf "100%%" }}',
     {}, 'only %!s(MISSING)|a%!(EXTRA string=extra)|100%'),
    ('{{ printf "%d" "str" }}',
     {}, '%!d(string=str)'),
    ('{{ printf "%s\\n\\n%s" .A .B }}',
     {'A': 'one', 'B': 'two'}, 'one\n\ntwo'),
    ('{{ 1e6 }} {{ 123456.0 }} {{ 1234567.0 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1.5 }} {{ 3.0 }} {{ -2.5e-7 }}',
     {}, '1e+06 123456 1.234567e+06 0.0001 1e-05 1.5 3 -2.5e-07'),
    ("{{ 42 }} {{ -7 }} {{ 0x1F }} {{ 0o17 }} {{ 017 }} {{ 1_000 }} {{ 'a' }} {{ '\\n' }}",
     {}, '42 -7 31 15 15 1000 97 10'),
    ('{{ "tab\\there" }}|{{ `raw\\n` }}|{{ "\\u00e9\\x41\\101" }}',
     {}, 'tab\there|raw\\n|éAA'),
    ('{{ true }} {{ false }} {{ print nil }}',
     {}, 'true false <nil>'),
    ('{{ html "<a href=\'x\'>&\\"</a>" }}',
     {}, '&lt;a href=&#39;x&#39;&gt;&amp;&#34;&lt;/a&gt;'),
    ('{{ js "it\'s <b> & \\"q\\" = \\\\ \\n" }}',
     {}, 'it\\\'s \\u003Cb\\u003E \\u0026 \\"q\\" \\u003D \\\\ \\u000A'),
    ('{{ urlquery "a b&c=d/é" }}',
     {}, 'a+b%26c%3Dd%2F%C3%A9'),
    ('{{ html 1 "a" 2 }}',
     {}, '1a2'),
    ('{{ json .M }}',
     {'M': {'z': '<tag> & "q"', 'a': [1, 2.5, None, True], 'm': {'y': '1', 'b': '2'}}},
     '{"a":[1,2.5,null,true],"m":{"b":"2","y":"1"},"z":"\\u003ctag\\u003e \\u0026 \\"q\\""}'),
    ('{{ json .S }}|{{ json .Missing }}|{{ json .E }}',
     {'S': 'line\nbreak\ttab\u2028', 'E': []}, '"line\\nbreak\\ttab\\u2028"|null|[]'),
    ('{{ json 1e21 }} {{ json 1e20 }} {{ json 1e-7 }} {{ json 0.000001 }} {{ json 3.0 }} {{ json -0.5 }}',
     {}, '1e+21 100000000000000000000 1e-7 0.000001 3 -0.5'),
    ('{{ "x" | printf "%s-%s" "a" }}',
     {}, 'a-x'),
    ('{{ .A | len | printf "%d" }}',
     {'A': 'abcd'}, '4'),
    ('{{ (index .L 0).Name }}',
     {'L': [{'Name': 'first'}]}, 'first'),
    ('{{ len (slice .L 1) }}',
     {'L': ['a', 'b', 'c']}, '2'),
    ('{{ eq (len .L) 3 }}',
     {'L': ['a', 'b', 'c']}, 'true'),
    ('{{ printf "%s" (printf "%s%s" "a" (print "b")) }}',
     {}, 'ab'),
]

# (template, data, the end of Go's error message)
GO_EXEC_ERRORS = [
    ('{{ eq 1 "1" }}', {}, 'incompatible types for comparison'),
    ('{{ lt true false }}', {}, 'invalid type for comparison'),
    ('{{ eq .L .L }}', {'L': ['a']}, 'non-comparable type'),
    ('{{ index .L 5 }}', {'L': ['a']}, 'index out of range: 5'),
    ('{{ slice .L 2 1 }}', {'L': ['a', 'b', 'c']}, 'invalid slice index: 2 > 1'),
    ('{{ len .Missing }}', {}, 'len of nil pointer'),
    ('{{ index .Missing 0 }}', {}, 'index of untyped nil'),
    ('{{ .S.Field }}', {'S': 'str'}, "can't evaluate field Field"),
    ('{{ .L.Field }}', {'L': ['a']}, "can't evaluate field Field"),
]

# templates Go refuses to parse
GO_PARSE_ERRORS = [
    '{{ .A',
    '{{ if .A }}x',
    '{{ end }}',
    '{{ else }}',
    '{{ if .A }}{{ else }}{{ else }}{{ end }}',
    '{{ break }}',
    '{{ range .L }}{{ end }}{{ continue }}',
    '{{ nofunc 1 }}',
    '{{ $x }}',
    '{{ $x = 1 }}',
    '{{ "unterminated }}',
    '{{ `raw }}',
    '{{/* open',
    '{{/* c */ x}}',
    '{{ ( .A }}',
    '{{ .A ) }}',
    '{{ 3x }}',
    '{{ .A | "lit" }}',
    '{{ }}',
    '{{ if }}{{ end }}',
    '{{ range $i, $v, $w := .L }}{{ end }}',
    '{{ $x, $y := 1 }}',
    '{{ .A :x }}',
    '{{ 1.a }}',
    '{{ "\\q" }}',
    '{{ @ }}',
    '{{ range .L }}{{ else if .A }}{{ end }}',
    '{{ with .A }}{{ else if .B }}{{ end }}',
]


def render(source: str, data: dict) -> str:
    return execute(parse(source), data, Budget(Limits()), source)


@pytest.mark.parametrize("source, data, expected", GO_OUTPUTS)
def test_output_matches_go(source, data, expected):
    assert render(source, data) == expected


@pytest.mark.parametrize("source, data, message", GO_EXEC_ERRORS)
def test_execution_error_matches_go(source, data, message):
    with pytest.raises(TemplateError) as err:
        render(source, data)
    assert message in str(err.value)


@pytest.mark.parametrize("source", GO_PARSE_ERRORS)
def test_parse_error_matches_go(source):
    with pytest.raises(TemplateError):
        parse(source)
