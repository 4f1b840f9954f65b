"""Decode speed through the Runner with fixed thread counts and with the measuring tuner (threads=0), on an idle
machine and with one busy process beside it. Prints JSON lines: load, threads, decode_tok_s.

    python -m benchmarks.threads [--model smollm2:135m] [--tokens 192]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import engine
from benchmarks.speed import PROMPT_TEXT, model_path
from engine.generate import Limits
from engine.quant import set_threads
from engine.runner import Runner
from engine.sampling import SamplingOptions


def busy() -> None:
    while True:
        pass


def decode_rate(loaded, threads: int, tokens: int) -> float:
    runner = Runner(loaded.model, loaded.tokenizer, threads, set_threads)
    prompt = loaded.tokenizer.encode(PROMPT_TEXT)[:64]
    sampling, limits = SamplingOptions(temperature=0.0, repeat_penalty=1.0), Limits(num_predict=tokens)
    list(runner.generate(prompt, sampling, Limits(num_predict=8)))           # warm-up
    last = list(runner.generate(prompt, sampling, limits))[-1]
    runner.close()
    return last.metrics.eval_count / (last.metrics.eval_duration_ns / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--tokens", type=int, default=192)
    args = parser.parse_args()
    loaded = engine.load_model(model_path(args.model))
    for load in ("idle", "one busy process"):
        hog = multiprocessing.Process(target=busy, daemon=True) if load != "idle" else None
        if hog:
            hog.start()
            time.sleep(0.5)
        for threads in (1, 2, 0):
            rate = decode_rate(loaded, threads, args.tokens)
            print(json.dumps({"load": load, "threads": threads or "auto", "decode_tok_s": round(rate, 1)}))
        if hog:
            hog.terminate()


if __name__ == "__main__":
    main()
