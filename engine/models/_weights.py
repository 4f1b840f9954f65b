"""Loading a model's weight matrices from a GGUF file, shared by the architecture files."""

from __future__ import annotations

import functools
import itertools
import weakref

import numpy as np

from engine.gguf import GGUFFile
from engine.hugepages import HugePageArena
from engine.quant import QTensor, concat_rows, load_tensor

_ARENAS: weakref.WeakKeyDictionary[GGUFFile, HugePageArena] = weakref.WeakKeyDictionary()   # one per file loaded


def load(gguf: GGUFFile, name: str) -> QTensor:
    """One weight matrix, repacked for the kernels into huge-page memory (copied: the file can be closed after)."""
    arena = _arena(gguf)
    return _resident(arena, _repacked(gguf, name, arena.empty))    # a big matrix is repacked into the arena


def vector(gguf: GGUFFile, name: str) -> np.ndarray:
    """A norm weight or bias as float32 (copied)."""
    values = np.array(gguf.array(name), dtype=np.float32)
    gguf.release(name)
    return values


def load_fused(gguf: GGUFFile, names: list[str]) -> tuple[QTensor, ...]:
    """Matrices that multiply the same input (q|k|v, gate|up), each run of neighbours of one quant type fused into
    one matrix so that one kernel call serves it. Quantized files mix types (a Q4_K_M file keeps attn_v in Q6_K in
    some layers), so q|k|v can come back as (q|k, v)."""
    runs = itertools.groupby(names, key=lambda name: gguf.tensors[name].ggml_type)
    # the parts stay out of the arena (it never frees): only the fused matrix moves in
    parts = [[_repacked(gguf, name) for name in group] for _, group in runs]
    return tuple(_resident(_arena(gguf), p[0] if len(p) == 1 else concat_rows(p)) for p in parts)


def _repacked(gguf: GGUFFile, name: str, empty=np.empty) -> QTensor:
    """One weight matrix repacked for the kernels; a matrix of several row chunks is allocated by ``empty``.

    Each chunk of rows leaves resident memory as soon as it is repacked, so a big matrix (Gemma 3's 178 MB
    embedding) never has all its file pages resident next to its repacked copy; the final release drops the pages
    that straddle two chunks."""
    info = gguf.tensors[name]
    tensor = load_tensor(gguf.raw(name), info.ggml_type, info.shape, functools.partial(gguf.release, name), empty)
    gguf.release(name)
    return tensor


def _arena(gguf: GGUFFile) -> HugePageArena:
    return _ARENAS.setdefault(gguf, HugePageArena())


def _resident(arena: HugePageArena, tensor: QTensor) -> QTensor:
    """``tensor`` with its arrays in ``arena`` (engine.hugepages), their home for the model's life."""
    packed = type(tensor.packed)(tensor.packed[0], *(arena.resident(a) for a in tensor.packed[1:]))
    return QTensor(tensor.ggml_type, tensor.rows, tensor.cols, packed)


def matmul_parts(parts: tuple[QTensor, ...], x: np.ndarray, grouped: np.ndarray | None = None) -> np.ndarray:
    """x (T, cols) times every part, outputs side by side: (T, sum of part rows). ``grouped``: see QTensor."""
    if len(parts) == 1:
        return parts[0](x, grouped)
    return np.concatenate([p(x, grouped) for p in parts], axis=1)
