"""A Hugging Face safetensors checkpoint directory -> one GGUF file (what `ollama create` does with a folder).

Supported `config.json` architectures: BertModel (-> bert), LlamaForCausalLM / MistralForCausalLM (-> llama),
Qwen2ForCausalLM (-> qwen2). The steps follow llama.cpp's and Ollama's converters (engine.md §7): config keys ->
GGUF keys; tensor names -> GGUF names; llama's Q/K rows permuted for its adjacent-pair RoPE; the vocabulary from
vocab.txt (WordPiece) or tokenizer.json (byte-level BPE); 2-D weights to F16 (BF16 if the source is BF16) or a
requested quant type, 1-D tensors to F32. The output is written to a temporary file and renamed, so a failed
conversion never leaves a half-written GGUF behind.

The directory may come from an untrusted upload: the safetensors package validates every header (offsets inside
the file, sizes consistent with shapes), JSON files are size-capped, and every config number is checked against
the tensor shapes actually present before anything proportional to it is allocated.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFWriter
from gguf.constants import GGMLQuantizationType, LlamaFileType
from gguf.quants import quant_shape_to_byte_shape
from gguf.quants import quantize as gguf_quantize
from safetensors import SafetensorError, safe_open

from engine.tokenizer.special import TokenType
from engine.tokenizer.wordpiece import BERT_SPECIALS, vocab_txt_to_gguf_tokens, vocab_txt_token_types

Q = GGMLQuantizationType
ARCHITECTURES = {"BertModel": "bert", "LlamaForCausalLM": "llama", "MistralForCausalLM": "llama",
                 "Qwen2ForCausalLM": "qwen2"}
QUANT_TYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1}
FILE_TYPES = {Q.F32: LlamaFileType.ALL_F32, Q.F16: LlamaFileType.MOSTLY_F16, Q.BF16: LlamaFileType.MOSTLY_BF16,
              Q.Q8_0: LlamaFileType.MOSTLY_Q8_0, Q.Q4_0: LlamaFileType.MOSTLY_Q4_0,
              Q.Q4_1: LlamaFileType.MOSTLY_Q4_1}
MAX_JSON_BYTES = 64 << 20      # tokenizer.json of a 256k vocabulary is ~35 MB
SOURCE_DTYPES = ("F32", "F16", "BF16", "F64")
NEVER_QUANTIZED = ("position_embd.weight", "token_types.weight")   # llama.cpp keeps these F16 / F32
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")

DECODER_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
                 "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "post_attention_layernorm": "ffn_norm"}
DECODER_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}
BERT_LAYER = {"attention.self.query": "attn_q", "attention.self.key": "attn_k", "attention.self.value": "attn_v",
              "attention.output.dense": "attn_output", "attention.output.LayerNorm": "attn_output_norm",
              "intermediate.dense": "ffn_up", "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm"}
BERT_TOP = {"embeddings.word_embeddings.weight": "token_embd.weight",
            "embeddings.position_embeddings.weight": "position_embd.weight",
            "embeddings.token_type_embeddings.weight": "token_types.weight",
            "embeddings.LayerNorm.weight": "token_embd_norm.weight",
            "embeddings.LayerNorm.bias": "token_embd_norm.bias"}
BERT_DROPPED = re.compile(r"embeddings\.position_ids|pooler\..*")
HF_SPECIAL = {"padding": "pad", "unknown": "unk", "cls": "cls", "seperator": "sep", "mask": "mask",  # GGUF -> HF
              "bos": "bos", "eos": "eos"}


class ConvertError(ValueError):
    """The directory is not a checkpoint we can convert; the message says what is missing or wrong."""


@dataclass(frozen=True)
class Planned:
    """One output tensor: its GGUF name, NumPy-order shape and type, and how to produce its float32 values."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLQuantizationType
    load: Callable[[], np.ndarray]


