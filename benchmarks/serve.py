"""Serving throughput: concurrent streaming clients through real HTTP against `pollama serve`, and the HTTP overhead.

    python benchmarks/serve.py [--model PATH] [--threads 2] [--clients 1,2,4,8] [--tokens 64] [--pairs 8]
                               [--rounds 3] [--idle-model gemma3:270m]

Starts `python -m api serve` as a subprocess (so the clients here never hold the server's GIL) on a free loopback
port, with a temporary store holding smollm2:135m and NUM_PARALLEL = the largest client count, and
benchmarks/speed.py (same model, same threads) as a second process that keeps its model loaded and measures again
whenever asked. The two alternate closely, each idle while the other runs: on a shared 2-core machine rates drift by
up to ±10 % within minutes, so a comparison is only as good as the closeness of its two halves. Prints JSON lines:
  * ``engine``: speed.py's own line (forward passes only: a 256-token prompt, then 128 decode steps);
  * ``http_single`` (``--pairs`` of them): one stream with speed.py's 256-token prompt and 128 tokens:
    ``decode_tok_s`` as the client sees it (first to last token), ``server_decode_tok_s`` from the server's
    eval_count / eval_duration, ``engine_decode_tok_s`` the mean of the speed.py rounds right before and after it,
    ``overhead_pct``: how much slower the client's rate is than that (sampling, the runner's queues, JSON and HTTP
    together), and ``transport_overhead_pct`` against the server's own rate (JSON and HTTP alone);
  * ``http_overhead``: the median of the pairs' ``overhead_pct`` and each of them;
  * ``beside_idle_model``: the same one stream again while a second model (``--idle-model``, imported too) is
    loaded and idle, against the pairs' median (``ratio``): a loaded model must not slow the others down;
  * ``concurrency``: N clients at once, each a distinct short raw prompt that the model continues without stopping,
    every client count run ``--rounds`` times in turn and reported as medians (``decode_tok_s_each``: each round):
    ``decode_tok_s``, the tokens of all clients per second while all N were decoding (from the last client's first
    token to the first client's last), and ``speedup``, that against the first client count (1);
    ``aggregate_tok_s``, decoded tokens of all clients over the whole span from the first first-token to the last
    token, which also holds the other clients' prompt reading when they arrive one after another, and its
    ``aggregate_speedup``; time to first token from sending the request (mean, max).
Every line carries the 1-minute load average: the machine may be shared. Numbers are reported, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from speed import PROMPT_TEXT, model_path  # benchmarks/ is this script's own directory

from api.gguf_import import import_gguf
from registry.names import ModelName
from registry.store import Store

MODEL = "smollm2:135m"
SPEED_PROMPT_TOKENS, SPEED_DECODE_TOKENS = 256, 128
READY_TIMEOUT_S = 120


@dataclass
class Stream:
    """One streamed /api/generate as the client saw it."""

    sent_s: float                                            # perf_counter when the request was sent
    token_s: list[float] = field(default_factory=list)      # perf_counter of every token chunk
    final: dict = field(default_factory=dict)               # the done chunk (eval_count, eval_duration, ...)

    @property
    def ttft_s(self) -> float:
        return self.token_s[0] - self.sent_s


def run_stream(port: int, body: dict) -> Stream:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/api/generate", json.dumps({**body, "stream": True}), {"Content-Type": "application/json"})
    stream = Stream(time.perf_counter())
    response = conn.getresponse()
    for line in response:
        chunk = json.loads(line)
        if "error" in chunk:
            raise RuntimeError(chunk["error"])
        if chunk["done"]:
            stream.final = chunk
        else:
            stream.token_s.append(time.perf_counter())
    conn.close()
    return stream


def post_json(port: int, path: str, body: dict) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(path: Path, threads: int, parallel: int, others: dict[str, Path]) -> Iterator[int]:
    """Port of a `pollama serve` subprocess with ``path`` imported as smollm2:135m into a temporary store, and
    ``others`` (name: GGUF path) beside it."""
    with tempfile.TemporaryDirectory() as root:
        for name, gguf in {MODEL: path, **others}.items():
            import_gguf(Store(Path(root)), ModelName.parse(name), gguf)
        port = free_port()
        env = {**os.environ, "POLLAMA_HOST": f"127.0.0.1:{port}", "POLLAMA_MODELS": root,
               "POLLAMA_NO_DEFAULT_MODEL": "1", "POLLAMA_NUM_PARALLEL": str(parallel),
               "POLLAMA_NUM_THREADS": str(threads), "POLLAMA_KEEP_ALIVE": "-1"}
        proc = subprocess.Popen([sys.executable, "-m", "api", "serve"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_ready(port, proc)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def wait_ready(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pollama serve exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/version")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("pollama serve did not answer in time")


class EngineRounds:
    """benchmarks/speed.py on the same model and threads as its own process, kept loaded (--again-on-stdin) so that
    its decode measurements alternate closely with the HTTP runs; idle (blocked on stdin) while they run."""

    def __init__(self, path: Path, threads: int) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("speed.py")), "--model", str(path), "--threads",
             str(threads), "--prompt-tokens", str(SPEED_PROMPT_TOKENS), "--decode-tokens", str(SPEED_DECODE_TOKENS),
             "--again-on-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.first_line = self._line()

    def decode_tok_s(self) -> float:
        self._proc.stdin.write("\n")
        self._proc.stdin.flush()
        return self._line()["decode_tok_s"]

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=60)

    def _line(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"speed.py exited with status {self._proc.wait()}")
        return json.loads(line)


def greedy(prompt: str, num_predict: int) -> dict:
    return {"model": MODEL, "prompt": prompt, "raw": True,
            "options": {"temperature": 0, "num_predict": num_predict, "num_ctx": 2048}}


def decode_rate(stream: Stream) -> float:
    return (len(stream.token_s) - 1) / (stream.token_s[-1] - stream.token_s[0])


def http_single(port: int) -> dict:
    """speed.py's prompt (its first 256 tokens) and decode length through HTTP; the second of two runs."""
    tokens = post_json(port, "/api/tokenize", {"model": MODEL, "content": PROMPT_TEXT})["tokens"]
    prompt = post_json(port, "/api/detokenize", {"model": MODEL, "tokens": tokens[:SPEED_PROMPT_TOKENS]})["content"]
    for _ in range(2):
        stream = run_stream(port, greedy(prompt, SPEED_DECODE_TOKENS))
    rate = decode_rate(stream)
    server_rate = stream.final["eval_count"] / (stream.final["eval_duration"] / 1e9)
    return {"bench": "http_single", "prompt_tokens": stream.final["prompt_eval_count"],
            "tokens": stream.final["eval_count"], "decode_tok_s": round(rate, 2),
            "server_decode_tok_s": round(server_rate, 2),
            "transport_overhead_pct": round(100 * (1 - rate / server_rate), 1), "ttft_s": round(stream.ttft_s, 3)}


