"""Constrained decoding: per-token masks that keep a generation inside JSON, a JSON Schema or a grammar.

The matching is llguidance's (a Rust Earley parser over a token trie, MIT, binary wheels on PyPI): it is fed
every token's bytes from our own tokenizer, so it needs no Hugging Face tokenizer. Building its tokenizer (the
trie) is the expensive step, so ``tokenizer_for_constraints`` caches one per ``Tokenizer`` object; a request
then only compiles its grammar into an ``LLMatcher`` and asks it for a bitmask at each step.

Choices, each made for the small models we serve:

* ``format: "json"`` means a JSON *object* at the top level, as Ollama's JSON grammar (llama.cpp's json.gbnf,
  ``root ::= object``) and OpenAI's ``json_object`` mode do; a bare string or number is rarely what a caller
  wants. It is a small Lark grammar rather than the schema ``{"type": "object"}`` so that numbers can be
  bounded as json.gbnf bounds them (at most 16 integer digits): Gemma3-270M otherwise wrote
  ``"salary": 2000000…`` until num_predict ran out.
* No free whitespace, in both modes: JSON comes out as Python's ``json.dumps`` writes it,
  ``{"a": 1, "b": [true, null]}`` (one space after ``:`` and ``,``, nothing else). Free whitespace lets a small
  model loop on newlines until num_predict runs out, as Ollama's docs warn. Measured on SmolLM2-135M, greedy,
  ten prompts: with at most 20 whitespace characters per place, 2 of 10 outputs were newline loops (blank lines
  around every ``:`` and ``,``); in the Python style none were.
* Schemas are compiled leniently: keywords and string formats llguidance does not implement are ignored (with
  a warning in the log) rather than refused, as llama.cpp's json-schema-to-grammar, which Ollama uses, does.
  Structural errors (a bad ``type``, a dangling ``$ref``, an unsatisfiable range) raise ``ConstraintError``.
  Annotations (``title``, ``description``) and OpenAI's ``strict`` / ``additionalProperties: false`` are fine.
* CONTROL and UNKNOWN tokens are special for llguidance: their rendered text (``<|im_end|>``) can never be
  generated as part of a JSON string. The end-of-generation tokens are its EOS set, allowed only once the value
  is complete. Everything else, USER_DEFINED tokens included, matches by its bytes.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Literal

import llguidance
import numpy as np

from engine.tokenizer import Tokenizer

__all__ = ["Constraint", "ConstraintError", "tokenizer_for_constraints"]

log = logging.getLogger(__name__)

# llguidance's JSON options (its "x-guidance" keys; ours override a schema's own): no whitespace but the
# separators', and unimplemented keywords or formats ignored instead of refused.
_JSON_OPTIONS = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", ", "lenient": True}

# Any JSON object, in the same style. Integer parts have at most 16 digits (json.gbnf's bound), fractions 24:
# room for every float64's shortest repr, which has at most 20 ("0.00012345678901234568").
_JSON_OBJECT = r"""
start: object
value: object | array | STRING | NUMBER | "true" | "false" | "null"
object: "{" [pair (", " pair)*] "}"
pair: STRING ": " value
array: "[" [value (", " value)*] "]"
STRING: /"([^"\\\x00-\x1F]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/
NUMBER: /-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,24})?([eE][-+]?[0-9]{1,3})?/
"""

_cache: weakref.WeakKeyDictionary[Tokenizer, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


class ConstraintError(ValueError):
    """An invalid JSON schema or grammar, or a token the constraint does not allow."""


class _TokenSource:
    """What llguidance.TokenizerWrapper reads: every token's bytes, the special ids, EOS and BOS, an encoder."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        n = tokenizer.vocab_size
        plain = [tokenizer.token_bytes(i) for i in range(n)]
        self.tokens = [tokenizer.token_bytes(i, render_special=True) for i in range(n)]
        # CONTROL / UNKNOWN tokens: the ones the detokenizer hides, i.e. whose text shows only when rendered.
        self.special_token_ids = [i for i in range(n) if plain[i] != self.tokens[i]]
        self.eos_token_id = tokenizer.eos_id if tokenizer.eos_id is not None else min(_eog(tokenizer))
        self.bos_token_id = tokenizer.bos_id
        self._tokenizer = tokenizer

    def __call__(self, text: bytes | str) -> list[int]:
        """Token ids of some text (llguidance re-tokenizes only forced text, never the vocabulary)."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tokenizer.encode(text)


def tokenizer_for_constraints(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """llguidance's tokenizer for ``tokenizer``, built once per Tokenizer object (0.25 s for SmolLM2's 49152
    tokens, 1.2 s for Gemma3's 262144) and shared by every request on it. The lock serializes builds: two
    requests on a new model wait for one build rather than racing two."""
    with _cache_lock:
        built = _cache.get(tokenizer)
        if built is None:
            eog = _eog(tokenizer)
            if not eog:
                raise ConstraintError("the vocabulary has no end-of-generation token")
            source = llguidance.TokenizerWrapper(_TokenSource(tokenizer))
            built = _cache[tokenizer] = llguidance.LLTokenizer(source, eos_token=sorted(eog))
        return built


def _eog(tokenizer: Tokenizer) -> set[int]:
    """The ids that end a generation: llguidance's EOS set, allowed exactly when the value is complete."""
    return set(tokenizer.eog_ids) | ({tokenizer.eos_id} if tokenizer.eos_id is not None else set())


