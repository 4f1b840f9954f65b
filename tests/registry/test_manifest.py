"""Manifest parsing/validation, digests, and Go-compatible JSON, checked against real Ollama bytes."""

from __future__ import annotations

import hashlib
import json

import pytest

from registry.errors import StoreError
from registry.manifest import (
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MANIFEST,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_TEMPLATE,
    InvalidDigest,
    InvalidManifest,
    Layer,
    Manifest,
    check_digest,
    go_json,
    normalize_digest,
)

# Verbatim bytes of `ollama pull gemma:2b` (registry output: compact, no trailing newline).
GEMMA_2B = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
    b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json",'
    b'"digest":"sha256:887433b89a901c156f7e6944442f3c9e57f3c55d6ed52042cbb7303aea994290","size":483},'
    b'"layers":[{"mediaType":"application/vnd.ollama.image.model",'
    b'"digest":"sha256:c1864a5eb19305c40519da12cc543519e48a0697ecd30e15d5ac228644957d12","size":1678447520},'
    b'{"mediaType":"application/vnd.ollama.image.license",'
    b'"digest":"sha256:097a36493f718248845233af1d3fefe7a303f864fae13bc31a3a9704229378ca","size":8433},'
    b'{"mediaType":"application/vnd.ollama.image.template",'
    b'"digest":"sha256:109037bec39c0becc8221222ae23557559bc594290945a2c4221ab4f303b8871","size":136},'
    b'{"mediaType":"application/vnd.ollama.image.params",'
    b'"digest":"sha256:22a838ceb7fb22755a3b0ae9b4eadde629d19be1f651f73efb8c6b4e2cd0eea0","size":84}]}'
)

# Verbatim bytes of `ollama pull llama3.2` (two license layers).
LLAMA32 = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
    b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json",'
    b'"digest":"sha256:34bb5ab01051a11372a91f95f3fbbc51173eed8e7f13ec395b9ae9b8bd0e242b","size":561},'
    b'"layers":[{"mediaType":"application/vnd.ollama.image.model",'
    b'"digest":"sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff","size":2019377376},'
    b'{"mediaType":"application/vnd.ollama.image.template",'
    b'"digest":"sha256:966de95ca8a62200913e3f8bfbf84c8494536f1b94b49166851e76644e966396","size":1429},'
    b'{"mediaType":"application/vnd.ollama.image.license",'
    b'"digest":"sha256:fcc5a6bec9daf9b561a68827b67ab6088e1dba9d1fa2a50d7bbcc8384e0a265d","size":7711},'
    b'{"mediaType":"application/vnd.ollama.image.license",'
    b'"digest":"sha256:a70ff7e570d97baaf4e62ac6e6ad9975e04caa6d900d3742d37698494479e0cd","size":6016},'
    b'{"mediaType":"application/vnd.ollama.image.params",'
    b'"digest":"sha256:56bb8bd477a519ffa694fc449c2413c6f0e1d3b1c88fa7e3c9d88d3ae49d4dcb","size":96}]}'
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_parse_real_ollama_manifest() -> None:
    m = Manifest.from_bytes(GEMMA_2B)
    assert m.schema_version == 2 and m.media_type == MEDIA_MANIFEST
    config_digest = "sha256:887433b89a901c156f7e6944442f3c9e57f3c55d6ed52042cbb7303aea994290"
    assert m.config == Layer(MEDIA_CONFIG, config_digest, 483)
    assert [x.media_type for x in m.layers] == [MEDIA_MODEL, MEDIA_LICENSE, MEDIA_TEMPLATE, MEDIA_PARAMS]
    assert m.layer(MEDIA_MODEL).size == 1678447520
    assert m.layer("application/vnd.ollama.image.system") is None
    assert m.total_size == 483 + 1678447520 + 8433 + 136 + 84
    assert len(m.digests()) == 5


def test_real_manifest_round_trips_to_go_encoder_bytes() -> None:
    """Ollama writes json.Encoder output: the registry bytes plus a trailing newline."""
    for raw in (GEMMA_2B, LLAMA32):
        assert Manifest.from_bytes(raw).to_bytes() == raw + b"\n"


def test_several_layers_of_one_type() -> None:
    m = Manifest.from_bytes(LLAMA32)
    assert [x.size for x in m.layers_of(MEDIA_LICENSE)] == [7711, 6016]
    assert m.layer(MEDIA_LICENSE).size == 7711


def test_from_and_name_fields_round_trip_in_ollama_order() -> None:
    raw = (b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
           b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"' + D1.encode()
           + b'","size":3},"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"'
           + D2.encode() + b'","size":9,"from":"llama3.2:latest","name":"model.embed_tokens.weight"}]}\n')
    m = Manifest.from_bytes(raw)
    assert m.layers[0].from_ == "llama3.2:latest" and m.layers[0].name == "model.embed_tokens.weight"
    assert m.to_bytes() == raw