def with_engine_rate(single: dict, engine_tok_s: float) -> dict:
    """http_single's line with speed.py's rate beside it and ``overhead_pct``, how much slower the client's is."""
    return {**single, "engine_decode_tok_s": round(engine_tok_s, 2),
            "overhead_pct": round(100 * (1 - single["decode_tok_s"] / engine_tok_s), 1)}


def http_overhead(port: int, path: Path, threads: int, pairs: int, emit: Callable[[dict], None]) -> list[dict]:
    """``pairs`` http_single runs, each compared with the mean of the speed.py rounds right before and after it
    (the server idles while speed.py runs, speed.py while the stream runs); emits each and their median."""
    engine = EngineRounds(path, threads)
    emit({"bench": "engine", **engine.first_line})
    singles, before = [], engine.first_line["decode_tok_s"]
    try:
        for _ in range(pairs):
            single = http_single(port)
            after = engine.decode_tok_s()
            singles.append(with_engine_rate(single, (before + after) / 2))
            emit(singles[-1])
            before = after
    finally:
        engine.close()
    emit({"bench": "http_overhead", "pairs": pairs,
          "overhead_pct_median": statistics.median(s["overhead_pct"] for s in singles),
          "overhead_pct_each": [s["overhead_pct"] for s in singles]})
    return singles


def beside_idle_model(port: int, idle_model: str, alone_tok_s: float) -> dict:
    """http_single's stream again once ``idle_model`` is loaded (and left idle), against its rate alone."""
    assert post_json(port, "/api/generate", {"model": idle_model, "prompt": "", "stream": False})["done"]
    rates = [http_single(port)["decode_tok_s"] for _ in range(2)]
    return {"bench": "beside_idle_model", "idle_model": idle_model, "decode_tok_s": rates,
            "alone_decode_tok_s": alone_tok_s, "ratio": round(statistics.median(rates) / alone_tok_s, 3)}


