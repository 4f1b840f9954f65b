"""The subset of Go's ``text/template`` that Ollama's prompt templates use, in pure Python.

``parse(source)`` gives an immutable tree (errors carry line:col); ``execute(tree, data, budget)`` renders
it under a step and output budget. Ollama-specific behaviour (legacy mode, the appended ``{{ .Response }}``,
message and tool values) lives in :mod:`registry.template`.
"""

from __future__ import annotations

from registry.gotemplate import nodes
from registry.gotemplate.errors import TemplateError
from registry.gotemplate.execute import Budget, Limits, execute
from registry.gotemplate.funcs import NAMES
from registry.gotemplate.parser import MAX_NESTING, MAX_SOURCE_CHARS
from registry.gotemplate.parser import parse as _parse

__all__ = ["MAX_NESTING", "MAX_SOURCE_CHARS", "Budget", "Limits", "TemplateError", "execute", "nodes",
           "parse"]


def parse(source: str) -> nodes.ListNode:
    """Parse template source with the builtin and Ollama functions; raises TemplateError."""
    return _parse(source, NAMES)
