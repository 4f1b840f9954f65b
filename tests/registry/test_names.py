"""Model-name grammar, defaults and display forms (Ollama's types/model/name.go)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import StoreError
from registry.names import InvalidName, ModelName

VALID = [
    # input, full name, DisplayShortest
    ("llama3.2", "registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"),
    ("smollm2:135m", "registry.ollama.ai/library/smollm2:135m", "smollm2:135m"),
    ("user/m:q4", "registry.ollama.ai/user/m:q4", "user/m:q4"),
    ("user/m", "registry.ollama.ai/user/m:latest", "user/m:latest"),
    ("localhost:5000/ns/m", "localhost:5000/ns/m:latest", "localhost:5000/ns/m:latest"),
    ("hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M",
     "hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M", "hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M"),
    ("https://example.com/ns/m:t", "example.com/ns/m:t", "example.com/ns/m:t"),
    ("http://localhost:11434/ns/m", "localhost:11434/ns/m:latest", "localhost:11434/ns/m:latest"),
    ("registry.ollama.ai/library/gemma:2b", "registry.ollama.ai/library/gemma:2b", "gemma:2b"),
    ("REGISTRY.Ollama.AI/Library/Gemma:2B", "REGISTRY.Ollama.AI/Library/Gemma:2B", "Gemma:2B"),
    ("_private/_m:_t", "registry.ollama.ai/_private/_m:_t", "_private/_m:_t"),
    ("qwen2.5-coder:1.5b-instruct-q4_K_M", "registry.ollama.ai/library/qwen2.5-coder:1.5b-instruct-q4_K_M",
     "qwen2.5-coder:1.5b-instruct-q4_K_M"),
    ("a..b", "registry.ollama.ai/library/a..b:latest", "a..b:latest"),   # dots inside a part are legal
]

INVALID = [
    "", ":", "/", "m:", ":tag", "/m", "ns/", "a//m", "h//m", "m/:t",
    "..", ".", "../x", "a/../../b", "../../etc/passwd", "./m", "-m", ".hidden",
    "host/ns/model/extra", "a/b/c/d/e", "ns.with.dot/m",
    "m:a:b", "m@sha256:" + "a" * 64, "@sha256:" + "a" * 64, "m:tag@sha256:" + "0" * 64,
    "a\\b", "..\\..\\x", "C:\\models\\m", "m odel", " m", "m\n", "m\x00", "m\t:t",
    "é", "mödel", "m:tä", "\u212a", "１２３", "m:t\u200b", "\ud800",
    "x" * 81, "m:" + "t" * 81, "n" * 81 + "/m", "h" * 351 + "/ns/m", "a" * 10_000, "a/" * 5000 + "m",
]


@pytest.mark.parametrize(("raw", "full", "display"), VALID)
def test_valid_names(raw: str, full: str, display: str) -> None:
    name = ModelName.parse(raw)
    assert str(name) == full
    assert name.display == display
    assert ModelName.parse(str(name)) == name


@pytest.mark.parametrize("raw", INVALID)
def test_invalid_names(raw: str) -> None:
    with pytest.raises(InvalidName):
        ModelName.parse(raw)


def test_invalid_name_is_a_value_error_and_a_store_error() -> None:
    with pytest.raises(ValueError):
        ModelName.parse("../x")
    assert issubclass(InvalidName, StoreError)


@pytest.mark.parametrize("value", [None, 3, b"llama3", ["m"]])
def test_non_string_input(value: object) -> None:
    with pytest.raises(InvalidName):
        ModelName.parse(value)  # type: ignore[arg-type]


def test_length_limits_are_inclusive() -> None:
    assert ModelName.parse("m" * 80).model == "m" * 80
    assert ModelName.parse("m:" + "t" * 80).tag == "t" * 80
    assert ModelName.parse("n" * 80 + "/m").namespace == "n" * 80
    assert ModelName.parse("h" * 350 + "/ns/m").host == "h" * 350


def test_absurd_length_is_rejected_quickly() -> None:
    start = time.perf_counter()
    with pytest.raises(InvalidName):
        ModelName.parse("a/" * 5_000_000)
    assert time.perf_counter() - start < 0.1


def test_parts_and_case_insensitive_equality() -> None:
    name = ModelName.parse("localhost:5000/Team/Model:Q4")
    assert name.parts == ("localhost:5000", "Team", "Model", "Q4")
    assert name.equal_fold(ModelName.parse("LOCALHOST:5000/team/model:q4"))
    assert name != ModelName.parse("localhost:5000/team/model:q4")      # spelling is preserved
    assert not name.equal_fold(ModelName.parse("localhost:5000/team/model:q5"))


@pytest.mark.parametrize("parts", [
    ("h", "ns", "..", "t"), ("h", "ns", "m", "../t"), ("a/b", "ns", "m", "t"), ("h", "n.s", "m", "t"),
    ("h", "ns", "", "t"), ("h", "ns", "m", "t/u"),
])
def test_direct_construction_is_validated(parts: tuple[str, str, str, str]) -> None:
    with pytest.raises(InvalidName):
        ModelName(*parts)


@given(st.text(max_size=120))
def test_any_parsed_name_is_path_safe_and_round_trips(raw: str) -> None:
    """Ollama's FuzzName invariants, plus: every part is a single, non-dot path component."""
    try:
        name = ModelName.parse(raw)
    except InvalidName:
        return
    for part in name.parts:
        assert part.isascii() and part not in (".", "..")
        assert "/" not in part and "\\" not in part and "\x00" not in part
        assert not part.startswith((".", "-"))
    assert ModelName.parse(str(name)) == name
    assert ModelName.parse(name.display).equal_fold(name)


@given(st.from_regex(r"[a-z0-9_][a-z0-9_.-]{0,20}(:[a-z0-9_][a-z0-9_.-]{0,20})?", fullmatch=True))
def test_grammar_strings_always_parse(raw: str) -> None:
    name = ModelName.parse(raw)
    assert name.host == "registry.ollama.ai" and name.namespace == "library"
    assert name.display == (raw if ":" in raw else raw + ":latest")
