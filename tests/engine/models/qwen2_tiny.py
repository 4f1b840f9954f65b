"""A tiny random qwen2 GGUF, built deterministically: shared by benchmarks/make_qwen2_reference.py (which runs
llama.cpp on it once and saves its logits and token ids) and tests/engine/models/test_qwen2.py (which rebuilds the
same file and compares our engine with those saved numbers).

The model is shaped to catch the ways a qwen2 port goes wrong: 4 layers, grouped-query attention (4 query heads
over 2 KV heads, head_dim 32), nonzero Q/K/V biases large enough to move the attention pattern, NeoX RoPE with
base 1e6, eps 1e-6, and a byte-level BPE vocabulary with the `qwen2` pre-tokenizer, merges trained here on a small
text, and the ChatML control tokens. Two variants: "f32" (every tensor F32, tied output head) and "q8_0" (the
matrices Q8_0 but attn_v Q5_0 in odd layers, its own output.weight).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import regex
from gguf.constants import GGMLQuantizationType

DATA_DIR = Path(__file__).resolve().parent / "data" / "qwen2_tiny"
VARIANTS = ("f32", "q8_0")
SEED = 20240611


@dataclass(frozen=True)
class TinyShape:
    n_layer: int = 4
    dim: int = 128
    n_head: int = 4
    n_kv_head: int = 2
    head_dim: int = 32
    ffn_dim: int = 256
    eps: float = 1e-6
    rope_base: float = 1e6
    context_length: int = 256
    n_merges: int = 200


SHAPE = TinyShape()

# Qwen2-Instruct's tokenizer.chat_template (the ChatML variant with a default system turn; its string literals hold
# real newlines, as in registry/templates/index.json): an import must map it to chatml.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen2's order at the end of its vocabulary: <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645.
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# The text the merges are learned from (and what most prompts are made of): prose, ChatML, code, digits.
CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran into the forest.
She said that they'll be there at 10:30, but we don't think they're coming. I've seen it; you'd agree.
system user assistant You are a helpful assistant. What is the capital of France? The capital is Paris.
def forward(self, tokens, start_pos, cache):
    return self.output(self.norm(x))  # logits for the last position
for i in range(12345): total += i * 2.5
Numbers like 2024, 3.14159 and 1,000,000 are split into single digits by the qwen2 pre-tokenizer.
Hello world! Hello there, world. Hello, hello, hello.
"""

# Text prompts whose llama.cpp token ids, and logits at every position, are saved; CHATML uses the control tokens.
PROMPTS = (
    "The quick brown fox jumps over the lazy dog.",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def forward(self, tokens):\n    return 12345 + 3.14",
)
RANDOM_TOKENS = 40                  # one more sequence: uniformly random ids, specials included, positions 0..39
GREEDY_TOKENS = 8                   # llama.cpp's greedy continuation of each sequence, decoded one token at a time

# Strings whose ids llama.cpp's tokenizer gives on this vocabulary (with and without parsing special tokens).
TOKENIZER_STRINGS = (
    "Hello world",
    "  leading spaces and trailing   ",
    "I'll say: they've, we'd, you're, it's, DON'T",
    "digits 1234567890 and 3.14159, 1,000,000",
    "tabs\tand\nnew\n\nlines\r\n end",
    "unicode: café naïve Ωμέγα 中文 日本語 😀👍🏽",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "not special: <|im_start and im_end|> <|endoftext|>x",
    "code: x = f(a[1], b)  # comment!!! ... ???",
)

