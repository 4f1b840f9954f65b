"""Write llama.cpp's reference numbers for the tiny random qwen2 model (tests/engine/models/qwen2_tiny.py).

Run once, from the repository root, where llama-cpp-python is installed (it is not a project dependency: it
builds llama.cpp from source, which takes minutes):

    pip install llama-cpp-python
    python -m benchmarks.make_qwen2_reference

For each variant ("f32": F32 weights, tied head; "q8_0": Q8_0 matrices, own output.weight) it builds the GGUF
with the same code the test uses, then runs llama.cpp on it (flash attention off, f16 KV cache, one thread) and
writes to tests/engine/models/data/qwen2_tiny/:

    <variant>.npz     per sequence i: ids_i (prompt + greedy continuation), n_prompt_i, and logits_i
                      (len(ids_i), vocab) float32 — every position, prompt rows from one batched eval, the
                      continuation decoded one token at a time; the vocabulary is small, so all logits fit
    tokenizer.json    llama.cpp's token ids of qwen2_tiny.TOKENIZER_STRINGS and PROMPTS, with and without
                      special-token parsing (add_special on: this vocabulary adds no BOS)
    meta.json         llama-cpp-python's version, the settings, and each variant's tensor sha256
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from tests.engine.models import qwen2_tiny

N_CTX = 128


def run_llama_cpp(path: Path, sequences: list[list[int]]) -> list[tuple[list[int], np.ndarray]]:
    """Per sequence: (sequence + its greedy continuation, logits of every position (len, vocab))."""
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=1, n_threads_batch=1,
                logits_all=True, flash_attn=False, seed=0, verbose=False)
    out = []
    for prompt in sequences:
        llm.reset()
        llm.eval(prompt)                                    # one batch: the prefill path
        ids = list(prompt)
        for _ in range(qwen2_tiny.GREEDY_TOKENS):
            token = int(np.argmax(llm.scores[len(ids) - 1]))
            ids.append(token)
            llm.eval([token])                               # one token at a time: the decode path
        out.append((ids, np.array(llm.scores[:len(ids)], dtype=np.float32)))
    return out


def tokenize_all(path: Path) -> dict:
    from llama_cpp import Llama

    llm = Llama(str(path), vocab_only=True, verbose=False)

    def ids(text: str, special: bool) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=True, special=special)

    texts = [*qwen2_tiny.TOKENIZER_STRINGS, *qwen2_tiny.PROMPTS]
    return {"cases": [{"text": t, "special": ids(t, True), "plain": ids(t, False)} for t in texts]}


def main() -> None:
    import llama_cpp

    out_dir = qwen2_tiny.DATA_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"llama_cpp_python": llama_cpp.__version__, "n_ctx": N_CTX, "flash_attn": False, "n_threads": 1,
            "greedy_tokens": qwen2_tiny.GREEDY_TOKENS, "tensor_sha256": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in qwen2_tiny.VARIANTS:
            path = Path(tmp) / f"{variant}.gguf"
            meta["tensor_sha256"][variant] = qwen2_tiny.write_gguf(path, variant)
            if variant == qwen2_tiny.VARIANTS[0]:
                tokenized = tokenize_all(path)
                (out_dir / "tokenizer.json").write_text(_one_case_per_line(tokenized))
            prompts = [case["special"] for case in tokenized["cases"][-len(qwen2_tiny.PROMPTS):]]
            n_vocab = len(qwen2_tiny.build_vocab().tokens)
            sequences = [*prompts, qwen2_tiny.random_token_ids(n_vocab)]
            arrays = {}
            for i, (ids, logits) in enumerate(run_llama_cpp(path, sequences)):
                arrays |= {f"ids_{i}": np.array(ids, np.int32), f"n_prompt_{i}": np.int32(len(sequences[i])),
                           f"logits_{i}": logits}
            np.savez_compressed(out_dir / f"{variant}.npz", **arrays)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _one_case_per_line(tokenized: dict) -> str:
    cases = ",\n".join("  " + json.dumps(case, ensure_ascii=False) for case in tokenized["cases"])
    return '{"cases": [\n' + cases + "\n]}\n"


if __name__ == "__main__":
    main()