def test_go_json_reproduces_real_ollama_params_blobs() -> None:
    """The params layers of llama3.2 and gemma:2b, re-encoded, hash to the registry's digests."""
    llama = go_json({"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}, sort_keys=True)
    assert len(llama) == 96
    assert sha256_hex(llama) == "56bb8bd477a519ffa694fc449c2413c6f0e1d3b1c88fa7e3c9d88d3ae49d4dcb"
    gemma = go_json({"stop": ["<start_of_turn>", "<end_of_turn>"], "repeat_penalty": 1.0}, sort_keys=True)
    assert sha256_hex(gemma) == "22a838ceb7fb22755a3b0ae9b4eadde629d19be1f651f73efb8c6b4e2cd0eea0"


@pytest.mark.parametrize(("value", "encoded"), [
    ("<a&b>", r'"\u003ca\u0026b\u003e"'),
    ("é ü 中", '"é ü 中"'),                        # non-ASCII stays UTF-8
    ("line\nsep\u2028", r'"line\nsep\u2028"'),
    ("\ud800", '"\ufffd"'),                        # invalid UTF-16 becomes U+FFFD, as in Go
    (1.0, "1"), (0.7, "0.7"), (-2.5, "-2.5"), (1e-05, "0.00001"), (1e-07, "1e-7"),
    (1.5e16, "15000000000000000"), (1e21, "1e+21"), (3, "3"), (True, "true"), (None, "null"),
    ({"b": 1, "a": [1, "x"]}, '{"b":1,"a":[1,"x"]}'),
])
def test_go_json_scalars(value: object, encoded: str) -> None:
    assert go_json(value) == (encoded + "\n").encode()


def test_go_json_sorts_map_keys_only_when_asked() -> None:
    assert go_json({"b": {"d": 1, "c": 2}, "a": 0}, sort_keys=True) == b'{"a":0,"b":{"c":2,"d":1}}\n'
    with pytest.raises(ValueError):
        go_json(float("nan"))


def test_check_digest_accepts_exactly_lowercase_sha256() -> None:
    assert check_digest(D1) == D1


@pytest.mark.parametrize("bad", [
    "", "sha256:", "sha256:" + "a" * 63, "sha256:" + "a" * 65, "sha256:" + "A" * 64, "sha256-" + "a" * 64,
    "sha256:" + "a" * 64 + "\n", " sha256:" + "a" * 64, "sha512:" + "a" * 128, "sha256:" + "g" * 64,
    "sha256:../../../../etc/ld.so.preload", "sha256:" + "a" * 60 + "/../", None, 5,
])
def test_check_digest_rejects(bad: object) -> None:
    with pytest.raises(InvalidDigest):
        check_digest(bad)  # type: ignore[arg-type]


def test_normalize_digest_accepts_the_blob_route_forms() -> None:
    assert normalize_digest("sha256-" + "AB" * 32) == "sha256:" + "ab" * 32
    assert normalize_digest("sha256:" + "ab" * 32) == "sha256:" + "ab" * 32
    with pytest.raises(InvalidDigest):
        normalize_digest("sha256:" + "ab" * 32 + "\n")


def _manifest(layers: object, config: object = None) -> bytes:
    cfg = {"mediaType": MEDIA_CONFIG, "digest": D1, "size": 1} if config is None else config
    obj = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": cfg, "layers": layers}
    return json.dumps(obj).encode()


def _layer(**overrides: object) -> dict[str, object]:
    return {"mediaType": MEDIA_MODEL, "digest": D2, "size": 10, **overrides}


@pytest.mark.parametrize("bad", [
    b"", b"not json", b"[]", b'"x"', b"null", b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000,
    b'{"schemaVersion":2,"layers":[]}',                                              # no config
    _manifest("nope"), _manifest({}), _manifest([1]), _manifest([_layer()], config={}),
    _manifest([_layer(digest="sha256:../../../../etc/ld.so.preload")]),             # CVE-2024-37032
    _manifest([_layer(digest="sha256:../../../../etc/ssh/ssh_host_ed25519_key")]),  # CVE-2026-7020
    _manifest([_layer(digest="sha256-" + "2" * 64)]), _manifest([_layer(digest=None)]),
    _manifest([_layer(size=-1)]), _manifest([_layer(size="10")]), _manifest([_layer(size=1.0)]),
    _manifest([_layer(size=True)]), _manifest([_layer(size=2**64)]), _manifest([_layer(mediaType=7)]),
    _manifest([_layer(**{"from": ["x"]})]),
    _manifest([_layer()]).replace(b'"size": 10', b'"size": NaN'),
    _manifest([_layer()]).replace(b'"schemaVersion": 2', b'"schemaVersion": "2"'),
    b'{"schemaVersion":2,"mediaType":"application/vnd.ollama.manifest.list.v2+json","manifests":[]}',
])
def test_malformed_manifests_raise_invalid_manifest(bad: bytes) -> None:
    with pytest.raises(InvalidManifest):
        Manifest.from_bytes(bad)


def test_invalid_manifest_is_a_value_error_and_store_error() -> None:
    assert issubclass(InvalidManifest, ValueError) and issubclass(InvalidManifest, StoreError)


def test_size_cap() -> None:
    raw = _manifest([_layer()] * 200)
    assert len(Manifest.from_bytes(raw).layers) == 200
    with pytest.raises(InvalidManifest, match="too large"):
        Manifest.from_bytes(raw, max_bytes=len(raw) - 1)


def test_null_layers_mean_no_layers() -> None:
    """Go decodes "layers":null as an empty slice; accept it rather than crash (CVE-2025-1975 shape)."""
    assert Manifest.from_bytes(_manifest(None)).layers == ()
