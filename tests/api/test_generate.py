"""POST /api/generate through a real server, with the official ollama client and with raw HTTP."""

from __future__ import annotations

import json

import ollama
import pytest
import requests

from tests.conftest import oracle

CAPITAL = next(c for c in oracle("smollm2-135m", "logits.json") if c["prompt"] == "The capital of France is")
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 16}   # llama.cpp greedy: no penalties
pytestmark = pytest.mark.slow


def test_root_and_version(server):
    assert requests.get(server + "/").text == "Ollama is running"
    assert requests.head(server + "/").status_code == 200
    version = requests.get(server + "/api/version").json()["version"]
    assert [int(x) for x in version.split(".")] >= [0, 1, 0]


def test_raw_greedy_continuation_matches_llama_cpp(server):
    client = ollama.Client(host=server)
    out = client.generate(model="smollm2:135m", prompt=CAPITAL["prompt"], raw=True, options=GREEDY, stream=False)
    assert out.done and out.done_reason == "length" and out.eval_count == 16
    assert out.context is None or out.context == []  # raw mode returns no context
    assert out.response == _decode(server, CAPITAL["greedy"][:16])


def test_streamed_equals_non_streamed(server):
    client = ollama.Client(host=server)
    chunks = list(client.generate(model="smollm2:135m", prompt="Why is the sky blue?", options=GREEDY, stream=True))
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    whole = client.generate(model="smollm2:135m", prompt="Why is the sky blue?", options=GREEDY, stream=False)
    assert "".join(c.response for c in chunks) == whole.response
    assert whole.response.strip()
    final = chunks[-1]
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                "eval_duration"):
        assert isinstance(getattr(final, key), int)
    assert final.prompt_eval_count > 5 and final.eval_count == 16


