"""The model store on a real temporary directory: blobs, manifests, GC, crash and path safety."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import pypi_models
from registry.errors import (
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    InvalidDigest,
    InvalidManifest,
    ModelNotFound,
    StoreError,
)
from registry.manifest import (
    MEDIA_ADAPTER,
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
)
from registry.names import ModelName
from registry.store import Store

OLD = time.time() - 2 * 3600


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def files(root: Path) -> set[str]:
    """Every non-directory entry under ``root``, relative."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def name(s: str) -> ModelName:
    return ModelName.parse(s)


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


def make_model(store: Store, model_name: str, weights: bytes, template: str) -> Manifest:
    """A minimal model the way a pull leaves it: blobs first, then the manifest."""
    layers = (Layer(MEDIA_MODEL, store.write_blob_bytes(weights), len(weights)),
              Layer(MEDIA_TEMPLATE, store.write_blob_bytes(template.encode()), len(template.encode())))
    config = b'{"model_format":"gguf","model_family":"llama"}'
    manifest = Manifest(Layer(MEDIA_CONFIG, store.write_blob_bytes(config), len(config)), layers)
    store.write_manifest(name(model_name), manifest)
    return manifest


# ---- blobs ---------------------------------------------------------------------------------------------

def test_write_blob_verified(store: Store) -> None:
    data = b"hello world"
    digest, size = store.write_blob([b"hello ", b"world"], expected_digest=sha(data))
    assert (digest, size) == (sha(data), len(data))
    path = store.blob_path(digest)
    assert path == store.root / "blobs" / f"sha256-{hashlib.sha256(data).hexdigest()}"
    assert path.read_bytes() == data and (path.stat().st_mode & 0o777) == 0o644
    assert store.has_blob(digest)
    assert files(store.root) == {f"blobs/{path.name}"}           # no temp file left behind


def test_write_blob_mismatch_stores_nothing(store: Store) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch) as err:
        store.write_blob([b"payload"], expected_digest=wrong)
    assert str(err.value) == f'digest mismatch, expected "{wrong}", got "{sha(b"payload")}"'
    assert files(store.root) == set()
    assert not store.has_blob(sha(b"payload")) and not store.has_blob(wrong)


def test_crash_inside_chunk_iterator_leaves_no_partial_blob(store: Store) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a" * 1000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.write_blob(chunks(), expected_digest=sha(b"a" * 2000))
    assert files(store.root) == set()


def test_size_cap(store: Store) -> None:
    with pytest.raises(BlobTooLarge):
        store.write_blob([b"x" * 600, b"x" * 600], max_bytes=1000)
    assert files(store.root) == set()
    assert store.write_blob([b"x" * 1000], max_bytes=1000)[1] == 1000


def test_existing_blob_is_not_stored_twice_but_a_truncated_one_is_repaired(store: Store) -> None:
    digest = store.write_blob_bytes(b"content")
    path = store.blob_path(digest)
    os.utime(path, (OLD, OLD))
    inode = path.stat().st_ino
    assert store.write_blob([b"content"]) == (digest, 7)
    assert path.stat().st_ino == inode and path.stat().st_mtime > OLD   # same file, mtime refreshed
    path.write_bytes(b"cont")                                            # e.g. a crash in another writer
    store.write_blob([b"content"], expected_digest=digest)
    assert path.read_bytes() == b"content"


@pytest.mark.parametrize("bad", ["sha256:../../etc/passwd", "sha256-" + "a" * 64, "sha256:" + "A" * 64, ""])
def test_blob_path_validates_digest(store: Store, bad: str) -> None:
    with pytest.raises(InvalidDigest):
        store.blob_path(bad)
    with pytest.raises(InvalidDigest):
        store.write_blob([b"x"], expected_digest=bad)
    assert files(store.root) == set()


def test_read_blob(store: Store) -> None:
    digest = store.write_blob_bytes(b"{{ .Prompt }}")
    assert store.read_blob(digest) == b"{{ .Prompt }}"
    with pytest.raises(BlobTooLarge):
        store.read_blob(digest, max_bytes=5)
    with pytest.raises(BlobNotFound):
        store.read_blob("sha256:" + "9" * 64)


