"""POST /api/create through a real server: both request forms, GGUF uploads, inheritance and path safety."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid

import gguf
import numpy as np
import ollama
import pytest
import requests

from api.create import SERVER_PATH_REFUSED
from registry import modelfile

MODEL = "smollm2:135m"
pytestmark = pytest.mark.slow
_OPENED: list[str] = []
_WATCHING: list[bool] = []


def _audit(event: str, args: tuple) -> None:
    if _WATCHING and event == "open" and isinstance(args[0], str | bytes):
        _OPENED.append(os.fsdecode(args[0]))


@pytest.fixture(scope="module")
def opened_files():
    """Every path the process (server threads included) opens while the test body runs."""
    sys.addaudithook(_audit)            # audit hooks cannot be removed; the list gates it

    def watch():
        _OPENED.clear()
        _WATCHING.append(True)
        return _OPENED
    yield watch
    _WATCHING.clear()


@pytest.fixture(scope="session")
def smollm2_digest(server, models_dir, smollm2_path):
    """The real model file uploaded once with the official client. Its blob is already in the store, so (quirk
    13) the server answers without storing it again: the blob file is the same inode afterwards."""
    expected = "sha256:" + hashlib.sha256(smollm2_path.read_bytes()).hexdigest()
    blob = models_dir / "blobs" / f"sha256-{expected[7:]}"
    inode = blob.stat().st_ino
    digest = ollama.Client(host=server).create_blob(smollm2_path)
    assert digest == expected and blob.stat().st_ino == inode
    return digest


@pytest.fixture(scope="module")
def chat_template(smollm2_path):
    from engine.gguf import GGUFFile

    with GGUFFile(smollm2_path) as f:
        return f.metadata["tokenizer.chat_template"]


def tiny_gguf(path, chat_template: str | None = None) -> bytes:
    """A small valid llama GGUF (no usable weights: create only reads its metadata)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_file_type(1)
    if chat_template:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.ones((16, 8), np.float16))
    writer.add_tensor("output_norm.weight", np.ones(8, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def upload(server, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert requests.post(f"{server}/api/blobs/{digest}", data=data).status_code in (200, 201)
    return digest


@pytest.fixture
def made(server):
    """Names a test creates; deleted afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        requests.delete(server + "/api/delete", json={"model": name}, timeout=30)


def statuses(server, body: dict) -> list[dict]:
    r = requests.post(server + "/api/create", json=body, stream=True, timeout=120)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.iter_lines()]


def test_modern_form_inherits_and_overrides(server, models_dir, made):
    made.append("create-modern")
    client = ollama.Client(host=server)
    lines = list(client.create("create-modern", from_=MODEL, system="You are a pirate.",
                               parameters={"temperature": 0.3, "num_ctx": 1024, "stop": ["END"]}, stream=True))
    texts = [x.status for x in lines]
    gguf_layer = next(x for x in json.loads((models_dir / "manifests/registry.ollama.ai/library/smollm2/135m")
                                            .read_bytes())["layers"] if x["mediaType"].endswith(".model"))
    assert f"using existing layer {gguf_layer['digest']}" in texts
    assert any(t.startswith("creating new layer sha256:") for t in texts)
    assert texts[-2:] == ["writing manifest", "success"]
    shown = client.show("create-modern")
    assert modelfile.parse(shown.modelfile).system == "You are a pirate."
    assert shown.template == client.show(MODEL).template
    assert shown.parameters.splitlines() == [f"{'num_ctx':<30} 1024", f"{'stop':<30} \"END\"",
                                             f"{'temperature':<30} 0.3"]
    assert shown.details.parameter_size == "135M"


def test_modelfile_from_an_uploaded_gguf(server, smollm2_digest, made):
    made.append("create-modelfile")
    text = (f"FROM @{smollm2_digest}\nPARAMETER num_ctx 512\nPARAMETER stop <end>\nPARAMETER stop \"<|im_end|>\"\n"
                 "SYSTEM \"\"\"You answer in French.\"\"\"\nMESSAGE user Bonjour\nMESSAGE assistant Salut !\n"
                 "LICENSE \"\"\"Apache 2.0\"\"\"\n")
    lines = statuses(server, {"name": "create-modelfile", "modelfile": text, "quantize": None})
    texts = [x["status"] for x in lines]
    assert texts[:2] == ["parsing GGUF", "using autodetected template chatml"]
    assert f"using existing layer {smollm2_digest}" in texts and texts[-1] == "success"
    shown = requests.post(server + "/api/show", json={"model": "create-modelfile"}).json()
    assert shown["system"] == "You answer in French." and shown["license"] == "Apache 2.0"
    assert shown["messages"] == [{"role": "user", "content": "Bonjour"}, {"role": "assistant", "content": "Salut !"}]
    assert "<|im_start|>" in shown["template"]
    assert shown["parameters"].splitlines() == [f"{'num_ctx':<30} 512", f"{'stop':<30} \"<end>\"",
                                                f"{'stop':<30} \"<|im_end|>\""]
    out = requests.post(server + "/api/chat", json={"model": "create-modelfile", "stream": False,
                                                    "messages": [{"role": "user", "content": "Merci"}],
                                                    "options": {"num_predict": 2}}).json()
    assert out["eval_count"] <= 2 and out["done"] is True


def test_files_form_with_a_fresh_gguf(server, tmp_path, chat_template, made):
    made.append("create-tiny")
    data = tiny_gguf(tmp_path / "tiny.gguf", chat_template)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert requests.post(f"{server}/api/blobs/{digest}", data=data).status_code == 201
    texts = [x["status"] for x in statuses(server, {"model": "create-tiny", "files": {"tiny.gguf": digest}})]
    assert "using autodetected template chatml" in texts and f"using existing layer {digest}" in texts
    shown = requests.post(server + "/api/show", json={"model": "create-tiny"}).json()
    assert shown["model_info"]["general.parameter_count"] == 16 * 8 + 8
    assert shown["model_info"]["llama.context_length"] == 256
    assert shown["details"]["parameter_size"] == "136" and shown["details"]["quantization_level"] == "F16"
    assert shown["parameters"].splitlines() == [f"{'stop':<30} \"<|im_start|>\"", f"{'stop':<30} \"<|im_end|>\""]


def test_modelfile_from_names_a_file_in_files(server, tmp_path, made):
    made.append("create-named")
    digest = upload(server, tiny_gguf(tmp_path / "t.gguf"))
    body = {"model": "create-named", "modelfile": "FROM ./t.gguf\nTEMPLATE {{ .Prompt }}",
            "files": {"./t.gguf": digest}}
    assert requests.post(server + "/api/create", json=body).status_code == 400       # names must be flat
    body["files"] = {"t.gguf": digest}
    body["modelfile"] = "FROM t.gguf\nTEMPLATE {{ .Prompt }}"
    assert statuses(server, body)[-1] == {"status": "success"}
    assert requests.post(server + "/api/show", json={"model": "create-named"}).json()["template"] == "{{ .Prompt }}"


def test_stream_false_answers_once_and_empty_means_inherited(server, made):
    """ollama-python 0.3 sends empty strings and nulls for unset fields: they must not blank inherited layers."""
    made += ["create-parent", "create-child"]
    body = {"model": "create-parent", "from": MODEL, "system": "Parent system.", "stream": False}
    assert requests.post(server + "/api/create", json=body).json() == {"status": "success"}
    body = {"model": "create-child", "from": "create-parent", "system": "", "template": "", "license": None,
            "parameters": {"temperature": None, "stop": None, "num_gpu": 1}, "quantize": None, "stream": False}
    r = requests.post(server + "/api/create", json=body)
    assert r.status_code == 200 and r.json() == {"status": "success"}
    shown = requests.post(server + "/api/show", json={"model": "create-child"}).json()
    assert shown["system"] == "Parent system." and "<|im_start|>" in shown["template"]
    assert shown["parameters"].splitlines() == [f"{'stop':<30} \"<|im_start|>\"", f"{'stop':<30} \"<|im_end|>\""]


def test_safetensors_folder_is_converted(server, all_minilm_dir, made):
    """A sentence-transformers folder as the Go CLI uploads it (relative names, one sub-folder) → a GGUF model."""
    made.append("create-minilm")
    files = {str(p.relative_to(all_minilm_dir)): upload(server, p.read_bytes())
             for p in sorted(all_minilm_dir.rglob("*")) if p.is_file() and not p.name.startswith(".")}
    assert "1_Pooling/config.json" in files
    lines = statuses(server, {"model": "create-minilm", "files": files, "quantize": "Q8_0"})
    texts = [x["status"] for x in lines]
    assert texts[:2] == ["converting model", "parsing GGUF"] and texts[-1] == "success"
    shown = requests.post(server + "/api/show", json={"model": "create-minilm"}).json()
    assert shown["capabilities"] == ["embedding"]
    assert shown["details"]["family"] == "bert" and shown["details"]["quantization_level"] == "Q8_0"
    assert shown["model_info"]["bert.pooling_type"] == 1 and shown["model_info"]["bert.block_count"] == 6


def test_malformed_gguf_is_refused_with_the_parser_message(server, made):
    made.append("create-bad")
    digest = upload(server, b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(200))
    r = requests.post(server + "/api/create", json={"model": "create-bad", "files": {"bad.gguf": digest}})
    assert r.status_code == 400 and "invalid GGUF file" in r.json()["error"]
    assert requests.post(server + "/api/show", json={"model": "create-bad"}).status_code == 404


@pytest.mark.parametrize("body, message", [
    ({"model": "c-x", "from": MODEL, "parameters": {"bogus": 1}}, "unknown parameter 'bogus'"),
    ({"model": "c-x", "modelfile": f"FROM {MODEL}\nPARAMETER bogus 1"}, "unknown parameter 'bogus'"),
    ({"model": "c-x", "modelfile": f"FROM {MODEL}\nPARAMETER num_ctx lots"}, "invalid int value [lots]"),
    ({"model": "c-x", "modelfile": f"FROM {MODEL}\nPARAMETER top_p 3"}, "option \"top_p\" out of range: 3.0"),
    ({"model": "c-x", "from": MODEL, "parameters": {"temperature": "hot"}}, "option \"temperature\" must be"),
    ({"model": "c-x", "from": MODEL, "template": "{{ .Prompt"}, "template error"),
    ({"model": "c-x", "from": MODEL, "quantize": "q4_K_M"}, "quantization is not supported yet"),
    ({"model": "c-x", "files": {"model.safetensors": "@"}}, "invalid digest format"),
    ({"model": "c-x"}, "neither 'from' or 'files' was specified"),
    ({"model": "../c", "from": MODEL}, "invalid model name"),
    ({"from": MODEL}, "invalid model name"),
    ({"model": "c-x", "modelfile": "PARAMETER num_ctx 1"}, "no FROM line"),
    ({"model": "c-x", "files": {"m.gguf": ""}}, "invalid digest format"),
    ({"model": "c-x", "files": {"m.gguf": "sha256:sha256:" + "a" * 64}}, "invalid digest format"),
    ({"model": "c-x", "files": {"m.gguf": "sha256:" + "b" * 64}}, "not found"),
    ({"model": "c-x", "files": {"/etc/passwd": "sha256:" + "b" * 64}}, "file path must be relative"),
    ({"model": "c-x", "files": {"..": "sha256:" + "b" * 64}}, "file path must be relative"),
    ({"model": "c-x", "files": {"a/../../b.gguf": "sha256:" + "b" * 64}}, "file path must be relative"),
    ({"model": "c-x", "files": {"a\\b.gguf": "sha256:" + "b" * 64}}, "file path must be relative"),
    ({"model": "c-x", "files": {"model.safetensors": "sha256:" + "c" * 64}}, "not found"),
])
def test_bad_create_requests_are_400_before_any_output(server, body, message):
    r = requests.post(server + "/api/create", json=body)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_from_an_unknown_model_is_404(server):
    r = requests.post(server + "/api/create", json={"model": "c-x", "from": "nope:1b"})
    assert (r.status_code, r.json()["error"]) == (404, "model 'nope:1b' not found")


def test_server_paths_are_refused_alike_and_never_opened(server, opened_files):
    missing = f"/tmp/pollama-canary-{uuid.uuid4().hex}"
    bodies = [{"name": "c-x", "path": "/etc/passwd"}, {"name": "c-x", "path": missing},
              {"name": "c-x", "path": "/dev/random"}, {"name": "c-x", "path": "~/Modelfile"}]
    bodies += [{"name": "c-x", "modelfile": f"FROM {p}"} for p in ("/etc/passwd", missing, "../../etc/passwd",
                                                                   "./model.gguf", "~/m.gguf", "C:\\m.gguf")]
    bodies += [{"name": "c-x", "modelfile": f"FROM {MODEL}\nADAPTER {p}"} for p in ("/etc/passwd", missing)]
    opened = opened_files()
    answers = [requests.post(server + "/api/create", json=b) for b in bodies]
    assert {(r.status_code, r.json()["error"]) for r in answers} == {(400, SERVER_PATH_REFUSED)}
    assert not [p for p in opened if p.startswith(("/etc/passwd", missing, "/dev/random"))]


def test_seed_example_with_both_path_and_modelfile_ignores_path(server, models_dir, opened_files, made):
    """The seed doc's own request sends both; the Modelfile wins and the path is never read."""
    made.append("create-seed")
    opened = opened_files()
    body = {"name": "create-seed", "path": "/etc/passwd", "modelfile": f"FROM {MODEL}", "stream": False}
    assert requests.post(server + "/api/create", json=body).json() == {"status": "success"}
    assert "/etc/passwd" not in opened
    assert any(p.startswith(str(models_dir)) for p in opened)        # the hook does see the server's own files


def test_safetensors_problems(server, models_dir, made):
    made.append("c-st")
    digest = upload(server, b"not really safetensors")
    body = {"model": "c-st", "files": {"model.safetensors": digest}, "quantize": "q4_K_M"}
    r = requests.post(server + "/api/create", json=body)
    assert r.status_code == 400 and r.json()["error"].startswith("unsupported quantization type q4_K_M")
    del body["quantize"]
    r = requests.post(server + "/api/create", json={**body, "stream": False})
    assert (r.status_code, r.json()["error"]) == (400, "converting model: config.json is missing")
    lines = statuses(server, body)                      # streamed: the failure arrives as the last line
    assert lines == [{"status": "converting model"}, {"error": "converting model: config.json is missing"}]
    assert not list(models_dir.glob(".tmp-*"))         # the conversion folder is gone
