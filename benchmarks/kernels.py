"""Kernel lab: each quant format's Numba matvec / matmul against its NumPy twin, on SmolLM2 / Gemma3 shapes.

    python benchmarks/kernels.py [--threads 1 2] [--formats Q4_1 Q8_0] [--cold] [--model SMOLLM2.gguf]

Prints one JSON line per (format, shape, threads). Weight bytes are the GGUF bytes (what llama.cpp
streams), ``packed_bytes`` what our kernels stream (the repacked arrays). ``first_call_s`` is the first
call in this process: a cold compile with --cold (fresh NUMBA_CACHE_DIR), else a load from the on-disk cache.
With --model, also one line per thread count for a whole decode step's matrix products of a llama-family
GGUF (fused Q|K|V and gate|up per layer, then the output head), i.e. the kernel-only ceiling in tokens/s.
Times are the best of several repeats (the machine is shared); never asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--formats", nargs="+", default=None, help="GGML type names, default: all in SHAPES")
    p.add_argument("--tokens", type=int, default=64, help="batch size of the matmul (prefill) measurement")
    p.add_argument("--cold", action="store_true", help="compile into an empty cache directory")
    p.add_argument("--model", default=None, help="a llama-architecture GGUF file for the decode-step line")
    return p.parse_args()


ARGS = parse_args()
if ARGS.cold:  # must happen before numba is imported
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-")

import numpy as np  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType  # noqa: E402

from engine.gguf import GGUFFile  # noqa: E402
from engine.quant import FORMATS, QTensor, concat_rows, load_tensor, set_threads  # noqa: E402

Q = GGMLQuantizationType
SMOLLM2 = [(576, 576), (192, 576), (960, 576), (1536, 576), (3072, 576), (576, 1536)]
SHAPES: dict[GGMLQuantizationType, list[tuple[int, int]]] = {
    Q.Q4_1: SMOLLM2,                                     # SmolLM2 layers (960 = fused QKV, 3072 = gate|up)
    Q.Q8_0: [(49152, 576), (1536, 576)],                 # SmolLM2 tied head
    Q.Q5_0: [(1024, 640), (4096, 640)],                  # Gemma3 attn_q, fused gate|up
    Q.Q4_0: [(1536, 576)],
    Q.Q5_1: [(1536, 576)],
    Q.F32: [(1536, 576)],
    Q.F16: [(576, 576), (1536, 576), (49152, 576)],      # an F16 SmolLM2's layers and tied head
    Q.BF16: [(1536, 576)],
    Q.Q4_K: [(640, 1024), (640, 2048)],                  # Gemma3 attn_output, ffn_down (9 of 18 layers)
    Q.Q6_K: [(640, 2048)],                               # Gemma3 ffn_down (the other 9 layers)
    Q.Q2_K: [(640, 2048)],
    Q.Q3_K: [(640, 2048)],
    Q.Q5_K: [(640, 2048)],
}


def random_raw(ggml_type: GGMLQuantizationType, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random GGUF bytes (rows, row_bytes): random quants, sane fp16 scales (speed ignores the values)."""
    block, block_bytes = GGML_QUANT_SIZES[ggml_type]
    if ggml_type == Q.F32:
        return rng.standard_normal((rows, cols), dtype=np.float32).view(np.uint8)
    if ggml_type == Q.F16:
        return rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8)
    if ggml_type == Q.BF16:
        top_halves = rng.standard_normal((rows, cols), dtype=np.float32).view(np.uint32) >> 16
        return top_halves.astype(np.uint16).view(np.uint8)
    raw = rng.integers(0, 256, (rows, cols // block, block_bytes), dtype=np.uint8)
    n_scales = 2 if ggml_type in (Q.Q4_1, Q.Q5_1) else 1                  # d (and m) lead every block here
    scales = (rng.random((rows, cols // block, n_scales)) * 0.01).astype(np.float16)
    raw[..., : 2 * n_scales] = scales.view(np.uint8)
    return raw.reshape(rows, -1)


def best_seconds(fn, n_calls: int, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n_calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / n_calls)
    return best


def measure(ggml_type: GGMLQuantizationType, rows: int, cols: int, threads: int, tokens: int) -> dict:
    rng = np.random.default_rng(0)
    raw = random_raw(ggml_type, rows, cols, rng)
    w = load_tensor(raw, ggml_type, (rows, cols))
    x = rng.standard_normal(cols, dtype=np.float32)
    xs = rng.standard_normal((tokens, cols), dtype=np.float32)
    set_threads(threads)
    t0 = time.perf_counter()
    w(x)
    first_call_s = time.perf_counter() - t0
    w(xs)
    macs = rows * cols
    n = max(3, int(2e7 // macs))
    t_mv = best_seconds(lambda: w(x), n)
    t_mm = best_seconds(lambda: w(xs), max(1, n // tokens), repeats=3)
    twin = FORMATS[ggml_type].dequantize
    t_twin = best_seconds(lambda: twin(raw) @ x, max(1, n // 20), repeats=3)
    return {
        "format": ggml_type.name, "rows": rows, "cols": cols, "threads": threads,
        "matvec_us": round(t_mv * 1e6, 1),
        "matvec_GBps": round(raw.nbytes / t_mv / 1e9, 1),
        "matvec_GMACps": round(macs / t_mv / 1e9, 1),
        f"matmul_T{tokens}_GMACps": round(tokens * macs / t_mm / 1e9, 1),
        "twin_matvec_GMACps": round(macs / t_twin / 1e9, 2),
        "gguf_bytes": raw.nbytes, "packed_bytes": w.nbytes,
        "first_call_s": round(first_call_s, 2),
    }


def decode_matrices(path: str) -> list[QTensor]:
    """Every weight matrix one decode step multiplies by, fused the way engine/models/llama.py fuses them."""
    with GGUFFile(path) as f:
        def load(name: str) -> QTensor:
            info = f.tensors[name]
            return load_tensor(f.raw(name), info.ggml_type, info.shape)

        mats = []
        for i in range(f.metadata["llama.block_count"]):
            p = f"blk.{i}."
            mats.append(concat_rows([load(p + f"attn_{x}.weight") for x in "qkv"]))
            mats.append(load(p + "attn_output.weight"))
            mats.append(concat_rows([load(p + "ffn_gate.weight"), load(p + "ffn_up.weight")]))
            mats.append(load(p + "ffn_down.weight"))
        mats.append(load("output.weight" if "output.weight" in f.tensors else "token_embd.weight"))
    return mats


def measure_decode(mats: list[QTensor], threads: int) -> dict:
    rng = np.random.default_rng(0)
    xs = {m.cols: rng.standard_normal(m.cols, dtype=np.float32) for m in mats}
    set_threads(threads)

    def step() -> None:
        for m in mats:
            m(xs[m.cols])

    t = best_seconds(step, 5)
    return {
        "decode_step_matrices": len(mats), "threads": threads,
        "ms_per_token": round(t * 1e3, 2), "tok_per_s_kernels_only": round(1 / t, 1),
        "GBps": round(sum(m.nbytes for m in mats) / t / 1e9, 1),
        "GMACps": round(sum(m.rows * m.cols for m in mats) / t / 1e9, 1),
    }


def main() -> None:
    wanted = [Q[name] for name in ARGS.formats] if ARGS.formats else list(SHAPES)
    for ggml_type in wanted:
        for rows, cols in SHAPES[ggml_type]:
            for threads in ARGS.threads:
                print(json.dumps(measure(ggml_type, rows, cols, threads, ARGS.tokens)), flush=True)
    if ARGS.model:
        mats = decode_matrices(ARGS.model)
        for threads in ARGS.threads:
            print(json.dumps({"model": os.path.basename(ARGS.model), **measure_decode(mats, threads)}), flush=True)


if __name__ == "__main__":
    main()
