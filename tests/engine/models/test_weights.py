"""engine.models._weights.load: a big matrix is repacked a chunk at a time and each chunk's file pages leave
resident memory as soon as it is copied, so the file never sits resident next to the repacked copy."""

from __future__ import annotations

import gguf
import numpy as np
from gguf.constants import GGMLQuantizationType as Q

from engine.gguf import GGUFFile
from engine.models import _weights
from engine.quant import _tiles
from tests.engine.resident_pages import mapping_rss_kb


class WatchedFile(GGUFFile):
    """The real GGUFFile; after each release it notes the range and how much of the mapping is still resident."""

    def release(self, name: str, start: int = 0, stop: int | None = None) -> None:
        super().release(name, start, stop)
        self.watched.append((start, stop, mapping_rss_kb(self.raw(name))))


def test_load_drops_file_pages_chunk_by_chunk(smollm2_path):
    name = "token_embd.weight"                                             # Q8_0 (49152, 612): 30 MB
    with WatchedFile(smollm2_path) as f:
        f.watched = []
        raw = f.raw(name)
        before_kb = mapping_rss_kb(raw)                                    # the header pages metadata parsing read
        tensor = _weights.load(f, name)
        ranges = [(start, stop) for start, stop, _ in f.watched]
        chunk = _tiles.CHUNK_ROWS
        assert ranges == [(s, min(s + chunk, 49152)) for s in range(0, 49152, chunk)] + [(0, None)]
        chunk_kb = chunk * raw.shape[1] // 1024                            # 2.4 MB
        assert max(kb for *_, kb in f.watched) < before_kb + 2 * chunk_kb  # never more than ~one chunk resident
        assert f.watched[-1][2] <= before_kb + 64                          # and none of the tensor at the end
        ids = np.array([0, 4095, 4096, 49151])
        np.testing.assert_array_equal(tensor.take_rows(ids), gguf.quants.dequantize(raw[ids], Q.Q8_0))
