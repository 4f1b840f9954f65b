"""Model names: ``[[scheme://]host/][namespace/]model[:tag]``, following Ollama's ``types/model/name.go``.

Grammar (every part is ASCII; a part never starts with ``.``, ``-`` or ``:``, so it can never be ``..``)::

    host      := (alnum|_) (alnum|_|-|.|:)*   1..350 chars   (":port" allowed)
    namespace := (alnum|_) (alnum|_|-)*       1..80 chars    (no dots)
    model     := (alnum|_) (alnum|_|-|.)*     1..80 chars
    tag       := (alnum|_) (alnum|_|-|.)*     1..80 chars

Parsing: if the last ``:`` comes after the last ``/``, the rest is the tag. The remainder is split on ``/``
from the right into model, namespace and host (a ``scheme://`` prefix on the host is dropped). A separator
that promises a part which turns out empty makes the name invalid (``"m:"``, ``"/m"``, ``"a//m"``). A fourth
``/``-part ends up inside the host, which rejects it. Missing parts take the defaults
``registry.ollama.ai``, ``library`` and ``latest``.

Because every part is validated, the four parts are safe to use as path components: a ``ModelName`` can
only be constructed valid (``__post_init__`` checks it), which is what keeps manifest paths inside the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import InvalidName

__all__ = ["DEFAULT_HOST", "DEFAULT_NAMESPACE", "DEFAULT_TAG", "InvalidName", "ModelName"]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PART_RES = (
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),  # host
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),     # namespace
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),    # model
    re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),    # tag
)
_PART_KINDS = ("host", "namespace", "model", "tag")
_MAX_INPUT = 350 + 3 * 80 + len("https://") + 3     # the longest string that could possibly be valid
_MISSING = "!MISSING!"                              # Ollama's marker for a promised-but-empty part


@dataclass(frozen=True)
class ModelName:
    """A fully qualified, validated model name. Fields keep the spelling they were given."""

    host: str
    namespace: str
    model: str
    tag: str

    def __post_init__(self) -> None:
        for kind, pattern, value in zip(_PART_KINDS, _PART_RES, self.parts, strict=True):
            if not isinstance(value, str) or pattern.fullmatch(value) is None:
                raise InvalidName(f"invalid model name: bad {kind}")

    @classmethod
    def parse(cls, s: str) -> ModelName:
        """Parse ``s`` and fill in defaults; raises :class:`InvalidName` for anything off-grammar."""
        if not isinstance(s, str) or not s or len(s) > _MAX_INPUT:
            raise InvalidName("invalid model name")
        host, namespace, model, tag = _split(s)
        return cls(host or DEFAULT_HOST, namespace or DEFAULT_NAMESPACE, model, tag or DEFAULT_TAG)

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """``(host, namespace, model, tag)``: the four directory levels under ``manifests/``."""
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def display(self) -> str:
        """Ollama's ``DisplayShortest``: default host and namespace are dropped, the tag always shown."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def folded(self) -> tuple[str, str, str, str]:
        """The parts lower-cased: two names denote the same model when these are equal."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def equal_fold(self, other: ModelName) -> bool:
        """Case-insensitive equality, the way Ollama compares names."""
        return self.folded == other.folded

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


def _split(s: str) -> tuple[str, str, str, str]:
    """Split into (host, namespace, model, tag), any of which may be empty (= take the default)."""
    tag: str | None = ""
    if s.rfind(":") > s.rfind("/"):
        s, tag = _cut_promised(s, ":")
    s, model = _cut_promised(s, "/")
    if model is None:
        return "", "", s, tag or ""
    s, namespace = _cut_promised(s, "/")
    if namespace is None:
        return "", s, model, tag or ""
    _, sep, host = s.partition("://")
    return (host if sep else s), namespace, model, tag or ""


def _cut_promised(s: str, sep: str) -> tuple[str, str | None]:
    """Cut at the last ``sep``; ``(s, None)`` if absent. Empty sides become an invalid marker."""
    i = s.rfind(sep)
    if i < 0:
        return s, None
    return (s[:i] or _MISSING), (s[i + len(sep):] or _MISSING)
