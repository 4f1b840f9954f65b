"""engine.gguf: round trips through gguf.GGUFWriter, hand-built malformed files, the real model files.

Malformed files are built byte by byte with ``build_gguf`` so that each case breaks exactly one rule;
each case also checks the error message, so a test cannot pass because of an unrelated earlier failure.
"""

from __future__ import annotations

import mmap
import struct
import time
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q
from gguf.constants import GGUFValueType as V
from gguf.quants import quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.gguf import GGUFError, GGUFFile
from tests.engine.resident_pages import mapping_rss_kb

# --------------------------------------------------------------------------- byte-level builder


def gstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, V.UINT32, struct.pack("<I", value))


def kv_array(key: str, etype: int, count: int, payload: bytes) -> bytes:
    return kv(key, V.ARRAY, struct.pack("<IQ", etype, count) + payload)


def tinfo(name: str | bytes, ne: tuple[int, ...], ggml_type: int, offset: int, n_dims: int | None = None):
    """One tensor-info record; ``n_dims`` overrides the declared dimension count."""
    n_dims = len(ne) if n_dims is None else n_dims
    return gstr(name) + struct.pack(f"<I{len(ne)}QIQ", n_dims, *ne, ggml_type, offset)


ARCH = kv("general.architecture", V.STRING, gstr("llama"))
F32_8 = tinfo("a", (8,), Q.F32, 0)  # 32 bytes of data at offset 0


def build_gguf(
    kvs: list[bytes] = (ARCH,),
    tensors: list[bytes] = (F32_8,),
    data: bytes = bytes(32),
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
    n_kv: int | None = None,
    n_tensors: int | None = None,
    alignment: int = 32,
) -> bytes:
    """A GGUF file from parts; the counts default to the number of parts given."""
    n_kv = len(kvs) if n_kv is None else n_kv
    n_tensors = len(tensors) if n_tensors is None else n_tensors
    head = magic + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs) + b"".join(tensors)
    return head + bytes(-len(head) % alignment) + data


@pytest.fixture
def load(tmp_path):
    def load(blob: bytes, **kwargs) -> GGUFFile:
        path = tmp_path / "f.gguf"
        path.write_bytes(blob)
        return GGUFFile(path, **kwargs)

    return load


# --------------------------------------------------------------------------- valid hand-built files


def test_minimal_hand_built_file(load):
    data = np.arange(8, dtype=np.float32)
    with load(build_gguf(data=data.tobytes())) as f:
        assert f.version == 3 and f.alignment == 32 and f.data_offset % 32 == 0
        assert f.architecture == "llama"
        np.testing.assert_array_equal(f.array("a"), data)


def test_lenient_cases_are_accepted(load):
    name = "n" * 200  # longer than ggml's 63 bytes, within our lenient 256
    blob = build_gguf(
        [ARCH, kv_u32("general.alignment", 64), kv_array("empty", V.STRING, 0, b""),
         kv_array("empty.u32", V.UINT32, 0, b""), kv("empty.s", V.STRING, gstr(""))],
        [tinfo(name, (8,), Q.F32, 0), tinfo("b", (4, 2), Q.F16, 64)],
        bytes(80),
        version=2,
        alignment=64,
    )  # fmt: skip
    with load(blob) as f:
        assert f.version == 2 and f.alignment == 64 and f.data_offset % 64 == 0
        assert f.metadata["empty"] == [] and f.metadata["empty.s"] == ""
        assert f.metadata["empty.u32"].dtype == np.uint32 and f.metadata["empty.u32"].size == 0
        assert list(f.tensors) == [name, "b"]
        assert f.tensors["b"].offset == f.data_offset + 64 and f.array("b").shape == (2, 4)


def test_file_without_tensors(load):
    with load(build_gguf(tensors=[], data=b"")) as f:
        assert f.tensors == {} and f.metadata == {"general.architecture": "llama"}


