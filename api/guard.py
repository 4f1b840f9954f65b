"""Who may talk to the server: the Host guard (DNS rebinding), the Origin guard (browser CSRF, CORS) and the
optional API key. All three run before a request's body is read or any route acts (security.md §1.3).

* Host: while the server listens on loopback, a request must name it by an IP address, ``localhost``,
  ``*.localhost`` or this machine's hostname. A web page that rebinds ``attacker.example`` to 127.0.0.1 sends
  ``Host: attacker.example`` and gets 403. (Ollama also trusts ``*.local`` and ``*.internal``; we do not.)
* Origin: browsers send it on cross-site requests, including the "simple" ones that skip a preflight. A request
  without Origin (curl, SDKs) passes; one from a page whose origin is not allowed gets 403 before anything runs.
  Allowed: http(s) on localhost / 127.0.0.1 / 0.0.0.0 / [::1] at any port, the app://, file://, tauri://,
  vscode-webview:// and vscode-file:// schemes (Ollama's defaults), and the patterns in POLLAMA_ORIGINS.
* API key: when set (POLLAMA_API_KEY), every request but ``/`` and ``/api/version`` needs
  ``Authorization: Bearer <key>``; serving on a non-loopback address requires one (api.cli refuses otherwise).
"""

from __future__ import annotations

import fnmatch
import hmac
import ipaddress
import re
import socket

from flask import Flask, Response, request

from api.errors import error_response

_LOCAL_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(:\d{1,5})?")
_BRACKETED = re.compile(r"(\[[0-9A-Fa-f:.]*\])(?::\d{1,5})?")
_APP_SCHEMES = ("app://", "file://", "tauri://", "vscode-webview://", "vscode-file://")
_ALLOWED_HEADERS = ("Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
                    "x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
                    "x-stainless-runtime, x-stainless-runtime-version, x-stainless-async, x-stainless-retry-count, "
                    "x-stainless-read-timeout, x-stainless-timeout")
_OPEN_PATHS = ("/", "/api/version")             # liveness checks work without the key


def is_loopback(address: str) -> bool:
    """Whether a listen address accepts connections from this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(host: str) -> bool:
    """A Host header (name or address, optional port) that a loopback server answers to."""
    name = _strip_port(host.strip()).lower().rstrip(".")
    if name in ("", "localhost") or name.endswith(".localhost") or name == socket.gethostname().lower():
        return True
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True                                 # an address, not a name a page could rebind
    except ValueError:
        return False


def origin_allowed(origin: str, extra: tuple[str, ...] = ()) -> bool:
    """Ollama's default allow-list plus ``extra`` patterns (``*`` wildcards, e.g. ``https://*.example.com``)."""
    if _LOCAL_ORIGIN.fullmatch(origin) or origin.startswith(_APP_SCHEMES):
        return True
    return any(fnmatch.fnmatchcase(origin, pattern) for pattern in extra)


def install(app: Flask, *, loopback: bool, origins: tuple[str, ...] = (), api_key: str | None = None) -> None:
    """Guard every request of ``app``; CORS headers on the answers to allowed origins."""

    @app.before_request
    def _guard() -> Response | None:
        if loopback and not host_allowed(request.headers.get("Host", "")):
            return error_response(403, "host not allowed")
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(origin, origins):
            return error_response(403, "origin not allowed")
        if request.method == "OPTIONS":
            return Response(status=204)
        if api_key and request.path not in _OPEN_PATHS and not _key_matches(api_key):
            return error_response(401, "unauthorized: missing or wrong API key")
        return None

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and origin_allowed(origin, origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
            response.headers.add("Vary", "Origin")
        return response


def _key_matches(api_key: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())


def _strip_port(host: str) -> str:
    bracketed = _BRACKETED.fullmatch(host)          # [::1]:11434
    if bracketed:
        return bracketed.group(1)
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host
