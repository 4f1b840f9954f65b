"""engine.hugepages: weights copied into huge-page-advised memory keep their values and layout."""

from __future__ import annotations

import mmap

import numpy as np

from engine.hugepages import ALIGN, HUGE_PAGE, HugePageArena


def _advised_regions() -> list[tuple[int, int]]:
    """(start, end) of this process's mappings whose VmFlags hold "hg" (MADV_HUGEPAGE)."""
    regions, current = [], None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                current = (start, end)
            elif head == "VmFlags:" and "hg" in line.split()[1:]:
                regions.append(current)
    return regions


def test_copies_are_equal_aligned_contiguous_and_separate():
    arena = HugePageArena(chunk_bytes=1 << 20)
    rng = np.random.default_rng(0)
    sources = [rng.standard_normal((37, 5)).astype(np.float32), np.arange(1000, dtype=np.uint16).reshape(10, 100),
               rng.integers(0, 255, (3, 700_000), dtype=np.uint8),            # bigger than a chunk
               np.zeros((0, 4), np.float32), np.asfortranarray(rng.standard_normal((6, 7)))]
    copies = [arena.resident(a) for a in sources]
    for a, c in zip(sources, copies, strict=True):
        np.testing.assert_array_equal(c, a)
        assert c.dtype == a.dtype and c.shape == a.shape and c.flags.c_contiguous and c.flags.writeable
        assert c.nbytes == 0 or (c.ctypes.data % ALIGN == 0 and arena.holds(c) and not np.shares_memory(c, a))
    copies[0][0, 0] = 42.0                                              # copies do not overlap each other
    np.testing.assert_array_equal(copies[1], sources[1])
    assert arena.resident(copies[1]) is copies[1]                         # already resident: not copied again


def test_empty_allocates_in_the_arena_like_numpy():
    arena = HugePageArena()
    a = arena.empty((3, 64, 5), np.uint32)
    assert a.shape == (3, 64, 5) and a.dtype == np.uint32 and a.flags.c_contiguous and arena.holds(a)
    assert not arena.holds(np.empty(10))


def _kernel_has_huge_pages() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def test_arena_memory_is_2mb_aligned_and_advised_for_huge_pages():
    arena = HugePageArena(chunk_bytes=4 * HUGE_PAGE)
    a = arena.empty((HUGE_PAGE,), np.uint8)
    start = a.ctypes.data
    assert start % HUGE_PAGE == 0
    advised = any(lo <= start and start + a.nbytes <= hi for lo, hi in _advised_regions())
    assert advised == _kernel_has_huge_pages()          # where the kernel has none, plain memory and no error


class _NoHugePages(mmap.mmap):
    def madvise(self, *args):
        raise OSError(22, "Invalid argument")         # what a kernel without transparent huge pages answers


def test_a_kernel_without_huge_pages_gives_plain_memory(monkeypatch):
    monkeypatch.setattr(mmap, "mmap", _NoHugePages)
    arena = HugePageArena(chunk_bytes=HUGE_PAGE)
    copy = arena.resident(np.arange(10, dtype=np.int64))
    assert copy.tolist() == list(range(10)) and arena.holds(copy)


def test_a_loaded_models_weights_live_in_advised_memory(smollm2):
    assert _kernel_has_huge_pages()                     # this project's machines have them (madvise mode)
    regions = _advised_regions()
    model = smollm2.model
    arrays = [a for t in (*model.blocks[0].attn_qkv, model.blocks[5].ffn_down, model.output) for a in t.packed[1:]]
    assert all(any(lo <= a.ctypes.data < hi for lo, hi in regions) for a in arrays)