def test_missing_architecture(load):
    with load(build_gguf(kvs=[kv_u32("x", 1)])) as f, pytest.raises(GGUFError, match="architecture"):
        _ = f.architecture


# --------------------------------------------------------------------------- malformed files

BIG = 2**64 - 1
_NO_T: list[bytes] = []  # no tensors


def case(case_id: str, blob: bytes, message: str):
    return pytest.param(blob, message, id=case_id)


def kv_only(*kvs: bytes) -> bytes:
    return build_gguf(list(kvs), _NO_T, b"")


def one_tensor(info: bytes) -> bytes:
    return build_gguf(tensors=[info])


CORRUPT = [
    case("empty-file", b"", "too small"),
    case("shorter-than-header", b"GGUF\x03\x00\x00\x00", "too small"),
    case("bad-magic", build_gguf(magic=b"GGUG"), "magic"),
    case("version-1", build_gguf(version=1), "version 1"),
    case("version-future", build_gguf(version=4), "version 4"),
    case("big-endian", build_gguf(version=0x03000000), "big-endian"),
    case("huge-kv-count", build_gguf(n_kv=BIG), "kv_count"),
    case("kv-count-past-eof", build_gguf(n_kv=1000), "kv_count"),
    case("huge-tensor-count", build_gguf(n_tensors=BIG), "tensor_count"),
    case("key-past-eof", kv_only(struct.pack("<Q", 1000) + b"k"), "truncated.*key"),
    case("key-length-2^64", kv_only(struct.pack("<Q", BIG) + bytes(16)), "cap"),
    case("string-past-eof", kv_only(kv("k", V.STRING, struct.pack("<Q", 500) + b"abc")), "truncated"),
    case("string-over-cap", kv_only(kv("k", V.STRING, struct.pack("<Q", (16 << 20) + 1))), "cap"),
    case("array-2^63", kv_only(kv_array("k", V.UINT8, 2**63, b"")), "cap"),
    case("string-array-2^63", kv_only(kv_array("k", V.STRING, 2**63, b"")), "cap"),
    case("array-past-eof", kv_only(kv_array("k", V.UINT32, 1000, bytes(40))), "truncated"),
    case("string-array-past-eof", kv_only(kv_array("k", V.STRING, 2**20, bytes(64))), "cannot fit"),
    case("string-in-array-past-eof",
         build_gguf([kv_array("k", V.STRING, 2, gstr("a") + struct.pack("<Q", 99))], _NO_T, bytes(16)),
         "too long"),
    case("bad-utf8-in-array", kv_only(kv_array("k", V.STRING, 1, gstr(b"\xff"))), "UTF-8"),
    case("nested-array", kv_only(kv_array("k", V.ARRAY, 1, struct.pack("<IQ", V.UINT8, 0))), "nested"),
    case("unknown-value-type", kv_only(kv("k", 13, bytes(8))), "unknown value type 13"),
    case("unknown-elem-type", kv_only(kv_array("k", 99, 1, bytes(8))), "unknown value type 99"),
    case("bad-bool", kv_only(kv("k", V.BOOL, b"\x02")), "bool"),
    case("bad-bool-in-array", kv_only(kv_array("k", V.BOOL, 3, b"\x00\x01\x07")), "bool"),
    case("duplicate-key", build_gguf([ARCH, ARCH]), "duplicate key"),
    case("empty-key", build_gguf([kv("", V.UINT8, b"\x00")]), "empty"),
    case("bad-utf8-key", build_gguf([kv(b"\xc3\x28", V.UINT8, b"\x00")]), "UTF-8"),
    case("alignment-13", build_gguf([kv_u32("general.alignment", 13)]), "power of two"),
    case("alignment-0", build_gguf([kv_u32("general.alignment", 0)]), "power of two"),
    case("alignment-huge", build_gguf([kv_u32("general.alignment", 1 << 21)]), "power of two"),
    case("alignment-i32", build_gguf([kv("general.alignment", V.INT32, struct.pack("<i", 32))]), "UINT32"),
    case("alignment-string", build_gguf([kv("general.alignment", V.STRING, gstr("32"))]), "UINT32"),
    case("removed-tensor-type", one_tensor(tinfo("a", (8,), 4, 0)), "unknown ggml type 4"),
    case("unknown-tensor-type", one_tensor(tinfo("a", (8,), 1000, 0)), "unknown ggml type"),
    case("zero-dim", one_tensor(tinfo("a", (8, 0), Q.F32, 0)), "dimension"),
    case("dim-2^40", one_tensor(tinfo("a", (2**40,), Q.I8, 0)), "dimension"),
    case("n-dims-5", one_tensor(tinfo("a", (8, 1, 1, 1, 1), Q.F32, 0)), "5 dimensions"),
    case("n-dims-0", one_tensor(tinfo("a", (), Q.F32, 0)), "0 dimensions"),
    case("n-dims-huge", one_tensor(tinfo("a", (8,), Q.F32, 0, n_dims=2**31)), "dimensions"),
    case("ne0-not-block", one_tensor(tinfo("a", (31, 2), Q.Q8_0, 0)), "multiple of the block"),
    case("data-past-eof", one_tensor(tinfo("a", (9,), Q.F32, 0)), "past end of file"),
    case("nbytes-2^156", one_tensor(tinfo("a", (2**39,) * 4, Q.I8, 0)), "past end of file"),
    case("misaligned-offset", one_tensor(tinfo("a", (2,), Q.F32, 16)), "not aligned"),
    case("offset-2^64", one_tensor(tinfo("a", (4,), Q.F32, 2**64 - 32)), "past end of file"),
    case("overlap", build_gguf(tensors=[F32_8, tinfo("b", (16,), Q.F32, 0)], data=bytes(64)), "overlap"),
    case("duplicate-tensor-name",
         build_gguf(tensors=[F32_8, tinfo("a", (8,), Q.F32, 32)], data=bytes(64)), "duplicate tensor name"),
    case("tensor-name-257", one_tensor(tinfo("t" * 257, (8,), Q.F32, 0)), "longer than"),
    case("tensor-name-bad-utf8", one_tensor(tinfo(b"\xff", (8,), Q.F32, 0)), "UTF-8"),
]