def convert_safetensors(model_dir: Path, out_path: Path, quantize: str | None = None) -> Path:
    """Convert ``model_dir`` (config.json, *.safetensors, tokenizer files) to a GGUF at ``out_path``.

    ``quantize``: None (F16 / BF16 weights), "f32", "f16", "q8_0", "q4_0" or "q4_1". ConvertError on bad input.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    if quantize is not None and quantize not in QUANT_TYPES:
        raise ConvertError(f"unknown quantization {quantize!r} (supported: {', '.join(QUANT_TYPES)})")
    config = read_json(model_dir / "config.json")
    arch = detect_architecture(config)
    ckpt = Checkpoint(model_dir)
    try:
        if arch == "bert":
            kv, tensors, expected = _bert(config, ckpt, model_dir)
        else:
            kv, tensors, expected = _decoder(arch, config, ckpt)
        _check_shapes(tensors, expected, ckpt)          # first: vocab_size is now bounded by the file's bytes
        n_vocab = expected["token_embd.weight"][0]
        kv.update(_wordpiece_vocab(model_dir, n_vocab) if arch == "bert" else _bpe_vocab(model_dir, n_vocab))
    except (AttributeError, TypeError, KeyError) as e:  # JSON of the wrong shape: a list where a dict belongs, ...
        raise ConvertError(f"malformed config or tokenizer JSON ({type(e).__name__}: {e})") from e
    plan = _plan(tensors, ckpt, QUANT_TYPES.get(quantize) if quantize else None)
    kv["general.file_type"] = int(FILE_TYPES[QUANT_TYPES[quantize] if quantize else _default_type(ckpt)])
    kv["general.quantization_version"] = 2
    kv["general.name"] = model_dir.name
    _write(out_path, arch, kv, plan)
    return out_path


def detect_architecture(config: dict) -> str:
    if not isinstance(config, dict):
        raise ConvertError("config.json must hold a JSON object")
    names = config.get("architectures")
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise ConvertError("config.json has no 'architectures' list")
    if names[0] not in ARCHITECTURES:
        raise ConvertError(f"unsupported architecture {names[0]!r} (supported: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[names[0]]


def read_json(path: Path, required: bool = True) -> Any:
    if not path.is_file():
        if required:
            raise ConvertError(f"{path.name} is missing")
        return None
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ConvertError(f"{path.name} is larger than {MAX_JSON_BYTES >> 20} MB")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path.name} is not valid JSON: {e}") from e


class Checkpoint:
    """Every tensor of a directory's *.safetensors files; only headers are read until ``read``."""

    def __init__(self, model_dir: Path) -> None:
        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise ConvertError(f"no *.safetensors files in {model_dir}")
        self.files: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}
        for path in files:
            with _open(path) as f:
                for name in f.keys():
                    if name in self.files:
                        raise ConvertError(f"tensor {name!r} appears in two safetensors files")
                    sl = f.get_slice(name)
                    self.files[name], self.shapes[name] = path, tuple(sl.get_shape()) or (1,)
                    self.dtypes[name] = sl.get_dtype()

    def read(self, name: str) -> np.ndarray:
        """The tensor as float32, in its checkpoint shape."""
        path, dtype, shape = self.files[name], self.dtypes[name], self.shapes[name]
        if dtype not in SOURCE_DTYPES:
            raise ConvertError(f"tensor {name!r} has unsupported dtype {dtype}")
        if dtype == "BF16":  # NumPy has no bfloat16: read the raw halves and widen (exact)
            return (_raw_uint16(path, name).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        with _open(path) as f:
            return f.get_tensor(name).astype(np.float32).reshape(shape)


def _open(path: Path):
    try:
        return safe_open(str(path), framework="numpy")
    except (SafetensorError, OSError) as e:
        raise ConvertError(f"{path.name}: {e}") from e


def _raw_uint16(path: Path, name: str) -> np.ndarray:
    """A BF16 tensor's raw bytes; the header was validated by safe_open already."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        begin, end = json.loads(fh.read(n))[name]["data_offsets"]
        return np.fromfile(fh, dtype="<u2", count=(end - begin) // 2, offset=begin)


# ---------------------------------------------------------------------------------------------- config values

def _int(config: dict, key: str, default: int | None = None, limit: int = 1 << 31) -> int:
    value = config.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise ConvertError(f"config.json {key!r} must be a positive integer, got {value!r}")
    return value


def _float(config: dict, key: str, default: float | None = None) -> float:
    value = config.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConvertError(f"config.json {key!r} must be a positive number, got {value!r}")
    return float(value)


def _layers(config: dict, key: str, ckpt: Checkpoint) -> int:
    """Layer count, bounded by the tensors that exist (every layer has several)."""
    return _int(config, key, limit=max(1, len(ckpt.shapes)))


# ---------------------------------------------------------------------------------------------- architectures

Tensors = dict[str, tuple[str, Callable[[np.ndarray], np.ndarray] | None]]   # GGUF name -> (source, transform)
Shapes = dict[str, tuple[int, ...]]


def _decoder(arch: str, config: dict, ckpt: Checkpoint) -> tuple[dict, Tensors, Shapes]:
    """llama / qwen2: keys, renamed tensors, and the shape every tensor must have."""
    dim, n_head = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    n_kv, n_layer = _int(config, "num_key_value_heads", n_head), _layers(config, "num_hidden_layers", ckpt)
    head_dim, ffn = _int(config, "head_dim", dim // n_head), _int(config, "intermediate_size")
    vocab = _int(config, "vocab_size")
    if n_head % n_kv:
        raise ConvertError(f"num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")
    a = f"{arch}."
    kv: dict[str, Any] = {
        a + "context_length": _int(config, "max_position_embeddings"), a + "embedding_length": dim,
        a + "block_count": n_layer, a + "feed_forward_length": ffn, a + "attention.head_count": n_head,
        a + "attention.head_count_kv": n_kv, a + "rope.dimension_count": head_dim,
        a + "rope.freq_base": _float(config, "rope_theta", 10000.0),
        a + "attention.layer_norm_rms_epsilon": _float(config, "rms_norm_eps"), a + "vocab_size": vocab,
    }
    if head_dim != dim // n_head:
        kv[a + "attention.key_length"] = kv[a + "attention.value_length"] = head_dim
    extra = _rope_scaling(arch, config, head_dim, kv)
    tensors = _rename(ckpt, _decoder_name)
    if config.get("tie_word_embeddings") and "output.weight" in tensors:
        del tensors["output.weight"]                         # llama.cpp reuses token_embd for a missing head
    if arch == "llama":                                       # HF rotate_half rows -> adjacent-pair rows
        for name, heads in (("attn_q", n_head), ("attn_k", n_kv)):
            for i in range(n_layer):
                source, _ = tensors.get(f"blk.{i}.{name}.weight", (None, None))
                if source is not None:
                    tensors[f"blk.{i}.{name}.weight"] = (source, lambda w, h=heads: permute_qk(w, h))
    tensors.update(extra)
    return kv, tensors, _decoder_shapes(arch, n_layer, dim, n_head, n_kv, head_dim, ffn, vocab, extra)


def _decoder_name(name: str) -> str | None:
    if name.endswith("rotary_emb.inv_freq"):
        return None
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
    if m and m[2] in DECODER_LAYER:
        return f"blk.{int(m[1])}.{DECODER_LAYER[m[2]]}.{m[3]}"
    if name in DECODER_TOP:
        return DECODER_TOP[name]
    raise ConvertError(f"unexpected tensor {name!r}")


def _decoder_shapes(arch: str, n_layer: int, dim: int, n_head: int, n_kv: int, head_dim: int, ffn: int,
                    vocab: int, extra: Tensors) -> Shapes:
    shapes: Shapes = {"token_embd.weight": (vocab, dim), "output_norm.weight": (dim,), "output.weight": (vocab, dim)}
    q, kv = n_head * head_dim, n_kv * head_dim
    for i in range(n_layer):
        p = f"blk.{i}."
        shapes.update({p + "attn_norm.weight": (dim,), p + "attn_q.weight": (q, dim), p + "attn_k.weight": (kv, dim),
                       p + "attn_v.weight": (kv, dim), p + "attn_output.weight": (dim, q),
                       p + "ffn_norm.weight": (dim,), p + "ffn_gate.weight": (ffn, dim),
                       p + "ffn_up.weight": (ffn, dim), p + "ffn_down.weight": (dim, ffn)})
        if arch == "qwen2":
            shapes.update({p + "attn_q.bias": (q,), p + "attn_k.bias": (kv,), p + "attn_v.bias": (kv,)})
    if "rope_freqs.weight" in extra:
        shapes["rope_freqs.weight"] = (head_dim // 2,)
    return shapes


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF Q/K rows (per head: first halves, then second halves of RoPE pairs) -> GGUF llama rows (pairs adjacent):
    within each head, new row 2j = old row j and new row 2j+1 = old row j + d/2."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rope_scaling(arch: str, config: dict, head_dim: int, kv: dict) -> Tensors:
    """rope_scaling -> GGUF keys (linear, yarn) or llama3's per-frequency factors tensor."""
    rs = config.get("rope_scaling")
    if not rs:
        return {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        kv.update({f"{arch}.rope.scaling.type": "linear", f"{arch}.rope.scaling.factor": _float(rs, "factor")})
        return {}
    if kind == "yarn":
        kv.update({f"{arch}.rope.scaling.type": "yarn", f"{arch}.rope.scaling.factor": _float(rs, "factor"),
                   f"{arch}.rope.scaling.original_context_length":
                       _int(rs, "original_max_position_embeddings", kv[f"{arch}.context_length"])})
        return {}
    if kind == "llama3":
        factors = _llama3_rope_factors(rs, head_dim, _float(config, "rope_theta", 10000.0))
        return {"rope_freqs.weight": ("", lambda _: factors)}
    raise ConvertError(f"unsupported rope_scaling type {kind!r}")


def _llama3_rope_factors(rs: dict, head_dim: int, base: float) -> np.ndarray:
    """Llama 3.1's frequency-dependent scaling as llama.cpp's converter computes it: (head_dim/2,) f32."""
    factor, low = _float(rs, "factor", 8.0), _float(rs, "low_freq_factor", 1.0)
    high = _float(rs, "high_freq_factor", 4.0)
    orig = _int(rs, "original_max_position_embeddings", 8192)
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * base ** (i / head_dim)
        if wavelen < orig / high:
            out.append(1.0)
        elif wavelen > orig / low:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _bert(config: dict, ckpt: Checkpoint, model_dir: Path) -> tuple[dict, Tensors, Shapes]:
    dim, n_head = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    n_layer, ffn = _layers(config, "num_hidden_layers", ckpt), _int(config, "intermediate_size")
    n_pos, n_types = _int(config, "max_position_embeddings"), _int(config, "type_vocab_size", 2)
    vocab = _int(config, "vocab_size")
    if config.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ConvertError(f"unsupported BERT activation {config.get('hidden_act')!r}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConvertError("only absolute position embeddings are supported for BERT")
    if dim % n_head:
        raise ConvertError(f"hidden_size {dim} is not a multiple of num_attention_heads {n_head}")
    pooling, normalize = _sentence_transformers(model_dir)
    kv: dict[str, Any] = {
        "bert.context_length": n_pos, "bert.embedding_length": dim, "bert.block_count": n_layer,
        "bert.feed_forward_length": ffn, "bert.attention.head_count": n_head,
        "bert.attention.layer_norm_epsilon": _float(config, "layer_norm_eps", 1e-12),
        "bert.attention.causal": False, "bert.pooling_type": pooling, "bert.normalize_embeddings": normalize,
        "tokenizer.ggml.token_type_count": n_types,
    }
    shapes: Shapes = {"token_embd.weight": (vocab, dim), "position_embd.weight": (n_pos, dim),
                      "token_types.weight": (n_types, dim), "token_embd_norm.weight": (dim,),
                      "token_embd_norm.bias": (dim,)}
    rows = {"attn_q": dim, "attn_k": dim, "attn_v": dim, "attn_output": dim, "attn_output_norm": dim,
            "ffn_up": ffn, "ffn_down": dim, "layer_output_norm": dim}
    for i in range(n_layer):
        for name, n in rows.items():
            cols = () if name.endswith("norm") else (ffn if name == "ffn_down" else dim,)
            shapes[f"blk.{i}.{name}.weight"], shapes[f"blk.{i}.{name}.bias"] = (n, *cols), (n,)
    return kv, _rename(ckpt, _bert_name), shapes


def _bert_name(name: str) -> str | None:
    name = name.removeprefix("bert.")
    if BERT_DROPPED.fullmatch(name):
        return None
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", name)
    if m and m[2] in BERT_LAYER:
        return f"blk.{int(m[1])}.{BERT_LAYER[m[2]]}.{m[3]}"
    if name in BERT_TOP:
        return BERT_TOP[name]
    raise ConvertError(f"unexpected tensor {name!r}")


def _sentence_transformers(model_dir: Path) -> tuple[int, bool]:
    """(pooling_type, normalize) from modules.json; plain BERT checkpoints get mean pooling, no normalization."""
    modules = read_json(model_dir / "modules.json", required=False) or []
    pooling, normalize = 1, False
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if kind.endswith(".Normalize"):
            normalize = True
        elif kind.endswith(".Pooling"):
            cfg = read_json(model_dir / str(module.get("path", "")) / "config.json", required=False) or {}
            if cfg.get("pooling_mode_mean_tokens"):
                pooling = 1
            elif cfg.get("pooling_mode_cls_token"):
                pooling = 2
            elif cfg.get("pooling_mode_lasttoken"):
                pooling = 3
            else:
                raise ConvertError("unsupported sentence-transformers pooling mode")
    return pooling, normalize


# ---------------------------------------------------------------------------------------------- vocabulary

def _wordpiece_vocab(model_dir: Path, n_vocab: int) -> dict[str, Any]:
    tok_config = read_json(model_dir / "tokenizer_config.json", required=False) or {}
    if tok_config.get("do_lower_case") is False:
        raise ConvertError("cased WordPiece vocabularies are not supported (the tokenizer lower-cases)")
    if (model_dir / "vocab.txt").is_file():
        lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
        lines = lines[:-1] if lines and lines[-1] == "" else lines
    else:
        model = (read_json(model_dir / "tokenizer.json") or {}).get("model", {})
        if model.get("type") != "WordPiece":
            raise ConvertError("BERT vocabulary needs vocab.txt or a WordPiece tokenizer.json")
        lines = _by_id(model.get("vocab", {}))
    tokens, types = vocab_txt_to_gguf_tokens(lines), [int(t) for t in vocab_txt_token_types(lines)]
    tokens, types = _pad_vocab(tokens, types, n_vocab)
    ids = {t: i for i, t in enumerate(tokens)}
    kv: dict[str, Any] = {"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": tokens,
                          "tokenizer.ggml.token_type": types}
    for key, text in zip(("padding", "unknown", "cls", "seperator", "mask"), BERT_SPECIALS, strict=True):
        token_id = ids.get(_token_text(tok_config.get(f"{HF_SPECIAL[key]}_token")) or text)
        if token_id is not None:
            kv[f"tokenizer.ggml.{key}_token_id"] = token_id
    return kv


def _bpe_vocab(model_dir: Path, n_vocab: int) -> dict[str, Any]:
    """Byte-level BPE from tokenizer.json: tokens, types, merges, pre-tokenizer, special ids, chat template."""
    tj = read_json(model_dir / "tokenizer.json", required=False)
    if tj is None:
        what = "tokenizer.model (SentencePiece) is not supported" if (model_dir / "tokenizer.model").exists() \
            else "tokenizer.json is missing"
        raise ConvertError(f"{what}; a byte-level BPE tokenizer.json is required")
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ConvertError("only byte-level BPE tokenizer.json files are supported (not SentencePiece-style)")
    vocab = dict(model.get("vocab") or {})
    special = {}
    for added in tj.get("added_tokens") or []:
        vocab[added["content"]] = added["id"]
        special[added["content"]] = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
    tokens = _by_id(vocab)
    types = [int(special.get(t, TokenType.NORMAL)) for t in tokens]
    tokens, types = _pad_vocab(tokens, types, n_vocab)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    kv: dict[str, Any] = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": _bpe_pre(tj.get("pre_tokenizer")),
                          "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
                          "tokenizer.ggml.merges": merges}
    kv.update(_special_tokens(model_dir, {t: i for i, t in enumerate(tokens)}))
    return kv


def _bpe_pre(pre: dict | None) -> str:
    """tokenizer.ggml.pre from the tokenizer.json pre_tokenizer structure (engine.md §7.6)."""
    parts = (pre or {}).get("pretokenizers", [pre]) if (pre or {}).get("type") == "Sequence" else [pre or {}]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    if kinds[:1] == ["Split"] and "ByteLevel" in kinds:
        regex = (parts[0].get("pattern") or {}).get("Regex")
        if regex == LLAMA3_REGEX:
            return "llama-bpe"
        if regex == QWEN2_REGEX:
            return "qwen2"
    raise ConvertError(f"unrecognized BPE pre-tokenizer {kinds}")


def _special_tokens(model_dir: Path, ids: dict[str, int]) -> dict[str, Any]:
    tok_config = read_json(model_dir / "tokenizer_config.json", required=False) or {}
    kv: dict[str, Any] = {}
    for key in ("bos", "eos", "unknown", "padding"):
        text = _token_text(tok_config.get(f"{HF_SPECIAL[key]}_token"))
        if text in ids:
            kv[f"tokenizer.ggml.{key}_token_id"] = ids[text]
    for flag in ("add_bos_token", "add_eos_token"):
        if isinstance(tok_config.get(flag), bool):
            kv[f"tokenizer.ggml.{flag}"] = tok_config[flag]
    template = tok_config.get("chat_template")
    if isinstance(template, list):
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if isinstance(template, str):
        kv["tokenizer.chat_template"] = template
    eos = (read_json(model_dir / "generation_config.json", required=False) or {}).get("eos_token_id")
    if isinstance(eos, list) and all(isinstance(i, int) and i in ids.values() for i in eos):
        kv["tokenizer.ggml.eos_token_ids"] = eos
    return kv


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value if isinstance(value, str) else None


def _by_id(vocab: dict[str, int]) -> list[str]:
    """{token: id} -> tokens ordered by id; the ids must be exactly 0..n-1."""
    tokens: list[str | None] = [None] * len(vocab)
    for text, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < len(vocab) or tokens[i] is not None:
            raise ConvertError(f"tokenizer vocabulary ids are not 0..{len(vocab) - 1} (token {text!r}: {i!r})")
        tokens[i] = text
    return tokens  # type: ignore[return-value]


def _pad_vocab(tokens: list[str], types: list[int], n_vocab: int) -> tuple[list[str], list[int]]:
    """Pad to the embedding's rows with [PADi] USER_DEFINED tokens, as Ollama does."""
    if len(tokens) > n_vocab:
        raise ConvertError(f"the tokenizer has {len(tokens)} tokens but vocab_size is {n_vocab}")
    pad = range(len(tokens), n_vocab)
    return tokens + [f"[PAD{i}]" for i in pad], types + [int(TokenType.USER_DEFINED)] * len(pad)


# ---------------------------------------------------------------------------------------------- tensors

def _rename(ckpt: Checkpoint, gguf_name: Callable[[str], str | None]) -> Tensors:
    out: Tensors = {}
    for source in ckpt.shapes:
        name = gguf_name(source)
        if name is not None:
            out[name] = (source, None)
    return out


def _check_shapes(tensors: Tensors, expected: Shapes, ckpt: Checkpoint) -> None:
    for name, (source, _) in tensors.items():
        if name not in expected:
            raise ConvertError(f"tensor {source or name!r} does not fit the architecture in config.json")
        shape = ckpt.shapes[source] if source else expected[name]
        if shape != expected[name]:
            raise ConvertError(f"tensor {source!r} has shape {list(shape)}, config.json implies "
                               f"{list(expected[name])}")
    missing = sorted(set(expected) - set(tensors) - {"output.weight"})   # a missing head means tied
    if missing:
        raise ConvertError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[0]!r}")


def _plan(tensors: Tensors, ckpt: Checkpoint, quant: GGMLQuantizationType | None) -> list[Planned]:
    tied = "output.weight" not in tensors
    plan = []
    for name, (source, transform) in tensors.items():
        shape = ckpt.shapes[source] if source else transform(np.empty(0)).shape  # type: ignore[misc]
        ggml_type = _choose_type(name, shape, ckpt.dtypes.get(source, "F32"), quant, tied)

        def load(source=source, transform=transform) -> np.ndarray:
            w = ckpt.read(source) if source else np.empty(0, np.float32)
            return transform(w) if transform else w
        plan.append(Planned(name, tuple(shape), ggml_type, load))
    return plan


def _choose_type(name: str, shape: tuple[int, ...], src_dtype: str, quant: GGMLQuantizationType | None,
                 tied: bool) -> GGMLQuantizationType:
    """llama.cpp's rules, reduced to the types we write: 1-D and token types F32; positions never quantized;
    the output head (or a tied token_embd) kept at Q8_0 under 4-bit quantization; rows not a multiple of the
    block size fall back to F16."""
    if len(shape) < 2 or name == "token_types.weight" or quant == Q.F32:
        return Q.F32
    if quant is None:
        return Q.BF16 if src_dtype == "BF16" else Q.F16
    if quant == Q.F16 or name in NEVER_QUANTIZED:
        return Q.F16
    if quant in (Q.Q4_0, Q.Q4_1) and (name == "output.weight" or (tied and name == "token_embd.weight")):
        quant = Q.Q8_0
    return quant if shape[-1] % 32 == 0 else Q.F16


def _default_type(ckpt: Checkpoint) -> GGMLQuantizationType:
    return Q.BF16 if any(len(ckpt.shapes[n]) > 1 and d == "BF16" for n, d in ckpt.dtypes.items()) else Q.F16


def _encode(t: Planned) -> np.ndarray:
    values = t.load()
    if values.shape != t.shape:
        raise ConvertError(f"tensor {t.name!r} read as {values.shape}, expected {t.shape}")
    return gguf_quantize(np.ascontiguousarray(values, dtype=np.float32), t.ggml_type)


# ---------------------------------------------------------------------------------------------- writing

def _write(out_path: Path, arch: str, kv: dict[str, Any], plan: list[Planned]) -> None:
    """Header, metadata and tensor infos first, then each tensor converted and written one at a time (the whole
    model is never in memory); to a temporary file in the target directory, renamed at the end."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".partial", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    writer = GGUFWriter(tmp, arch)
    try:
        for key, value in kv.items():
            _add_kv(writer, key, value)
        for t in plan:
            nbytes = math.prod(quant_shape_to_byte_shape(t.shape, t.ggml_type)) if t.shape else 0
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), nbytes, raw_dtype=t.ggml_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in plan:
            writer.write_tensor_data(_encode(t))
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


def _add_kv(writer: GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif value:
        writer.add_array(key, value)
