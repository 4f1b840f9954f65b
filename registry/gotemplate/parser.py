"""Recursive-descent parser for the Go text/template grammar, after Go's ``text/template/parse/parse.go``.

Checks done at parse time, as in Go: unknown functions, undefined variables, ``break``/``continue`` outside
``range``, unbalanced ``if``/``end``. Variables are scoped to the enclosing control structure. Nesting of
control structures and parentheses is capped so a hostile template cannot exhaust the Python stack.
``define``, ``template`` and ``block`` are not supported (no Ollama template uses them).
"""

from __future__ import annotations

from collections.abc import Collection

from registry.gotemplate import nodes as n
from registry.gotemplate.errors import TemplateError, position
from registry.gotemplate.lexer import Kind, Token, lex
from registry.gotemplate.literals import char_value, number_value, unquote

MAX_SOURCE_CHARS = 256 * 1024      # Ollama's largest bundled templates are a few KiB
MAX_NESTING = 64                   # control structures plus parentheses

_OPERAND_START = {Kind.BOOL, Kind.CHAR_CONST, Kind.DOT, Kind.FIELD, Kind.IDENT, Kind.NUMBER, Kind.NIL,
                  Kind.RAW_STRING, Kind.STRING, Kind.VARIABLE, Kind.LPAREN}
_LITERAL_NODES = (n.Literal, n.Dot, n.Nil)


def parse(src: str, functions: Collection[str]) -> n.ListNode:
    """Parse template source into a tree; raises TemplateError (with line:col) on bad syntax."""
    if len(src) > MAX_SOURCE_CHARS:
        raise TemplateError(f"template is longer than {MAX_SOURCE_CHARS} characters")
    return _Parser(src, lex(src), functions).parse()


class _End:
    """Sentinel results of item_list: {{end}} or {{else}} (``chained`` when it is "else if"/"else with")."""

    def __init__(self, kind: str, pos: int, chained: str | None = None) -> None:
        self.kind, self.pos, self.chained = kind, pos, chained