@pytest.mark.parametrize("blob, message", CORRUPT)
def test_malformed_file_is_rejected(load, blob, message):
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(GGUFError, match=message):
            load(blob)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Nothing allocated or looped over in proportion to a count the file claims.
    assert peak_bytes < 1 << 20 and time.perf_counter() - t0 < 0.5


def test_caps_are_configurable(load):
    blob = build_gguf([ARCH, kv_array("k", V.UINT8, 5, bytes(5)), kv("s", V.STRING, gstr("abcdef"))])
    with pytest.raises(GGUFError, match="5 elements, cap is 4"):
        load(blob, max_array_len=4)
    with pytest.raises(GGUFError, match="cap of 5 bytes"):
        load(blob, max_string_bytes=5)
    with pytest.raises(GGUFError, match="exceed the caps"):
        load(blob, max_kv_count=2)
    with pytest.raises(GGUFError, match="exceed the caps"):
        load(blob, max_tensor_count=0)


def test_array_of_block_type_is_refused(load):
    blob = build_gguf(tensors=[tinfo("q", (32, 2), Q.Q8_0, 0)], data=bytes(68))
    with load(blob) as f:
        assert f.raw("q").shape == (2, 34)
        with pytest.raises(GGUFError, match="Q8_0"):
            f.array("q")