def test_import_real_gguf_matches_pinned_sha256(store: Store, smollm2_path: Path) -> None:
    digest, size = store.import_file(smollm2_path)
    assert digest == "sha256:" + pypi_models.MODELS["smollm2:135m"].sha256
    assert size == smollm2_path.stat().st_size
    assert store.blob_path(digest).read_bytes()[:4] == b"GGUF"


def test_import_refuses_fifo(store: Store, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StoreError):
        store.import_file(fifo)
    assert files(store.root) == set()


# ---- manifests -----------------------------------------------------------------------------------------

def test_manifest_layout_and_host_port_directory(store: Store) -> None:
    make_model(store, "localhost:5000/team/m:q4", b"GGUF weights", "{{ .Prompt }}")
    path = store.root / "manifests" / "localhost:5000" / "team" / "m" / "q4"
    assert store.manifest_path(name("localhost:5000/team/m:q4")) == path
    assert path.is_file()
    gemma = store.root / "manifests/registry.ollama.ai/library/gemma/2b"
    assert store.manifest_path(name("gemma:2b")) == gemma


def test_write_manifest_refuses_missing_or_wrong_size_blobs(store: Store) -> None:
    config = store.write_blob_bytes(b"{}")
    missing = Manifest(Layer(MEDIA_CONFIG, config, 2), (Layer(MEDIA_MODEL, "sha256:" + "7" * 64, 5),))
    with pytest.raises(BlobNotFound):
        store.write_manifest(name("m"), missing)
    wrong_size = Manifest(Layer(MEDIA_CONFIG, config, 3), ())
    with pytest.raises(InvalidManifest):
        store.write_manifest(name("m"), wrong_size)
    assert not (store.root / "manifests").exists()


def test_traversal_digest_in_pulled_manifest_creates_nothing(store: Store) -> None:
    evil = (b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:' + b"1" * 64 + b'","size":1},'
            b'"layers":[{"mediaType":"application/vnd.ollama.image.model",'
            b'"digest":"sha256:../../../../etc/ld.so.preload","size":5}]}')
    with pytest.raises(InvalidManifest):
        store.write_manifest(name("attacker/rogue:x"), evil)
    assert files(store.root) == set()


def test_reads_a_store_laid_out_by_ollama(store: Store) -> None:
    """A pulled model: blobs plus the registry's manifest bytes, verbatim (no trailing newline)."""
    weights, params = b"GGUF" + b"\0" * 60, b'{"stop":["\\u003cend_of_turn\\u003e"]}\n'
    blobs = store.root / "blobs"
    blobs.mkdir(parents=True)
    layers = []
    config = b'{"model_family":"gemma"}'
    for media, data in ((MEDIA_CONFIG, config), (MEDIA_MODEL, weights), (MEDIA_PARAMS, params)):
        (blobs / f"sha256-{hashlib.sha256(data).hexdigest()}").write_bytes(data)
        layers.append({"mediaType": media, "digest": sha(data), "size": len(data)})
    raw = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                      "config": layers[0], "layers": layers[1:]}, separators=(",", ":")).encode()
    path = store.root / "manifests/registry.ollama.ai/library/gemma/2b"
    path.parent.mkdir(parents=True)
    path.write_bytes(raw)

    [entry] = store.list_models()
    assert entry.name.display == "gemma:2b"
    assert entry.digest == hashlib.sha256(raw).hexdigest()
    assert entry.size == sum(x["size"] for x in layers)
    assert entry.modified.tzinfo is not None and abs(entry.modified.timestamp() - path.stat().st_mtime) < 1e-3
    manifest, data = store.read_manifest(name("gemma:2b"))
    assert data == raw and manifest.layer(MEDIA_PARAMS).digest == sha(params)
    assert store.read_blob(manifest.layer(MEDIA_PARAMS).digest) == params


def test_write_manifest_is_verbatim_and_returns_its_digest(store: Store) -> None:
    m = make_model(store, "a:1", b"weights", "t")
    raw = m.to_bytes()
    store.write_manifest(name("b:1"), raw)
    assert store.read_manifest(name("b:1"))[1] == raw
    assert store.write_manifest(name("c:1"), raw) == hashlib.sha256(raw).hexdigest()


