"""A real pollama server for the CLI tests (waitress on a free loopback port, a temporary store holding smollm2:135m
and a short-answer variant of it), and `pollama` run as a subprocess with POLLAMA_HOST pointing at that server.

The store is this folder's own (the tests create, copy and delete models), so it is not the one tests/api uses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from waitress import create_server

from api.app import create_app
from api.config import Settings
from api.gguf_import import import_gguf
from registry.names import ModelName
from registry.store import Store
from tests.registry.conftest import real_registry  # noqa: F401  (the registry fixture, used by the transfer tests)

SHORT = "short:latest"        # smollm2 answering greedily in at most SHORT_TOKENS tokens: quick and repeatable
SHORT_TOKENS = 16
PROMPT = "Why is the sky blue?"
CLI_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def cli_models_dir(tmp_path_factory, smollm2_path) -> Path:
    root = tmp_path_factory.mktemp("cli-models")
    store = Store(root)
    import_gguf(store, ModelName.parse("smollm2:135m"), smollm2_path)
    import_gguf(store, ModelName.parse(SHORT), smollm2_path, params={"num_predict": SHORT_TOKENS, "temperature": 0.0})
    return root


@pytest.fixture(scope="session")
def cli_server(cli_models_dir) -> str:
    """The server's base URL; models stay loaded (keep_alive -1) so each CLI call pays no load time."""
    app = create_app(Settings(models_dir=cli_models_dir, default_model=None, keep_alive="-1"))
    srv = create_server(app, host="127.0.0.1", port=0, threads=8, channel_request_lookahead=1)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}"
    srv.close()
    app.extensions["pollama"].pool.close()


@pytest.fixture(scope="session")
def cli_env(cli_server, tmp_path_factory) -> dict[str, str]:
    """The environment a CLI subprocess gets: our server, and a scratch HOME for the chat history."""
    home = tmp_path_factory.mktemp("home")
    return {**os.environ, "POLLAMA_HOST": cli_server, "HOME": str(home), "PYTHONIOENCODING": "utf-8"}


@pytest.fixture(scope="session")
def pollama(cli_env):
    """pollama(*args, stdin=None, cwd=None, env=None) -> CompletedProcess with text stdout/stderr."""
    def run(*args: str, stdin: str | None = None, cwd: Path | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "api", *args], input=stdin,
                              stdin=subprocess.DEVNULL if stdin is None else None, capture_output=True,
                              text=True, encoding="utf-8", cwd=cwd, env={**cli_env, **(env or {})},
                              timeout=CLI_TIMEOUT_S)
    return run


@pytest.fixture(scope="session")
def api(cli_server):
    """Direct calls to the server, to compare what the CLI printed with what the API answers."""
    def call(method: str, path: str, body: dict | None = None) -> requests.Response:
        return requests.request(method, cli_server + path, json=body, timeout=CLI_TIMEOUT_S)
    return call


ROW = re.compile(r"^(\S+)\s{4,}([0-9a-f]{12})\s{4,}(\d+(?:\.\d)? [KMGT]?B)\s{4,}(.+)$")


def rows(stdout: str) -> dict[str, tuple[str, str, str]]:
    """NAME -> (ID, SIZE, MODIFIED) from `pollama list` output, checking the header and each row's form."""
    lines = stdout.splitlines()
    assert re.fullmatch(r"NAME\s{4,}ID\s{4,}SIZE\s{4,}MODIFIED", lines[0])
    out = {}
    for line in lines[1:]:
        m = ROW.match(line)
        assert m, line
        out[m[1]] = m.groups()[1:]
    return out


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    """Failure shown the way a person should see it: exit 1, one "Error: …" line on stderr, no traceback."""
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def answer(api, prompt: str, **extra) -> str:
    """What /api/generate answers (not streamed) for ``prompt`` to SHORT: the text the CLI must print."""
    body = {"model": SHORT, "prompt": prompt, "stream": False, **extra}
    return api("POST", "/api/generate", body).json()["response"]