class _Parser:
    def __init__(self, src: str, toks: list[Token], functions: Collection[str]) -> None:
        self.src, self.toks, self.functions = src, toks, functions
        self.i = 0
        self.vars = ["$"]
        self.depth = 0
        self.range_depth = 0

    # -- token access -------------------------------------------------------------------------------------
    def error(self, msg: str, pos: int) -> TemplateError:
        return TemplateError(msg, *position(self.src, pos))

    def peek(self) -> Token:
        return self.toks[self.i]

    def next(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def next_non_space(self) -> Token:
        while self.toks[self.i].kind is Kind.SPACE:
            self.i += 1
        return self.next()

    def peek_non_space(self) -> Token:
        save = self.i
        tok = self.next_non_space()
        self.i = save
        return tok

    def expect(self, kind: Kind, context: str) -> Token:
        tok = self.next_non_space()
        if tok.kind is not kind:
            raise self.unexpected(tok, context)
        return tok

    def unexpected(self, tok: Token, context: str) -> TemplateError:
        what = "EOF" if tok.kind is Kind.EOF else f"{tok.kind.value} {tok.val!r}"
        return self.error(f"unexpected {what} in {context}", tok.pos)

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nesting deeper than {MAX_NESTING}", pos)

    # -- lists and actions --------------------------------------------------------------------------------
    def parse(self) -> n.ListNode:
        body, end = self.item_list()
        if end is not None:
            raise self.error(f"unexpected {{{{{end.kind}}}}}", end.pos)
        return body

    def item_list(self) -> tuple[n.ListNode, _End | None]:
        """Nodes up to {{end}}, {{else}} or EOF (EOF returns None as the terminator)."""
        start, out = self.peek().pos, []
        while self.peek().kind is not Kind.EOF:
            tok = self.next()
            if tok.kind is Kind.TEXT:
                out.append(n.Text(tok.pos, tok.val))
                continue
            node = self.action()
            if isinstance(node, _End):
                return n.ListNode(start, tuple(out)), node
            out.append(node)
        return n.ListNode(start, tuple(out)), None

    def action(self):
        """After "{{": a keyword's control structure or end marker, or a pipeline to print."""
        tok = self.next_non_space()
        if tok.kind is Kind.KEYWORD:
            return self.keyword(tok)
        self.i -= 1
        return n.Action(tok.pos, self.pipeline("command", Kind.RIGHT))

    def keyword(self, tok: Token):
        word = tok.val
        if word in ("if", "with", "range"):
            return self.control(word, tok.pos)
        if word == "end":
            self.expect(Kind.RIGHT, "end")
            return _End("end", tok.pos)
        if word == "else":
            follow = self.peek_non_space()
            if follow.kind is Kind.KEYWORD and follow.val in ("if", "with"):
                return _End("else", tok.pos, chained=follow.val)
            self.expect(Kind.RIGHT, "else")
            return _End("else", tok.pos)
        if word in ("break", "continue"):
            self.expect(Kind.RIGHT, word)
            if self.range_depth == 0:
                raise self.error(f"{{{{{word}}}}} outside {{{{range}}}}", tok.pos)
            return n.Break(tok.pos) if word == "break" else n.Continue(tok.pos)
        raise self.error(f"{{{{{word}}}}} is not supported", tok.pos)

    def control(self, word: str, pos: int):
        """if / with / range: pipeline, list, optional else (or else-if chain), end; scopes variables."""
        self.nest(pos)
        saved_vars = len(self.vars)
        pipe = self.pipeline(word, Kind.RIGHT)
        if word == "range":
            self.range_depth += 1
        body, end = self.item_list()
        if word == "range":
            self.range_depth -= 1
        else_list = None
        if end is None:
            raise self.error(f"unexpected EOF in {{{{{word}}}}}", pos)
        if end.kind == "else":
            else_list = self.else_branch(word, end)
        del self.vars[saved_vars:]
        self.depth -= 1
        node_type = {"if": n.If, "with": n.With, "range": n.Range}[word]
        return node_type(pos, pipe, body, else_list)

    def else_branch(self, word: str, end: _End) -> n.ListNode:
        if end.chained is not None:
            if end.chained != word or word == "range":
                raise self.error(f"{{{{else {end.chained}}}}} inside {{{{{word}}}}}", end.pos)
            self.next_non_space()                                 # the "if"/"with" token
            return n.ListNode(end.pos, (self.control(word, end.pos),))
        body, final = self.item_list()
        if final is None or final.kind != "end":
            raise self.error("expected {{end}}", end.pos if final is None else final.pos)
        return body

    # -- pipelines ----------------------------------------------------------------------------------------
    def pipeline(self, context: str, end: Kind) -> n.Pipe:
        pos = self.peek_non_space().pos
        decl, is_assign = self.declarations(context)
        cmds: list[n.Command] = []
        while True:
            tok = self.next_non_space()
            if tok.kind is end:
                break
            if tok.kind not in _OPERAND_START:
                raise self.unexpected(tok, context)
            self.i -= 1
            cmds.append(self.command())
        if not cmds:
            raise self.error(f"missing value for {context}", pos)
        for stage, cmd in enumerate(cmds[1:], start=2):
            if isinstance(cmd.args[0], _LITERAL_NODES):
                raise self.error(f"non executable command in pipeline stage {stage}", cmd.pos)
        if not is_assign:
            self.vars.extend(decl)
        return n.Pipe(pos, tuple(decl), is_assign, tuple(cmds))

    def declarations(self, context: str) -> tuple[list[str], bool]:
        """Leading "$x :=", "$x =" or (range only) "$i, $v :="; otherwise nothing is consumed."""
        start, names = self.i, []
        while self.peek_non_space().kind is Kind.VARIABLE:
            var = self.next_non_space()
            follow = self.peek_non_space()
            if follow.kind in (Kind.DECLARE, Kind.ASSIGN):
                self.next_non_space()
                names.append(var.val)
                if follow.kind is Kind.ASSIGN:
                    for name in names:
                        self.use_var(name, var.pos)
                return names, follow.kind is Kind.ASSIGN
            if follow.kind is Kind.CHAR and follow.val == "," and not names:
                if context != "range":
                    raise self.error(f"too many declarations in {context}", follow.pos)
                self.next_non_space()
                names.append(var.val)
                if self.peek_non_space().kind is not Kind.VARIABLE:
                    raise self.error("range can only initialize variables", follow.pos)
                continue
            break
        self.i = start
        return [], False

    def command(self) -> n.Command:
        pos, args = self.peek_non_space().pos, []
        while True:
            while self.peek().kind is Kind.SPACE:
                self.i += 1
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            tok = self.next()
            if tok.kind is Kind.SPACE:
                continue
            if tok.kind in (Kind.RIGHT, Kind.RPAREN):
                self.i -= 1
            elif tok.kind is not Kind.PIPE:
                raise self.unexpected(tok, "operand")
            break
        if not args:
            raise self.error("empty command", pos)
        return n.Command(pos, tuple(args))

    def operand(self):
        node = self.term()
        if node is None or self.peek().kind is not Kind.FIELD:
            return node
        fields = []
        while self.peek().kind is Kind.FIELD:
            fields.append(self.next().val[1:])
        if isinstance(node, n.Field):
            return n.Field(node.pos, node.idents + tuple(fields))
        if isinstance(node, n.Variable):
            return n.Variable(node.pos, node.name, node.fields + tuple(fields))
        if isinstance(node, _LITERAL_NODES):
            raise self.error("unexpected . after term", node.pos)
        return n.Chain(node.pos, node, tuple(fields))

    def term(self):
        tok = self.next()
        kind = tok.kind
        if kind is Kind.IDENT:
            if tok.val not in self.functions:
                raise self.error(f'function "{tok.val}" not defined', tok.pos)
            return n.Identifier(tok.pos, tok.val)
        if kind is Kind.DOT:
            return n.Dot(tok.pos)
        if kind is Kind.NIL:
            return n.Nil(tok.pos)
        if kind is Kind.VARIABLE:
            self.use_var(tok.val, tok.pos)
            return n.Variable(tok.pos, tok.val)
        if kind is Kind.FIELD:
            return n.Field(tok.pos, (tok.val[1:],))
        if kind is Kind.LPAREN:
            self.nest(tok.pos)
            pipe = self.pipeline("parenthesized pipeline", Kind.RPAREN)
            self.depth -= 1
            return pipe
        if kind in (Kind.BOOL, Kind.NUMBER, Kind.STRING, Kind.RAW_STRING, Kind.CHAR_CONST):
            return n.Literal(tok.pos, self.literal(tok))
        self.i -= 1
        return None

    def literal(self, tok: Token):
        if tok.kind is Kind.BOOL:
            return tok.val == "true"
        if tok.kind is Kind.NUMBER:
            value = number_value(tok.val)
        elif tok.kind is Kind.CHAR_CONST:
            value = char_value(tok.val)
        else:
            value = unquote(tok.val)
        if value is None:
            raise self.error(f"bad {tok.kind.value} syntax: {tok.val}", tok.pos)
        return value

    def use_var(self, name: str, pos: int) -> None:
        if name not in self.vars:
            raise self.error(f'undefined variable "{name}"', pos)