def test_case_insensitive_resolve_keeps_first_spelling(store: Store) -> None:
    make_model(store, "Team/MyModel:Q4", b"w1", "t1")
    found = store.resolve(name("team/mymodel:q4"))
    assert found is not None and found.parts == ("registry.ollama.ai", "Team", "MyModel", "Q4")
    assert store.resolve(name("team/mymodel:q5")) is None
    assert store.resolve(name("other")) is None
    assert store.read_manifest(name("TEAM/MYMODEL:q4"))[0].layer(MEDIA_MODEL).digest == sha(b"w1")
    make_model(store, "team/MYMODEL:q4", b"w2", "t2")                  # replaces, same directory
    assert [e.name.display for e in store.list_models()] == ["Team/MyModel:Q4"]
    assert store.read_manifest(name("team/mymodel:q4"))[0].layer(MEDIA_MODEL).digest == sha(b"w2")
    assert not store.has_blob(sha(b"w1"))                               # the replaced model's blobs went


def test_read_missing_model(store: Store) -> None:
    with pytest.raises(ModelNotFound, match="model 'nope:latest' not found"):
        store.read_manifest(name("nope"))


def test_list_models_digest_size_and_order(store: Store) -> None:
    a = make_model(store, "a:1", b"weights-a", "ta")
    make_model(store, "b:1", b"weights-b", "tb")
    os.utime(store.manifest_path(name("a:1")), (OLD, OLD))
    entries = store.list_models()
    assert [e.name.display for e in entries] == ["b:1", "a:1"]          # newest first
    for e in entries:
        raw = store.manifest_path(e.name).read_bytes()
        assert e.digest == hashlib.sha256(raw).hexdigest() and len(e.digest) == 64
    assert entries[1].size == a.config.size + len(b"weights-a") + len(b"ta")
    assert entries[1].manifest == a


def test_list_skips_corrupt_manifest(store: Store) -> None:
    make_model(store, "good", b"w", "t")
    bad = store.manifest_path(name("bad"))
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"")                                                # truncated by a crash elsewhere
    assert [e.name.display for e in store.list_models()] == ["good:latest"]
    with pytest.raises(InvalidManifest):
        store.read_manifest(name("bad"))


def test_failed_manifest_rename_keeps_old_version(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_model(store, "m", b"w1", "t1")
    before = store.read_manifest(name("m"))[1]
    t2 = store.write_blob_bytes(b"t2")
    new = Manifest(old.config, (old.layers[0], Layer(MEDIA_TEMPLATE, t2, 2)))

    def power_loss(src: str, dst: str) -> None:
        raise OSError("simulated power loss")

    monkeypatch.setattr(os, "replace", power_loss)
    with pytest.raises(OSError):
        store.write_manifest(name("m"), new)
    monkeypatch.undo()
    assert store.read_manifest(name("m"))[1] == before
    assert not [f for f in files(store.root) if ".tmp-" in f]
    store.write_manifest(name("m"), new)
    assert store.read_manifest(name("m"))[0] == new


def test_symlinked_manifest_outside_blobs_is_refused(store: Store, tmp_path: Path) -> None:
    raw = Manifest(Layer(MEDIA_CONFIG, store.write_blob_bytes(b"{}"), 2), ()).to_bytes()
    outside = tmp_path / "secret.json"
    lookalike = tmp_path / f"sha256-{hashlib.sha256(raw).hexdigest()}"  # blob-like name, wrong directory
    for i, target in enumerate((outside, lookalike)):
        target.write_bytes(raw)
        link = store.manifest_path(name(f"evil{i}"))
        link.parent.mkdir(parents=True)
        link.symlink_to(target)
        with pytest.raises(InvalidManifest):
            store.read_manifest(name(f"evil{i}"))
    assert store.list_models() == []


# ---- copy / delete / prune -------------------------------------------------------------------------------

def test_copy_shares_blobs(store: Store) -> None:
    make_model(store, "src:1", b"w", "t")
    blobs_before = files(store.root / "blobs")
    store.copy(name("src:1"), name("user/dst:2"))
    assert store.read_manifest(name("user/dst:2"))[1] == store.read_manifest(name("src:1"))[1]
    assert files(store.root / "blobs") == blobs_before
    with pytest.raises(ModelNotFound):
        store.copy(name("missing"), name("x"))


def test_delete_keeps_shared_blobs(store: Store) -> None:
    a = make_model(store, "a:1", b"shared weights", "template a")
    b = make_model(store, "user/b:1", b"shared weights", "template b")
    shared = sha(b"shared weights")
    store.delete(name("A:1"))
    assert store.has_blob(shared) and store.has_blob(sha(b"template b"))
    assert not store.has_blob(sha(b"template a"))
    assert store.has_blob(a.config.digest)                              # same config bytes: shared too
    assert not (store.root / "manifests/registry.ollama.ai/library").exists()   # empty dirs pruned
    store.delete(name("user/b:1"))
    assert not store.has_blob(shared) and not store.has_blob(b.config.digest)
    assert files(store.root) == set()
    with pytest.raises(ModelNotFound):
        store.delete(name("a:1"))


def test_delete_keeps_blobs_when_another_manifest_is_corrupt(store: Store) -> None:
    make_model(store, "a", b"w", "t")
    corrupt = store.manifest_path(name("corrupt"))
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b'{"schemaVersion":2,')
    store.delete(name("a"))
    assert store.resolve(name("a")) is None
    assert store.has_blob(sha(b"w"))                # it might be the corrupt manifest's only reference


