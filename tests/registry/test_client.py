"""RegistryClient against a real Docker Distribution 2.8 registry (push, pull, mount, Basic auth) and against
an in-test fake registry for the faults a real one will not produce."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from registry.auth import parse_challenge
from registry.client import Progress, RegistryClient, RegistryError, RetryPolicy
from registry.manifest import MEDIA_CONFIG, MEDIA_MANIFEST, MEDIA_MODEL, MEDIA_TEMPLATE, Layer, Manifest
from registry.names import ModelName
from registry.store import Store
from registry.transfer import Downloads, partial_paths, plan_parts
from tests.registry.conftest import PASSWORD, USER, RealRegistry
from tests.registry.fake_registry import TOKEN, FakeRegistry

FAST_RETRY = RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05)
PARTS = 4
MIN_PART = 128 << 10
PULL_TAIL = ["verifying sha256 digest", "writing manifest", "removing any unused layers", "success"]


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def client_for(store: Store, downloads: Downloads | None = None, **kw) -> RegistryClient:
    opts = {"parts": PARTS, "min_part_bytes": MIN_PART, "chunk_bytes": 1 << 20, "retry": FAST_RETRY,
            "progress_interval_s": 0.02, "timeout_s": 5.0, "downloads": downloads or Downloads(), **kw}
    return RegistryClient(store, **opts)


def statuses(events: list[Progress]) -> list[str]:
    """Status lines with consecutive repeats collapsed."""
    out: list[str] = []
    for e in events:
        if not out or out[-1] != e.status:
            out.append(e.status)
    return out


def local_model(root: Path, name: ModelName, gguf: bytes) -> Store:
    """A small installed model: fake GGUF bytes, template, params and config blobs."""
    store = Store(root)
    model_digest, _ = store.write_blob([gguf])
    config = {"model_format": "gguf", "model_family": "llama"}
    store.create_model(name, model_blob=model_digest, config=config,
                       template="{{ .Prompt }}", params={"stop": ["</s>"], "temperature": 0.5})
    return store


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
def gguf() -> bytes:
    return b"GGUF" + os.urandom((3 << 20) - 4)


@pytest.fixture
def fake():
    with FakeRegistry() as reg:
        yield reg


def publish(reg: FakeRegistry, big: bytes, *, declared: int | None = None,
            serve: bytes | None = None) -> bytes:
    """Put a model (big blob, template, config) on the fake as library/tiny:latest; returns manifest bytes.
    ``declared`` overrides the big layer's size in the manifest, ``serve`` the bytes served for it."""
    template, config = b"{{ .Prompt }}", b'{"model_format":"gguf"}'
    layers = [Layer(MEDIA_MODEL, digest_of(big), len(big) if declared is None else declared),
              Layer(MEDIA_TEMPLATE, digest_of(template), len(template))]
    raw = Manifest(Layer(MEDIA_CONFIG, digest_of(config), len(config)), tuple(layers)).to_bytes()
    reg.blobs.update({digest_of(big): big if serve is None else serve, digest_of(template): template,
                      digest_of(config): config})
    reg.manifests[("library/tiny", "latest")] = raw
    return raw


def fake_name(reg: FakeRegistry) -> ModelName:
    return ModelName.parse(f"{reg.host}/library/tiny:latest")


# ---- real registry ---------------------------------------------------------------------------------------

def test_push_delete_pull_round_trip(real_registry: RealRegistry, tmp_path: Path, gguf: bytes) -> None:
    name = ModelName.parse(f"{real_registry.host}/library/tiny:latest")
    store = local_model(tmp_path / "models", name, gguf)
    manifest, raw = store.read_manifest(name)
    client = client_for(store)

    pushed = list(client.push(name, insecure=True))
    blob_prefixes = [f"pushing {layer.digest[7:19]}" for layer in (*manifest.layers, manifest.config)]
    assert statuses(pushed) == ["retrieving manifest", *blob_prefixes, "pushing manifest", "success"]
    big = [e for e in pushed if e.digest == digest_of(gguf)]
    assert [e.completed for e in big] == [0, 1 << 20, 2 << 20, 3 << 20]     # one line per 1 MiB PATCH
    assert all(e.total == len(gguf) for e in big)
    assert real_registry.log().count('"PATCH /v2/library/tiny/blobs/uploads/') >= 3

    store.delete(name)
    assert not any(store.has_blob(d) for d in manifest.digests())
    pulled = list(client.pull(name, insecure=True))

    assert statuses(pulled) == ["pulling manifest", *(s.replace("pushing", "pulling") for s in blob_prefixes),
                                *PULL_TAIL]
    assert store.read_manifest(name)[1] == raw                  # the registry's bytes, verbatim
    for digest in manifest.digests():
        assert digest_of(store.blob_path(digest).read_bytes()) == digest
    assert stored_files(store.blobs_dir) == sorted(f"sha256-{d[7:]}" for d in manifest.digests())
    assert real_registry.log().count(f'"GET /v2/library/tiny/blobs/{digest_of(gguf)} HTTP/1.1" 206') == PARTS