class Constraint:
    """One request's constraint: which tokens may come next, and advancing past the chosen one.

    Not thread-safe; owned by the engine thread that runs the request. Typical loop::

        logits = constraint.apply(logits); token = sampler.sample(logits); constraint.accept(token)
        if constraint.done: stop
    """

    def __init__(self, tokenizer: Tokenizer, grammar: str) -> None:
        """``grammar``: llguidance's grammar JSON (from the class methods below)."""
        self._matcher = llguidance.LLMatcher(tokenizer_for_constraints(tokenizer), grammar, log_level=0)
        if self._matcher.is_error():
            raise ConstraintError(self._matcher.get_error())
        for warning in self._matcher.get_grammar_warnings():
            log.warning("constraint: %s", warning)
        self.vocab_size = tokenizer.vocab_size
        self._bits = np.zeros((self.vocab_size + 31) // 32, np.int32)     # (words,) one bit per token
        self._mask: np.ndarray | None = None                              # bool (vocab,) for the current step

    @classmethod
    def json(cls, tokenizer: Tokenizer) -> Constraint:
        """Any JSON object (Ollama's ``format: "json"``), numbers of at most 16 integer digits."""
        return cls.grammar(tokenizer, _JSON_OBJECT)

    @classmethod
    def json_schema(cls, tokenizer: Tokenizer, schema: dict[str, Any]) -> Constraint:
        """A JSON value valid against ``schema`` (Draft 2020-12, as far as llguidance implements it)."""
        if not isinstance(schema, dict):
            raise ConstraintError(f"a JSON schema must be an object, not {type(schema).__name__}")
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_OPTIONS)
        except ValueError as e:
            raise ConstraintError(f"invalid JSON schema: {e}") from e
        return cls(tokenizer, grammar)

    @classmethod
    def grammar(cls, tokenizer: Tokenizer, text: str, syntax: Literal["lark", "gbnf"] = "lark") -> Constraint:
        """Output matching a Lark (llguidance's dialect) or GBNF (llama.cpp's) grammar."""
        if syntax not in ("lark", "gbnf"):
            raise ConstraintError(f"unknown grammar syntax {syntax!r} (expected 'lark' or 'gbnf')")
        try:
            grammar = llguidance.grammar_from(syntax, text)
        except ValueError as e:
            raise ConstraintError(f"invalid grammar: {e}") from e
        return cls(tokenizer, grammar)

    def mask(self) -> np.ndarray:
        """bool (vocab,), read-only: the tokens allowed next; the EOG tokens only once the value is complete.
        Computed once per step (10-200 µs on SmolLM2, see benchmarks/constrained.py)."""
        if self._mask is None:
            self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
            self._check()
            bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")   # (32 · words,)
            self._mask = bits[: self.vocab_size].view(bool)
            self._mask.flags.writeable = False                              # shared with apply() until accept()
        return self._mask

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` (f32 (n,)) with every disallowed token at -inf; ids past the vocabulary (a padded
        output head) are disallowed too."""
        ninf = logits.dtype.type(-np.inf)
        n = min(self.vocab_size, logits.shape[0])
        if n == logits.shape[0]:
            return np.where(self.mask()[:n], logits, ninf)
        out = np.full(logits.shape, ninf, dtype=logits.dtype)
        out[:n] = np.where(self.mask()[:n], logits[:n], ninf)
        return out

    def accept(self, token: int) -> None:
        """Advance past ``token``; ConstraintError if it was not allowed (the constraint is then unusable)."""
        if not self._matcher.consume_token(int(token)):
            raise ConstraintError(f"token {token} is not allowed here: {self._matcher.get_error()}")
        self._mask = None

    @property
    def done(self) -> bool:
        """The value is complete and nothing but an end-of-generation token may follow."""
        return self._matcher.is_stopped()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise ConstraintError(self._matcher.get_error())
