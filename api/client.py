"""A small HTTP client for a pollama (or Ollama) server: JSON calls, NDJSON streams and blob uploads.

Stdlib only (urllib), so the CLI starts fast and never needs the engine. Every failure becomes a ClientError
whose message is fit to show a person in one line: the server's own {"error": …} text when it sent one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.client import HTTPResponse
from pathlib import Path
from typing import Any, BinaryIO

CHUNK_BYTES = 1 << 20   # blob uploads are streamed in pieces of this size


class ClientError(Exception):
    """Anything that went wrong talking to the server; str() is the one-line message for a person."""


class ServerUnreachable(ClientError):
    """Nothing answered at the server address (not started, wrong POLLAMA_HOST, or it went away)."""


class ResponseError(ClientError):
    """The server answered with an error: an HTTP status (or -1 for an in-band stream error) and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def base_url(host: str) -> str:
    """http://addr:port from POLLAMA_HOST's forms: "addr", "addr:port", ":port", with or without a scheme.

    A server bound to every interface (0.0.0.0 or ::) is reached on the loopback address.
    """
    scheme, sep, rest = host.strip().partition("://")
    if not sep:
        scheme, rest = "http", host.strip()
    rest = rest.split("/", 1)[0]
    port = "443" if scheme == "https" else "11434"
    if rest.startswith("["):                      # [v6] or [v6]:port
        addr, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":") or port
    elif rest.count(":") == 1:                    # addr:port or :port
        addr, port = rest.split(":")
        port = port or "11434"
    else:                                         # addr alone, or a bare IPv6 address
        addr = rest
    addr = addr or "127.0.0.1"
    if addr in ("0.0.0.0", "::"):
        addr = "127.0.0.1"
    return f"{scheme}://{f'[{addr}]' if ':' in addr else addr}:{port}"


class Client:
    """Calls one server. ``timeout_s`` bounds each socket wait; None waits as long as generation takes."""

    def __init__(self, host: str, timeout_s: float | None = None, api_key: str | None = None) -> None:
        self.url = base_url(host)
        self.timeout_s = timeout_s
        self.auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    # -- plumbing ------------------------------------------------------------------------------------------

    def _open(self, method: str, path: str, body: Any = None, *, data: BinaryIO | None = None,
              headers: dict | None = None) -> HTTPResponse:
        payload = json.dumps(body).encode() if body is not None else data
        hdrs = {"Accept": "application/json", **self.auth, **(headers or {})}
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=payload, method=method, headers=hdrs)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise ResponseError(exc.code, _error_text(exc)) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise ServerUnreachable(f"could not connect to pollama at {self.url}: is it running? "
                                    f"(start it with `pollama serve`; {_reason(exc)})") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request with a JSON answer (None for an empty body)."""
        with self._open(method, path, body) as resp:
            raw = _read(resp, self.url)
        return _json(raw, self.url) if raw.strip() else None

    def stream(self, path: str, body: dict) -> Iterator[dict]:
        """POST ``body`` with stream=true and yield each NDJSON object; an in-band {"error"} raises ResponseError."""
        resp = self._open("POST", path, {**body, "stream": True})
        try:
            while True:
                line = _readline(resp, self.url)
                if not line:
                    return
                if not line.strip():
                    continue
                obj = _json(line, self.url)
                if isinstance(obj, dict) and obj.get("error"):
                    raise ResponseError(-1, str(obj["error"]))
                yield obj
        finally:
            resp.close()

    # -- endpoints -----------------------------------------------------------------------------------------

    def heartbeat(self) -> None:
        with self._open("HEAD", "/"):
            pass

    def version(self) -> str:
        return str(self.call("GET", "/api/version").get("version", ""))

    def list(self) -> list[dict]:
        return self.call("GET", "/api/tags").get("models") or []

    def ps(self) -> list[dict]:
        return self.call("GET", "/api/ps").get("models") or []

    def show(self, model: str, **fields: Any) -> dict:
        return self.call("POST", "/api/show", {"model": model, **fields})

    def copy(self, source: str, destination: str) -> None:
        self.call("POST", "/api/copy", {"source": source, "destination": destination})

    def delete(self, model: str) -> None:
        self.call("DELETE", "/api/delete", {"model": model})

    def generate(self, body: dict) -> Iterator[dict]:
        return self.stream("/api/generate", body)

    def chat(self, body: dict) -> Iterator[dict]:
        return self.stream("/api/chat", body)

    def pull(self, model: str, insecure: bool = False) -> Iterator[dict]:
        return self.stream("/api/pull", {"model": model, "insecure": insecure})

    def push(self, model: str, insecure: bool = False) -> Iterator[dict]:
        return self.stream("/api/push", {"model": model, "insecure": insecure})

    def create(self, body: dict) -> Iterator[dict]:
        return self.stream("/api/create", body)

    def load(self, model: str, keep_alive: Any = None) -> dict:
        """Load ``model`` (an empty generate, as Ollama's CLI does); keep_alive 0 unloads it instead."""
        body = {"model": model, "stream": False}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        return self.call("POST", "/api/generate", body)

    def unload(self, model: str) -> None:
        self.load(model, keep_alive=0)

    def has_blob(self, digest: str) -> bool:
        try:
            with self._open("HEAD", f"/api/blobs/{digest}"):
                return True
        except ResponseError as exc:
            if exc.status == 404:
                return False
            raise

    def upload_blob(self, digest: str, path: Path, on_bytes: Callable[[int], None] | None = None) -> None:
        """POST the file's bytes as blob ``digest``, calling ``on_bytes(n)`` as each piece is sent."""
        size = path.stat().st_size
        with open(path, "rb") as f:
            reader = _CountingReader(f, on_bytes)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            with self._open("POST", f"/api/blobs/{digest}", data=reader, headers=headers) as resp:
                _read(resp, self.url)


class _CountingReader:
    """A file wrapper that reports how many bytes http.client has read from it (for an upload bar)."""

    def __init__(self, f: BinaryIO, on_bytes: Callable[[int], None] | None) -> None:
        self._f = f
        self._on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        chunk = self._f.read(CHUNK_BYTES if n is None or n < 0 else min(n, CHUNK_BYTES))
        if chunk and self._on_bytes:
            self._on_bytes(len(chunk))
        return chunk


def _read(resp: HTTPResponse, url: str) -> bytes:
    try:
        return resp.read()
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise ServerUnreachable(f"lost the connection to pollama at {url} ({_reason(exc)})") from None


def _readline(resp: HTTPResponse, url: str) -> bytes:
    try:
        return resp.readline()
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise ServerUnreachable(f"lost the connection to pollama at {url} ({_reason(exc)})") from None


def _json(raw: bytes, url: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ClientError(f"unexpected answer from {url} (is it a pollama or Ollama server?)") from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The server's {"error": …} message, else the status line."""
    try:
        raw = exc.read()
    except OSError:
        raw = b""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and obj.get("error"):
        return str(obj["error"])
    text = raw.decode("utf-8", "replace").strip()
    return text or f"{exc.code} {exc.reason}"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return getattr(reason, "strerror", None) or str(reason)
