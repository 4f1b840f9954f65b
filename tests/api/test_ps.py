"""GET /api/ps on the shared server: Ollama's fields, expiry times with their zone, and the official client."""

from __future__ import annotations

import time
from datetime import datetime

import ollama
import requests

from registry import manifest as mf
from registry.names import ModelName
from registry.store import Store

NAME = "smollm2:135m"


def _ps_entry(server: str) -> dict:
    models = requests.get(server + "/api/ps", timeout=10).json()["models"]
    return next(m for m in models if m["name"] == NAME)


def _load(post, keep_alive, num_ctx: int = 512) -> None:
    body = {"model": NAME, "prompt": "Hi", "stream": False, "keep_alive": keep_alive,
            "options": {"num_predict": 1, "num_ctx": num_ctx}}
    assert post("/api/generate", body).status_code == 200


def test_ps_describes_the_loaded_model_as_tags_does(server, post, models_dir, smollm2_path):
    _load(post, -1, num_ctx=512)
    entry = _ps_entry(server)
    tags = next(m for m in requests.get(server + "/api/tags", timeout=10).json()["models"] if m["name"] == NAME)
    assert list(entry) == ["name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length"]
    assert entry["model"] == NAME and entry["digest"] == tags["digest"] and entry["details"] == tags["details"]
    manifest, _ = Store(models_dir).read_manifest(ModelName.parse(NAME))
    assert entry["size"] == manifest.layer(mf.MEDIA_MODEL).size == smollm2_path.stat().st_size
    assert entry["size_vram"] == 0 and entry["context_length"] == 512


def test_expires_at_is_local_time_with_offset(server, post):
    _load(post, -1)
    forever = datetime.fromisoformat(_ps_entry(server)["expires_at"])
    assert forever.tzinfo is not None and 2300 < forever.year < 2330        # Go's MaxInt64 nanoseconds from now
    _load(post, "10m", num_ctx=1024)
    entry = _ps_entry(server)
    expires = datetime.fromisoformat(entry["expires_at"])
    assert expires.utcoffset() == datetime.now().astimezone().utcoffset()
    assert abs(expires.timestamp() - (time.time() + 600)) < 30
    assert entry["context_length"] == 1024
    _load(post, -1)                                                         # the session server's own setting


def test_official_client_reads_ps(server, post):
    _load(post, -1)
    listed = ollama.Client(host=server).ps()
    model = next(m for m in listed.models if m.model == NAME)
    assert model.size_vram == 0 and model.expires_at.year > 2300 and model.details.family == "llama"
    assert model.context_length == 512
