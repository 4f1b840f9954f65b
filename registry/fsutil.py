"""File operations the store and the transfers share: atomic writes, fsync, bounded reads, quiet removal."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from registry.errors import BlobTooLarge, InsufficientStorage

TMP_PREFIX = ".tmp-"            # never a valid tag or blob name, so no reader mistakes a temp file for data


def copy_hashing(chunks: Iterable[bytes], f: Any, max_bytes: int | None) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    for chunk in chunks:
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise BlobTooLarge(f"blob is larger than {max_bytes} bytes")
        h.update(chunk)
        f.write(chunk)
    f.flush()
    os.fsync(f.fileno())
    return f"sha256:{h.hexdigest()}", size


def atomic_write(path: Path, data: bytes) -> None:
    makedirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with disk_full_as_error(), os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        unlink_quiet(tmp)
        raise
    fsync_dir(path.parent)


def read_regular(path: Path, cap: int, *, follow: bool) -> bytes | None:
    """Up to ``cap + 1`` bytes of a regular file (callers compare with ``cap``); None if absent or not a
    regular file. Without ``follow`` a symlink is refused; ``O_NONBLOCK`` keeps a FIFO from hanging us."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(cap + 1)


@contextlib.contextmanager
def disk_full_as_error() -> Iterator[None]:
    """Turn ENOSPC/EDQUOT into InsufficientStorage: a clean error without paths or errno text."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("insufficient storage") from exc
        raise


def makedirs(path: Path) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quiet(path: str | Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def prune_empty_dirs(directory: Path, base: Path) -> None:
    """Remove now-empty directories from ``directory`` up to (not including) ``base``."""
    while directory != base and directory.is_relative_to(base):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def mtime(entry: os.DirEntry[str]) -> float:
    return entry.stat(follow_symlinks=False).st_mtime


def lmtime(path: str) -> float:
    """mtime, or +inf for a file that vanished meanwhile (so it is never treated as stale)."""
    try:
        return os.lstat(path).st_mtime
    except FileNotFoundError:
        return float("inf")
