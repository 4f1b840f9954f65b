"""Executing a parsed template against data, after Go's ``text/template/exec.go``.

Semantics kept from Go: ``missingkey=zero`` (a missing map key is nil, and nil is falsy), variables live
until the ``{{end}}`` of the structure that declared them, ``range`` pushes its variables once and updates
them per iteration, ``and``/``or`` short-circuit, maps range in sorted key order, ranging over an int counts.
Deliberate differences: nil prints as "" (Go prints "<no value>"), and a field of nil is nil (Go errors).

Execution is bounded by a :class:`Budget`: every node, iteration and function call costs a step (large
function results cost more), and output is capped, so a hostile template fails fast with TemplateError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.gotemplate import nodes as n
from registry.gotemplate.errors import TemplateError, position
from registry.gotemplate.funcs import FUNCS, SHORT_CIRCUIT
from registry.gotemplate.values import GoStruct, JSONMap, sprint, truth, type_name

_MISSING = object()                        # "no value piped in" (distinct from nil)
_CHARS_PER_STEP = 256                      # a function result of this many items/characters costs one step


@dataclass(frozen=True)
class Limits:
    max_output_chars: int = 8 * 1024 * 1024
    max_steps: int = 1_000_000


class Budget:
    """Steps and output characters left; shared by every execution that makes up one prompt."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.steps = 0
        self.output_chars = 0

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > self.limits.max_steps:
            raise TemplateError(f"execution took more than {self.limits.max_steps} steps")

    def write(self, chars: int) -> None:
        self.output_chars += chars
        if self.output_chars > self.limits.max_output_chars:
            raise TemplateError(f"output is longer than {self.limits.max_output_chars} characters")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def execute(tree: n.ListNode, data: Any, budget: Budget, source: str = "") -> str:
    """Render ``tree`` with ``data`` as both dot and ``$``; ``source`` is only used to place errors."""
    state = _State(data, budget, source)
    state.walk(data, tree)
    return "".join(state.out)


def printable(v: Any) -> str:
    """What an action prints: strings as they are, nil as nothing, anything else as Go's %v."""
    if isinstance(v, str):
        return v
    return "" if v is None else sprint(v)


