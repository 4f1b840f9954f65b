"""POST /api/push and /api/pull through a real server, against Debian's docker-registry and a hostile fake."""

from __future__ import annotations

import hashlib
import json
import uuid

import ollama
import pytest
import requests

from registry.manifest import MEDIA_CONFIG, MEDIA_MODEL, Layer, Manifest
from tests.registry.conftest import real_registry  # noqa: F401 - the session registry fixture
from tests.registry.fake_registry import FakeRegistry

MODEL = "smollm2:135m"
pytestmark = pytest.mark.slow


def manifest_path(models_dir, name: str):
    host, namespace, rest = name.split("/")
    model, tag = rest.split(":")
    return models_dir / "manifests" / host / namespace / model / tag


def test_push_delete_pull_round_trip(server, models_dir, real_registry):  # noqa: F811
    name = f"{real_registry.host}/test/smol:v1"
    client = ollama.Client(host=server)
    system = f"A prompt only this model has: {uuid.uuid4()}"
    assert client.create(name, from_=MODEL, system=system).status == "success"
    local = manifest_path(models_dir, name).read_bytes()
    system_blob = models_dir / "blobs" / ("sha256-" + hashlib.sha256(system.encode()).hexdigest())

    pushed = list(client.push(name, insecure=True, stream=True))
    texts = [p.status for p in pushed]
    assert texts[0] == "retrieving manifest" and texts[-2:] == ["pushing manifest", "success"]
    model_lines = [p for p in pushed if p.digest and p.total > 90_000_000]
    assert model_lines and model_lines[-1].completed == model_lines[-1].total
    assert '"PUT /v2/test/smol/manifests/v1' in real_registry.log()

    client.delete(name)
    assert not system_blob.exists()
    pulled = list(client.pull(name, insecure=True, stream=True))
    assert [p.status for p in pulled][0] == "pulling manifest" and pulled[-1].status == "success"
    assert "verifying sha256 digest" in [p.status for p in pulled]
    assert manifest_path(models_dir, name).read_bytes() == local            # registry bytes kept verbatim
    assert system_blob.read_text() == system
    assert client.pull(name, insecure=True).status == "success"           # stream false: the last line only
    client.delete(name)


def test_progress_lines_omit_zero_fields(server, real_registry):  # noqa: F811
    name = f"{real_registry.host}/test/lines:v1"
    requests.post(server + "/api/copy", json={"source": MODEL, "destination": name}).raise_for_status()
    try:
        r = requests.post(server + "/api/push", json={"name": name, "insecure": True}, stream=True, timeout=300)
        lines = [json.loads(line) for line in r.iter_lines()]
    finally:
        requests.delete(server + "/api/delete", json={"name": name})
    assert lines[0] == {"status": "retrieving manifest"} and lines[-1] == {"status": "success"}
    first_blob = next(x for x in lines if "digest" in x)
    assert set(first_blob) == {"status", "digest", "total"}               # completed 0 is left out
    assert all(set(x) <= {"status", "digest", "total", "completed"} for x in lines)


def test_pull_of_a_missing_model(server, real_registry):  # noqa: F811
    name = f"{real_registry.host}/test/absent:v1"
    r = requests.post(server + "/api/pull", json={"model": name, "insecure": True, "stream": False})
    assert r.status_code == 404 and "file does not exist" in r.json()["error"]
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        list(ollama.Client(host=server).pull(name, insecure=True, stream=True))


def test_hostile_manifest_digest_writes_nothing(server, models_dir, tmp_path):
    """CVE-2024-37032: a layer digest that is a path must never reach the filesystem."""
    target = tmp_path / "pwned"
    config = b'{"model_format":"gguf"}'
    evil = Layer(MEDIA_MODEL, "sha256:" + "0" * 64, 4)
    raw = Manifest(Layer(MEDIA_CONFIG, "sha256:" + hashlib.sha256(config).hexdigest(), len(config)),
                   (evil,)).to_bytes().replace(b"0" * 64, f"../../../../../../..{target}".encode())
    before = sorted(p.name for p in (models_dir / "blobs").iterdir())
    with FakeRegistry() as reg:
        reg.manifests[("library/evil", "latest")] = raw
        r = requests.post(server + "/api/pull", json={"model": f"{reg.host}/library/evil", "insecure": True,
                                                       "stream": False})
        blob_requests = [s for s in reg.seen if "/blobs/" in s.path]
    assert r.status_code == 502 and "invalid digest" in r.json()["error"]
    assert blob_requests == [] and not target.exists()
    assert sorted(p.name for p in (models_dir / "blobs").iterdir()) == before


@pytest.mark.parametrize("path, body, status, message", [
    ("/api/pull", {}, 400, "invalid model name"),
    ("/api/pull", {"model": "../../etc/passwd"}, 400, "invalid model name"),
    ("/api/push", {}, 400, "model is required"),
    ("/api/push", {"name": "a//b"}, 400, "invalid model name"),
    ("/api/push", {"model": "127.0.0.1:9/x/never-made:v1", "insecure": True}, 404,
     "model '127.0.0.1:9/x/never-made:v1' not found"),
])
def test_transfer_errors(post, path, body, status, message):
    r = post(path, body)
    assert (r.status_code, r.json()["error"]) == (status, message)
