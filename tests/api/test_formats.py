"""Structured output (format, grammar) and logprobs through the real server."""

from __future__ import annotations

import json

import jsonschema
import ollama
import pytest

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "mood": {"type": "string", "enum": ["happy", "sad", "calm"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "mood", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("prompt", ["Describe a cat as JSON.", "Give me a person with name and age in JSON.",
                                    "Make a JSON object for a book with title, author and year."])
def test_format_json_always_parses(server, prompt):
    # as Ollama's documentation says, the prompt asks for JSON too: the format guarantees the syntax, and a model
    # never told what is wanted may fill a string until num_predict cuts it
    out = ollama.Client(host=server).generate(model="smollm2:135m", prompt=prompt, format="json",
                                              options={"temperature": 0, "repeat_penalty": 1.0, "num_predict": 300},
                                              stream=False)
    assert out.done_reason == "stop"
    assert isinstance(json.loads(out.response), dict)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chat_with_a_schema_satisfies_it(server, seed):
    out = ollama.Client(host=server).chat(
        model="smollm2:135m", messages=[{"role": "user", "content": "Invent a person. Reply in JSON."}],
        format=PERSON, options={"temperature": 0.8, "seed": seed, "num_predict": 200}, stream=False)
    jsonschema.validate(json.loads(out.message.content), PERSON)


def test_grammar_option_restricts_the_answer(post):
    out = post("/api/generate", {"model": "smollm2:135m", "prompt": "Is the sky blue?", "stream": False,
                                 "options": {"grammar": 'root ::= "yes" | "no"', "temperature": 0}}).json()
    assert out["response"] in ("yes", "no") and out["done_reason"] == "stop"


def test_invalid_schema_is_400(post):
    r = post("/api/generate", {"model": "smollm2:135m", "prompt": "x", "format": {"type": "nonsense"}})
    assert r.status_code == 400 and "format" in r.json()["error"]


def test_logprobs_per_token(post):
    body = {"model": "smollm2:135m", "prompt": "Hello", "stream": False, "logprobs": True, "top_logprobs": 3,
            "options": {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 5}}
    out = post("/api/generate", body).json()
    assert len(out["logprobs"]) == out["eval_count"] >= 2
    assert "".join(lp["token"] for lp in out["logprobs"]) == out["response"]
    for lp in out["logprobs"]:
        assert lp["logprob"] <= 0 and len(lp["top_logprobs"]) == 3
        assert lp["top_logprobs"][0]["token"] == lp["token"]            # unpenalized greedy takes the most likely
        assert bytes(lp["bytes"]).decode() == lp["token"]


def test_chat_streams_logprobs(server):
    chunks = list(ollama.Client(host=server).chat(
        model="smollm2:135m", messages=[{"role": "user", "content": "Hi"}], logprobs=True,
        options={"temperature": 0, "num_predict": 3}, stream=True))
    assert sum(len(c.logprobs or []) for c in chunks) == chunks[-1].eval_count >= 2


def test_non_streamed_chat_gathers_the_streamed_logprobs(server):
    request = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Hi"}], "logprobs": True,
               "top_logprobs": 2, "options": {"temperature": 0, "num_predict": 4}}
    streamed = [lp for c in ollama.Client(host=server).chat(**request, stream=True) for lp in c.logprobs or []]
    done = ollama.Client(host=server).chat(**request)
    assert [lp.model_dump() for lp in done.logprobs] == [lp.model_dump() for lp in streamed] and len(streamed) == 4
    assert "".join(lp.token for lp in done.logprobs) == done.message.content


@pytest.mark.parametrize("top", [-1, 21])
def test_top_logprobs_out_of_range_is_400(post, top):
    r = post("/api/generate", {"model": "smollm2:135m", "prompt": "x", "logprobs": True, "top_logprobs": top})
    assert r.status_code == 400 and "top_logprobs" in r.json()["error"]
