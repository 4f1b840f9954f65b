"""The parse tree, shaped like Go's ``text/template/parse`` nodes so Ollama's tree walks map one to one.

Every node carries ``pos``, an offset into the template source, so execution errors can name a line.
Lists are tuples: a parsed tree is immutable and can be shared between threads and renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Text:
    pos: int
    text: str


@dataclass(frozen=True)
class Field:                     # .A.B.C
    pos: int
    idents: tuple[str, ...]


@dataclass(frozen=True)
class Variable:                  # $x.A.B  ("$" is the root)
    pos: int
    name: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dot:
    pos: int


@dataclass(frozen=True)
class Nil:
    pos: int


@dataclass(frozen=True)
class Literal:                   # true/false, numbers, strings, character constants
    pos: int
    value: Any


@dataclass(frozen=True)
class Identifier:                # a function name
    pos: int
    name: str


@dataclass(frozen=True)
class Chain:                     # (pipeline).A.B
    pos: int
    node: Any
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Command:                   # operands separated by spaces; a function call when args[0] is an Identifier
    pos: int
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Pipe:                      # [$a, $b :=] cmd | cmd | ... (also a parenthesised argument)
    pos: int
    decl: tuple[str, ...]
    is_assign: bool
    cmds: tuple[Command, ...]


@dataclass(frozen=True)
class ListNode:
    pos: int
    nodes: tuple[Any, ...]


@dataclass(frozen=True)
class Action:                    # {{ pipeline }}
    pos: int
    pipe: Pipe


@dataclass(frozen=True)
class If:
    pos: int
    pipe: Pipe
    list: ListNode
    else_list: ListNode | None


@dataclass(frozen=True)
class With:
    pos: int
    pipe: Pipe
    list: ListNode
    else_list: ListNode | None


@dataclass(frozen=True)
class Range:
    pos: int
    pipe: Pipe
    list: ListNode
    else_list: ListNode | None


@dataclass(frozen=True)
class Break:
    pos: int


@dataclass(frozen=True)
class Continue:
    pos: int


BRANCHES = (If, With, Range)