def test_repush_skips_present_blobs_and_mounts_from_another_repo(real_registry: RealRegistry,
                                                                 tmp_path: Path) -> None:
    data = b"GGUF" + os.urandom(600 << 10)
    source = ModelName.parse(f"{real_registry.host}/library/base:latest")
    store = local_model(tmp_path / "models", source, data)
    client = client_for(store)
    list(client.push(source, insecure=True))
    again = list(client.push(source, insecure=True))            # every HEAD answers 200: nothing uploaded
    assert [e.completed for e in again if e.digest == digest_of(data)] == [0, len(data)]

    manifest, _ = store.read_manifest(source)
    model = manifest.layers[0]
    derived = Manifest(manifest.config, (Layer(model.media_type, model.digest, model.size,
                                               from_=f"{real_registry.host}/library/base:latest"),
                                         *manifest.layers[1:]))
    target = ModelName.parse(f"{real_registry.host}/other/copy:v1")
    store.write_manifest(target, derived)
    assert statuses(list(client.push(target, insecure=True)))[-1] == "success"

    log = real_registry.log()
    mount = f"mount=sha256%3A{model.digest[7:]}&from=library%2Fbase"
    assert f'"POST /v2/other/copy/blobs/uploads/?{mount} HTTP/1.1" 201' in log
    # HEAD is per repository, so the small blobs are uploaded again (one PATCH each); the big one is not
    assert log.count('"PATCH /v2/other/copy/') == len(derived.digests()) - 1

    fresh = Store(tmp_path / "other")
    list(client_for(fresh).pull(target, insecure=True))
    assert fresh.read_manifest(target)[0] == derived


def test_missing_remote_model_is_a_404(real_registry: RealRegistry, tmp_path: Path) -> None:
    name = ModelName.parse(f"{real_registry.host}/library/nothing-here:latest")
    with pytest.raises(RegistryError, match="file does not exist") as info:
        list(client_for(Store(tmp_path)).pull(name, insecure=True))
    assert info.value.status == 404


def test_basic_auth_registry(basic_auth_registry: RealRegistry, tmp_path: Path) -> None:
    host = basic_auth_registry.host
    name = ModelName.parse(f"{host}/library/secret:latest")
    store = local_model(tmp_path / "models", name, b"GGUF" + os.urandom(300 << 10))

    with pytest.raises(RegistryError, match="requires credentials") as anonymous:
        list(client_for(store).push(name, insecure=True))
    with pytest.raises(RegistryError, match=f"rejected the credentials for user '{USER}'") as wrong:
        list(client_for(store, credentials={host: (USER, "wrong")}).push(name, insecure=True))
    assert anonymous.value.status == wrong.value.status == 401

    good = {host: (USER, PASSWORD)}
    assert list(client_for(store, credentials=good).push(name, insecure=True))[-1].status == "success"
    fresh = Store(tmp_path / "fresh")
    assert list(client_for(fresh, credentials=good).pull(name, insecure=True))[-1].status == "success"
    assert fresh.read_manifest(name)[1] == store.read_manifest(name)[1]


# ---- fake registry: transfers ----------------------------------------------------------------------------

