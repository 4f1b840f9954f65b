"""HEAD and POST /api/blobs/:digest through a real server."""

from __future__ import annotations

import hashlib
import http.client
import json
import os

import pytest
import requests

pytestmark = pytest.mark.slow


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def store_files(models_dir) -> set[str]:
    return {p.name for p in (models_dir / "blobs").iterdir()}


def test_upload_then_head_then_upload_again(server, models_dir):
    data = os.urandom(3 << 20)
    url = f"{server}/api/blobs/{digest_of(data)}"
    assert requests.head(url).status_code == 404
    assert requests.post(url, data=data).status_code == 201
    blob = models_dir / "blobs" / f"sha256-{hashlib.sha256(data).hexdigest()}"
    assert blob.read_bytes() == data
    inode = blob.stat().st_ino
    assert requests.head(url).status_code == 200
    assert requests.post(url, data=data).status_code == 200          # present: not stored twice
    assert blob.stat().st_ino == inode


def test_chunked_upload_streams_into_the_store(server, models_dir):
    pieces = [os.urandom(1 << 20) for _ in range(5)]
    whole = b"".join(pieces)
    r = requests.post(f"{server}/api/blobs/{digest_of(whole)}", data=iter(pieces))   # Transfer-Encoding: chunked
    assert r.status_code == 201
    assert (models_dir / "blobs" / f"sha256-{hashlib.sha256(whole).hexdigest()}").read_bytes() == whole


def test_dash_and_upper_case_digests_are_accepted(server):
    data = b"blob spelled another way"
    hex_digest = hashlib.sha256(data).hexdigest()
    assert requests.post(f"{server}/api/blobs/sha256-{hex_digest.upper()}", data=data).status_code == 201
    assert requests.head(f"{server}/api/blobs/sha256:{hex_digest}").status_code == 200


def test_digest_mismatch_leaves_nothing(server, models_dir):
    before = store_files(models_dir)
    data, claimed = os.urandom(1 << 20), digest_of(b"something else")
    r = requests.post(f"{server}/api/blobs/{claimed}", data=data)
    assert r.status_code == 400
    assert r.json()["error"] == f"digest mismatch, expected \"{claimed}\", got \"{digest_of(data)}\""
    assert store_files(models_dir) == before


@pytest.mark.parametrize("digest", [
    "sha256:sha256:" + "a" * 64,            # ollama-python 0.4.0-0.4.5
    "sha256:" + "a" * 63,
    "sha256:" + "g" * 64,
    "md5:" + "a" * 64,
    "sha256:..%2F..%2Fetc%2Fpasswd",
    "sha256:../../../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
])
def test_malformed_digests_are_refused(server, models_dir, digest):
    """Sent byte for byte (no client-side dot-segment removal): the route sees the traversal and refuses it."""
    before = store_files(models_dir)
    assert raw_request(server, "HEAD", f"/api/blobs/{digest}")[0] == 400
    status, body = raw_request(server, "POST", f"/api/blobs/{digest}", b"x")
    assert (status, json.loads(body)) == (400, {"error": "invalid digest format"})
    assert store_files(models_dir) == before


def raw_request(server: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_get_is_not_a_blob_method(server):
    assert requests.get(f"{server}/api/blobs/sha256:{'a' * 64}").status_code == 405
