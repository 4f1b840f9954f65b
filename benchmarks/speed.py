"""Prefill and decode speed of pollama's engine, or of llama.cpp on the same file (--engine llama.cpp).

Prints one JSON line: engine, model, threads, load_s, prefill_tok_s, decode_tok_s, rss_mb, file_mb.
Measured as shared/bench/llamacpp_speed.py does: a 256-token prompt evaluated at once, then 128 single-token
decode steps without sampling; the second of two repetitions is reported (the first warms caches and JIT).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

PROMPT_TEXT = "The history of the city is long and complicated. " * 40


def model_path(name: str) -> Path:
    if os.path.exists(name):
        return Path(name)
    from registry import pypi_models

    return pypi_models.fetch(name)


def bench_pollama(path: Path, threads: int, n_prompt: int, n_decode: int) -> dict:
    import numpy as np

    import engine
    from engine.quant import set_threads

    set_threads(threads)
    t0 = time.perf_counter()
    loaded = engine.load_model(path)
    load_s = time.perf_counter() - t0
    model = loaded.model
    tokens = loaded.tokenizer.encode(PROMPT_TEXT, add_special=True)[:n_prompt]
    for _ in range(2):
        cache = model.new_cache(n_prompt + n_decode + 1)
        t0 = time.perf_counter()
        model.forward(np.asarray(tokens), 0, cache)
        prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n_decode):
            model.forward(np.asarray([tokens[i % len(tokens)]]), len(tokens) + i, cache)
        decode_s = time.perf_counter() - t0
    return {"load_s": load_s, "prefill_tok_s": len(tokens) / prefill_s, "decode_tok_s": n_decode / decode_s}


def bench_llama_cpp(path: Path, threads: int, n_prompt: int, n_decode: int) -> dict:
    from llama_cpp import Llama

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
    return {"load_s": load_s, "prefill_tok_s": len(tokens) / prefill_s, "decode_tok_s": n_decode / decode_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2:135m", help="GGUF path or a model name from registry.pypi_models")
    parser.add_argument("--engine", default="pollama", choices=["pollama", "llama.cpp"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--decode-tokens", type=int, default=128)
    args = parser.parse_args()
    path = model_path(args.model)
    bench = bench_pollama if args.engine == "pollama" else bench_llama_cpp
    result = bench(path, args.threads, args.prompt_tokens, args.decode_tokens)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"engine": args.engine, "model": path.name, "threads": args.threads,
                      **{k: round(v, 3 if k == "load_s" else 1) for k, v in result.items()},
                      "rss_mb": round(rss_mb, 1), "file_mb": round(path.stat().st_size / 2**20, 1),
                      "cpu": _cpu_name()}))


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
