"""Safe, zero-copy reader for GGUF v2/v3 files.

GGUF files reach us from untrusted uploads (/api/create), so every count and length the file claims is checked
against the bytes that are actually left before anything proportional to it is allocated, and every problem
raises the single ``GGUFError``. We parse with ``mmap`` + ``struct`` / ``np.frombuffer`` ourselves instead of
``gguf.GGUFReader``: that reader trusts header counts (it hangs on an array of 2**63 elements) and builds one
numpy view per array element (about 10 s for Gemma 3's 262k-token vocabulary).

Layout (little-endian): magic "GGUF", u32 version, u64 tensor_count, u64 kv_count, kv pairs, tensor infos,
zero padding up to ``alignment``, then the data section; tensor offsets are relative to the data section.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 20
MAX_DIMS = 4
MAX_DIM_SIZE = 1 << 40
MAX_TENSOR_NAME_BYTES = 256  # ggml allows 63; be lenient with odd converters

_HEADER = struct.Struct("<4sIQQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, value type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one ne, type, offset

_V = GGUFValueType
_SCALARS: dict[GGUFValueType, struct.Struct] = {
    _V.UINT8: struct.Struct("<B"), _V.INT8: struct.Struct("<b"),
    _V.UINT16: struct.Struct("<H"), _V.INT16: struct.Struct("<h"),
    _V.UINT32: struct.Struct("<I"), _V.INT32: struct.Struct("<i"),
    _V.UINT64: struct.Struct("<Q"), _V.INT64: struct.Struct("<q"),
    _V.FLOAT32: struct.Struct("<f"), _V.FLOAT64: struct.Struct("<d"),
    _V.BOOL: struct.Struct("<B"),
}  # fmt: skip
_ARRAY_DTYPES: dict[GGUFValueType, np.dtype] = {
    _V.UINT8: np.dtype("u1"), _V.INT8: np.dtype("i1"),
    _V.UINT16: np.dtype("<u2"), _V.INT16: np.dtype("<i2"),
    _V.UINT32: np.dtype("<u4"), _V.INT32: np.dtype("<i4"),
    _V.UINT64: np.dtype("<u8"), _V.INT64: np.dtype("<i8"),
    _V.FLOAT32: np.dtype("<f4"), _V.FLOAT64: np.dtype("<f8"),
    _V.BOOL: np.dtype("u1"),
}  # fmt: skip
_Q = GGMLQuantizationType
_TENSOR_DTYPES: dict[GGMLQuantizationType, np.dtype] = {
    _Q.F32: np.dtype("<f4"), _Q.F16: np.dtype("<f2"), _Q.F64: np.dtype("<f8"),
    _Q.I8: np.dtype("i1"), _Q.I16: np.dtype("<i2"), _Q.I32: np.dtype("<i4"), _Q.I64: np.dtype("<i8"),
}  # fmt: skip


class GGUFError(ValueError):
    """The file is not a well-formed GGUF v2/v3 file we are willing to load."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes are; validated to lie inside the file and not overlap another tensor."""

    name: str
    ggml_type: GGMLQuantizationType
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length (contiguous dimension)
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """NumPy order (outermost first)."""
        return tuple(reversed(self.ne))

    @property
    def row_bytes(self) -> int:
        block_size, type_size = GGML_QUANT_SIZES[self.ggml_type]
        return self.ne[0] // block_size * type_size


@dataclass(frozen=True)
class _Limits:
    max_tensor_count: int
    max_kv_count: int
    max_string_bytes: int
    max_array_len: int


