"""engine.jit_cache drops cached kernels when a helper they inline changes."""

from __future__ import annotations

from engine import jit_cache


def test_stale_kernels_are_dropped_once_and_only_when_helpers_change(tmp_path, monkeypatch):
    root = tmp_path / "engine"
    (root / "quant" / "__pycache__").mkdir(parents=True)
    (root / "__pycache__").mkdir()
    for name in jit_cache.SHARED:
        (root / name).write_text(f"# {name}\n")
    kernel = root / "quant" / "__pycache__" / "q4_1._matmul-70.py311.nbi"
    kernel.write_text("index")
    other = root / "quant" / "__pycache__" / "q4_1.cpython-311.pyc"
    other.write_text("bytecode")
    monkeypatch.setattr(jit_cache, "ROOT", root)
    monkeypatch.setattr(jit_cache, "STAMP", root / "__pycache__" / "stamp")

    assert jit_cache.drop_stale_kernels()                 # no stamp yet: start clean
    assert not kernel.exists() and other.exists()
    kernel.write_text("index")
    assert not jit_cache.drop_stale_kernels()             # helpers unchanged: the cache is kept
    assert kernel.exists()
    (root / "fpmath.py").write_text("# edited\n")
    assert jit_cache.drop_stale_kernels()
    assert not kernel.exists() and other.exists()
