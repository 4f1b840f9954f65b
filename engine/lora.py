"""LoRA adapters in GGUF form (Modelfile ADAPTER), applied at load time without touching the base weights.

An adapter file (llama.cpp's convert_lora_to_gguf.py) has ``general.type = adapter``, the base's
``general.architecture``, ``adapter.lora.alpha``, and for each adapted base tensor X the pair ``X.lora_a`` (r, in)
and ``X.lora_b`` (out, r). The adapted product is W·x + s·B·(A·x) with s = scale · alpha / r (s = scale when
alpha is 0), as llama.cpp's build_lora_mm. We keep W in its quantized form and A, B in float32, so this works
for every weight type; several adapters add up.

The models fuse matrices that share an input (attn_q | attn_k | attn_v, ffn_gate | ffn_up): an adapter on
attn_k adds its term to the attn_k rows of the fused product.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass

import numpy as np

from engine.gguf import GGUFFile
from engine.models import MODEL_CLASSES
from engine.quant import QTensor, dequantize

FUSED = {"attn_q": ("attn_qkv", 0), "attn_k": ("attn_qkv", 1), "attn_v": ("attn_qkv", 2),
         "ffn_gate": ("ffn_gate_up", 0), "ffn_up": ("ffn_gate_up", 1)}   # GGUF name -> (model field, member)
_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


class LoraError(ValueError):
    """The adapter does not fit the base model (architecture, tensor names or shapes)."""


@dataclass(frozen=True)
class LowRank:
    """s · B (A x) added to output rows [row_start, row_start + rows of B) of one weight."""

    row_start: int
    a: np.ndarray     # (r, cols) f32
    b: np.ndarray     # (rows, r) f32
    scale: float


class LoraTensor:
    """A QTensor plus low-rank terms, called like a QTensor: x (T, cols) -> (T, rows), or (cols,) -> (rows,)."""

    def __init__(self, base: QTensor, terms: tuple[LowRank, ...]) -> None:
        self.base, self.terms = base, terms
        self.ggml_type, self.rows, self.cols = base.ggml_type, base.rows, base.cols

    def __call__(self, x: np.ndarray, grouped: np.ndarray | None = None) -> np.ndarray:
        y = self.base(x, grouped)
        x = np.asarray(x, dtype=np.float32)
        for t in self.terms:
            y[..., t.row_start:t.row_start + t.b.shape[0]] += np.float32(t.scale) * ((x @ t.a.T) @ t.b.T)
        return y

    def take_rows(self, ids: np.ndarray) -> np.ndarray:
        return self.base.take_rows(ids)

    @property
    def nbytes(self) -> int:
        return self.base.nbytes + sum(t.a.nbytes + t.b.nbytes for t in self.terms)


def apply_lora(model, adapter_path: str | os.PathLike, scale: float = 1.0) -> None:
    """Add the adapter's low-rank terms to ``model`` in place; LoraError (and no change) if it does not fit."""
    with GGUFFile(adapter_path) as f:
        _check_header(model, f.metadata)
        alpha = float(f.metadata.get("adapter.lora.alpha", 0.0))
        pairs = _read_pairs(f)
    edits = []
    for name, (a, b) in pairs.items():
        r = a.shape[0]
        if b.shape[1] != r:
            raise LoraError(f"{name}: lora_a has rank {r} but lora_b has {b.shape[1]}")
        edits.append(_locate(model, name, a, b, scale * alpha / r if alpha else scale))
    for edit in edits:                       # only after every pair was checked: all or nothing
        edit()


def _check_header(model, md: dict) -> None:
    if md.get("general.type") != "adapter" or md.get("adapter.type", "lora") != "lora":
        raise LoraError("not a LoRA adapter (general.type must be 'adapter', adapter.type 'lora')")
    arch = md.get("general.architecture")
    if not isinstance(model, MODEL_CLASSES.get(arch, ())):
        raise LoraError(f"adapter is for architecture {arch!r}, the model is {type(model).__name__}")


