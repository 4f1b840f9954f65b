"""Ollama's ``api`` structs as template values: messages, tool calls and tool definitions.

Templates address these by Go field name (``.Role``, ``.ToolCalls``, ``.Function.Arguments``) and every field
exists even when empty (they are structs, not maps). Types with a ``String()`` method in Ollama — a tool, a
tool's function, its parameters, the property map, tool-call arguments and the tool list — print as JSON,
which is why templates can write ``{{ .Function.Arguments }}`` or ``{{ $.Tools }}``. JSON uses the tag
names in declaration order with ``omitempty``; argument and property maps keep their key order (as HEAD).
Input is the wire JSON of ``/api/chat`` (lower-case keys), already decoded.
"""

from __future__ import annotations

import json
from typing import Any

from registry.gotemplate.values import GoStruct, JSONList, JSONMap, PropertyType, StructField

F = StructField
MESSAGE = (F("Role", "role"), F("Content", "content"), F("Thinking", "thinking", True),
           F("Images", "images", True), F("ToolCalls", "tool_calls", True), F("ToolName", "tool_name", True),
           F("ToolCallID", "tool_call_id", True))
TOOL_CALL = (F("ID", "id", True), F("Function", "function"))
TOOL_CALL_FUNCTION = (F("Index", "index"), F("Name", "name"), F("Arguments", "arguments"))
TOOL = (F("Type", "type"), F("Items", "items", True), F("Function", "function"))
TOOL_FUNCTION = (F("Name", "name"), F("Description", "description", True), F("Parameters", "parameters"))
TOOL_PARAMETERS = (F("Type", "type"), F("Defs", "$defs", True), F("Items", "items", True),
                   F("Required", "required", True), F("Properties", "properties"))
TOOL_PROPERTY = (F("AnyOf", "anyOf", True), F("Type", "type", True), F("Items", "items", True),
                 F("Description", "description", True), F("Enum", "enum", True),
                 F("Properties", "properties", True), F("Required", "required", True))


def _struct(name: str, schema: tuple[StructField, ...], values: dict[str, Any], *, stringer: bool = False):
    return GoStruct(name, schema, {f.go: values.get(f.go) for f in schema}, stringer=stringer)


def message_value(m: dict[str, Any]) -> GoStruct:
    """An ``api.Message`` from a chat message dict (role, content, thinking, images, tool_calls, ...)."""
    calls = [tool_call_value(c, i) for i, c in enumerate(m.get("tool_calls") or [])]
    return _struct("api.Message", MESSAGE, {
        "Role": m.get("role", ""), "Content": m.get("content") or "", "Thinking": m.get("thinking") or "",
        "Images": list(m.get("images") or []), "ToolCalls": calls, "ToolName": m.get("tool_name") or "",
        "ToolCallID": m.get("tool_call_id") or ""})


def tool_call_value(call: dict[str, Any], position: int) -> GoStruct:
    fn = call.get("function") or {}
    args = fn.get("arguments") or {}
    if isinstance(args, str):                       # tolerate OpenAI-style JSON-string arguments
        try:
            args = json.loads(args)
        except ValueError:
            args = {}
    function = _struct("api.ToolCallFunction", TOOL_CALL_FUNCTION, {
        "Index": fn.get("index", position), "Name": fn.get("name") or "",
        "Arguments": JSONMap(args) if isinstance(args, dict) else JSONMap()})
    return _struct("api.ToolCall", TOOL_CALL, {"ID": call.get("id") or "", "Function": function})


def tools_value(tools: list[dict[str, Any]] | None) -> JSONList | None:
    """``api.Tools`` from the request's tool list; None (nil) when the request has none."""
    if tools is None:
        return None
    return JSONList(tool_value(t) for t in tools)


def tool_value(tool: dict[str, Any]) -> GoStruct:
    fn = tool.get("function") or {}
    params = fn.get("parameters") or {}
    parameters = _struct("api.ToolFunctionParameters", TOOL_PARAMETERS, {
        "Type": params.get("type") or "", "Defs": params.get("$defs"), "Items": params.get("items"),
        "Required": list(params.get("required") or []),
        "Properties": _properties(params["properties"]) if params.get("properties") is not None else None},
        stringer=True)
    function = _struct("api.ToolFunction", TOOL_FUNCTION, {
        "Name": fn.get("name") or "", "Description": fn.get("description") or "", "Parameters": parameters},
        stringer=True)
    return _struct("api.Tool", TOOL, {"Type": tool.get("type") or "", "Items": tool.get("items"),
                                      "Function": function}, stringer=True)


def _properties(props: dict[str, Any]) -> JSONMap:
    return JSONMap((name, property_value(p)) for name, p in props.items())


def property_value(p: dict[str, Any]) -> GoStruct:
    """An ``api.ToolProperty``; ``type`` may be a string or a list of strings (a union)."""
    kind = p.get("type")
    types = PropertyType([kind] if isinstance(kind, str) else list(kind or []))
    return _struct("api.ToolProperty", TOOL_PROPERTY, {
        "AnyOf": [property_value(x) for x in p.get("anyOf") or []], "Type": types, "Items": p.get("items"),
        "Description": p.get("description") or "", "Enum": list(p.get("enum") or []),
        "Properties": _properties(p.get("properties")) if p.get("properties") else None,
        "Required": list(p.get("required") or [])})