def test_prune(store: Store) -> None:
    make_model(store, "keep", b"kept weights", "t")
    orphan_old = store.write_blob_bytes(b"orphan old")
    orphan_new = store.write_blob_bytes(b"orphan new")                  # e.g. uploaded for a pending create
    os.utime(store.blob_path(orphan_old), (OLD, OLD))
    for blob in (store.root / "blobs").iterdir():
        if blob.name != store.blob_path(orphan_new).name:
            os.utime(blob, (OLD, OLD))
    stale_tmp = store.root / "blobs" / ".tmp-dead"
    fresh_tmp = store.root / "blobs" / ".tmp-live"
    stale_manifest_tmp = store.manifest_path(name("keep")).parent / ".tmp-dead"
    for p in (stale_tmp, fresh_tmp, stale_manifest_tmp):
        p.write_bytes(b"partial")
    os.utime(stale_tmp, (OLD, OLD))
    os.utime(stale_manifest_tmp, (OLD, OLD))

    removed = store.prune()
    assert sorted(removed) == sorted([".tmp-dead", ".tmp-dead", store.blob_path(orphan_old).name])
    assert store.has_blob(orphan_new) and fresh_tmp.exists()
    assert store.read_manifest(name("keep"))        # all referenced blobs intact
    assert all(store.has_blob(d) for d in store.read_manifest(name("keep"))[0].digests())
    assert sorted(store.prune(grace_seconds=0)) == sorted([".tmp-live", store.blob_path(orphan_new).name])
    assert not store.has_blob(orphan_new) and not fresh_tmp.exists()


def test_prune_removes_no_blob_while_a_manifest_is_corrupt(store: Store) -> None:
    orphan = store.write_blob_bytes(b"orphan")
    corrupt = store.manifest_path(name("corrupt"))
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"\x00garbage")
    assert store.prune(grace_seconds=0) == []
    assert store.has_blob(orphan)


# ---- create_model ------------------------------------------------------------------------------------------

