"""Request bodies at the edge (api.schemas.read_body): lone surrogates, through the function and a real server."""

from __future__ import annotations

import json

import pytest
import requests
from flask import Flask

from api.schemas import read_body


def body_of(raw: bytes) -> dict:
    with Flask(__name__).test_request_context(data=raw, method="POST"):
        return read_body()


def test_lone_surrogates_become_replacement_characters_and_pairs_stay():
    body = body_of(rb'{"a": "x\ud800y", "\udc00k": ["\ud83d\ude00", {"n": ["\uDBFF", 1, null]}], "b": 1.5}')
    assert body == {"a": "x\ufffdy", "\ufffdk": ["\U0001F600", {"n": ["\ufffd", 1, None]}], "b": 1.5}
    assert json.dumps(body, ensure_ascii=False).encode("utf-8")          # every string can be UTF-8 now


def test_bytes_that_are_not_utf8_become_replacement_characters():
    assert body_of(b'{"a": "x\xed\xa0\x80y", "b": "\xff"}') == {"a": "x\ufffd\ufffd\ufffdy", "b": "\ufffd"}
    assert body_of(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}                  # a UTF-8 byte order mark is skipped


def test_deep_bodies_with_a_surrogate_are_walked_without_recursion():
    depth = 900                                   # deeper than a recursive walk could go after json.loads
    raw = b'{"a": ' + b"[" * depth + rb'"\ud800"' + b"]" * depth + b"}"
    node = body_of(raw)["a"]
    for _ in range(depth - 1):
        node = node[0]
    assert node == ["\ufffd"]


def test_bodies_without_escapes_are_returned_as_parsed():
    assert body_of('{"a": "ü\\n", "b": [true]}'.encode()) == {"a": "ü\n", "b": [True]}


@pytest.mark.parametrize("path, method, body, status", [
    ("/api/delete", "delete", {"model": "\ud800"}, 400),
    ("/api/copy", "post", {"source": "\ud800", "destination": "x:latest"}, 400),
    ("/api/show", "post", {"model": "smollm2:135m\ud800"}, 400),
])
def test_lone_surrogates_in_names_are_client_errors(server, path, method, body, status):
    for data in (json.dumps(body).encode(),                             # the surrogate as the escape \ud800
                 json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")):   # as 3 raw bytes
        r = getattr(requests, method)(server + path, data=data, timeout=60)
        assert r.status_code == status and "error" in r.json()


def test_a_lone_surrogate_in_a_created_system_prompt_is_stored_as_a_replacement_character(server):
    body = {"model": "surrogate-test", "from": "smollm2:135m", "system": "be \ud800 brief", "stream": False}
    assert requests.post(server + "/api/create", data=json.dumps(body), timeout=60).json() == {"status": "success"}
    shown = requests.post(server + "/api/show", json={"model": "surrogate-test"}, timeout=60).json()
    assert shown["system"] == "be \ufffd brief"