def counting_prompt(i: int) -> str:
    """A distinct raw prompt per client that the model continues for as long as it is let (greedy): "101, 102, ..."
    and up (smollm2 ends "1, 2, 3, 4, 5," after 51 tokens with a code snippet)."""
    start = 100 * (i + 1) + 1
    return ", ".join(str(n) for n in range(start, start + 5)) + ","


def concurrency(port: int, clients: int, tokens: int) -> dict:
    streams: list[Stream | None] = [None] * clients

    def client(i: int) -> None:
        streams[i] = run_stream(port, greedy(counting_prompt(i), tokens))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = min(s.token_s[0] for s in streams)
    last = max(s.token_s[-1] for s in streams)
    decoded = sum(s.final["eval_count"] - 1 for s in streams)
    ttfts = [s.ttft_s for s in streams]
    return {"bench": "concurrency", "clients": clients, "tokens": sum(s.final["eval_count"] for s in streams),
            "decode_tok_s": round(all_decoding_rate(streams), 2),
            "aggregate_tok_s": round(decoded / (last - first), 2),
            "per_client_tok_s": round(sum(decode_rate(s) for s in streams) / clients, 2),
            "ttft_s_mean": round(sum(ttfts) / clients, 3), "ttft_s_max": round(max(ttfts), 3)}


def median_line(lines: list[dict]) -> dict:
    """The medians of one client count's concurrency lines, with each round's decode rate."""
    rates = ("decode_tok_s", "aggregate_tok_s", "per_client_tok_s", "ttft_s_mean", "ttft_s_max")
    median = {key: round(statistics.median(line[key] for line in lines), 3) for key in rates}
    return {**lines[0], **median, "rounds": len(lines), "decode_tok_s_each": [line["decode_tok_s"] for line in lines]}


def all_decoding_rate(streams: list[Stream]) -> float:
    """Tokens per second of all streams together while every one of them was decoding: from the last stream's
    first token to the first stream's last token (nobody reading a prompt or finished in between)."""
    start = max(s.token_s[0] for s in streams)
    end = min(s.token_s[-1] for s in streams)
    tokens = sum(1 for s in streams for t in s.token_s if start < t <= end)
    return tokens / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL, help="GGUF path or a model name from registry.pypi_models")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="compute threads (both benches)")
    parser.add_argument("--clients", default="1,2,4,8", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--tokens", type=int, default=64, help="tokens each concurrent client generates")
    parser.add_argument("--pairs", type=int, default=8, help="http_single runs, each between two speed.py rounds")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of the concurrency runs (medians)")
    parser.add_argument("--idle-model", default="gemma3:270m", help="loaded beside for beside_idle_model ('' = skip)")
    args = parser.parse_args()
    path = model_path(args.model)
    others = {args.idle_model: model_path(args.idle_model)} if args.idle_model else {}
    counts = [int(n) for n in args.clients.split(",")]

    def emit(line: dict) -> None:
        print(json.dumps({**line, "load_avg_1m": round(os.getloadavg()[0], 2)}), flush=True)

    with server(path, args.threads, max(counts), others) as port:
        run_stream(port, greedy(counting_prompt(0), 4))                      # load and warm up
        singles = http_overhead(port, path, args.threads, args.pairs, emit)
        if args.idle_model:
            alone = statistics.median(s["decode_tok_s"] for s in singles)
            emit(beside_idle_model(port, args.idle_model, alone))
        lines = {n: [] for n in counts}
        for _ in range(args.rounds):                 # client counts alternate: the machine's speed drifts
            for n in counts:
                lines[n].append(concurrency(port, n, args.tokens))
        medians = {n: median_line(lines[n]) for n in counts}
        single = medians[counts[0]]
        for n in counts:
            line = medians[n]
            emit({**line, "speedup": round(line["decode_tok_s"] / single["decode_tok_s"], 2),
                  "aggregate_speedup": round(line["aggregate_tok_s"] / single["aggregate_tok_s"], 2)})


if __name__ == "__main__":
    main()