LLAMA32_STOP = {"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}


def test_create_model_layer_order_and_config(store: Store) -> None:
    model = store.write_blob_bytes(b"GGUF model")
    adapter = store.write_blob_bytes(b"GGUF adapter")
    projector = Layer(MEDIA_PROJECTOR, store.write_blob_bytes(b"GGUF mmproj"), 11)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    config = {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
              "model_type": "135M", "file_type": "Q4_1", "architecture": "amd64", "os": "linux"}
    digest = store.create_model(
        name("mine:v1"), model_blob=model, config=config, template="{{ .Prompt }}", system="Be brief.",
        params=LLAMA32_STOP, license=["MIT", "Apache-2.0"], messages=messages, adapters=[adapter],
        extra_layers=[projector])

    manifest, raw = store.read_manifest(name("mine:v1"))
    assert digest == hashlib.sha256(raw).hexdigest() and raw == manifest.to_bytes()
    assert [x.media_type for x in manifest.layers] == [
        MEDIA_MODEL, MEDIA_PROJECTOR, MEDIA_ADAPTER, MEDIA_LICENSE, MEDIA_LICENSE, MEDIA_TEMPLATE,
        MEDIA_SYSTEM, MEDIA_PARAMS, MEDIA_MESSAGES]
    assert manifest.layers[0] == Layer(MEDIA_MODEL, model, len(b"GGUF model"))
    read = store.read_blob
    assert [read(x.digest) for x in manifest.layers_of(MEDIA_LICENSE)] == [b"MIT", b"Apache-2.0"]
    assert read(manifest.layer(MEDIA_TEMPLATE).digest) == b"{{ .Prompt }}"
    assert read(manifest.layer(MEDIA_SYSTEM).digest) == b"Be brief."
    # Same bytes, same digest as the params layer of Ollama's llama3.2.
    assert manifest.layer(MEDIA_PARAMS).digest == \
        "sha256:56bb8bd477a519ffa694fc449c2413c6f0e1d3b1c88fa7e3c9d88d3ae49d4dcb"
    assert json.loads(read(manifest.layer(MEDIA_MESSAGES).digest)) == messages
    cfg_bytes = read(manifest.config.digest)
    assert manifest.config.media_type == MEDIA_CONFIG and manifest.config.size == len(cfg_bytes)
    assert cfg_bytes.endswith(b"}\n") and b" " not in cfg_bytes
    cfg = json.loads(cfg_bytes)
    assert list(cfg) == [*config, "rootfs"]                             # struct order kept, rootfs last
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [x.digest for x in manifest.layers]}
    assert [e.name.display for e in store.list_models()] == ["mine:v1"]


def test_create_model_minimal_and_missing_blob(store: Store) -> None:
    model = store.write_blob_bytes(b"GGUF")
    store.create_model(name("bare"), model_blob=model, config={}, template="", system=None, params={},
                       license="", messages=[])
    manifest, _ = store.read_manifest(name("bare"))
    assert [x.media_type for x in manifest.layers] == [MEDIA_MODEL]
    with pytest.raises(BlobNotFound):
        store.create_model(name("ghost"), model_blob="sha256:" + "5" * 64, config={})
    assert store.resolve(name("ghost")) is None


# ---- newest Ollama's manifests-v2 layout (links into blobs/) ------------------------------------------

def test_reads_and_protects_ollama_v2_links(store: Store) -> None:
    weights = store.write_blob_bytes(b"v2 weights")
    config = store.write_blob_bytes(b"{}")
    raw = Manifest(Layer(MEDIA_CONFIG, config, 2), (Layer(MEDIA_MODEL, weights, 10),)).to_bytes()
    manifest_blob = store.write_blob_bytes(raw)
    link = store.root / "manifests-v2/ollama.com/library/qwen/1b"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(store.blob_path(manifest_blob), link.parent))
    for blob in (store.root / "blobs").iterdir():
        os.utime(blob, (OLD, OLD))

    [entry] = store.list_models()
    assert entry.name.display == "qwen:1b" and entry.digest == hashlib.sha256(raw).hexdigest()
    assert store.resolve(name("QWEN:1B")) == name("qwen:1b")
    assert store.prune() == []                      # the manifest blob and its layers are referenced
    store.delete(name("qwen:1b"))
    assert not os.path.lexists(link)
    assert files(store.root / "blobs") == set()


def test_writing_a_name_drops_its_shadowing_v2_link(store: Store) -> None:
    raw = Manifest(Layer(MEDIA_CONFIG, store.write_blob_bytes(b"{}"), 2), ()).to_bytes()
    manifest_blob = store.write_blob_bytes(raw)
    link = store.root / "manifests-v2/ollama.com/library/q/1b"
    link.parent.mkdir(parents=True)
    link.symlink_to(store.blob_path(manifest_blob))
    make_model(store, "q:1b", b"ours", "t")
    assert not os.path.lexists(link) and not store.has_blob(manifest_blob)
    assert store.read_manifest(name("q:1b"))[0].layer(MEDIA_MODEL).digest == sha(b"ours")


def test_v2_link_with_tampered_blob_is_refused(store: Store) -> None:
    raw = Manifest(Layer(MEDIA_CONFIG, store.write_blob_bytes(b"{}"), 2), ()).to_bytes()
    blob = store.blob_path(store.write_blob_bytes(raw))
    link = store.root / "manifests-v2/ollama.com/library/q/1b"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    blob.chmod(0o644)
    blob.write_bytes(raw.replace(b"2", b"3", 1))
    with pytest.raises(InvalidManifest):
        store.read_manifest(name("q:1b"))
