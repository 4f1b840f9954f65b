"""Prefill and decode speed of pollama's engine, or of llama.cpp on the same file (--engine llama.cpp).

Prints one JSON line: engine, model, threads, load_s, prefill_tok_s, decode_tok_s, rss_mb, file_mb, then memory
from /proc/self/status (MiB; issue #3's goal is model_ratio <= 1.5):

* baseline_mb: VmRSS right before the model is loaded, after the engine's imports (``import engine`` /
  ``import llama_cpp``): the interpreter and libraries, not the model;
* peak_mb: VmHWM after the timed steps, the highest resident memory of the run (while loading, or once the
  weights, KV cache and JIT-loaded kernels are all resident);
* steady_mb: VmRSS after the timed prefill and decode steps, with the model still loaded (weights, KV cache,
  JIT code);
* model_mb = peak_mb - baseline_mb, what the model costs on top of the process, and model_ratio = model_mb / file_mb.

rss_mb is ru_maxrss, the same quantity as peak_mb, kept for older result files.
Measured as shared/bench/llamacpp_speed.py does: a 256-token prompt evaluated at once, then 128 single-token
decode steps without sampling; the second of two repetitions is reported (the first warms caches and JIT).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

PROMPT_TEXT = "The history of the city is long and complicated. " * 40


def model_path(name: str) -> Path:
    if os.path.exists(name):
        return Path(name)
    from registry import pypi_models

    return pypi_models.fetch(name)


def bench_pollama(path: Path, threads: int, n_prompt: int, n_decode: int) -> Iterator[dict]:
    """The result line's measurements, then (one per next()) another decode rate on the same loaded model."""
    import numpy as np

    import engine
    from engine.quant import set_threads

    set_threads(threads)
    baseline = _status_mb("VmRSS")
    t0 = time.perf_counter()
    loaded = engine.load_model(path)
    load_s = time.perf_counter() - t0
    model = loaded.model
    tokens = loaded.tokenizer.encode(PROMPT_TEXT, add_special=True)[:n_prompt]

    def steps() -> tuple[float, float, object]:
        cache = model.new_cache(n_prompt + n_decode + 1)
        t0 = time.perf_counter()
        model.forward(np.asarray(tokens), 0, cache)
        prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n_decode):
            model.forward(np.asarray([tokens[i % len(tokens)]]), len(tokens) + i, cache)
        return prefill_s, time.perf_counter() - t0, cache

    steps()
    prefill_s, decode_s, _cache = steps()           # the cache stays alive for steady_mb
    yield {"load_s": load_s, "prefill_tok_s": len(tokens) / prefill_s, "decode_tok_s": n_decode / decode_s,
           **_memory(baseline)}                                   # read while the model is still alive
    while True:
        yield {"decode_tok_s": round(n_decode / steps()[1], 1)}


def bench_llama_cpp(path: Path, threads: int, n_prompt: int, n_decode: int) -> dict:
    from llama_cpp import Llama

    baseline = _status_mb("VmRSS")
    t0 = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False,
                n_batch=512)
    load_s = time.perf_counter() - t0
    tokens = llm.tokenize(PROMPT_TEXT.encode(), add_bos=True)[:n_prompt]
    for _ in range(2):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n_decode):
            llm.eval([tokens[i % len(tokens)]])
        decode_s = time.perf_counter() - t0
    return {"load_s": load_s, "prefill_tok_s": len(tokens) / prefill_s, "decode_tok_s": n_decode / decode_s,
            **_memory(baseline)}                                  # read while the model is still alive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2:135m", help="GGUF path or a model name from registry.pypi_models")
    parser.add_argument("--engine", default="pollama", choices=["pollama", "llama.cpp"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--again-on-stdin", action="store_true",
                        help="pollama only: after the result line, measure decode again for every line read on "
                             "stdin and print {\"decode_tok_s\"} (serve.py alternates these with its HTTP runs)")
    args = parser.parse_args()
    if args.again_on_stdin and args.engine != "pollama":
        parser.error("--again-on-stdin needs --engine pollama")
    path = model_path(args.model)
    if args.engine == "pollama":
        rounds = bench_pollama(path, args.threads, args.prompt_tokens, args.decode_tokens)
        result = next(rounds)
    else:
        result = bench_llama_cpp(path, args.threads, args.prompt_tokens, args.decode_tokens)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    file_mb = path.stat().st_size / 2**20
    memory = {k: result.pop(k) for k in ("baseline_mb", "peak_mb", "steady_mb")}
    model_mb = memory["peak_mb"] - memory["baseline_mb"]
    print(json.dumps({"engine": args.engine, "model": path.name, "threads": args.threads,
                      **{k: round(v, 3 if k == "load_s" else 1) for k, v in result.items()},
                      "rss_mb": round(rss_mb, 1), "file_mb": round(file_mb, 1),
                      **{k: round(v, 1) for k, v in memory.items()},
                      "model_mb": round(model_mb, 1), "model_ratio": round(model_mb / file_mb, 3),
                      "cpu": _cpu_name()}), flush=True)
    if args.again_on_stdin:
        for _ in sys.stdin:
            print(json.dumps(next(rounds)), flush=True)


def _memory(baseline_mb: float) -> dict[str, float]:
    """baseline_mb, peak_mb and steady_mb of the result line (see the module docstring)."""
    return {"baseline_mb": baseline_mb, "peak_mb": _status_mb("VmHWM"), "steady_mb": _status_mb("VmRSS")}


def _status_mb(field: str) -> float:
    """A kB field of /proc/self/status (VmRSS: resident now, VmHWM: resident high-water mark) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
