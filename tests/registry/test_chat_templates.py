"""Choosing an Ollama template from a model's Hugging Face Jinja chat template (Ollama's template.Named)."""

from __future__ import annotations

import gguf
import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from registry import chat_templates
from registry.template import Template, render_prompt

INDEX = chat_templates._index()


def _plain_levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@pytest.fixture(scope="module")
def smollm2_jinja(smollm2_path) -> str:
    return gguf.GGUFReader(smollm2_path).fields["tokenizer.chat_template"].contents()


def test_smollm2_maps_to_chatml(smollm2_jinja):
    named = chat_templates.detect(smollm2_jinja)
    assert named is not None and named.name == "chatml"
    assert named.params == {"stop": ["<|im_start|>", "<|im_end|>"]}
    assert named.template == (chat_templates.TEMPLATES_DIR / "chatml.gotmpl").read_text()


def test_smollm2_distance_to_qwen_chatml_is_41_as_measured_with_ollama(smollm2_jinja):
    qwen = next(e["template"] for e in INDEX["jinja"] if e["source"] == "Qwen1.5-Chat")
    assert chat_templates.levenshtein(smollm2_jinja, qwen) == 41


@given(st.text(alphabet="abcé\n", max_size=12), st.text(alphabet="abcé\n", max_size=12))
def test_levenshtein_matches_the_textbook_recurrence(a, b):
    assert chat_templates.levenshtein(a, b) == _plain_levenshtein(a, b)


@given(st.text(alphabet="ab", max_size=10), st.text(alphabet="ab", max_size=10), st.integers(1, 6))
def test_levenshtein_cutoff_is_exact_below_the_cutoff(a, b, cutoff):
    exact = _plain_levenshtein(a, b)
    assert chat_templates.levenshtein(a, b, cutoff=cutoff) == min(exact, cutoff)


def test_every_known_jinja_template_detects_its_own_name():
    for entry in INDEX["jinja"]:
        assert chat_templates.detect(entry["template"]).name == entry["name"], entry["source"]


def test_small_edits_still_match_but_unrelated_templates_do_not():
    llama3 = next(e["template"] for e in INDEX["jinja"] if e["name"] == "llama3-instruct")
    assert chat_templates.detect(llama3.replace("bos_token", "bos")).name == "llama3-instruct"
    assert chat_templates.detect("{{ messages[0]['content'] }}") is None
    assert chat_templates.detect("") is None
    assert chat_templates.detect("x" * 1_000_000) is None                 # too long to be close: no work


def test_first_minimum_wins_on_ties():
    a = INDEX["jinja"][0]["template"]
    assert chat_templates.detect(a).name == INDEX["jinja"][0]["name"]


def test_every_bundled_template_parses_and_has_params():
    assert set(chat_templates.names()) == {e["name"] for e in INDEX["jinja"]}
    for name in chat_templates.names():
        named = chat_templates.load(name)
        Template(named.template)
        assert isinstance(named.params, dict)
    assert chat_templates.load("gemma3-instruct").params == {"stop": ["<end_of_turn>"], "temperature": 0.1}
    with pytest.raises(KeyError):
        chat_templates.load("nope")


def test_loaded_params_are_copies():
    chat_templates.load("chatml").params["stop"].append("mutated")
    assert chat_templates.load("chatml").params["stop"] == ["<|im_start|>", "<|im_end|>"]


# -- the Jinja texts and the Go templates they map to render the same prompt ---------------------------------
def _jinja_render(source: str, messages: list[dict], eos: str) -> str:
    def raise_exception(msg: str) -> None:
        raise jinja2.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(messages=messages, add_generation_prompt=True, bos_token="",
                                          eos_token=eos)


CHATS = {
    "user": [{"role": "user", "content": "Hi"}],
    "multi": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
              {"role": "user", "content": "More"}],
    "system": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Hi"}],
}


@pytest.mark.parametrize("source, chats, eos, go_suffix", [
    ("Ollama index: ChatML", ["user", "multi", "system"], "", ""),
    ("meta-llama/Meta-Llama-3-*-Instruct", ["user", "multi", "system"], "", ""),
    ("google/gemma-*-it", ["user", "multi"], "", ""),
    ("microsoft/Phi-3.5-mini-instruct", ["user", "multi", "system"], "", ""),
    ("HuggingFaceH4/zephyr-7b-beta, TinyLlama-1.1B-Chat", ["user", "multi", "system"], "</s>", ""),
    ("google/gemma-3-*-it (reconstructed)", ["user", "multi", "system"], "", "\n"),   # Ollama's trailing newline
])
def test_jinja_and_go_templates_agree(source, chats, eos, go_suffix):
    entry = next(e for e in INDEX["jinja"] if e["source"] == source)
    go = Template(chat_templates.load(entry["name"]).template)
    for chat in chats:
        assert render_prompt(go, CHATS[chat]) == _jinja_render(entry["template"], CHATS[chat], eos) + go_suffix
