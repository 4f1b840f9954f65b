"""Host, Origin and API-key guards (api.guard) through a real waitress server: rebinding and cross-site requests
are refused before anything runs, real clients pass."""

from __future__ import annotations

import threading

import ollama
import pytest
import requests
from waitress import create_server

from api import cli
from api.app import create_app
from api.config import Settings
from api.guard import host_allowed, origin_allowed

API_KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """A second server (empty store) with an API key and one extra allowed origin pattern."""
    settings = Settings(models_dir=tmp_path_factory.mktemp("keyed"), default_model=None, api_key=API_KEY,
                        origins=("https://*.example.com",))
    app = create_app(settings)
    srv = create_server(app, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=srv.run, daemon=True).start()
    yield f"http://127.0.0.1:{srv.effective_port}"
    srv.close()
    app.extensions["pollama"].pool.close()


def _names(server: str) -> list[str]:
    return [m["name"] for m in requests.get(server + "/api/tags", timeout=10).json()["models"]]


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:11434", "localhost.attacker.example",
                                  "127.0.0.1.nip.io", "evil.local", "evil.internal"])
def test_rebinding_host_is_refused_before_the_route_runs(server, host):
    before = _names(server)
    answer = requests.delete(server + "/api/delete", json={"model": "smollm2:135m"}, headers={"Host": host},
                             timeout=10)
    assert answer.status_code == 403 and answer.json() == {"error": "host not allowed"}
    assert _names(server) == before and "smollm2:135m" in before


@pytest.mark.parametrize("host", ["localhost", "localhost:11434", "127.0.0.1", "127.0.0.2:8080", "[::1]:11434",
                                  "app.localhost", "192.168.1.20:11434"])
def test_local_hosts_and_addresses_pass(server, host):
    answer = requests.get(server + "/api/version", headers={"Host": host}, timeout=10)
    assert answer.status_code == 200 and "version" in answer.json()


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost.evil.example",
                                    "http://127.0.0.1.evil.example:80", "https://localhost:99999999"])
def test_cross_site_request_is_refused_and_nothing_happens(server, origin):
    before = _names(server)
    answer = requests.post(server + "/api/copy", json={"source": "smollm2:135m", "destination": "stolen"},
                           headers={"Origin": origin, "Content-Type": "text/plain"}, timeout=10)
    assert answer.status_code == 403 and answer.json() == {"error": "origin not allowed"}
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert _names(server) == before


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://127.0.0.1", "http://0.0.0.0:8080",
                                    "http://[::1]:5173", "vscode-webview://1234abcd", "app://obsidian.md"])
def test_local_origins_get_cors_headers(server, origin):
    answer = requests.get(server + "/api/tags", headers={"Origin": origin}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == origin
    preflight = requests.options(server + "/api/chat", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"}, timeout=10)
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]


def test_preflight_from_a_foreign_origin_is_refused(server):
    answer = requests.options(server + "/api/pull", headers={"Origin": "https://evil.example",
                                                             "Access-Control-Request-Method": "POST"}, timeout=10)
    assert answer.status_code == 403 and "Access-Control-Allow-Origin" not in answer.headers


def test_api_key_is_required_except_for_liveness(keyed_server):
    assert requests.get(keyed_server + "/", timeout=10).status_code == 200
    assert requests.get(keyed_server + "/api/version", timeout=10).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY},
                    {"Authorization": f"Basic {API_KEY}"}):
        answer = requests.get(keyed_server + "/api/tags", headers=headers, timeout=10)
        assert answer.status_code == 401 and "API key" in answer.json()["error"]
    answer = requests.get(keyed_server + "/api/tags", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"models": []}


def test_ollama_client_with_the_key_works_and_without_fails(keyed_server):
    assert ollama.Client(host=keyed_server, headers={"Authorization": f"Bearer {API_KEY}"}).list().models == []
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=keyed_server).list()
    assert refused.value.status_code == 401


def test_configured_origin_patterns_are_allowed(keyed_server):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    ok = requests.get(keyed_server + "/api/ps", headers={**auth, "Origin": "https://chat.example.com"}, timeout=10)
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == "https://chat.example.com"
    refused = requests.get(keyed_server + "/api/ps", headers={**auth, "Origin": "https://example.com.evil.io"},
                           timeout=10)
    assert refused.status_code == 403


def test_serving_off_loopback_without_a_key_is_refused(tmp_path, capsys):
    code = cli.main(["serve", "--host", "0.0.0.0:0", "--models", str(tmp_path), "--no-default-model"])
    assert code == 1 and "POLLAMA_API_KEY" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())                     # refused before touching the store


def test_settings_read_origins_and_key_from_the_environment():
    s = Settings.from_env({"POLLAMA_ORIGINS": " https://a.example , chrome-extension://*,", "POLLAMA_API_KEY": " k "})
    assert s.origins == ("https://a.example", "chrome-extension://*") and s.api_key == "k"
    assert Settings.from_env({}).api_key is None and Settings.from_env({}).origins == ()


def test_guards_on_edge_cases():
    assert not host_allowed("localhost.evil.example") and not host_allowed("[::1].evil")
    assert host_allowed("LOCALHOST:80") and host_allowed("::1") and host_allowed("")
    assert not origin_allowed("http://localhost:3000/path") and not origin_allowed("javascript://localhost")
    assert origin_allowed("tauri://localhost") and origin_allowed("x://y", ("x://*",))
