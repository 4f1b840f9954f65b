"""engine.quant.vnni: the VNNI and portable integer dots give the same bits, and kernels compile without VNNI."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from engine.quant import q4_1, q5_0, q8_0

SCRIPT = """
import sys, numpy as np
from engine.quant import q4_1, q5_0, q8_0, vnni
assert not vnni.HAS_VNNI
rng = np.random.default_rng(5)
x = rng.standard_normal((5, 256)).astype(np.float32)
mods = (q8_0, q4_1, q5_0)
raws = [rng.integers(0, 256, (70, 256 // 32 * m.BLOCK_BYTES), dtype=np.uint8) for m in mods]
for raw in raws:                                         # finite fp16 scales (d, and Q4_1's m)
    raw.reshape(70, 8, -1)[..., 1::2][..., :2] &= 0x3B
outs = [np.concatenate([m.matmul(m.repack(raw), x), m.matvec(m.repack(raw), x[0])[None]]) for m, raw in zip(mods, raws)]
np.save(sys.argv[1], np.stack(outs))
cut = []                                                 # rows_q8_0 / rows_q4_1: a lone token's 32 rows cut to 18,
for m, raw in zip(mods[:2], raws[:2]):                   # a pair's 16 to 2
    p = m.repack(raw[:50])
    cut.append(np.concatenate([m.matmul(p, x[:2]), m.matvec(p, x[4])[None]]))
np.save(sys.argv[2], np.stack(cut))
"""


@pytest.mark.slow
def test_kernels_compiled_for_a_cpu_without_avx512_give_the_same_bits(tmp_path):
    """Compile for haswell (AVX2, no AVX-512, no VNNI) in a fresh process with its own kernel cache: a micro-batch
    of 5 tokens and a lone token (Q5_0 takes another path for it; Q4_1's vnni.rows_q4_1 and Q8_0's
    vnni.rows_q8_0 two tokens at a time and a lone one, with rows cut short: 50 rows)."""
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out.npy"), str(tmp_path / "cut.npy")], env=env,
                   check=True, timeout=600)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    mods = (q8_0, q4_1, q5_0)
    raws = [rng.integers(0, 256, (70, 256 // 32 * m.BLOCK_BYTES), dtype=np.uint8) for m in mods]
    for raw in raws:
        raw.reshape(70, 8, -1)[..., 1::2][..., :2] &= 0x3B
    here = np.stack([np.concatenate([m.matmul(m.repack(raw), x), m.matvec(m.repack(raw), x[0])[None]])
                     for m, raw in zip(mods, raws, strict=True)])
    assert np.isfinite(here).all()
    np.testing.assert_array_equal(here[:, 5], here[:, 0])            # the lone token = the first of the batch
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), here)
    here_cut = np.stack([np.concatenate([m.matmul(m.repack(raw[:50]), x[:2]), m.matvec(m.repack(raw[:50]), x[4])[None]])
                         for m, raw in zip(mods[:2], raws[:2], strict=True)])
    np.testing.assert_array_equal(here_cut[:, :2], here[:2, :2, :50])            # the same rows of the 70
    np.testing.assert_array_equal(here_cut[:, 2], here[:2, 4, :50])
    np.testing.assert_array_equal(np.load(tmp_path / "cut.npy"), here_cut)
