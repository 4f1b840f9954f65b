"""Serving many clients through real HTTP: continuous batching, admission (503), cancellation, keep_alive, LRU.

Each server here has its own small limits and its own store (smollm2:135m plus copies that differ only in their
params layer, so their manifest digests differ and the pool loads them as separate models).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import requests
from waitress import create_server

from api.admission import BUSY_MESSAGE, http_threads
from api.app import create_app
from api.config import Settings
from api.gguf_import import import_gguf
from registry.names import ModelName
from registry.store import Store

GREEDY = {"temperature": 0, "seed": 42}
LONG = 2000                # tokens: a generation that only a disconnect ends within a test
VARIANTS = {"smollm2:135m": None, "variant-a:latest": {"num_keep": 5}, "variant-b:latest": {"num_keep": 6}}
FOREVER_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"      # raw and greedy, smollm2 counts on without stopping


@contextmanager
def serving(models_dir, **limits) -> Iterator[tuple[str, object]]:
    """(base URL, pool) of a waitress server configured as `pollama serve` does (threads from http_threads)."""
    settings = Settings(models_dir=models_dir, default_model=None, **limits)
    app = create_app(settings)
    srv = create_server(app, host="127.0.0.1", port=0, threads=http_threads(settings), channel_request_lookahead=1)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.effective_port}", app.extensions["pollama"].pool
    finally:
        srv.close()
        app.extensions["pollama"].pool.close()


def _store_with_variants(root, smollm2_path, names=VARIANTS):
    store = Store(root)
    for name, params in names.items():
        import_gguf(store, ModelName.parse(name), smollm2_path, params=params)
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory, smollm2_path):
    """A server with 2 slots per model, 2 waiting requests at most, 2 models loaded at most."""
    root = _store_with_variants(tmp_path_factory.mktemp("serving"), smollm2_path)
    with serving(root, num_parallel=2, max_queue=2, max_loaded_models=2, keep_alive="5m") as (base, pool):
        yield base, pool


@pytest.fixture
def clean(small):
    """The small server with nothing loaded and nothing running."""
    base, pool = small
    for entry in pool.loaded():
        pool.unload(entry.record.digest)
    assert _until(lambda: not pool.loaded() and pool.admission.waiting == 0)
    return base, pool


def _until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _body(prompt: str, model="smollm2:135m", num_predict=8, **extra) -> dict:
    return {"model": model, "prompt": prompt, "raw": True, "options": {**GREEDY, "num_predict": num_predict},
            **extra}


class Stream:
    """A streamed /api/generate read line by line over its own connection, which ``close`` really closes."""

    def __init__(self, base: str, body: dict) -> None:
        url = urlsplit(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        self.conn.request("POST", "/api/generate", json.dumps({**body, "stream": True}),
                          {"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200

    def next(self) -> dict:
        return json.loads(self.response.readline())

    def rest(self) -> list[dict]:
        return [json.loads(line) for line in self.response.read().splitlines()]

    def close(self) -> None:
        self.response.close()
        self.conn.close()


def _ps_names(base: str) -> list[str]:
    return [m["name"] for m in requests.get(base + "/api/ps", timeout=10).json()["models"]]


def _runner(pool, name="smollm2:135m"):
    return next(e.runner for e in pool.loaded() if e.record.name.display == name)


# -- continuous batching through HTTP ----------------------------------------------------------------------------

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time,", "1, 2, 3, 4, 5,",
           "The sky is blue because", "My favourite food is", "Water boils at", "The best way to learn is"]


def test_eight_streams_match_lone_runs_and_control_endpoints_stay_fast(tmp_path, smollm2_path):
    root = _store_with_variants(tmp_path, smollm2_path, {"smollm2:135m": None})
    with serving(root, num_parallel=8, max_queue=8) as (base, pool):
        def run(prompt: str) -> tuple[str, int]:
            body = _body(prompt, num_predict=16)
            if PROMPTS.index(prompt) % 2:                      # every other stream samples, seeded
                body["options"].update(temperature=1.0, seed=PROMPTS.index(prompt))
            stream = Stream(base, body)
            lines = stream.rest()
            stream.close()
            assert lines[-1]["done"] and "error" not in lines[-1]
            return "".join(x["response"] for x in lines), lines[-1]["eval_count"]

        alone = {p: run(p) for p in PROMPTS}
        steps_before = _runner(pool).steps_run
        latencies, busiest = [], 0
        with ThreadPoolExecutor(len(PROMPTS)) as ex:
            futures = [ex.submit(run, p) for p in PROMPTS]
            while not all(f.done() for f in futures):          # measured while the 8 generations run
                busiest = max(busiest, _runner(pool).active)
                for path in ("/api/version", "/", "/api/tags", "/api/ps"):
                    t0 = time.perf_counter()
                    assert requests.get(base + path, timeout=10).status_code == 200
                    latencies.append(time.perf_counter() - t0)
            together = {p: f.result() for p, f in zip(PROMPTS, futures, strict=True)}
        assert together == alone
        # batched: 8 sequences of 16 tokens took far fewer forward passes than the 8 × (prompt + 16) of lone runs
        assert _runner(pool).steps_run - steps_before < 8 * 17 * 0.5
        assert busiest >= 4 and len(latencies) >= 8 and max(latencies) < 0.5


# -- admission ---------------------------------------------------------------------------------------------------

def test_queue_overflow_gets_503_at_once_with_retry_after(clean):
    base, pool = clean
    hogs = [Stream(base, _body(FOREVER_PROMPT, num_predict=LONG)) for _ in range(2)]
    for hog in hogs:
        assert hog.next()["done"] is False                 # both decode slots are generating
    with ThreadPoolExecutor(2) as ex:
        waiters = [ex.submit(requests.post, base + "/api/generate", json={**_body("Hi", num_predict=2),
                                                                         "stream": False}, timeout=120)
                   for _ in range(2)]
        assert _until(lambda: pool.admission.waiting == 2)
        for path, body in (("/api/generate", _body("Hello")),
                           ("/api/chat", {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Hi"}]})):
            t0 = time.perf_counter()
            busy = requests.post(base + path, json=body, timeout=10)
            assert time.perf_counter() - t0 < 1.0
            assert busy.status_code == 503 and busy.json() == {"error": BUSY_MESSAGE}
            assert busy.headers["Retry-After"] == "1"
        t0 = time.perf_counter()
        assert requests.get(base + "/api/version", timeout=10).ok and time.perf_counter() - t0 < 0.5
        for hog in hogs:
            hog.close()
        answers = [w.result() for w in waiters]
    assert [a.status_code for a in answers] == [200, 200]
    assert all(a.json()["done"] for a in answers)
    assert pool.admission.waiting == 0 and pool.admission.rejected >= 2


# -- cancellation ------------------------------------------------------------------------------------------------

def test_closing_a_stream_stops_generation_and_frees_its_slot(clean):
    base, pool = clean
    stream = Stream(base, _body(FOREVER_PROMPT, num_predict=LONG))
    stream.next()
    runner = _runner(pool)
    assert runner.active == 1
    stream.close()
    assert _until(lambda: runner.active == 0, 10)
    steps = runner.steps_run
    time.sleep(0.5)
    assert runner.steps_run == steps                        # nothing is generated for the departed client
    entry = pool.loaded()[0]
    assert _until(lambda: entry.users == 0, 5)
    assert entry.slots.acquire(blocking=False) and entry.slots.acquire(blocking=False)
    entry.slots.release()
    entry.slots.release()


def _raw_request(base: str, body: dict) -> socket.socket:
    """Send a non-streamed request on a bare socket and return it unread (closing it is the disconnect)."""
    url = urlsplit(base)
    payload = json.dumps({**body, "stream": False}).encode()
    sock = socket.create_connection((url.hostname, url.port))
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
    return sock


def test_non_streamed_request_stops_when_its_client_leaves(clean):
    base, pool = clean
    requests.post(base + "/api/generate", json={"model": "smollm2:135m"}, timeout=60)     # load
    runner = _runner(pool)
    sock = _raw_request(base, _body(FOREVER_PROMPT, num_predict=LONG))
    assert _until(lambda: runner.active == 1)
    steps = runner.steps_run
    assert _until(lambda: runner.steps_run > steps + 2)    # it is generating
    sock.close()
    assert _until(lambda: runner.active == 0, 10)
    assert pool.loaded()[0].users == 0


def test_waiting_request_whose_client_leaves_leaves_the_queue(clean):
    base, pool = clean
    hogs = [Stream(base, _body(FOREVER_PROMPT, num_predict=LONG)) for _ in range(2)]
    for hog in hogs:
        hog.next()
    sock = _raw_request(base, _body("Hi"))
    assert _until(lambda: pool.admission.waiting == 1)
    sock.close()
    assert _until(lambda: pool.admission.waiting == 0, 5)
    for hog in hogs:
        hog.close()
    assert _until(lambda: pool.loaded()[0].users == 0, 10)


# -- keep_alive and the loaded-model lifecycle -------------------------------------------------------------------

def test_keep_alive_zero_unloads_when_the_request_is_done(clean):
    base, _ = clean
    answer = requests.post(base + "/api/generate", json={**_body("Hi", num_predict=2), "stream": False,
                                                        "keep_alive": 0}, timeout=60).json()
    assert answer["done"]
    assert _until(lambda: _ps_names(base) == [], 5)
    loaded = requests.post(base + "/api/generate", json={"model": "smollm2:135m"}, timeout=60).json()
    assert loaded["done_reason"] == "load" and _ps_names(base) == ["smollm2:135m"]
    unloaded = requests.post(base + "/api/chat", json={"model": "smollm2:135m", "messages": [], "keep_alive": 0},
                             timeout=60).json()
    assert unloaded["done_reason"] == "unload" and _ps_names(base) == []


def test_unload_waits_for_the_running_stream(clean):
    base, pool = clean
    stream = Stream(base, _body(FOREVER_PROMPT, num_predict=12))
    stream.next()
    unloaded = requests.post(base + "/api/generate", json={"model": "smollm2:135m", "keep_alive": 0}, timeout=10)
    assert unloaded.json()["done_reason"] == "unload"
    assert _ps_names(base) == ["smollm2:135m"]            # still serving the stream
    lines = stream.rest()
    stream.close()
    assert lines[-1]["done"] and lines[-1]["eval_count"] == 12 and "error" not in lines[-1]
    assert _until(lambda: _ps_names(base) == [], 5)


def test_keep_alive_duration_expires(clean):
    base, _ = clean
    requests.post(base + "/api/generate", json={"model": "smollm2:135m", "keep_alive": "1s"}, timeout=60)
    assert _ps_names(base) == ["smollm2:135m"]
    assert _until(lambda: _ps_names(base) == [], 5)


def test_least_recently_used_idle_model_is_evicted(clean):
    base, _ = clean

    def load(name: str, keep_alive="5m") -> None:
        r = requests.post(base + "/api/generate", json={"model": name, "keep_alive": keep_alive}, timeout=60)
        assert r.json()["done_reason"] == "load"

    load("smollm2:135m", -1)
    load("variant-a", "10m")
    assert _ps_names(base) == ["smollm2:135m", "variant-a:latest"]   # by expires_at, latest first (forever)
    load("smollm2:135m", "5m")                                        # now variant-a is the least recently used
    assert _ps_names(base) == ["variant-a:latest", "smollm2:135m"]
    load("variant-b")
    assert sorted(_ps_names(base)) == ["smollm2:135m", "variant-b:latest"]


def test_idle_loaded_models_hold_no_engine_thread(clean):
    """A loaded model keeps its weights and caches between requests but not its worker thread (engine.runner: the
    OpenMP pool of an idle model's thread made the other model's kernels stop spin-waiting, at half speed)."""
    base, pool = clean

    def answer(model: str) -> str:
        r = requests.post(base + "/api/generate", json=_body("Hi", model=model, num_predict=4, stream=False),
                          timeout=60)
        return r.json()["response"]

    first = answer("smollm2:135m")
    answer("variant-a")
    assert sorted(_ps_names(base)) == ["smollm2:135m", "variant-a:latest"]
    assert _until(lambda: not any(entry.runner.working for entry in pool.loaded()), 5)
    assert answer("smollm2:135m") == first


def test_deleting_a_model_does_not_break_its_stream(tmp_path, smollm2_path):
    root = _store_with_variants(tmp_path, smollm2_path, {"doomed:latest": None})
    with serving(root, num_parallel=2, max_queue=2) as (base, _):
        stream = Stream(base, _body(FOREVER_PROMPT, model="doomed", num_predict=10))
        first = stream.next()
        assert requests.delete(base + "/api/delete", json={"model": "doomed"}, timeout=10).status_code == 200
        assert not list((root / "blobs").iterdir())          # the weights file is gone from the store
        lines = [first, *stream.rest()]
        stream.close()
        assert lines[-1]["done"] and "error" not in lines[-1] and lines[-1]["eval_count"] == 10
        assert requests.get(base + "/api/version", timeout=10).ok
        gone = requests.post(base + "/api/generate", json=_body("Hi", model="doomed"), timeout=10)
        assert gone.status_code == 404