class _Cursor:
    """Bounds-checked little-endian reads from ``buf``; raises GGUFError instead of reading past the end."""

    def __init__(self, buf: mmap.mmap, pos: int, limits: _Limits) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.limits = limits

    def left(self) -> int:
        return self.end - self.pos

    def take(self, n: int, what: str) -> int:
        """Reserve ``n`` bytes and return their start offset."""
        if n > self.end - self.pos:
            raise GGUFError(f"truncated file: {what} needs {n} bytes at {self.pos}, {self.left()} left")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: struct.Struct, what: str) -> Any:
        return fmt.unpack_from(self.buf, self.take(fmt.size, what))[0]

    def u32(self, what: str) -> int:
        return self.unpack(_U32, what)

    def u64(self, what: str) -> int:
        return self.unpack(_U64, what)

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"{what} length")
        if n > self.limits.max_string_bytes:
            raise GGUFError(f"{what} length {n} exceeds the cap of {self.limits.max_string_bytes} bytes")
        start = self.take(n, what)
        return self.buf[start : start + n]

    def string(self, what: str) -> str:
        start = self.pos
        try:
            return self.raw_string(what).decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{what} at offset {start} is not valid UTF-8") from e

    def value(self, vtype: GGUFValueType, key: str) -> Any:
        if vtype == _V.STRING:
            return self.string(f"value of {key!r}")
        if vtype == _V.ARRAY:
            return self.array(key)
        v = self.unpack(_SCALARS[vtype], f"value of {key!r}")
        if vtype == _V.BOOL:
            return _to_bool(v, key)
        return v

    def value_type(self, key: str, *, in_array: bool = False) -> GGUFValueType:
        raw = self.u32(f"value type of {key!r}")
        try:
            vtype = GGUFValueType(raw)
        except ValueError:
            raise GGUFError(f"unknown value type {raw} for {key!r}") from None
        if in_array and vtype == _V.ARRAY:
            raise GGUFError(f"nested arrays are not supported ({key!r})")
        return vtype

    def array(self, key: str) -> np.ndarray | list[str]:
        etype = self.value_type(key, in_array=True)
        count = self.u64(f"array length of {key!r}")
        if count > self.limits.max_array_len:
            raise GGUFError(f"array {key!r} has {count} elements, cap is {self.limits.max_array_len}")
        if etype == _V.STRING:
            return self.string_array(count, key)
        dtype = _ARRAY_DTYPES[etype]
        start = self.take(count * dtype.itemsize, f"array {key!r} of {count} elements")
        # A copy, not a view, so that close() can unmap the file.
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=start).copy()
        if etype == _V.BOOL:
            if arr.size and arr.max() > 1:
                raise GGUFError(f"array {key!r} holds a bool byte that is neither 0 nor 1")
            arr = arr.view(np.bool_)
        return arr

    def string_array(self, count: int, key: str) -> list[str]:
        """The hot loop of metadata parsing (vocabularies): locals only, one bounds check per element."""
        if count * 8 > self.left():
            raise GGUFError(f"string array {key!r} of {count} elements cannot fit in {self.left()} bytes")
        buf, pos, end, cap = self.buf, self.pos, self.end, self.limits.max_string_bytes
        unpack, out = _U64.unpack_from, []
        try:
            for _ in range(count):
                if end - pos < 8:
                    raise GGUFError(f"truncated file: string array {key!r} ends at offset {pos}")
                n = unpack(buf, pos)[0]
                pos += 8
                if n > cap or n > end - pos:
                    raise GGUFError(f"string of length {n} in array {key!r} at offset {pos} is too long")
                out.append(buf[pos : pos + n].decode("utf-8"))
                pos += n
        except UnicodeDecodeError as e:
            raise GGUFError(f"string in array {key!r} at offset {pos} is not valid UTF-8") from e
        self.pos = pos
        return out


def _to_bool(byte: int, key: str) -> bool:
    if byte > 1:
        raise GGUFError(f"bool value of {key!r} is {byte}, must be 0 or 1")
    return bool(byte)


def _align(x: int, alignment: int) -> int:
    return x + (-x % alignment)


def _read_header(cur: _Cursor) -> tuple[int, int, int]:
    """Return (version, tensor_count, kv_count) after checking magic, version and the counts' plausibility."""
    magic, version, n_tensors, n_kv = _HEADER.unpack_from(cur.buf, cur.take(_HEADER.size, "header"))
    if magic != GGUF_MAGIC:
        raise GGUFError(f"bad magic {magic!r}, expected {GGUF_MAGIC!r}")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0:
            raise GGUFError("big-endian GGUF files are not supported")
        raise GGUFError(f"unsupported GGUF version {version} (only 2 and 3)")
    limits = cur.limits
    if n_kv > limits.max_kv_count or n_tensors > limits.max_tensor_count:
        raise GGUFError(f"kv_count {n_kv} / tensor_count {n_tensors} exceed the caps")
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > cur.left():
        raise GGUFError(f"kv_count {n_kv} and tensor_count {n_tensors} cannot fit in {cur.left()} bytes")
    return version, n_tensors, n_kv