def test_prompt_is_chatml_templated(server, post):
    out = post("/api/generate", {"model": "smollm2:135m", "prompt": "Hi there", "stream": False,
                                 "options": {"num_predict": 1, "temperature": 0}}).json()
    expected = _tokenize(server, "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    assert out["context"][:len(expected)] == expected


def test_context_continues_the_conversation(server, post):
    first = post("/api/generate", {"model": "smollm2:135m", "prompt": "My name is Ada.", "stream": False,
                                   "options": GREEDY}).json()
    second = post("/api/generate", {"model": "smollm2:135m", "prompt": "What is my name?", "stream": False,
                                    "context": first["context"], "options": GREEDY}).json()
    assert second["context"][:len(first["context"])] == first["context"]
    assert second["prompt_eval_count"] > len(first["context"])


def test_same_seed_same_text_different_seed_differs(server, post):
    def run(seed):
        body = {"model": "smollm2:135m", "prompt": "Tell me a story.", "stream": False,
                "options": {"seed": seed, "temperature": 1.2, "top_k": 100, "num_predict": 24}}
        return post("/api/generate", body).json()["response"]
    assert run(7) == run(7)
    assert len({run(7), run(8), run(9)}) > 1


def test_stop_string_is_not_emitted(server, post):
    body = {"model": "smollm2:135m", "prompt": CAPITAL["prompt"], "raw": True, "stream": False,
            "options": {"temperature": 0, "num_predict": 30, "stop": ["Paris"]}}
    out = post("/api/generate", body).json()
    assert out["done_reason"] == "stop" and "Paris" not in out["response"]


def test_stream_is_ndjson(server):
    r = requests.post(server + "/api/generate", json={"model": "smollm2:135m", "prompt": "Hello",
                                                      "options": {"num_predict": 4}}, stream=True)
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [line for line in r.iter_lines()]
    assert all(lines) and json.loads(lines[-1])["done"] is True
    assert all(json.loads(line)["created_at"].endswith("Z") for line in lines)


def test_empty_prompt_loads_and_keep_alive_zero_unloads(server, post):
    assert post("/api/generate", {"model": "smollm2:135m"}).json()["done_reason"] == "load"
    out = post("/api/generate", {"model": "smollm2:135m", "keep_alive": 0.0}).json()
    assert out["done_reason"] == "unload" and out["done"] is True
    assert post("/api/generate", {"model": "smollm2:135m", "prompt": "Hi", "stream": False,
                                  "options": {"num_predict": 2}}).json()["eval_count"] == 2


def test_form_content_type_from_curl_still_parses(server):
    body = json.dumps({"model": "smollm2:135m", "prompt": "Hi", "stream": False, "options": {"num_predict": 1}})
    r = requests.post(server + "/api/generate", data=body,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["done"] is True


@pytest.mark.parametrize("body, status, fragment", [
    ({"model": "nope:1b", "prompt": "x"}, 404, "model 'nope:1b' not found"),
    ({"prompt": "x"}, 404, "not found"),
    ({"model": "smollm2:135m", "prompt": 5}, 400, "prompt"),
    ({"model": "smollm2:135m", "prompt": "x", "options": {"temperature": "hot"}}, 400, "temperature"),
    ({"model": "smollm2:135m", "prompt": "x", "options": {"top_p": 3}}, 400, "top_p"),
    ({"model": "smollm2:135m", "prompt": "x", "raw": True, "system": "s"}, 400, "raw mode"),
    ({"model": "smollm2:135m", "prompt": "x", "keep_alive": "5"}, 400, "missing unit"),
    ({"model": "smollm2:135m", "prompt": "x", "context": [10 ** 9]}, 400, "vocabulary"),
    ({"model": "../../etc/passwd", "prompt": "x"}, 400, "invalid model name"),
])
def test_bad_requests_get_json_errors(post, body, status, fragment):
    r = post("/api/generate", body)
    assert r.status_code == status and fragment in r.json()["error"]


@pytest.mark.parametrize("data", [b"", b"{not json", b"[1, 2]", b'"text"'])
def test_malformed_bodies_are_400(server, data):
    r = requests.post(server + "/api/generate", data=data)
    assert r.status_code == 400 and "error" in r.json()


def test_unknown_path_and_wrong_method(server):
    assert requests.get(server + "/api/nothing").status_code == 404
    r = requests.get(server + "/api/generate")
    assert r.status_code == 405 and "error" in r.json()


def _tokenize(server, text):
    return requests.post(server + "/api/tokenize", json={"model": "smollm2:135m", "content": text}).json()["tokens"]


def _decode(server, tokens):
    return requests.post(server + "/api/detokenize", json={"model": "smollm2:135m", "tokens": tokens}).json()["content"]


def test_prompt_longer_than_num_ctx_is_truncated_and_says_so(server):
    body = {"model": "smollm2:135m", "prompt": "one two three four five six seven eight nine ten " * 8,
            "raw": True, "stream": False, "options": {"num_ctx": 32, "num_keep": 4, "num_predict": 2}}
    r = requests.post(server + "/api/generate", json=body)
    out = r.json()
    dropped = int(r.headers["X-Pollama-Prompt-Truncated"])
    assert dropped > 0 and out["prompt_truncated"] == dropped
    assert out["prompt_eval_count"] == 31                     # num_ctx - 1: room for the first generated token


def _derive(server, name, template):
    body = {"model": name, "from": "smollm2:135m", "template": template, "stream": False}
    assert requests.post(server + "/api/create", json=body, timeout=120).json() == {"status": "success"}


def _prompt_tokens(post, body):
    out = post("/api/generate", {**body, "stream": False, "options": {"num_predict": 1, "temperature": 0}}).json()
    return out["context"][:out["prompt_eval_count"]]


def test_suffix_fills_in_the_middle_through_the_template(server, post):
    _derive(server, "fim-test", "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>"
                                "{{- else }}{{ .Prompt }}{{- end }}")
    body = {"model": "fim-test", "prompt": "def add(a, b):", "suffix": "    return c"}
    assert _prompt_tokens(post, body) == _tokenize(server, "<PRE> def add(a, b): <SUF>    return c <MID>")
    assert _prompt_tokens(post, {**body, "suffix": ""}) == _tokenize(server, "def add(a, b):")


def test_suffix_on_a_model_without_insert_is_400(post):
    r = post("/api/generate", {"model": "smollm2:135m", "prompt": "def f(", "suffix": "return 1", "stream": False})
    assert r.status_code == 400
    assert r.json() == {"error": "registry.ollama.ai/library/smollm2:135m does not support insert"}


@pytest.mark.parametrize("think, error", [
    (True, '"smollm2:135m" does not support thinking'),
    ("high", '"smollm2:135m" does not support thinking'),
    ("loud", 'invalid think value: "loud" (must be "high", "medium", "low", "max", true, or false)'),
    (3, "invalid think value: 3 (must be \"high\", \"medium\", \"low\", \"max\", true, or false)"),
])
def test_think_on_generate_is_checked(post, think, error):
    r = post("/api/generate", {"model": "smollm2:135m", "prompt": "Hi", "think": think, "stream": False})
    assert r.status_code == 400 and r.json() == {"error": error}
    ok = post("/api/generate", {"model": "smollm2:135m", "prompt": "Hi", "think": False, "stream": False,
                                "options": {"num_predict": 1}})
    assert ok.status_code == 200 and ok.json()["done"]


def test_think_reaches_a_thinking_template(server, post):
    _derive(server, "think-test", "{{ if .Think }}<on {{ .ThinkLevel }}>{{ end }}"
                                  "{{ range .Messages }}{{ .Content }}{{ if .Thinking }}{{ end }}{{ end }}")
    for think, head in ((True, "<on >"), ("low", "<on low>"), (False, ""), (None, "")):
        body = {"model": "think-test", "prompt": "Hi", **({} if think is None else {"think": think})}
        assert _prompt_tokens(post, body) == _tokenize(server, head + "Hi"), think


@pytest.mark.parametrize("num_ctx", [1, 1.5, 3])
def test_a_context_below_four_tokens_is_raised_to_four(post, num_ctx):
    body = {"model": "smollm2:135m", "prompt": "one two three four five six", "raw": True, "stream": False,
            "options": {"num_ctx": num_ctx, "num_predict": 1}}
    out = post("/api/generate", body)
    assert out.status_code == 200 and out.json()["prompt_eval_count"] == 3      # 4 positions, one left to generate


def test_a_template_that_renders_nothing_is_400(server, post):
    r = post("/api/generate", {"model": "smollm2:135m", "prompt": "Hi", "template": "{{ .System }}", "stream": False})
    assert r.status_code == 400 and r.json() == {"error": "the prompt is empty once templated"}
    _derive(server, "silent-test", "{{ range .Messages }}{{ end }}")
    r = post("/api/chat", {"model": "silent-test", "messages": [{"role": "user", "content": "Hi"}], "stream": False})
    assert r.status_code == 400 and r.json() == {"error": "the prompt is empty once templated"}
    ok = post("/api/generate", {"model": "smollm2:135m", "prompt": "Hi", "stream": False,
                                "options": {"num_predict": 1}})
    assert ok.status_code == 200                                 # the refused requests left no slot or model held
