"""/api/chat with a model whose TEMPLATE is Jinja: rendered by the sandboxed Jinja environment, tools allowed."""

from __future__ import annotations

import hashlib

import gguf
import numpy as np
import pytest
import requests

from api.gguf_import import import_gguf
from api.model_pool import read_record
from engine.gguf import GGUFFile
from registry.names import ModelName
from registry.store import Store

pytestmark = pytest.mark.slow

NAME = "jinja-test:latest"
JINJA = ("{{ bos_token }}{% for message in messages %}[{{ message['role'] | upper }}] {{ message['content'] }}"
         "{% if message.tool_calls %} calls {{ message.tool_calls[0].function.name }}"
         "{{ message.tool_calls[0].function.arguments | tojson }}{% endif %}{{ eos_token }}\n{% endfor %}"
         "{% if tools %}tools: {{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
         "{% if add_generation_prompt %}[ASSISTANT] {% endif %}")


@pytest.fixture(scope="module")
def jinja_model(server):
    body = {"model": NAME, "from": "smollm2:135m", "template": JINJA, "stream": False}
    assert requests.post(server + "/api/create", json=body, timeout=120).json() == {"status": "success"}
    yield NAME
    requests.delete(server + "/api/delete", json={"model": NAME}, timeout=30)


@pytest.fixture(scope="module")
def specials(smollm2_path) -> tuple[str, str]:
    """(bos text the template sees, eos text): BOS only when the tokenizer does not add it itself."""
    with GGUFFile(smollm2_path) as gguf:
        md = gguf.metadata
    tokens = md["tokenizer.ggml.tokens"]
    adds_bos = bool(md.get("tokenizer.ggml.add_bos_token", False))
    bos = "" if adds_bos else tokens[md["tokenizer.ggml.bos_token_id"]]
    return bos, tokens[md["tokenizer.ggml.eos_token_id"]]


def rendered(post, body: dict) -> str:
    r = post("/api/chat", {"_debug_render_only": True, "stream": False, **body})
    assert r.status_code == 200, r.text
    return r.json()["_debug_info"]["rendered_template"]


def test_chat_renders_the_jinja_template(post, jinja_model, specials):
    bos, eos = specials
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = rendered(post, {"model": jinja_model, "messages": messages})
    assert text == f"{bos}[SYSTEM] Be brief.{eos}\n[USER] Hi{eos}\n[ASSISTANT] "


def test_chat_with_tools_and_tool_calls_through_jinja(post, jinja_model, specials):
    bos, eos = specials
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    messages = [{"role": "user", "content": "Paris?"},
                {"role": "assistant", "content": "",
                 "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "18", "tool_name": "get_weather"}]
    text = rendered(post, {"model": jinja_model, "messages": messages, "tools": [tool]})
    assert text == (f'{bos}[USER] Paris?{eos}\n[ASSISTANT]  calls get_weather{{"city": "Paris"}}{eos}\n'
                    f"[TOOL] 18{eos}\ntools: get_weather\n[ASSISTANT] ")


def test_hostile_jinja_template_is_a_400_not_a_crash(post, server):
    body = {"model": "jinja-hostile:latest", "from": "smollm2:135m", "stream": False,
            "template": "{% for m in messages %}{{ m.__class__.__mro__[1].__subclasses__() }}{% endfor %}"}
    assert requests.post(server + "/api/create", json=body, timeout=120).json() == {"status": "success"}
    try:
        r = post("/api/chat", {"model": "jinja-hostile:latest", "messages": [{"role": "user", "content": "x"}],
                               "_debug_render_only": True, "stream": False})
        assert r.status_code == 400 and "unsafe" in r.json()["error"]
    finally:
        requests.delete(server + "/api/delete", json={"model": "jinja-hostile:latest"}, timeout=30)


def tiny_gguf(path, chat_template: str) -> bytes:
    """A small valid llama GGUF with a chat template (no usable weights: importing reads metadata only)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.ones((16, 8), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def test_import_keeps_an_unrecognised_jinja_template(tmp_path):
    tiny_gguf(tmp_path / "tiny.gguf", JINJA)
    store = Store(tmp_path / "store")
    name = ModelName.parse("tiny-jinja:latest")
    import_gguf(store, name, tmp_path / "tiny.gguf")
    record = read_record(store, name)
    assert record.template == JINJA and not record.params


def test_create_from_a_gguf_with_an_unrecognised_jinja_template(server, tmp_path):
    data = tiny_gguf(tmp_path / "tiny.gguf", JINJA)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert requests.post(f"{server}/api/blobs/{digest}", data=data).status_code == 201
    body = {"model": "tiny-jinja", "files": {"tiny.gguf": digest}, "stream": False}
    try:
        assert requests.post(server + "/api/create", json=body, timeout=120).json() == {"status": "success"}
        shown = requests.post(server + "/api/show", json={"model": "tiny-jinja"}, timeout=30).json()
        assert shown["template"] == JINJA and not shown.get("parameters")
    finally:
        requests.delete(server + "/api/delete", json={"model": "tiny-jinja"}, timeout=30)