RICH = build_gguf(
    [ARCH, kv_u32("a.u32", 7), kv("a.b", V.BOOL, b"\x01"), kv("a.f", V.FLOAT32, struct.pack("<f", 0.5)),
     kv_array("a.toks", V.STRING, 3, gstr("x") + gstr("") + gstr("zz")),
     kv_array("a.i", V.INT32, 3, struct.pack("<3i", -1, 0, 1)), kv_array("a.bools", V.BOOL, 2, b"\x01\x00")],
    [tinfo("w", (8, 2), Q.F32, 0), tinfo("q", (32,), Q.Q8_0, 64)],
    bytes(64) + bytes(34),
)  # fmt: skip


def test_rich_hand_built_file_reads_back(load):
    with load(RICH) as f:
        md = f.metadata
        assert md["a.u32"] == 7 and md["a.b"] is True and md["a.f"] == 0.5
        assert md["a.toks"] == ["x", "", "zz"]
        assert md["a.i"].dtype == np.int32 and md["a.i"].tolist() == [-1, 0, 1]
        assert md["a.bools"].dtype == np.bool_ and md["a.bools"].tolist() == [True, False]
        assert f.raw("w").shape == (2, 32) and f.raw("q").shape == (34,)


def test_truncation_at_every_byte_raises_ggufferror(tmp_path):
    path = tmp_path / "cut.gguf"
    for cut in range(len(RICH)):  # header region, padding, and inside the data of both tensors
        path.write_bytes(RICH[:cut])
        with pytest.raises(GGUFError):
            GGUFFile(path)


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "m.gguf"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.integers(0, len(RICH) - 1), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(len(RICH) // 2, len(RICH)),
)
def test_random_mutations_only_raise_ggufferror(fuzz_path, edits, cut):
    blob = bytearray(RICH)
    for pos, byte in edits:
        blob[pos] = byte
    fuzz_path.write_bytes(bytes(blob[:cut]))
    try:
        f = GGUFFile(fuzz_path)
    except GGUFError:
        return
    with f:  # accepted: every view must lie inside the file
        for name, t in f.tensors.items():
            assert f.raw(name).nbytes == t.nbytes and t.offset + t.nbytes <= cut


