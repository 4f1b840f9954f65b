"""/api/embed and /api/embeddings through a real server, and importing the PyPI-shipped models.

The server's store holds smollm2:135m and all-minilm, both put there by import_pypi_model (all-minilm converted
from its sentence-transformers folder). all-minilm is checked against sentence-transformers' own vectors.
"""

from __future__ import annotations

import argparse
import threading

import numpy as np
import ollama
import pytest
import requests
from waitress import create_server

from api.app import create_app
from api.commands import imports
from api.config import Settings
from api.embedding import TOO_LONG, is_embedding_model, require_completion
from api.errors import APIError
from api.model_imports import ensure_models, import_pypi_model
from api.model_pool import read_record
from registry.names import ModelName
from registry.store import Store
from tests.conftest import oracle

CASES = oracle("all-minilm-l6-v2", "embeddings.json")
MINILM, SMOLLM2 = "all-minilm", "smollm2:135m"
LANGCHAIN_NULL_OPTIONS = {k: None for k in (      # what langchain-ollama's OllamaEmbeddings sends by default
    "mirostat", "mirostat_eta", "mirostat_tau", "num_ctx", "num_gpu", "num_thread", "repeat_penalty",
    "temperature", "stop", "tfs_z", "top_k", "top_p", "repeat_last_n")}


@pytest.fixture(scope="module")
def cache_dir(smollm2_path, all_minilm_dir):
    assert smollm2_path.parent == all_minilm_dir.parent
    return smollm2_path.parent


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory, cache_dir):
    """(app, base URL) of a server whose store was filled by import_pypi_model."""
    root = tmp_path_factory.mktemp("embed-models")
    store = Store(root)
    for name in (SMOLLM2, MINILM):
        import_pypi_model(store, name, cache_dir)
    app = create_app(Settings(models_dir=root, default_model=None, keep_alive="-1"))
    srv = create_server(app, host="127.0.0.1", port=0, threads=8, channel_request_lookahead=1)
    threading.Thread(target=srv.run, daemon=True).start()
    yield app, f"http://127.0.0.1:{srv.effective_port}"
    srv.close()
    app.extensions["pollama"].pool.close()


@pytest.fixture(scope="module")
def url(embed_server):
    return embed_server[1]


@pytest.fixture(scope="module")
def client(url):
    return ollama.Client(host=url)


def post(url: str, path: str, body: dict) -> requests.Response:
    return requests.post(url + path, json=body, timeout=300)


def loaded_models(app) -> list[str]:
    return [entry.record.name.display for entry in app.extensions["pollama"].pool.loaded()]


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# -- /api/embed ------------------------------------------------------------------------------------------------

def test_embed_single_and_list_input_gives_unit_vectors(client):
    one = client.embed(model=MINILM, input="Hello world")
    many = client.embed(model=MINILM, input=["Hello world", "Why is the sky blue?"])
    assert one.model == MINILM and len(one.embeddings) == 1 and len(one.embeddings[0]) == 384
    assert len(many.embeddings) == 2
    assert np.allclose(np.linalg.norm(many.embeddings, axis=1), 1.0, atol=1e-5)
    assert np.allclose(one.embeddings[0], many.embeddings[0], atol=1e-6)        # batching changes nothing
    assert cosines(*many.embeddings) < 0.9
    assert many.prompt_eval_count == len(CASES[0]["ids"]) + len(CASES[4]["ids"])   # [CLS] and [SEP] counted
    assert many.total_duration >= many.load_duration >= 0


def test_every_oracle_text_in_one_batched_request_matches_sentence_transformers(embed_server, client):
    app, _ = embed_server
    client.embed(model=MINILM, input="")                          # load-only: the model is now in the pool
    bert = next(e for e in app.extensions["pollama"].pool.loaded() if e.record.name.display.startswith(MINILM))
    calls = []
    real_embed = bert.model.model.embed

    def counting_embed(batch):
        calls.append(len(batch))
        return real_embed(batch)

    bert.model.model.embed = counting_embed                       # observe, still the real engine
    try:
        got = client.embed(model=MINILM, input=[c["text"] for c in CASES])
    finally:
        del bert.model.model.embed
    assert calls == [len(CASES)]                                   # the engine saw the whole request as one batch
    assert cosines(got.embeddings, [c["normalized"] for c in CASES]).min() >= 0.999
    assert got.prompt_eval_count == sum(len(c["ids"]) for c in CASES)


def test_one_request_with_many_inputs_equals_one_request_per_input(client):
    """Batching (one engine call, checked above) changes no vector; its speed is benchmarks' business."""
    texts = [c["text"] for c in CASES[:12]]
    batched = client.embed(model=MINILM, input=texts).embeddings
    separate = [client.embed(model=MINILM, input=t).embeddings[0] for t in texts]
    assert np.allclose(batched, separate, atol=1e-5)