class _State:
    def __init__(self, data: Any, budget: Budget, source: str) -> None:
        self.vars: list[list[Any]] = [["$", data]]
        self.out: list[str] = []
        self.budget = budget
        self.source = source

    def error(self, msg: str, pos: int) -> TemplateError:
        return TemplateError(msg, *position(self.source, pos))

    # -- statements ---------------------------------------------------------------------------------------
    def walk(self, dot: Any, node: Any) -> None:
        self.budget.charge(1)
        kind = type(node)
        if kind is n.Text:
            self.emit(node.text)
        elif kind is n.Action:
            value = self.pipe(dot, node.pipe)
            if not node.pipe.decl:
                self.emit(printable(value))
        elif kind is n.ListNode:
            for child in node.nodes:
                self.walk(dot, child)
        elif kind is n.Range:
            self.walk_range(dot, node)
        elif kind is n.If or kind is n.With:
            self.walk_branch(dot, node)
        elif kind is n.Break:
            raise _Break
        elif kind is n.Continue:
            raise _Continue
        else:
            raise self.error(f"unknown node {kind.__name__}", node.pos)

    def emit(self, text: str) -> None:
        self.budget.write(len(text))
        self.out.append(text)

    def walk_branch(self, dot: Any, node: n.If | n.With) -> None:
        mark = len(self.vars)
        try:
            value = self.pipe(dot, node.pipe)
            if truth(value):
                self.walk(value if type(node) is n.With else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            del self.vars[mark:]

    def walk_range(self, dot: Any, node: n.Range) -> None:
        mark = len(self.vars)
        try:
            items = self.range_items(self.pipe(dot, node.pipe), node)
            inner, ran = len(self.vars), False
            for key, elem in items:
                ran = True
                self.budget.charge(1)
                self.set_range_vars(node.pipe, inner, key, elem)
                try:
                    self.walk(elem, node.list)
                except _Continue:
                    pass
                except _Break:
                    break
                finally:
                    del self.vars[inner:]
            if not ran and node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            del self.vars[mark:]

    def range_items(self, value: Any, node: n.Range):
        """(key, element) pairs: slices by index, maps by sorted key, an int n as 0..n-1; nil is empty."""
        if value is None:
            return iter(())
        if isinstance(value, dict):
            keys = list(value) if isinstance(value, JSONMap) else sorted(value)
            return ((k, value[k]) for k in keys)
        if isinstance(value, (list, tuple)):
            return enumerate(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                raise self.error(f"can't use {value} to iterate over more than one variable", node.pos)
            return ((i, i) for i in range(value))
        raise self.error(f"range can't iterate over {sprint(value)}", node.pos)

    def set_range_vars(self, pipe: n.Pipe, inner: int, key: Any, elem: Any) -> None:
        """Go: one variable gets the element; with two, the first gets the key or index."""
        if not pipe.decl:
            return
        if pipe.is_assign:
            self.set_var(pipe.decl[0], key if len(pipe.decl) > 1 else elem, pipe.pos)
            if len(pipe.decl) > 1:
                self.set_var(pipe.decl[1], elem, pipe.pos)
            return
        self.vars[inner - 1][1] = elem
        if len(pipe.decl) > 1:
            self.vars[inner - 2][1] = key

    # -- expressions --------------------------------------------------------------------------------------
    def pipe(self, dot: Any, pipe: n.Pipe) -> Any:
        value = _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value, pipe.pos)
            else:
                self.vars.append([name, value])
        return value

    def command(self, dot: Any, cmd: n.Command, final: Any) -> Any:
        first = cmd.args[0]
        if type(first) is n.Identifier:
            return self.call(dot, first, cmd.args[1:], final)
        if len(cmd.args) > 1 or final is not _MISSING:
            raise self.error("can't give argument to non-function", first.pos)
        if type(first) is n.Nil:
            raise self.error("nil is not a command", first.pos)
        return self.arg(dot, first)

    def arg(self, dot: Any, node: Any) -> Any:
        kind = type(node)
        if kind is n.Field:
            return self.fields(dot, node.idents, node.pos)
        if kind is n.Variable:
            return self.fields(self.lookup(node.name, node.pos), node.fields, node.pos)
        if kind is n.Literal:
            return node.value
        if kind is n.Dot:
            return dot
        if kind is n.Nil:
            return None
        if kind is n.Pipe:
            return self.pipe(dot, node)
        if kind is n.Chain:
            return self.fields(self.arg(dot, node.node), node.fields, node.pos)
        return self.call(dot, node, (), _MISSING)

    def fields(self, value: Any, names: tuple[str, ...], pos: int) -> Any:
        for name in names:
            if isinstance(value, GoStruct) and value.has_field(name):
                value = value.field(name)
            elif isinstance(value, dict):
                value = value.get(name)                 # missingkey=zero
            elif value is not None:
                raise self.error(f"can't evaluate field {name} in type {type_name(value)}", pos)
        return value

    def call(self, dot: Any, ident: n.Identifier, arg_nodes: tuple[Any, ...], final: Any) -> Any:
        self.budget.charge(1)
        if ident.name in SHORT_CIRCUIT:
            return self.short_circuit(dot, ident, arg_nodes, final)
        fn, lo, hi = FUNCS[ident.name]
        args = [self.arg(dot, a) for a in arg_nodes]
        if final is not _MISSING:
            args.append(final)
        if len(args) < lo or (hi is not None and len(args) > hi):
            want = f"{lo}" if hi == lo else f"at least {lo}"
            raise self.error(f"wrong number of args for {ident.name}: want {want} got {len(args)}", ident.pos)
        try:
            result = fn(*args)
        except TemplateError as exc:
            raise self.error(exc.message, ident.pos) from None
        if isinstance(result, (str, list, dict)):
            self.budget.charge(len(result) // _CHARS_PER_STEP)
            if len(result) > self.budget.limits.max_output_chars:
                raise self.error(f"{ident.name} result is too large", ident.pos)
        return result

    def short_circuit(self, dot: Any, ident: n.Identifier, arg_nodes: tuple[Any, ...], final: Any) -> Any:
        """and: the first falsy operand or the last; or: the first truthy operand or the last."""
        if not arg_nodes and final is _MISSING:
            raise self.error(f"wrong number of args for {ident.name}: want at least 1 got 0", ident.pos)
        want = ident.name == "or"
        value = None
        for node in arg_nodes:
            value = self.arg(dot, node)
            if truth(value) == want:
                return value
        return value if final is _MISSING else final

    # -- variables ----------------------------------------------------------------------------------------
    def lookup(self, name: str, pos: int) -> Any:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        raise self.error(f"undefined variable: {name}", pos)

    def set_var(self, name: str, value: Any, pos: int) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        raise self.error(f"undefined variable: {name}", pos)