def test_pull_uses_parallel_ranges_and_skips_present_blobs(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(1 << 20)
    raw = publish(fake, big)
    store = Store(tmp_path)
    events = list(client_for(store).pull(fake_name(fake), insecure=True))

    ranges = sorted(s.byte_range() for s in fake.blob_gets(digest_of(big)))
    assert ranges == [(i * (256 << 10), (i + 1) * (256 << 10) - 1) for i in range(PARTS)]
    progress = [e.completed for e in events if e.digest == digest_of(big)]
    assert progress == sorted(progress) and progress[-1] == len(big)
    assert store.read_manifest(fake_name(fake))[1] == raw

    before = len(fake.seen)
    again = list(client_for(store).pull(fake_name(fake), insecure=True))
    assert [s.path for s in fake.seen[before:]] == ["/v2/library/tiny/manifests/latest"]
    assert [(e.completed, e.total) for e in again if e.digest == digest_of(big)] == [(len(big), len(big))]


def test_interrupted_pull_resumes_without_refetching(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(2 << 20)
    publish(fake, big)
    fake.faults.throttle_s = 0.005
    store, downloads = Store(tmp_path), Downloads()
    first = client_for(store, downloads).pull(fake_name(fake), insecure=True)
    reported = 0
    for event in first:
        if event.digest == digest_of(big) and event.completed > 0:
            reported = event.completed
            break
    first.close()                                   # the only follower leaves: the download stops
    assert 0 < reported < len(big)
    served_before = len(fake.blob_gets(digest_of(big)))

    events = list(client_for(store, downloads).pull(fake_name(fake), insecure=True))
    assert events[-1].status == "success"
    resumed = fake.blob_gets(digest_of(big))[served_before:]
    refetched = sum(last - first + 1 for first, last in (s.byte_range() for s in resumed))
    assert refetched <= len(big) - reported          # bytes written before the stop were not asked for again
    assert digest_of(store.blob_path(digest_of(big)).read_bytes()) == digest_of(big)
    assert not any(p.exists() for p in partial_paths(store.blob_path(digest_of(big))))


def test_dropped_connection_resumes_inside_the_part(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(1 << 20)
    publish(fake, big)
    fake.faults.drops, fake.faults.drop_after = 1, 64 << 10
    store = Store(tmp_path)
    assert list(client_for(store).pull(fake_name(fake), insecure=True))[-1].status == "success"
    starts = sorted(s.byte_range()[0] for s in fake.blob_gets(digest_of(big)))
    part_starts = [i * (256 << 10) for i in range(PARTS)]
    resumed = [s for s in starts if s not in part_starts]
    assert len(starts) == PARTS + 1 and len(resumed) == 1
    assert resumed[0] - (64 << 10) in part_starts     # continued exactly where the cut-off response ended
    assert store.has_blob(digest_of(big))


def test_stalled_transfer_times_out_and_retries(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(512 << 10)
    publish(fake, big)
    fake.faults.stalls, fake.faults.drop_after, fake.faults.stall_s = 1, 32 << 10, 2.0
    store = Store(tmp_path)
    events = list(client_for(store, timeout_s=0.3).pull(fake_name(fake), insecure=True))
    assert events[-1].status == "success"
    assert len(fake.blob_gets(digest_of(big))) == PARTS + 1
    assert store.has_blob(digest_of(big))


def _pull_in_thread(client: RegistryClient, name: ModelName, out: list, until=lambda event: False):
    """Pull on a thread, appending events (or the exception) to ``out``; stop early once ``until(event)``."""
    def run() -> None:
        events = client.pull(name, insecure=True)
        try:
            for event in events:
                out.append(event)
                if until(event):
                    return
        except Exception as exc:     # surfaced by the assertions in the test
            out.append(exc)
        finally:
            events.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_concurrent_pulls_share_one_download(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(2 << 20)
    publish(fake, big)
    fake.faults.throttle_s = 0.004
    downloads, results = Downloads(), ([], [])
    threads = [_pull_in_thread(client_for(Store(tmp_path), downloads), fake_name(fake), out)
               for out in results]
    for t in threads:
        t.join(30)
    for out in results:
        assert out[-1] == Progress("success")
        seen = [e.completed for e in out if e.digest == digest_of(big)]
        assert seen[-1] == len(big)
        assert any(0 < c < len(big) for c in seen)               # each followed the download while it ran
    assert len(fake.blob_gets(digest_of(big))) == PARTS           # one download, not two


def test_one_follower_leaving_does_not_cancel_the_other(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(2 << 20)
    publish(fake, big)
    fake.faults.throttle_s = 0.004
    downloads, leaver, stayer, stayer_joined = Downloads(), [], [], threading.Event()

    def stayer_sees(event: Progress) -> bool:
        if event.digest == digest_of(big):
            stayer_joined.set()
        return False

    def leaver_leaves(event: Progress) -> bool:
        return event.digest == digest_of(big) and 0 < event.completed < event.total and stayer_joined.wait(10)

    t1 = _pull_in_thread(client_for(Store(tmp_path), downloads), fake_name(fake), leaver, leaver_leaves)
    t2 = _pull_in_thread(client_for(Store(tmp_path), downloads), fake_name(fake), stayer, stayer_sees)
    t1.join(30)
    t2.join(30)
    assert leaver[-1].status.startswith("pulling") and 0 < leaver[-1].completed < len(big)
    assert stayer[-1] == Progress("success")
    assert len(fake.blob_gets(digest_of(big))) == PARTS           # never restarted


# ---- fake registry: hostile or broken answers ------------------------------------------------------------

def test_wrong_bytes_are_never_committed(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(512 << 10)
    publish(fake, big, serve=os.urandom(len(big)))
    store = Store(tmp_path)
    with pytest.raises(RegistryError, match="digest mismatch"):
        list(client_for(store).pull(fake_name(fake), insecure=True))
    final = store.blob_path(digest_of(big))
    assert not final.exists() and not any(p.exists() for p in partial_paths(final))
    assert not store.manifests_dir.exists()


@pytest.mark.parametrize("ignore_range", [False, True])
def test_more_bytes_than_declared_is_refused(fake: FakeRegistry, tmp_path: Path, ignore_range: bool) -> None:
    big = os.urandom(512 << 10)
    publish(fake, big, declared=256 << 10)
    fake.faults.ignore_range = ignore_range
    store = Store(tmp_path)
    with pytest.raises(RegistryError, match="the manifest says 262144"):
        list(client_for(store).pull(fake_name(fake), insecure=True))
    final = store.blob_path(digest_of(big))
    data, _ = partial_paths(final)
    assert not final.exists() and not store.manifests_dir.exists()
    assert data.stat().st_size <= 256 << 10                        # never grew past the declared size


@pytest.mark.parametrize("bad", ["sha256:../../../../etc/passwd", "sha256:" + "AB" * 32,
                                 "sha256:" + "ab" * 32 + "\n", "sha512:" + "ab" * 64, "sha256:abc"])
def test_hostile_digest_is_refused_before_any_blob_request(fake: FakeRegistry, tmp_path: Path,
                                                           bad: str) -> None:
    fine = digest_of(b"x")
    doc = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
           "config": {"mediaType": MEDIA_CONFIG, "digest": fine, "size": 1},
           "layers": [{"mediaType": MEDIA_TEMPLATE, "digest": fine, "size": 1},
                      {"mediaType": MEDIA_MODEL, "digest": bad, "size": 10}]}
    fake.manifests[("library/tiny", "latest")] = json.dumps(doc).encode()
    with pytest.raises(RegistryError, match="invalid digest"):
        list(client_for(Store(tmp_path / "models")).pull(fake_name(fake), insecure=True))
    assert [s.path for s in fake.seen] == ["/v2/library/tiny/manifests/latest"]
    assert stored_files(tmp_path) == []                            # not even a directory was created


def test_oversized_manifest_is_refused(fake: FakeRegistry, tmp_path: Path) -> None:
    fake.manifests[("library/tiny", "latest")] = b" " * (5 << 20)
    with pytest.raises(RegistryError, match="larger than"):
        list(client_for(Store(tmp_path)).pull(fake_name(fake), insecure=True))


def test_503s_are_retried_with_backoff(fake: FakeRegistry, tmp_path: Path) -> None:
    publish(fake, os.urandom(64 << 10))
    fake.faults.fail_status, fake.faults.fail_times = 503, 2
    store = Store(tmp_path)
    assert list(client_for(store).pull(fake_name(fake), insecure=True))[-1].status == "success"
    assert [s.path for s in fake.seen[:3]] == ["/v2/library/tiny/manifests/latest"] * 3


def test_persistent_503_gives_a_clear_error(fake: FakeRegistry, tmp_path: Path) -> None:
    publish(fake, os.urandom(64 << 10))
    fake.faults.fail_status, fake.faults.fail_times = 503, 1000
    with pytest.raises(RegistryError, match="503: try again later") as info:
        list(client_for(Store(tmp_path)).pull(fake_name(fake), insecure=True))
    assert info.value.status == 503
    assert len(fake.seen) == FAST_RETRY.max_retries + 1


def test_other_4xx_is_final(fake: FakeRegistry, tmp_path: Path) -> None:
    publish(fake, os.urandom(64 << 10))
    fake.faults.fail_status, fake.faults.fail_times = 403, 1000
    with pytest.raises(RegistryError) as info:
        list(client_for(Store(tmp_path)).pull(fake_name(fake), insecure=True))
    assert info.value.status == 403 and len(fake.seen) == 1


def test_redirect_to_another_host_is_followed_without_credentials(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(512 << 10)
    publish(fake, big)
    fake.faults.basic = ("u", "p")
    with FakeRegistry() as storage:             # "localhost:<port>": another origin
        storage.blobs.update(fake.blobs)
        fake.faults.redirect_blobs_to = f"http://localhost:{storage.host.split(':')[1]}"
        store = Store(tmp_path)
        client = client_for(store, credentials={fake.host: ("u", "p")})
        assert list(client.pull(fake_name(fake), insecure=True))[-1].status == "success"
        raw_gets = [s for s in storage.seen if s.path.startswith("/raw/")]
    assert len(raw_gets) == PARTS + 2                      # 4 parts of the big blob, template, config
    assert not any("Authorization" in s.headers for s in raw_gets)
    registry_gets = fake.blob_gets(digest_of(big))
    assert all(s.headers.get("Authorization", "").startswith("Basic ") for s in registry_gets)
    assert store.has_blob(digest_of(big))


def test_200_direct_answer_is_used(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(512 << 10)
    raw = publish(fake, big)
    fake.faults.ignore_range = True
    store = Store(tmp_path)
    assert list(client_for(store).pull(fake_name(fake), insecure=True))[-1].status == "success"
    assert store.read_manifest(fake_name(fake))[1] == raw
    assert store.blob_path(digest_of(big)).read_bytes() == big


def test_bearer_token_flow(fake: FakeRegistry, tmp_path: Path) -> None:
    big = os.urandom(256 << 10)
    publish(fake, big)
    fake.faults.bearer_realm = f"{fake.url}/token"
    store = Store(tmp_path)
    client = client_for(store, credentials={fake.host: ("u", "p")})
    assert list(client.pull(fake_name(fake), insecure=True))[-1].status == "success"
    token_gets = [s for s in fake.seen if s.path.startswith("/token")]
    assert token_gets and token_gets[0].path == "/token?service=fake&scope=repository%3Alibrary%2Ftiny%3Apull"
    assert token_gets[0].headers["Authorization"].startswith("Basic ")
    assert all(s.headers.get("Authorization") == f"Bearer {TOKEN}" for s in fake.blob_gets(digest_of(big)))


def test_token_realm_on_another_host_is_refused(fake: FakeRegistry, tmp_path: Path) -> None:
    publish(fake, os.urandom(1024))
    fake.faults.bearer_realm = f"http://localhost:{fake.host.split(':')[1]}/token"
    client = client_for(Store(tmp_path), credentials={fake.host: ("u", "p")})
    with pytest.raises(RegistryError, match="refusing token realm on another host") as info:
        list(client.pull(fake_name(fake), insecure=True))
    assert info.value.status == 401
    assert not any(s.path.startswith("/token") for s in fake.seen)


# ---- small pieces --------------------------------------------------------------------------------------

def test_parse_challenge() -> None:
    value = 'Bearer realm="https://r.example/token",service="registry.docker.io",scope="repository:a/b:pull,push"'
    assert parse_challenge(value) == ("bearer", {"realm": "https://r.example/token",
                                                 "service": "registry.docker.io",
                                                 "scope": "repository:a/b:pull,push"})
    assert parse_challenge('Basic realm="x \\"y\\""') == ("basic", {"realm": 'x "y"'})


def test_plan_parts_tiles_the_blob() -> None:
    assert [(p.offset, p.size) for p in plan_parts(10, 4, 3)] == [(0, 4), (4, 4), (8, 2)]
    assert [(p.offset, p.size) for p in plan_parts(5, 4, 100)] == [(0, 5)]
    assert plan_parts(0, 4, 1) == []


def test_secure_by_default_means_https(fake: FakeRegistry, tmp_path: Path) -> None:
    publish(fake, os.urandom(1024))
    with pytest.raises(RegistryError, match="TLS error") as info:     # the fake only speaks plain http
        list(client_for(Store(tmp_path)).pull(fake_name(fake)))
    assert not info.value.retryable and fake.seen == []
