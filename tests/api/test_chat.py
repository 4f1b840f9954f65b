"""POST /api/chat through a real server, with the official ollama client and with raw HTTP."""

from __future__ import annotations

import json

import ollama
import pytest
import requests

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 12}
pytestmark = pytest.mark.slow


def chatml(messages: list[tuple[str, str]]) -> str:
    """What smollm2's chatml template must produce, written out by hand."""
    return "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages) + \
        "<|im_start|>assistant\n"


def rendered(post, model: str, messages: list[dict], **extra) -> str:
    body = {"model": model, "messages": messages, "_debug_render_only": True, "stream": False, **extra}
    r = post("/api/chat", body)
    assert r.status_code == 200, r.text
    return r.json()["_debug_info"]["rendered_template"]


def tokens(post, text: str) -> list[int]:
    return post("/api/tokenize", {"model": MODEL, "content": text}).json()["tokens"]


@pytest.fixture(scope="module")
def persona(server):
    """A model made from smollm2 with a SYSTEM prompt and a MESSAGE history."""
    name = "chat-test-persona:latest"
    body = {"model": name, "from": MODEL, "system": "You are a terse bot.", "stream": False,
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    assert requests.post(server + "/api/create", json=body, timeout=120).json() == {"status": "success"}
    yield name
    requests.delete(server + "/api/delete", json={"model": name}, timeout=30)


def test_streamed_chat_equals_non_streamed(server):
    client = ollama.Client(host=server)
    messages = [{"role": "user", "content": "Name a colour."}]
    chunks = list(client.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
    assert all(c.message.role == "assistant" and not c.done for c in chunks[:-1])
    final = chunks[-1]
    assert final.done and final.done_reason == "length" and final.eval_count == 12
    assert final.message.content == "" and final.prompt_eval_count > 5
    whole = client.chat(model=MODEL, messages=messages, options=GREEDY, stream=False)
    assert whole.message.role == "assistant"
    assert whole.message.content == "".join(c.message.content for c in chunks)
    assert whole.message.content.strip()


def test_chat_generates_what_raw_generate_does_on_the_rendered_prompt(server, post):
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]
    text = rendered(post, MODEL, messages)
    assert text == chatml([("system", "Answer briefly."), ("user", "What is 2+2?"), ("assistant", "4"),
                           ("user", "And 3+3?")])
    chat = post("/api/chat", {"model": MODEL, "messages": messages, "stream": False, "options": GREEDY}).json()
    raw = post("/api/generate", {"model": MODEL, "prompt": text, "raw": True, "stream": False,
                                 "options": GREEDY}).json()
    assert chat["message"]["content"] == raw["response"]
    assert chat["prompt_eval_count"] == len(tokens(post, text)) == raw["prompt_eval_count"]


def test_multi_turn_with_the_client_is_deterministic(server):
    client = ollama.Client(host=server)
    history = [{"role": "user", "content": "My name is Ada."}]
    first = client.chat(model=MODEL, messages=history, options=GREEDY)
    history += [{"role": "assistant", "content": first.message.content}, {"role": "user", "content": "Who am I?"}]
    second = client.chat(model=MODEL, messages=history, options=GREEDY)
    again = client.chat(model=MODEL, messages=history, options=GREEDY)
    assert second.message.content == again.message.content and second.message.content.strip()
    assert second.prompt_eval_count > first.prompt_eval_count + first.eval_count


def test_model_system_and_history_come_first(post, persona):
    text = rendered(post, persona, [{"role": "user", "content": "Bye"}])
    assert text == chatml([("system", "You are a terse bot."), ("user", "Hi"), ("assistant", "Hello."),
                           ("user", "Bye")])


def test_request_system_replaces_the_model_system(post, persona):
    text = rendered(post, persona, [{"role": "system", "content": "Be loud."}, {"role": "user", "content": "Bye"}])
    assert text == chatml([("user", "Hi"), ("assistant", "Hello."), ("system", "Be loud."), ("user", "Bye")])


def test_model_system_reaches_the_model(post, persona):
    out = post("/api/chat", {"model": persona, "messages": [{"role": "user", "content": "Bye"}], "stream": False,
                             "options": {"num_predict": 1}}).json()
    expected = chatml([("system", "You are a terse bot."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Bye")])
    assert out["prompt_eval_count"] == len(tokens(post, expected))


def test_old_messages_are_dropped_to_fit_num_ctx(post):
    turns = [("user", "Tell me about the sea and its many moods."), ("assistant", "The sea is vast, deep and blue."),
             ("user", "And the mountains, tall and cold?"), ("assistant", "Mountains are high and covered in snow."),
             ("user", "Which is older?")]
    messages = [{"role": "system", "content": "Be kind."}] + [{"role": r, "content": c} for r, c in turns]
    keep_two = chatml([("system", "Be kind."), *turns[3:]])       # system + the last two messages
    num_ctx = len(tokens(post, keep_two)) + 1                       # fits exactly; one more message does not
    assert len(tokens(post, chatml([("system", "Be kind."), *turns[2:]]))) >= num_ctx
    assert rendered(post, MODEL, messages, options={"num_ctx": num_ctx}) == keep_two
    out = post("/api/chat", {"model": MODEL, "messages": messages, "stream": False,
                             "options": {"num_ctx": num_ctx, "num_predict": 1}}).json()
    assert out["prompt_eval_count"] == num_ctx - 1


def test_the_last_message_is_kept_even_when_alone_too_long(post):
    messages = [{"role": "user", "content": "old"}, {"role": "user", "content": "word " * 80}]
    assert rendered(post, MODEL, messages, options={"num_ctx": 32}) == chatml([("user", "word " * 80)])


def test_roles_are_lower_cased_and_nulls_ignored(post):
    messages = [{"role": "USER", "content": "Hi", "images": None, "tool_calls": None}]
    assert rendered(post, MODEL, messages, options={"temperature": None, "stop": None}) == chatml([("user", "Hi")])


def test_empty_messages_load_and_keep_alive_zero_unloads(server):
    client = ollama.Client(host=server)
    load = client.chat(model=MODEL, messages=[])
    assert load.done and load.done_reason == "load" and load.message.role == "assistant"
    unload = client.chat(model=MODEL, messages=[], keep_alive=0.0)
    assert unload.done_reason == "unload" and unload.message.content == ""
    after = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 2})
    assert after.eval_count == 2


def test_client_quirk_bodies_are_accepted(server):
    """ollama-python 0.3 (tools: [], format: ""), litellm (no Content-Type, images: [])."""
    bounded = {"model": "quirk-test", "from": MODEL, "parameters": {"num_predict": 4}, "stream": False}
    assert requests.post(server + "/api/create", json=bounded, timeout=120).json() == {"status": "success"}
    body = {"model": "quirk-test", "messages": [{"role": "user", "content": "Hi", "images": []}], "tools": [],
            "format": "", "options": {}, "keep_alive": None, "stream": False}     # no limit: the model has one
    r = requests.post(server + "/api/chat", data=json.dumps(body), headers={"Content-Type": ""}, timeout=120)
    assert r.status_code == 200 and r.json()["done"] is True and r.json()["eval_count"] <= 4
    body["options"] = {"num_predict": 2}
    assert ollama.Client(host=server).chat(**{k: v for k, v in body.items() if k != "stream"}).eval_count == 2


def test_stream_lines_are_ndjson_with_message_chunks(server):
    r = requests.post(server + "/api/chat", json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                                  "options": {"num_predict": 3}}, stream=True, timeout=120)
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.iter_lines()]
    assert all(x["message"]["role"] == "assistant" and "content" in x["message"] for x in lines)
    assert lines[-1]["done"] is True and "total_duration" in lines[-1] and "context" not in lines[-1]


TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}


@pytest.mark.parametrize("body, status, fragment", [
    ({"messages": []}, 400, "model is required"),
    ({"model": "nope:1b", "messages": []}, 404, "model 'nope:1b' not found"),
    ({"model": "../../etc/passwd", "messages": []}, 400, "invalid model name"),
    ({"model": MODEL, "messages": "hi"}, 400, "messages"),
    ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [TOOL]}, 400,
     "registry.ollama.ai/library/smollm2:135m does not support tools"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "think": True}, 400,
     "does not support thinking"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "think": "hard"}, 400, "invalid think value"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "format": "xml"}, 400, "invalid format"),
    ({"model": MODEL, "messages": [], "keep_alive": "5"}, 400, "missing unit"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "options": {"stop": 3}}, 400, "stop"),
])
def test_bad_chat_requests_get_json_errors(post, body, status, fragment):
    r = post("/api/chat", body)
    assert r.status_code == status and fragment in r.json()["error"]


def test_client_raises_on_tools_for_a_model_without_tools(server):
    with pytest.raises(ollama.ResponseError, match="does not support tools"):
        ollama.Client(host=server).chat(model=MODEL, messages=[{"role": "user", "content": "x"}], tools=[TOOL])
