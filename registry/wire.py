"""HTTP for the registry client: one exchange, redirects, the 401 challenge hook, and retries with backoff.

Standard library only (``http.client``). urllib's opener is not used on purpose: its redirect handler copies
every non-body header, ``Authorization`` included, to whatever host a ``Location`` names. Here credentials
go only to the registry's own origin (scheme, host and port); a redirect elsewhere (a presigned S3/R2 URL) is
followed without them, and https never redirects down to plain http.

Status handling (Ollama's ``makeRequestWithRetry`` plus the OCI distribution spec): 401 answers the
``WWW-Authenticate`` challenge once; 429, 502, 503 and 504 and network failures are transient and retried
with exponential backoff; every other status >= 400 is final.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

__all__ = ["RegistryError", "RetryPolicy", "Reply", "Wire", "origin_of"]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
TRANSIENT = frozenset({429, 502, 503, 504})
MAX_REDIRECTS = 8
MAX_ERROR_BODY = 64 << 10       # enough for any registry error document; more is not read


class RegistryError(Exception):
    """A pull or push failed. ``status`` is the registry's HTTP status when there was one, else None.
    ``retryable`` marks transient failures (network errors, 429/502/503/504) that a caller may retry."""

    def __init__(self, message: str, status: int | None = None, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6            # Ollama: 6 attempts per part
    backoff_s: float = 0.5          # first sleep; doubles on every consecutive failure
    max_backoff_s: float = 30.0

    def delay_s(self, failures: int) -> float:
        """Sleep before retry number ``failures`` (1-based)."""
        return min(self.backoff_s * 2 ** max(failures - 1, 0), self.max_backoff_s)


class Authorizer(Protocol):
    """What the wire needs from ``registry.auth.Auth``: the header for the registry's origin, and a new one
    after a 401 challenge (or a RegistryError explaining why there is none)."""

    origin: str

    def header(self) -> str | None: ...

    def answer(self, challenge: str, sent: str | None, wire: Wire) -> str: ...

    def rejected(self, detail: str) -> RegistryError: ...


def origin_of(url: str) -> str:
    """``scheme://host:port`` with the default port made explicit, lower-cased: the unit of trust."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class Reply:
    """An open response. Read it (bounded) and close it; also a context manager."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, url: str) -> None:
        self._conn, self._resp, self.url = conn, resp, url
        self.status = resp.status

    def header(self, name: str) -> str | None:
        return self._resp.getheader(name)

    def read(self, n: int) -> bytes:
        return self._resp.read(n)

    def read_capped(self, cap: int, what: str) -> bytes:
        """The whole body, refusing (without buffering more than ``cap + 1`` bytes) anything larger."""
        length = self.header("Content-Length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise RegistryError(f"{what} is larger than {cap} bytes")
        try:
            data = self._resp.read(cap + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"reading {what}: {_describe(exc)}", retryable=True) from None
        if len(data) > cap:
            raise RegistryError(f"{what} is larger than {cap} bytes")
        return data

    def error_detail(self) -> str:
        """A short message from an error body: the first ``errors[].message`` of a registry error document,
        else the start of the text."""
        try:
            body = self._resp.read(MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException):
            return ""
        try:
            errors = json.loads(body).get("errors") or []
            return "; ".join(str(e.get("message") or e.get("code")) for e in errors[:3]) or ""
        except (ValueError, AttributeError, TypeError):
            text = body.decode("utf-8", "replace").strip()
            return "".join(c for c in text[:200] if c.isprintable())

    def close(self) -> None:
        self._resp.close()
        self._conn.close()

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Wire:
    """Requests against one registry (``base_url`` = ``scheme://host[:port]``) for one pull or push."""

    def __init__(self, base_url: str, auth: Authorizer, *, user_agent: str, timeout_s: float,
                 retry: RetryPolicy) -> None:
        self.base_url = base_url
        self.auth = auth
        self.user_agent = user_agent
        self.timeout_s = timeout_s
        self.retry = retry

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, ok: tuple[int, ...] = (200,), retry: bool = True) -> Reply:
        """Send until an ``ok`` status arrives; transient failures are retried when ``retry`` is set.
        Raises RegistryError (``retryable`` set for transient ones) for everything else."""
        failures = 0
        while True:
            try:
                reply = self.send(method, url, dict(headers or {}), body)
                if reply.status in ok:
                    return reply
                raise self._status_error(reply)
            except RegistryError as exc:
                failures += 1
                if not (retry and exc.retryable) or failures > self.retry.max_retries:
                    raise
                time.sleep(self.retry.delay_s(failures))

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> Reply:
        """One logical exchange: the 401 challenge answered once, redirects followed. Any status returns."""
        for _ in range(MAX_REDIRECTS + 1):
            reply = self._authorized(method, url, headers, body)
            if reply.status not in REDIRECTS:
                return reply
            location = reply.header("Location")
            reply.close()
            if not location:
                raise RegistryError("redirect without a Location header", reply.status)
            url = self._redirect_target(url, location)
            if reply.status == 303 and method != "HEAD":
                method, body = "GET", None
        raise RegistryError("too many redirects")

    def exchange(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None) -> Reply:
        """A single HTTP request on a fresh connection; network failures become retryable RegistryErrors."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise RegistryError("invalid registry address") from None
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, port, timeout=self.timeout_s, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname, port, timeout=self.timeout_s)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, target, body=body, headers={**headers, "User-Agent": self.user_agent})
            return Reply(conn, conn.getresponse(), url)
        except ssl.SSLError as exc:        # a TLS mismatch does not heal by retrying
            conn.close()
            raise RegistryError(f"TLS error talking to {parts.hostname}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise RegistryError(f"{method} {parts.hostname}: {_describe(exc)}", retryable=True) from None

    def _authorized(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> Reply:
        own = origin_of(url) == self.auth.origin
        sent = self.auth.header() if own else None
        reply = self.exchange(method, url, {**headers, **({"Authorization": sent} if sent else {})}, body)
        challenge = reply.header("WWW-Authenticate")
        if reply.status != 401 or not own or not challenge:
            return reply
        reply.close()
        fresh = self.auth.answer(challenge, sent, self)
        reply = self.exchange(method, url, {**headers, "Authorization": fresh}, body)
        if reply.status == 401:
            with reply:
                raise self.auth.rejected(reply.error_detail())
        return reply

    def _redirect_target(self, current: str, location: str) -> str:
        target = urljoin(current, location)
        scheme = urlsplit(target).scheme
        if scheme not in ("http", "https") or (scheme == "http" and urlsplit(current).scheme == "https"):
            raise RegistryError(f"refusing redirect to a {scheme or 'relative'} URL")
        return target

    def _status_error(self, reply: Reply) -> RegistryError:
        with reply:
            detail = reply.error_detail()
        message = f"{reply.status}: {detail}" if detail else f"registry answered {reply.status}"
        return RegistryError(message, reply.status, retryable=reply.status in TRANSIENT)


def _describe(exc: BaseException) -> str:
    """Network errors without addresses or paths: the class name says enough (timeout, reset, refused)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return {"ConnectionRefusedError": "connection refused", "ConnectionResetError": "connection reset",
            "RemoteDisconnected": "connection closed", "IncompleteRead": "connection closed early"}.get(
        type(exc).__name__, type(exc).__name__)
