"""Registry authentication: anonymous, HTTP Basic, and the Docker bearer-token challenge.

A 401 carries ``WWW-Authenticate: Basic realm="…"`` or ``Bearer realm="…",service="…",scope="…"``. For
Basic we answer with the configured credentials. For Bearer we ``GET realm?service=…&scope=…`` (with Basic
credentials when we have some, anonymously otherwise) and use ``{"token"|"access_token"}`` as
``Authorization: Bearer``. Ollama's own ed25519-signed token flow (registry.ollama.ai) is not implemented.

The realm must be on the registry's own host (CVE-2025-51471: Ollama trusted any realm and sent its signed
token request to an attacker's host), over https unless the registry itself is plain http, and the token
request never follows redirects, so credentials only ever reach the host they were configured for.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from urllib.parse import urlencode, urlsplit

from registry.wire import RegistryError, Wire, origin_of

__all__ = ["Auth", "parse_challenge"]

MAX_TOKEN_RESPONSE = 64 << 10       # CVE-2024-12886: never read an unbounded auth response
_PARAM_RE = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*,?')
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,8192}")     # visible ASCII: nothing that could split a header


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """``'Bearer realm="r",service="s"'`` → ``("bearer", {"realm": "r", "service": "s"})``."""
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    for m in _PARAM_RE.finditer(rest):
        raw = m[2] if m[2] is not None else m[3]
        params[m[1].lower()] = re.sub(r"\\(.)", r"\1", raw)
    return scheme.lower(), params


class Auth:
    """Authorization state for one registry origin; shared by the threads of one pull or push."""

    def __init__(self, base_url: str, credentials: tuple[str, str] | None = None) -> None:
        self.origin = origin_of(base_url)
        parts = urlsplit(base_url)
        self._host = (parts.hostname or "").lower()
        self._scheme = parts.scheme
        self._credentials = credentials
        self._header: str | None = None
        self._lock = threading.Lock()

    def header(self) -> str | None:
        with self._lock:
            return self._header

    def answer(self, challenge: str, sent: str | None, wire: Wire) -> str:
        """A new Authorization header for a 401 ``challenge``; raises RegistryError when there is none."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            fresh = self._basic()
            if fresh is None:
                raise self.rejected("authentication required")
            if fresh == sent:
                raise self.rejected("credentials not accepted")
        elif scheme == "bearer":
            fresh = "Bearer " + self._token(params, wire)
        else:
            raise RegistryError(f"unsupported authentication scheme {scheme!r}", 401)
        with self._lock:
            self._header = fresh
        return fresh

    def rejected(self, detail: str) -> RegistryError:
        """The error for a 401 that survived our answer, worded by whether we had credentials."""
        if self._credentials is None:
            return RegistryError(f"unauthorized: {self._host} requires credentials ({detail})", 401)
        return RegistryError(f"unauthorized: {self._host} rejected the credentials for user "
                             f"{self._credentials[0]!r} ({detail})", 401)

    def _basic(self) -> str | None:
        if self._credentials is None:
            return None
        user, password = self._credentials
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")

    def _token(self, params: dict[str, str], wire: Wire) -> str:
        url = self._token_url(params)
        basic = self._basic()
        with wire.exchange("GET", url, {"Authorization": basic} if basic else {}) as reply:
            if reply.status != 200:
                detail = reply.error_detail()
                raise RegistryError(f"token request failed with {reply.status}: {detail}",
                                    401 if reply.status in (401, 403) else reply.status)
            body = reply.read_capped(MAX_TOKEN_RESPONSE, "token response")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise RegistryError("token response has no usable token", 401)
        return token

    def _token_url(self, params: dict[str, str]) -> str:
        realm = params.get("realm", "")
        parts = urlsplit(realm)
        allowed = ("https",) if self._scheme == "https" else ("https", "http")
        if parts.scheme not in allowed or not parts.hostname:
            raise RegistryError("refusing token realm: not an absolute https URL", 401)
        if parts.hostname.lower() != self._host:
            raise RegistryError(f"refusing token realm on another host ({parts.hostname}) than the registry "
                                f"({self._host})", 401)
        query = urlencode({k: params[k] for k in ("service", "scope") if params.get(k)})
        return realm + ("&" if parts.query else "?") + query if query else realm