def _read_pairs(f: GGUFFile) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Base tensor name -> (A (r, in), B (out, r)) in float32; norm adapters are ignored as llama.cpp does."""
    halves: dict[str, dict[str, np.ndarray]] = {}
    for name, info in f.tensors.items():
        base, dot, part = name.rpartition(".")
        if not dot or part not in ("lora_a", "lora_b"):
            raise LoraError(f"unexpected adapter tensor {name!r} (names must end in .lora_a or .lora_b)")
        if base.endswith("_norm.weight"):
            continue
        if len(info.shape) != 2:
            raise LoraError(f"{name} must be a matrix, has shape {list(info.shape)}")
        halves.setdefault(base, {})[part] = dequantize(f.raw(name), info.ggml_type).reshape(info.shape)
    incomplete = [base for base, h in halves.items() if len(h) != 2]
    if incomplete:
        raise LoraError(f"{incomplete[0]} has only one of lora_a / lora_b")
    return {base: (h["lora_a"], h["lora_b"]) for base, h in halves.items()}


def _locate(model, name: str, a: np.ndarray, b: np.ndarray, s: float):
    """Check one pair against the model and return the edit that attaches it."""
    if name == "output.weight":
        if model.output is getattr(model, "token_embd", None):
            raise LoraError("output.weight: the base model ties its output head to token_embd")
        term = _term(name, model.output, 0, b.shape[0], a, b, s)
        return lambda: setattr(model, "output", _with(model.output, term))
    m = _BLOCK_TENSOR.fullmatch(name)
    if m is None:
        raise LoraError(f"{name}: adapting this tensor is not supported")
    i, tensor = int(m[1]), m[2]
    if i >= len(model.blocks):
        raise LoraError(f"{name}: the base model has {len(model.blocks)} layers")
    blk = model.blocks[i]
    fields = {f.name for f in dataclasses.fields(blk)}
    field, member = (tensor, 0) if tensor in fields else FUSED.get(tensor, (tensor, 0))
    if field not in fields:
        raise LoraError(f"{name}: the base model has no such tensor")
    sizes = _member_rows(model.cfg, field, getattr(blk, field))
    parts = getattr(blk, field)
    parts = parts if isinstance(parts, tuple) else (parts,)
    start = sum(sizes[:member])
    for k, part in enumerate(parts):                      # the fused part holding rows [start, start + size)
        if start < part.rows:
            term = _term(name, part, start, sizes[member], a, b, s)
            return lambda: _replace_part(model, i, field, k, term)
        start -= part.rows
    raise LoraError(f"{name}: rows outside the base weight")


def _member_rows(cfg, field: str, value) -> list[int]:
    """Output rows of each member of a (possibly fused) block field."""
    if field == "attn_qkv":
        n_kv = getattr(cfg, "n_kv_head", cfg.n_head)     # bert has no grouped-query attention
        return [cfg.n_head * cfg.head_dim, n_kv * cfg.head_dim, n_kv * cfg.head_dim]
    if field == "ffn_gate_up":
        return [cfg.ffn_dim, cfg.ffn_dim]
    return [sum(p.rows for p in value) if isinstance(value, tuple) else value.rows]


def _term(name: str, part, row_start: int, rows: int, a: np.ndarray, b: np.ndarray, s: float) -> LowRank:
    if a.shape[1] != part.cols or b.shape[0] != rows or row_start + rows > part.rows:
        raise LoraError(f"{name}: adapter maps {a.shape[1]} -> {b.shape[0]} features, the base weight "
                        f"{part.cols} -> {rows}")
    return LowRank(row_start, np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32), s)


def _with(weight, term: LowRank) -> LoraTensor:
    if isinstance(weight, LoraTensor):
        return LoraTensor(weight.base, (*weight.terms, term))
    return LoraTensor(weight, (term,))


def _replace_part(model, i: int, field: str, k: int, term: LowRank) -> None:
    blk = model.blocks[i]
    value = getattr(blk, field)
    if isinstance(value, tuple):
        value = value[:k] + (_with(value[k], term),) + value[k + 1:]
    else:
        value = _with(value, term)
    model.blocks[i] = dataclasses.replace(blk, **{field: value})