# --------------------------------------------------------------------------- GGUFWriter round trip


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A small file written by gguf-py with several value and tensor types; returns (path, tensors)."""
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 8)).astype(np.float32),
        "f16": rng.standard_normal((2, 4, 16)).astype(np.float16),
        "i32": np.arange(5, dtype=np.int32),
        "i8": np.arange(-8, 8, dtype=np.int8).reshape(1, 2, 2, 4),
        "f64": rng.standard_normal(3),
        "q8_0": quantize(rng.standard_normal((4, 64)).astype(np.float32), Q.Q8_0),
    }
    path = tmp_path_factory.mktemp("w") / "tiny.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200), w.add_int8("t.i8", -100), w.add_uint16("t.u16", 60000), w.add_int16("t.i16", -3)
    w.add_uint32("t.u32", 4_000_000_000), w.add_int32("t.i32", -7), w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**40)), w.add_float32("t.f32", 1.25), w.add_float64("t.f64", 0.1)
    w.add_bool("t.true", True), w.add_bool("t.false", False), w.add_string("t.str", "héllo ✓")
    w.add_array("t.strs", ["a", "Ġb", "日本"]), w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.floats", [0.5, -1.5]), w.add_array("t.bools", [True, False, True])
    w.add_key_value("t.u32s", [1, 2**32 - 1], V.ARRAY, sub_type=V.UINT32)
    for name, arr in tensors.items():
        w.add_tensor(name, arr, raw_dtype=Q.Q8_0 if name == "q8_0" else None)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return path, tensors


def test_writer_metadata_round_trip(written):
    path, _ = written
    with GGUFFile(path) as f:
        md = f.metadata
    assert md["general.architecture"] == "llama" and md["general.alignment"] == 64
    scalars = {"t.u8": 200, "t.i8": -100, "t.u16": 60000, "t.i16": -3, "t.u32": 4_000_000_000, "t.i32": -7,
               "t.u64": 2**63 + 5, "t.i64": -(2**40), "t.f32": 1.25, "t.f64": 0.1, "t.str": "héllo ✓"}
    for key, want in scalars.items():
        assert md[key] == want and type(md[key]) is type(want), key
    assert md["t.true"] is True and md["t.false"] is False
    assert md["t.strs"] == ["a", "Ġb", "日本"]
    arrays = [("t.ints", np.int32, [1, -2, 3]), ("t.floats", np.float32, [0.5, -1.5]),
              ("t.bools", np.bool_, [True, False, True]), ("t.u32s", np.uint32, [1, 2**32 - 1])]
    for key, dtype, want in arrays:
        assert isinstance(md[key], np.ndarray) and md[key].dtype == dtype and md[key].ndim == 1, key
        assert md[key].tolist() == want, key


def test_writer_tensors_round_trip(written):
    path, tensors = written
    with GGUFFile(path) as f:
        assert list(f.tensors) == list(tensors) and f.alignment == 64
        for name, want in tensors.items():
            t = f.tensors[name]
            assert t.offset % 64 == 0 and t.offset >= f.data_offset
            assert t.nbytes == want.nbytes
            raw = f.raw(name)
            assert raw.dtype == np.uint8 and not raw.flags.writeable and not raw.flags.owndata
            if name == "q8_0":
                assert t.ggml_type == Q.Q8_0 and t.ne == (64, 4) and t.shape == (4, 64)
                np.testing.assert_array_equal(raw, want)  # (4, 68): 2 blocks of 34 bytes per row
            else:
                assert t.shape == want.shape and t.ne == tuple(reversed(want.shape))
                np.testing.assert_array_equal(f.array(name), want)
                assert f.array(name).dtype == want.dtype
                np.testing.assert_array_equal(raw, want.view(np.uint8).reshape(*want.shape[:-1], -1))


def test_writer_file_matches_gguf_reader(written):
    path, _ = written
    reader = gguf.GGUFReader(path)
    with GGUFFile(path) as f:
        assert f.data_offset == reader.data_offset
        for rt in reader.tensors:
            t = f.tensors[rt.name]
            assert (t.ggml_type, t.ne, t.offset, t.nbytes) == (
                rt.tensor_type, tuple(int(n) for n in rt.shape), rt.data_offset, rt.n_bytes)  # fmt: skip


def test_big_endian_file_from_writer_is_rejected(tmp_path):
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(path, "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_tensor("x", np.ones(4, dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(GGUFError, match="big-endian"):
        GGUFFile(path)


def test_views_survive_close_and_closed_file_refuses_reads(written):
    path, tensors = written
    f = GGUFFile(path)
    view = f.array("f32")
    f.close()
    f.close()  # idempotent
    np.testing.assert_array_equal(view, tensors["f32"])
    with pytest.raises(GGUFError, match="closed"):
        f.raw("f32")
    with GGUFFile(path) as g:
        pass
    with pytest.raises(GGUFError, match="closed"):
        g.array("f32")


# --------------------------------------------------------------------------- real model files


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    with GGUFFile(smollm2_path) as f:
        yield f


def test_smollm2_metadata(smollm2):
    assert smollm2.architecture == "llama" and smollm2.version == 3
    md = smollm2.metadata
    assert md["llama.block_count"] == 30 and md["llama.embedding_length"] == 576
    assert len(md["tokenizer.ggml.tokens"]) == 49152 and md["tokenizer.ggml.token_type"].shape == (49152,)
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.add_bos_token"] is False
    assert len(smollm2.tensors) == 272 and "output.weight" not in smollm2.tensors  # tied embeddings


def test_smollm2_matches_gguf_reader(smollm2, smollm2_path):
    reader = gguf.GGUFReader(smollm2_path)
    assert smollm2.data_offset == reader.data_offset
    assert [t.name for t in reader.tensors] == list(smollm2.tensors)
    for rt in reader.tensors:
        t = smollm2.tensors[rt.name]
        assert (t.ggml_type, t.ne, t.offset, t.nbytes) == (
            rt.tensor_type, tuple(int(n) for n in rt.shape), rt.data_offset, rt.n_bytes)  # fmt: skip
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template", "general.name"]:
        assert smollm2.metadata[key] == reader.fields[key].contents(), key
    q = smollm2.raw("blk.0.attn_q.weight")
    assert q.shape == (576, 360) and q.dtype == np.uint8
    np.testing.assert_array_equal(q, _reader_tensor(reader, "blk.0.attn_q.weight"))
    norm = smollm2.array("blk.0.attn_norm.weight")
    assert norm.dtype == np.float32 and norm.shape == (576,)
    np.testing.assert_array_equal(norm, _reader_tensor(reader, "blk.0.attn_norm.weight"))


def _reader_tensor(reader: gguf.GGUFReader, name: str) -> np.ndarray:
    return next(t.data for t in reader.tensors if t.name == name)


def test_gemma3_metadata_is_fast_and_complete(gemma3_path):
    t0 = time.perf_counter()
    with GGUFFile(gemma3_path) as f:
        elapsed = time.perf_counter() - t0
        assert f.architecture == "gemma3"
        tokens, scores = f.metadata["tokenizer.ggml.tokens"], f.metadata["tokenizer.ggml.scores"]
        assert len(tokens) == 262144 and scores.dtype == np.float32 and scores.shape == (262144,)
        assert f.tensors["token_embd.weight"].ggml_type == Q.Q8_0
        assert f.raw("token_embd.weight").shape == (262144, 680)
        assert f.raw("blk.0.attn_output.weight").shape == (640, 576)  # Q4_K: 1024 / 256 * 144
    assert elapsed < 2.0  # GGUFReader needs ~10 s; we measured ~0.1 s


def test_release_keeps_the_data_readable(smollm2_path):
    """release() only drops resident pages: reading the tensor again gives the same bytes."""
    with GGUFFile(smollm2_path) as f:
        before = f.raw("token_embd.weight").copy()
        f.release("token_embd.weight")
        np.testing.assert_array_equal(f.raw("token_embd.weight"), before)


def test_release_drops_exactly_the_whole_pages_of_a_row_range(smollm2_path):
    """release(name, start, stop) drops the pages that lie wholly inside those rows, and nothing else."""
    page_kb = mmap.PAGESIZE // 1024
    with GGUFFile(smollm2_path) as f:
        name = "token_embd.weight"                                        # Q8_0 (49152, 612): 30 MB
        t, raw = f.tensors[name], f.raw(name)
        int(raw.sum(dtype=np.uint64))                                      # fault every page of the tensor in
        resident = mapping_rss_kb(raw)
        f.release(name, 100, 4096)
        first = -(-(t.offset + 100 * t.row_bytes) // mmap.PAGESIZE)       # first whole page inside the rows
        end = (t.offset + 4096 * t.row_bytes) // mmap.PAGESIZE
        assert resident - mapping_rss_kb(raw) == (end - first) * page_kb
        f.release(name)                                                    # the default range: the whole tensor
        assert resident - mapping_rss_kb(raw) >= t.nbytes // 1024 - 2 * page_kb
        np.testing.assert_array_equal(raw[99:101], f.raw(name)[99:101])   # faulted back in from the file


def test_release_rejects_rows_outside_the_tensor(smollm2):
    rows = smollm2.tensors["token_embd.weight"].ne[1]
    for start, stop in ((5, 4), (-1, 3), (0, rows + 1)):
        with pytest.raises(ValueError, match="not inside tensor"):
            smollm2.release("token_embd.weight", start, stop)
    smollm2.release("token_embd.weight", rows, rows)                       # an empty range is fine
