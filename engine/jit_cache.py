"""Keep Numba's on-disk cache honest about helpers inlined across files.

Numba keys a cached kernel on its own source file only. Kernels inline helpers from a few shared files (fpmath's
fma/expf/sums, the activation quantizers, the VNNI intrinsic), so after an edit there the cached machine code
would silently keep the old arithmetic. Before any kernel compiles we hash those files and, if the hash differs from
the one recorded beside the cache, drop every cached kernel of the engine.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHARED = ("fpmath.py", "quant/activations.py", "quant/q8_k.py", "quant/vnni.py")
STAMP = ROOT / "__pycache__" / "jit-shared-helpers.sha256"


def shared_digest() -> str:
    h = hashlib.sha256()
    for name in SHARED:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def drop_stale_kernels() -> bool:
    """Delete the engine's cached kernels when the shared helpers changed; True if it did. Quietly does nothing
    where the package directory is read-only (Numba then caches elsewhere, keyed the same way)."""
    digest = shared_digest()
    try:
        if STAMP.exists() and STAMP.read_text() == digest:
            return False
        for cached in [*ROOT.rglob("__pycache__/*.nbi"), *ROOT.rglob("__pycache__/*.nbc")]:
            cached.unlink(missing_ok=True)
        STAMP.parent.mkdir(exist_ok=True)
        tmp = STAMP.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, STAMP)
    except OSError:
        return False
    return True
