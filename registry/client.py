"""Pull and push models over the OCI distribution protocol (Docker Registry HTTP API v2), as Ollama does.

Pull: ``GET /v2/<ns>/<model>/manifests/<tag>``; every layer and the config blob not already in the store is
downloaded (``registry.transfer``: Range parts in parallel, resumable, verified before commit); then the
manifest is stored with the exact bytes the registry sent. Digests are validated when the manifest is parsed,
before any blob request or file operation (CVE-2024-37032).

Push: per blob ``HEAD`` (already there?), ``POST …/blobs/uploads/`` (with ``?mount=&from=`` for a layer
inherited from a model on the same registry), chunked ``PATCH`` with ``Content-Range: <first>-<last>``, and
``PUT <location>?digest=``; then ``PUT`` the manifest, again as the exact local bytes (Ollama re-encodes it).

Beyond Ollama (ollama-api.md §4.5): a 200 blob answer is used directly (so plain ``registry:2`` works),
all redirect codes are followed, and Basic and Docker bearer-token auth are supported.

Progress is yielded as typed ``Progress`` events; only ``api/`` turns them into JSON. Failures raise
``RegistryError`` (remote side), or a ``registry.errors.StoreError`` for local ones (``ModelNotFound`` when
pushing a model that is not installed, ``InsufficientStorage``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

from registry.auth import Auth
from registry.errors import BlobNotFound, InvalidManifest, InvalidName
from registry.manifest import MAX_MANIFEST_BYTES, MEDIA_MANIFEST, Layer, Manifest
from registry.names import ModelName
from registry.store import Store
from registry.transfer import SHARED, Download, Downloads
from registry.wire import RegistryError, Reply, RetryPolicy, Wire, origin_of

__all__ = ["Progress", "RegistryClient", "RegistryError", "RetryPolicy"]

DEFAULT_USER_AGENT = "ollama/0.12.3 (amd64 linux) Go/go1.24"   # registry.ollama.ai gates models on it
ACCEPT_MANIFEST = f"{MEDIA_MANIFEST}, application/vnd.oci.image.manifest.v1+json"
MAX_BLOBS = 1000                # per manifest; bounds download threads and state


@dataclass(frozen=True)
class Progress:
    """One progress line. ``total``/``completed`` are bytes (0 = not applicable, omitted in JSON)."""

    status: str
    digest: str | None = None
    total: int = 0
    completed: int = 0


@dataclass(frozen=True)
class _Remote:
    wire: Wire
    host: str
    repo_url: str           # scheme://host/v2/<namespace>/<model>

    def url(self, suffix: str) -> str:
        return self.repo_url + suffix


class RegistryClient:
    """Pull and push for one ``Store``. ``credentials`` maps a registry host (as in model names, with
    ``:port``) to ``(user, password)``; hosts without an entry are used anonymously."""

    def __init__(self, store: Store, *, credentials: dict[str, tuple[str, str]] | None = None,
                 user_agent: str = DEFAULT_USER_AGENT, timeout_s: float = 30.0, parts: int = 4,
                 min_part_bytes: int = 8 << 20, chunk_bytes: int = 32 << 20,
                 retry: RetryPolicy | None = None, progress_interval_s: float = 0.06,
                 downloads: Downloads | None = None) -> None:
        self.store = store
        self._credentials = {host.lower(): (user, pw) for host, (user, pw) in (credentials or {}).items()}
        self._user_agent = user_agent
        self._timeout_s = timeout_s          # per connect / per socket read: a stalled transfer times out
        self._parts = parts
        self._min_part_bytes = min_part_bytes
        self._chunk_bytes = chunk_bytes      # push: bytes per PATCH
        self._retry = retry or RetryPolicy()
        self._interval_s = progress_interval_s
        self._downloads = downloads or SHARED

    # ---- pull --------------------------------------------------------------------------------------

    def pull(self, name: ModelName, insecure: bool = False) -> Iterator[Progress]:
        """Download ``name`` into the store. Closing the iterator early leaves a resumable partial file
        (unless another pull of the same blob is still following the download)."""
        remote = self._remote(name, insecure)
        yield Progress("pulling manifest")
        manifest, raw = self._fetch_manifest(remote, name)
        blobs = _unique((*manifest.layers, manifest.config))
        followed: dict[str, Download | None] = {}
        try:
            for layer in blobs:
                followed[layer.digest] = self._join(remote, layer)
            for layer in blobs:
                yield from self._follow(layer, followed[layer.digest])
            yield Progress("verifying sha256 digest")
            for download in followed.values():
                _raise_failure(download, wait=True)
        finally:
            for download in followed.values():
                if download is not None:
                    self._downloads.leave(download)
        yield Progress("writing manifest")
        self.store.write_manifest(name, raw)        # also removes blobs only the replaced manifest used
        yield Progress("removing any unused layers")
        yield Progress("success")

    def _fetch_manifest(self, remote: _Remote, name: ModelName) -> tuple[Manifest, bytes]:
        url = remote.url(f"/manifests/{name.tag}")
        try:
            with remote.wire.request("GET", url, headers={"Accept": ACCEPT_MANIFEST}) as reply:
                raw = reply.read_capped(MAX_MANIFEST_BYTES, "manifest")
        except RegistryError as exc:
            if exc.status == 404:
                raise RegistryError("pull model manifest: file does not exist", 404) from None
            raise
        try:
            manifest = Manifest.from_bytes(raw)
        except InvalidManifest as exc:
            raise RegistryError(f"pull model manifest: {exc}") from None
        if len(manifest.digests()) > MAX_BLOBS:
            raise RegistryError(f"pull model manifest: more than {MAX_BLOBS} blobs")
        return manifest, raw

    def _join(self, remote: _Remote, layer: Layer) -> Download | None:
        final = self.store.blob_path(layer.digest)
        url = remote.url(f"/blobs/{layer.digest}")

        def fetch(first: int, last: int) -> Reply:
            return remote.wire.request("GET", url, headers={"Range": f"bytes={first}-{last}"},
                                       ok=(200, 206), retry=False)

        def make() -> Download:
            return Download(final, layer.digest, layer.size, fetch, parts=self._parts,
                            min_part_bytes=self._min_part_bytes, retry=self._retry)

        return self._downloads.join(make, lambda: self.store.has_blob(layer.digest), final)

    def _follow(self, layer: Layer, download: Download | None) -> Iterator[Progress]:
        """Progress of one blob until all of its bytes are in; a present blob gives one complete line."""
        status = f"pulling {layer.digest[7:19]}"
        if download is None:
            yield Progress(status, layer.digest, layer.size, layer.size)
            return
        last = -1
        while True:
            fetched = download.wait_fetched(self._interval_s)
            if download.completed != last:
                last = download.completed
                yield Progress(status, layer.digest, layer.size, last)
            if fetched:
                break
        _raise_failure(download, wait=False)

    # ---- push --------------------------------------------------------------------------------------

    def push(self, name: ModelName, insecure: bool = False) -> Iterator[Progress]:
        """Upload the installed model ``name`` to the registry its name points at."""
        remote = self._remote(name, insecure)
        yield Progress("retrieving manifest")
        manifest, raw = self.store.read_manifest(name)
        for layer in _unique((*manifest.layers, manifest.config)):
            yield from self._push_blob(remote, layer)
        yield Progress("pushing manifest")
        remote.wire.request("PUT", remote.url(f"/manifests/{name.tag}"), body=raw, ok=(200, 201),
                            headers={"Content-Type": manifest.media_type or MEDIA_MANIFEST}).close()
        yield Progress("success")

    def _push_blob(self, remote: _Remote, layer: Layer) -> Iterator[Progress]:
        """One blob, restarted from a fresh upload session after a transient failure."""
        failures = 0
        while True:
            try:
                yield from self._upload(remote, layer, f"pushing {layer.digest[7:19]}")
                return
            except RegistryError as exc:
                failures += 1
                if not exc.retryable or failures > self._retry.max_retries:
                    raise
                time.sleep(self._retry.delay_s(failures))

    def _upload(self, remote: _Remote, layer: Layer, status: str) -> Iterator[Progress]:
        yield Progress(status, layer.digest, layer.size, 0)
        with remote.wire.request("HEAD", remote.url(f"/blobs/{layer.digest}"), ok=(200, 404),
                                 retry=False) as reply:
            present = reply.status == 200
        location = None if present else self._start_upload(remote, layer)
        if location is not None:
            offset = 0
            for chunk in self._chunks(layer):
                location = self._patch(remote, location, chunk, offset)
                offset += len(chunk)
                if offset < layer.size:
                    yield Progress(status, layer.digest, layer.size, offset)
            self._finish(remote, location, layer.digest)
        yield Progress(status, layer.digest, layer.size, layer.size)

    def _start_upload(self, remote: _Remote, layer: Layer) -> str | None:
        """The upload session URL, or None when the registry mounted the blob from ``layer.from_``."""
        source = _mount_source(layer.from_, remote.host)
        query = "?" + urlencode({"mount": layer.digest, "from": source}) if source else ""
        with remote.wire.request("POST", remote.url(f"/blobs/uploads/{query}"), ok=(201, 202),
                                 retry=False) as reply:
            if reply.status == 201:
                return None
            location = reply.header("Docker-Upload-Location") or reply.header("Location")
            if not location:
                raise RegistryError("registry did not say where to upload", reply.status)
            return urljoin(reply.url, location)

    def _chunks(self, layer: Layer) -> Iterator[bytes]:
        path = self.store.blob_path(layer.digest)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(layer.digest) from None
        with f:
            left = layer.size
            while left > 0:
                chunk = f.read(min(self._chunk_bytes, left))
                if not chunk:
                    raise RegistryError(f"local blob {layer.digest} is shorter than its manifest says")
                left -= len(chunk)
                yield chunk

    def _patch(self, remote: _Remote, location: str, chunk: bytes, offset: int) -> str:
        # Content-Range without "bytes=": the form distribution (and Ollama) use for upload chunks
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
        with remote.wire.request("PATCH", location, headers=headers, body=chunk, ok=(202,),
                                 retry=False) as reply:
            return urljoin(reply.url, reply.header("Location") or location)

    def _finish(self, remote: _Remote, location: str, digest: str) -> None:
        sep = "&" if urlsplit(location).query else "?"
        remote.wire.request("PUT", f"{location}{sep}{urlencode({'digest': digest})}", ok=(201, 204),
                            retry=False).close()

    # ---- shared ------------------------------------------------------------------------------------

    def _remote(self, name: ModelName, insecure: bool) -> _Remote:
        base = f"{'http' if insecure else 'https'}://{name.host}"
        try:
            origin_of(base)
        except ValueError:
            raise RegistryError(f"invalid registry host {name.host!r}") from None
        wire = Wire(base, Auth(base, self._credentials.get(name.host.lower())),
                    user_agent=self._user_agent, timeout_s=self._timeout_s, retry=self._retry)
        return _Remote(wire, name.host, f"{base}/v2/{name.namespace}/{name.model}")


def _unique(layers: Iterable[Layer]) -> list[Layer]:
    """Layers in order, each digest once (a blob may be listed twice)."""
    seen: dict[str, Layer] = {}
    for layer in layers:
        seen.setdefault(layer.digest, layer)
    return list(seen.values())


def _mount_source(from_: str | None, host: str) -> str | None:
    """``<ns>/<model>`` to mount from when the layer came from a model on the same registry host."""
    if not from_:
        return None
    try:
        source = ModelName.parse(from_)
    except InvalidName:
        return None
    return f"{source.namespace}/{source.model}" if source.host.lower() == host.lower() else None


def _raise_failure(download: Download | None, *, wait: bool) -> None:
    """Re-raise a failed download's error in this follower (a fresh RegistryError keeps tracebacks apart)."""
    if download is None:
        return
    if wait:
        download.wait_done(None)
    error = download.error
    if download.phase != "failed" or error is None:
        return
    if isinstance(error, RegistryError):
        raise RegistryError(str(error), error.status) from error
    raise error
