"""Printing, JSON and the template functions. Float and printf expectations were produced by Go 1.19."""

from __future__ import annotations

import datetime

import pytest

from registry.gotemplate import funcs
from registry.gotemplate.ollama_types import message_value, property_value, tool_call_value, tools_value
from registry.gotemplate.printf import sprintf
from registry.gotemplate.values import (
    GoStruct,
    JSONMap,
    PropertyType,
    StructField,
    format_float_g,
    json_float,
    sprint,
    to_json,
    truth,
)

# value, fmt.Sprint(value), json.Marshal(value) — as printed by Go
FLOATS = [
    (0.1, "0.1", "0.1"), (1e-7, "1e-07", "1e-7"), (123456789.0, "1.23456789e+08", "123456789"),
    (1e21, "1e+21", "1e+21"), (1e20, "1e+20", "100000000000000000000"), (5e-324, "5e-324", "5e-324"),
    (-0.0, "-0", "-0"), (100.0, "100", "100"), (1e-5, "1e-05", "0.00001"), (2.5e-6, "2.5e-06", "0.0000025"),
    (12345678.9, "1.23456789e+07", "12345678.9"), (999999.0, "999999", "999999"), (1e6, "1e+06", "1000000"),
    (1e-6, "1e-06", "0.000001"), (9.999999e20, "9.999999e+20", "999999900000000000000"),
]


@pytest.mark.parametrize("value, printed, encoded", FLOATS)
def test_float_formats_match_go(value, printed, encoded):
    assert format_float_g(value) == printed
    assert json_float(value) == encoded


def test_printf_verbs_match_go():
    got = sprintf("%q|%c|%5.1f|%-6d|%+d|%x|%v|%s|%d", "héllo\x01\n", 233, 3.14159, 42, 7, "é", ["a", 1],
                  {"k": "v"}, 2.5)
    assert got == '"héllo\\x01\\n"|é|  3.1|42    |+7|c3a9|[a 1]|map[k:v]|%!d(float64=2.5)'


def test_printf_missing_and_extra_operands():
    assert sprintf("%s %s", "a") == "a %!s(MISSING)"
    assert sprintf("%s", "a", 1, "b") == "a%!(EXTRA int=1, string=b)"


@pytest.mark.parametrize("value, expected", [
    (None, False), (False, False), (0, False), (0.0, False), ("", False), ([], False), ({}, False),
    (True, True), (-1, True), (0.5, True), (" ", True), ([None], True), ({"": None}, True),
    (GoStruct("T", (), {}), True),                                 # a struct is always true, even empty
])
def test_truth(value, expected):
    assert truth(value) is expected


def test_json_of_struct_uses_tags_in_order_with_omitempty():
    schema = (StructField("Zed", "zed"), StructField("Alpha", "alpha", omitempty=True),
              StructField("Keep", "keep"))
    value = GoStruct("T", schema, {"Zed": 1, "Alpha": "", "Keep": ""})
    assert to_json(value) == '{"zed":1,"keep":""}'
    assert sprint(value) == "{1  }"                                  # %v of a plain struct: its fields
    assert sprint(GoStruct("T", schema, {"Zed": 1, "Alpha": "a", "Keep": ""}, stringer=True)) == (
        '{"zed":1,"alpha":"a","keep":""}')


def test_map_orders():
    assert to_json({"b": 1, "a": {"d": 2, "c": 3}}) == '{"a":{"c":3,"d":2},"b":1}'
    assert to_json(JSONMap([("b", 1), ("a", 2)])) == '{"b":1,"a":2}'    # ordered maps keep insertion order
    assert sprint(JSONMap([("b", "<"), ("a", 2)])) == '{"b":"\\u003c","a":2}'


def test_property_type_json_and_printing():
    assert to_json(PropertyType(["string"])) == '"string"'
    assert to_json(PropertyType(["string", "null"])) == '["string","null"]'
    assert sprint(PropertyType(["string"])) == "string"
    assert sprint(PropertyType(["string", "null"])) == "[string null]"


def test_json_string_escapes():
    assert to_json("a<b>&\"\\\n\t\x01\u2028é\b\f") == '"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\t\\u0001\\u2028é\\b\\f"'


def test_json_of_bytes_is_base64_and_unsupported_values_fail():
    assert to_json(b"\x00\xff") == '"AP8="'
    assert funcs.json_(float("nan")) == ""
    with pytest.raises(ValueError):
        to_json(object())


def test_dates():
    before = datetime.date.today()
    today, yesterday = funcs.current_date("args", "ignored"), funcs.yesterday_date()
    after = datetime.date.today()
    assert today in (before.isoformat(), after.isoformat())
    assert yesterday in ((before - datetime.timedelta(days=1)).isoformat(),
                         (after - datetime.timedelta(days=1)).isoformat())


def test_string_functions_use_bytes_like_go():
    assert funcs.length("é") == 2
    assert funcs.index("é", 0) == 0xC3
    assert funcs.slice_("héllo", 3) == "llo"
    assert funcs.slice_(["a", "b", "c"], 0, 1, 2) == ["a"]


def test_message_value_has_every_field():
    m = message_value({"role": "user", "content": "hi"})
    assert [m.field(f) for f in ("Role", "Content", "Thinking", "Images", "ToolCalls", "ToolName", "ToolCallID")] == [
        "user", "hi", "", [], [], "", ""]
    assert to_json(m) == '{"role":"user","content":"hi"}'


def test_tool_call_value_accepts_string_arguments_and_keeps_key_order():
    call = tool_call_value({"id": "call_1", "function": {"name": "f", "arguments": '{"b": 1, "a": [true]}'}}, 3)
    assert to_json(call) == '{"id":"call_1","function":{"index":3,"name":"f","arguments":{"b":1,"a":[true]}}}'
    assert sprint(call.field("Function").field("Arguments")) == '{"b":1,"a":[true]}'


def test_tools_value():
    assert tools_value(None) is None
    tools = tools_value([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert sprint(tools) == '[{"type":"function","function":{"name":"f","parameters":{"type":"object",' \
                            '"properties":null}}}]'


def test_property_value_nesting():
    prop = property_value({"type": "object", "properties": {"x": {"type": "integer", "description": "d"}},
                           "required": ["x"]})
    assert to_json(prop) == '{"type":"object","properties":{"x":{"type":"integer","description":"d"}},"required":["x"]}'
