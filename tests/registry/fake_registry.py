"""A small OCI registry (GET/HEAD only) on 127.0.0.1 in a thread, for the faults a real registry never
produces: wrong bytes, size lies, hostile digests, 503 storms, redirects to another host, a 200 that ignores
``Range``, dropped and stalled connections, slow links, and Basic or bearer-token auth.

Every request is recorded (method, path, headers) so tests can assert what the client did and did not send.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "tok-fake-0123456789"
_RANGE_RE = re.compile(r"bytes=(\d+)-(\d+)")
_PIECE = 16 << 10


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]

    def byte_range(self) -> tuple[int, int] | None:
        m = _RANGE_RE.fullmatch(self.headers.get("Range", ""))
        return (int(m[1]), int(m[2])) if m else None


@dataclass
class Faults:
    throttle_s: float = 0.0             # sleep after every 16 KiB of body
    ignore_range: bool = False          # answer blob GETs with 200 and the whole blob
    drops: int = 0                      # this many blob GETs are cut off after ``drop_after`` bytes
    drop_after: int = 0
    stalls: int = 0                     # this many blob GETs go silent for ``stall_s`` after ``drop_after``
    stall_s: float = 0.0
    fail_status: int = 0                # the next ``fail_times`` /v2/ requests get this status
    fail_times: int = 0
    redirect_blobs_to: str = ""         # 307 blob GETs to ``<this>/raw/<digest>``
    basic: tuple[str, str] | None = None        # require Basic auth on /v2/
    bearer_realm: str = ""              # require a bearer token from this realm on /v2/
    seen: list[Seen] = field(default_factory=list)


class FakeRegistry:
    """``with FakeRegistry() as reg:`` → serving at ``reg.host`` (``127.0.0.1:<port>``)."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], bytes] = {}   # (repo, tag) -> bytes
        self.blobs: dict[str, bytes] = {}                   # digest -> bytes served under it
        self.faults = Faults()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.host}"

    def __enter__(self) -> FakeRegistry:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self.faults.seen)

    def blob_gets(self, digest: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.path.endswith(digest)]

    def take(self, counter: str) -> bool:
        """Consume one unit of a fault budget (``drops``, ``stalls``, ``fail_times``)."""
        with self._lock:
            left = getattr(self.faults, counter)
            if left > 0:
                setattr(self.faults, counter, left - 1)
            return left > 0

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.faults.seen.append(seen)


def _handler_for(reg: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:    # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        def _route(self, head: bool) -> None:
            reg.record(Seen(self.command, self.path, dict(self.headers.items())))
            path = self.path.split("?", 1)[0]
            if path == "/token":
                return self._token()
            if path.startswith("/raw/"):
                return self._blob(path.removeprefix("/raw/"), head)
            if not path.startswith("/v2/") or not self._authorized():
                return None
            if reg.faults.fail_status and reg.take("fail_times"):
                return self._send(reg.faults.fail_status, b'{"errors":[{"message":"try again later"}]}')
            m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
            if m is None:
                return self._send(200 if path == "/v2/" else 404, b"{}")
            if m[2] == "manifests":
                data = reg.manifests.get((m[1], m[3]))
                return self._send(404, b"{}") if data is None else self._send(200, data, head=head)
            if reg.faults.redirect_blobs_to and not head:
                return self._send(307, b"", {"Location": f"{reg.faults.redirect_blobs_to}/raw/{m[3]}"})
            return self._blob(m[3], head)

        def _authorized(self) -> bool:
            got = self.headers.get("Authorization", "")
            if reg.faults.basic:
                want = "Basic " + base64.b64encode(":".join(reg.faults.basic).encode()).decode()
                if got != want:
                    self._send(401, b'{"errors":[{"message":"authentication required"}]}',
                               {"WWW-Authenticate": 'Basic realm="fake"'})
                    return False
            if reg.faults.bearer_realm and got != f"Bearer {TOKEN}":
                challenge = (f'Bearer realm="{reg.faults.bearer_realm}",service="fake",'
                             f'scope="repository:library/tiny:pull"')
                self._send(401, b'{"errors":[{"message":"token required"}]}', {"WWW-Authenticate": challenge})
                return False
            return True

        def _token(self) -> None:
            self._send(200, json.dumps({"token": TOKEN, "expires_in": 300}).encode())

        def _blob(self, digest: str, head: bool) -> None:
            data = reg.blobs.get(digest)
            if data is None:
                return self._send(404, b"{}")
            rng = _RANGE_RE.fullmatch(self.headers.get("Range", ""))
            if head or reg.faults.ignore_range or rng is None:
                return self._send(200, data, head=head, slow=True)
            first, last = int(rng[1]), min(int(rng[2]), len(data) - 1)
            headers = {"Content-Range": f"bytes {first}-{last}/{len(data)}"}
            self._send(206, data[first:last + 1], headers, slow=True)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                  head: bool = False, slow: bool = False) -> None:
            self.send_response(status)
            for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self._body(body, slow)
            self.close_connection = True

        def _body(self, body: bytes, slow: bool) -> None:
            cuttable = slow and 0 < reg.faults.drop_after < len(body)
            dropping = cuttable and reg.take("drops")
            stalling = cuttable and not dropping and reg.take("stalls")
            sent = 0
            try:
                while sent < len(body):
                    if (dropping or stalling) and sent >= reg.faults.drop_after:
                        if dropping:
                            return          # the connection closes with bytes still promised
                        time.sleep(reg.faults.stall_s)
                        stalling = False
                    piece = body[sent:sent + _PIECE]
                    self.wfile.write(piece)
                    sent += len(piece)
                    if slow and reg.faults.throttle_s:
                        time.sleep(reg.faults.throttle_s)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler
