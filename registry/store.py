"""The model store: Ollama's on-disk layout, written crash-safely.

Layout under the models directory (byte-compatible with ``~/.ollama/models``)::

    manifests/<host>/<namespace>/<model>/<tag>     manifest JSON (":port" stays in the host directory name)
    blobs/sha256-<64 hex>                          content-addressed; the GGUF blob is the .gguf file itself
    manifests-v2/<host>/<namespace>/<model>/<tag>  newest Ollama only: a symlink to the manifest's own blob
                                                   (host "ollama.com" for the default registry). Read, never
                                                   written, and counted as references so GC never breaks them.

Crash safety: every file is written to a ``.tmp-*`` file in its final directory, fsync'd, renamed with
``os.replace`` and the directory fsync'd, so a crash leaves the old file or the new one. Blobs are hashed
while they are written and renamed into place only once verified; a manifest is written only after every
blob it names exists with the right size. Garbage collection only trusts manifests it can parse: if any is
corrupt, no blob is removed (a corrupt manifest might be the only thing referencing it).

Path safety: names are validated by ``ModelName`` and digests by ``check_digest`` before they become path
components, paths are checked to stay under their directory, the final component of a manifest is opened
with ``O_NOFOLLOW`` unless it is a link into ``blobs/`` whose target hashes to its own name.

One re-entrant lock per models directory serialises the steps that must not interleave inside this process
(commit a blob, write or delete a manifest, collect garbage).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.errors import (
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    InvalidManifest,
    InvalidName,
    ModelNotFound,
    StoreError,
)
from registry.fsutil import (
    TMP_PREFIX,
    atomic_write,
    copy_hashing,
    disk_full_as_error,
    fsync_dir,
    lmtime,
    makedirs,
    mtime,
    prune_empty_dirs,
    read_regular,
    scandir,
    unlink_quiet,
)
from registry.manifest import (
    MAX_MANIFEST_BYTES,
    MEDIA_ADAPTER,
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
    check_digest,
    go_json,
)
from registry.names import DEFAULT_HOST, ModelName

log = logging.getLogger(__name__)

STALE_SECONDS = 3600            # prune leaves temp files and unreferenced blobs younger than this alone
MAX_SMALL_BLOB = 32 << 20       # read_blob cap: templates, params, licenses, config
_CHUNK = 1 << 20
_BLOB_NAME_RE = re.compile(r"sha256-([0-9a-f]{64})")
_V2_HOST = "ollama.com"
_PUBLIC_HOSTS = (DEFAULT_HOST, _V2_HOST)

_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class ModelEntry:
    """One installed model, as ``/api/tags`` needs it."""

    name: ModelName
    manifest: Manifest
    digest: str             # sha256 hex of the manifest file bytes (no "sha256:" prefix), as Ollama shows it
    size: int               # config + layer sizes
    modified: datetime      # manifest mtime, local time zone


@dataclass(frozen=True)
class _Entry:
    name: ModelName         # spelled as on disk (v2's "ollama.com" host reported as the default host)
    path: Path


class Store:
    """A models directory. Nothing is created until the first write."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.manifests_dir = self.root / "manifests"
        self.v2_dir = self.root / "manifests-v2"
        self.blobs_dir = self.root / "blobs"
        with _locks_guard:
            self._lock = _locks.setdefault(str(self.root), threading.RLock())

    # ---- blobs -------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """``blobs/sha256-<hex>``; raises InvalidDigest for anything but ``sha256:<64 lowercase hex>``."""
        hex_digest = check_digest(digest)[len("sha256:"):]
        return _confined(self.blobs_dir / f"sha256-{hex_digest}", self.blobs_dir)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def write_blob(self, chunks: Iterable[bytes], expected_digest: str | None = None,
                   max_bytes: int | None = None) -> tuple[str, int]:
        """Stream ``chunks`` into the store while hashing; returns ``(digest, size)``.

        On a digest mismatch, a size over ``max_bytes``, a full disk or an exception from ``chunks`` the
        temp file is removed and nothing is stored. An existing blob of the same digest and size is kept
        (and its mtime refreshed) instead of being written again.
        """
        if expected_digest is not None:
            check_digest(expected_digest)
        makedirs(self.blobs_dir)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.blobs_dir)
        renamed = False
        try:
            with disk_full_as_error(), os.fdopen(fd, "wb") as f:
                digest, size = copy_hashing(chunks, f, max_bytes)
            if expected_digest is not None and digest != expected_digest:
                raise DigestMismatch(expected_digest, digest)
            renamed = self._commit_blob(tmp, digest, size)
        finally:
            if not renamed:
                unlink_quiet(tmp)
        return digest, size

    def write_blob_bytes(self, data: bytes) -> str:
        return self.write_blob([data])[0]

    def import_file(self, path: Path, expected_digest: str | None = None) -> tuple[str, int]:
        """Copy a local regular file in as a blob (hashing while copying); FIFOs and devices are refused."""
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise StoreError("can only import regular files")
            return self.write_blob(iter(lambda: f.read(_CHUNK), b""), expected_digest)

    def read_blob(self, digest: str, max_bytes: int = MAX_SMALL_BLOB) -> bytes:
        """Whole content of a small blob (template, params, license, config)."""
        data = read_regular(self.blob_path(digest), max_bytes, follow=True)
        if data is None:
            raise BlobNotFound(digest)
        if len(data) > max_bytes:
            raise BlobTooLarge(f"blob {digest} is larger than {max_bytes} bytes")
        return data

    def _commit_blob(self, tmp: str, digest: str, size: int) -> bool:
        """Rename the verified temp file into place; False if an intact blob was already there."""
        final = self.blob_path(digest)
        with self._lock:
            try:
                existing = os.stat(final).st_size
            except FileNotFoundError:
                existing = None
            if existing == size:
                os.utime(final)         # keeps a re-uploaded blob inside prune's grace period
                return False
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)      # also repairs a same-named blob of the wrong size
            fsync_dir(self.blobs_dir)
            return True

    # ---- manifests ---------------------------------------------------------------------------------

    def manifest_path(self, name: ModelName) -> Path:
        """Where this store writes ``name``'s manifest (exact spelling; see ``resolve`` for lookups)."""
        return _confined(self.manifests_dir.joinpath(*name.parts), self.manifests_dir)

    def resolve(self, name: ModelName) -> ModelName | None:
        """The installed model that equals ``name`` case-insensitively, spelled as on disk; or None."""
        entry = self._locate(name)
        return entry.name if entry else None

    def read_manifest(self, name: ModelName) -> tuple[Manifest, bytes]:
        """Parsed manifest and its exact bytes. ModelNotFound if absent, InvalidManifest if corrupt."""
        entry = self._locate(name)
        if entry is None:
            raise ModelNotFound(name.display)
        data, _ = self._read_manifest_file(entry.path)
        return Manifest.from_bytes(data), data

    def write_manifest(self, name: ModelName, manifest: Manifest | bytes) -> str:
        """Atomically store ``manifest`` (bytes are kept verbatim) under ``name``; returns its sha256 hex.

        Refuses (BlobNotFound / InvalidManifest) unless every referenced blob exists with the declared size.
        An existing model of the same name (any case) is replaced under its existing spelling, and blobs
        only the replaced manifest used are removed, as Ollama does.
        """
        data = manifest.to_bytes() if isinstance(manifest, Manifest) else bytes(manifest)
        parsed = Manifest.from_bytes(data)
        with self._lock:
            self._check_blobs(parsed)
            entry = self._locate(name)
            target = entry.name if entry else name
            old = self._digests_of_files([entry.path] if entry else [])
            atomic_write(self.manifest_path(target), data)
            shadowing = [p for p in [self._find(self.v2_dir, _v2_parts(target))] if p is not None]
            stale = self._digests_of_files(shadowing)   # v2 link would hide the new file from Ollama
            self._unlink_manifests(shadowing)
            self._remove_unreferenced((old | stale) - parsed.digests())
        return hashlib.sha256(data).hexdigest()

    def list_models(self) -> list[ModelEntry]:
        """Every readable installed model, newest first. Corrupt manifests are logged and skipped."""
        models = []
        for entry in self._entries():
            try:
                data, _ = self._read_manifest_file(entry.path)
                manifest = Manifest.from_bytes(data)
                mtime = os.stat(entry.path).st_mtime
            except (StoreError, OSError) as exc:
                log.warning("skipping manifest of %s: %s", entry.name, exc)
                continue
            modified = datetime.fromtimestamp(mtime, UTC).astimezone()
            models.append(ModelEntry(entry.name, manifest, hashlib.sha256(data).hexdigest(),
                                     manifest.total_size, modified))
        models.sort(key=lambda m: m.modified, reverse=True)
        return models

    def copy(self, src: ModelName, dst: ModelName) -> None:
        """Copy the manifest bytes verbatim; blobs are shared. Overwrites ``dst``."""
        with self._lock:
            _, data = self.read_manifest(src)
            self.write_manifest(dst, data)

    def delete(self, name: ModelName) -> None:
        """Remove the model's manifest(s), then every blob of it that no remaining manifest references."""
        with self._lock:
            entry = self._locate(name)
            if entry is None:
                raise ModelNotFound(name.display)
            paths = [p for p in (self._find(self.manifests_dir, entry.name.parts),
                                 self._find(self.v2_dir, _v2_parts(entry.name))) if p is not None]
            candidates = self._digests_of_files(paths)
            self._unlink_manifests(paths)
            self._remove_unreferenced(candidates)

    def prune(self, grace_seconds: float = STALE_SECONDS) -> list[str]:
        """Remove stale temp files and unreferenced blobs older than ``grace_seconds``; returns file names.

        The grace period protects blobs uploaded for a create that has not written its manifest yet. If any
        manifest is unreadable, no blob is removed.
        """
        with self._lock:
            cutoff = time.time() - grace_seconds
            removed = self._remove_stale_temps(cutoff)
            referenced = self._referenced()
            if referenced is None:
                log.warning("not pruning blobs: a manifest could not be read")
                return removed
            for entry in scandir(self.blobs_dir):
                m = _BLOB_NAME_RE.fullmatch(entry.name)
                if m and f"sha256:{m[1]}" not in referenced and mtime(entry) < cutoff:
                    unlink_quiet(entry.path)
                    removed.append(entry.name)
            return removed

    def create_model(self, name: ModelName, *, model_blob: str, config: dict[str, Any],
                     template: str | None = None, system: str | None = None,
                     params: dict[str, Any] | None = None, license: str | list[str] | None = None,
                     messages: list[Any] | None = None, adapters: Iterable[str] = (),
                     extra_layers: Iterable[Layer] = ()) -> str:
        """Write the small blobs and the manifest of a new model; returns the manifest's sha256 hex.

        Layer order: model, ``extra_layers`` (e.g. projectors), adapters, licenses, template, system,
        params, messages. Empty values produce no layer. ``params`` is encoded as a Go map (sorted keys),
        ``config`` and ``messages`` keep their key order (Go structs); ``config["rootfs"]`` is set to the
        layer digests, as Ollama's ``createConfigLayer`` does.
        """
        with self._lock:        # no GC may remove a new small blob before the manifest refers to it
            layers = [self._stored_layer(model_blob, MEDIA_MODEL), *extra_layers]
            layers += [self._stored_layer(d, MEDIA_ADAPTER) for d in adapters]
            licenses = [license] if isinstance(license, str) else list(license or [])
            small = [*((MEDIA_LICENSE, t) for t in licenses), (MEDIA_TEMPLATE, template),
                     (MEDIA_SYSTEM, system)]
            layers += [self._new_layer(text.encode("utf-8"), media) for media, text in small if text]
            if params:
                layers.append(self._new_layer(go_json(params, sort_keys=True), MEDIA_PARAMS))
            if messages:
                layers.append(self._new_layer(go_json(messages), MEDIA_MESSAGES))
            rootfs = {"type": "layers", "diff_ids": [x.digest for x in layers]}
            config_layer = self._new_layer(go_json({**config, "rootfs": rootfs}), MEDIA_CONFIG)
            return self.write_manifest(name, Manifest(config_layer, tuple(layers)))

    # ---- internals ---------------------------------------------------------------------------------

    def _stored_layer(self, digest: str, media_type: str) -> Layer:
        try:
            size = os.stat(self.blob_path(digest)).st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        return Layer(media_type, digest, size)

    def _new_layer(self, data: bytes, media_type: str) -> Layer:
        return Layer(media_type, self.write_blob_bytes(data), len(data))

    def _check_blobs(self, manifest: Manifest) -> None:
        for layer in (manifest.config, *manifest.layers):
            size = self._stored_layer(layer.digest, layer.media_type).size
            if size != layer.size:
                raise InvalidManifest(f"blob {layer.digest} has {size} bytes, the manifest says {layer.size}")

    def _locate(self, name: ModelName) -> _Entry | None:
        """Find ``name`` case-insensitively: our layout first, then newest Ollama's ``manifests-v2``."""
        path = self._find(self.manifests_dir, name.parts)
        if path is not None:
            return _Entry(_legacy_name(path.relative_to(self.manifests_dir).parts), path)
        path = self._find(self.v2_dir, _v2_parts(name))
        if path is not None:
            return _Entry(_v2_name(path.relative_to(self.v2_dir).parts), path)
        return None

    @staticmethod
    def _find(base: Path, parts: tuple[str, ...]) -> Path | None:
        """Walk down ``base`` matching each part case-insensitively (exact spelling preferred)."""
        path = base
        for part in parts:
            names = sorted(e.name for e in scandir(path))
            if part not in names:
                part = next((n for n in names if n.isascii() and n.lower() == part.lower()), "")
            if not part:
                return None
            path = path / part
        return path if os.path.lexists(path) and not os.path.isdir(path) else None

    def _entries(self) -> Iterator[_Entry]:
        """Every installed name once (a v2 entry shadowed by one of ours is skipped)."""
        seen = set()
        for base, to_name in ((self.manifests_dir, _legacy_name), (self.v2_dir, _v2_name)):
            for path in _tree_files(base):
                try:
                    name = to_name(path.relative_to(base).parts)
                except InvalidName:
                    continue
                if name.folded not in seen:
                    seen.add(name.folded)
                    yield _Entry(name, path)

    def _read_manifest_file(self, path: Path) -> tuple[bytes, str | None]:
        """Manifest bytes, plus the blob digest when the file is a (verified) link into ``blobs/``."""
        if not path.is_symlink():
            data = read_regular(path, MAX_MANIFEST_BYTES, follow=False)
            if data is None:
                raise InvalidManifest("manifest is not a regular file")
            return data, None
        target = Path(os.path.realpath(path))
        m = _BLOB_NAME_RE.fullmatch(target.name)
        blob = self.blob_path(f"sha256:{m[1]}") if m else None
        if blob is None or not blob.is_file() or not os.path.samefile(target, blob):
            raise InvalidManifest("manifest link does not point at a blob of this store")
        data = read_regular(blob, MAX_MANIFEST_BYTES, follow=True) or b""
        if hashlib.sha256(data).hexdigest() != m[1]:
            raise InvalidManifest("linked manifest does not match its digest")
        return data, f"sha256:{m[1]}"

    def _refs_of(self, path: Path) -> set[str]:
        """Blobs one manifest file keeps alive: config, layers, and the blob it links to (v2 layout)."""
        data, link = self._read_manifest_file(path)
        return Manifest.from_bytes(data).digests() | ({link} if link else set())

    def _digests_of_files(self, paths: Iterable[Path]) -> set[str]:
        """Blobs the given manifest files keep alive; unreadable ones contribute nothing."""
        digests: set[str] = set()
        for path in paths:
            try:
                digests |= self._refs_of(path)
            except (StoreError, OSError):
                continue
        return digests

    def _referenced(self) -> set[str] | None:
        """Every blob any manifest file references, or None if some validly named manifest is unreadable."""
        refs: set[str] = set()
        for base, to_name in ((self.manifests_dir, _legacy_name), (self.v2_dir, _v2_name)):
            for path in _tree_files(base):
                try:
                    to_name(path.relative_to(base).parts)
                except InvalidName:
                    continue            # not addressable as a model (Ollama ignores these too)
                try:
                    refs |= self._refs_of(path)
                except (StoreError, OSError) as exc:
                    log.warning("unreadable manifest %s: %s", path.relative_to(self.root), exc)
                    return None
        return refs

    def _remove_unreferenced(self, candidates: set[str]) -> list[str]:
        if not candidates:
            return []
        referenced = self._referenced()
        if referenced is None:
            log.warning("keeping %d blobs: a manifest could not be read", len(candidates))
            return []
        removed = []
        for digest in sorted(candidates - referenced):
            path = self.blob_path(digest)
            if unlink_quiet(path):
                removed.append(path.name)
        return removed

    def _unlink_manifests(self, paths: list[Path]) -> None:
        for path in paths:
            base = self.v2_dir if path.is_relative_to(self.v2_dir) else self.manifests_dir
            unlink_quiet(path)
            prune_empty_dirs(path.parent, base)

    def _remove_stale_temps(self, cutoff: float) -> list[str]:
        removed = []
        for directory in (self.blobs_dir, self.manifests_dir):
            for dirpath, _, files in os.walk(directory):
                for name in files:
                    path = os.path.join(dirpath, name)
                    if name.startswith(TMP_PREFIX) and lmtime(path) < cutoff and unlink_quiet(path):
                        removed.append(name)
        return removed


# ---- name <-> path ----------------------------------------------------------------------------------

def _legacy_name(parts: tuple[str, ...]) -> ModelName:
    if len(parts) != 4:
        raise InvalidName("not a manifest path")
    return ModelName(*parts)


def _v2_name(parts: tuple[str, ...]) -> ModelName:
    name = _legacy_name(parts)
    if name.host.lower() in _PUBLIC_HOSTS:
        return ModelName(DEFAULT_HOST, name.namespace, name.model, name.tag)
    return name


def _v2_parts(name: ModelName) -> tuple[str, str, str, str]:
    host = _V2_HOST if name.host.lower() in _PUBLIC_HOSTS else name.host
    return (host, name.namespace, name.model, name.tag)


def _confined(path: Path, base: Path) -> Path:
    """Defence in depth: ``path`` must lie strictly below ``base`` lexically."""
    p, b = os.path.normpath(path), os.path.normpath(base)
    if p == b or os.path.commonpath([p, b]) != b:
        raise StoreError("path escapes the store")
    return path


def _tree_files(base: Path) -> list[Path]:
    """Non-directory entries exactly four levels below ``base`` (Ollama's ``*/*/*/*`` glob)."""
    return sorted(p for p in base.glob("*/*/*/*") if not p.is_dir())