# GPT-2's pre-tokenizer regex with single digits, as Qwen2's tokenizer.json has it.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_chars() -> list[str]:
    """GPT-2's byte→char table as a list indexed by byte: printable bytes are themselves, the rest U+0100 on."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def train_merges(text: str, n_merges: int) -> list[str]:
    """Plain BPE training: repeatedly merge the most frequent adjacent pair (ties: the smallest pair)."""
    table = byte_chars()
    words = Counter(tuple(table[b] for b in piece.encode()) for piece in regex.findall(QWEN2_PATTERN, text))
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(f"{best[0]} {best[1]}")
        words = Counter({_merge(word, best): count for word, count in words.items()})
    return merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]

    def id(self, text: str) -> int:
        return self.tokens.index(text)


def build_vocab(shape: TinyShape = SHAPE) -> Vocab:
    """256 byte tokens, one token per merge, then the control tokens (ids 456, 457, 458)."""
    merges = train_merges(CORPUS, shape.n_merges)
    tokens = [*byte_chars(), *(m.replace(" ", "") for m in merges), *SPECIALS]
    types = [gguf.TokenType.NORMAL] * (len(tokens) - len(SPECIALS)) + [gguf.TokenType.CONTROL] * len(SPECIALS)
    return Vocab(tokens, [int(t) for t in types], merges)


def random_weights(n_vocab: int, shape: TinyShape = SHAPE, seed: int = SEED) -> dict[str, np.ndarray]:
    """GGUF-named float32 tensors (NumPy shapes: rows = output features), scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    s = shape
    q_dim, kv_dim = s.n_head * s.head_dim, s.n_kv_head * s.head_dim

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def vec(n: int, mean: float, std: float) -> np.ndarray:
        return (mean + std * rng.standard_normal(n)).astype(np.float32)

    t = {"token_embd.weight": (0.5 * rng.standard_normal((n_vocab, s.dim))).astype(np.float32),
         "output_norm.weight": vec(s.dim, 1.0, 0.1),
         "output.weight": (0.25 * rng.standard_normal((n_vocab, s.dim))).astype(np.float32)}
    for i in range(s.n_layer):
        p = f"blk.{i}."
        t |= {p + "attn_norm.weight": vec(s.dim, 1.0, 0.1),
              p + "attn_q.weight": mat(q_dim, s.dim), p + "attn_q.bias": vec(q_dim, 0.0, 0.5),
              p + "attn_k.weight": mat(kv_dim, s.dim), p + "attn_k.bias": vec(kv_dim, 0.0, 1.0),
              p + "attn_v.weight": mat(kv_dim, s.dim), p + "attn_v.bias": vec(kv_dim, 0.0, 0.5),
              p + "attn_output.weight": mat(s.dim, q_dim),
              p + "ffn_norm.weight": vec(s.dim, 1.0, 0.1),
              p + "ffn_gate.weight": mat(s.ffn_dim, s.dim), p + "ffn_up.weight": mat(s.ffn_dim, s.dim),
              p + "ffn_down.weight": mat(s.dim, s.ffn_dim)}
    return t


def file_tensors(variant: str, weights: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, GGMLQuantizationType]]:
    """What the file stores: name -> (array as written, GGML type). "f32" drops output.weight (tied head).
    "q8_0" quantizes the matrices with gguf-py and keeps norms and biases F32, as llama.cpp's quantizer does; like
    llama.cpp's mixes (Qwen2.5-0.5B's 896 columns fit no K-quant block) it gives some layers another type for
    attn_v, here Q5_0 in the odd layers, so Q|K|V cannot always be one matrix."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    out = {}
    for name, a in weights.items():
        if variant == "f32" and name == "output.weight":
            continue
        qtype = GGMLQuantizationType.F32
        if variant == "q8_0" and a.ndim == 2:
            odd_v = name.endswith("attn_v.weight") and int(name.split(".")[1]) % 2 == 1
            qtype = GGMLQuantizationType.Q5_0 if odd_v else GGMLQuantizationType.Q8_0
        out[name] = (a if qtype == GGMLQuantizationType.F32 else gguf.quants.quantize(a, qtype), qtype)
    return out


def write_gguf(path: Path, variant: str, shape: TinyShape = SHAPE, chat_template: str = QWEN2_CHAT_TEMPLATE) -> str:
    """Write the tiny model; returns the sha256 of its tensors (names, types and bytes), which the saved
    reference records so that a change in how the file is built cannot go unnoticed."""
    vocab = build_vocab(shape)
    tensors = file_tensors(variant, random_weights(len(vocab.tokens), shape))
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name(f"qwen2-tiny-{variant}")
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if variant == "f32" else gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_context_length(shape.context_length)
    w.add_embedding_length(shape.dim)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.ffn_dim)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_kv_head)
    w.add_rope_freq_base(shape.rope_base)
    w.add_layer_norm_rms_eps(shape.eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    w.add_bos_token_id(vocab.id("<|endoftext|>"))   # as Qwen2 GGUFs: bos = pad = <|endoftext|>, no add_bos key
    w.add_eos_token_id(vocab.id("<|im_end|>"))
    w.add_pad_token_id(vocab.id("<|endoftext|>"))
    w.add_chat_template(chat_template)
    digest = hashlib.sha256()
    for name, (a, qtype) in tensors.items():
        w.add_tensor(name, a, raw_dtype=qtype)
        digest.update(f"{name}:{qtype.name}:".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return digest.hexdigest()


def random_token_ids(n_vocab: int, n: int = RANDOM_TOKENS, seed: int = SEED + 1) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, n_vocab, n)]
