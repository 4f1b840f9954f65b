"""Blob downloads: parallel HTTP Range parts into a resumable partial file, verified before they are
committed, and shared by every pull in this process that wants the same blob.

Files, next to the final ``blobs/sha256-<hex>``::

    blobs/.tmp-sha256-<hex>-partial        sparse file, parts written at their offsets
    blobs/.tmp-sha256-<hex>-partial.json   {"size": N, "parts": [[offset, size, completed], …]}

The ``.tmp-`` prefix is the store's temp-file prefix, so ``Store.prune`` cleans up a partial nobody resumed
for an hour, and no reader mistakes it for a blob. The state file is rewritten (atomically, after an fsync of
the data) about once a second and when a download stops, so it never claims bytes the disk does not have; a
later pull resumes each part at ``offset + completed``. When every byte is there, the file is hashed; only a
match is renamed to the final name (unlike Ollama, which renames first and verifies later), a mismatch
deletes the partial.

Sharing: ``Downloads.join`` returns the running ``Download`` of a blob or starts one. Each caller follows it
(``completed`` and the phase, under a condition variable) and calls ``leave`` when done or gone. A download
stops only when its last follower leaves; what it fetched stays for the next attempt.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from registry.errors import InsufficientStorage
from registry.fsutil import TMP_PREFIX, fsync_dir, unlink_quiet
from registry.wire import RegistryError, Reply, RetryPolicy

__all__ = ["Download", "Downloads", "Fetch", "partial_paths", "plan_parts"]

READ_BYTES = 256 << 10          # one socket read / pwrite
CHECKPOINT_S = 1.0              # how often the resume state is made durable
POLL_S = 0.1                    # how often a queued download looks for a cancel
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

Fetch = Callable[[int, int], Reply]     # (first, last) inclusive byte range -> open 200/206 reply


class Cancelled(Exception):
    """Internal: every follower left, so the download stopped."""


@dataclass
class Part:
    offset: int
    size: int
    completed: int = 0


def plan_parts(size: int, parts: int, min_part_bytes: int) -> list[Part]:
    """Split ``size`` bytes into at most ``parts`` ranges, each ``min_part_bytes`` or more (bar the last)."""
    count = max(1, min(parts, size // max(min_part_bytes, 1)))
    step = -(-size // count) if size else 0
    return [Part(o, min(step, size - o)) for o in range(0, size, step)] if size else []


def partial_paths(final: Path) -> tuple[Path, Path]:
    """(data, state) paths of the partial download of ``final``."""
    data = final.with_name(f"{TMP_PREFIX}{final.name}-partial")
    return data, data.with_name(data.name + ".json")


class Download:
    """One blob being fetched by a background thread: fetching → verifying → done | failed."""

    def __init__(self, final: Path, digest: str, size: int, fetch: Fetch, *, parts: int,
                 min_part_bytes: int, retry: RetryPolicy) -> None:
        self.final, self.digest, self.size = final, digest, size
        self._fetch, self._retry = fetch, retry
        self._n_parts, self._min_part_bytes = parts, min_part_bytes
        self._data_path, self._state_path = partial_paths(final)
        self._cond = threading.Condition()
        self.phase = "fetching"
        self.completed = 0
        self.error: BaseException | None = None
        self.followers = 0
        self.cancelled = False
        self._stop = threading.Event()      # set on cancel or when a sibling part fails
        self.finished = threading.Event()

    # ---- followers -----------------------------------------------------------------------------------

    def wait_fetched(self, timeout_s: float) -> bool:
        """True once every byte is in (or the download ended); else False after ``timeout_s``."""
        with self._cond:
            return self._cond.wait_for(lambda: self.phase != "fetching", timeout_s)

    def wait_done(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.phase in ("done", "failed"), timeout_s)

    def cancel(self) -> None:
        self.cancelled = True
        self._stop.set()

    # ---- the download thread -------------------------------------------------------------------------

    def run(self, slots: threading.Semaphore, on_exit: Callable[[], None]) -> None:
        try:
            while not slots.acquire(timeout=POLL_S):
                if self._stop.is_set():
                    raise Cancelled
            try:
                self._fetch_all()
                self._set_phase("verifying")
                self._verify_and_commit()
            finally:
                slots.release()
            self._set_phase("done")
        except BaseException as exc:    # handed to every follower, who re-raises it
            self.error = _clean(exc, self.digest)
            self._set_phase("failed")
        finally:
            on_exit()
            self.finished.set()

    def _set_phase(self, phase: str) -> None:
        with self._cond:
            self.phase = phase
            self._cond.notify_all()

    def _fetch_all(self) -> None:
        os.makedirs(self.final.parent, mode=0o755, exist_ok=True)
        fd = os.open(self._data_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            parts = self._resume_or_plan(fd)
            self.completed = sum(p.completed for p in parts)
            errors: list[BaseException] = []
            threads = [threading.Thread(target=self._part_main, args=(fd, p, errors), daemon=True,
                                        name=f"pull-{self.digest[7:19]}-{p.offset}")
                       for p in parts if p.completed < p.size]
            for t in threads:
                t.start()
            try:
                for t in threads:
                    while t.is_alive():
                        t.join(CHECKPOINT_S)
                        self._checkpoint(fd, parts)
            except BaseException:
                self._stop.set()            # no part may write to ``fd`` once it is closed below
                for t in threads:
                    t.join()
                raise
            self._checkpoint(fd, parts)
            if errors:
                raise errors[0]
            if self.cancelled:
                raise Cancelled
        finally:
            os.close(fd)

    def _resume_or_plan(self, fd: int) -> list[Part]:
        parts = _load_state(self._state_path, self.size)
        if parts is None or os.fstat(fd).st_size != self.size:
            parts = plan_parts(self.size, self._n_parts, self._min_part_bytes)
            os.ftruncate(fd, 0)                 # old bytes of unknown provenance: start over, sparse
            os.ftruncate(fd, self.size)
            self._checkpoint(fd, parts)
        return parts

    def _part_main(self, fd: int, part: Part, errors: list[BaseException]) -> None:
        try:
            self._fetch_part(fd, part)
        except Cancelled:
            pass
        except BaseException as exc:    # reported by _fetch_all; the sibling parts stop
            errors.append(exc)
            self._stop.set()

    def _fetch_part(self, fd: int, part: Part) -> None:
        failures = 0
        while part.completed < part.size:
            if self._stop.is_set():
                raise Cancelled
            before = part.completed
            try:
                self._read_range(fd, part)
                continue
            except RegistryError as exc:
                if not exc.retryable:
                    raise
                error = exc
            failures = 1 if part.completed > before else failures + 1
            if failures > self._retry.max_retries:
                raise RegistryError(f"download of {self.digest} failed: {error}", error.status)
            if self._stop.wait(self._retry.delay_s(failures)):
                raise Cancelled

    def _read_range(self, fd: int, part: Part) -> None:
        first, last = part.offset + part.completed, part.offset + part.size - 1
        with self._fetch(first, last) as reply:
            _discard(reply, self._skip_for(reply, first, last))
            while part.completed < part.size and not self._stop.is_set():
                data = _read_some(reply, min(READ_BYTES, part.size - part.completed))
                _pwrite_all(fd, data, part.offset + part.completed)
                with self._cond:
                    part.completed += len(data)
                    self.completed += len(data)

    def _skip_for(self, reply: Reply, first: int, last: int) -> int:
        """Bytes to drop before ``first``: 0 for a matching 206, ``first`` for a full 200 body."""
        if reply.status == 206:
            m = _CONTENT_RANGE_RE.fullmatch(reply.header("Content-Range") or "")
            if m is None or int(m[1]) != first or int(m[2]) != last:
                raise RegistryError(f"registry answered range {first}-{last} of {self.digest} with "
                                    f"{reply.header('Content-Range')!r}")
            if m[3] != "*" and int(m[3]) != self.size:
                raise RegistryError(f"blob {self.digest} has {m[3]} bytes, the manifest says {self.size}")
            return 0
        length = reply.header("Content-Length")
        if length is not None and length.strip() != str(self.size):
            raise RegistryError(f"blob {self.digest} has {length} bytes, the manifest says {self.size}")
        return first

    def _checkpoint(self, fd: int, parts: list[Part]) -> None:
        """Make the resume state durable: snapshot, fsync the data, then replace the state file."""
        with self._cond:
            snapshot = [[p.offset, p.size, p.completed] for p in parts]
        os.fsync(fd)
        tmp = self._state_path.with_name(self._state_path.name + ".new")
        tmp.write_bytes(json.dumps({"size": self.size, "parts": snapshot}).encode())
        os.replace(tmp, self._state_path)

    def _verify_and_commit(self) -> None:
        h = hashlib.sha256()
        with open(self._data_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            got = f"sha256:{h.hexdigest()}"
            if got != self.digest:
                unlink_quiet(self._data_path)
                unlink_quiet(self._state_path)
                raise RegistryError(f"digest mismatch, file must be downloaded again: want {self.digest}, "
                                    f"got {got}")
            os.fsync(f.fileno())
        os.chmod(self._data_path, 0o644)
        os.replace(self._data_path, self.final)
        fsync_dir(self.final.parent)
        unlink_quiet(self._state_path)


class Downloads:
    """The downloads running in this process, keyed by final blob path. One instance is shared by default
    (``SHARED``), so pulls through different clients of the same store still meet here."""

    def __init__(self, max_active: int = 8) -> None:
        self._lock = threading.Lock()
        self._active: dict[Path, Download] = {}
        self._slots = threading.Semaphore(max_active)     # bounds threads: max_active x parts

    def join(self, make: Callable[[], Download], present: Callable[[], bool], key: Path) -> Download | None:
        """Follow the running download of ``key`` or start ``make()``; None when the blob is ``present``."""
        while True:
            with self._lock:
                running = self._active.get(key)
                if running is None:
                    if present():
                        return None
                    return self._start(key, make())
                if not running.cancelled:
                    running.followers += 1
                    return running
            running.finished.wait()     # a cancelled download is still closing its partial file

    def leave(self, download: Download) -> None:
        """Stop following; the last follower to leave a download that is still fetching cancels it."""
        with self._lock:
            download.followers -= 1
            if download.followers == 0 and not download.finished.is_set():
                download.cancel()

    def _start(self, key: Path, download: Download) -> Download:
        download.followers = 1
        self._active[key] = download

        def on_exit() -> None:
            with self._lock:
                if self._active.get(key) is download:
                    del self._active[key]

        threading.Thread(target=download.run, args=(self._slots, on_exit), daemon=True,
                         name=f"pull-{download.digest[7:19]}").start()
        return download


SHARED = Downloads()


def _load_state(path: Path, size: int) -> list[Part] | None:
    """Parts from a state file, or None unless it describes exactly ``[0, size)`` consistently."""
    try:
        doc = json.loads(path.read_bytes()[: 1 << 20])
        parts = [Part(*map(int, p)) for p in doc["parts"]] if doc.get("size") == size else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if parts is None or sum(p.size for p in parts) != size:
        return None
    offset = 0
    for p in parts:
        if p.offset != offset or not 0 <= p.completed <= p.size:
            return None
        offset += p.size
    return parts


def _read_some(reply: Reply, n: int) -> bytes:
    try:
        data = reply.read(n)
    except (OSError, ValueError, http.client.HTTPException) as exc:     # reset, timeout, IncompleteRead
        raise RegistryError(f"download interrupted: {type(exc).__name__}", retryable=True) from None
    if not data:
        raise RegistryError("download interrupted: connection closed early", retryable=True)
    return data


def _discard(reply: Reply, n: int) -> None:
    """Skip ``n`` body bytes (a server that ignored ``Range`` sent the blob from its start)."""
    while n > 0:
        n -= len(_read_some(reply, min(READ_BYTES, n)))


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _clean(exc: BaseException, digest: str) -> BaseException:
    """What followers see: registry and storage errors as they are; local I/O errors without paths."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("insufficient storage")
    if isinstance(exc, OSError):
        return RegistryError(f"could not write blob {digest}: {type(exc).__name__}")
    return exc