def test_dimensions_cuts_and_renormalizes(client):
    full = np.array(client.embed(model=MINILM, input="Why is the sky blue?").embeddings[0])
    short = np.array(client.embed(model=MINILM, input="Why is the sky blue?", dimensions=64).embeddings[0])
    assert short.shape == (64,)
    assert np.linalg.norm(short) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)
    wider = client.embed(model=MINILM, input="Why is the sky blue?", dimensions=4096).embeddings[0]
    assert len(wider) == 384


def test_truncate_false_refuses_an_input_longer_than_the_context(url):
    too_long = "ab " * 600                                         # 602 tokens > all-minilm's 512 positions
    r = post(url, "/api/embed", {"model": MINILM, "input": too_long, "truncate": False})
    assert r.status_code == 400 and r.json() == {"error": TOO_LONG}
    r = post(url, "/api/embed", {"model": MINILM, "input": "ab " * 20, "truncate": False,
                                 "options": {"num_ctx": 12}})
    assert r.status_code == 400 and r.json() == {"error": TOO_LONG}
    r = post(url, "/api/embed", {"model": MINILM, "input": too_long})   # truncate defaults to true
    assert r.status_code == 200 and r.json()["prompt_eval_count"] == 512


def test_truncate_true_keeps_the_first_tokens_and_the_final_sep(client):
    cut = client.embed(model=MINILM, input="ab " * 50, options={"num_ctx": 12})   # [CLS] ab×10 [SEP]
    exact = client.embed(model=MINILM, input="ab " * 10)
    assert cut.prompt_eval_count == exact.prompt_eval_count == 12
    assert np.allclose(cut.embeddings[0], exact.embeddings[0], atol=1e-6)
    longer = client.embed(model=MINILM, input="ab " * 11)
    assert not np.allclose(cut.embeddings[0], longer.embeddings[0], atol=1e-4)


def test_langchain_null_options_and_old_client_fields_are_accepted(url):
    r = post(url, "/api/embed", {"model": MINILM, "input": ["Hello world"], "options": LANGCHAIN_NULL_OPTIONS,
                                 "keep_alive": None, "truncate": True, "dimensions": None})
    assert r.status_code == 200
    assert cosines(r.json()["embeddings"][0], CASES[0]["normalized"]) >= 0.999


@pytest.mark.parametrize("value", [5, [1, 2], ["ok", 3], {"text": "x"}, True, [["nested"]]])
def test_input_that_is_not_a_string_or_list_of_strings_is_400(url, value):
    r = post(url, "/api/embed", {"model": MINILM, "input": value})
    assert r.status_code == 400 and r.json() == {"error": "invalid input type"}


def test_bad_requests(url):
    assert post(url, "/api/embed", {"input": "x"}).json() == {"error": "model is required"}
    r = post(url, "/api/embed", {"model": "nope", "input": "x"})
    assert r.status_code == 404 and r.json() == {"error": "model 'nope' not found"}
    r = post(url, "/api/embed", {"model": MINILM, "input": "x", "dimensions": -1})
    assert r.status_code == 400
    r = post(url, "/api/embed", {"model": MINILM, "input": "x", "options": {"num_ctx": "big"}})
    assert r.status_code == 400 and "num_ctx" in r.json()["error"]
    r = post(url, "/api/embed", {"model": SMOLLM2, "input": ["fine", ""]})   # no BOS: "" has no tokens
    assert r.status_code == 400


def test_decoder_model_embeds_deterministically_by_mean_pooling(client):
    texts = ["The capital of France is Paris.", "Numba compiles Python to machine code."]
    first = np.array(client.embed(model=SMOLLM2, input=texts).embeddings)
    again = np.array(client.embed(model=SMOLLM2, input=texts).embeddings)
    alone = np.array(client.embed(model=SMOLLM2, input=texts[1]).embeddings[0])
    assert first.shape == (2, 576)
    assert np.array_equal(first, again)
    assert np.allclose(first[1], alone, atol=1e-6)                 # inputs of one batch never see each other
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert cosines(first[0], first[1]) < 0.99


def test_empty_input_only_loads_and_keep_alive_zero_unloads(embed_server, url):
    app, _ = embed_server
    post(url, "/api/generate", {"model": SMOLLM2, "keep_alive": 0})      # start unloaded
    assert not any(n.startswith("smollm2") for n in loaded_models(app))
    for empty in ("", []):
        r = post(url, "/api/embed", {"model": SMOLLM2, "input": empty})
        assert r.status_code == 200 and r.json() == {"model": SMOLLM2, "embeddings": []}
        assert "smollm2:135m" in loaded_models(app)
    r = post(url, "/api/embed", {"model": SMOLLM2, "input": "", "keep_alive": 0.0})   # as ollama-python sends 0
    assert r.json()["embeddings"] == [] and "smollm2:135m" not in loaded_models(app)
    r = post(url, "/api/embed", {"model": SMOLLM2, "input": "hello", "keep_alive": 0})
    assert len(r.json()["embeddings"]) == 1 and "smollm2:135m" not in loaded_models(app)
    r = post(url, "/api/embed", {"model": SMOLLM2, "input": "hello", "keep_alive": "1h"})
    assert "smollm2:135m" in loaded_models(app)


