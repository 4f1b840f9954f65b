"""A real waitress server on a free loopback port, with smollm2:135m imported into a temporary store."""

from __future__ import annotations

import threading

import pytest
import requests
from waitress import create_server

from api.app import create_app
from api.config import Settings
from api.gguf_import import import_gguf
from registry.names import ModelName
from registry.store import Store


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, smollm2_path):
    root = tmp_path_factory.mktemp("models")
    import_gguf(Store(root), ModelName.parse("smollm2:135m"), smollm2_path)
    return root


@pytest.fixture(scope="session")
def server(models_dir):
    """Base URL of a running server; shared by every API test so the model is loaded once."""
    app = create_app(Settings(models_dir=models_dir, default_model=None, keep_alive="-1"))
    srv = create_server(app, host="127.0.0.1", port=0, threads=8, channel_request_lookahead=1)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}"
    srv.close()
    app.extensions["pollama"].pool.close()


@pytest.fixture
def post(server):
    def _post(path: str, body=None, **kwargs):
        return requests.post(server + path, json=body, timeout=120, **kwargs)
    return _post