def _read_metadata(cur: _Cursor, n_kv: int) -> tuple[dict[str, Any], dict[str, GGUFValueType]]:
    """Return (key -> value, key -> value type) in file order."""
    metadata: dict[str, Any] = {}
    types: dict[str, GGUFValueType] = {}
    for i in range(n_kv):
        key = cur.string(f"key #{i}")
        if not key:
            raise GGUFError(f"key #{i} is empty")
        if key in metadata:
            raise GGUFError(f"duplicate key {key!r}")
        types[key] = cur.value_type(key)
        metadata[key] = cur.value(types[key], key)
    return metadata, types


def _read_alignment(metadata: dict[str, Any], types: dict[str, GGUFValueType]) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if types["general.alignment"] != _V.UINT32:
        raise GGUFError("general.alignment must be a UINT32")
    if value < 1 or value & (value - 1) or value > MAX_ALIGNMENT:
        raise GGUFError(f"general.alignment {value} is not a power of two <= {MAX_ALIGNMENT}")
    return value


def _read_tensor_info(cur: _Cursor, i: int) -> tuple[str, GGMLQuantizationType, tuple[int, ...], int]:
    """Return (name, type, ne, offset relative to the data section) of tensor info #i."""
    name = cur.string(f"name of tensor #{i}")
    if len(name.encode()) > MAX_TENSOR_NAME_BYTES:
        raise GGUFError(f"tensor name {name[:64]!r}... is longer than {MAX_TENSOR_NAME_BYTES} bytes")
    n_dims = cur.u32(f"n_dims of {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFError(f"tensor {name!r} has {n_dims} dimensions, must be 1..{MAX_DIMS}")
    ne = tuple(cur.u64(f"ne of {name!r}") for _ in range(n_dims))
    if any(not 1 <= n < MAX_DIM_SIZE for n in ne):
        raise GGUFError(f"tensor {name!r} has a dimension outside [1, 2**40): {ne}")
    raw_type = cur.u32(f"type of {name!r}")
    try:
        ggml_type = GGMLQuantizationType(raw_type)
        block_size, _ = GGML_QUANT_SIZES[ggml_type]
    except (ValueError, KeyError):
        raise GGUFError(f"tensor {name!r} has unknown ggml type {raw_type}") from None
    if ne[0] % block_size:
        raise GGUFError(f"tensor {name!r}: ne[0]={ne[0]} is not a multiple of the block size {block_size}")
    return name, ggml_type, ne, cur.u64(f"offset of {name!r}")


def _nbytes(ggml_type: GGMLQuantizationType, ne: tuple[int, ...]) -> int:
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    n_elements = 1
    for n in ne:
        n_elements *= n  # Python ints: no wraparound (CVE-2025-53630 class of bugs)
    return n_elements // block_size * type_size


def _check_layout(tensors: dict[str, TensorInfo], data_offset: int, alignment: int, file_size: int) -> None:
    """Every tensor aligned, inside the file, and not overlapping another one."""
    for t in tensors.values():
        rel_offset = t.offset - data_offset
        if rel_offset % alignment:
            raise GGUFError(f"tensor {t.name!r} offset {rel_offset} is not aligned to {alignment}")
        if t.offset + t.nbytes > file_size:
            raise GGUFError(f"tensor {t.name!r} ({t.nbytes} bytes at {t.offset}) extends past end of file")
    prev: TensorInfo | None = None
    for t in sorted(tensors.values(), key=lambda t: t.offset):
        if prev is not None and t.offset < prev.offset + prev.nbytes:
            raise GGUFError(f"tensors {prev.name!r} and {t.name!r} overlap")
        prev = t


class GGUFFile:
    """A validated GGUF file: ``metadata`` as plain Python/NumPy values, ``tensors`` as zero-copy mmap views.

    Use as a context manager or call ``close()``. Views returned by ``raw``/``array`` stay valid after
    ``close()``: the mapping is then released when the last view is garbage-collected.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        max_tensor_count: int = 1 << 16,
        max_kv_count: int = 1 << 16,
        max_string_bytes: int = 16 << 20,
        max_array_len: int = 1 << 28,
    ) -> None:
        self.path = Path(path)
        limits = _Limits(max_tensor_count, max_kv_count, max_string_bytes, max_array_len)
        with open(self.path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            if file_size < _HEADER.size:
                raise GGUFError(f"file of {file_size} bytes is too small for a GGUF header")
            self._mm: mmap.mmap | None = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse(_Cursor(self._mm, 0, limits))
        except BaseException:
            self.close()
            raise

    def _parse(self, cur: _Cursor) -> None:
        self.version, n_tensors, n_kv = _read_header(cur)
        self.metadata, types = _read_metadata(cur, n_kv)
        self.alignment: int = _read_alignment(self.metadata, types)
        infos = [_read_tensor_info(cur, i) for i in range(n_tensors)]
        self.data_offset: int = _align(cur.pos, self.alignment)
        self.tensors: dict[str, TensorInfo] = {}
        for name, ggml_type, ne, rel_offset in infos:
            if name in self.tensors:
                raise GGUFError(f"duplicate tensor name {name!r}")
            nbytes = _nbytes(ggml_type, ne)
            self.tensors[name] = TensorInfo(name, ggml_type, ne, self.data_offset + rel_offset, nbytes)
        _check_layout(self.tensors, self.data_offset, self.alignment, cur.end)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError("general.architecture is missing or not a string")
        return arch

    def raw(self, name: str) -> np.ndarray:
        """Zero-copy read-only uint8 view shaped (*shape[:-1], row_bytes), any type; KeyError if absent."""
        t = self.tensors[name]
        data = np.frombuffer(self._buffer(), dtype=np.uint8, count=t.nbytes, offset=t.offset)
        return data.reshape(*t.shape[:-1], t.row_bytes)

    def array(self, name: str) -> np.ndarray:
        """Zero-copy typed view with the numpy shape, for the plain (non-block) types F32/F16/F64/I8..I64."""
        t = self.tensors[name]
        dtype = _TENSOR_DTYPES.get(t.ggml_type)
        if dtype is None:
            raise GGUFError(f"tensor {name!r} is {t.ggml_type.name}, not a plain numeric type; use raw()")
        data = np.frombuffer(self._buffer(), dtype=dtype, count=t.nbytes // dtype.itemsize, offset=t.offset)
        return data.reshape(t.shape)

    def release(self, name: str, start: int = 0, stop: int | None = None) -> None:
        """Drop rows [start, stop) of a tensor (all of it by default) from this process's resident memory once their
        data has been copied out; rows are those of ``raw(name)`` flattened to (rows, row_bytes).

        Only whole pages inside the range are dropped, so a page shared with the next range stays until that one is
        released too. MADV_DONTNEED goes to this read-only file mapping only, where it never loses data: a later read
        faults the pages back in from the file. Loading a model thus no longer holds the file resident next to the
        repacked copy.
        """
        t = self.tensors[name]
        rows = t.nbytes // t.row_bytes
        stop = rows if stop is None else stop
        if not 0 <= start <= stop <= rows:
            raise ValueError(f"rows [{start}, {stop}) are not inside tensor {name!r} of {rows} rows")
        page = mmap.PAGESIZE
        first = -(-(t.offset + start * t.row_bytes) // page) * page          # whole pages inside the range only
        end = (t.offset + stop * t.row_bytes) // page * page
        if end > first:
            self._buffer().madvise(mmap.MADV_DONTNEED, first, end - first)

    def _buffer(self) -> mmap.mmap:
        if self._mm is None:
            raise GGUFError(f"{self.path.name} is closed")
        return self._mm

    def close(self) -> None:
        if self._mm is None:
            return
        try:
            self._mm.close()
        except BufferError:
            pass  # views handed out by raw()/array() still use it; unmapped when they are collected
        self._mm = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