# -- /api/embeddings (legacy) ------------------------------------------------------------------------------------

def test_legacy_embeddings_are_the_unnormalized_mean_pooled_vectors(client):
    for case in CASES[:8] + CASES[-3:]:
        got = np.array(client.embeddings(model=MINILM, prompt=case["text"]).embedding)
        want = np.array(case["mean_pooled"])
        assert abs(np.linalg.norm(got) - np.linalg.norm(want)) < 2e-3 * np.linalg.norm(want)
        assert np.abs(got - want).max() < 5e-3, case["text"]
        assert cosines(got, want) >= 0.999
    assert abs(np.linalg.norm(got) - 1.0) > 0.05                  # really not normalized


def test_legacy_embeddings_load_only_and_errors(url):
    assert post(url, "/api/embeddings", {"model": MINILM, "prompt": ""}).json() == {"embedding": []}
    assert post(url, "/api/embeddings", {"prompt": "x"}).json() == {"error": "model is required"}
    r = post(url, "/api/embeddings", {"model": "nope", "prompt": "x"})
    assert r.status_code == 404 and r.json() == {"error": 'model "nope" not found, try pulling it first'}
    r = post(url, "/api/embeddings", {"model": MINILM, "prompt": "Hello world", "options": LANGCHAIN_NULL_OPTIONS})
    assert cosines(r.json()["embedding"], CASES[0]["mean_pooled"]) >= 0.999


# -- capabilities --------------------------------------------------------------------------------------------------

def test_embedding_model_reports_embedding_and_refuses_completion(embed_server, url):
    app, _ = embed_server
    store = app.extensions["pollama"].store
    minilm, smollm2 = (read_record(store, ModelName.parse(n)) for n in (MINILM, SMOLLM2))
    assert is_embedding_model(minilm) and not is_embedding_model(smollm2)
    with pytest.raises(APIError) as err:
        require_completion(minilm, MINILM, "chat")
    assert (err.value.status, err.value.message) == (400, '"all-minilm" does not support chat')
    require_completion(smollm2, SMOLLM2, "generate")
    assert post(url, "/api/show", {"model": MINILM}).json()["capabilities"] == ["embedding"]
    assert "completion" in post(url, "/api/show", {"model": SMOLLM2}).json()["capabilities"]


# -- importing ---------------------------------------------------------------------------------------------------

def test_import_command_and_serve_time_imports(tmp_path, monkeypatch, cache_dir, capsys):
    monkeypatch.setenv("POLLAMA_MODELS", str(tmp_path))
    monkeypatch.setenv("POLLAMA_CACHE", str(cache_dir))
    parser = argparse.ArgumentParser()
    imports.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["import", MINILM])
    assert args.handler(None, args) == 0
    assert capsys.readouterr().out.startswith(f"imported {MINILM} (")
    store = Store(tmp_path)
    assert [m.name.display for m in store.list_models()] == ["all-minilm:latest"]
    args = parser.parse_args(["import", "llama3:8b"])
    assert args.handler(None, args) == 1
    assert "no PyPI package provides 'llama3:8b'" in capsys.readouterr().err

    settings = Settings.from_env({"POLLAMA_IMPORT_MODELS": f" {MINILM}, {SMOLLM2} ,"})
    assert settings.import_models == (MINILM, SMOLLM2)
    assert ensure_models(store, settings.import_models, cache_dir) == [SMOLLM2]     # all-minilm was there
    assert ensure_models(store, settings.import_models, cache_dir) == []
    assert Settings.from_env({}).import_models == ()


@pytest.mark.slow
def test_gemma3_imports_with_its_template_and_generates_like_llama_cpp(embed_server, url, cache_dir):
    app, _ = embed_server
    import_pypi_model(app.extensions["pollama"].store, "gemma3:270m", cache_dir)
    show = post(url, "/api/show", {"model": "gemma3:270m"}).json()
    assert "<start_of_turn>" in show["template"] and "completion" in show["capabilities"]
    assert "<end_of_turn>" in show["parameters"]
    case = oracle("gemma3-270m", "logits.json")[5]                 # "1, 2, 3, 4, 5," → " 6, 7, 8, ..."
    r = post(url, "/api/generate", {"model": "gemma3:270m", "prompt": case["prompt"], "raw": True, "stream": False,
                                    "keep_alive": 0, "options": {"temperature": 0, "num_predict": 8}})
    body = r.json()
    assert r.status_code == 200, body
    want = post(url, "/api/detokenize", {"model": "gemma3:270m", "tokens": case["greedy"][:8]}).json()["content"]
    assert body["prompt_eval_count"] == len(case["ids"]) and body["eval_count"] == 8
    assert body["response"] == want and want.startswith(" 6, 7,")
