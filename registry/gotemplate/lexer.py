"""Tokens of Go's text/template, following the state machine of Go's ``text/template/parse/lex.go``.

Text outside ``{{ }}`` becomes one TEXT token; trim markers (``{{- `` and `` -}}``) are applied here by
cutting the adjacent whitespace (space, tab, CR, LF) out of that text, as Go's lexer does. Comments
(``{{/* */}}``, optionally with trim markers) leave no token. Inside an action, runs of whitespace are SPACE
tokens because Go's grammar needs them: ``$x := 1`` versus ``$x 1``, and ``(f).Field`` versus ``(f) .Field``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from registry.gotemplate.errors import TemplateError, position

LEFT, RIGHT = "{{", "}}"
SPACE_CHARS = " \t\r\n"
KEYWORDS = frozenset({"block", "break", "continue", "define", "else", "end", "if", "range", "template",
                      "with"})


class Kind(enum.Enum):
    TEXT = "text"
    LEFT = "{{"
    RIGHT = "}}"
    SPACE = "space"
    KEYWORD = "keyword"
    IDENT = "identifier"
    FIELD = "field"
    VARIABLE = "variable"
    DOT = "."
    BOOL = "bool"
    NIL = "nil"
    NUMBER = "number"
    CHAR_CONST = "character constant"
    STRING = "string"
    RAW_STRING = "raw string"
    DECLARE = ":="
    ASSIGN = "="
    PIPE = "|"
    LPAREN = "("
    RPAREN = ")"
    CHAR = "character"              # any other printable ASCII, e.g. the "," of "range $i, $v :="
    EOF = "EOF"


@dataclass(frozen=True)
class Token:
    kind: Kind
    val: str
    pos: int                           # offset in the source, for error messages


def is_space(c: str) -> bool:
    return c != "" and c in SPACE_CHARS


def is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def lex(src: str) -> list[Token]:
    """Split a template into tokens; raises TemplateError on malformed actions."""
    return _Lexer(src).run()


class _Lexer:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks: list[Token] = []

    def error(self, msg: str, pos: int) -> TemplateError:
        return TemplateError(msg, *position(self.src, pos))

    def emit(self, kind: Kind, start: int, end: int) -> None:
        self.toks.append(Token(kind, self.src[start:end], start))

    def run(self) -> list[Token]:
        src, pos, trim_next = self.src, 0, False
        while True:
            left = src.find(LEFT, pos)
            end = len(src) if left < 0 else left
            if trim_next:                                   # "-}}" eats the whitespace that follows
                while pos < end and is_space(src[pos]):
                    pos += 1
            text_end = end
            if left >= 0 and self.left_trim(left):          # "{{- " eats the whitespace before it
                while text_end > pos and is_space(src[text_end - 1]):
                    text_end -= 1
            if text_end > pos:
                self.emit(Kind.TEXT, pos, text_end)
            if left < 0:
                break
            pos, trim_next = self.action(left)
        self.toks.append(Token(Kind.EOF, "", len(src)))
        return self.toks

    def left_trim(self, left: int) -> bool:
        p = left + len(LEFT)
        return self.src.startswith("-", p) and is_space(self.src[p + 1:p + 2])

    def right_delim(self, p: int) -> tuple[bool, bool]:
        """(at a right delimiter, with a trim marker) at offset p."""
        src = self.src
        if is_space(src[p:p + 1]) and src.startswith("-" + RIGHT, p + 1):
            return True, True
        return src.startswith(RIGHT, p), False

    def close(self, p: int) -> tuple[int, bool]:
        """Emit RIGHT at offset p; return the offset after it and whether it trims."""
        _, trim = self.right_delim(p)
        start = p + 2 if trim else p
        self.emit(Kind.RIGHT, start, start + len(RIGHT))
        return start + len(RIGHT), trim

    def action(self, left: int) -> tuple[int, bool]:
        p = left + len(LEFT) + (2 if self.left_trim(left) else 0)
        if self.src.startswith("/*", p):
            return self.comment(p)
        self.emit(Kind.LEFT, left, left + len(LEFT))
        depth = 0
        while True:
            at_delim, _ = self.right_delim(p)
            if at_delim:
                if depth:
                    raise self.error("unclosed left paren", p)
                return self.close(p)
            if p >= len(self.src):
                raise self.error("unclosed action", left)
            p, depth = self.inside(p, depth)

    def comment(self, p: int) -> tuple[int, bool]:
        end = self.src.find("*/", p + 2)
        if end < 0:
            raise self.error("unclosed comment", p)
        p = end + 2
        at_delim, trim = self.right_delim(p)
        if not at_delim:
            raise self.error("comment ends before closing delimiter", p)
        return p + (2 if trim else 0) + len(RIGHT), trim

    def inside(self, p: int, depth: int) -> tuple[int, int]:
        """Lex one token inside an action starting at p; return the new offset and paren depth."""
        src, c = self.src, self.src[p]
        if is_space(c):
            return self.space(p), depth
        if c == "=":
            self.emit(Kind.ASSIGN, p, p + 1)
        elif c == ":":
            if not src.startswith(":=", p):
                raise self.error("expected :=", p)
            self.emit(Kind.DECLARE, p, p + 2)
            return p + 2, depth
        elif c == "|":
            self.emit(Kind.PIPE, p, p + 1)
        elif c == '"':
            return self.quoted(p, '"', Kind.STRING, "unterminated quoted string"), depth
        elif c == "`":
            return self.raw(p), depth
        elif c == "'":
            return self.quoted(p, "'", Kind.CHAR_CONST, "unterminated character constant"), depth
        elif c == "$":
            return self.word(p, p + 1, Kind.VARIABLE), depth
        elif c == "." and not src[p + 1:p + 2].isdecimal():
            return self.word(p, p + 1, Kind.FIELD), depth
        elif c in "+-." or c.isdecimal():
            return self.number(p), depth
        elif is_alnum(c):
            return self.identifier(p), depth
        elif c == "(":
            self.emit(Kind.LPAREN, p, p + 1)
            depth += 1
        elif c == ")":
            if depth == 0:
                raise self.error("unexpected right paren", p)
            self.emit(Kind.RPAREN, p, p + 1)
            depth -= 1
        elif c.isascii() and c.isprintable():
            self.emit(Kind.CHAR, p, p + 1)
        else:
            raise self.error(f"unrecognized character in action: {c!r}", p)
        return p + 1, depth

    def space(self, p: int) -> int:
        end = p
        while end < len(self.src) and is_space(self.src[end]):
            end += 1
        if self.src.startswith("-" + RIGHT, end):        # the last space belongs to " -}}"
            end -= 1
        if end > p:
            self.emit(Kind.SPACE, p, end)
        return end

    def at_terminator(self, p: int) -> bool:
        c = self.src[p:p + 1]
        return c == "" or is_space(c) or c in ".,|:()" or self.src.startswith(RIGHT, p)

    def word(self, start: int, p: int, kind: Kind) -> int:
        """A field (".Name"), a variable ("$name", "$") or a lone dot."""
        while p < len(self.src) and is_alnum(self.src[p]):
            p += 1
        if not self.at_terminator(p):
            raise self.error(f"bad character {self.src[p]!r}", p)
        if kind is Kind.FIELD and p == start + 1:
            kind = Kind.DOT
        self.emit(kind, start, p)
        return p

    def identifier(self, start: int) -> int:
        p = start
        while p < len(self.src) and is_alnum(self.src[p]):
            p += 1
        if not self.at_terminator(p):
            raise self.error(f"bad character {self.src[p]!r}", p)
        word = self.src[start:p]
        kind = Kind.IDENT
        if word in KEYWORDS:
            kind = Kind.KEYWORD
        elif word in ("true", "false"):
            kind = Kind.BOOL
        elif word == "nil":
            kind = Kind.NIL
        self.emit(kind, start, p)
        return p

    def number(self, start: int) -> int:
        """Scan a number loosely, as Go does; the parser decides whether the text is a valid literal."""
        p = start
        while p < len(self.src) and (is_alnum(self.src[p]) or self.src[p] in ".+-"):
            prev = self.src[p - 1] if p > start else ""
            if self.src[p] in "+-" and p > start and prev not in "eEpP":
                break
            p += 1
        self.emit(Kind.NUMBER, start, p)
        return p

    def quoted(self, start: int, quote: str, kind: Kind, err: str) -> int:
        p = start + 1
        while True:
            c = self.src[p:p + 1]
            if c == "\\":
                p += 2
                continue
            if c in ("", "\n"):
                raise self.error(err, start)
            p += 1
            if c == quote:
                self.emit(kind, start, p)
                return p

    def raw(self, start: int) -> int:
        end = self.src.find("`", start + 1)
        if end < 0:
            raise self.error("unterminated raw quoted string", start)
        self.emit(Kind.RAW_STRING, start, end + 1)
        return end + 1
